"""The LSTM and GRU variants: variational (recurrent) dropout and zoneout (finite differences with the masks held
fixed, a torch reference written here, the evaluation-time expectation, the masks' statistics, resume), the
peephole LSTM (finite differences, a torch reference, ONNX's input P in onnxruntime), the LSTM with
projections (torch.nn.LSTM(proj_size=...) on copied weights) and the layer-normalised LSTM and GRU (finite
differences, a torch reference built on torch.nn.functional.layer_norm); the refusals."""
import numpy as np
import pytest

import rnnlab
from support import BACKENDS, HAS_NUMBA, STRATEGIES, needs_numba, use_backend
from rnnlab.engine import dispatch
from rnnlab.errors import BackendError, ConfigError
from rnnlab.engine.gradcheck import check_layer
from rnnlab.engine.layers import GRU, LSTM, RNN, MinGRU

torch = pytest.importorskip("torch")

ALL = {"input_dropout": 0.3, "recurrent_dropout": 0.3, "zoneout": 0.25}
KINDS = [("rnn", RNN, {}), ("lstm", LSTM, {"zoneout_cell": 0.2}), ("gru-after", GRU, {}),
         ("gru-before", GRU, {"reset": "before"})]


@pytest.fixture
def fixed_masks(monkeypatch):
    """Each layer and direction draws its masks once: every later forward (the finite differences') reuses them."""
    drawn = {}
    real = dispatch.variational_masks

    def once(layer, l, d, shape):
        key = (id(layer), l, d, shape)
        if key not in drawn:
            drawn[key] = real(layer, l, d, shape)
        return drawn[key]
    monkeypatch.setattr(dispatch, "variational_masks", once)          # the one stack, every family
    return drawn


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,cls,kw", KINDS)
def test_finite_differences_in_training_with_masks(name, cls, kw, backend, fixed_masks, monkeypatch):
    backend = use_backend(backend, monkeypatch)
    rng = np.random.default_rng(0)
    layer = cls(3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=1, backend=backend, **ALL, **kw)
    layer.train()
    n = len(layer.cell.STATE)
    hx = tuple(rng.standard_normal((4, 3, 4)) for _ in range(n))
    errors = check_layer(layer, rng.standard_normal((6, 3, 3)), hx if n > 1 else hx[0], lengths=np.array([6, 2, 4]))
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-6, (worst, errors[worst])
    x_mask, rec_mask, keep = fixed_masks[next(iter(fixed_masks))]
    assert x_mask is not None and rec_mask is not None and len(keep) == n
    assert layer.last_backend == backend


OPTIONS = {"rd": {"recurrent_dropout": 0.3}, "zoneout": {"zoneout": 0.3, "zoneout_cell": 0.2},
           "ln": {"layer_norm": True},
           "ln+rd+zoneout": {"layer_norm": True, "recurrent_dropout": 0.2, "zoneout": 0.2, "zoneout_cell": 0.3}}


def _compiled_cases():
    """(cls, options, strategy, evaluation dtype) over every cell, option plan and compiled strategy (no
    layer-normalised RNN or reset-before GRU). Each plan, product and dtype compiles loops of its own: the fast
    tier runs float64 on the one-row products and the split; the packed products and float32 are in the slow tier."""
    cases = []
    for cls in ("RNN", "LSTM", "GRU", "gru-before"):
        for name, kw in OPTIONS.items():
            if kw.get("layer_norm") and cls in ("RNN", "gru-before"):
                continue
            for impl in STRATEGIES:
                for dtype in ("float64", "float32"):
                    slow = impl == "loop-packed" or dtype == "float32"
                    cases.append(pytest.param(cls, kw, impl, dtype, id=f"{cls}-{name}-{impl}-{dtype}",
                                              marks=[pytest.mark.slow] if slow else []))
    return cases


