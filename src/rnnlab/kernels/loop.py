"""backend="loop": the whole time loop compiled, one thread, for the shapes where per-call overhead dominates.

Per step and batch row, the recurrent product is a one-row product with its accumulators in registers
(``packed_gemm.vecmat_acc``); then the cell's gate kernel (``kernels.gates``) runs over the step's rows. The
input projection x_t W_ih^T runs inside the loop too, one packed product per block of ``PROJ_ROWS`` rows of
steps (``_project_chunk``), so no (T, B, G*H) array is written before the loop and read back. The weight
gradients are BLAS products after the loop. No Python runs inside the time loop.

Contract (as every backend): ``forward(...) -> (output, final state, arrays)``, ``backward(...) -> Grads``.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..caches import GRUArrays, LSTMArrays, RNNArrays
from .gates import (
    ACT, FAST, bias_rows, gate_scales, gru_n_fwd, gru_r_bwd, gru_rz_fwd, gru_zn_bwd, lstm_gates_bwd, lstm_row_fwd,
    mask_rows, rnn_act_bwd, rnn_act_fwd, state_after,
)
from .packed_gemm import MR_MAX, pack, pgemm, vecmat_acc
from .weight_grads import weight_grads

PROJ_ROWS = 128      # rows (steps x batch rows) of x W_ih^T computed at once inside the loop


@njit(cache=True, fastmath=FAST, error_model="numpy")
def _project_chunk(XW, x2, s, T, B, reverse, Pih, bx, has_bx, tile):
    """x_t W_ih^T (+ b_ih) of the scan's steps s .. s+n-1 (n = XW rows / B), from x2 (T*B, I), into XW
    (n*B, G*H). Returns ta, the first time index of the block (step t's rows are XW[(t - ta)*B :])."""
    n = min(XW.shape[0] // B, T - s)
    ta = T - s - n if reverse else s
    rows = XW[:n * B]
    if has_bx:
        for r in range(n * B):
            for j in range(XW.shape[1]):
                rows[r, j] = bx[j]
    pgemm(rows, x2[ta * B:(ta + n) * B], Pih, XW.shape[1], has_bx, tile)
    return ta


# ------------------------------------------------------------------ RNN
@njit(cache=True, fastmath=FAST, error_model="numpy")
def rnn_fwd(x2, Pih, XW, h0, WT, b, has_b, mask, has_mask, reverse, act, out, Hs, hT):
    T, B, H = out.shape
    keep = Hs.shape[0] == T                         # caches for backward, or one reused row (inference)
    h = h0.copy()
    A = np.empty((B, H), out.dtype)
    tile = np.empty((MR_MAX, Pih.shape[2]), out.dtype)
    ta = 0
    nxt = 0                                         # the step that starts the next block of x W_ih^T
    for s in range(T):
        t = T - 1 - s if reverse else s
        if s == nxt:
            nxt += XW.shape[0] // B
            ta = _project_chunk(XW, x2, s, T, B, reverse, Pih, b, False, tile)
        for r in range(B):
            xr = (t - ta) * B + r
            for k in range(H):
                A[r, k] = XW[xr, k]
            vecmat_acc(A, r, h, r, WT)              # + h W_hh^T
        rnn_act_fwd(A, None, b, has_b, mask[t], has_mask, act, h, out[t], Hs[t if keep else 0])
    hT[:] = h


@njit(cache=True, fastmath=FAST, error_model="numpy")
def rnn_bwd(d_out, dhT, W, mask, has_mask, reverse, act, Hs, hT, dXW, dh0):
    T, B, H = d_out.shape
    dh = dhT.copy()
    for s in range(T):
        t = s if reverse else T - 1 - s
        rnn_act_bwd(dh, d_out[t], mask[t], has_mask, act, state_after(Hs, hT, t, reverse), dXW[t])
        for r in range(B):
            if has_mask and mask[t, r] == 0.0:
                continue                            # padded: the state gradient passes unchanged
            for k in range(H):
                dh[r, k] = 0.0
            vecmat_acc(dh, r, dXW[t], r, W)         # dh_{t-1} = dA W_hh
    dh0[:] = dh


# ------------------------------------------------------------------ LSTM
@njit(cache=True, fastmath=FAST, error_model="numpy")
def lstm_fwd(x2, Pih, XW, h0, WT, b, has_b, mask, reverse, out, Hs, Cs, Gs, hT, cT, c0):
    """Hs, Cs (T, B, H), Gs (T, B, 4H): the caches; or Hs = Cs = None (inference) and Gs (B, 4H) scratch.
    mask None: no padded rows. ``is None`` on an argument is pruned at compile time, so the inference loop
    carries no cache or mask code."""
    T, B, H = out.shape
    GH = WT.shape[1]
    h = h0.copy()
    c = c0.copy()
    S = gate_scales(GH, out)
    out2, Gs2 = out.reshape(T * B, H), Gs.reshape(-1, GH)
    tile = np.empty((MR_MAX, Pih.shape[2]), out.dtype)
    ta = 0
    nxt = 0
    for s in range(T):
        t = T - 1 - s if reverse else s
        if s == nxt:
            nxt += XW.shape[0] // B
            ta = _project_chunk(XW, x2, s, T, B, reverse, Pih, b, False, tile)
        for r in range(B):
            xr = (t - ta) * B + r                   # x_t W_ih^T of row r in XW, then + h W_hh^T
            vecmat_acc(XW, xr, h, r, WT)
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
        lstm_gates_bwd(dh, dc, d_out[t], mask[t], has_mask, Cs[t], Gs[t], state_after(Cs, cT, t, reverse), dXW[t])
        for r in range(B):
            if has_mask and mask[t, r] == 0.0:
                continue
            for k in range(H):
                dh[r, k] = 0.0
            vecmat_acc(dh, r, dXW[t], r, W)
    dh0[:] = dh
    dc0[:] = dc


# ------------------------------------------------------------------ GRU
@njit(cache=True, fastmath=FAST, error_model="numpy")
def gru_fwd(x2, Pih, bx, has_bx, XW, h0, WT, b, has_b, mask, has_mask, reverse, after, out, Hs, Rs, Zs, Ns, Es,
            hT):
    """after: A = h W_hh^T + b_hh in one product per row; before: the r, z blocks from h, then the n block
    from r h (``kernels.gates.gru_rz_fwd`` leaves r h in Es)."""
    T, B, H = out.shape
    GH = WT.shape[1]
    keep = Hs.shape[0] == T
    h = h0.copy()
    A = np.empty((B, GH), out.dtype)
    n_rz = GH if after else 2 * H                   # columns of the first product
    WT_rz, WT_n = WT[:, :n_rz], WT[:, 2 * H:]
    A_rz, A_n = A[:, :n_rz], A[:, 2 * H:]
    tile = np.empty((MR_MAX, Pih.shape[2]), out.dtype)
    ta = 0
    nxt = 0
    for s in range(T):
        t = T - 1 - s if reverse else s
        ct = t if keep else 0
        if s == nxt:
            nxt += XW.shape[0] // B
            ta = _project_chunk(XW, x2, s, T, B, reverse, Pih, bx, has_bx, tile)
        xw_t = XW[(t - ta) * B:(t - ta + 1) * B]
        for r in range(B):
            for j in range(n_rz):
                A[r, j] = b[j] if has_b else 0.0
            vecmat_acc(A_rz, r, h, r, WT_rz)
        gru_rz_fwd(A, xw_t, after, h, Hs[ct], Rs[ct], Zs[ct], Es[ct])
        if not after:
            for r in range(B):
                for k in range(H):
                    A_n[r, k] = b[2 * H + k] if has_b else 0.0
                vecmat_acc(A_n, r, Es[ct], r, WT_n)  # (r h) W_hn^T + b_hn
        gru_n_fwd(A, xw_t, mask[t], has_mask, after, h, out[t], Rs[ct], Zs[ct], Ns[ct], Es[ct])
    hT[:] = h


@njit(cache=True, fastmath=FAST, error_model="numpy")
def gru_bwd(d_out, dhT, W, mask, has_mask, reverse, after, Hs, Rs, Zs, Ns, Es, dXW, dHW, dh0):
    T, B, GH = dXW.shape
    H = GH // 3
    dh = dhT.copy()
    dh_part = np.empty_like(dh)
    DRH = np.zeros_like(dh)                         # before: dL/d(r h) of a step
    n_rec = GH if after else 2 * H                  # blocks of W_hh that multiply h itself
    W_rec, W_n = W[:n_rec], W[2 * H:]
    for s in range(T):
        t = s if reverse else T - 1 - s
        gru_zn_bwd(dh, d_out[t], mask[t], has_mask, Hs[t], Zs[t], Ns[t], dXW[t], dh_part)
        if not after:
            dxn = dXW[t, :, 2 * H:]
            for r in range(B):
                for k in range(H):
                    DRH[r, k] = 0.0
                vecmat_acc(DRH, r, dxn, r, W_n)     # dL/d(r h) = dn W_hn
        gru_r_bwd(dXW[t], dHW[t], after, Hs[t], Rs[t], Es[t], DRH, dh_part)
        dhw_rec = dHW[t, :, :n_rec]
        for r in range(B):
            for k in range(H):
                dh[r, k] = dh_part[r, k]
            if has_mask and mask[t, r] == 0.0:
                continue
            vecmat_acc(dh, r, dhw_rec, r, W_rec)    # + dA W_hh (before: the r, z blocks)
    dh0[:] = dh


# ------------------------------------------------------------------ the contract
def forward(cell_name, x, W_ih, W_hh, b_ih, b_hh, state0, mask, reverse, opts, keep, alloc):
    """x (T, B, I) -> (output (T, B, H), final state, arrays or None). keep=False (inference): the caches go
    to one reused row instead of T rows. alloc(shape, dtype) gives the cache arrays."""
    T, B, I = x.shape
    GH, H = W_hh.shape
    dt = x.dtype
    m2, has_mask = mask_rows(mask, T, dt)
    b, has_b, bx, has_bx = bias_rows(cell_name, b_ih, b_hh, dt)
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
        act = ACT[opts.get("nonlinearity", "tanh")]
        rnn_fwd(x2, Pih, XW, h0, WT, b, has_b, m2, has_mask, reverse, act, out, Hs, hT)
        return out, (hT,), RNNArrays(Hs, hT.copy(), act) if keep else None
    if cell_name == "lstm":
        cT = np.empty((B, H), dt)
        c0 = np.ascontiguousarray(state0[1])
        m = m2 if has_mask else None
        if not keep:                                            # no caches: a (B, 4H) row for the gates
            lstm_fwd(x2, Pih, XW, h0, WT, b, has_b, m, reverse, out, None, None, np.empty((B, GH), dt), hT, cT, c0)
            return out, (hT, cT), None
        Cs, Gs = cache((T, B, H), dt), cache((T, B, GH), dt)
        lstm_fwd(x2, Pih, XW, h0, WT, b, has_b, m, reverse, out, Hs, Cs, Gs, hT, cT, c0)
        return out, (hT, cT), LSTMArrays(Cs, Gs, cT.copy(), Hs=Hs)
    after = opts.get("reset", "after") == "after"
    Rs, Zs, Ns, Es = (cache((Tc, B, H), dt) for _ in range(4))
    gru_fwd(x2, Pih, bx, has_bx, XW, h0, WT, b, has_b, m2, has_mask, reverse, after, out, Hs, Rs, Zs, Ns, Es, hT)
    return out, (hT,), GRUArrays(Hs, Rs, Zs, Ns, Es, after) if keep else None


def backward(cell_name, d_out, d_state, cache, W_ih, W_hh, has_bias, workspace):
    """-> Grads from the forward's DirCache; workspace(shape, dtype) holds dL/dA."""
    c, x = cache.arrays, cache.x
    T, B, H = d_out.shape
    GH = W_hh.shape[0]
    dt = d_out.dtype
    m2, has_mask = mask_rows(cache.mask, T, dt)
    d_out = np.ascontiguousarray(d_out)
    W = np.ascontiguousarray(W_hh)
    dXW = workspace((T, B, GH), dt)
    dh0 = np.empty((B, H), dt)
    dh_T = np.ascontiguousarray(d_state[0])
    if cell_name == "rnn":
        rnn_bwd(d_out, dh_T, W, m2, has_mask, cache.reverse, c.act, c.Hs, c.hT, dXW, dh0)
        dHW, dstate0, H_op = dXW, (dh0,), c.Hs
    elif cell_name == "lstm":
        dc0 = np.empty((B, H), dt)
        lstm_bwd(d_out, dh_T, np.ascontiguousarray(d_state[1]), W, m2, has_mask, cache.reverse, c.Cs, c.Gs, c.cT,
                 dXW, dh0, dc0)
        dHW, dstate0, H_op = dXW, (dh0, dc0), c.Hs
    else:
        dHW = np.empty((T, B, GH), dt)
        gru_bwd(d_out, dh_T, W, m2, has_mask, cache.reverse, c.after, c.Hs, c.Rs, c.Zs, c.Ns, c.Es, dXW, dHW, dh0)
        dstate0, H_op = (dh0,), c.Hs
    return weight_grads(cell_name, dXW, dHW, x, H_op, c, W_ih, has_bias, dstate0, np.matmul)
