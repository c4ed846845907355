"""Whole-loop compiled scans for RNN, LSTM and GRU (forward and backward), with ragged-batch masks.

The same equations as ``rnnlab.cells`` (see their docstrings), written as explicit loops so Numba fuses the
gate math and the recurrent product of a step into one pass and no Python runs inside the time loop. The
recurrent product is a rank-1 update per hidden unit (``a += h_k * W_hh^T[k]``), contiguous and vectorised.
The input projection x_t W_ih^T runs inside the loop too, one packed product (``packed_gemm``) per block of
steps (``_project_chunk``): no (T, B, G*H) array is written before the loop and read back.

Transcendentals: float64 uses libm's ``tanh`` (exact to round-off, as the reference). float32 uses a
rational approximation of tanh (Eigen's ``generic_fast_tanh_float`` coefficients, clamped at |x| = 7.99),
which vectorises; its maximum error against ``numpy.tanh`` is measured in the tests (documented in
docs/performance.md); ``sigmoid(x) = 0.5 tanh(x / 2) + 0.5`` in both.

Caches are plain arrays (T, B, ...) so that the weight gradients stay one BLAS product after the loop.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, types, uint64
from numba.extending import overload

from .packed_gemm import MR_MAX, pack, pgemm, vecmat_acc

FAST = {"contract", "reassoc", "arcp", "nsz", "afn"}    # no 'nnan'/'ninf': NaN and Inf must still propagate
_A = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
      -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16)
_B = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)


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


@overload(_th_dispatch)
def _th_impl(x):
    if x == types.float32:
        return lambda x: _tanh32(x)
    return lambda x: math.tanh(x)


@njit(inline="always", error_model="numpy")
def th(x):
    return _th_dispatch(x)


def _sg_dispatch(x):  # pragma: no cover - replaced by the overload below
    raise NotImplementedError


@overload(_sg_dispatch)
def _sg_impl(x):
    if x == types.float32:                  # float32 constants keep float32 math in float32
        return lambda x: np.float32(0.5) * _tanh32(np.float32(0.5) * x) + np.float32(0.5)
    return lambda x: 0.5 * math.tanh(0.5 * x) + 0.5


@njit(inline="always", error_model="numpy")
def sg(x):
    return _sg_dispatch(x)


# ------------------------------------------------------------------ LSTM gate math of one step (all rows)
# Gate blocks are addressed as A[r, H2 + k] with *unsigned* offsets and k: an index such as a[2 * H + k] with
# signed integers keeps Numba's negative-index wrap-around check (LLVM cannot prove 2 * H >= 0), which blocks
# vectorisation (2-5x slower). 2-D indexing instead of per-row and per-gate views also saves the reference
# counting of every view (atomic operations): at B = 4, H = 64 the forward kernel went from 2.8 to 1.2 us.
# The gate kernels are inlined into the loops that call them (``inline="always"``, Numba IR level): a call
# per step with a dozen array arguments cost 13 % of the B = 1, H = 32 LSTM forward (measured, paired runs).
# Copies are explicit loops: a slice assignment may allocate a temporary.
@njit(cache=True)
def gate_scales(GH, like):
    """S (2, 4H): the LSTM's gates as one formula, S[0] tanh(S[0] a) + S[1]: (0.5, 0.5) for the sigmoid gates
    i, f, o (sigmoid(a) = 0.5 tanh(a / 2) + 0.5), (1, 0) for g. One vectorised loop over all 4H gates with
    these constants ran the B = 1, H = 32 gate math 1.5x faster than a loop per activation (and a fused loop
    over units with all four gates did not vectorise: too many arrays for the vectoriser's alias checks)."""
    S = np.empty((2, GH), like.dtype)                 # like: an array of the dtype wanted
    H = GH // 4
    for j in range(GH):
        tanh_gate = 2 * H <= j < 3 * H
        S[0, j] = 1.0 if tanh_gate else 0.5
        S[1, j] = 0.0 if tanh_gate else 0.5
    return S


@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def lstm_row_fwd(A, ra, b, has_b, S, G, rg, c, h, r, O, ro):
    """The gates and the new states of one batch row: G[rg] = the gates of A[ra] (+ b), then c[r], h[r] and
    O[ro] = h. Rows of whole 2-D arrays instead of per-step views (each view costs two atomic reference-count
    updates, at every step)."""
    GH = A.shape[1]
    H = uint64(GH // 4)
    H2 = uint64(2) * H
    H3 = uint64(3) * H
    if has_b:                                               # i f g o: s tanh(s a) + o, see gate_scales
        for j in range(uint64(GH)):
            sj = S[0, j]
            G[rg, j] = sj * th(sj * (A[ra, j] + b[j])) + S[1, j]
    else:
        for j in range(uint64(GH)):
            sj = S[0, j]
            G[rg, j] = sj * th(sj * A[ra, j]) + S[1, j]
    for k in range(H):
        cn = G[rg, H + k] * c[r, k] + G[rg, k] * G[rg, H2 + k]
        c[r, k] = cn
        hk = G[rg, H3 + k] * th(cn)
        h[r, k] = hk
        O[ro, k] = hk


@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def lstm_gates_fwd(A, xw_t, b, has_b, m_t, has_mask, h, c, out_t, Hs_t, Cs_t, Gs_t, keep, S):
    """A (B, 4H): h W_hh^T on entry; with x W_ih^T + b_ih (xw_t) and b_hh (b) added, writes the gates (Gs_t)
    and the new states (h, c, out_t; padded rows keep their state and output 0). keep: also cache h and c
    before the step (Hs_t, Cs_t; Hs_t None: h is cached elsewhere). xw_t None: A holds x W_ih^T already
    (compile-time branches: Numba prunes ``is None`` on a None argument)."""
    B, GH = A.shape
    H = uint64(GH // 4)
    H2 = uint64(2) * H
    H3 = uint64(3) * H
    for r in range(B):
        if keep:
            for k in range(H):
                Cs_t[r, k] = c[r, k]
            if Hs_t is not None:
                for k in range(H):
                    Hs_t[r, k] = h[r, k]
        if (m_t[r] if has_mask else 1.0) == 0.0:           # padded: state kept, output 0, gates not used
            for k in range(H):
                out_t[r, k] = 0.0
            continue
        if xw_t is not None:
            for j in range(uint64(GH)):
                A[r, j] += xw_t[r, j]
        lstm_row_fwd(A, r, b, has_b, S, Gs_t, r, c, h, r, out_t, r)


@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def lstm_gates_bwd(dh, dc, d_out_t, m_t, has_mask, Cs_t, Gs_t, Cn_t, DA):
    """One step back. Cs_t: the cell state before the step, Cn_t: after it (tanh(c_t) is recomputed from it
    rather than cached: one (T, B, H) array less for a transcendental per unit). Writes dL/dA (DA) and the
    cell-state gradient carried back (dc); padded rows: DA = 0, dc unchanged."""
    B, GH = DA.shape
    H = uint64(GH // 4)
    H2 = uint64(2) * H
    H3 = uint64(3) * H
    for r in range(B):
        if (m_t[r] if has_mask else 1.0) == 0.0:
            for j in range(uint64(GH)):
                DA[r, j] = 0.0
            continue
        for k in range(H):
            tc = th(Cn_t[r, k])
            i = Gs_t[r, k]
            f = Gs_t[r, H + k]
            g = Gs_t[r, H2 + k]
            o = Gs_t[r, H3 + k]
            g_h = dh[r, k] + d_out_t[r, k]
            dck = dc[r, k] + g_h * o * (1.0 - tc * tc)
            DA[r, k] = (dck * g) * i * (1.0 - i)
            DA[r, H + k] = (dck * Cs_t[r, k]) * f * (1.0 - f)
            DA[r, H2 + k] = (dck * i) * (1.0 - g * g)
            DA[r, H3 + k] = (g_h * tc) * o * (1.0 - o)
            dc[r, k] = dck * f


@njit(cache=True, error_model="numpy")
def _state_after(Cs, cT, t, reverse):
    """A state after step t (the LSTM's c, the RNN's h): the cached state before the next step in scan order,
    or the final state (on padded rows it is not used)."""
    n = t - 1 if reverse else t + 1
    return cT if n < 0 or n >= Cs.shape[0] else Cs[n]


PROJ_ROWS = 128      # rows (steps x batch rows) of x W_ih^T computed at once inside the loop kernels


@njit(cache=True, fastmath=FAST, error_model="numpy")
def _project_chunk(XW, x2, s, T, B, reverse, Pih, bx, has_bx, tile):
    """The input projection x_t W_ih^T (+ b_ih) of the steps s .. s+n-1 of the scan (n = XW rows / B), from x2
    (T*B, I), into XW (n*B, G*H): a packed product over a block of steps that stays in cache, instead of a
    (T, B, G*H) array written before the loop and read back. Returns ta, the first time index of the block
    (step t's rows are XW[(t - ta)*B : (t - ta + 1)*B])."""
    n = min(XW.shape[0] // B, T - s)
    ta = T - s - n if reverse else s
    rows = XW[:n * B]
    if has_bx:
        for r in range(n * B):
            for j in range(XW.shape[1]):
                rows[r, j] = bx[j]
    pgemm(rows, x2[ta * B:(ta + n) * B], Pih, XW.shape[1], has_bx, tile)
    return ta


# ------------------------------------------------------------------ RNN (act: 0 tanh, 1 relu, 2 identity)
@njit(cache=True, fastmath=FAST, error_model="numpy")
def rnn_fwd(x2, Pih, XW, h0, WT, b, has_b, mask, has_mask, reverse, act, out, Hs, hT):
    T, B, H = out.shape
    keep = Hs.shape[0] == T                         # caches for backward, or one reused row (inference)
    h = h0.copy()
    a = np.empty(H, out.dtype)
    tile = np.empty((MR_MAX, Pih.shape[2]), out.dtype)
    ta = 0
    nxt = 0                                         # the step that starts the next block of x W_ih^T
    for s in range(T):
        t = T - 1 - s if reverse else s
        ct = t if keep else 0
        if s == nxt:                                # a counter, not an integer division per step
            nxt += XW.shape[0] // B
            ta = _project_chunk(XW, x2, s, T, B, reverse, Pih, b, False, tile)
        for r in range(B):
            xr = (t - ta) * B + r
            for k in range(H):
                Hs[ct, r, k] = h[r, k]
                a[k] = XW[xr, k] + (b[k] if has_b else 0.0)
            for k in range(H):
                hk = h[r, k]
                if hk != 0.0:
                    for j in range(H):
                        a[j] += hk * WT[k, j]
            m = mask[t, r] if has_mask else 1.0
            for k in range(H):
                if act == 0:
                    v = th(a[k])
                elif act == 1:
                    v = 0.0 if a[k] <= 0.0 else a[k]        # NaN <= 0 is false: NaN passes
                else:
                    v = a[k]
                if m != 0.0:
                    h[r, k] = v
                    out[t, r, k] = v
                else:
                    out[t, r, k] = 0.0
    hT[:] = h

@njit(cache=True, fastmath=FAST, error_model="numpy")
def rnn_bwd(d_out, dhT, W, mask, has_mask, reverse, act, Hs, hT, dXW, dh0):
    T, B, H = d_out.shape
    dh = dhT.copy()
    da = np.empty(H, d_out.dtype)
    for s in range(T):
        t = s if reverse else T - 1 - s
        h_t = _state_after(Hs, hT, t, reverse)           # the state after step t (not the user's output array)
        for r in range(B):
            m = mask[t, r] if has_mask else 1.0
            if m == 0.0:
                for k in range(H):
                    dXW[t, r, k] = 0.0
                continue
            for k in range(H):
                g = dh[r, k] + d_out[t, r, k]
                hk = h_t[r, k]
                if act == 0:
                    da[k] = g * (1.0 - hk * hk)
                elif act == 1:
                    da[k] = g if hk > 0.0 else 0.0
                else:
                    da[k] = g
                dXW[t, r, k] = da[k]
                dh[r, k] = 0.0
            for j in range(H):
                dj = da[j]
                if dj != 0.0:
                    for k in range(H):
                        dh[r, k] += dj * W[j, k]
    dh0[:] = dh

# ------------------------------------------------------------------ LSTM (gates i f g o)
@njit(cache=True, fastmath=FAST, error_model="numpy")
def lstm_fwd(x2, Pih, XW, h0, WT, b, has_b, mask, reverse, out, Hs, Cs, Gs, hT, cT, c0):
    """Hs, Cs (T, B, H), Gs (T, B, 4H): the caches for backward; or Hs = Cs = None (inference) and Gs (B, 4H)
    scratch. mask None: no padded rows. Both are compile-time branches (Numba prunes ``is None`` on a None
    argument): the inference loop carries no cache or mask code (with it, 6 % of the B = 1 forward)."""
    T, B, H = out.shape
    GH = WT.shape[1]
    h = h0.copy()
    c = c0.copy()
    S = gate_scales(GH, out)
    out2, Gs2 = out.reshape(T * B, H), Gs.reshape(-1, GH)
    tile = np.empty((MR_MAX, Pih.shape[2]), out.dtype)
    ta = 0
    nxt = 0                                         # the step that starts the next block of x W_ih^T
    for s in range(T):
        t = T - 1 - s if reverse else s
        if s == nxt:                                # a counter, not an integer division per step
            nxt += XW.shape[0] // B
            ta = _project_chunk(XW, x2, s, T, B, reverse, Pih, b, False, tile)
        for r in range(B):
            xr = (t - ta) * B + r                   # x_t W_ih^T of row r in XW, then + h W_hh^T
            vecmat_acc(XW, xr, h, r, WT)            # the recurrent product, accumulators in registers
            g = r                                   # row of the gates in Gs2
            if Hs is not None:
                g = t * B + r
                for k in range(H):
                    Hs[t, r, k] = h[r, k]
                    Cs[t, r, k] = c[r, k]
            if mask is not None:
                if mask[t, r] == 0.0:
                    for k in range(H):
                        out2[t * B + r, k] = 0.0
                    continue
            lstm_row_fwd(XW, xr, b, has_b, S, Gs2, g, c, h, r, out2, t * B + r)
    hT[:] = h
    cT[:] = c


@njit(cache=True, fastmath=FAST, error_model="numpy")
def lstm_bwd(d_out, dhT, dcT, W, mask, has_mask, reverse, Cs, Gs, cT, dXW, dh0, dc0):
    T, B, GH = dXW.shape
    H = GH // 4
    dh = dhT.copy()
    dc = dcT.copy()
    for s in range(T):
        t = s if reverse else T - 1 - s
        lstm_gates_bwd(dh, dc, d_out[t], mask[t], has_mask, Cs[t], Gs[t], _state_after(Cs, cT, t, reverse), dXW[t])
        for r in range(B):
            if (mask[t, r] if has_mask else 1.0) == 0.0:
                continue                            # padded: the state gradient passes unchanged
            for k in range(H):
                dh[r, k] = 0.0
            vecmat_acc(dh, r, dXW[t], r, W)
    dh0[:] = dh
    dc0[:] = dc


# ------------------------------------------------------------------ GRU (gates r z n; after: 1, before: 0)
@njit(cache=True, fastmath=FAST, error_model="numpy")
def gru_fwd(x2, Pih, bx, has_bx, XW, h0, WT, b, has_b, mask, has_mask, reverse, after, out, Hs, Rs, Zs, Ns, Es,
            hT):
    T, B, H = out.shape
    GH = WT.shape[1]
    keep = Hs.shape[0] == T                         # caches for backward, or one reused row (inference)
    h = h0.copy()
    gh = np.empty(GH, out.dtype)                    # h W_hh^T (+ b_hh) of one row
    ghr, ghz, ghn = gh[:H], gh[H:2 * H], gh[2 * H:]  # zero-based views: see lstm_gates_fwd
    rh = np.empty(H, out.dtype)
    n_rec = GH if after else 2 * H
    tile = np.empty((MR_MAX, Pih.shape[2]), out.dtype)
    ta = 0
    nxt = 0                                         # the step that starts the next block of x W_ih^T
    for s in range(T):
        t = T - 1 - s if reverse else s
        ct = t if keep else 0
        if s == nxt:                                # a counter, not an integer division per step
            nxt += XW.shape[0] // B
            ta = _project_chunk(XW, x2, s, T, B, reverse, Pih, bx, has_bx, tile)
        for r in range(B):
            x = XW[(t - ta) * B + r]
            xr, xz, xn = x[:H], x[H:2 * H], x[2 * H:]
            hr, o_ = h[r], out[t, r]
            hs, rs, zs, ns, es = Hs[ct, r], Rs[ct, r], Zs[ct, r], Ns[ct, r], Es[ct, r]
            if has_b:
                for j in range(GH):
                    gh[j] = b[j]
            else:
                for j in range(GH):
                    gh[j] = 0.0
            for k in range(H):
                hk = hr[k]
                hs[k] = hk
                if hk != 0.0:
                    w = WT[k]
                    for j in range(n_rec):
                        gh[j] += hk * w[j]
            for k in range(H):
                rs[k] = sg(xr[k] + ghr[k])
                zs[k] = sg(xz[k] + ghz[k])
            if not after:
                for k in range(H):
                    rh[k] = rs[k] * hr[k]
                    es[k] = rh[k]
                for k in range(H):
                    v = rh[k]
                    if v != 0.0:
                        wn = WT[k, 2 * H:]
                        for j in range(H):
                            ghn[j] += v * wn[j]
            m = mask[t, r] if has_mask else 1.0
            for k in range(H):
                if after:
                    es[k] = ghn[k]
                    n = th(xn[k] + rs[k] * ghn[k])
                else:
                    n = th(xn[k] + ghn[k])
                ns[k] = n
                hn = n + zs[k] * (hr[k] - n)
                o_[k] = hn if m != 0.0 else 0.0
            if m != 0.0:
                for k in range(H):
                    hr[k] = o_[k]
    hT[:] = h


@njit(cache=True, fastmath=FAST, error_model="numpy")
def gru_bwd(d_out, dhT, W, mask, has_mask, reverse, after, Hs, Rs, Zs, Ns, Es, dXW, dHW, dh0):
    T, B, GH = dXW.shape
    H = GH // 3
    dh = dhT.copy()
    drh = np.empty(H, d_out.dtype)
    for s in range(T):
        t = s if reverse else T - 1 - s
        for r in range(B):
            dx, dhw, dhr = dXW[t, r], dHW[t, r], dh[r]
            m = mask[t, r] if has_mask else 1.0
            if m == 0.0:
                for j in range(GH):
                    dx[j] = 0.0
                    dhw[j] = 0.0
                continue
            dxr, dxz, dxn = dx[:H], dx[H:2 * H], dx[2 * H:]          # zero-based views: see lstm_gates_fwd
            dwr, dwz, dwn = dhw[:H], dhw[H:2 * H], dhw[2 * H:]
            dor, hs, rs, zs, ns, es = d_out[t, r], Hs[t, r], Rs[t, r], Zs[t, r], Ns[t, r], Es[t, r]
            for k in range(H):
                g = dhr[k] + dor[k]
                z = zs[k]
                n = ns[k]
                dxz[k] = g * (hs[k] - n) * z * (1.0 - z)
                dxn[k] = g * (1.0 - z) * (1.0 - n * n)
                dhr[k] = g * z
            if after:
                for k in range(H):
                    rr = rs[k]
                    dr = dxn[k] * es[k] * rr * (1.0 - rr)
                    dxr[k] = dr
                    dwr[k] = dr
                    dwz[k] = dxz[k]
                    dwn[k] = dxn[k] * rr
                for j in range(GH):
                    dj = dhw[j]
                    if dj != 0.0:
                        w = W[j]
                        for k in range(H):
                            dhr[k] += dj * w[k]
            else:
                for k in range(H):
                    drh[k] = 0.0
                for j in range(H):
                    dj = dxn[j]
                    if dj != 0.0:
                        w = W[2 * H + j]
                        for k in range(H):
                            drh[k] += dj * w[k]
                for k in range(H):
                    rr = rs[k]
                    dxr[k] = drh[k] * hs[k] * rr * (1.0 - rr)
                    dhr[k] += drh[k] * rr
                for j in range(2 * H):
                    dj = dx[j]
                    if dj != 0.0:
                        w = W[j]
                        for k in range(H):
                            dhr[k] += dj * w[k]
                for j in range(GH):
                    dhw[j] = dx[j]
    dh0[:] = dh


_KERNELS = {"rnn": (rnn_fwd, rnn_bwd), "lstm": (lstm_fwd, lstm_bwd), "gru": (gru_fwd, gru_bwd)}


def kernels(dtype):
    """The (forward, backward) kernels per cell; Numba specialises them for float32 and float64."""
    return _KERNELS


_ACT = {"tanh": 0, "relu": 1, "identity": 2}


def bias_rows(cell_name, b_x, b_hh, dt):
    """(b, has_b, bx, has_bx): the biases as the kernels take them. The LSTM and the RNN add b_ih and b_hh
    together (b_x joins b); the GRU keeps b_ih (bx) apart for its n gate. A missing bias is a dummy array."""
    has_b, has_bx = b_hh is not None, b_x is not None
    if has_bx and cell_name != "gru":
        b_hh, has_b, has_bx = (b_x if b_hh is None else b_hh + b_x), True, False
    return (b_hh if has_b else np.empty(1, dt)), has_b, (b_x if has_bx else np.empty(1, dt)), has_bx


def mask_rows(mask, T, dt):
    """(m2, has_mask): the (T, B) mask the kernels read (the (T, B, 1) mask's last axis dropped), or a dummy
    (T, 1) array and False without a mask."""
    if mask is None:
        return np.empty((T, 1), dt), False
    return np.ascontiguousarray(mask[..., 0]), True


def scan_forward(cell_name, x, W_ih, b_x, state0, W_hh, b_hh, mask=None, reverse=False, opts=None, keep=True,
                 alloc=np.empty):
    """Same contract as ``rnnlab.recurrent.scan_forward``, but from the layer's input x (T, B, I), W_ih (G*H, I)
    and b_x (b_ih, or None): the kernels compute x_t W_ih^T block by block of steps inside the loop (packed
    products, ``_project_chunk``). LSTM and RNN: b_x joins b_hh in the gate math. The cache holds arrays.
    ``keep=False`` (inference): the kernels write their caches into one reused row instead of T rows.
    ``alloc(shape, dtype)`` gives the cache arrays (the layer hands back the last forward's)."""
    opts = opts or {}
    k_fwd = kernels(x.dtype)[cell_name][0]
    T, B, I = x.shape
    GH, H = W_hh.shape
    dt = x.dtype
    m2, has_mask = mask_rows(mask, T, dt)
    b, has_b, bx, has_bx = bias_rows(cell_name, b_x, b_hh, dt)
    x2 = np.ascontiguousarray(x).reshape(T * B, I)
    Pih = pack(W_ih.T)                                          # W_ih^T (I, G*H) as column panels
    XW = np.empty((max(1, PROJ_ROWS // B) * B, GH), dt)         # x W_ih^T of a block of steps
    WT = np.ascontiguousarray(W_hh.T)
    Tc = T if keep else 1
    cache = alloc if keep else np.empty
    out, Hs = np.empty((T, B, H), dt), cache((Tc, B, H), dt)
    h0 = np.ascontiguousarray(state0[0])
    hT = np.empty((B, H), dt)
    if cell_name == "rnn":
        act = _ACT[opts.get("nonlinearity", "tanh")]
        k_fwd(x2, Pih, XW, h0, WT, b, has_b, m2, has_mask, reverse, act, out, Hs, hT)
        return out, (hT,), ("numba", cell_name, {"Hs": Hs, "hT": hT.copy(), "act": act}, mask, reverse)
    if cell_name == "lstm":
        cT = np.empty((B, H), dt)
        c0 = np.ascontiguousarray(state0[1])
        m = m2 if has_mask else None
        if not keep:                                            # no caches: a (B, 4H) row for the gates
            k_fwd(x2, Pih, XW, h0, WT, b, has_b, m, reverse, out, None, None, np.empty((B, GH), dt), hT, cT, c0)
            return out, (hT, cT), None
        Cs, Gs = cache((T, B, H), dt), cache((T, B, GH), dt)
        k_fwd(x2, Pih, XW, h0, WT, b, has_b, m, reverse, out, Hs, Cs, Gs, hT, cT, c0)
        return out, (hT, cT), ("numba", cell_name, {"Hs": Hs, "Cs": Cs, "Gs": Gs, "cT": cT.copy()}, mask, reverse)
    after = opts.get("reset", "after") == "after"
    Rs, Zs, Ns, Es = (cache((Tc, B, H), dt) for _ in range(4))
    k_fwd(x2, Pih, bx, has_bx, XW, h0, WT, b, has_b, m2, has_mask, reverse, after, out, Hs, Rs, Zs, Ns, Es, hT)
    return out, (hT,), ("numba", cell_name, {"Hs": Hs, "Rs": Rs, "Zs": Zs, "Ns": Ns, "Es": Es, "after": after},
                        mask, reverse)


def scan_backward(d_out, d_state, cache, W_hh, has_bias=True, alloc=np.empty, W_ih=None):
    """Same contract as ``rnnlab.recurrent.scan_backward``."""
    _, cell_name, c, mask, reverse = cache
    if c.get("split"):
        from .split_scan import split_backward
        return split_backward(d_out, d_state, cache, W_hh, W_ih, has_bias, alloc)
    if c.get("hybrid"):
        return hybrid_backward(d_out, d_state, cache, W_hh, has_bias) + (None, None)
    k_bwd = kernels(d_out.dtype)[cell_name][1]
    T, B, H = d_out.shape
    GH = W_hh.shape[0]
    dt = d_out.dtype
    m2, has_mask = mask_rows(mask, T, dt)
    d_out = np.ascontiguousarray(d_out)
    W = np.ascontiguousarray(W_hh)
    dXW = np.empty((T, B, GH), dt)
    dh0 = np.empty((B, H), dt)
    Hs2 = c["Hs"].reshape(T * B, H)
    if cell_name == "rnn":
        k_bwd(d_out, np.ascontiguousarray(d_state[0]), W, m2, has_mask, reverse, c["act"], c["Hs"], c["hT"], dXW, dh0)
        dHW, dstate = dXW, (dh0,)
        dW_hh = dXW.reshape(T * B, GH).T @ Hs2
    elif cell_name == "lstm":
        dc0 = np.empty((B, H), dt)
        k_bwd(d_out, np.ascontiguousarray(d_state[0]), np.ascontiguousarray(d_state[1]), W, m2, has_mask, reverse,
              c["Cs"], c["Gs"], c["cT"], dXW, dh0, dc0)
        dHW, dstate = dXW, (dh0, dc0)
        dW_hh = dXW.reshape(T * B, GH).T @ Hs2
    else:
        dHW = np.empty((T, B, GH), dt)
        k_bwd(d_out, np.ascontiguousarray(d_state[0]), W, m2, has_mask, reverse, c["after"], c["Hs"], c["Rs"], c["Zs"],
              c["Ns"], c["Es"], dXW, dHW, dh0)
        dstate = (dh0,)
        d2 = dHW.reshape(T * B, GH)
        if c["after"]:
            dW_hh = d2.T @ Hs2
        else:
            dW_hh = np.concatenate([d2[:, :2 * H].T @ Hs2, d2[:, 2 * H:].T @ c["Es"].reshape(T * B, H)], axis=0)
    db_hh = dHW.sum(axis=(0, 1)) if has_bias else None
    return dXW, dstate, dW_hh, db_hh, None, None


# ====================================================================== hybrid: BLAS product + fused gate kernel
# For large steps the recurrent product goes to BLAS (all threads) and one compiled kernel per step does all
# the gate math that the NumPy backend spreads over ~17 ufunc calls. Same caches as the whole-loop kernels.

@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def gru_gates_fwd(A, xw_t, b, has_b, m_t, has_mask, h, out_t, Hs_t, Rs_t, Zs_t, Ns_t, Es_t):
    """A (B, 3H): h W_hh^T on entry, xw_t (B, 3H): x W_ih^T + b_ih, b: b_hh (reset after). Writes the caches
    (h before the step, r, z, n and h W_hn^T + b_hn) and the new state (h, out_t; padded rows keep their state
    and output 0). 2-D indexing with unsigned offsets and one short loop per quantity (see lstm_gates_fwd):
    8 % faster than per-row views and one loop over all of them (64 rows, H = 512: 89 against 97 us)."""
    B, GH = A.shape
    H = uint64(GH // 3)
    H2 = uint64(2) * H
    for r in range(B):
        if has_b:
            for j in range(uint64(GH)):
                A[r, j] += b[j]
        for k in range(H):
            Rs_t[r, k] = sg(xw_t[r, k] + A[r, k])
        for k in range(H):
            Zs_t[r, k] = sg(xw_t[r, H + k] + A[r, H + k])
        for k in range(H):
            Es_t[r, k] = A[r, H2 + k]
        for k in range(H):
            Ns_t[r, k] = th(xw_t[r, H2 + k] + Rs_t[r, k] * Es_t[r, k])
        for k in range(H):
            Hs_t[r, k] = h[r, k]
        if (m_t[r] if has_mask else 1.0) != 0.0:
            for k in range(H):
                n = Ns_t[r, k]
                hn = n + Zs_t[r, k] * (Hs_t[r, k] - n)
                h[r, k] = hn
                out_t[r, k] = hn
        else:
            for k in range(H):
                out_t[r, k] = 0.0


@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def gru_gates_bwd(dh, d_out_t, m_t, has_mask, Hs_t, Rs_t, Zs_t, Ns_t, Es_t, DX, DHW, dh_part):
    B, GH = DX.shape
    H = GH // 3
    for r in range(B):
        m = m_t[r] if has_mask else 1.0
        dx, dhw, dp, dhr = DX[r], DHW[r], dh_part[r], dh[r]
        if m == 0.0:
            for j in range(GH):
                dx[j] = 0.0
                dhw[j] = 0.0
            for k in range(H):
                dp[k] = dhr[k]                          # padded: the state gradient passes unchanged
            continue
        dxr, dxz, dxn = dx[:H], dx[H:2 * H], dx[2 * H:]
        dwr, dwz, dwn = dhw[:H], dhw[H:2 * H], dhw[2 * H:]
        dor, hs, rs, zs, ns, es = d_out_t[r], Hs_t[r], Rs_t[r], Zs_t[r], Ns_t[r], Es_t[r]
        for k in range(H):
            g = dhr[k] + dor[k]
            z = zs[k]
            n = ns[k]
            rr = rs[k]
            dn = g * (1.0 - z) * (1.0 - n * n)
            dr = dn * es[k] * rr * (1.0 - rr)
            dz = g * (hs[k] - n) * z * (1.0 - z)
            dxr[k] = dr
            dxz[k] = dz
            dxn[k] = dn
            dwr[k] = dr
            dwz[k] = dz
            dwn[k] = dn * rr
            dp[k] = g * z


@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def rnn_act_fwd(A, xw_t, b, has_b, m_t, has_mask, act, h, out_t, Hs_t):
    B, H = A.shape
    for r in range(B):                                  # zero-based row views: see lstm_gates_fwd
        a, hr, o_, hs = A[r], h[r], out_t[r], Hs_t[r]
        for k in range(H):
            hs[k] = hr[k]
        if xw_t is None:                                # A holds x W_ih^T already (see lstm_gates_fwd)
            if has_b:
                for k in range(H):
                    a[k] += b[k]
        elif has_b:
            x = xw_t[r]
            for k in range(H):
                a[k] += x[k] + b[k]
        else:
            x = xw_t[r]
            for k in range(H):
                a[k] += x[k]
        if act == 0:
            for k in range(H):
                a[k] = th(a[k])
        elif act == 1:
            for k in range(H):
                a[k] = 0.0 if a[k] <= 0.0 else a[k]     # NaN <= 0 is false: NaN passes
        if (m_t[r] if has_mask else 1.0) != 0.0:
            for k in range(H):
                hr[k] = a[k]
                o_[k] = a[k]
        else:
            for k in range(H):
                o_[k] = 0.0


@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def rnn_act_bwd(dh, d_out_t, m_t, has_mask, act, h_t, DA):
    """DA = dL/dA of a step from the state after it, h_t (the derivative of the activation is a function of
    its value); padded rows get 0."""
    B, H = DA.shape
    for r in range(B):
        da = DA[r]
        if (m_t[r] if has_mask else 1.0) == 0.0:
            for k in range(H):
                da[k] = 0.0
            continue
        dhr, dor, hr = dh[r], d_out_t[r], h_t[r]
        if act == 0:
            for k in range(H):
                da[k] = (dhr[k] + dor[k]) * (1.0 - hr[k] * hr[k])
        elif act == 1:
            for k in range(H):
                da[k] = (dhr[k] + dor[k]) if hr[k] > 0.0 else 0.0
        else:
            for k in range(H):
                da[k] = dhr[k] + dor[k]


def _prepare(xw, state0, W_hh, b_hh, mask, alloc=np.empty):
    """What the hybrid scan needs: contiguous inputs, the (T, B) mask (or a dummy), the bias (or a dummy),
    W_hh^T and empty (T, B, H) buffers for the output and the previous states."""
    T, B, _ = xw.shape
    H = state0[0].shape[-1]
    dt = xw.dtype
    m2, has_mask = mask_rows(mask, T, dt)
    has_b = b_hh is not None
    b = b_hh if has_b else np.empty(1, dt)
    return (np.ascontiguousarray(xw), m2, has_mask, b, has_b, np.ascontiguousarray(W_hh.T),
            np.empty((T, B, H), dt), alloc((T, B, H), dt))


def hybrid_forward(cell_name, xw, state0, W_hh, b_hh, mask=None, reverse=False, opts=None, keep=True,
                   alloc=np.empty):
    """RNN, LSTM and GRU (reset='after'): BLAS for h W_hh^T, one compiled gate kernel per step. ``keep=False``
    (inference): one reused row of caches instead of T, and no cache is returned."""
    T, B, GH = xw.shape
    H = state0[0].shape[-1]
    dt = xw.dtype
    xw, m2, has_mask, b, has_b, WT, out, Hs = _prepare(xw, state0, W_hh, b_hh, mask, alloc if keep else np.empty)
    h = np.array(state0[0], dtype=dt, order="C")
    order = [(t, t if keep else 0) for t in (range(T - 1, -1, -1) if reverse else range(T))]   # (step, cache row)
    Tc = T if keep else 1
    if not keep:
        Hs = Hs[:1]
    if cell_name == "rnn":
        act = _ACT[(opts or {}).get("nonlinearity", "tanh")]
        for t, ct in order:
            A = h @ WT                                                       # (B, H), BLAS
            rnn_act_fwd(A, xw[t], b, has_b, m2[t], has_mask, act, h, out[t], Hs[ct])
        return out, (h,), ("numba", "rnn", {"Hs": Hs, "hT": h.copy(), "act": act, "hybrid": True}, mask, reverse)
    if cell_name == "lstm":
        c = np.array(state0[1], dtype=dt, order="C")
        Cs, Gs = alloc((Tc, B, H), dt), alloc((Tc, B, GH), dt)
        S = gate_scales(GH, out)
        for t, ct in order:
            A = h @ WT                                                       # (B, 4H), BLAS
            lstm_gates_fwd(A, xw[t], b, has_b, m2[t], has_mask, h, c, out[t], Hs[ct], Cs[ct], Gs[ct], keep, S)
        return out, (h, c), ("numba", "lstm", {"Hs": Hs, "Cs": Cs, "Gs": Gs, "cT": c.copy(), "hybrid": True}, mask,
                             reverse)
    Rs, Zs, Ns, Es = (alloc((Tc, B, H), dt) for _ in range(4))
    for t, ct in order:
        A = h @ WT                                                           # (B, 3H), BLAS
        gru_gates_fwd(A, xw[t], b, has_b, m2[t], has_mask, h, out[t], Hs[ct], Rs[ct], Zs[ct], Ns[ct], Es[ct])
    return out, (h,), ("numba", "gru", {"Hs": Hs, "Rs": Rs, "Zs": Zs, "Ns": Ns, "Es": Es, "after": True,
                                        "hybrid": True}, mask, reverse)


def _carry_dh(dh_new, dh, m_t, has_mask):
    """The state gradient after one step back: the new one on valid rows, unchanged on padded rows."""
    return dh_new if not has_mask else np.where(m_t[:, None] != 0, dh_new, dh)


def hybrid_backward(d_out, d_state, cache, W_hh, has_bias=True):
    _, cell_name, c, mask, reverse = cache
    T, B, H = d_out.shape
    GH = W_hh.shape[0]
    dt = d_out.dtype
    m2, has_mask = mask_rows(mask, T, dt)
    d_out = np.ascontiguousarray(d_out)
    dXW = np.empty((T, B, GH), dt)
    dh = np.array(d_state[0], dtype=dt, order="C")
    order = range(T) if reverse else range(T - 1, -1, -1)
    Hs2 = c["Hs"].reshape(T * B, H)
    if cell_name == "rnn":
        for t in order:
            rnn_act_bwd(dh, d_out[t], m2[t], has_mask, c["act"], _state_after(c["Hs"], c["hT"], t, reverse), dXW[t])
            dh = _carry_dh(dXW[t] @ W_hh, dh, m2[t], has_mask)               # (B, H), BLAS
        dHW, dstate = dXW, (dh,)
    elif cell_name == "lstm":
        dc = np.array(d_state[1], dtype=dt, order="C")
        for t in order:
            lstm_gates_bwd(dh, dc, d_out[t], m2[t], has_mask, c["Cs"][t], c["Gs"][t],
                           _state_after(c["Cs"], c["cT"], t, reverse), dXW[t])
            dh = _carry_dh(dXW[t] @ W_hh, dh, m2[t], has_mask)               # (B, H), BLAS
        dHW, dstate = dXW, (dh, dc)
    else:
        dHW = np.empty((T, B, GH), dt)
        dh_part = np.empty((B, H), dt)
        for t in order:
            gru_gates_bwd(dh, d_out[t], m2[t], has_mask, c["Hs"][t], c["Rs"][t], c["Zs"][t], c["Ns"][t], c["Es"][t],
                          dXW[t], dHW[t], dh_part)
            dh = dh_part + dHW[t] @ W_hh
        dstate = (dh,)
    dW_hh = dHW.reshape(T * B, GH).T @ Hs2
    db_hh = dHW.sum(axis=(0, 1)) if has_bias else None
    return dXW, dstate, dW_hh, db_hh
