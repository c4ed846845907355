"""Models in and out: torch round trips, Keras layouts against an independent NumPy Keras, ONNX in onnxruntime."""
import itertools

import numpy as np
import pytest

import rnnlab
from rnnlab.interop import InteropError
from rnnlab.interop.keras import from_keras, to_keras
from rnnlab.interop.onnx import export, import_layer

torch = pytest.importorskip("torch")
from rnnlab.interop.torch import from_torch, load_torch_state_dict, model_to_torch, save_torch_state_dict, to_torch  # noqa: E402

TORCH = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
CLS = {"rnn": rnnlab.RNN, "lstm": rnnlab.LSTM, "gru": rnnlab.GRU}


def _run_torch(mod, x, lengths=None):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    xt = torch.from_numpy(x)
    with torch.no_grad():
        if lengths is None:
            out, hn = mod(xt)
        else:
            packed = pack_padded_sequence(xt, torch.as_tensor(lengths), batch_first=mod.batch_first, enforce_sorted=False)
            out, hn = mod(packed)
            out, _ = pad_packed_sequence(out, batch_first=mod.batch_first, total_length=x.shape[1 if mod.batch_first else 0])
    hn = hn if isinstance(hn, tuple) else (hn,)
    return out.numpy(), [h.numpy() for h in hn]


CONFIGS = list(itertools.product(["rnn", "lstm", "gru"], [1, 2], [False, True], [False, True], [False, True],
                                 ["float32", "float64"]))


@pytest.mark.parametrize("cell,L,bidir,bf,ragged,dtype", CONFIGS)
def test_torch_round_trips(cell, L, bidir, bf, ragged, dtype):
    tol = 1e-6 if dtype == "float32" else 1e-12
    rng = np.random.default_rng(L)
    torch.manual_seed(L)
    mod = TORCH[cell](4, 5, num_layers=L, bidirectional=bidir, batch_first=bf,
                      dtype=torch.float64 if dtype == "float64" else torch.float32)
    layer = from_torch(mod)                                            # torch -> rnnlab
    assert layer.config()["cell"] == cell and layer.batch_first == bf and layer.num_layers == L
    x = rng.standard_normal((3, 6, 4) if bf else (6, 3, 4)).astype(dtype)
    lengths = np.array([6, 2, 5]) if ragged else None
    want_out, want_h = _run_torch(mod, x, lengths)
    out, hn = layer(x, lengths=lengths)
    hn = hn if isinstance(hn, tuple) else (hn,)
    np.testing.assert_allclose(out, want_out, rtol=0, atol=tol)
    for a, b in zip(hn, want_h):
        np.testing.assert_allclose(a, b, rtol=0, atol=tol)
    back = from_torch(to_torch(layer))                                 # rnnlab -> torch -> rnnlab
    for k, v in layer.state_dict().items():
        assert np.array_equal(back.state_dict()[k], v)
    out2, _ = back(x, lengths=lengths)
    np.testing.assert_allclose(out2, out, rtol=0, atol=tol)


def test_torch_conversion_errors():
    assert from_torch(torch.nn.LSTM(4, 5, proj_size=3)).proj_size == 3      # projections are supported now
    with pytest.raises(InteropError, match="expected torch.nn.RNN, LSTM or GRU, got Linear"):
        from_torch(torch.nn.Linear(2, 2))
    with pytest.raises(InteropError, match="reset='before'"):
        to_torch(rnnlab.GRU(2, 3, reset="before"))
    with pytest.raises(InteropError, match="identity"):
        to_torch(rnnlab.RNN(2, 3, nonlinearity="identity"))


@pytest.mark.parametrize("mode,target,pred,bidir", [("dense", "last", "identity", False),
                                                    ("onehot", "every", "softmax", True),
                                                    ("embedding", "every", "softmax", False),
                                                    ("dense", "last", "softmax", True),
                                                    ("dense", "every", "sigmoid", False)])
