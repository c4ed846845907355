"""``rnnlab export`` (a model or layer file to ONNX, torch or Keras weights) and ``rnnlab import`` (ONNX, torch or
Keras weights to a layer file): options checked, the converters of ``rnnlab.interop`` called, the file named."""
from __future__ import annotations

import numpy as np

from rnnlab.cli.common import run_data
from rnnlab.training.config import flag


def _save_tensors(tensors, out):
    from safetensors.numpy import save
    from rnnlab.data.outputs import write_output
    write_output(out, save({k: np.ascontiguousarray(v) for k, v in tensors.items()}))


def cmd_export(args) -> int:
    from rnnlab.data.outputs import check_output
    from rnnlab.errors import ConfigError
    from rnnlab.study.runs import load_any
    out = check_output(args.out, "--out", [args.checkpoint] + run_data(args.checkpoint), args.force,
                       (".onnx",) if args.format == "onnx" else None)
    if args.format != "onnx" and out.suffix in (".onnx", ".pt", ".pth", ".csv", ".parquet", ".json"):
        raise ConfigError(f"--out: --format {args.format} writes a safetensors file; {out.name!r} names another "
                          f"format (use .safetensors)")
    for flag_name in ("lengths", "state", "batch_first"):
        if getattr(args, flag_name) and args.format != "onnx":
            raise ConfigError(f"{flag_name}: --{flag_name.replace('_', '-')} changes the ONNX graph; --format "
                              f"{args.format} writes weights only")
    kind, obj, meta = load_any(args.checkpoint, with_meta=True)
    if (args.state or args.batch_first) and kind != "model":
        raise ConfigError(f"{'state' if args.state else 'batch_first'}: an option of a model's export; a layer file "
                          f"exports with its own batch_first and h0/c0 inputs")
    if args.format in ("torch", "keras"):           # what the peer would compute otherwise: refused before writing
        from rnnlab.interop.torch import check_exportable
        check_exportable(obj, args.format)
    if args.format == "onnx":
        from rnnlab.interop.onnx import export
        kw, what = {}, ""
        if kind == "model":
            from rnnlab.data.encoding import Encoding
            info = meta.get("task_info", {})
            enc = Encoding.from_dict(info["encoding"]) if "encoding" in info else None
            kw = {"encoding": enc, "state": args.state, "batch_first": args.batch_first}
            if "forecast" in info:
                from rnnlab.tasks.forecast import ForecastSpec
                kw["forecast"] = ForecastSpec.from_dict(info["forecast"])
            what = ("; raw features in, standardised inside" if enc is not None else "") + (
                f"; classes in metadata_props" if enc is not None and enc.classes is not None else "")
            if "forecast" in info:
                what = ("; a window in the data's units in (NaN: no value), prediction (B, horizon, targets, "
                        "quantiles) out")
        export(obj, out, lengths=args.lengths, **kw)
        print(f"wrote {out} (ONNX opset 17; inputs {'inputs' if kind == 'model' else 'x'}"
              f"{', lengths' if args.lengths else ''}{', h0' + (', c0' if obj.rnn.cell_name == 'lstm' else '') if args.state else ''}"
              f"{what})")
    elif args.format == "torch":
        _save_tensors(obj.state_dict(), out)
        print(f"wrote {out} (a torch state_dict as safetensors: safetensors.torch.load_file('{out}'))")
    else:
        from rnnlab.interop.keras import keras_tensors
        _save_tensors(keras_tensors(obj), out)
        print(f"wrote {out} (Keras weights per layer: kernel, recurrent_kernel, bias"
              f"{'; the output layer as a Dense kernel and bias' if kind == 'model' else ''})")
    return 0


def cmd_import(args) -> int:
    from rnnlab.data.outputs import check_output
    from rnnlab.errors import ConfigError
    from rnnlab.interop.files import save_layer
    check_output(args.out, "--out", [args.file], args.force, (".safetensors",))
    if args.format == "onnx":
        from rnnlab.interop.onnx import import_layer
        for key in ("cell", "batch_first"):        # an ONNX graph says both itself
            if getattr(args, key):
                raise ConfigError(f"{key}: an ONNX file names its own cell and layout; drop {flag(key)}")
        layer = import_layer(args.file)
    elif args.format == "torch":
        from rnnlab.interop.torch import load_torch_state_dict
        if not args.cell:
            raise ConfigError("cell: --cell rnn|lstm|gru is needed to read a torch state_dict")
        layer = load_torch_state_dict(args.file, args.cell, batch_first=args.batch_first)
    else:
        from rnnlab.interop.keras import read_keras_file
        if not args.cell:
            raise ConfigError("cell: --cell rnn|lstm|gru is needed to read Keras weights")
        layer = read_keras_file(args.file, args.cell, batch_first=args.batch_first)
    save_layer(layer, args.out)
    print(f"wrote {args.out}: {layer!r}, {layer.num_parameters()} parameters")
    return 0
