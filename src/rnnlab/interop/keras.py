"""Keras 3 weight layouts for SimpleRNN, LSTM and GRU, converted in NumPy alone (no Keras needed).

Per layer (and per direction; a ``Bidirectional`` wrapper lists the forward then the backward weights):

    kernel            (I, G*H)   = W_ih^T with the gate blocks in Keras order
    recurrent_kernel  (H, G*H)   = W_hh^T
    bias              SimpleRNN, LSTM: (G*H,) = b_ih + b_hh;  GRU reset_after=True: (2, 3H) = [b_ih; b_hh];
                      GRU reset_after=False: (3H,) = b_ih + b_hh (only valid for rnnlab reset='before')

Gate orders: LSTM i f c o (= PyTorch i f g o); GRU z r h (PyTorch r z n). Keras' GRU with reset_after=True
is PyTorch's GRU (rnnlab reset='after'); reset_after=False is Cho et al.'s (rnnlab reset='before').
Reading Keras weights sets ``bias_ih`` to Keras' bias and ``bias_hh`` to 0 where Keras has one bias.
"""
from __future__ import annotations

import numpy as np

from rnnlab.engine.cells import CELLS
from rnnlab.interop import InteropError, permute_blocks, require_classic

G = {name: cell.G for name, cell in CELLS.items()}
TO_KERAS = {"rnn": [0], "lstm": [0, 1, 2, 3], "gru": [1, 0, 2]}      # Keras block j = PyTorch block TO_KERAS[j]
FROM_KERAS = {"rnn": [0], "lstm": [0, 1, 2, 3], "gru": [1, 0, 2]}    # the permutation is its own inverse


def check_exportable(obj) -> None:
    """Raise a one-line ``ConfigError`` (``format: ...``) when Keras' SimpleRNN/LSTM/GRU would compute something
    other than ``obj`` (a layer or a SequenceModel): another cell, zoneout, peephole, layer_norm, proj_size,
    nonlinearity='identity'. GRU reset='before' is Keras' reset_after=False, and dropouts are off at inference."""
    from rnnlab.interop.torch import check_exportable as check
    check(obj, "keras")


def to_keras(layer) -> list[list[np.ndarray]]:
    """One list of weights per layer: ``[kernel, recurrent_kernel, bias]`` (x2 for bidirectional)."""
    require_classic(layer, "Keras")
    cell, g = layer.cell_name, G[layer.cell_name]
    if cell == "rnn" and layer.cell_opts["nonlinearity"] == "identity":
        raise InteropError("layer: nonlinearity='identity' has no Keras SimpleRNN equivalent")
    out = []
    sd = layer.state_dict()
    for l in range(layer.num_layers):
        ws = []
        for d in range(layer.num_directions):
            s = layer.suffix(l, d)
            perm = TO_KERAS[cell]
            ws.append(permute_blocks(sd["weight_ih" + s], perm, g).T.copy())
            ws.append(permute_blocks(sd["weight_hh" + s], perm, g).T.copy())
            if layer.bias:
                b_ih, b_hh = permute_blocks(sd["bias_ih" + s], perm, g), permute_blocks(sd["bias_hh" + s], perm, g)
                if cell == "gru" and layer.cell_opts["reset"] == "after":
                    ws.append(np.stack([b_ih, b_hh]))
                else:
                    ws.append(b_ih + b_hh)
        out.append(ws)
    return out