def test_sequence_model_to_torch(mode, target, pred, bidir):
    from rnnlab.model.sequence_model import ModelConfig, SequenceModel
    cfg = ModelConfig(input_size=6, output_size=3, cell="gru", hidden_size=5, input_mode=mode, prediction=pred,
                      target=target, bidirectional=bidir, dtype="float64", num_layers=2)
    model = SequenceModel(cfg, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 4, 6)) if mode == "dense" else rng.integers(0, 6, (7, 4))
    lengths = np.array([7, 3, 5, 1])
    want, _ = model.predict(x, lengths)
    tm = model_to_torch(model)
    with torch.no_grad():
        got = tm(torch.from_numpy(x), lengths).numpy()
    if target == "every":                      # padded steps: rnnlab's outputs are zeros there, so the head's bias
        valid = np.arange(7)[:, None] < lengths[None, :]
        want, got = want[valid], got[valid]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    assert set(sd) == set(model.state_dict())  # the same names on both sides


def test_state_dict_as_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file
    mod = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    save_file(mod.state_dict(), str(tmp_path / "t.safetensors"))
    layer = load_torch_state_dict(tmp_path / "t.safetensors", "lstm")
    assert layer.num_layers == 2 and layer.bidirectional and layer.hidden_size == 4
    save_torch_state_dict(layer, tmp_path / "back.safetensors")
    mod2 = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    mod2.load_state_dict(load_file(str(tmp_path / "back.safetensors")))
    for k, v in mod.state_dict().items():
        assert torch.equal(v, mod2.state_dict()[k])
    with pytest.raises(InteropError, match="not a multiple of 3 gates"):
        load_torch_state_dict(tmp_path / "t.safetensors", "gru")


# ------------------------------------------------------------------ Keras, against an independent NumPy Keras
def _sig(x):
    return 1 / (1 + np.exp(-x))


def keras_reference(cell, weights, x, reset_after=True, activation=np.tanh):
    """Keras 3's SimpleRNN/LSTM/GRU equations, written from its documented layout (time-major x (T, B, I))."""
    h = None
    out = x
    for ws in weights:
        k, r = ws[0], ws[1]
        b = ws[2] if len(ws) > 2 else np.zeros(k.shape[1])
        H = r.shape[0]
        T, B = out.shape[:2]
        h, c = np.zeros((B, H)), np.zeros((B, H))
        seq = []
        for t in range(T):
            xt = out[t]
            if cell == "rnn":
                h = activation(xt @ k + h @ r + b)
            elif cell == "lstm":
                z = xt @ k + h @ r + b
                i, f, cc, o = _sig(z[:, :H]), _sig(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), _sig(z[:, 3 * H:])
                c = f * c + i * cc
                h = o * np.tanh(c)
            else:
                bi, br = (b[0], b[1]) if reset_after else (b, np.zeros_like(b))
                xz = xt @ k + bi
                if reset_after:
                    rh = h @ r + br
                    z = _sig(xz[:, :H] + rh[:, :H])
                    rr = _sig(xz[:, H:2 * H] + rh[:, H:2 * H])
                    hh = np.tanh(xz[:, 2 * H:] + rr * rh[:, 2 * H:])
                else:
                    z = _sig(xz[:, :H] + h @ r[:, :H])
                    rr = _sig(xz[:, H:2 * H] + h @ r[:, H:2 * H])
                    hh = np.tanh(xz[:, 2 * H:] + (rr * h) @ r[:, 2 * H:])
                h = z * h + (1 - z) * hh
            seq.append(h)
        out = np.stack(seq)
    return out


@pytest.mark.parametrize("cell,kw", [("rnn", {}), ("rnn", {"nonlinearity": "relu"}), ("lstm", {}), ("gru", {}),
                                     ("gru", {"reset": "before"})])
