"""ONNX export and import: one ONNX RNN/LSTM/GRU operator per layer (opset 17), built with the ``onnx``
package (no torch needed) and checked with ``onnx.checker``.

Export (``export(layer_or_model, path)``): inputs ``x`` (T, B, I) -- (B, T, I) with batch_first, by
Transposes around the time-major operators -- or integer ``inputs`` (T, B) for a token model; optional
``lengths`` (B,) int32 (the operators' ``sequence_lens``: ragged batches); optional ``h0`` / ``c0``. Outputs
``output`` (T, B, D*H), ``h_n`` (and ``c_n``) (L*D, B, H) for a layer; ``logits`` and ``prediction`` for a model
(``export_model``: with a data run's encoding, the graph takes raw features and its metadata names the classes;
with ``state``, the model's states in and out).
Gate blocks are permuted to ONNX order (LSTM i o f c, GRU z r h), ``B = [b_ih, b_hh]``, the GRU's reset
convention becomes ``linear_before_reset`` (1 = 'after'), bidirectional layers ``direction="bidirectional"``
and ``reverse=True`` layers ``direction="reverse"``.

Import (``import_layer(path)``): the graph's RNN/LSTM/GRU operators, in order, become one stacked rnnlab
layer: ``direction`` forward, bidirectional or reverse (``reverse=True``, the steps of each sequence under
``sequence_lens`` read backwards); an RNN's ``activations`` Tanh or Relu (``nonlinearity``), an LSTM's or GRU's
only the defaults, spelled out or not; ``layout=1`` as ``batch_first=True`` (x and output (B, T, .); h_n stays
(L*D, B, H) as torch's); an LSTM's peephole weights (input P, order p_i p_o p_f) as ``peephole=True``. Anything
rnnlab cannot represent -- ``clip``, ``input_forget=1``, other activations or their alphas and betas, a
non-zero constant ``initial_h``/``initial_c``, weights that do not fit ``hidden_size``, operators that differ in
cell, size or direction -- is a one-line error naming it and its value, never a different model.
"""
from __future__ import annotations

import numpy as np

from rnnlab.engine.cells import CELLS
from rnnlab.interop import InteropError, permute_blocks, require, require_classic

OPSET = 17
G = {name: cell.G for name, cell in CELLS.items()}
TO_ONNX = {"rnn": [0], "lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}        # ONNX block j = PyTorch block TO_ONNX[j]
FROM_ONNX = {"rnn": [0], "lstm": [0, 2, 3, 1], "gru": [1, 0, 2]}      # PyTorch block j = ONNX block FROM_ONNX[j]
OP = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}


class _Builder:
    def __init__(self, dtype):
        self.onnx = require("onnx", "onnx")
        self.h = self.onnx.helper
        self.nodes, self.inits, self.n = [], [], 0
        self.np_dtype = np.dtype(dtype)
        self.elem = self.onnx.TensorProto.DOUBLE if self.np_dtype == np.float64 else self.onnx.TensorProto.FLOAT

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, base, arr, dtype=None):
        from onnx import numpy_helper
        name = self.name(base)
        arr = np.asarray(arr, dtype=dtype or self.np_dtype)
        # ascontiguousarray makes a 0-d array 1-d; a scalar index must stay a scalar (Gather drops the axis)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr).reshape(arr.shape), name))
        return name

    def node(self, op, inputs, n_out=1, **attrs):
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(self.h.make_node(op, inputs, outs, **attrs))
        return outs if n_out > 1 else outs[0]


