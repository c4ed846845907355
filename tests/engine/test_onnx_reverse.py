"""The reverse-only layer (``reverse=True``) and ONNX ``direction="reverse"``: float64 central differences on
every classic backend, torch on each sequence reversed within its length, onnxruntime on graphs built with
onnx.helper (non-zero biases), the export round trip, and the attributes import reads or refuses."""
import pickle

import numpy as np
import pytest

import rnnlab
from rnnlab.study.diagnostics import reverse_within
from rnnlab.errors import ConfigError
from rnnlab.engine.gradcheck import check_layer
from rnnlab.interop import InteropError
from rnnlab.engine.layers import MinGRU, layer_from_config

from support import (BACKENDS, CELL_IDS, CELLS, TORCH_CELL_IDS, TORCH_CELLS, nonzero_biases, torch_run, torch_twin,
                     use_backend)

try:
    import torch  # noqa: F401  (the reference only)
except ImportError:
    torch = None
try:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
except ImportError:
    onnx = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is the reference")
needs_onnx = pytest.mark.skipif(onnx is None, reason="needs onnx and onnxruntime (pip install -e '.[onnx]')")

T, B, I, H = 5, 3, 4, 5                   # all different, so that a transpose fails loudly
LENGTHS = np.array([5, 2, 4])             # ragged: the reverse scan starts at each row's own last valid step
GRAD_TOL = 1e-6                           # relative error of BPTT against float64 central differences


def _tuple(s):
    return s if isinstance(s, tuple) else (s,)


# ------------------------------------------------------------------ the layer
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls,kw", CELLS, ids=CELL_IDS)
def test_reverse_layer_gradients(cls, kw, backend, monkeypatch):
    """Every parameter, x and the initial states of a 2-layer reverse stack, ragged lengths, non-zero biases."""
    rng = np.random.default_rng(0)
    layer = cls(I, H, 2, reverse=True, dtype="float64", seed=1, backend=use_backend(backend, monkeypatch), **kw)
    nonzero_biases(layer, rng)
    hx = tuple(rng.standard_normal((2, B, H)) * 0.5 for _ in layer.cell.STATE)
    errors = check_layer(layer, rng.standard_normal((T, B, I)), hx if len(hx) == 2 else hx[0], LENGTHS, seed=2)
    assert layer.last_backend == backend
    assert set(errors) == {"x", "h0", *layer.grads} | ({"c0"} if cls is rnnlab.LSTM else set())
    bad = {k: e for k, e in errors.items() if not e < GRAD_TOL}
    assert not bad, bad


@pytest.mark.parametrize("cls,kw,backends", [(rnnlab.LSTM, {}, BACKENDS + ["units"] * ("loop" in BACKENDS)),
                                             (rnnlab.GRU, {}, BACKENDS), (MinGRU, {}, ["numpy", "scan"])],
                         ids=["lstm", "gru", "mingru"])
def test_reverse_layer_is_the_bidirectional_second_direction(cls, kw, backends, monkeypatch):
    """On every backend (the units split at inference): output and h_n of the bidirectional layer's reverse
    half, whose weights it takes under the unsuffixed names."""
    rng = np.random.default_rng(3)
    Hb = 16                                                   # two threads of 8 units for "units"
    bi = cls(I, Hb, bidirectional=True, dtype="float64", seed=1, **kw)
    x = rng.standard_normal((T, B, I))
    want, want_hn = bi(x, lengths=LENGTHS)
    for backend in backends:
        layer = cls(I, Hb, reverse=True, dtype="float64", seed=2, backend=use_backend(backend, monkeypatch), **kw)
        layer.load_state_dict({k[:-len("_reverse")]: v for k, v in bi.state_dict().items() if k.endswith("_reverse")})
        if backend == "units":
            with rnnlab.no_grad():
                out, hn = layer(x, lengths=LENGTHS)
        else:
            out, hn = layer(x, lengths=LENGTHS)
            assert layer.last_backend == backend
        np.testing.assert_allclose(out, want[..., Hb:], rtol=0, atol=1e-12, err_msg=backend)
        for a, b in zip(_tuple(hn), _tuple(want_hn)):
            np.testing.assert_allclose(a, b[1:], rtol=0, atol=1e-12, err_msg=backend)


