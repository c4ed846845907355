"""PyTorch: ``from_torch(module)`` / ``to_torch(layer)``, sequence models, state dicts as safetensors."""
from __future__ import annotations

import numpy as np

from rnnlab.engine.cells import CELLS
from rnnlab.errors import ConfigError
from rnnlab.engine.layers import LAYERS
from rnnlab.interop import InteropError, require, require_classic

_TORCH_NAMES = {"RNN": "rnn", "LSTM": "lstm", "GRU": "gru"}


# ------------------------------------------------------------------ what a weights-only export can carry
class ExportError(InteropError, ConfigError):
    """A model that the export format's own layers would compute differently (one line starting ``format:``)."""


_CELL_NAMES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU", "mingru": "minGRU", "minlstm": "minLSTM",
               "indrnn": "IndRNN", "lru": "LRU"}
# the peer's layer per cell; what it has beyond plain weights (everything else is refused)
_PEERS = {"torch": {"rnn": "torch.nn.RNN", "lstm": "torch.nn.LSTM", "gru": "torch.nn.GRU"},
          "keras": {"rnn": "keras.layers.SimpleRNN", "lstm": "keras.layers.LSTM", "gru": "keras.layers.GRU"}}
_HAS = {"torch": {"proj_size"}, "keras": {"reset_before"}}


def _layer_of(obj):
    from rnnlab.engine.layers import RecurrentLayer
    if isinstance(obj, RecurrentLayer):
        return obj, "layer"
    rnn = getattr(obj, "rnn", None)
    if isinstance(rnn, RecurrentLayer):
        return rnn, "model"
    raise InteropError(f"export: expected an rnnlab layer or SequenceModel, got {type(obj).__name__}")


def export_refusal(obj, format: str = "torch") -> str | None:
    """Why ``format`` ('torch' or 'keras': weights only, loaded into the peer's own RNN/LSTM/GRU) would compute
    something other than ``obj`` (a layer or a SequenceModel); None when it computes the same.

    Identity at inference, and so fine: dropout, input_dropout, recurrent_dropout, forget_bias (an init).
    Refused: a cell the peer has no layer for; zoneout and zoneout_cell (at inference rnnlab keeps the
    expected share of the previous state); reverse; peephole; layer_norm; nonlinearity='identity'; for torch
    reset='before' (torch.nn.GRU resets after), for Keras proj_size (torch has it)."""
    if format not in _PEERS:
        raise ConfigError(f"format: expected 'torch' or 'keras' for a weights-only export, got {format!r}")
    layer, kind = _layer_of(obj)
    model = kind == "model"
    cell, it = layer.cell_name, f"this {kind}"

    def without(key):                     # how to do without an option: the train flag, or the layer argument
        return f"train without --{key.replace('_', '-')}" if model else f"build the layer without {key}"

    def instead(key, value):
        return f"train with --{key.replace('_', '-')} {value}" if model else f"build the layer with {key}={value!r}"
    if cell not in _PEERS[format]:
        pkg = "torch.nn" if format == "torch" else "keras.layers"
        other = "train with --model lstm, gru or rnn" if model else "use an rnnlab LSTM, GRU or RNN"
        return (f"format: {pkg} has no {_CELL_NAMES.get(cell, cell)} layer, so nothing there would compute the "
                f"exported weights; {it} uses the {cell} cell (keep it in rnnlab -- its checkpoint -- or {other})")
    peer = _PEERS[format][cell]
    same = "so the exported weights would compute something else"
    reg = getattr(layer, "regularization", {})
    for key in ("zoneout", "zoneout_cell"):
        if reg.get(key):
            return (f"format: {peer} has no zoneout, {same} (at inference rnnlab keeps a share {reg[key]:g} of the "
                    f"previous state); {it} uses {key}={reg[key]:g} (keep it in rnnlab -- ONNX has no zoneout "
                    f"either -- or {without(key)})")
    if getattr(layer, "reverse", False):
        return (f"format: {peer} has no reverse-only layer, {same} (it would read each sequence forwards); {it} "
                f"uses reverse=True (export it with --format onnx, whose operators have direction='reverse')")
    if getattr(layer, "peephole", False):
        return (f"format: {peer} has no peephole connections, {same}; {it} uses peephole (export it with "
                f"--format onnx, whose LSTM has them, or {without('peephole')})")
    if getattr(layer, "layer_norm", False):
        return (f"format: {peer} has no layer norm, {same}; {it} uses layer_norm (keep it in rnnlab -- ONNX has no "
                f"layer-normalised {cell.upper()} either -- or {without('layer_norm')})")
    if getattr(layer, "proj_size", 0) and "proj_size" not in _HAS[format]:
        return (f"format: {peer} has no projection, {same}; {it} uses proj_size={layer.proj_size} (export it with "
                f"--format torch, whose LSTM has proj_size, or {without('proj_size')})")
    opts = getattr(layer, "cell_opts", {})
    if cell == "rnn" and opts.get("nonlinearity") not in ("tanh", "relu"):
        nl = opts.get("nonlinearity")
        return (f"format: {peer} has no {nl} nonlinearity (only tanh and relu), {same}; {it} uses "
                f"nonlinearity={nl!r} ({instead('nonlinearity', 'tanh')} or {'relu' if model else repr('relu')})")
    if cell == "gru" and opts.get("reset") == "before" and "reset_before" not in _HAS[format]:
        return (f"format: {peer} applies the reset gate after the recurrent product only, {same}; {it} uses "
                f"reset='before' (export it with --format onnx or keras, which have it, or "
                f"{instead('reset', 'after')})")
    return None


