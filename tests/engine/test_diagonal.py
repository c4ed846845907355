"""The diagonal cells (minGRU, minLSTM, IndRNN, LRU): torch references written here, finite differences,
the parallel scan equal to the loop, the layers' face, the carry and the diagnostics."""
import pickle

import numpy as np
import pytest

import rnnlab
from rnnlab.engine import scan
from rnnlab.errors import BackendError, ConfigError
from rnnlab.engine.gradcheck import check_layer
from rnnlab.engine.layers import LAYERS, LRU, IndRNN, MinGRU, MinLSTM

torch = pytest.importorskip("torch")

from support import HAS_NUMBA  # noqa: E402

DIAGONAL = {"mingru": MinGRU, "minlstm": MinLSTM, "indrnn": IndRNN, "lru": LRU}
LOOP = ("loop",) if HAS_NUMBA else ()         # the compiled whole loop, with Numba
DIAGONAL_BACKENDS = {"mingru": ("numpy", "scan", "scan-log") + LOOP, "minlstm": ("numpy", "scan", "scan-log") + LOOP,
                     "indrnn": ("numpy",) + LOOP, "lru": ("numpy", "scan") + LOOP}
CASES = [(c, b) for c in DIAGONAL for b in DIAGONAL_BACKENDS[c]]


def build(cell, backend, *args, **kw):
    """The layer on ``backend``; 'scan-log' is backend 'scan' with minGRU/minLSTM's log-space scan."""
    if backend == "scan-log":
        backend, kw["scan"] = "scan", "log"
    return DIAGONAL[cell](*args, backend=backend, **kw)


# ------------------------------------------------------------------------------------------- torch references
def _g(v):
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def ref_direction(cell, p, x, h0):
    """One direction over one sequence x (T, I), written from the papers' equations: -> (out (T, H), final)."""
    outs = []
    if cell == "lru":
        lam = torch.exp(-torch.exp(p["nu_log"]) + 1j * torch.exp(p["theta_log"]))
        Bc = p["B_re"] + 1j * p["B_im"]
        Cc = p["C_re"] + 1j * p["C_im"]
        h = h0[0] + 1j * h0[1]
        for t in range(x.shape[0]):
            h = lam * h + torch.exp(p["gamma_log"]) * (Bc @ x[t].to(Bc.dtype))
            outs.append((Cc @ h).real + p["D"] @ x[t])
        return torch.stack(outs), (h.real, h.imag)
    h = h0[0]
    for t in range(x.shape[0]):
        P = p["weight_ih"] @ x[t] + p["bias_ih"]
        if cell == "mingru":
            k, v = P.chunk(2)
            z = torch.sigmoid(k)
            h = (1 - z) * h + z * _g(v)
        elif cell == "minlstm":
            kf, ki, v = P.chunk(3)
            f, i = torch.sigmoid(kf), torch.sigmoid(ki)
            h = f / (f + i) * h + i / (f + i) * _g(v)
        else:
            h = torch.relu(P + p["weight_hh"] * h)
        outs.append(h)
    return torch.stack(outs), (h,)


def ref_layer(layer, params, x, lengths, hx):
    """The whole stack, row by row: each row's valid steps forward, and reversed for the reverse direction."""
    L, D, H = layer.num_layers, layer.num_directions, layer.hidden_size
    T, B, _ = x.shape
    inp, finals = x, [[None] * B for _ in range(L * D)]
    for l in range(L):
        rows = []
        for b in range(B):
            n = int(lengths[b])
            parts = []
            for d in range(D):
                p = {k: params[k + layer.suffix(l, d)] for k in layer.direction_params(l, d)}
                seq = inp[:n, b] if d == 0 else inp[:n, b].flip(0)
                out, fin = ref_direction(layer.cell_name, p, seq, tuple(h[l * D + d, b] for h in hx))
                out = out if d == 0 else out.flip(0)
                parts.append(torch.cat([out, torch.zeros(T - n, H, dtype=out.dtype)]))
                finals[l * D + d][b] = fin
            rows.append(torch.cat(parts, dim=1))
        inp = torch.stack(rows, dim=1)
    n_state = len(hx)
    return inp, [torch.stack([torch.stack([finals[k][b][s] for b in range(B)]) for k in range(L * D)])
                 for s in range(n_state)]