def _stack(b, layer, x, layout, lengths=None, h0=None, c0=None):
    """Add the layer's operators to the builder; returns (output name, [h_n name, c_n name])."""
    require_classic(layer, "ONNX")
    cell, g, H, D = layer.cell_name, G[layer.cell_name], layer.hidden_size, layer.num_directions
    if cell == "rnn" and layer.cell_opts["nonlinearity"] == "identity":
        raise InteropError("layer: nonlinearity='identity' has no ONNX RNN activation; use tanh or relu")
    sd = layer.state_dict()
    yh, yc = [], []
    inp = x
    for l in range(layer.num_layers):
        W, R, B, P = [], [], [], []
        for d in range(D):
            s = layer.suffix(l, d)
            perm = TO_ONNX[cell]
            if getattr(layer, "peephole", False):           # ONNX's P is [p_i, p_o, p_f]; rnnlab's i, f, o
                P.append(permute_blocks(sd["weight_ph" + s], [0, 2, 1], 3))
            W.append(permute_blocks(sd["weight_ih" + s], perm, g))
            R.append(permute_blocks(sd["weight_hh" + s], perm, g))
            if layer.bias:
                B.append(np.concatenate([permute_blocks(sd["bias_ih" + s], perm, g),
                                         permute_blocks(sd["bias_hh" + s], perm, g)]))
        ins = [inp, b.const(f"W_l{l}", np.stack(W)), b.const(f"R_l{l}", np.stack(R)),
               b.const(f"B_l{l}", np.stack(B)) if layer.bias else "", lengths or ""]
        sl = None
        if h0 is not None or c0 is not None:
            sl = [b.const("start", [l * D], np.int64), b.const("end", [(l + 1) * D], np.int64)]
        ins.append(b.node("Slice", [h0] + sl) if h0 is not None else "")
        if cell == "lstm":
            ins.append(b.node("Slice", [c0] + sl) if c0 is not None else "")
            if P:
                ins.append(b.const(f"P_l{l}", np.stack(P)))
        while ins and ins[-1] == "":
            ins.pop()
        direction = "bidirectional" if D == 2 else "reverse" if layer.reverse else "forward"
        attrs = dict(hidden_size=H, direction=direction, layout=layout)
        if cell == "gru":
            attrs["linear_before_reset"] = 1 if layer.cell_opts["reset"] == "after" else 0
        if cell == "rnn":
            attrs["activations"] = [{"tanh": "Tanh", "relu": "Relu"}[layer.cell_opts["nonlinearity"]]] * D
        outs = b.node(OP[cell], ins, n_out=3 if cell == "lstm" else 2, **attrs)
        Y = outs[0]
        yh.append(outs[1])
        if cell == "lstm":
            yc.append(outs[2])
        if layout == 0:                                   # Y (T, D, B, H) -> (T, B, D*H)
            Y = b.node("Transpose", [Y], perm=[0, 2, 1, 3])
        inp = b.node("Reshape", [Y, b.const("shape", [0, 0, -1], np.int64)])
    states = [b.node("Concat", yh, axis=0) if len(yh) > 1 else b.node("Identity", yh)]
    if yc:
        states.append(b.node("Concat", yc, axis=0) if len(yc) > 1 else b.node("Identity", yc))
    return inp, states


def _finish(b, inputs, outputs, path, doc, props=None):
    onnx = b.onnx
    graph = b.h.make_graph(b.nodes, "rnnlab", inputs, outputs, initializer=b.inits)
    model = b.h.make_model(graph, producer_name="rnnlab", opset_imports=[b.h.make_opsetid("", OPSET)],
                           doc_string=doc)
    if props:
        b.h.set_model_props(model, props)
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model, full_check=True)
    from rnnlab.data.outputs import write_output
    write_output(path, model.SerializeToString())      # atomic, and a one-line error for a path it cannot write
    return model


def export_layer(layer, path, lengths: bool = False, initial_state: bool = False):
    """Write ``layer`` as an ONNX graph; see the module docstring for inputs and outputs."""
    b = _Builder(layer.dtype)
    h = b.h
    # onnxruntime runs only layout=0 (time-major) recurrent operators: batch_first is two Transposes around them
    layout = 1 if layer.batch_first else 0
    LD, H = layer.num_layers * layer.num_directions, layer.hidden_size
    x_shape = ["B", "T", layer.input_size] if layout else ["T", "B", layer.input_size]
    inputs = [h.make_tensor_value_info("x", b.elem, x_shape)]
    if lengths:
        inputs.append(h.make_tensor_value_info("lengths", b.onnx.TensorProto.INT32, ["B"]))
    h0 = c0 = None
    if initial_state:
        inputs.append(h.make_tensor_value_info("h0", b.elem, [LD, "B", H]))
        h0 = "h0"
        if layer.cell_name == "lstm":
            inputs.append(h.make_tensor_value_info("c0", b.elem, [LD, "B", H]))
            c0 = "c0"
    x = b.node("Transpose", ["x"], perm=[1, 0, 2]) if layout else "x"
    out, states = _stack(b, layer, x, 0, "lengths" if lengths else None, h0, c0)
    if layout:
        out = b.node("Transpose", [out], perm=[1, 0, 2])
    b.nodes.append(h.make_node("Identity", [out], ["output"]))
    b.nodes.append(h.make_node("Identity", [states[0]], ["h_n"]))
    D = layer.num_directions
    o_shape = ["B", "T", D * H] if layout else ["T", "B", D * H]
    outputs = [h.make_tensor_value_info("output", b.elem, o_shape), h.make_tensor_value_info("h_n", b.elem, [LD, "B", H])]
    if len(states) == 2:
        b.nodes.append(h.make_node("Identity", [states[1]], ["c_n"]))
        outputs.append(h.make_tensor_value_info("c_n", b.elem, [LD, "B", H]))
    return _finish(b, inputs, outputs, path, f"rnnlab {layer!r}", {"rnnlab.batch_first": str(int(layer.batch_first))})


