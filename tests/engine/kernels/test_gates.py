"""Each cell's math stands in two places, tied here step by step: one step of every compiled row kernel
(``rnnlab.engine._kernels.gates``: rnn_fwd/rnn_bwd, lstm_fwd/lstm_bwd, gru_fwd/gru_bwd, gru_before_fwd/gru_before_bwd),
called through its cell token as the shared loops call it, against its NumPy step (``rnnlab.engine.cells.rnn``,
``lstm``, ``gru``: step_forward/step_backward), float64 within 1e-12, options included (recurrent dropout on
the operand, layer norm of the product and of the LSTM's c_t)."""
import numpy as np
import pytest

from rnnlab.engine.cells import gru
from rnnlab.engine.cells import layernorm
from rnnlab.engine.cells import lstm
from rnnlab.engine.cells import rnn
from support import needs_numba

pytestmark = needs_numba

B, H = 3, 5
TOL = 1e-12


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=0, atol=TOL)


@pytest.fixture(scope="module")
def harness():
    """One step of a cell's row kernels over every row, phase p, through the stubs the loops call."""
    from numba import njit

    from rnnlab.engine._kernels.cell import bwd_row, fwd_row

    @njit
    def fwd(cell, p, A, X, S, O, N, C, copt):
        for r in range(A.shape[0]):
            fwd_row(cell, p, A, X, (S, O, N), r, C, r, copt)

    @njit
    def bwd(cell, p, G, C, Hp, hn, DX, DHW, dD, DRH, copt):
        for r in range(G.shape[1]):
            bwd_row(cell, p, G, r, C, r, Hp, hn, (DX, DHW, dD, DRH), copt)
    return fwd, bwd


def _bufs(G, n, KC):
    return (np.empty((n, B, H)), np.empty((B, KC * H)), np.empty((B, G * H)), np.empty((B, G * H)),
            np.empty((n, B, H)), np.zeros((B, H)))


@pytest.mark.parametrize("act_name", ["tanh", "relu", "identity"])
@pytest.mark.parametrize("dropout", [False, True])
def test_rnn_step(act_name, dropout, harness, rng):
    from rnnlab.engine._kernels.gates import RNN
    fwd, bwd = harness
    xw, h, b = rng.standard_normal((B, H)), rng.standard_normal((B, H)), rng.standard_normal(H)
    W = rng.standard_normal((H, H))
    m = (rng.random((B, H)) > 0.3) / 0.7 if dropout else None
    (h_ref,), cache = rnn.step_forward(xw, (h,), W, b, nonlinearity=act_name, rec_mask=m)
    O = h * m if dropout else h
    N, C, DX, DHW, dD, DRH = _bufs(1, 1, 0)
    copt = RNN.copt({"nonlinearity": act_name}, B, B, H, np.float64, None)
    fwd(RNN, 1, O @ W.T + b, xw, h[None], O, N, C, copt)          # the loop adds b_hh to the product
    _close(N[0], h_ref)
    dh = rng.standard_normal((B, H))
    da_ref, _, (dh_prev_ref,) = rnn.step_backward((dh,), cache, W, nonlinearity=act_name, rec_mask=m)
    bwd(RNN, 1, dh[None], C, h, h_ref, DX, DHW, dD, DRH, copt)     # hn: the new state
    _close(DX, da_ref)
    _close(dD[0] + (DX @ W) * (m if dropout else 1), dh_prev_ref)


@pytest.mark.parametrize("option", [None, "dropout", "layer_norm"])
def test_lstm_step(option, harness, rng):
    from rnnlab.engine._kernels.gates import LSTM, ln_row, ln_row_bwd
    fwd, bwd = harness
    xw = rng.standard_normal((B, 4 * H))
    h, c, b = rng.standard_normal((B, H)), rng.standard_normal((B, H)), rng.standard_normal(4 * H)
    W = rng.standard_normal((4 * H, H))
    m = (rng.random((B, H)) > 0.3) / 0.7 if option == "dropout" else None
    ln = None
    if option == "layer_norm":
        ln = {"h": (rng.normal(1, .3, 4 * H), rng.normal(0, .3, 4 * H)), "c": (rng.normal(1, .3, H), rng.normal(0, .3, H))}
    (h_ref, c_ref), cache = lstm.step_forward(xw, (h, c), W, b, rec_mask=m, ln=ln)
    O = h * m if m is not None else h
    A = O @ W.T
    lnh = np.stack(ln["h"]) if ln else None
    Vh, Ih = np.empty((B, 4 * H)), np.empty(B)
    if ln:                                                           # the loop's LN_h, before the kernel
        for r in range(B):
            ln_row(A, r, 0, 4 * H, lnh[0], lnh[1], Vh, r, Ih)
    A += b
    N, C, DX, DHW, dD, DRH = _bufs(4, 2, 6)
    copt = LSTM.copt({}, B, B, H, np.float64, ln)
    fwd(LSTM, 1, A, xw, np.stack([h, c]), O, N, C, copt)
    _close(N[0], h_ref)
    _close(N[1], c_ref)
    for k, name in enumerate(("c_prev", "i", "f", "g", "o", "tanh_c")):
        _close(C[:, k * H:(k + 1) * H], getattr(cache, name))
    dh, dc = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    res = lstm.step_backward((dh, dc), cache, W, rec_mask=m, ln=ln)
    da_ref, dhw_ref, (dh_prev_ref, dc_prev_ref) = res[:3]
    bwd(LSTM, 1, np.stack([dh, dc]), C, h, h, DX, DHW, dD, DRH, copt)
    _close(DX, da_ref)
    _close(dD[1], dc_prev_ref)                                       # the forget-gate path
    D = DX.copy()
    if ln:                                                           # the loop's LN_h backward
        acc = np.zeros((B, 2, 4 * H))
        for r in range(B):
            ln_row_bwd(D, r, 0, 4 * H, lnh[0], Vh, r, Ih, acc, r)
        _close(D, dhw_ref)
        _close(acc.sum(0)[0], res[3]["ln_hh_weight"])
        _close(copt[4].sum(0)[0], res[3]["ln_c_weight"])
        _close(copt[4].sum(0)[1], res[3]["ln_c_bias"])
    _close(dD[0] + (D @ W) * (m if m is not None else 1), dh_prev_ref)


