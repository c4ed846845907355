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

from ..caches import GRUArrays, LSTMArrays, RNNArrays, VariantArrays
from . import variants
from .gates import (
    ACT, FAST, bias_rows, gate_scales, gru_row_n, gru_row_r_bwd, gru_row_rz, gru_row_zn_bwd, lstm_gates_bwd,
    lstm_row_fwd, mask_rows, rnn_row_bwd, rnn_row_fwd, state_after,
)
from .packed_gemm import MR_MAX, pack, pgemm, token, vecmat_acc
from .weight_grads import weight_grads

PROJ_ROWS = 128      # rows (steps x batch rows) of x W_ih^T computed at once inside the loop


@njit(cache=True, fastmath=FAST, error_model="numpy")
def _project_chunk(XW, x2, s, T, B, reverse, Pih, bx, has_bx, tile, tok):
    """x_t W_ih^T (+ b_ih) of the scan's steps s .. s+n-1 (n = XW rows / B), from x2 (T*B, I), into XW
    (n*B, G*H). Returns ta, the first time index of the block (step t's rows are XW[(t - ta)*B :])."""
    n = min(XW.shape[0] // B, T - s)
    ta = T - s - n if reverse else s
    rows = XW[:n * B]
    if has_bx:
        for r in range(n * B):
            for j in range(XW.shape[1]):
                rows[r, j] = bx[j]
    pgemm(rows, x2[ta * B:(ta + n) * B], Pih, XW.shape[1], has_bx, tile, tok)
    return ta


# ------------------------------------------------------------------ RNN
@njit(cache=True, fastmath=FAST, error_model="numpy")
def rnn_fwd(x2, Pih, XW, h0, WT, b, has_b, mask, has_mask, reverse, act, out, Hs, hT, tok):
    T, B, H = out.shape
    keep = Hs.shape[0] == T                         # caches for backward, or one reused row (inference)
    h = h0.copy()
    out2, Hs2 = out.reshape(T * B, H), Hs.reshape(-1, H)
    tile = np.empty((MR_MAX, Pih.shape[2]), out.dtype)
    ta = 0
    nxt = 0                                         # the step that starts the next block of x W_ih^T
    for s in range(T):
        t = T - 1 - s if reverse else s
        c0 = (t if keep else 0) * B                 # the step's first row in the caches
        if s == nxt:
            nxt += XW.shape[0] // B
            ta = _project_chunk(XW, x2, s, T, B, reverse, Pih, b, False, tile, tok)
        for r in range(B):
            xr = (t - ta) * B + r                   # x_t W_ih^T of row r in XW, then + h W_hh^T
            for k in range(H):
                Hs2[c0 + r, k] = h[r, k]
            vecmat_acc(XW, xr, h, r, WT, tok)
            rnn_row_fwd(XW, xr, b, has_b, act, h, r, out2, t * B + r, mask[t, r] != 0.0 if has_mask else True)
    hT[:] = h


@njit(cache=True, fastmath=FAST, error_model="numpy")
def rnn_bwd(d_out, dhT, W, mask, has_mask, reverse, act, Hs, hT, dXW, dh0, tok):
    T, B, H = d_out.shape
    dh = dhT.copy()
    d_out2, dXW2 = d_out.reshape(T * B, H), dXW.reshape(T * B, H)
    for s in range(T):
        t = s if reverse else T - 1 - s
        h_t = state_after(Hs, hT, t, reverse)           # the state after step t (not the user's output array)
        for r in range(B):
            row = t * B + r
            if has_mask and mask[t, r] == 0.0:
                for k in range(H):
                    dXW2[row, k] = 0.0
                continue                            # padded: the state gradient passes unchanged
            rnn_row_bwd(dh, r, d_out2, row, act, h_t, r, dXW2, row)
            for k in range(H):
                dh[r, k] = 0.0
            vecmat_acc(dh, r, dXW2, row, W, tok)     # dh_{t-1} = dA W_hh
    dh0[:] = dh


# ------------------------------------------------------------------ LSTM
@njit(cache=True, fastmath=FAST, error_model="numpy")
def lstm_fwd(x2, Pih, XW, h0, WT, b, has_b, mask, reverse, out, Hs, Cs, Gs, hT, cT, c0, tok):
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
            ta = _project_chunk(XW, x2, s, T, B, reverse, Pih, b, False, tile, tok)
        for r in range(B):
            xr = (t - ta) * B + r                   # x_t W_ih^T of row r in XW, then + h W_hh^T
            vecmat_acc(XW, xr, h, r, WT, tok)
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
def lstm_bwd(d_out, dhT, dcT, W, mask, has_mask, reverse, Cs, Gs, cT, dXW, dh0, dc0, tok):
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
            vecmat_acc(dh, r, dXW[t], r, W, tok)
    dh0[:] = dh
    dc0[:] = dc


# ------------------------------------------------------------------ GRU
@njit(cache=True, fastmath=FAST, error_model="numpy")
def gru_fwd(x2, Pih, bx, has_bx, XW, h0, WT, b, has_b, mask, has_mask, reverse, after, out, Hs, Rs, Zs, Ns, Es,
            hT, tok):
    """after: A = h W_hh^T + b_hh in one product per row, then the row's gates; before: the r, z blocks from h
    for every row, then each row's n block from its r h (``kernels.gates.gru_row_rz`` leaves r h in Es)."""
    T, B, H = out.shape
    GH = WT.shape[1]
    keep = Hs.shape[0] == T
    h = h0.copy()
    A = np.empty((B, GH), out.dtype)
    n_rz = GH if after else 2 * H                   # columns of the first product
    WT_rz, WT_n = WT[:, :n_rz], WT[:, 2 * H:]
    A_rz, A_n = A[:, :n_rz], A[:, 2 * H:]
    out2 = out.reshape(T * B, H)
    Hs2, Rs2, Zs2, Ns2, Es2 = Hs.reshape(-1, H), Rs.reshape(-1, H), Zs.reshape(-1, H), Ns.reshape(-1, H), \
        Es.reshape(-1, H)
    tile = np.empty((MR_MAX, Pih.shape[2]), out.dtype)
    ta = 0
    nxt = 0
    for s in range(T):
        t = T - 1 - s if reverse else s
        c0 = (t if keep else 0) * B                 # the step's first row in the caches
        if s == nxt:
            nxt += XW.shape[0] // B
            ta = _project_chunk(XW, x2, s, T, B, reverse, Pih, bx, has_bx, tile, tok)
        x0 = (t - ta) * B                           # the step's first row in XW
        for r in range(B):
            for j in range(n_rz):
                A[r, j] = b[j] if has_b else 0.0
            vecmat_acc(A_rz, r, h, r, WT_rz, tok)
            gru_row_rz(A, r, XW, x0 + r, h, r, Hs2, Rs2, Zs2, Es2, c0 + r, after)
            if after:
                gru_row_n(A, r, XW, x0 + r, h, r, out2, t * B + r, Rs2, Zs2, Ns2, Es2, c0 + r,
                          mask[t, r] != 0.0 if has_mask else True, True)
        if not after:
            for r in range(B):
                for k in range(H):
                    A_n[r, k] = b[2 * H + k] if has_b else 0.0
                vecmat_acc(A_n, r, Es2, c0 + r, WT_n, tok)   # (r h) W_hn^T + b_hn
                gru_row_n(A, r, XW, x0 + r, h, r, out2, t * B + r, Rs2, Zs2, Ns2, Es2, c0 + r,
                          mask[t, r] != 0.0 if has_mask else True, False)
    hT[:] = h


@njit(cache=True, fastmath=FAST, error_model="numpy")
def gru_bwd(d_out, dhT, W, mask, has_mask, reverse, after, Hs, Rs, Zs, Ns, Es, dXW, dHW, dh0, tok):
    T, B, GH = dXW.shape
    H = GH // 3
    dh = dhT.copy()
    dh_part = np.empty_like(dh)
    DRH = np.zeros_like(dh)                         # before: dL/d(r h) of a row
    n_rec = GH if after else 2 * H                  # blocks of W_hh that multiply h itself
    W_rec, W_n = W[:n_rec], W[2 * H:]
    d_out2, dXW2, dHW2 = d_out.reshape(T * B, H), dXW.reshape(T * B, GH), dHW.reshape(T * B, GH)
    Hs2, Rs2, Zs2, Ns2, Es2 = Hs.reshape(-1, H), Rs.reshape(-1, H), Zs.reshape(-1, H), Ns.reshape(-1, H), \
        Es.reshape(-1, H)
    dXn2, dHrec2 = dXW2[:, 2 * H:], dHW2[:, :n_rec]
    for s in range(T):
        t = s if reverse else T - 1 - s
        for r in range(B):
            row = t * B + r
            valid = mask[t, r] != 0.0 if has_mask else True
            gru_row_zn_bwd(dh, r, d_out2, row, Hs2, Zs2, Ns2, row, dXW2, row, dh_part, valid)
            if not after:
                for k in range(H):
                    DRH[r, k] = 0.0
                vecmat_acc(DRH, r, dXn2, row, W_n, tok)      # dL/d(r h) = dn W_hn
            gru_row_r_bwd(dXW2, row, dHW2, row, Hs2, Rs2, Es2, row, DRH, dh_part, r, after)
            for k in range(H):
                dh[r, k] = dh_part[r, k]
            if valid:
                vecmat_acc(dh, r, dHrec2, row, W_rec, tok)   # + dA W_hh (before: the r, z blocks)
    dh0[:] = dh


# ------------------------------------------------------------------ the contract
def forward(cell_name, x, W_ih, W_hh, b_ih, b_hh, state0, mask, reverse, opts, keep, alloc, zoneout=None):
    """x (T, B, I) -> (output (T, B, H), final state, arrays or None). keep=False (inference): the caches go
    to one reused row instead of T rows. alloc(shape, dtype) gives the cache arrays. A call with recurrent
    dropout (opts["rec_mask"]), zoneout or layer norm (opts["ln"]) runs ``kernels.variants``'s loop."""
    if variants.serves(opts, zoneout):
        return variants.forward(cell_name, x, W_ih, W_hh, b_ih, b_hh, state0, mask, reverse, opts, keep, alloc,
                                zoneout)
    T, B, I = x.shape
    GH, H = W_hh.shape
    dt = x.dtype
    tok = token()
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
        rnn_fwd(x2, Pih, XW, h0, WT, b, has_b, m2, has_mask, reverse, act, out, Hs, hT, tok)
        return out, (hT,), RNNArrays(Hs, hT.copy(), act) if keep else None
    if cell_name == "lstm":
        cT = np.empty((B, H), dt)
        c0 = np.ascontiguousarray(state0[1])
        m = m2 if has_mask else None
        if not keep:                                            # no caches: a (B, 4H) row for the gates
            lstm_fwd(x2, Pih, XW, h0, WT, b, has_b, m, reverse, out, None, None, np.empty((B, GH), dt), hT, cT, c0, tok)
            return out, (hT, cT), None
        Cs, Gs = cache((T, B, H), dt), cache((T, B, GH), dt)
        lstm_fwd(x2, Pih, XW, h0, WT, b, has_b, m, reverse, out, Hs, Cs, Gs, hT, cT, c0, tok)
        return out, (hT, cT), LSTMArrays(Cs, Gs, cT.copy(), Hs=Hs)
    after = opts.get("reset", "after") == "after"
    Rs, Zs, Ns, Es = (cache((Tc, B, H), dt) for _ in range(4))
    gru_fwd(x2, Pih, bx, has_bx, XW, h0, WT, b, has_b, m2, has_mask, reverse, after, out, Hs, Rs, Zs, Ns, Es, hT,
            tok)
    return out, (hT,), GRUArrays(Hs, Rs, Zs, Ns, Es, after) if keep else None


def backward(cell_name, d_out, d_state, cache, W_ih, W_hh, has_bias, workspace):
    """-> Grads from the forward's DirCache; workspace(shape, dtype) holds dL/dA."""
    if isinstance(cache.arrays, VariantArrays):
        return variants.backward(cell_name, d_out, d_state, cache, W_ih, W_hh, has_bias, workspace)
    c, x = cache.arrays, cache.x
    tok = token()
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
        rnn_bwd(d_out, dh_T, W, m2, has_mask, cache.reverse, c.act, c.Hs, c.hT, dXW, dh0, tok)
        dHW, dstate0, H_op = dXW, (dh0,), c.Hs
    elif cell_name == "lstm":
        dc0 = np.empty((B, H), dt)
        lstm_bwd(d_out, dh_T, np.ascontiguousarray(d_state[1]), W, m2, has_mask, cache.reverse, c.Cs, c.Gs, c.cT,
                 dXW, dh0, dc0, tok)
        dHW, dstate0, H_op = dXW, (dh0, dc0), c.Hs
    else:
        dHW = np.empty((T, B, GH), dt)
        gru_bwd(d_out, dh_T, W, m2, has_mask, cache.reverse, c.after, c.Hs, c.Rs, c.Zs, c.Ns, c.Es, dXW, dHW, dh0,
                tok)
        dstate0, H_op = (dh0,), c.Hs
    return weight_grads(cell_name, dXW, dHW, x, H_op, c, W_ih, has_bias, dstate0, np.matmul)