def export_model(model, path, lengths: bool = False, encoding=None, state: bool = False, batch_first: bool = False,
                 forecast=None):
    """Write a ``SequenceModel`` (input layer, stack, output layer, prediction) as an ONNX graph.

    ``encoding`` (a run trained on data, ``rnnlab.data.encoding.Encoding``): the graph takes the raw features and
    standardises them itself ((x - x_mean) / x_std, NaN read as the mean under ``missing='zero'``); a regression's
    ``prediction`` is in the data's units; the classes, features and problem go in ``metadata_props``
    (``rnnlab.classes`` etc., JSON). ``state``: inputs ``h0`` (and ``c0``) and outputs ``h_n`` (and ``c_n``),
    (L*D, B, H), so a stream runs chunk by chunk. ``batch_first``: ``inputs`` (B, T, F) and per-step outputs
    (B, T, K) (Transposes around the time-major operators, which onnxruntime requires).

    ``forecast`` (a forecasting run's ``rnnlab.tasks.forecast.ForecastSpec``): ``inputs`` is a window in the
    data's units (``recent_windows``: targets, past and future covariates, ``is_future``; NaN where the horizon
    has no value), standardised inside; ``prediction`` is (B, horizon, targets, quantiles) in the data's units,
    the quantiles sorted, as ``rnnlab predict`` writes them."""
    import json
    cfg = model.config
    b = _Builder(model.dtype)
    h = b.h
    onnx = b.onnx
    p = model.named_parameters()
    if encoding is not None and cfg.input_mode != "dense":
        raise InteropError("encoding: only a model on dense features standardises its input")
    time_axes = ["B", "T"] if batch_first else ["T", "B"]
    if cfg.input_mode == "dense":
        inputs = [h.make_tensor_value_info("inputs", b.elem, time_axes + [cfg.input_size])]
        x = b.node("Transpose", ["inputs"], perm=[1, 0, 2]) if batch_first else "inputs"
        if forecast is not None:                          # as forecast.standardise_window
            n = cfg.input_size - len(forecast.mean)
            x = b.node("Div", [b.node("Sub", [x, b.const("x_mean", forecast.mean + [0.0] * n)]),
                               b.const("x_std", forecast.std + [1.0] * n)])
            x = b.node("Where", [b.node("IsNaN", [x]), b.const("zero_x", 0.0), x])
        elif encoding is not None:                        # the training statistics, as Encoding.encode_x
            x = b.node("Div", [b.node("Sub", [x, b.const("x_mean", encoding.x_mean)]), b.const("x_std", encoding.x_std)])
            if encoding.missing == "zero":
                x = b.node("Where", [b.node("IsNaN", [x]), b.const("zero_x", 0.0), x])
    else:
        inputs = [h.make_tensor_value_info("inputs", onnx.TensorProto.INT64, time_axes)]
        table = p["embedding.weight"] if cfg.input_mode == "embedding" else np.eye(cfg.input_size)
        tokens = b.node("Transpose", ["inputs"], perm=[1, 0]) if batch_first else "inputs"
        x = b.node("Gather", [b.const("table", table), tokens], axis=0)
    if lengths:
        inputs.append(h.make_tensor_value_info("lengths", onnx.TensorProto.INT32, ["B"]))
    rnn = model.rnn
    LD, P = rnn.num_layers * rnn.num_directions, rnn.output_size
    h0 = c0 = None
    if state:
        inputs.append(h.make_tensor_value_info("h0", b.elem, [LD, "B", P]))
        h0 = "h0"
        if rnn.cell_name == "lstm":
            inputs.append(h.make_tensor_value_info("c0", b.elem, [LD, "B", rnn.hidden_size]))
            c0 = "c0"
    out, states = _stack(b, rnn, x, 0, "lengths" if lengths else None, h0, c0)
    if cfg.target == "last":
        if lengths:                                       # one-hot of each row's last valid step, summed over time
            T = b.node("Gather", [b.node("Shape", [out]), b.const("zero", 0, np.int64)], axis=0)
            steps = b.node("Range", [b.const("r0", 0, np.int64), T, b.const("r1", 1, np.int64)])
            last = b.node("Sub", [b.node("Cast", ["lengths"], to=onnx.TensorProto.INT64), b.const("one", [1], np.int64)])
            onehot = b.node("Equal", [b.node("Unsqueeze", [steps, b.const("ax1", [1], np.int64)]),
                                      b.node("Unsqueeze", [last, b.const("ax0", [0], np.int64)])])
            w = b.node("Unsqueeze", [b.node("Cast", [onehot], to=b.elem), b.const("ax2", [2], np.int64)])
            out = b.node("ReduceSum", [b.node("Mul", [out, w]), b.const("axt", [0], np.int64)], keepdims=0)
        else:
            out = b.node("Gather", [out, b.const("lastidx", -1, np.int64)], axis=0)
    logits = b.node("Add", [b.node("MatMul", [out, b.const("V_T", p["head.weight"].T)]), b.const("c", p["head.bias"])])
    pred = {"softmax": lambda: b.node("Softmax", [logits], axis=-1), "sigmoid": lambda: b.node("Sigmoid", [logits]),
            "identity": lambda: b.node("Identity", [logits])}[cfg.prediction]()
    if encoding is not None and encoding.problem == "regress":     # back to the data's units (decode_values)
        pred = b.node("Add", [b.node("Mul", [pred, b.const("y_std", encoding.y_std)]), b.const("y_mean", encoding.y_mean)])
    shape = ["B", cfg.output_size] if cfg.target == "last" else time_axes + [cfg.output_size]
    if forecast is not None:                              # as ForecastSpec.decode: units, then sorted quantiles
        K, Q = len(forecast.targets), forecast.Q
        pred = b.node("Reshape", [pred, b.const("hkq", [-1, forecast.horizon, K, Q], np.int64)])
        pred = b.node("Add", [b.node("Mul", [pred, b.const("y_std", np.reshape(forecast.std[:K], (K, 1)))]),
                              b.const("y_mean", np.reshape(forecast.mean[:K], (K, 1)))])
        pred = b.node("TopK", [pred, b.const("q", [Q], np.int64)], n_out=2, axis=-1, largest=0, sorted=1)[0]
        pred_shape = ["B", forecast.horizon, K, Q]
    else:
        pred_shape = shape
    if batch_first and cfg.target == "every":
        logits, pred = (b.node("Transpose", [v], perm=[1, 0, 2]) for v in (logits, pred))
    b.nodes.append(h.make_node("Identity", [logits], ["logits"]))
    b.nodes.append(h.make_node("Identity", [pred], ["prediction"]))
    outputs = [h.make_tensor_value_info("logits", b.elem, shape),
               h.make_tensor_value_info("prediction", b.elem, pred_shape)]
    if state:
        b.nodes.append(h.make_node("Identity", [states[0]], ["h_n"]))
        outputs.append(h.make_tensor_value_info("h_n", b.elem, [LD, "B", P]))
        if len(states) == 2:
            b.nodes.append(h.make_node("Identity", [states[1]], ["c_n"]))
            outputs.append(h.make_tensor_value_info("c_n", b.elem, [LD, "B", rnn.hidden_size]))
    props = {"rnnlab.batch_first": str(int(batch_first)), "rnnlab.target": cfg.target}
    if forecast is not None:
        props.update({"rnnlab.problem": "forecast", "rnnlab.features": json.dumps(forecast.input_names),
                      "rnnlab.targets": json.dumps(forecast.targets), "rnnlab.horizon": str(forecast.horizon),
                      "rnnlab.quantiles": json.dumps(forecast.quantiles), "rnnlab.window": str(forecast.window),
                      "rnnlab.forecast": json.dumps(forecast.to_dict())})
    if encoding is not None:
        props.update({"rnnlab.problem": encoding.problem, "rnnlab.features": json.dumps(encoding.feature_names),
                      "rnnlab.data.encoding": json.dumps(encoding.to_dict())})
        if encoding.classes is not None:
            props["rnnlab.classes"] = json.dumps([str(c) for c in encoding.classes])
    return _finish(b, inputs, outputs, path, f"rnnlab SequenceModel {cfg.to_dict()}", props)


