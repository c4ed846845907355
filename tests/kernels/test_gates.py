"""One step of every compiled gate kernel (``rnnlab.kernels.gates``) against its ``rnnlab.cells`` step, float64
within 1e-12: forward states and caches, backward gradients, padded rows, both GRU reset conventions."""
import numpy as np
import pytest

from rnnlab.cells import gru, lstm, rnn
from rnnlab.kernels import available

pytestmark = pytest.mark.skipif(not available(), reason="numba is not installed")

B, H = 3, 5
TOL = 1e-12


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=0, atol=TOL)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def _mask(masked):
    m = np.ones(B)
    if masked:
        m[1] = 0.0                                            # row 1 padded at this step
    return m


@pytest.mark.parametrize("act_name", ["tanh", "relu", "identity"])
@pytest.mark.parametrize("masked", [False, True])
def test_rnn_step(act_name, masked, rng):
    from rnnlab.kernels.gates import ACT, rnn_act_bwd, rnn_act_fwd
    xw, h, b = rng.standard_normal((B, H)), rng.standard_normal((B, H)), rng.standard_normal(H)
    W_hh = rng.standard_normal((H, H))
    (h_ref,), cache = rnn.step_forward(xw, (h,), W_hh, b, nonlinearity=act_name)
    A = h @ W_hh.T                                            # the product each strategy computes its own way
    h_k, out, Hs = h.copy(), np.empty((B, H)), np.empty((B, H))
    m = _mask(masked)
    rnn_act_fwd(A, xw, b, True, m, masked, ACT[act_name], h_k, out, Hs)
    _close(Hs, h)
    for r in range(B):
        _close(h_k[r], h[r] if m[r] == 0 else h_ref[r])
        _close(out[r], 0 * h_ref[r] if m[r] == 0 else h_ref[r])
    dh, d_out = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    da_ref, _, _ = rnn.step_backward((dh + d_out,), cache, W_hh, nonlinearity=act_name)
    DA = np.empty((B, H))
    rnn_act_bwd(dh, d_out, m, masked, ACT[act_name], h_ref, DA)
    for r in range(B):
        _close(DA[r], 0 * da_ref[r] if m[r] == 0 else da_ref[r])


@pytest.mark.parametrize("masked", [False, True])
def test_lstm_step(masked, rng):
    from rnnlab.kernels.gates import gate_scales, lstm_gates_bwd, lstm_gates_fwd
    xw = rng.standard_normal((B, 4 * H))
    h, c, b = rng.standard_normal((B, H)), rng.standard_normal((B, H)), rng.standard_normal(4 * H)
    W_hh = rng.standard_normal((4 * H, H))
    (h_ref, c_ref), cache = lstm.step_forward(xw, (h, c), W_hh, b)
    A = h @ W_hh.T
    h_k, c_k, out = h.copy(), c.copy(), np.empty((B, H))
    Hs, Cs, Gs = np.empty((B, H)), np.empty((B, H)), np.empty((B, 4 * H))
    m = _mask(masked)
    lstm_gates_fwd(A, xw, b, True, m, masked, h_k, c_k, out, Hs, Cs, Gs, True, gate_scales(4 * H, A))
    _close(Hs, h)
    _close(Cs, c)
    gates = np.concatenate([cache.i, cache.f, cache.g, cache.o], axis=1)
    for r in range(B):
        valid = m[r] != 0
        _close(h_k[r], h_ref[r] if valid else h[r])
        _close(c_k[r], c_ref[r] if valid else c[r])
        _close(out[r], h_ref[r] if valid else 0 * h[r])
        if valid:
            _close(Gs[r], gates[r])
    dh, dc, d_out = (rng.standard_normal((B, H)) for _ in range(3))
    da_ref, _, (_, dc_prev_ref) = lstm.step_backward((dh + d_out, dc), cache, W_hh)
    dc_k, DA = dc.copy(), np.empty((B, 4 * H))
    lstm_gates_bwd(dh, dc_k, d_out, m, masked, c, gates, c_ref, DA)
    for r in range(B):
        valid = m[r] != 0
        _close(DA[r], da_ref[r] if valid else 0 * da_ref[r])
        _close(dc_k[r], dc_prev_ref[r] if valid else dc[r])


