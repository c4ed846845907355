"""``rnnlab.onnx.export(layer_or_model, path)`` and ``rnnlab.onnx.import_layer(path)``: see rnnlab.interop.onnx."""
from .interop.onnx import OPSET, export, export_layer, export_model, import_layer

__all__ = ["OPSET", "export", "export_layer", "export_model", "import_layer"]