@pytest.mark.parametrize("cell,backend", CASES)
def test_equals_a_torch_reference_on_copied_weights(cell, backend):
    rng = np.random.default_rng(1)
    layer = build(cell, backend, 3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=2)
    for v in layer.parameters():                      # non-zero biases and weights off their init
        v += rng.normal(0, 0.1, v.shape)
    T, B = 6, 3
    x = rng.standard_normal((T, B, 3))
    lengths = np.array([6, 2, 4])
    n_state = len(layer.cell.STATE)
    hx = tuple(rng.standard_normal((4, B, 4)) for _ in range(n_state))
    out, hn = layer(x, hx if n_state > 1 else hx[0], lengths=lengths)
    hn = hn if isinstance(hn, tuple) else (hn,)
    w_out, w_h = rng.standard_normal(out.shape), [rng.standard_normal(h.shape) for h in hn]
    dx, dhx = layer.backward(w_out, tuple(w_h) if n_state > 1 else w_h[0])
    dhx = dhx if isinstance(dhx, tuple) else (dhx,)

    tp = {k: torch.tensor(v, requires_grad=True) for k, v in layer.state_dict().items()}
    tx = torch.tensor(x, requires_grad=True)
    th = [torch.tensor(h, requires_grad=True) for h in hx]
    t_out, t_fin = ref_layer(layer, tp, tx, lengths, th)
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=0, atol=1e-12)
    for a, b in zip(hn, t_fin):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=0, atol=1e-12)
    loss = (t_out * torch.tensor(w_out)).sum() + sum((f * torch.tensor(w)).sum() for f, w in zip(t_fin, w_h))
    loss.backward()
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-9, atol=1e-11)
    for a, b in zip(dhx, th):
        np.testing.assert_allclose(a, b.grad.numpy(), rtol=1e-9, atol=1e-11)
    for k, v in tp.items():
        np.testing.assert_allclose(layer.grads[k], v.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=k)


@pytest.mark.parametrize("cell,backend", CASES)
def test_finite_differences_with_lengths_layers_directions_and_initial_states(cell, backend):
    rng = np.random.default_rng(3)
    layer = build(cell, backend, 2, 3, num_layers=2, bidirectional=True, dtype="float64", seed=4)
    n_state = len(layer.cell.STATE)
    hx = tuple(rng.standard_normal((4, 3, 3)) for _ in range(n_state))
    errors = check_layer(layer, rng.standard_normal((5, 3, 2)), hx if n_state > 1 else hx[0],
                         lengths=np.array([5, 1, 3]), seed=0)
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-6, (worst, errors[worst])
    assert {"x", "h0"} <= set(errors) and all(k + "_l1_reverse" in errors for k in layer.direction_params(1, 1))


@pytest.mark.parametrize("cell,scan_backend", [(c, b) for c, b in CASES if b != "numpy"])
def test_scan_and_compiled_loop_equal_the_reference(cell, scan_backend):
    rng = np.random.default_rng(5)
    T, B = 300, 4
    x = rng.standard_normal((T, B, 3))
    lengths = np.array([300, 17, 255, 1])
    res = {}
    for backend in ("numpy", scan_backend):
        layer = build(cell, backend, 3, 5, num_layers=2, bidirectional=True, dtype="float64", seed=6)
        n_state = len(layer.cell.STATE)
        hx = tuple(np.random.default_rng(7).standard_normal((4, B, 5)) for _ in range(n_state))
        out, hn = layer(x, hx if n_state > 1 else hx[0], lengths=lengths)
        assert layer.last_backend == backend.split("-")[0]
        dx, dh = layer.backward(np.random.default_rng(8).standard_normal(out.shape))
        res[backend] = (out, hn, dx, dh, {k: v.copy() for k, v in layer.grads.items()})
    (o1, h1, dx1, dh1, g1), (o2, h2, dx2, dh2, g2) = res["numpy"], res[scan_backend]
    np.testing.assert_allclose(o2, o1, rtol=0, atol=1e-10)
    for a, b in zip(h1 if isinstance(h1, tuple) else (h1,), h2 if isinstance(h2, tuple) else (h2,)):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)
    np.testing.assert_allclose(dx2, dx1, rtol=0, atol=1e-10)
    for k in g1:
        np.testing.assert_allclose(g2[k], g1[k], rtol=1e-9, atol=1e-10, err_msg=k)