@pytest.mark.parametrize("reset", ["after", "before"])
@pytest.mark.parametrize("masked", [False, True])
def test_gru_step(reset, masked, rng):
    from rnnlab.kernels.gates import gru_n_fwd, gru_r_bwd, gru_rz_fwd, gru_zn_bwd
    xw, h = rng.standard_normal((B, 3 * H)), rng.standard_normal((B, H))
    W_hh, b = rng.standard_normal((3 * H, H)), rng.standard_normal(3 * H)
    (h_ref,), cache = gru.step_forward(xw, (h,), W_hh, b, reset=reset)
    after = reset == "after"
    m = _mask(masked)
    h_k, out = h.copy(), np.empty((B, H))
    Hs, Rs, Zs, Ns, Es = (np.empty((B, H)) for _ in range(5))
    A = np.empty((B, 3 * H))
    A[:, :2 * H] = h @ W_hh[:2 * H].T + b[:2 * H]
    if after:
        A[:, 2 * H:] = h @ W_hh[2 * H:].T + b[2 * H:]
    gru_rz_fwd(A, xw, after, h_k, Hs, Rs, Zs, Es)
    if not after:
        A[:, 2 * H:] = Es @ W_hh[2 * H:].T + b[2 * H:]          # (r h) W_hn^T + b_hn, between the two kernels
    gru_n_fwd(A, xw, m, masked, after, h_k, out, Rs, Zs, Ns, Es)
    _close(Hs, h)
    _close(Rs, cache.r)
    _close(Zs, cache.z)
    _close(Ns, cache.n)
    _close(Es, cache.extra)
    for r in range(B):
        valid = m[r] != 0
        _close(h_k[r], h_ref[r] if valid else h[r])
        _close(out[r], h_ref[r] if valid else 0 * h[r])
    dh, d_out = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    dxw_ref, dhw_ref, (dh_prev_ref,) = gru.step_backward((dh + d_out,), cache, W_hh, reset=reset)
    DX, DHW, dh_part = np.empty((B, 3 * H)), np.empty((B, 3 * H)), np.empty((B, H))
    gru_zn_bwd(dh, d_out, m, masked, Hs, Zs, Ns, DX, dh_part)
    DRH = DX[:, 2 * H:] @ W_hh[2 * H:]                          # before: dL/d(r h); after: not read
    gru_r_bwd(DX, DHW, after, Hs, Rs, Es, DRH, dh_part)
    n_rec = 3 * H if after else 2 * H
    dh_prev = dh_part + DHW[:, :n_rec] @ W_hh[:n_rec]
    for r in range(B):
        valid = m[r] != 0
        _close(DX[r], dxw_ref[r] if valid else 0 * dxw_ref[r])
        _close(DHW[r], dhw_ref[r] if valid else 0 * dhw_ref[r])
        _close(dh_prev[r], dh_prev_ref[r] if valid else dh[r])


def test_gru_gates_in_one_call_equal_the_two_kernels(rng):
    """The split path's one-call GRU kernels (reset='after') are the same two kernels in sequence."""
    from rnnlab.kernels.gates import gru_gates_bwd, gru_gates_fwd
    xw, h = rng.standard_normal((B, 3 * H)), rng.standard_normal((B, H))
    W_hh, b = rng.standard_normal((3 * H, H)), rng.standard_normal(3 * H)
    (h_ref,), cache = gru.step_forward(xw, (h,), W_hh, b, reset="after")
    h_k, out = h.copy(), np.empty((B, H))
    Hs, Rs, Zs, Ns, Es = (np.empty((B, H)) for _ in range(5))
    gru_gates_fwd(h @ W_hh.T, xw, b, True, np.ones(B), False, h_k, out, Hs, Rs, Zs, Ns, Es)
    _close(h_k, h_ref)
    dh = rng.standard_normal((B, H))
    _, dhw_ref, (dh_prev_ref,) = gru.step_backward((dh,), cache, W_hh, reset="after")
    DX, DHW, dh_part = np.empty((B, 3 * H)), np.empty((B, 3 * H)), np.empty((B, H))
    gru_gates_bwd(dh, np.zeros((B, H)), np.ones(B), False, Hs, Rs, Zs, Ns, Es, DX, DHW, dh_part)
    _close(DHW, dhw_ref)
    _close(dh_part + DHW @ W_hh, dh_prev_ref)


def test_rational_tanh_max_error():
    from rnnlab.kernels.gates import _tanh32
    from numba import njit

    @njit
    def apply(x):
        out = np.empty_like(x)
        for i in range(x.size):
            out[i] = _tanh32(x[i])
        return out
    x = np.linspace(-20, 20, 2_000_001).astype(np.float32)
    err = np.abs(apply(x).astype(np.float64) - np.tanh(x.astype(np.float64)))
    assert err.max() < 5e-7                           # documented in docs/performance.md
    assert np.all(np.abs(apply(x)) <= 1.0)