def check_exportable(obj, format: str = "torch") -> None:
    """Raise ``ExportError`` (a ``ConfigError``; one line) when a weights-only export to ``format`` ('torch' or
    'keras') would compute something other than ``obj``; see ``export_refusal``. Call it before writing."""
    why = export_refusal(obj, format)
    if why:
        raise ExportError(why)


def from_torch(module, dtype=None):
    """An rnnlab layer equal to ``torch.nn.RNN/LSTM/GRU`` ``module`` (options and weights copied)."""
    torch = require("torch", "torch")
    kind = type(module).__name__
    if not isinstance(module, torch.nn.RNNBase) or kind not in _TORCH_NAMES:
        raise InteropError(f"module: expected torch.nn.RNN, LSTM or GRU, got {kind}")
    if dtype is None:
        dtype = {torch.float32: "float32", torch.float64: "float64"}.get(module.weight_ih_l0.dtype)
        if dtype is None:
            raise InteropError(f"module: dtype {module.weight_ih_l0.dtype} is not supported; use float32 or float64")
    kw = dict(num_layers=module.num_layers, bias=module.bias, batch_first=module.batch_first,
              dropout=float(module.dropout), bidirectional=module.bidirectional, dtype=dtype)
    if kind == "RNN":
        nl = {"RNN_TANH": "tanh", "RNN_RELU": "relu"}[module.mode]
        kw["nonlinearity"] = nl
    if getattr(module, "proj_size", 0):
        kw["proj_size"] = int(module.proj_size)
    layer = LAYERS[_TORCH_NAMES[kind]](module.input_size, module.hidden_size, **kw)
    layer.load_state_dict({k: v.detach().cpu().numpy() for k, v in module.state_dict().items()})
    layer.train(module.training)
    return layer


def to_torch(layer):
    """A torch module with the layer's options and a copy of its weights."""
    require_classic(layer, "torch.nn")
    torch = require("torch", "torch")
    if layer.cell_name == "rnn" and layer.cell_opts["nonlinearity"] == "identity":
        raise InteropError("layer: nonlinearity='identity' has no torch.nn.RNN equivalent")
    if layer.cell_name == "gru" and layer.cell_opts["reset"] == "before":
        raise InteropError("layer: GRU reset='before' has no torch.nn.GRU equivalent (torch resets after)")
    tdtype = torch.float64 if np.dtype(layer.dtype) == np.float64 else torch.float32
    kw = dict(num_layers=layer.num_layers, bias=layer.bias, batch_first=layer.batch_first, dropout=layer.dropout,
              bidirectional=layer.bidirectional, dtype=tdtype)
    if layer.cell_name == "rnn":
        kw["nonlinearity"] = layer.cell_opts["nonlinearity"]
    if getattr(layer, "proj_size", 0):
        kw["proj_size"] = layer.proj_size
    mod = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[layer.cell_name](
        layer.input_size, layer.hidden_size, **kw)
    with torch.no_grad():
        for name, p in mod.named_parameters():
            p.copy_(torch.from_numpy(np.ascontiguousarray(layer.state_dict()[name])))
    mod.train(layer.training)
    return mod