def test_scans_on_their_own():
    rng = np.random.default_rng(9)
    T, B, H = 1000, 2, 3
    a = rng.uniform(0.5, 0.999, (T, B, H))
    b = rng.standard_normal((T, B, H))
    h0 = np.array([[-2.0, 0.0, 3.0], [1.0, -1.0, 0.5]])               # any sign, zeros included
    ref = scan.loop(a, b, h0)
    np.testing.assert_allclose(scan.associative(a, b, h0), ref, atol=1e-11)
    np.testing.assert_allclose(scan.log_space(np.log(a), b, h0), ref, atol=1e-10)
    pos = np.abs(b)
    np.testing.assert_allclose(scan.log_space(np.log(a), pos, h0, log_b=np.log(pos)), scan.loop(a, pos, h0), atol=1e-10)
    ac = a * np.exp(1j * rng.uniform(0, 6, a.shape))
    bc = b + 1j * rng.standard_normal(b.shape)
    np.testing.assert_allclose(scan.associative(ac, bc, h0 + 0j), scan.loop(ac, bc, h0 + 0j), atol=1e-11)
    # the products underflow in float64 at T = 1000 with a = 0.5: the scans stay finite and equal
    tiny = np.full((T, 1, 1), 0.5)
    assert np.isfinite(scan.log_space(np.log(tiny), np.ones_like(tiny), np.ones((1, 1)))).all()
    g = rng.standard_normal((T, B, H))
    for how in ("loop", "associative"):
        da, db, dh0 = scan.backward(g, a, ref, h0, None, how)
        eps, idx = 1e-6, (500, 1, 2)
        ap, am = a.copy(), a.copy()
        ap[idx] += eps
        am[idx] -= eps
        num = ((g * scan.loop(ap, b, h0)).sum() - (g * scan.loop(am, b, h0)).sum()) / (2 * eps)
        assert abs(num - da[idx]) < 1e-6 * max(1, abs(num))


def test_the_carry_is_the_diagonal_jacobian():
    from rnnlab.study import diagnostics as diag
    rng = np.random.default_rng(10)
    x = rng.standard_normal((20, 2, 3))
    gru = MinGRU(3, 4, dtype="float64", seed=0)
    gru(x)
    np.testing.assert_allclose(gru.carry(), 1 - gru.gates()["z"])
    lstm = MinLSTM(3, 4, dtype="float64", seed=0)
    lstm(x)
    gates = lstm.gates()
    np.testing.assert_allclose(gates["f"] + gates["i"], 1.0)                 # normalised
    np.testing.assert_allclose(lstm.carry(), gates["f"])
    lru = LRU(3, 4, dtype="float64", seed=0)
    lru(x)
    lam = np.abs(np.exp(-np.exp(lru.state_dict()["nu_log_l0"])))
    np.testing.assert_allclose(lru.carry(), np.broadcast_to(lam, (20, 2, 4)))
    j = diag.jacobian_norms(lru, x)
    np.testing.assert_allclose(j, lam.max() ** (19 - np.arange(20)), rtol=1e-10)
    # IndRNN: the exact Jacobian by finite differences through the layer equals the product of carries
    ind = IndRNN(3, 4, dtype="float64", seed=0)
    xs = rng.standard_normal((8, 1, 3))
    j = diag.jacobian_norms(ind, xs)
    stats = diag.gate_stats(ind, xs)
    assert stats["carry_product"][0] == 1.0 and j[-1] == 1.0 and len(stats["carry_mean"]) == 8
    stats = diag.gate_stats(gru, x)
    assert set(stats) == {"carry_mean", "carry_product", "saturation"} and set(stats["saturation"]) == {"z"}


def test_the_face_of_the_other_layers(tmp_path):
    for name, cls in DIAGONAL.items():
        assert LAYERS[name] is cls
        layer = cls(3, 4, num_layers=2, batch_first=True, seed=0)
        x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)     # (B, T, I)
        out, _ = layer(x)
        assert out.shape == (2, 5, 4) and out.dtype == np.float32
        out1, _ = layer(x[0])                                                     # unbatched (T, I)
        np.testing.assert_allclose(out1, out[0], rtol=1e-6, atol=1e-6)
        other = cls(3, 4, num_layers=2, batch_first=True, seed=1)
        other.load_state_dict(layer.state_dict())
        np.testing.assert_array_equal(other(x)[0], out)
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(layer))(x)[0], out)
        with pytest.raises(rnnlab.ShapeError, match="load_state_dict"):
            other.load_state_dict({k: v[..., :1] for k, v in layer.state_dict().items()})
        with rnnlab.no_grad():
            layer(x)
        with pytest.raises(RuntimeError, match="no_grad"):
            layer.backward(np.ones_like(out))
        with pytest.raises(ConfigError, match="unknown option"):
            cls(3, 4, proj_size=2)
        with pytest.raises(ConfigError, match="recurrent_init"):
            cls(3, 4, recurrent_init="orthogonal")
        with pytest.raises(BackendError, match="bptt_segment"):
            cls(3, 4, bptt_segment=10)
        with pytest.raises(ConfigError, match="backend"):
            cls(3, 4, backend="split")
    with pytest.raises(BackendError, match="nonlinear recurrence"):
        IndRNN(3, 4, backend="scan")
    ind = IndRNN(3, 4, recurrent_max=0.5, seed=0)
    ind.state_dict()                                                             # constrain clips in place
    ind._params["weight_hh_l0"][...] = [2.0, -3.0, 0.1, 0.4]
    ind.constrain()
    assert ind.state_dict()["weight_hh_l0"].tolist() == [0.5, -0.5, pytest.approx(0.1), pytest.approx(0.4)]
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['scan'\]"):
        LRU(3, 4, scan="log")
    with pytest.raises(ConfigError, match="scan: expected one of"):
        MinGRU(3, 4, scan="blelloch")
    with pytest.raises(ConfigError, match="r_max"):
        LRU(3, 4, r_min=0.9, r_max=0.5)


