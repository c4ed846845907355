"""Layer files: an rnnlab layer's weights and architecture in one checkpoint (``kind = "layer"``)."""
from __future__ import annotations

from rnnlab.model.checkpoint import load_checkpoint, save_checkpoint
from rnnlab.errors import CheckpointError


def save_layer(layer, path) -> None:
    save_checkpoint(path, layer.state_dict(), {"kind": "layer", "layer_config": layer.config()})


def load_layer(path):
    from rnnlab.engine.layers import layer_from_config
    tensors, meta = load_checkpoint(path)
    if meta.get("kind") != "layer" or "layer_config" not in meta:
        raise CheckpointError(f"{path}: not a layer file (kind={meta.get('kind')!r}); expected one written by "
                              f"`rnnlab import` or rnnlab.interop.save_layer")
    layer = layer_from_config(meta["layer_config"])
    layer.load_state_dict(tensors)
    return layer