def model_to_torch(model):
    """A torch module equal to a ``SequenceModel`` (embedding/one-hot -> recurrent stack -> Linear -> prediction).

    Its ``forward(inputs, lengths=None)`` takes the same time-major inputs and returns the prediction
    layer's output (probabilities for softmax/sigmoid, values for identity).
    """
    torch = require("torch", "torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    cfg = model.config
    rnn = to_torch(model.rnn)
    head = torch.nn.Linear(model.named_parameters()["head.weight"].shape[1], cfg.output_size,
                           dtype=rnn.weight_ih_l0.dtype)
    p = model.named_parameters()
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(p["head.weight"]))
        head.bias.copy_(torch.from_numpy(p["head.bias"]))
    emb = None
    if cfg.input_mode == "embedding":
        emb = torch.nn.Embedding(cfg.input_size, cfg.embedding_dim, dtype=rnn.weight_ih_l0.dtype)
        with torch.no_grad():
            emb.weight.copy_(torch.from_numpy(p["embedding.weight"]))

    class TorchSequenceModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding, self.rnn, self.head = emb, rnn, head

        def forward(self, inputs, lengths=None):
            if cfg.input_mode == "embedding":
                x = self.embedding(inputs)
            elif cfg.input_mode == "onehot":
                x = torch.nn.functional.one_hot(inputs, cfg.input_size).to(self.head.weight.dtype)
            else:
                x = inputs
            T, B = x.shape[:2]
            if lengths is not None:
                packed = pack_padded_sequence(x, torch.as_tensor(lengths), enforce_sorted=False)
                out, _ = self.rnn(packed)
                out, _ = pad_packed_sequence(out, total_length=T)
            else:
                out, _ = self.rnn(x)
            if cfg.target == "last":
                last = (torch.full((B,), T - 1) if lengths is None else torch.as_tensor(lengths) - 1)
                out = out[last, torch.arange(B)]
            o = self.head(out)
            if cfg.prediction == "softmax":
                return torch.softmax(o, dim=-1)
            if cfg.prediction == "sigmoid":
                return torch.sigmoid(o)
            return o

    m = TorchSequenceModel()
    m.eval()
    return m


def save_torch_state_dict(layer, path) -> None:
    """Write the layer's weights under torch's names as a plain safetensors file
    (``safetensors.torch.load_file(path)`` gives a state_dict that ``module.load_state_dict`` takes)."""
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v) for k, v in layer.state_dict().items()}, str(path))


def load_torch_state_dict(path, cell: str, **options):
    """Build a layer from a torch state_dict saved as safetensors; sizes are read from the shapes.

    ``options``: batch_first, dtype, nonlinearity (RNN) ... -- what the shapes cannot tell.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    from rnnlab.errors import check_choice
    from rnnlab.engine.layers import layer_from_config
    check_choice("cell", cell, CELLS)
    try:
        sd = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InteropError(f"{path}: not a readable safetensors file ({exc})") from None
    G = CELLS[cell].G
    if "weight_ih_l0" not in sd:
        raise InteropError(f"{path}: no 'weight_ih_l0' tensor; expected a torch RNN/LSTM/GRU state_dict")
    GH, I = sd["weight_ih_l0"].shape
    if GH % G:
        raise InteropError(f"{path}: weight_ih_l0 has {GH} rows, not a multiple of {G} gates for cell={cell!r}")
    if any(k.startswith("weight_hr") for k in sd):
        raise InteropError(f"{path}: LSTM projections (weight_hr_*) are not supported")
    L = 1 + max(int(k.split("_l")[1].split("_")[0]) for k in sd if k.startswith("weight_ih_l"))
    cfg = {"cell": cell, "input_size": int(I), "hidden_size": GH // G, "num_layers": L,
           "bias": "bias_ih_l0" in sd, "bidirectional": "weight_ih_l0_reverse" in sd, **options}
    if "dtype" not in cfg:
        cfg["dtype"] = "float64" if sd["weight_ih_l0"].dtype == np.float64 else "float32"
    layer = layer_from_config(cfg)
    layer.load_state_dict(sd)
    return layer