@pytest.mark.parametrize("bias", [True, False])
def test_keras_layout_against_reference(cell, kw, bias):
    layer = CLS[cell](4, 5, 2, bias=bias, dtype="float64", seed=1, **kw)
    if bias:
        rng = np.random.default_rng(0)
        layer.load_state_dict({k: v + rng.uniform(-1, 1, v.shape) if k.startswith("bias") else v
                               for k, v in layer.state_dict().items()})
    weights = to_keras(layer)
    assert weights[0][0].shape == (4, 5 * {"rnn": 1, "lstm": 4, "gru": 3}[cell])
    if cell == "gru" and bias:
        assert weights[0][2].shape == ((2, 15) if kw.get("reset", "after") == "after" else (15,))
    x = np.random.default_rng(1).standard_normal((6, 3, 4))
    act = (lambda v: np.maximum(v, 0)) if kw.get("nonlinearity") == "relu" else np.tanh
    want = keras_reference(cell, weights, x, reset_after=kw.get("reset", "after") == "after", activation=act)
    out, _ = layer(x)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-12)
    back = from_keras(cell, weights, **({"nonlinearity": kw["nonlinearity"]} if "nonlinearity" in kw else {}),
                      **({} if bias or cell != "gru" else {"reset": kw.get("reset", "after")}))
    out2, _ = back(x.astype(back.dtype))
    np.testing.assert_allclose(out2, out, rtol=0, atol=1e-12)
    if cell == "gru":
        assert back.reset == kw.get("reset", "after")


def test_keras_bidirectional_and_errors():
    layer = rnnlab.LSTM(3, 4, 2, bidirectional=True, dtype="float64", seed=0)
    back = from_keras("lstm", to_keras(layer), bidirectional=True)
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    np.testing.assert_allclose(back(x)[0], layer(x)[0], atol=1e-12)
    with pytest.raises(InteropError, match="not a multiple of 4 gates"):
        from_keras("lstm", [[np.zeros((3, 6)), np.zeros((2, 6))]])
    with pytest.raises(InteropError, match=r"weights\[1\]: expected kernel \(4, 16\)"):
        from_keras("lstm", [[np.zeros((3, 16)), np.zeros((4, 16)), np.zeros(16)], [np.zeros((3, 16)), np.zeros((4, 16)), np.zeros(16)]])


# ------------------------------------------------------------------ ONNX in onnxruntime
ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("cell,kw", [("lstm", {}), ("gru", {}), ("gru", {"reset": "before"}), ("rnn", {}),
                                     ("rnn", {"nonlinearity": "relu"})])
@pytest.mark.parametrize("L,bidir,bf", [(1, False, False), (2, True, True), (3, False, True)])
def test_onnx_export_runs_in_onnxruntime(tmp_path, cell, kw, L, bidir, bf):
    layer = CLS[cell](4, 5, L, bidirectional=bidir, batch_first=bf, seed=2, **kw)
    path = tmp_path / "m.onnx"
    export(layer, path, lengths=True, initial_state=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 6, 4) if bf else (6, 3, 4)).astype(np.float32)
    lengths = np.array([6, 2, 4], np.int32)
    LD = L * (2 if bidir else 1)
    h0 = rng.standard_normal((LD, 3, 5)).astype(np.float32)
    feeds = {"x": x, "lengths": lengths, "h0": h0}
    if cell == "lstm":
        feeds["c0"] = h0 * 0.5
    res = ort.InferenceSession(str(path)).run(None, feeds)
    out, hn = layer(x, (h0, h0 * 0.5) if cell == "lstm" else h0, lengths)
    hn = hn if isinstance(hn, tuple) else (hn,)
    np.testing.assert_allclose(res[0], out, rtol=0, atol=1e-5)
    for a, b in zip(res[1:], hn):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    back = import_layer(path)
    assert back.config() == layer.config()
    for k, v in layer.state_dict().items():
        assert np.array_equal(back.state_dict()[k], v), k