def from_keras(cell: str, weights: list, bidirectional: bool = False, **options):
    """Build an rnnlab layer from Keras weights (one list per stacked layer, as ``to_keras`` returns).

    For the GRU, the bias shape tells the reset convention: (2, 3H) -> reset='after', (3H,) -> 'before'.
    ``options``: batch_first, dtype, nonlinearity ('tanh' or 'relu' for SimpleRNN) ...
    """
    from rnnlab.errors import check_choice
    from rnnlab.engine.layers import layer_from_config
    check_choice("cell", cell, G)
    if not weights:
        raise InteropError("weights: expected one list of arrays per layer, got none")
    g, D = G[cell], 2 if bidirectional else 1
    first = [np.asarray(w) for w in weights[0]]
    per_dir = len(first) // D
    if len(first) % D or per_dir not in (2, 3):
        raise InteropError(f"weights[0]: expected {2 * D} or {3 * D} arrays (kernel, recurrent_kernel[, bias]"
                           f"{' per direction' if D == 2 else ''}), got {len(first)}")
    I, GH = first[0].shape
    if GH % g:
        raise InteropError(f"weights[0] kernel: {GH} columns is not a multiple of {g} gates for cell={cell!r}")
    H = GH // g
    has_bias = per_dir == 3
    opts = dict(options)
    if cell == "gru":                       # the bias shape tells the reset convention
        if has_bias:
            opts["reset"] = "after" if np.asarray(first[2]).ndim == 2 else "before"
        else:
            opts.setdefault("reset", "after")
    dtype = opts.pop("dtype", "float64" if first[0].dtype == np.float64 else "float32")
    layer = layer_from_config({"cell": cell, "input_size": int(I), "hidden_size": int(H), "num_layers": len(weights),
                               "bias": has_bias, "bidirectional": bidirectional, "dtype": dtype, **opts})
    sd = {}
    perm = FROM_KERAS[cell]
    for l, ws in enumerate(weights):
        ws = [np.asarray(w) for w in ws]
        if len(ws) != len(first):
            raise InteropError(f"weights[{l}]: expected {len(first)} arrays like weights[0], got {len(ws)}")
        I_l = I if l == 0 else D * H
        for d in range(D):
            k, r = ws[d * per_dir], ws[d * per_dir + 1]
            s = layer.suffix(l, d)
            if k.shape != (I_l, g * H) or r.shape != (H, g * H):
                raise InteropError(f"weights[{l}]: expected kernel {(I_l, g * H)} and recurrent_kernel {(H, g * H)}, "
                                   f"got {k.shape} and {r.shape}")
            sd["weight_ih" + s] = permute_blocks(k.T, perm, g)
            sd["weight_hh" + s] = permute_blocks(r.T, perm, g)
            if has_bias:
                b = ws[d * per_dir + 2]
                if cell == "gru" and opts.get("reset") == "after":
                    if b.shape != (2, g * H):
                        raise InteropError(f"weights[{l}] bias: expected {(2, g * H)} (reset_after=True), got {b.shape}")
                    sd["bias_ih" + s], sd["bias_hh" + s] = permute_blocks(b[0], perm, g), permute_blocks(b[1], perm, g)
                else:
                    if b.shape != (g * H,):
                        raise InteropError(f"weights[{l}] bias: expected {(g * H,)}, got {b.shape}")
                    sd["bias_ih" + s], sd["bias_hh" + s] = permute_blocks(b, perm, g), np.zeros(g * H)
    layer.load_state_dict(sd)
    return layer


def keras_tensors(obj) -> dict:
    """A layer's (or a SequenceModel's) Keras weights as named tensors for one safetensors file:
    ``layer<l>[.backward].kernel``, ``.recurrent_kernel``, ``.bias``; a model's output layer in Keras' Dense
    layout as ``head.kernel`` and ``head.bias`` (``rnnlab export --format keras``; ``from_keras_tensors`` reads
    them back)."""
    from rnnlab.model.sequence_model import SequenceModel
    layer = obj.rnn if isinstance(obj, SequenceModel) else obj
    tensors = {}
    for l, ws in enumerate(to_keras(layer)):
        names = ["kernel", "recurrent_kernel", "bias"][:len(ws) // layer.num_directions]
        for d in range(layer.num_directions):
            for i, n in enumerate(names):
                tensors[f"layer{l}{'.backward' if d else ''}.{n}"] = ws[d * len(names) + i]
    if layer is not obj:                            # the output layer in Keras' Dense layout
        tensors["head.kernel"] = np.ascontiguousarray(obj.named_parameters()["head.weight"].T)
        tensors["head.bias"] = obj.named_parameters()["head.bias"].copy()
    return tensors


def from_keras_tensors(tensors: dict, cell: str, source: str = "tensors", **options):
    """The layer of ``keras_tensors``'s ``layer<l>[.backward].<name>`` tensors (any others, such as a model's
    head, are ignored); ``source`` names them in errors (the file's path); ``options`` as ``from_keras``."""
    import re
    t = {k: v for k, v in tensors.items() if k.startswith("layer")}
    found = [re.fullmatch(r"layer(\d+)(\.backward)?\.(kernel|recurrent_kernel|bias)", k) for k in t]
    if not t:
        raise InteropError(f"file: {source} has no 'layer<N>.kernel' tensors (write them with rnnlab export "
                           f"--format keras)")
    if not all(found):
        bad = next(k for k, m in zip(t, found) if m is None)
        raise InteropError(f"file: {source}: tensor {bad!r} is not named layer<N>[.backward].kernel, "
                           f".recurrent_kernel or .bias (as rnnlab export --format keras writes them)")
    n = 1 + max(int(m.group(1)) for m in found)
    bidir = any(m.group(2) for m in found)
    weights = []
    for l in range(n):
        ws = []
        for d in ([""] + ([".backward"] if bidir else [])):
            ws += [t[f"layer{l}{d}.{k}"] for k in ("kernel", "recurrent_kernel", "bias") if f"layer{l}{d}.{k}" in t]
        weights.append(ws)
    return from_keras(cell, weights, bidirectional=bidir, **options)


def read_keras_file(path, cell: str, **options):
    """The layer in a safetensors file of ``keras_tensors`` (``rnnlab import --format keras``)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InteropError(f"{path}: not a readable safetensors file ({exc})") from None
    return from_keras_tensors(tensors, cell, str(path), **options)