@needs_numba
@pytest.mark.parametrize("cls,kw,impl,dtype", _compiled_cases())
def test_the_compiled_loop_equals_the_reference(cls, kw, impl, dtype, monkeypatch):
    """The shared compiled loop (kernels.loop, one thread or split) against rnnlab.engine._reference on the same
    masks (the same seed draws them). float64: outputs, states and every gradient in training (padding, 2 layers,
    both directions), and outputs at evaluation, with and without the caches; float32: the outputs at evaluation
    of a copy of the weights, with and without the caches."""
    opts = {"reset": "before"} if cls == "gru-before" else {}
    cls = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU, "gru-before": GRU}[cls]
    kw = {k: v for k, v in kw.items() if k != "zoneout_cell" or cls is LSTM}
    rng = np.random.default_rng(11)
    x, lengths = rng.standard_normal((7, 3, 4)), np.array([7, 5, 2])
    w = rng.standard_normal((7, 3, 10)) * (np.arange(7)[:, None] < lengths)[..., None]
    runs = {}
    impl = use_backend(impl, monkeypatch)
    for backend in ("numpy", impl):
        layer = cls(4, 5, num_layers=2, bidirectional=True, dtype="float64", seed=3, backend=backend, **opts, **kw)
        for v in layer.parameters():
            v[...] = np.random.default_rng(5).normal(0, 0.5, v.shape)     # the same weights, non-zero biases
        train = None
        if dtype == "float64":
            out, states = layer(x, lengths=lengths)
            dx, dstates = layer.backward(w)
            assert layer.last_backend == backend
            train = (out, states, dx, dstates, dict(layer.grads))
            net = layer
        else:
            net = cls(4, 5, num_layers=2, bidirectional=True, dtype="float32", seed=3, backend=backend, **opts, **kw)
            for k, v in net._params.items():
                v[...] = layer._params[k]
        net.eval()
        evals = [net(x.astype(net.dtype))[0]]
        with rnnlab.no_grad():
            evals.append(net(x.astype(net.dtype))[0])
        runs[backend] = (train, evals)
    (a, ea), (b, eb) = runs["numpy"], runs[impl]
    if dtype == "float64":
        for u, v in zip(a[:4], b[:4]):
            for p, q in zip(np.atleast_1d(u) if isinstance(u, np.ndarray) else u,
                            np.atleast_1d(v) if isinstance(v, np.ndarray) else v):
                np.testing.assert_allclose(q, p, rtol=0, atol=1e-12)
        assert a[4].keys() == b[4].keys()
        for k in a[4]:
            np.testing.assert_allclose(b[4][k], a[4][k], rtol=0, atol=1e-11, err_msg=k)
    for p, q in zip(ea, eb):
        np.testing.assert_allclose(q, p, rtol=0, atol=1e-12 if p.dtype == np.float64 else 2e-6)


@pytest.mark.parametrize("name,cls,kw", KINDS)
def test_evaluation_uses_the_expectation(name, cls, kw, fixed_masks):
    rng = np.random.default_rng(2)
    layer = cls(3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=1, **ALL, **kw).eval()
    errors = check_layer(layer, rng.standard_normal((5, 2, 3)), lengths=np.array([5, 3]))
    assert max(errors.values()) < 1e-6
    opts = {k: v for k, v in kw.items() if k == "reset"}
    dropped = cls(3, 4, num_layers=2, dtype="float64", seed=1, input_dropout=0.5, recurrent_dropout=0.5, **opts).eval()
    plain = cls(3, 4, num_layers=2, dtype="float64", seed=1, **opts)
    x = rng.standard_normal((5, 2, 3))
    np.testing.assert_allclose(dropped(x)[0], plain(x)[0], rtol=0, atol=1e-12)   # dropout is off at evaluation


def test_zoneout_at_evaluation_mixes_by_the_expectation():
    rng = np.random.default_rng(7)
    layer = RNN(2, 3, dtype="float64", seed=0, zoneout=0.3).eval()
    x = rng.standard_normal((4, 1, 2))
    out, _ = layer(x)
    p = layer.state_dict()
    h, want = np.zeros((1, 3)), []
    for t in range(4):
        new = np.tanh(x[t] @ p["weight_ih_l0"].T + p["bias_ih_l0"] + h @ p["weight_hh_l0"].T + p["bias_hh_l0"])
        h = 0.3 * h + 0.7 * new
        want.append(h)
    np.testing.assert_allclose(out, np.stack(want), rtol=1e-12)