def test_trained_model_exports_with_equal_predictions(tmp_path, capsys):
    from rnnlab.cli.main import main
    from rnnlab.training.trainer import load_model
    run = tmp_path / "run"
    assert main(["train", "--task", "copy", "--seq-len", "4", "--steps", "5", "--hidden-size", "6", "--quiet",
                 "--model", "lstm", "--num-layers", "2", "--out", str(run)]) == 0
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--lengths"]) == 0
    model, _ = load_model(run)
    x = np.random.default_rng(0).integers(0, 10, (24, 5))
    lengths = np.array([24, 10, 3, 24, 7])
    want, _ = model.predict(x, lengths)
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(["prediction"], {"inputs": x, "lengths": lengths.astype(np.int32)})[0]
    valid = np.arange(24)[:, None] < lengths[None, :]
    np.testing.assert_allclose(got[valid], want[valid], rtol=0, atol=1e-5)
    # a last-step regression model with ragged lengths
    run2 = tmp_path / "run2"
    assert main(["train", "--task", "adding", "--seq-len", "6", "--steps", "3", "--hidden-size", "4", "--quiet",
                 "--model", "gru", "--bidirectional", "--out", str(run2)]) == 0
    assert main(["export", str(run2), "--out", str(tmp_path / "a.onnx"), "--lengths"]) == 0
    m2, _ = load_model(run2)
    xa = np.random.default_rng(1).standard_normal((6, 3, 2)).astype(np.float32)
    la = np.array([6, 2, 4])
    want, _ = m2.predict(xa, la)
    got = ort.InferenceSession(str(tmp_path / "a.onnx")).run(["prediction"], {"inputs": xa, "lengths": la.astype(np.int32)})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def _edit_graph(path, out, fn):
    import onnx
    m = onnx.load(str(path))
    node = next(n for n in m.graph.node if n.op_type in ("LSTM", "GRU", "RNN"))
    fn(m, node)
    onnx.save(m, str(out))
    return out


@pytest.mark.parametrize("change,match", [
    (lambda m, n: n.attribute.append(__import__("onnx").helper.make_attribute("clip", 3.0)), "clip=3"),
    (lambda m, n: n.attribute.append(__import__("onnx").helper.make_attribute("input_forget", 1)), "input_forget"),
    (lambda m, n: n.attribute.append(__import__("onnx").helper.make_attribute("activations", ["Sigmoid", "Relu", "Tanh"])), "activations"),
    (lambda m, n: [n.input.extend([""] * (7 - len(n.input))), n.input.append("P")], "peephole"),
    (lambda m, n: [a.CopyFrom(__import__("onnx").helper.make_attribute("direction", "backward")) for a in n.attribute if a.name == "direction"], "direction='backward'"),
])
def test_onnx_import_refuses_what_it_cannot_represent(tmp_path, change, match):
    layer = rnnlab.LSTM(3, 4, seed=0)
    export(layer, tmp_path / "a.onnx")
    bad = _edit_graph(tmp_path / "a.onnx", tmp_path / "b.onnx", change)
    with pytest.raises(InteropError, match=match):
        import_layer(bad)
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(InteropError, match="not a readable ONNX file|no RNN"):
        import_layer(tmp_path / "junk.onnx")


