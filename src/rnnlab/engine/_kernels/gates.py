"""Each cell's compiled row kernels: the only compiled copy of the cells' math (the other is ``rnnlab.engine.cells``).

One step of a cell is a matrix product followed by elementwise gate math. The product is the strategy's
(``_kernels.loop``: one-row products or packed products over a block of rows, on one thread or several); the
gate math is written here once per cell, as one batch row of one step, and registered as a ``CellKernel``
(``_kernels.cell``) that the shared loops call. ``tests/engine/kernels/test_gates.py`` runs one step of each kernel
against its ``rnnlab.engine.cells`` step, options included:

    RNN          rnn_fwd / rnn_bwd             a = A (+ X) -> h = act(a); dL/dh -> dL/da (from the new h)
    LSTM         lstm_fwd / lstm_bwd           a -> i f g o, c, h; split at c_t, where layer norm acts (LN_c)
    GRU          gru_fwd / gru_bwd             reset='after': one product, A = h W_hh^T + b_hh
    GRU_BEFORE   gru_before_fwd / _bwd         reset='before': two products, the n block's from r * h

The RNN and the LSTM also give the shared loops' plans without layer norm kernels of their own (``rnn_fwd_sum``,
``lstm_fwd_sum``, ``lstm_bwd_sum``: ``CellKernel``'s ``plain``): the same code, written once, with a constant
that drops X (A holds the whole sum there) and LN_c before Numba types it, a second less to compile a loop.

The options are mechanisms of the loops around these kernels: recurrent dropout multiplies the products'
operand (``st``'s O), zoneout mixes the new states (``st``'s N) into the old, layer norm normalises the
recurrent product before the kernel (``ln_row``) and, for the LSTM, c_t inside it.

Conventions: ``A`` (B, G*H), one row per batch row; an absent array is an empty one of the right rank (``X``
with 0 rows: A holds the whole pre-activation). A padded row (mask 0) never reaches a kernel: the loop keeps
its state, writes output 0 and passes its gradient unchanged.

float64 uses libm's ``tanh`` (exact to round-off, as the reference); float32 a rational tanh (Eigen's
``generic_fast_tanh_float`` coefficients, clamped at |x| = 7.99) that vectorises, max error 5e-7 (tested);
``sigmoid(x) = 0.5 tanh(x / 2) + 0.5`` in both.

Indexing: gate blocks are read as A[r, H2 + k] with unsigned offsets (a signed 2 * H + k keeps Numba's
negative-index check, which blocks vectorisation), and rows of whole 2-D arrays rather than per-row views
where the loop is hot (each view is two atomic reference-count updates). The kernels are inlined into the
loops (``inline="always"``).
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit, types, uint64
from numba.extending import overload

from rnnlab.engine._kernels.cell import CellKernel

FAST = {"contract", "reassoc", "arcp", "nsz", "afn"}    # no 'nnan'/'ninf': NaN and Inf must still propagate
ACT = {"tanh": 0, "relu": 1, "identity": 2}             # the RNN's nonlinearity as the kernels take it
_A = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
      -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16)
_B = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)


# ------------------------------------------------------------------ activations
@njit(inline="always", fastmath=FAST, error_model="numpy")
def _tanh32(x_in):
    clamp = np.float32(7.99881172180175781)
    x = clamp if x_in > clamp else x_in             # selects, not min/max: they vectorise
    x = -clamp if x < -clamp else x
    x2 = x * x
    p = np.float32(_A[6])
    p = p * x2 + np.float32(_A[5])
    p = p * x2 + np.float32(_A[4])
    p = p * x2 + np.float32(_A[3])
    p = p * x2 + np.float32(_A[2])
    p = p * x2 + np.float32(_A[1])
    p = p * x2 + np.float32(_A[0])
    p = p * x
    q = np.float32(_B[3])
    q = q * x2 + np.float32(_B[2])
    q = q * x2 + np.float32(_B[1])
    q = q * x2 + np.float32(_B[0])
    # the clamps may be folded into min/max, which drop a NaN: give it back explicitly
    return p / q if x_in == x_in else x_in


def _th_dispatch(x):  # pragma: no cover - replaced by the overload below
    raise NotImplementedError


@overload(_th_dispatch, jit_options={"fastmath": FAST, "error_model": "numpy"})
def _th_impl(x):
    if x == types.float32:
        return lambda x: _tanh32(x)
    return lambda x: math.tanh(x)


@njit(fastmath=FAST, error_model="numpy")
def th(x):
    return _th_dispatch(x)


def _sg_dispatch(x):  # pragma: no cover - replaced by the overload below
    raise NotImplementedError


@overload(_sg_dispatch, jit_options={"fastmath": FAST, "error_model": "numpy"})
def _sg_impl(x):
    if x == types.float32:                  # float32 constants keep float32 math in float32
        return lambda x: np.float32(0.5) * _tanh32(np.float32(0.5) * x) + np.float32(0.5)
    return lambda x: 0.5 * math.tanh(0.5 * x) + 0.5


@njit(fastmath=FAST, error_model="numpy")
def sg(x):
    return _sg_dispatch(x)




# ------------------------------------------------------------------ layer norm of one row's columns
EPS = 1e-5                                              # rnnlab.engine.cells.layernorm.EPS (torch's default)


@njit(inline="always", fastmath=FAST, error_model="numpy")
def ln_row(A, ra, c0, K, gamma, beta, V, rv, Inv):
    """A[ra, c0:c0+K] <- LN(that) gamma + beta in place; V[rv] = v_hat, Inv[rv] = 1 / s (the equations are
    ``rnnlab.engine.cells.layernorm``'s)."""
    o = uint64(c0)
    mu = 0.0
    for j in range(uint64(K)):
        mu += A[ra, o + j]
    mu /= K
    var = 0.0
    for j in range(uint64(K)):
        d = A[ra, o + j] - mu
        var += d * d
    inv = 1.0 / math.sqrt(var / K + EPS)
    Inv[rv] = inv
    for j in range(uint64(K)):
        v = (A[ra, o + j] - mu) * inv
        V[rv, j] = v
        A[ra, o + j] = v * gamma[j] + beta[j]


@njit(inline="always", fastmath=FAST, error_model="numpy")
def ln_row_bwd(D, rd, c0, K, gamma, V, rv, Inv, acc, ra):
    """D[rd, c0:c0+K] <- dL/dv from dL/dy in place (v_hat, 1/s of the forward in V[rv], Inv[rv]); the gain's
    and the bias's gradients are added to acc[ra, 0] and acc[ra, 1]."""
    o = uint64(c0)
    mg = 0.0
    mgv = 0.0
    for j in range(uint64(K)):
        dy = D[rd, o + j]
        v = V[rv, j]
        acc[ra, 0, j] += dy * v
        acc[ra, 1, j] += dy
        g = dy * gamma[j]
        mg += g
        mgv += g * v
    mg /= K
    mgv /= K
    inv = Inv[rv]
    for j in range(uint64(K)):
        D[rd, o + j] = inv * (D[rd, o + j] * gamma[j] - mg - V[rv, j] * mgv)


# ------------------------------------------------------------------ RNN: cache none; copt (act,)
@njit(inline="always", fastmath=FAST, error_model="numpy")
def _rnn_fwd(p, A, X, st, r, C, rc, copt, WITH_X):
    """h = act(A[r] + X[r]), X read where WITH_X (a constant: without it X is never read) and X has rows; act:
    0 tanh, 1 relu, 2 identity (the branches are loop-invariant: LLVM unswitches them)."""
    N = st[2]
    act = copt[0]
    has_x = WITH_X and X.shape[0] > 0
    for k in range(uint64(N.shape[2])):
        v = A[r, k] + X[r, k] if has_x else A[r, k]
        if act == 0:
            v = th(v)
        elif act == 1:
            v = 0.0 if v <= 0.0 else v                      # NaN <= 0 is false: NaN passes
        N[0, r, k] = v


@njit(inline="always", fastmath=FAST, error_model="numpy")
def rnn_fwd(p, A, X, st, r, C, rc, copt):
    """h = act(A[r] + X[r]) (X empty: act(A[r]))."""
    _rnn_fwd(p, A, X, st, r, C, rc, copt, True)


@njit(inline="always", fastmath=FAST, error_model="numpy")
def rnn_fwd_sum(p, A, X, st, r, C, rc, copt):
    """h = act(A[r]): the shared loops' plans without layer norm, where A holds the whole sum (X is empty)."""
    _rnn_fwd(p, A, X, st, r, C, rc, copt, False)


@njit(inline="always", fastmath=FAST, error_model="numpy")
def rnn_bwd(p, G, r, C, rc, Hp, hn, D, copt):
    """dL/da = g act'(a), the derivative read from the new state hn (tanh: 1 - h^2; relu: [h > 0])."""
    DX, dD = D[0], D[2]
    act = copt[0]
    for k in range(uint64(hn.shape[1])):
        g = G[0, r, k]
        v = hn[r, k]
        if act == 0:
            g = g * (1.0 - v * v)
        elif act == 1:
            g = g if v > 0.0 else 0.0
        DX[rc, k] = g
        dD[0, r, k] = 0.0


def _rnn_copt(opts, rows, B, H, dt, ln):
    """(act,): the nonlinearity as the kernels take it."""
    return (ACT[opts.get("nonlinearity", "tanh")],)


RNN = CellKernel("rnn", rnn_fwd, rnn_bwd, plain=(rnn_fwd_sum, rnn_bwd), g1=1, reads_new=True, cache=(),
                 copt=_rnn_copt, serves=("recurrent_dropout", "zoneout"))


# ------------------------------------------------------------------ LSTM (gates i f g o)
# cache [c_{t-1} | i | f | g | o | tanh(LN_c(c_t))]; copt (S, lnc (2, H) or (0, H), Vc, Ic, acc (B, 2, H))
def gate_scales(GH, like):
    """S (2, 4H): the LSTM's gates as one formula, S[0] tanh(S[0] a) + S[1]: (0.5, 0.5) for the sigmoid gates
    i, f, o (sigmoid(a) = 0.5 tanh(a / 2) + 0.5), (1, 0) for g: one vectorised loop over all 4H gates. NumPy
    (made once per H and dtype, ``_scales``: a compiled copy cost a compilation per dtype)."""
    S = np.full((2, GH), 0.5, like.dtype)             # like: an array of the dtype wanted
    H = GH // 4
    S[0, 2 * H:3 * H] = 1.0
    S[1, 2 * H:3 * H] = 0.0
    return S


@njit(inline="always", fastmath=FAST, error_model="numpy")
def _lstm_fwd(p, A, X, st, r, C, rc, copt, ANY):
    """The gates, c_t = f c_{t-1} + i g, then (LN_c) and h_t = o tanh(c_t): the row kernel split at c_t. One
    store per loop: LLVM vectorises a loop only while its run-time alias checks stay few. ANY (a constant):
    whether X and LN_c may be there; without, their code is dropped before typing (``lstm_fwd_sum``)."""
    S, N = st[0], st[2]
    Sg, lnc, Vc, Ic = copt[0], copt[1], copt[2], copt[3]
    H = uint64(S.shape[2])
    GH = uint64(4) * H
    H2 = uint64(2) * H
    H3 = uint64(3) * H
    H4 = uint64(4) * H
    H5 = uint64(5) * H
    if ANY and X.shape[0] > 0:                              # i f g o: s tanh(s a) + o, see gate_scales
        for j in range(GH):
            sj = Sg[0, j]
            C[rc, H + j] = sj * th(sj * (A[r, j] + X[r, j])) + Sg[1, j]
    else:
        for j in range(GH):
            sj = Sg[0, j]
            C[rc, H + j] = sj * th(sj * A[r, j]) + Sg[1, j]
    if not ANY or lnc.shape[0] == 0:                        # one pass: c_{t-1}, c_t, tanh(c_t), h_t
        for k in range(H):
            cp = S[1, r, k]
            C[rc, k] = cp
            cn = C[rc, H2 + k] * cp + C[rc, H + k] * C[rc, H3 + k]     # c_t = f c + i g
            N[1, r, k] = cn
            tc = th(cn)
            C[rc, H5 + k] = tc
            N[0, r, k] = C[rc, H4 + k] * tc
        return
    for k in range(H):
        C[rc, k] = S[1, r, k]
    for k in range(H):
        C[rc, H5 + k] = C[rc, H2 + k] * C[rc, k] + C[rc, H + k] * C[rc, H3 + k]
    for k in range(H):
        N[1, r, k] = C[rc, H5 + k]
    ln_row(C, rc, H5, H, lnc[0], lnc[1], Vc, rc, Ic)      # LN_c between the two halves
    for k in range(H):
        C[rc, H5 + k] = th(C[rc, H5 + k])
    for k in range(H):
        N[0, r, k] = C[rc, H4 + k] * C[rc, H5 + k]


@njit(inline="always", fastmath=FAST, error_model="numpy")
def lstm_fwd(p, A, X, st, r, C, rc, copt):
    """One row forward, any options (X empty or not, LN_c where copt's lnc has rows)."""
    _lstm_fwd(p, A, X, st, r, C, rc, copt, True)


@njit(inline="always", fastmath=FAST, error_model="numpy")
def lstm_fwd_sum(p, A, X, st, r, C, rc, copt):
    """One row forward in the shared loops' plans without layer norm: A holds the whole sum (X empty), no LN_c."""
    _lstm_fwd(p, A, X, st, r, C, rc, copt, False)


@njit(inline="always", fastmath=FAST, error_model="numpy")
def _lstm_bwd(p, G, r, C, rc, Hp, hn, D, copt, LNC):
    """do, then dL/dc_t through h = o tanh(LN_c(c_t)) (dD[0] holds it meanwhile), then di, df, dg and the
    cell path dc_{t-1} = dc f (the direct part, dD[1]). LNC (a constant): whether LN_c may be there."""
    DX, dD = D[0], D[2]
    lnc, Vc, Ic, acc = copt[1], copt[2], copt[3], copt[4]
    H = uint64(dD.shape[2])
    H2 = uint64(2) * H
    H3 = uint64(3) * H
    H4 = uint64(4) * H
    H5 = uint64(5) * H
    for k in range(H):
        o = C[rc, H4 + k]
        DX[rc, H3 + k] = (G[0, r, k] * C[rc, H5 + k]) * o * (1.0 - o)
    for k in range(H):
        tc = C[rc, H5 + k]
        dD[0, r, k] = G[0, r, k] * C[rc, H4 + k] * (1.0 - tc * tc)
    if LNC and lnc.shape[0] > 0:
        ln_row_bwd(dD[0], r, 0, H, lnc[0], Vc, rc, Ic, acc, r)
    for k in range(H):
        dD[0, r, k] += G[1, r, k]                           # dL/dc_t
    for k in range(H):
        i = C[rc, H + k]
        DX[rc, k] = (dD[0, r, k] * C[rc, H3 + k]) * i * (1.0 - i)
    for k in range(H):
        f = C[rc, H2 + k]
        DX[rc, H + k] = (dD[0, r, k] * C[rc, k]) * f * (1.0 - f)
    for k in range(H):
        g = C[rc, H3 + k]
        DX[rc, H2 + k] = (dD[0, r, k] * C[rc, H + k]) * (1.0 - g * g)
    for k in range(H):
        dD[1, r, k] = dD[0, r, k] * C[rc, H2 + k]
    for k in range(H):
        dD[0, r, k] = 0.0


@njit(inline="always", fastmath=FAST, error_model="numpy")
def lstm_bwd(p, G, r, C, rc, Hp, hn, D, copt):
    """One row back, any options."""
    _lstm_bwd(p, G, r, C, rc, Hp, hn, D, copt, True)


@njit(inline="always", fastmath=FAST, error_model="numpy")
def lstm_bwd_sum(p, G, r, C, rc, Hp, hn, D, copt):
    """One row back in the shared loops' plans without layer norm (no LN_c)."""
    _lstm_bwd(p, G, r, C, rc, Hp, hn, D, copt, False)


def _lstm_copt(opts, rows, B, H, dt, ln):
    """(S, lnc, Vc, Ic, acc): the gate scales; LN_c's gain and bias (2, H), its per-row caches and the gradient
    sums per row (B, 2, H), empty without layer norm."""
    if ln is not None and "c" in ln:
        lnc = np.ascontiguousarray(np.stack(ln["c"]), dtype=dt)
        return (_scales(H, dt), lnc, np.empty((rows, H), dt), np.empty(rows, dt), np.zeros((B, 2, H), dt))
    return (_scales(H, dt), np.empty((0, H), dt), np.empty((0, H), dt), np.empty(0, dt), np.empty((0, 2, H), dt))


@functools.lru_cache(maxsize=64)
def _scales(H, dt):
    """gate_scales for H units, made once (the kernels only read it)."""
    return gate_scales(4 * H, np.empty(0, dt))


def _lstm_copt_grads(copt):
    """A backward's bundle (fresh LN_c gradient sums) and the getter of LN_c's gain and bias gradients."""
    if copt[1].shape[0] == 0:
        return copt, lambda c: {}
    fresh = copt[:4] + (np.zeros_like(copt[4]),)
    return fresh, lambda c: dict(zip(("ln_c_weight", "ln_c_bias"), c[4].sum(axis=0)))


LSTM = CellKernel("lstm", lstm_fwd, lstm_bwd, plain=(lstm_fwd_sum, lstm_bwd_sum), copt=_lstm_copt, copt_grads=_lstm_copt_grads, g1=4, cache=("c_prev", "i", "f", "g", "o", "tanh_c"), gates=tuple("ifgo"),
                  serves=("recurrent_dropout", "zoneout", "zoneout_cell", "layer_norm"))


# ------------------------------------------------------------------ GRU (gates r z n)
# cache [r | z | n | e], e = h W_hn^T + b_hn (reset='after') or r * h_{t-1} * m (reset='before'); copt (0,)
@njit(inline="always", fastmath=FAST, error_model="numpy")
def gru_fwd(p, A, X, st, r, C, rc, copt):
    """reset='after': r, z, e = h W_hn^T + b_hn, n = tanh(x_n + r e) and h_t = (1 - z) n + z h_{t-1}. One
    store per loop: LLVM vectorises a loop only while its run-time alias checks stay few."""
    S, N = st[0], st[2]
    H = uint64(S.shape[2])
    H2 = uint64(2) * H
    H3 = uint64(3) * H
    for k in range(H):
        C[rc, k] = sg(X[r, k] + A[r, k])
    for k in range(H):
        C[rc, H + k] = sg(X[r, H + k] + A[r, H + k])
    for k in range(H):
        C[rc, H3 + k] = A[r, H2 + k]
    for k in range(H):
        C[rc, H2 + k] = th(X[r, H2 + k] + C[rc, k] * A[r, H2 + k])
    for k in range(H):
        n = C[rc, H2 + k]
        N[0, r, k] = n + C[rc, H + k] * (S[0, r, k] - n)    # (1 - z) n + z h


@njit(inline="always", fastmath=FAST, error_model="numpy")
def _gru_zn_bwd(G, r, C, rc, Hp, DX, dD):
    """The z and n blocks of dL/d(x W_ih^T) and the direct part g z of dL/dh_{t-1}."""
    H = uint64(dD.shape[2])
    H2 = uint64(2) * H
    for k in range(H):
        z = C[rc, H + k]
        DX[rc, H + k] = G[0, r, k] * (Hp[rc, k] - C[rc, H2 + k]) * z * (1.0 - z)
    for k in range(H):
        n = C[rc, H2 + k]
        DX[rc, H2 + k] = G[0, r, k] * (1.0 - C[rc, H + k]) * (1.0 - n * n)
    for k in range(H):
        dD[0, r, k] = G[0, r, k] * C[rc, H + k]


@njit(inline="always", fastmath=FAST, error_model="numpy")
def gru_bwd(p, G, r, C, rc, Hp, hn, D, copt):
    """reset='after': dr = dn e r (1 - r); DHW = [dr dz dn*r]."""
    DX, DHW, dD = D[0], D[1], D[2]
    _gru_zn_bwd(G, r, C, rc, Hp, DX, dD)
    H = uint64(dD.shape[2])
    H2 = uint64(2) * H
    H3 = uint64(3) * H
    for k in range(H):
        rr = C[rc, k]
        DX[rc, k] = DX[rc, H2 + k] * C[rc, H3 + k] * rr * (1.0 - rr)
    for k in range(H):
        DHW[rc, k] = DX[rc, k]
    for k in range(H):
        DHW[rc, H + k] = DX[rc, H + k]
    for k in range(H):
        DHW[rc, H2 + k] = DX[rc, H2 + k] * C[rc, k]


GRU = CellKernel("gru", gru_fwd, gru_bwd, g1=3, writes_dhw=True, sums=False, cache=("r", "z", "n", "e"),
                 gates=("r", "z", "n"), serves=("recurrent_dropout", "zoneout", "layer_norm"))


@njit(inline="always", fastmath=FAST, error_model="numpy")
def gru_before_fwd(p, A, X, st, r, C, rc, copt):
    """reset='before'. Phase 1: r, z and e = r * O (O: h_{t-1}, times the recurrent dropout mask), the operand
    of phase 2's product. Phase 2: n = tanh(x_n + A_n), A_n = e W_hn^T + b_hn, and h_t."""
    S, O, N = st
    H = uint64(S.shape[2])
    H2 = uint64(2) * H
    H3 = uint64(3) * H
    if p == 1:
        for k in range(H):
            C[rc, k] = sg(X[r, k] + A[r, k])
        for k in range(H):
            C[rc, H + k] = sg(X[r, H + k] + A[r, H + k])
        for k in range(H):
            C[rc, H3 + k] = C[rc, k] * O[r, k]
    else:
        for k in range(H):
            C[rc, H2 + k] = th(X[r, H2 + k] + A[r, H2 + k])
        for k in range(H):
            n = C[rc, H2 + k]
            N[0, r, k] = n + C[rc, H + k] * (S[0, r, k] - n)


@njit(inline="always", fastmath=FAST, error_model="numpy")
def gru_before_bwd(p, G, r, C, rc, Hp, hn, D, copt):
    """Phase 1: the z and n blocks (DHW is DX). Phase 2, with DRH = dL/d(r h m) * m = (dn W_hn) m: dr =
    DRH h r (1 - r) and the direct part += DRH r."""
    DX, dD, DRH = D[0], D[2], D[3]
    if p == 1:
        _gru_zn_bwd(G, r, C, rc, Hp, DX, dD)
    else:
        H = uint64(dD.shape[2])
        for k in range(H):
            rr = C[rc, k]
            DX[rc, k] = DRH[r, k] * Hp[rc, k] * rr * (1.0 - rr)
        for k in range(H):
            dD[0, r, k] += DRH[r, k] * C[rc, k]


GRU_BEFORE = CellKernel("gru-before", gru_before_fwd, gru_before_bwd, phases=2, g1=2, op2=3, sums=False,
                        cache=("r", "z", "n", "e"), gates=("r", "z", "n"), serves=("recurrent_dropout", "zoneout"))


def mask_rows(mask, T, dt):
    """The (T, B) mask the kernels read (the (T, B, 1) mask's last axis dropped), or an empty (0, 1) array."""
    if mask is None:
        return np.empty((0, 1), dt)
    return np.ascontiguousarray(mask[..., 0], dtype=dt)