def _torch_direction(cell, p, x, h0, c0, rec_mask, keep_h, keep_c):
    """One direction of RNN/LSTM/GRU(after) with recurrent dropout and zoneout, from the equations."""
    H = h0.shape[-1]
    h, c, outs = h0, c0, []
    for t in range(x.shape[0]):
        hm = h * rec_mask
        gi = x[t] @ p["weight_ih"].T + p["bias_ih"]
        gh = hm @ p["weight_hh"].T + p["bias_hh"]
        if cell == "rnn":
            h_new = torch.tanh(gi + gh)
        elif cell == "lstm":
            a = gi + gh
            i, f, g, o = torch.sigmoid(a[:, :H]), torch.sigmoid(a[:, H:2 * H]), torch.tanh(a[:, 2 * H:3 * H]), \
                torch.sigmoid(a[:, 3 * H:])
            c_new = f * c + i * g
            h_new = o * torch.tanh(c_new)
            c = keep_c[t] * c_new + (1 - keep_c[t]) * c
        else:
            r = torch.sigmoid(gi[:, :H] + gh[:, :H])
            z = torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
            nn = torch.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
            h_new = (1 - z) * nn + z * h
        h = keep_h[t] * h_new + (1 - keep_h[t]) * h
        outs.append(h)
    return torch.stack(outs), h, c