def export(obj, path, lengths: bool = False, **kw):
    """Export a layer or a ``SequenceModel`` to ONNX (``kw``: ``export_layer``'s or ``export_model``'s options)."""
    from rnnlab.engine.layers import RecurrentLayer
    from rnnlab.model.sequence_model import SequenceModel
    if isinstance(obj, RecurrentLayer):
        return export_layer(obj, path, lengths=lengths, **kw)
    if isinstance(obj, SequenceModel):
        return export_model(obj, path, lengths=lengths, **kw)
    raise InteropError(f"export: expected an rnnlab layer or SequenceModel, got {type(obj).__name__}")


def _activations(attrs, op, D, where) -> dict:
    """The operator's activations as rnnlab options: an RNN's Tanh or Relu (its ``nonlinearity``); an LSTM's and
    a GRU's must be the defaults. Their alphas and betas: none of these functions takes one."""
    acts = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
    per = 1 if op == "RNN" else len(DEFAULT_ACTS[op])          # activations per direction
    if acts and len(acts) != per * D:
        raise InteropError(f"{where}: activations {acts} has {len(acts)} entries; {op} with {D} direction(s) takes "
                           f"{per * D}")
    opts = {}
    if op == "RNN":
        kinds = set(acts or ["Tanh"])
        if len(kinds) != 1 or not kinds <= {"Tanh", "Relu"}:
            raise InteropError(f"{where}: activations={acts} is not supported (Tanh or Relu, the same in both "
                               f"directions)")
        opts["nonlinearity"] = kinds.pop().lower()
    elif acts and acts != DEFAULT_ACTS[op] * D:
        raise InteropError(f"{where}: activations={acts} is not supported (only {DEFAULT_ACTS[op]} per direction)")
    for k in ("activation_alpha", "activation_beta"):
        if attrs.get(k):                                          # an empty list says nothing
            raise InteropError(f"{where}: {k}={list(attrs[k])} is not supported by rnnlab (its activations "
                               f"{acts or (DEFAULT_ACTS.get(op) or ['Tanh'])} take no parameters)")
    return opts


