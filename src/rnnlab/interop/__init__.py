"""Models in and out: PyTorch, Keras 3 weight layouts and ONNX, each verified against the other runtime.

Gate layouts (docs/math.md, section 6):

    system    LSTM blocks   GRU blocks   GRU reset                         biases
    PyTorch   i f g o       r z n        after                              b_ih, b_hh
    ONNX      i o f c       z r h        linear_before_reset=1 is 'after'   B = [Wb, Rb]
    Keras 3   i f c o       z r h        reset_after=True is 'after'        LSTM one; GRU (2, 3H) or (3H,)

rnnlab uses PyTorch's layout; every converter here permutes gate blocks explicitly.
"""
from rnnlab.errors import RnnlabError


class InteropError(RnnlabError, ValueError):
    """A model uses a feature rnnlab cannot represent, or a file is not a model we can read."""


def permute_blocks(W, order, G):
    """Reorder the G row blocks of W (or entries of a bias) by ``order`` (indices into the source blocks)."""
    import numpy as np
    blocks = np.split(W, G, axis=0)
    return np.concatenate([blocks[i] for i in order], axis=0)


def require_classic(layer, target: str) -> None:
    """The converters speak RNN, LSTM and GRU; a diagonal cell (minGRU, minLSTM, IndRNN, LRU), and an option
    the target cannot express, get their names."""
    if layer.cell_name not in ("rnn", "lstm", "gru"):
        raise InteropError(f"layer: {target} has no operator or module for the {layer.cell_name} recurrence "
                           f"(its converters cover rnn, lstm and gru); keep the model in rnnlab (checkpoints, "
                           f"state_dict as safetensors)")
    if getattr(layer, "peephole", False) and target != "ONNX":
        raise InteropError(f"layer: {target} has no LSTM with peephole connections (ONNX's LSTM does: export "
                           f"with --format onnx)")
    if getattr(layer, "layer_norm", False):
        raise InteropError(f"layer: {target} has no layer-normalised {layer.cell_name.upper()}; keep the model in "
                           f"rnnlab (checkpoints, state_dict as safetensors)")
    if getattr(layer, "proj_size", 0) and target != "torch.nn":
        raise InteropError(f"layer: {target} has no LSTM with projections (proj_size={layer.proj_size}); torch's "
                           f"LSTM has them (rnnlab.interop.torch.to_torch, rnnlab export --format torch)")
    if getattr(layer, "reverse", False) and target != "ONNX":
        raise InteropError(f"layer: {target} has no reverse-only layer (reverse=True); ONNX's operators have "
                           f"direction='reverse' (export with --format onnx)")
    reg = getattr(layer, "regularization", {})
    if reg.get("zoneout") or reg.get("zoneout_cell"):         # dropout is off at evaluation: nothing to export
        raise InteropError(f"layer: zoneout mixes h_(t-1) into h_t at evaluation too, which {target}'s operators "
                           f"cannot express; export a model trained without it")


def require(module: str, extra: str):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InteropError(f"this needs the {module} package; install it with: pip install -e '.[{extra}]'") from None