def test_cli_import_diagnose_export_round_trip(tmp_path, capsys):
    """A torch nn.GRU imported, diagnosed with `rnnlab gradients`, and exported back unchanged."""
    from safetensors.torch import load_file, save_file
    from rnnlab.cli.main import main
    mod = torch.nn.GRU(3, 6, num_layers=2)
    save_file(mod.state_dict(), str(tmp_path / "gru.safetensors"))
    assert main(["import", str(tmp_path / "gru.safetensors"), "--format", "torch", "--cell", "gru",
                 "--out", str(tmp_path / "layer.safetensors")]) == 0
    assert main(["gradients", str(tmp_path / "layer.safetensors"), "--seq-len", "12",
                 "--report", str(tmp_path / "g"), "--json", str(tmp_path / "g.json")]) == 0
    assert (tmp_path / "g" / "report.html").is_file()
    for fmt in ("torch", "onnx", "keras"):
        assert main(["export", str(tmp_path / "layer.safetensors"), "--format", fmt,
                     "--out", str(tmp_path / f"back.{fmt}")]) == 0
    back = load_file(str(tmp_path / "back.torch"))
    for k, v in mod.state_dict().items():
        assert torch.equal(back[k], v)
    assert main(["import", str(tmp_path / "back.onnx"), "--out", str(tmp_path / "l2.safetensors")]) == 0
    assert main(["import", str(tmp_path / "back.keras"), "--format", "keras", "--cell", "gru",
                 "--out", str(tmp_path / "l3.safetensors")]) == 0
    from rnnlab.interop.files import load_layer
    for f in ("l2", "l3"):
        lay = load_layer(tmp_path / f"{f}.safetensors")
        for k, v in mod.state_dict().items():
            np.testing.assert_array_equal(lay.state_dict()[k], v.numpy())


def test_top_level_onnx_module(tmp_path):
    import rnnlab.interop.onnx
    layer = rnnlab.GRU(3, 4, seed=0)
    rnnlab.interop.onnx.export(layer, tmp_path / "g.onnx")
    back = rnnlab.interop.onnx.import_layer(tmp_path / "g.onnx")
    assert back.config() == layer.config()


# ------------------------------------------------------------------ weights-only exports refuse what the peer computes otherwise
from rnnlab.errors import ConfigError  # noqa: E402
from rnnlab.interop.keras import check_exportable as keras_check  # noqa: E402
from rnnlab.interop.torch import check_exportable, export_refusal  # noqa: E402

_REFUSED = [  # (layer options, formats that refuse it, words of the message)
    ("lstm", {"zoneout": 0.3}, ("torch", "keras"), "has no zoneout"),
    ("gru", {"zoneout": 0.2}, ("torch", "keras"), "has no zoneout"),
    ("lstm", {"zoneout_cell": 0.25}, ("torch", "keras"), "zoneout_cell=0.25"),
    ("lstm", {"peephole": True}, ("torch", "keras"), "has no peephole connections"),
    ("lstm", {"layer_norm": True}, ("torch", "keras"), "(torch.nn|keras.layers).LSTM has no layer norm"),
    ("gru", {"layer_norm": True}, ("torch", "keras"), "GRU has no layer norm"),
    ("lstm", {"proj_size": 2}, ("keras",), "keras.layers.LSTM has no projection"),
    ("gru", {"reset": "before"}, ("torch",), "torch.nn.GRU applies the reset gate after"),
    ("rnn", {"nonlinearity": "identity"}, ("torch", "keras"), "has no identity nonlinearity"),
    ("mingru", {}, ("torch", "keras"), "has no minGRU layer"),
    ("minlstm", {}, ("torch", "keras"), "has no minLSTM layer"),
    ("indrnn", {}, ("torch", "keras"), "has no IndRNN layer"),
    ("lru", {}, ("torch", "keras"), "has no LRU layer"),
]


def _layer(cell, **kw):
    from rnnlab.engine.layers import LAYERS
    return LAYERS[cell](3, 4, seed=0, dtype="float64", **kw)


@pytest.mark.parametrize("cell,kw,refused,words", _REFUSED)
def test_check_exportable_refuses_what_the_peer_computes_otherwise(cell, kw, refused, words, outcome):
    import re
    layer = _layer(cell, **kw)
    for fmt in ("torch", "keras"):
        check = check_exportable if fmt == "torch" else keras_check
        if fmt not in refused:
            check(layer)                                            # the peer has it
            assert export_refusal(layer, fmt) is None
            continue
        with pytest.raises(ConfigError) as exc:
            check(layer)
        outcome(f"export --format {fmt}: a model {fmt} cannot compute", "one-line error, nothing written")
        msg = str(exc.value)
        assert isinstance(exc.value, InteropError)                  # callers of the converters catch either
        assert msg.startswith("format: ") and "\n" not in msg and re.search(words, msg), msg
        assert "this layer uses" in msg