@needs_torch
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "split"])
@pytest.mark.parametrize("cls,kw", TORCH_CELLS, ids=TORCH_CELL_IDS)
def test_reverse_layer_equals_torch_on_the_reversed_sequence(cls, kw, backend, monkeypatch):
    """torch's layer with the same weights on each sequence reversed within its length: the output reversed
    back, the same h_n, and every gradient (dx reversed back)."""
    rng = np.random.default_rng(4)
    layer = cls(I, H, 2, reverse=True, dtype="float64", seed=5, backend=use_backend(backend, monkeypatch), **kw)
    nonzero_biases(layer, rng)
    x = rng.standard_normal((T, B, I))
    hx = tuple(rng.standard_normal((2, B, H)) * 0.5 for _ in layer.cell.STATE)
    d_out = rng.standard_normal((T, B, H))
    d_hn = tuple(rng.standard_normal((2, B, H)) for _ in hx)
    ref = torch_run(torch_twin(layer), reverse_within(x, LENGTHS), hx if len(hx) == 2 else hx[0], LENGTHS,
                    reverse_within(d_out, LENGTHS), d_hn)
    tol = dict(rtol=0, atol=1e-12)
    out, hn = layer(x, hx if len(hx) == 2 else hx[0], LENGTHS)
    np.testing.assert_allclose(out, reverse_within(ref["output"], LENGTHS), **tol)
    for a, b in zip(_tuple(hn), ref["hn"]):
        np.testing.assert_allclose(a, b, **tol)
    layer.zero_grad()
    dx, dhx = layer.backward(d_out, d_hn if len(d_hn) == 2 else d_hn[0])
    np.testing.assert_allclose(dx, reverse_within(ref["dx"], LENGTHS), **tol)
    for a, b in zip(_tuple(dhx), ref["dhx"]):
        np.testing.assert_allclose(a, b, **tol)
    for name, g in ref["grads"].items():
        np.testing.assert_allclose(layer.grads[name], g, **tol, err_msg=name)


def test_reverse_option_is_saved_and_checked(tmp_path):
    layer = rnnlab.GRU(I, H, 2, reverse=True, dtype="float64", seed=0)
    assert layer.config()["reverse"] is True and "reverse" not in rnnlab.GRU(I, H).config()
    assert "reverse=True" in repr(layer)
    assert sorted(layer.state_dict()) == sorted(rnnlab.GRU(I, H, 2).state_dict())     # unsuffixed names
    x = np.random.default_rng(0).standard_normal((T, B, I))
    for back in (layer_from_config(layer.config()), pickle.loads(pickle.dumps(layer))):
        back.load_state_dict(layer.state_dict())
        np.testing.assert_array_equal(back(x, lengths=LENGTHS)[0], layer(x, lengths=LENGTHS)[0])
    from rnnlab.interop.files import load_layer, save_layer
    save_layer(layer, tmp_path / "l.safetensors")
    assert load_layer(tmp_path / "l.safetensors").config() == layer.config()
    with pytest.raises(ConfigError, match="reverse: .*bidirectional=True"):
        rnnlab.LSTM(I, H, bidirectional=True, reverse=True)
    with pytest.raises(ConfigError, match="reverse: expected True or False, got 'yes'"):
        rnnlab.LSTM(I, H, reverse="yes")
    with pytest.raises(ConfigError, match="reverse=True"):
        rnnlab.Stream(layer)
    from rnnlab.interop.keras import to_keras
    from rnnlab.interop.torch import export_refusal, to_torch
    for convert in (to_torch, to_keras):
        with pytest.raises(InteropError, match="reverse=True"):
            convert(layer)
    assert "reverse=True" in export_refusal(layer, "torch") and "reverse=True" in export_refusal(layer, "keras")


# ------------------------------------------------------------------ ONNX
from rnnlab.interop.onnx import export, import_layer  # noqa: E402

GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}