@pytest.mark.parametrize("cell,cls", [("rnn", RNN), ("lstm", LSTM), ("gru", GRU)])
def test_equals_a_torch_reference_with_the_same_masks(cell, cls, fixed_masks):
    rng = np.random.default_rng(3)
    kw = {"zoneout_cell": 0.3} if cell == "lstm" else {}
    layer = cls(3, 5, dtype="float64", seed=4, recurrent_dropout=0.4, zoneout=0.3, input_dropout=0.2, **kw)
    for v in layer.parameters():
        v += rng.normal(0, 0.1, v.shape)                            # non-zero biases
    x = rng.standard_normal((7, 2, 3))
    out, _ = layer(x)
    w = rng.standard_normal(out.shape)
    dx, _ = layer.backward(w)
    x_mask, rec_mask, keep = next(iter(fixed_masks.values()))
    tp = {k[:-3]: torch.tensor(v, requires_grad=True) for k, v in layer.state_dict().items()}
    tx = torch.tensor(x, requires_grad=True)
    zeros = torch.zeros(2, 5, dtype=torch.float64)
    kh = torch.tensor(np.asarray(keep[0]))
    kc = torch.tensor(np.asarray(keep[1])) if len(keep) > 1 else None
    t_out, _, _ = _torch_direction(cell, tp, tx * torch.tensor(x_mask), zeros, zeros, torch.tensor(rec_mask), kh, kc)
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=0, atol=1e-12)
    (t_out * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    for k, v in tp.items():
        np.testing.assert_allclose(layer.grads[k + "_l0"], v.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=k)


def test_mask_statistics_and_zero_rates_change_nothing():
    rng = np.random.default_rng(5)
    layer = LSTM(4, 64, seed=0, recurrent_dropout=0.25, zoneout=0.1, zoneout_cell=0.2, input_dropout=0.5)
    x_mask, rec_mask, zone = dispatch.variational_masks(layer, 0, 0, (50, 64, 4))
    assert abs((rec_mask == 0).mean() - 0.25) < 0.03 and abs(rec_mask.mean() - 1) < 0.05     # inverted dropout
    assert abs((x_mask == 0).mean() - 0.5) < 0.1
    assert abs(zone[0].mean() - 0.9) < 0.01 and abs(zone[1].mean() - 0.8) < 0.01
    layer.eval()
    x_mask, rec_mask, zone = dispatch.variational_masks(layer, 0, 0, (50, 64, 4))
    assert x_mask is None and rec_mask is None and float(zone[0][0, 0, 0]) == pytest.approx(0.9)
    a, b = LSTM(3, 4, seed=1, zoneout=0.0), LSTM(3, 4, seed=1)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(a(x)[0], b(x)[0])
    assert a.last_backend != "numpy" or not HAS_NUMBA      # no mask: the compiled paths serve


def test_refusals():
    with pytest.raises(ConfigError, match="'hybrid' .* was folded into 'loop'"):
        LSTM(3, 4, recurrent_dropout=0.2, backend="hybrid")
    if HAS_NUMBA:
        with pytest.raises(BackendError, match="'units' serves cells with one product per step and no recurrent "
                                               "dropout, zoneout or layer norm, got gru with zoneout"):
            GRU(3, 4, zoneout=0.2).set_backend("units")
    with pytest.raises(ConfigError, match="zoneout_cell: GRU has no cell state"):
        GRU(3, 4, zoneout_cell=0.1)
    with pytest.raises(ConfigError, match="zoneout: expected a number < 1.0"):
        RNN(3, 4, zoneout=1.0)
    with pytest.raises(ConfigError, match="not implemented for the mingru layer"):
        MinGRU(3, 4, zoneout=0.1)
    assert LSTM(3, 4, recurrent_dropout=0.2).config()["recurrent_dropout"] == 0.2
    assert "zoneout=0.1" in repr(RNN(3, 4, zoneout=0.1))


def test_input_dropout_on_a_diagonal_cell_and_a_compiled_path(fixed_masks):
    rng = np.random.default_rng(6)
    for layer in (MinGRU(3, 4, dtype="float64", seed=0, input_dropout=0.4, bidirectional=True),
                  GRU(3, 4, dtype="float64", seed=0, input_dropout=0.4, backend="loop" if HAS_NUMBA
                      else "numpy")):
        errors = check_layer(layer, rng.standard_normal((5, 2, 3)), lengths=np.array([5, 2]))
        assert max(errors.values()) < 1e-6


def test_training_with_zoneout_resumes_bit_exactly(tmp_path, capsys):
    """On the reference: the masks are drawn in Python whatever the backend (the compiled loop equals the
    reference on the same masks above)."""
    from rnnlab.cli import main as cli
    from rnnlab.training.trainer import load_model, resume
    args = ["train", "--task", "adding", "--seq-len", "8", "--model", "lstm", "--hidden-size", "6", "--quiet",
            "--zoneout", "0.2", "--zoneout-cell", "0.1", "--recurrent-dropout", "0.3", "--input-dropout", "0.1",
            "--backend", "numpy"]
    assert cli.main(args + ["--steps", "8", "--out", str(tmp_path / "full")]) == 0
    assert cli.main(args + ["--steps", "4", "--out", str(tmp_path / "part")]) == 0
    resume(tmp_path / "part", steps=8)
    a, b = load_model(tmp_path / "full")[0].named_parameters(), load_model(tmp_path / "part")[0].named_parameters()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    model, _ = load_model(tmp_path / "full")
    assert model.rnn.regularization["zoneout"] == 0.2


# ------------------------------------------------------------------------------------------- peephole LSTM
def test_peephole_finite_differences():
    rng = np.random.default_rng(8)
    layer = LSTM(3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=0, peephole=True)
    hx = (rng.standard_normal((4, 3, 4)), rng.standard_normal((4, 3, 4)))
    errors = check_layer(layer, rng.standard_normal((6, 3, 3)), hx, lengths=np.array([6, 2, 4]))
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-6, (worst, errors[worst])
    assert "weight_ph_l1_reverse" in errors and layer.last_backend == "numpy"


def test_peephole_equals_a_torch_reference():
    rng = np.random.default_rng(9)
    layer = LSTM(3, 5, dtype="float64", seed=1, peephole=True)
    for v in layer.parameters():
        v += rng.normal(0, 0.3, v.shape)
    x = rng.standard_normal((6, 2, 3))
    out, (h, c) = layer(x)
    w = rng.standard_normal(out.shape)
    dx, _ = layer.backward(w)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in layer.state_dict().items()}
    tx = torch.tensor(x, requires_grad=True)
    H = 5
    hh = torch.zeros(2, H, dtype=torch.float64)
    cc = torch.zeros(2, H, dtype=torch.float64)
    p = tp["weight_ph_l0"]
    outs = []
    for t in range(6):
        a = tx[t] @ tp["weight_ih_l0"].T + tp["bias_ih_l0"] + hh @ tp["weight_hh_l0"].T + tp["bias_hh_l0"]
        i = torch.sigmoid(a[:, :H] + p[:H] * cc)
        f = torch.sigmoid(a[:, H:2 * H] + p[H:2 * H] * cc)
        g = torch.tanh(a[:, 2 * H:3 * H])
        cc = f * cc + i * g
        o = torch.sigmoid(a[:, 3 * H:] + p[2 * H:] * cc)
        hh = o * torch.tanh(cc)
        outs.append(hh)
    t_out = torch.stack(outs)
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=0, atol=1e-12)
    (t_out * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    for k, v in tp.items():
        np.testing.assert_allclose(layer.grads[k], v.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=k)


def test_peephole_through_onnx_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from rnnlab.interop import InteropError
    from rnnlab.interop.onnx import export, import_layer
    from rnnlab.interop.torch import to_torch
    rng = np.random.default_rng(10)
    layer = LSTM(3, 4, num_layers=2, bidirectional=True, seed=0, peephole=True)
    for v in layer.parameters():
        v += rng.normal(0, 0.3, v.shape).astype(np.float32)
    export(layer, tmp_path / "p.onnx", lengths=True)
    x = rng.standard_normal((6, 3, 3)).astype(np.float32)
    lengths = np.array([6, 2, 4])
    out, (h, c) = layer(x, lengths=lengths)
    got = ort.InferenceSession(str(tmp_path / "p.onnx")).run(None, {"x": x, "lengths": lengths.astype(np.int32)})
    for a, b in zip(got, (out, h, c)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    back = import_layer(tmp_path / "p.onnx")
    assert back.peephole
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v)
    with pytest.raises(InteropError, match="torch.nn has no LSTM with peephole connections"):
        to_torch(layer)
    with pytest.raises(InteropError, match="zoneout mixes"):
        export(LSTM(3, 4, zoneout=0.1), tmp_path / "z.onnx")
    with pytest.raises(BackendError, match="peephole: runs on backend='numpy' only"):
        LSTM(3, 4, peephole=True, backend="split")
    with pytest.raises(ConfigError, match="peephole: an option of the LSTM only"):
        from rnnlab.model.sequence_model import ModelConfig
        ModelConfig(input_size=2, output_size=1, cell="gru", peephole=True).validate()


def test_peephole_from_the_command_line(tmp_path, capsys):
    from rnnlab.cli import main as cli
    assert cli.main(["train", "--task", "adding", "--seq-len", "6", "--model", "lstm", "--peephole", "--hidden-size",
                     "5", "--steps", "3", "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert cli.main(["export", str(tmp_path / "r"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    from rnnlab.training.trainer import load_model
    assert load_model(tmp_path / "r")[0].rnn.peephole


# ------------------------------------------------------------------------------------------- projections
@pytest.mark.parametrize("bidirectional,layers", [(False, 1), (True, 2)])
def test_projection_equals_torch_on_copied_weights(bidirectional, layers):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from rnnlab.interop.torch import from_torch, to_torch
    ref = torch.nn.LSTM(3, 6, num_layers=layers, bidirectional=bidirectional, proj_size=4, dtype=torch.float64)
    layer = from_torch(ref)
    assert layer.proj_size == 4 and layer.state_sizes == (4, 6)
    rng = np.random.default_rng(11)
    LD, T, B = layers * (2 if bidirectional else 1), 5, 3
    x, lengths = rng.standard_normal((T, B, 3)), np.array([5, 2, 4])
    h0, c0 = rng.standard_normal((LD, B, 4)), rng.standard_normal((LD, B, 6))
    out, (h, c) = layer(x, (h0, c0), lengths=lengths)
    w, wh, wc = rng.standard_normal(out.shape), rng.standard_normal(h.shape), rng.standard_normal(c.shape)
    dx, (dh0, dc0) = layer.backward(w, (wh, wc))
    tx, th, tc = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    packed, (ph, pc) = ref(pack_padded_sequence(tx, torch.tensor(lengths), enforce_sorted=False), (th, tc))
    po, _ = pad_packed_sequence(packed, total_length=T)
    for a, b in ((out, po), (h, ph), (c, pc)):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=0, atol=1e-12)
    ((po * torch.tensor(w)).sum() + (ph * torch.tensor(wh)).sum() + (pc * torch.tensor(wc)).sum()).backward()
    for a, b in ((dx, tx), (dh0, th), (dc0, tc)):
        np.testing.assert_allclose(a, b.grad.numpy(), rtol=1e-10, atol=1e-12)
    for k, p in ref.named_parameters():
        np.testing.assert_allclose(layer.grads[k], p.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=k)
    back = to_torch(layer)
    assert back.proj_size == 4
    for k, v in back.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), layer.state_dict()[k])