def test_interop_refuses_with_a_named_error(tmp_path):
    from rnnlab.interop import InteropError
    from rnnlab.interop.keras import to_keras
    from rnnlab.interop.onnx import export
    from rnnlab.interop.torch import to_torch
    layer = MinGRU(3, 4)
    for fn, what in ((lambda: export(layer, tmp_path / "m.onnx"), "ONNX"), (lambda: to_torch(layer), "torch.nn"),
                     (lambda: to_keras(layer), "Keras")):
        with pytest.raises(InteropError, match=f"{what} has no operator or module for the mingru recurrence"):
            fn()


def test_selective_copy_task():
    from rnnlab.tasks import SelectiveCopy
    t = SelectiveCopy(20, tokens=5, seed=0)
    b = t.generate(np.random.default_rng(0), 64)
    assert b.inputs.shape == (26, 64) and b.targets.shape == (26, 64)
    assert (b.inputs[20] == 9).all() and (b.targets[:21] == 0).all()
    for j in range(64):
        data = b.inputs[:20, j]
        assert (data > 0).sum() == 5                                   # five symbols at distinct steps
        np.testing.assert_array_equal(data[data > 0], b.targets[21:, j])   # recalled in order
    positions = {tuple(np.flatnonzero(b.inputs[:20, j])) for j in range(64)}
    assert len(positions) > 50                                          # scattered differently per sequence
    with pytest.raises(ConfigError, match="tokens"):
        SelectiveCopy(4, tokens=5)


def test_the_new_cells_from_the_command_line(tmp_path, capsys):
    from rnnlab.cli import main as cli
    from rnnlab.training.trainer import load_model, resume
    for m in ("mingru", "minlstm", "indrnn", "lru"):
        out = tmp_path / m
        code = cli.main(["train", "--task", "selective_copy", "--seq-len", "6", "--tokens", "2", "--model", m,
                         "--hidden-size", "8", "--num-layers", "2", "--steps", "6", "--checkpoint-every", "3",
                         "--out", str(out), "--quiet"])
        assert code == 0, capsys.readouterr().err
        model, meta = load_model(out)
        assert model.config.cell == m and meta["metrics"]["recall_accuracy"] >= 0
    assert "recall_accuracy" in capsys.readouterr().out
    ind, _ = load_model(tmp_path / "indrnn")
    assert np.abs(ind.named_parameters()["rnn.weight_hh_l0"]).max() <= 2 ** (1 / 6) + 1e-6    # constrained
    # resume of a diagonal run is bit-exact
    cli.main(["train", "--task", "adding", "--seq-len", "8", "--model", "lru", "--hidden-size", "6", "--steps",
              "8", "--out", str(tmp_path / "full"), "--quiet"])
    cli.main(["train", "--task", "adding", "--seq-len", "8", "--model", "lru", "--hidden-size", "6", "--steps",
              "4", "--out", str(tmp_path / "part"), "--quiet"])
    resume(tmp_path / "part", steps=8)
    a, b = load_model(tmp_path / "full")[0].named_parameters(), load_model(tmp_path / "part")[0].named_parameters()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    capsys.readouterr()
    code = cli.main(["gradients", str(tmp_path / "mingru"), "--report", str(tmp_path / "g")])
    out = capsys.readouterr().out
    assert code == 0 and "none (no recurrent weights" in out and "diagonal carry |dh_t/dh_(t-1)|" in out
    code = cli.main(["compare", "--task", "adding", "--seq-len", "6", "--models", "mingru,indrnn,gru", "--steps",
                     "3", "--hidden-size", "6", "--report", str(tmp_path / "cmp"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "mingru" in out and "indrnn" in out
    code = cli.main(["train", "--task", "adding", "--model", "indrnn", "--backend", "scan", "--steps", "1"])
    assert code == 2 and "nonlinear recurrence" in capsys.readouterr().err
    code = cli.main(["train", "--task", "adding", "--model", "mingru", "--backend", "split", "--steps", "1"])
    assert code == 2 and "backend: expected one of ['auto', 'loop', 'numpy', 'scan']" in capsys.readouterr().err
    code = cli.main(["export", str(tmp_path / "mingru"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    assert code == 2 and "ONNX has no operator or module for the mingru recurrence" in capsys.readouterr().err
    code = cli.main(["check", "--seq-len", "3", "--num-layers", "1"])
    out = capsys.readouterr().out
    assert code == 0 and "mingru (scan)" in out and "lru (loop)" in out and "PASS" in out