def _graph(path, op, D, attrs, rng, inputs=("x", "W", "R", "B", "lengths", "h0"), inits=None, scale=0.4):
    """One ONNX operator with random float32 weights and biases (non-zero) as initializers; x (T, B, I)
    time-major unless layout=1; lengths and h0 (c0) as graph inputs."""
    g = GATES[op]
    weights = {"W": rng.uniform(-scale, scale, (D, g * H, I)), "R": rng.uniform(-scale, scale, (D, g * H, H)),
               "B": rng.uniform(-scale, scale, (D, 2 * g * H)), **(inits or {})}
    feeds = [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)]
    if "lengths" in inputs:
        feeds.append(helper.make_tensor_value_info("lengths", TensorProto.INT32, ["B"]))
    for s in ("h0", "c0"):
        if s in inputs and s not in weights:
            feeds.append(helper.make_tensor_value_info(s, TensorProto.FLOAT, [D, "B", H]))
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, list(inputs), outs, hidden_size=H, **attrs)
    graph = helper.make_graph([node], "g", feeds, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                                    for o in outs],
                              initializer=[numpy_helper.from_array(np.asarray(v, np.float32), k)
                                           for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


@needs_onnx
@pytest.mark.parametrize("op,attrs", [
    ("RNN", {"activations": ["Relu"]}),
    ("LSTM", {"activations": ["Sigmoid", "Tanh", "Tanh"]}),
    ("GRU", {"linear_before_reset": 1, "activations": ["Sigmoid", "Tanh"]}),
    ("GRU", {}),                                               # linear_before_reset=0: reset='before'
], ids=["rnn_relu", "lstm", "gru_after", "gru_before"])
def test_onnx_reverse_operator_equals_the_imported_layer(tmp_path, op, attrs):
    rng = np.random.default_rng(6)
    inputs = ("x", "W", "R", "B", "lengths", "h0") + (("c0",) if op == "LSTM" else ())
    path = _graph(tmp_path / "r.onnx", op, 1, dict(attrs, direction="reverse"), rng, inputs)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0 = rng.standard_normal((1, B, H)).astype(np.float32) * 0.5
    feeds = {"x": x, "lengths": LENGTHS.astype(np.int32), "h0": h0, **({"c0": h0[::-1] * 0.7} if op == "LSTM" else {})}
    Y, *states = ort.InferenceSession(str(path)).run(None, feeds)
    layer = import_layer(path)
    assert layer.reverse and not layer.bidirectional
    if op == "RNN":
        assert layer.nonlinearity == "relu"
    if op == "GRU":
        assert layer.reset == ("after" if attrs else "before")
    out, hn = layer(x, (h0, feeds["c0"]) if op == "LSTM" else h0, LENGTHS)
    np.testing.assert_allclose(out, Y[:, 0], rtol=0, atol=1e-5)               # Y (T, D, B, H)
    for a, b in zip(_tuple(hn), states):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    export(layer, tmp_path / "back.onnx", lengths=True)
    assert import_layer(tmp_path / "back.onnx").config() == layer.config()


@needs_onnx
@pytest.mark.parametrize("cls,kw", [(rnnlab.LSTM, {}), (rnnlab.GRU, {"reset": "before"}),
                                    (rnnlab.RNN, {"nonlinearity": "relu"})], ids=["lstm", "gru_before", "rnn_relu"])
def test_reverse_layer_export_round_trip(tmp_path, cls, kw):
    """A 2-layer reverse stack (batch_first) exports as direction='reverse', runs in onnxruntime with lengths and
    initial states, and imports back with the same options and weights."""
    rng = np.random.default_rng(7)
    layer = cls(I, H, 2, reverse=True, batch_first=True, seed=8, **kw)
    nonzero_biases(layer, rng)
    model = export(layer, tmp_path / "m.onnx", lengths=True, initial_state=True)
    assert {a.s for n in model.graph.node if n.op_type in GATES for a in n.attribute if a.name == "direction"} \
        == {b"reverse"}
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    h0 = rng.standard_normal((2, B, H)).astype(np.float32)
    feeds = {"x": x, "lengths": LENGTHS.astype(np.int32), "h0": h0, **({"c0": h0 * 0.5} if cls is rnnlab.LSTM else {})}
    res = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, feeds)
    out, hn = layer(x, (h0, h0 * 0.5) if cls is rnnlab.LSTM else h0, LENGTHS)
    for a, b in zip([out, *_tuple(hn)], res):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    back = import_layer(tmp_path / "m.onnx")
    assert back.config() == layer.config()
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v, err_msg=k)