def test_check_exportable_accepts_what_is_identity_at_inference():
    """Dropouts are off at evaluation and forget_bias is an init: the peer computes the same; so it does with
    torch's proj_size, Keras' reset_after=False and relu."""
    fine = [("lstm", dict(num_layers=2, dropout=0.2, input_dropout=0.3, recurrent_dropout=0.1, forget_bias=1.0)),
            ("gru", dict(recurrent_dropout=0.4)), ("rnn", dict(nonlinearity="relu", input_dropout=0.5))]
    for cell, kw in fine:
        for fmt in ("torch", "keras"):
            assert export_refusal(_layer(cell, **kw), fmt) is None
    check_exportable(_layer("lstm", proj_size=2))
    keras_check(_layer("gru", reset="before"))
    # and the claim itself: in evaluation the exported weights give torch's outputs for dropout, not for zoneout
    x = np.random.default_rng(0).standard_normal((6, 2, 3))
    for kw, same in ((dict(input_dropout=0.3, recurrent_dropout=0.3), True), (dict(zoneout=0.3), False)):
        layer = _layer("lstm", **kw)
        layer.eval()
        mod = torch.nn.LSTM(3, 4, dtype=torch.float64)
        mod.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
        with torch.no_grad():
            want = mod(torch.from_numpy(x))[0].numpy()
        assert np.allclose(layer(x)[0], want, atol=1e-12) == same
    from rnnlab.model.sequence_model import ModelConfig, SequenceModel
    model = SequenceModel(ModelConfig(input_size=2, output_size=1, cell="gru", hidden_size=4, zoneout=0.1), seed=0)
    with pytest.raises(ConfigError, match="^format: torch.nn.GRU has no zoneout.* this model uses zoneout=0.1 .*"
                                          "train without --zoneout"):
        check_exportable(model)
    with pytest.raises(ConfigError, match="^format: expected 'torch' or 'keras'"):
        check_exportable(model, "onnx")


@pytest.mark.parametrize("opts,formats", [
    (["--zoneout", "0.3"], ("torch", "keras")),
    (["--model", "lstm", "--zoneout-cell", "0.3"], ("torch", "keras")),
    (["--model", "lstm", "--peephole"], ("torch", "keras")),
    (["--model", "gru", "--layer-norm"], ("torch", "keras")),
    (["--model", "lstm", "--proj-size", "2"], ("keras",)),
    (["--model", "gru", "--reset", "before"], ("torch",)),
    (["--model", "mingru"], ("torch", "keras")),
])
def test_cli_export_refuses_a_model_the_peer_computes_otherwise(tmp_path, capsys, outcome, opts, formats):
    """rnnlab export --format torch|keras of such a run: rc 2, one stderr line, no file (needs cli.cmd_export to
    call rnnlab.interop.torch.check_exportable before writing)."""
    from rnnlab.cli.main import main
    run = tmp_path / "run"
    assert main(["train", "--task", "adding", "--seq-len", "6", "--hidden-size", "4", "--steps", "2", "--quiet",
                 "--out", str(run), *opts]) == 0
    capsys.readouterr()
    for fmt in ("torch", "keras"):
        out = tmp_path / f"m.{fmt}.safetensors"
        code = main(["export", str(run), "--format", fmt, "--out", str(out)])
        err = capsys.readouterr().err
        if fmt not in formats:
            assert code == 0 and out.is_file(), err                  # the peer has this option
            continue
        outcome(f"export --format {fmt}: a model {fmt} cannot compute", "one-line error, nothing written")
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert err.startswith("rnnlab export: error: format: "), err
        assert "this model uses" in err, err
        assert not out.exists()