def test_projection_with_peepholes_and_masks_finite_differences(fixed_masks):
    rng = np.random.default_rng(12)
    layer = LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=4, dtype="float64", seed=0, peephole=True,
                 recurrent_dropout=0.3, zoneout=0.2, zoneout_cell=0.2)
    hx = (rng.standard_normal((4, 3, 4)), rng.standard_normal((4, 3, 6)))
    errors = check_layer(layer, rng.standard_normal((6, 3, 3)), hx, lengths=np.array([6, 2, 4]))
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-6, (worst, errors[worst])
    assert "weight_hr_l1_reverse" in errors and "weight_ph_l0" in errors


def test_projection_in_a_model_and_its_refusals(tmp_path):
    from rnnlab.cli import main as cli
    from rnnlab.interop import InteropError
    from rnnlab.interop.onnx import export
    from rnnlab.training.trainer import load_model
    assert cli.main(["train", "--task", "adding", "--seq-len", "6", "--model", "lstm", "--proj-size", "3",
                     "--hidden-size", "5", "--bidirectional", "--num-layers", "2", "--steps", "3", "--out",
                     str(tmp_path / "r"), "--quiet"]) == 0
    model, _ = load_model(tmp_path / "r")
    assert model.named_parameters()["head.weight"].shape == (1, 6) and model.rnn.output_size == 3
    with pytest.raises(InteropError, match="ONNX has no LSTM with projections"):
        export(LSTM(3, 5, proj_size=2), tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="proj_size: expected 0 < proj_size < hidden_size"):
        LSTM(3, 5, proj_size=5)
    with pytest.raises(BackendError, match="proj_size: runs on backend='numpy' only"):
        LSTM(3, 5, proj_size=2, backend="loop")
    from rnnlab.study import diagnostics as diag
    x = np.random.default_rng(0).standard_normal((7, 2, 3))
    layer = LSTM(3, 5, proj_size=2, dtype="float64", seed=0)
    assert diag.jacobian_norms(layer, x).shape == (7,)                   # the gradient lab reads its states
    assert diag.layer_grad_norms(layer, x)["grad_norm_h"].shape == (7,)