@needs_onnx
@pytest.mark.parametrize("op,direction", [("LSTM", "forward"), ("GRU", "bidirectional"), ("RNN", "reverse")])
def test_onnx_layout_1_imports_as_batch_first(tmp_path, op, direction):
    """layout=1 (batch-major x and Y) checked with onnx's reference evaluator: onnxruntime runs layout=0 only."""
    from onnx.reference import ReferenceEvaluator
    rng = np.random.default_rng(9)
    D = 2 if direction == "bidirectional" else 1
    attrs = {"layout": 1, "direction": direction, **({"linear_before_reset": 1} if op == "GRU" else {})}
    path = _graph(tmp_path / "b.onnx", op, D, attrs, rng, ("x", "W", "R", "B"))
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    Y, Y_h = ReferenceEvaluator(str(path)).run(None, {"x": x})[:2]            # (B, T, D, H), (B, D, H)
    layer = import_layer(path)
    assert layer.batch_first and layer.bidirectional == (D == 2) and layer.reverse == (direction == "reverse")
    out, hn = layer(x)
    np.testing.assert_allclose(out, Y.reshape(B, T, D * H), rtol=0, atol=1e-5)
    np.testing.assert_allclose(_tuple(hn)[0], Y_h.transpose(1, 0, 2), rtol=0, atol=1e-5)


@needs_onnx
@pytest.mark.parametrize("op,attrs,extra,match", [
    ("LSTM", {"clip": 3.0}, {}, r"clip=3 \(cell clipping\)"),
    ("LSTM", {"input_forget": 1}, {}, "input_forget=1"),
    ("RNN", {"activations": ["Tanh", "Relu"], "direction": "bidirectional"}, {}, r"activations=\['Tanh', 'Relu'\]"),
    ("RNN", {"activations": ["Tanh", "Tanh"]}, {}, "activations .* has 2 entries; RNN with 1 direction"),
    ("GRU", {"activations": ["Sigmoid", "Relu"]}, {}, r"activations=\['Sigmoid', 'Relu'\] is not supported"),
    ("LSTM", {"activations": ["Sigmoid", "Tanh", "HardSigmoid"], "activation_alpha": [0.1]}, {}, "HardSigmoid"),
    ("RNN", {"activation_alpha": [0.5]}, {}, r"activation_alpha=\[0.5\]"),
    ("GRU", {"direction": "sideways"}, {}, "direction='sideways'"),
    ("LSTM", {}, {"h0": np.ones((1, B, H))}, "initial_h is a non-zero constant"),
    ("GRU", {}, {"B": np.ones((1, 5 * H))}, r"bias B of shape \(1, 25\).*expected \(1, 30\)"),
    ("RNN", {}, {"R": np.ones((1, H, H + 1))}, "do not fit hidden_size=5"),
], ids=["clip", "input_forget", "mixed_rnn_acts", "acts_count", "gru_acts", "hard_sigmoid", "alpha", "direction",
        "initial_h", "bias_shape", "hidden_size"])
def test_onnx_import_names_the_attribute_it_refuses(tmp_path, op, attrs, extra, match):
    D = 2 if attrs.get("direction") == "bidirectional" else 1
    path = _graph(tmp_path / "bad.onnx", op, D, attrs, np.random.default_rng(0), ("x", "W", "R", "B", "", "h0"),
                  extra)
    with pytest.raises(InteropError, match=match) as err:
        import_layer(path)
    assert "\n" not in str(err.value)


@needs_onnx
def test_onnx_import_refuses_operators_of_different_directions(tmp_path):
    """A forward operator over a reverse one is no single rnnlab stack."""
    layer = rnnlab.GRU(I, H, 2, reverse=True, seed=0)
    export(layer, tmp_path / "a.onnx")
    m = onnx.load(str(tmp_path / "a.onnx"))
    node = [n for n in m.graph.node if n.op_type == "GRU"][1]
    for a in node.attribute:
        if a.name == "direction":
            a.CopyFrom(helper.make_attribute("direction", "forward"))
    onnx.save(m, str(tmp_path / "b.onnx"))
    with pytest.raises(InteropError, match="direction='forward' differs from the first operator's 'reverse'"):
        import_layer(tmp_path / "b.onnx")