@pytest.mark.parametrize("reset", ["after", "before"])
@pytest.mark.parametrize("option", [None, "dropout", "layer_norm"])
def test_gru_step(reset, option, harness, rng):
    from rnnlab.engine._kernels.gates import GRU, GRU_BEFORE, ln_row, ln_row_bwd
    if option == "layer_norm" and reset == "before":
        pytest.skip("no layer-normalised reset-before GRU")
    fwd, bwd = harness
    kern = GRU if reset == "after" else GRU_BEFORE
    xw, h = rng.standard_normal((B, 3 * H)), rng.standard_normal((B, H))
    W, b = rng.standard_normal((3 * H, H)), rng.standard_normal(3 * H)
    m = (rng.random((B, H)) > 0.3) / 0.7 if option == "dropout" else None
    ln = {"h": (rng.normal(1, .3, 3 * H), rng.normal(0, .3, 3 * H))} if option == "layer_norm" else None
    (h_ref,), cache = gru.step_forward(xw, (h,), W, b, reset=reset, rec_mask=m, ln=ln)
    O = h * m if m is not None else h
    N, C, DX, DHW, dD, DRH = _bufs(3, 1, 4)
    A = np.empty((B, 3 * H))
    Vh, Ih = np.empty((B, 3 * H)), np.empty(B)
    if reset == "after":
        A[:] = O @ W.T
        if ln:
            for r in range(B):
                ln_row(A, r, 0, 3 * H, ln["h"][0], ln["h"][1], Vh, r, Ih)
        A += b
        fwd(kern, 1, A, xw, h[None], O, N, C, (0,))
    else:
        A[:, :2 * H] = O @ W[:2 * H].T + b[:2 * H]
        fwd(kern, 1, A, xw, h[None], O, N, C, (0,))
        A[:, 2 * H:] = C[:, 3 * H:] @ W[2 * H:].T + b[2 * H:]     # the second product, from r * h m
        fwd(kern, 2, A, xw, h[None], O, N, C, (0,))
    _close(N[0], h_ref)
    for k, name in enumerate(("r", "z", "n", "extra")):
        _close(C[:, k * H:(k + 1) * H], getattr(cache, name))
    dh = rng.standard_normal((B, H))
    res = gru.step_backward((dh,), cache, W, reset=reset, rec_mask=m, ln=ln)
    dxw_ref, dhw_ref, (dh_prev_ref,) = res[:3]
    mm = m if m is not None else 1
    bwd(kern, 1, dh[None], C, h, h, DX, DHW, dD, DRH, (0,))
    if reset == "after":
        if ln:
            acc = np.zeros((B, 2, 3 * H))
            for r in range(B):
                ln_row_bwd(DHW, r, 0, 3 * H, ln["h"][0], Vh, r, Ih, acc, r)
            _close(acc.sum(0)[1], res[3]["ln_hh_bias"])
        _close(DHW, dhw_ref)
        dh_prev = dD[0] + (DHW @ W) * mm
    else:
        DRH[:] = (DX[:, 2 * H:] @ W[2 * H:]) * mm                    # the loop's product between the phases
        bwd(kern, 2, dh[None], C, h, h, DX, DHW, dD, DRH, (0,))
        _close(DX, dhw_ref)                                          # DHW is DX for reset='before'
        dh_prev = dD[0] + (DX[:, :2 * H] @ W[:2 * H]) * mm
    _close(DX, dxw_ref)
    _close(dh_prev, dh_prev_ref)


def test_ln_row_is_the_layer_norm_of_the_cells(rng):
    from rnnlab.engine._kernels.gates import ln_row
    v = rng.standard_normal((4, 9))
    g, b = rng.normal(1, .3, 9), rng.normal(0, .3, 9)
    y_ref, (v_hat, inv) = layernorm.forward(v, g, b)
    y, V, Inv = v.copy(), np.empty((4, 9)), np.empty(4)
    for r in range(4):
        ln_row(y, r, 0, 9, g, b, V, r, Inv)
    _close(y, y_ref)
    _close(V, v_hat)
    _close(Inv, inv[:, 0])


def test_rational_tanh_max_error():
    from rnnlab.engine._kernels.gates import _tanh32
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
