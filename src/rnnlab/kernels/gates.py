"""Each cell's gate math, compiled once: the kernels every compiled strategy (loop, hybrid, split) calls.

One step of a cell is a matrix product followed by elementwise gate math. The product differs by strategy
(the loop's one-row products, BLAS in the hybrid path, the split path's packed products); the gate math does
not, so it is written here once per cell, as in ``rnnlab.cells`` (the equations are in each cell module's
docstring, and ``tests/kernels/test_gates.py`` runs one step of every kernel here against its ``cells`` step):

    RNN    rnn_row_fwd / rnn_row_bwd             A = pre-activation -> h; dL/dh -> dL/dA
    LSTM   lstm_row_fwd / lstm_gates_bwd         A = [a_i a_f a_g a_o] -> gates, c, h; dL/dh, dL/dc -> dL/dA
    GRU    gru_row_rz, gru_row_n                 A = h W_hh^T (+ b_hh) -> r, z, then n and h; with
                                                 reset='before' the caller computes the n block of A from
                                                 (r h) between the two (``Es`` holds r h then)
           gru_row_zn_bwd, gru_row_r_bwd         dL/dh -> dL/d(x W_ih^T), dL/d(h W_hh^T); the same split

Each ``*_row_*`` kernel is one batch row; the others run it over a step's rows (``rnn_act_fwd``,
``lstm_gates_fwd``, ``gru_gates_fwd`` ...), which is what the hybrid and split paths call. The loop path calls
the row kernels directly with row indices into whole arrays.

Conventions: ``A`` is (B, G*H), one row per batch row; a padded row (mask 0) keeps its state, gets output 0
and gradient 0. An absent bias or mask is an empty placeholder with a flag (``has_b``, ``has_mask``): one
compiled specialisation serves every case (``None`` would compile one per combination of absent inputs).

float64 uses libm's ``tanh`` (exact to round-off, as the reference); float32 a rational tanh (Eigen's
``generic_fast_tanh_float`` coefficients, clamped at |x| = 7.99) that vectorises, max error 5e-7 (tested);
``sigmoid(x) = 0.5 tanh(x / 2) + 0.5`` in both.

Indexing: gate blocks are read as A[r, H2 + k] with unsigned offsets (a signed 2 * H + k keeps Numba's
negative-index check, which blocks vectorisation), and rows of whole 2-D arrays rather than per-row views
where the loop is hot (each view is two atomic reference-count updates). The kernels are inlined into their
callers (``inline="always"``): a call per step with a dozen array arguments is measurable at B = 1.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, types, uint64
from numba.extending import overload

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


# ------------------------------------------------------------------ RNN
@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def rnn_row_fwd(A, ra, b, has_b, act, h, r, O, ro, valid):
    """One batch row: act(A[ra] + b) (A[ra]: the pre-activation without b); on a valid row h[r] and O[ro] get
    it, on a padded row O[ro] = 0 and h[r] stays. act: 0 tanh, 1 relu, 2 identity. One pass over the row (the
    branches are loop-invariant: LLVM unswitches them)."""
    H = A.shape[1]
    for k in range(H):
        v = A[ra, k] + b[k] if has_b else A[ra, k]
        if act == 0:
            v = th(v)
        elif act == 1:
            v = 0.0 if v <= 0.0 else v                      # NaN <= 0 is false: NaN passes
        if valid:
            h[r, k] = v
            O[ro, k] = v
        else:
            O[ro, k] = 0.0


@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def rnn_row_bwd(dh, r, d_out, ro, act, h_t, rh, DA, rd):
    """One batch row of a valid step: DA[rd] = dL/dA from g = dh[r] + d_out[ro] and the state after the step,
    h_t[rh] (the activation's derivative is a function of its value)."""
    H = DA.shape[1]
    if act == 0:
        for k in range(H):
            hk = h_t[rh, k]
            DA[rd, k] = (dh[r, k] + d_out[ro, k]) * (1.0 - hk * hk)
    elif act == 1:
        for k in range(H):
            DA[rd, k] = (dh[r, k] + d_out[ro, k]) if h_t[rh, k] > 0.0 else 0.0
    else:
        for k in range(H):
            DA[rd, k] = dh[r, k] + d_out[ro, k]


@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def rnn_act_fwd(A, xw_t, b, has_b, m_t, has_mask, act, h, out_t, Hs_t):
    """All rows of a step: h = act(A + xw_t + b) on valid rows (out_t = h; padded rows: out_t = 0, h kept);
    Hs_t = h before the step. xw_t None: A holds x W_ih^T already."""
    B, H = A.shape
    for r in range(B):
        for k in range(H):
            Hs_t[r, k] = h[r, k]
        if xw_t is not None:
            for k in range(H):
                A[r, k] += xw_t[r, k]
        rnn_row_fwd(A, r, b, has_b, act, h, r, out_t, r, (m_t[r] if has_mask else 1.0) != 0.0)


@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def rnn_act_bwd(dh, d_out_t, m_t, has_mask, act, h_t, DA):
    """All rows of a step: DA = dL/dA from the state after it, h_t; padded rows get 0."""
    B, H = DA.shape
    for r in range(B):
        if (m_t[r] if has_mask else 1.0) == 0.0:
            for k in range(H):
                DA[r, k] = 0.0
        else:
            rnn_row_bwd(dh, r, d_out_t, r, act, h_t, r, DA, r)


# ------------------------------------------------------------------ LSTM (gates i f g o)
@njit(cache=True)
def gate_scales(GH, like):
    """S (2, 4H): the LSTM's gates as one formula, S[0] tanh(S[0] a) + S[1]: (0.5, 0.5) for the sigmoid gates
    i, f, o (sigmoid(a) = 0.5 tanh(a / 2) + 0.5), (1, 0) for g: one vectorised loop over all 4H gates."""
    S = np.empty((2, GH), like.dtype)                 # like: an array of the dtype wanted
    H = GH // 4
    for j in range(GH):
        tanh_gate = 2 * H <= j < 3 * H
        S[0, j] = 1.0 if tanh_gate else 0.5
        S[1, j] = 0.0 if tanh_gate else 0.5
    return S


@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def lstm_row_fwd(A, ra, b, has_b, S, G, rg, c, h, r, O, ro):
    """One batch row: G[rg] = the gates of A[ra] (+ b), then c[r], h[r] and O[ro] = h."""
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
    """A (B, 4H): h W_hh^T on entry; with xw_t (x W_ih^T) and b added, writes the gates (Gs_t) and the new
    states (h, c, out_t). keep: also cache h and c before the step (Hs_t, Cs_t; Hs_t None: h is cached
    elsewhere). xw_t None: A holds x W_ih^T already."""
    B, GH = A.shape
    H = uint64(GH // 4)
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
    """One step back. Cs_t: the cell state before the step, Cn_t: after it (tanh(c_t) is recomputed from it:
    one (T, B, H) cache less for a transcendental per unit). Writes dL/dA (DA) and the cell-state gradient
    carried back (dc); padded rows: DA = 0, dc unchanged."""
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


# ------------------------------------------------------------------ GRU (gates r z n)
# The row kernels take a row index per array (A's row ra, X's rx, the state's r, the output's ro, the caches'
# rc ...), so the loop path passes whole (T*B, H) arrays and no per-step views.
@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def gru_row_rz(A, ra, X, rx, h, r, Hs, Rs, Zs, Es, rc, after):
    """One batch row: r, z from the r and z blocks of A (h W_hh^T + b_hh) and X (x W_ih^T + b_ih); Hs = h
    before the step; reset='before' (not after): Es = r h, the operand of the n block's product."""
    H = uint64(h.shape[1])
    for k in range(H):
        Hs[rc, k] = h[r, k]
    for k in range(H):
        Rs[rc, k] = sg(X[rx, k] + A[ra, k])
    for k in range(H):
        Zs[rc, k] = sg(X[rx, H + k] + A[ra, H + k])
    if not after:
        for k in range(H):
            Es[rc, k] = Rs[rc, k] * h[r, k]


@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def gru_row_n(A, ra, X, rx, h, r, O, ro, Rs, Zs, Ns, Es, rc, valid, after):
    """One batch row: n and the new state from the n block of A: h W_hn^T + b_hn (after; cached in Es for
    dr) or (r h) W_hn^T + b_hn (before). A padded row keeps its state and gets output 0."""
    H = uint64(h.shape[1])
    H2 = uint64(2) * H
    if after:
        for k in range(H):
            Es[rc, k] = A[ra, H2 + k]
        for k in range(H):
            Ns[rc, k] = th(X[rx, H2 + k] + Rs[rc, k] * A[ra, H2 + k])
    else:
        for k in range(H):
            Ns[rc, k] = th(X[rx, H2 + k] + A[ra, H2 + k])
    if valid:
        for k in range(H):
            n = Ns[rc, k]
            hn = n + Zs[rc, k] * (h[r, k] - n)              # (1 - z) n + z h
            h[r, k] = hn
            O[ro, k] = hn
    else:
        for k in range(H):
            O[ro, k] = 0.0


@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def gru_row_zn_bwd(dh, r, D_out, ro, Hs, Zs, Ns, rc, DX, rd, dh_part, valid):
    """One batch row: the z and n blocks of DX = dL/d(x W_ih^T) and the direct part of dL/dh_{t-1},
    dh_part = g z (g = dL/dh_t). A padded row: DX = 0 and dh_part = dh (the gradient passes unchanged)."""
    H = uint64(dh.shape[1])
    H2 = uint64(2) * H
    if not valid:
        for j in range(uint64(DX.shape[1])):
            DX[rd, j] = 0.0
        for k in range(H):
            dh_part[r, k] = dh[r, k]
        return
    for k in range(H):
        g = dh[r, k] + D_out[ro, k]
        z = Zs[rc, k]
        n = Ns[rc, k]
        DX[rd, H + k] = g * (Hs[rc, k] - n) * z * (1.0 - z)
        DX[rd, H2 + k] = g * (1.0 - z) * (1.0 - n * n)
        dh_part[r, k] = g * z


@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def gru_row_r_bwd(DX, rd, DHW, rw, Hs, Rs, Es, rc, DRH, dh_part, r, after):
    """One batch row: the r block of DX and DHW = dL/d(h W_hh^T) (before: dL/d([h | r h] W_hh^T)). after:
    dr = dn (h W_hn^T + b_hn) r (1 - r), DHW = [dr dz dn*r]. before: DRH[r] = dL/d(r h) = dn W_hn on entry,
    dr = DRH h r (1 - r), dh_part += DRH r, DHW = DX. A padded row has DX = 0, so DHW = 0, dh_part unchanged."""
    H = uint64(Hs.shape[1])
    H2 = uint64(2) * H
    if after:
        for k in range(H):
            rr = Rs[rc, k]
            dr = DX[rd, H2 + k] * Es[rc, k] * rr * (1.0 - rr)
            DX[rd, k] = dr
            DHW[rw, k] = dr
            DHW[rw, H + k] = DX[rd, H + k]
            DHW[rw, H2 + k] = DX[rd, H2 + k] * rr
    else:
        for k in range(H):
            rr = Rs[rc, k]
            DX[rd, k] = DRH[r, k] * Hs[rc, k] * rr * (1.0 - rr)
            dh_part[r, k] += DRH[r, k] * rr
        for j in range(uint64(DX.shape[1])):
            DHW[rw, j] = DX[rd, j]


@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def gru_rz_fwd(A, xw_t, after, h, Hs_t, Rs_t, Zs_t, Es_t):
    """``gru_row_rz`` over a step's rows (the reset-before GRU needs every row's r h before its n product)."""
    for r in range(A.shape[0]):
        gru_row_rz(A, r, xw_t, r, h, r, Hs_t, Rs_t, Zs_t, Es_t, r, after)


@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def gru_n_fwd(A, xw_t, m_t, has_mask, after, h, out_t, Rs_t, Zs_t, Ns_t, Es_t):
    """``gru_row_n`` over a step's rows."""
    for r in range(A.shape[0]):
        gru_row_n(A, r, xw_t, r, h, r, out_t, r, Rs_t, Zs_t, Ns_t, Es_t, r, (m_t[r] if has_mask else 1.0) != 0.0,
                  after)


@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def gru_gates_fwd(A, xw_t, b, has_b, m_t, has_mask, h, out_t, Hs_t, Rs_t, Zs_t, Ns_t, Es_t):
    """reset='after', row by row (each row's gates while they are in cache): A (B, 3H) = h W_hh^T on entry,
    b = b_hh."""
    for r in range(A.shape[0]):
        if has_b:
            for j in range(uint64(A.shape[1])):
                A[r, j] += b[j]
        gru_row_rz(A, r, xw_t, r, h, r, Hs_t, Rs_t, Zs_t, Es_t, r, True)
        gru_row_n(A, r, xw_t, r, h, r, out_t, r, Rs_t, Zs_t, Ns_t, Es_t, r, (m_t[r] if has_mask else 1.0) != 0.0,
                  True)


@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def gru_zn_bwd(dh, d_out_t, m_t, has_mask, Hs_t, Zs_t, Ns_t, DX, dh_part):
    """``gru_row_zn_bwd`` over a step's rows (the reset-before GRU needs every row's dn before its product)."""
    for r in range(DX.shape[0]):
        gru_row_zn_bwd(dh, r, d_out_t, r, Hs_t, Zs_t, Ns_t, r, DX, r, dh_part, (m_t[r] if has_mask else 1.0) != 0.0)


@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def gru_r_bwd(DX, DHW, after, Hs_t, Rs_t, Es_t, DRH, dh_part):
    """``gru_row_r_bwd`` over a step's rows."""
    for r in range(DX.shape[0]):
        gru_row_r_bwd(DX, r, DHW, r, Hs_t, Rs_t, Es_t, r, DRH, dh_part, r, after)


@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def gru_gates_bwd(dh, d_out_t, m_t, has_mask, Hs_t, Rs_t, Zs_t, Ns_t, Es_t, DX, DHW, dh_part):
    """reset='after', row by row: then dL/dh_{t-1} = dh_part + DHW W_hh."""
    for r in range(DX.shape[0]):
        gru_row_zn_bwd(dh, r, d_out_t, r, Hs_t, Zs_t, Ns_t, r, DX, r, dh_part, (m_t[r] if has_mask else 1.0) != 0.0)
        gru_row_r_bwd(DX, r, DHW, r, Hs_t, Rs_t, Es_t, r, dh_part, dh_part, r, True)


# ------------------------------------------------------------------ shared helpers
@njit(cache=True, error_model="numpy")
def state_after(Cs, cT, t, reverse):
    """A state after step t (the LSTM's c, the RNN's h): the cached state before the next step in scan order,
    or the final state."""
    n = t - 1 if reverse else t + 1
    return cT if n < 0 or n >= Cs.shape[0] else Cs[n]


def bias_rows(cell_name, b_ih, b_hh, dt):
    """(b, has_b, bx, has_bx): the biases as the kernels take them. The LSTM and the RNN add b_ih and b_hh
    (b_ih joins b: one bias pass less); the GRU keeps b_ih (bx) apart for its n gate."""
    has_b, has_bx = b_hh is not None, b_ih is not None
    if has_bx and cell_name != "gru":
        b_hh, has_b, has_bx = (b_ih if b_hh is None else b_hh + b_ih), True, False
    return (b_hh if has_b else np.empty(1, dt)), has_b, (b_ih if has_bx else np.empty(1, dt)), has_bx


def mask_rows(mask, T, dt):
    """(m2, has_mask): the (T, B) mask the kernels read (the (T, B, 1) mask's last axis dropped), or an empty
    placeholder and False."""
    if mask is None:
        return np.empty((T, 1), dt), False
    return np.ascontiguousarray(mask[..., 0]), True
