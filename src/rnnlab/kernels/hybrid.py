"""backend="hybrid": BLAS for each step's recurrent product, one compiled gate kernel per step for the rest.

For single-thread steps too large for the loop's one-row products: the product h W_hh^T goes to BLAS, and the
gate math that the NumPy reference spreads over a dozen ufunc calls is one call of the cell's kernel in
``kernels.gates``. The input projection is one BLAS product over all steps before the loop. Same caches as
``kernels.loop``, so the weight gradients are the same products after the loop (``kernels.weight_grads``).
"""
from __future__ import annotations

import numpy as np

from ..caches import GRUArrays, LSTMArrays, RNNArrays
from .gates import (
    ACT, bias_rows, gate_scales, gru_n_fwd, gru_r_bwd, gru_rz_fwd, gru_zn_bwd, lstm_gates_bwd, lstm_gates_fwd,
    mask_rows, rnn_act_bwd, rnn_act_fwd, state_after,
)
from .weight_grads import weight_grads


def _carry_dh(dh_new, dh, m_t, has_mask):
    """The state gradient after one step back: the new one on valid rows, unchanged on padded rows."""
    return dh_new if not has_mask else np.where(m_t[:, None] != 0, dh_new, dh)


def forward(cell_name, x, W_ih, W_hh, b_ih, b_hh, state0, mask, reverse, opts, keep, alloc):
    T, B, I = x.shape
    GH, H = W_hh.shape
    dt = x.dtype
    m2, has_mask = mask_rows(mask, T, dt)
    b, has_b, bx, has_bx = bias_rows(cell_name, b_ih, b_hh, dt)
    xw = (x.reshape(T * B, I) @ W_ih.T).reshape(T, B, GH)               # (T, B, G*H), BLAS
    if has_bx:
        xw += bx
    WT = np.ascontiguousarray(W_hh.T)
    Tc = T if keep else 1
    cache = alloc if keep else np.empty
    out, Hs = np.empty((T, B, H), dt), cache((Tc, B, H), dt)
    h = np.array(state0[0], dtype=dt, order="C")
    order = [(t, t if keep else 0) for t in (range(T - 1, -1, -1) if reverse else range(T))]   # (step, cache row)
    if cell_name == "rnn":
        act = ACT[opts.get("nonlinearity", "tanh")]
        for t, ct in order:
            A = h @ WT                                                   # (B, H), BLAS
            rnn_act_fwd(A, xw[t], b, has_b, m2[t], has_mask, act, h, out[t], Hs[ct])
        return out, (h,), RNNArrays(Hs, h.copy(), act) if keep else None
    if cell_name == "lstm":
        c = np.array(state0[1], dtype=dt, order="C")
        Cs, Gs = cache((Tc, B, H), dt), cache((Tc, B, GH), dt)
        S = gate_scales(GH, out)
        for t, ct in order:
            A = h @ WT                                                   # (B, 4H), BLAS
            lstm_gates_fwd(A, xw[t], b, has_b, m2[t], has_mask, h, c, out[t], Hs[ct], Cs[ct], Gs[ct], keep, S)
        return out, (h, c), LSTMArrays(Cs, Gs, c.copy(), Hs=Hs) if keep else None
    after = opts.get("reset", "after") == "after"
    Rs, Zs, Ns, Es = (cache((Tc, B, H), dt) for _ in range(4))
    n_rz = GH if after else 2 * H                                       # columns of the first product
    WT_rz, WT_n = np.ascontiguousarray(WT[:, :n_rz]), np.ascontiguousarray(WT[:, 2 * H:])
    A = np.empty((B, GH), dt)
    A_rz, A_n = A[:, :n_rz], A[:, 2 * H:]
    for t, ct in order:
        np.matmul(h, WT_rz, out=A_rz)                                    # (B, 3H) or the r, z blocks, BLAS
        if has_b:
            A_rz += b[:n_rz]
        gru_rz_fwd(A, xw[t], after, h, Hs[ct], Rs[ct], Zs[ct], Es[ct])
        if not after:
            np.matmul(Es[ct], WT_n, out=A_n)                             # (r h) W_hn^T, BLAS
            if has_b:
                A_n += b[2 * H:]
        gru_n_fwd(A, xw[t], m2[t], has_mask, after, h, out[t], Rs[ct], Zs[ct], Ns[ct], Es[ct])
    return out, (h,), GRUArrays(Hs, Rs, Zs, Ns, Es, after) if keep else None


def backward(cell_name, d_out, d_state, cache, W_ih, W_hh, has_bias, workspace):
    c, x, reverse = cache.arrays, cache.x, cache.reverse
    T, B, H = d_out.shape
    GH = W_hh.shape[0]
    dt = d_out.dtype
    m2, has_mask = mask_rows(cache.mask, T, dt)
    d_out = np.ascontiguousarray(d_out)
    dXW = workspace((T, B, GH), dt)
    dh = np.array(d_state[0], dtype=dt, order="C")
    order = range(T) if reverse else range(T - 1, -1, -1)
    if cell_name == "rnn":
        for t in order:
            rnn_act_bwd(dh, d_out[t], m2[t], has_mask, c.act, state_after(c.Hs, c.hT, t, reverse), dXW[t])
            dh = _carry_dh(dXW[t] @ W_hh, dh, m2[t], has_mask)           # (B, H), BLAS
        return weight_grads(cell_name, dXW, dXW, x, c.Hs, c, W_ih, has_bias, (dh,), np.matmul)
    if cell_name == "lstm":
        dc = np.array(d_state[1], dtype=dt, order="C")
        for t in order:
            lstm_gates_bwd(dh, dc, d_out[t], m2[t], has_mask, c.Cs[t], c.Gs[t], state_after(c.Cs, c.cT, t, reverse),
                           dXW[t])
            dh = _carry_dh(dXW[t] @ W_hh, dh, m2[t], has_mask)           # (B, H), BLAS
        return weight_grads(cell_name, dXW, dXW, x, c.Hs, c, W_ih, has_bias, (dh, dc), np.matmul)
    dHW = np.empty((T, B, GH), dt)
    dh_part = np.empty((B, H), dt)
    n_rec = GH if c.after else 2 * H
    W_rec, W_n = W_hh[:n_rec], W_hh[2 * H:]
    DRH = dh_part                                                        # (after: not read)
    for t in order:
        gru_zn_bwd(dh, d_out[t], m2[t], has_mask, c.Hs[t], c.Zs[t], c.Ns[t], dXW[t], dh_part)
        if not c.after:
            DRH = dXW[t, :, 2 * H:] @ W_n                                # dL/d(r h), BLAS
        gru_r_bwd(dXW[t], dHW[t], c.after, c.Hs[t], c.Rs[t], c.Es[t], DRH, dh_part)
        dh = dh_part + dHW[t, :, :n_rec] @ W_rec                         # (B, H), BLAS
    return weight_grads(cell_name, dXW, dHW, x, c.Hs, c, W_ih, has_bias, (dh,), np.matmul)