# ------------------------------------------------------------------------------------------- layer norm
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_layer_norm_finite_differences(cls, backend, fixed_masks, monkeypatch):
    backend = use_backend(backend, monkeypatch)
    rng = np.random.default_rng(13)
    layer = cls(3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=0, layer_norm=True,
                recurrent_dropout=0.2, zoneout=0.2, backend=backend)
    for k, v in layer._params.items():
        if k.startswith("ln_"):
            v += rng.normal(0, 0.3, v.shape)                       # gains and biases off their identity init
    n = len(layer.cell.STATE)
    hx = tuple(rng.standard_normal((4, 3, 4)) for _ in range(n))
    errors = check_layer(layer, rng.standard_normal((6, 3, 3)), hx if n > 1 else hx[0], lengths=np.array([6, 2, 4]))
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-6, (worst, errors[worst])
    assert "ln_hh_weight_l1_reverse" in errors and ("ln_c_bias_l0" in errors) == (cls is LSTM)


def _ln(v, g, b):
    return torch.nn.functional.layer_norm(v, (v.shape[-1],), g, b, eps=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_layer_norm_equals_a_torch_reference(cell):
    rng = np.random.default_rng(14)
    layer = (LSTM if cell == "lstm" else GRU)(3, 5, dtype="float64", seed=2, layer_norm=True)
    for v in layer.parameters():
        v += rng.normal(0, 0.2, v.shape)
    x = rng.standard_normal((6, 2, 3))
    out, _ = layer(x)
    w = rng.standard_normal(out.shape)
    dx, _ = layer.backward(w)
    tp = {k[:-3]: torch.tensor(v, requires_grad=True) for k, v in layer.state_dict().items()}
    tx = torch.tensor(x, requires_grad=True)
    H = 5
    h = torch.zeros(2, H, dtype=torch.float64)
    c = torch.zeros(2, H, dtype=torch.float64)
    outs = []
    for t in range(6):
        gi = _ln(tx[t] @ tp["weight_ih"].T, tp["ln_ih_weight"], tp["ln_ih_bias"]) + tp["bias_ih"]
        gh = _ln(h @ tp["weight_hh"].T, tp["ln_hh_weight"], tp["ln_hh_bias"]) + tp["bias_hh"]
        if cell == "lstm":
            a = gi + gh
            i, f, g, o = (torch.sigmoid(a[:, :H]), torch.sigmoid(a[:, H:2 * H]), torch.tanh(a[:, 2 * H:3 * H]),
                          torch.sigmoid(a[:, 3 * H:]))
            c = f * c + i * g
            h = o * torch.tanh(_ln(c, tp["ln_c_weight"], tp["ln_c_bias"]))
        else:
            r = torch.sigmoid(gi[:, :H] + gh[:, :H])
            z = torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
            n = torch.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
            h = (1 - z) * n + z * h
        outs.append(h)
    t_out = torch.stack(outs)
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=0, atol=1e-12)
    (t_out * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    for k, v in tp.items():
        np.testing.assert_allclose(layer.grads[k + "_l0"], v.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=k)


def test_layer_norm_options_and_refusals(tmp_path):
    from rnnlab.cli import main as cli
    from rnnlab.interop import InteropError
    from rnnlab.interop.torch import to_torch
    fresh = LSTM(3, 4, layer_norm=True, seed=0).state_dict()
    assert (fresh["ln_c_weight_l0"] == 1).all() and (fresh["ln_hh_bias_l0"] == 0).all()     # the identity at init
    with pytest.raises(ConfigError, match="layer_norm: the layer-normalised GRU"):
        GRU(3, 4, layer_norm=True, reset="before")
    with pytest.raises(ConfigError, match="not combined with peephole"):
        LSTM(3, 4, layer_norm=True, peephole=True)
    with pytest.raises(InteropError, match="no layer-normalised GRU"):
        to_torch(GRU(3, 4, layer_norm=True))
    if HAS_NUMBA:
        with pytest.raises(BackendError, match="'units' serves cells with one product per step"):
            LSTM(3, 4, layer_norm=True, backend="units")
    # float64 and 3 rows a batch: the loop test_the_compiled_loop_equals_the_reference compiles (none of its own)
    assert cli.main(["train", "--task", "copy", "--seq-len", "4", "--model", "gru", "--layer-norm", "--hidden-size",
                     "6", "--steps", "3", "--batch-size", "3", "--dtype", "float64", "--out", str(tmp_path / "r"),
                     "--quiet"]) == 0
    assert cli.main(["gradients", str(tmp_path / "r"), "--report", str(tmp_path / "g")]) == 0


@pytest.mark.slow
def test_variants_as_compare_entries(tmp_path, capsys):
    from rnnlab.cli import main as cli
    code = cli.main(["compare", "--task", "adding", "--seq-len", "6", "--models",
                     "lstm,lstm+layer_norm,gru+zoneout=0.1+recurrent_dropout=0.2,lstm+peephole", "--steps", "3",
                     "--hidden-size", "16", "--report", str(tmp_path / "cmp"), "--json", str(tmp_path / "c.json"),
                     "--quiet"])
    assert code == 0, capsys.readouterr().err
    import json
    res = json.loads((tmp_path / "c.json").read_text())
    assert list(res["models"]) == ["lstm", "lstm+layer_norm", "gru+zoneout=0.1+recurrent_dropout=0.2", "lstm+peephole"]
    counts = [m["parameters"] for m in res["models"].values()]
    assert max(counts) - min(counts) < 0.1 * max(counts)          # matched parameter counts, options included
    code = cli.main(["compare", "--task", "adding", "--models", "lstm+layernorm", "--steps", "1", "--quiet"])
    assert code == 2 and "did you mean 'layer_norm'" in capsys.readouterr().err