def _zero_initial_states(node, inits, where) -> None:
    """A constant initial_h or initial_c would be part of the model; rnnlab's layers start from the state passed
    at each call (zero by default), so only a zero constant is accepted."""
    for i, name in ((5, "initial_h"), (6, "initial_c")):
        if len(node.input) > i and node.input[i] in inits and np.any(inits[node.input[i]]):
            raise InteropError(f"{where}: {name} is a non-zero constant; rnnlab takes initial states per call (hx), "
                               f"so feed it as a graph input")


def import_layer(path, dtype=None):
    """The RNN/LSTM/GRU operators of an ONNX file, in graph order, as one stacked rnnlab layer."""
    onnx = require("onnx", "onnx")
    from onnx import numpy_helper
    from rnnlab.engine.layers import layer_from_config
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise InteropError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {exc})") from None
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    ops = [n for n in model.graph.node if n.op_type in ("RNN", "LSTM", "GRU")]
    if not ops:
        raise InteropError(f"{path}: no RNN, LSTM or GRU operator in the graph")
    spec, sd = None, {}
    for l, node in enumerate(ops):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        where = f"{path}: operator {node.name or node.op_type} (#{l})"
        if "clip" in attrs:
            raise InteropError(f"{where}: clip={attrs['clip']:g} (cell clipping) is not supported by rnnlab")
        if attrs.get("input_forget", 0):
            raise InteropError(f"{where}: input_forget={attrs['input_forget']} (coupled input and forget gates) is "
                               f"not supported by rnnlab")
        direction = attrs.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        if direction not in ("forward", "reverse", "bidirectional"):
            raise InteropError(f"{where}: direction={direction!r} is not an ONNX direction (forward, reverse or "
                               f"bidirectional)")
        if attrs.get("layout", 0) not in (0, 1):
            raise InteropError(f"{where}: layout={attrs['layout']} is not an ONNX layout (0: time-major, 1: batch-major)")
        D = 2 if direction == "bidirectional" else 1
        cell = {"RNN": "rnn", "LSTM": "lstm", "GRU": "gru"}[node.op_type]
        opts = _activations(attrs, node.op_type, D, where)
        P = None
        if node.op_type == "LSTM" and len(node.input) > 7 and node.input[7]:
            if node.input[7] not in inits:
                raise InteropError(f"{where}: peephole weights (input P) are not a constant initializer")
            P = inits[node.input[7]]                                # (D, 3H): p_i, p_o, p_f
            opts["peephole"] = True
        if cell == "gru":
            opts["reset"] = "after" if attrs.get("linear_before_reset", 0) else "before"
        try:
            W, R = inits[node.input[1]], inits[node.input[2]]
            B = inits[node.input[3]] if len(node.input) > 3 and node.input[3] else None
        except KeyError as exc:
            raise InteropError(f"{where}: weight {exc} is not a constant initializer; rnnlab imports constant weights only") from None
        _zero_initial_states(node, inits, where)
        g = G[cell]
        H = int(attrs.get("hidden_size", R.shape[-1]))
        if W.ndim != 3 or W.shape[:2] != (D, g * H) or R.shape != (D, g * H, H):
            raise InteropError(f"{where}: weights of shape W {W.shape}, R {R.shape} do not fit hidden_size={H}, {D} "
                               f"direction(s) (expected W ({D}, {g * H}, input_size), R ({D}, {g * H}, {H}))")
        if B is not None and B.shape != (D, 2 * g * H):
            raise InteropError(f"{where}: bias B of shape {B.shape} does not fit hidden_size={H}, {D} direction(s) "
                               f"(expected ({D}, {2 * g * H}))")
        if P is not None and P.shape != (D, 3 * H):
            raise InteropError(f"{where}: peephole P of shape {P.shape} does not fit hidden_size={H}, {D} "
                               f"direction(s) (expected ({D}, {3 * H}))")
        this = {"cell": cell, "hidden_size": H, "direction": direction, "layout": attrs.get("layout", 0),
                "bias": B is not None, **opts}
        if spec is None:
            spec = dict(this, input_size=int(W.shape[2]))
        else:
            for k in ("cell", "hidden_size", "direction", "layout", "bias", "nonlinearity", "reset", "peephole"):
                if this.get(k) != spec.get(k):
                    raise InteropError(f"{where}: {k}={this.get(k)!r} differs from the first operator's "
                                       f"{spec.get(k)!r}; rnnlab stacks layers of one kind")
            if W.shape[2] != D * H:
                raise InteropError(f"{where}: input size {W.shape[2]} is not the previous layer's output {D * H}")
        for d in range(D):
            s = f"_l{l}" + ("_reverse" if d else "")
            sd["weight_ih" + s] = permute_blocks(W[d], FROM_ONNX[cell], g)
            sd["weight_hh" + s] = permute_blocks(R[d], FROM_ONNX[cell], g)
            if B is not None:
                sd["bias_ih" + s] = permute_blocks(B[d][:g * H], FROM_ONNX[cell], g)
                sd["bias_hh" + s] = permute_blocks(B[d][g * H:], FROM_ONNX[cell], g)
            if P is not None:
                sd["weight_ph" + s] = permute_blocks(P[d], [0, 2, 1], 3)
    if dtype is None:
        dtype = "float64" if sd["weight_ih_l0"].dtype == np.float64 else "float32"
    props = {p.key: p.value for p in model.metadata_props}
    batch_first = spec["layout"] == 1 or props.get("rnnlab.batch_first") == "1"
    cfg = {"cell": spec["cell"], "input_size": spec["input_size"], "hidden_size": spec["hidden_size"],
           "num_layers": len(ops), "bias": spec["bias"], "batch_first": batch_first,
           "bidirectional": spec["direction"] == "bidirectional", "dtype": dtype}
    if spec["direction"] == "reverse":
        cfg["reverse"] = True
    for k in ("nonlinearity", "reset", "peephole"):
        if k in spec:
            cfg[k] = spec[k]
    layer = layer_from_config(cfg)
    layer.load_state_dict(sd)
    return layer
