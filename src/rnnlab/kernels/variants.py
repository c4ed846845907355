"""The whole compiled loop for the cells' options: variational recurrent dropout, zoneout and layer norm.

``backend="loop"`` hands a call here when its layer has one of these options (``kernels.loop.forward``); the
plain cells keep their own kernels. The equations are the NumPy reference's (``rnnlab.cells.lstm``, ``gru``,
``rnn``, ``layernorm`` and ``rnnlab.recurrent``), one batch row at a time:

    m        recurrent dropout (B, H): the recurrent products read h_{t-1} * m; their gradient into h_{t-1}
             is multiplied by m (the GRU's interpolation z h_{t-1} reads the unmasked state)
    k        zoneout (T, B, H) per state: s_t = s_{t-1} + k (s_new - s_{t-1}); backward splits the gradient
             of s_t into k * g (into the cell) and (1 - k) * g (carried past it)
    LN       a_t = LN_x(x_t W_ih^T) + b_ih + LN_h(h_{t-1} W_hh^T) + b_hh, and the LSTM's h_t = o tanh(LN_c(c_t));
             LN_x runs over all steps before the loop and its backward after it (BLAS-sized work), LN_h and
             LN_c inside, row by row

A padded row (mask 0) keeps its state, gets output 0 and passes its gradient unchanged, as in every backend.
The input projection and the weight gradients are BLAS products outside the loop.

Contract: ``forward(...) -> (output, final state, VariantArrays or None)``, ``backward(...) -> Grads``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..caches import Grads, VariantArrays
from ..cells import layernorm
from .gates import ACT, FAST, sg, th
from .packed_gemm import token, vecmat_acc

EPS = layernorm.EPS


# ------------------------------------------------------------------ layer norm of one row
@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def _ln_row(A, ra, gamma, beta, V, rv, Inv):
    """A[ra] <- LN(A[ra]) gamma + beta in place; V[rv] = v_hat, Inv[rv] = 1 / s."""
    K = A.shape[1]
    mu = 0.0
    for j in range(K):
        mu += A[ra, j]
    mu /= K
    var = 0.0
    for j in range(K):
        d = A[ra, j] - mu
        var += d * d
    inv = 1.0 / math.sqrt(var / K + EPS)
    Inv[rv] = inv
    for j in range(K):
        v = (A[ra, j] - mu) * inv
        V[rv, j] = v
        A[ra, j] = v * gamma[j] + beta[j]


@njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def _ln_row_bwd(D, rd, gamma, V, rv, Inv, dgamma, dbeta):
    """D[rd] <- dL/dv from dL/dy in place (v_hat and 1/s of the forward in V[rv], Inv[rv]); the gain and
    bias gradients are added to dgamma, dbeta."""
    K = D.shape[1]
    mg = 0.0
    mgv = 0.0
    for j in range(K):
        dy = D[rd, j]
        v = V[rv, j]
        dgamma[j] += dy * v
        dbeta[j] += dy
        g = dy * gamma[j]
        mg += g
        mgv += g * v
    mg /= K
    mgv /= K
    inv = Inv[rv]
    for j in range(K):
        D[rd, j] = inv * (D[rd, j] * gamma[j] - mg - V[rv, j] * mgv)


# ------------------------------------------------------------------ LSTM
@njit(cache=True, fastmath=FAST, error_model="numpy")
def lstm_fwd(XW, h0, c0, WT, b, has_b, mask, has_mask, reverse, rm, has_rm, kh, kc, has_zo, lng, has_ln,
             out, Hs, Cs, Gs, TC, Vh, Ih, Vc, Ic, hT, cT, tok):
    """XW (T*B, 4H): x W_ih^T + b_ih (after LN_x); the caches have T*B rows, or B (inference: reused).
    lng (4, 4H): the gains and biases of LN_h, then of LN_c (first H entries)."""
    T, B, H = out.shape
    GH = 4 * H
    keep = Hs.shape[0] == T * B
    h, c = h0.copy(), c0.copy()
    A = np.empty((B, GH), out.dtype)
    hm = np.empty((B, H), out.dtype)
    cn = np.empty((B, H), out.dtype)                # c_t before zoneout
    cl = np.empty((B, H), out.dtype)                # LN_c(c_t), or c_t
    for s in range(T):
        t = T - 1 - s if reverse else s
        for r in range(B):
            row = t * B + r
            rc = row if keep else r
            for k in range(H):
                hm[r, k] = h[r, k] * rm[r, k] if has_rm else h[r, k]
                Hs[rc, k] = hm[r, k]
                Cs[rc, k] = c[r, k]
            if has_mask and mask[t, r] == 0.0:
                for k in range(H):
                    out[t, r, k] = 0.0
                continue
            for j in range(GH):
                A[r, j] = 0.0
            vecmat_acc(A, r, hm, r, WT, tok)
            if has_ln:
                _ln_row(A, r, lng[0], lng[1], Vh, rc, Ih)
            if has_b:
                for j in range(GH):
                    A[r, j] += XW[row, j] + b[j]
            else:
                for j in range(GH):
                    A[r, j] += XW[row, j]
            for j in range(2 * H):                      # i, f
                Gs[rc, j] = sg(A[r, j])
            for j in range(2 * H, 3 * H):               # g
                Gs[rc, j] = th(A[r, j])
            for j in range(3 * H, GH):                  # o
                Gs[rc, j] = sg(A[r, j])
            for k in range(H):
                cn[r, k] = Gs[rc, H + k] * c[r, k] + Gs[rc, k] * Gs[rc, 2 * H + k]
                cl[r, k] = cn[r, k]
            if has_ln:
                _ln_row(cl, r, lng[2], lng[3], Vc, rc, Ic)
            for k in range(H):
                tc = th(cl[r, k])
                TC[rc, k] = tc
                hn = Gs[rc, 3 * H + k] * tc
                if has_zo:
                    c[r, k] += kc[row, k] * (cn[r, k] - c[r, k])
                    h[r, k] += kh[row, k] * (hn - h[r, k])
                else:
                    c[r, k] = cn[r, k]
                    h[r, k] = hn
                out[t, r, k] = h[r, k]
    hT[:] = h
    cT[:] = c


@njit(cache=True, fastmath=FAST, error_model="numpy")
def lstm_bwd(d_out, dhT, dcT, W, mask, has_mask, reverse, rm, has_rm, kh, kc, has_zo, lng, has_ln,
             Cs, Gs, TC, Vh, Ih, Vc, Ic, DA, DHW, dh0, dc0, dln, tok):
    """DA (T*B, 4H) = dL/da (the input side), DHW = dL/d(h W_hh^T) (DA itself without LN); dln (4, 4H): the
    gradients of lng."""
    T, B, H = d_out.shape
    GH = 4 * H
    dh, dc = dhT.copy(), dcT.copy()
    u = np.empty((B, H), d_out.dtype)
    carry_h = np.zeros(H, d_out.dtype)
    carry_c = np.zeros(H, d_out.dtype)
    dcn = np.empty(H, d_out.dtype)
    for s in range(T):
        t = s if reverse else T - 1 - s
        for r in range(B):
            row = t * B + r
            if has_mask and mask[t, r] == 0.0:
                for j in range(GH):
                    DA[row, j] = 0.0
                    if has_ln:
                        DHW[row, j] = 0.0
                continue
            for k in range(H):
                g_h = dh[r, k] + d_out[t, r, k]
                dck = dc[r, k]
                if has_zo:
                    carry_h[k] = g_h * (1.0 - kh[row, k])
                    carry_c[k] = dck * (1.0 - kc[row, k])
                    g_h *= kh[row, k]
                    dck *= kc[row, k]
                dcn[k] = dck
                o = Gs[row, 3 * H + k]
                tc = TC[row, k]
                DA[row, 3 * H + k] = g_h * tc * o * (1.0 - o)
                u[r, k] = g_h * o * (1.0 - tc * tc)
            if has_ln:
                _ln_row_bwd(u, r, lng[2], Vc, row, Ic, dln[2], dln[3])
            for k in range(H):
                dck = dcn[k] + u[r, k]
                i = Gs[row, k]
                f = Gs[row, H + k]
                g = Gs[row, 2 * H + k]
                DA[row, k] = dck * g * i * (1.0 - i)
                DA[row, H + k] = dck * Cs[row, k] * f * (1.0 - f)
                DA[row, 2 * H + k] = dck * i * (1.0 - g * g)
                dc[r, k] = dck * f + carry_c[k]
            if has_ln:
                for j in range(GH):
                    DHW[row, j] = DA[row, j]
                _ln_row_bwd(DHW, row, lng[0], Vh, row, Ih, dln[0], dln[1])
            for k in range(H):
                dh[r, k] = 0.0
            vecmat_acc(dh, r, DHW, row, W, tok)
            for k in range(H):
                dh[r, k] = (dh[r, k] * rm[r, k] if has_rm else dh[r, k]) + carry_h[k]
    dh0[:] = dh
    dc0[:] = dc


# ------------------------------------------------------------------ GRU
@njit(cache=True, fastmath=FAST, error_model="numpy")
def gru_fwd(XW, h0, WT, b, has_b, mask, has_mask, reverse, after, rm, has_rm, kh, has_zo, lng, has_ln,
            out, Hs, Hp, Rs, Zs, Ns, Es, Vh, Ih, hT, tok):
    """XW (T*B, 3H): x W_ih^T + b_ih (after LN_x). Hs: the products' operand h_{t-1} m, Hp: h_{t-1} itself
    (the interpolation's), Es: h W_hn^T + b_hn (after) or r h m (before)."""
    T, B, H = out.shape
    GH = 3 * H
    keep = Hs.shape[0] == T * B
    h = h0.copy()
    A = np.empty((B, GH), out.dtype)
    hm = np.empty((B, H), out.dtype)
    n_rz = GH if after else 2 * H
    WT_rz, WT_n = WT[:, :n_rz], WT[:, 2 * H:]
    A_rz, A_n = A[:, :n_rz], A[:, 2 * H:]
    for s in range(T):
        t = T - 1 - s if reverse else s
        for r in range(B):
            row = t * B + r
            rc = row if keep else r
            for k in range(H):
                hm[r, k] = h[r, k] * rm[r, k] if has_rm else h[r, k]
                Hs[rc, k] = hm[r, k]
                Hp[rc, k] = h[r, k]
            if has_mask and mask[t, r] == 0.0:
                for k in range(H):
                    out[t, r, k] = 0.0
                continue
            for j in range(n_rz):
                A[r, j] = 0.0
            vecmat_acc(A_rz, r, hm, r, WT_rz, tok)
            if has_ln:
                _ln_row(A, r, lng[0], lng[1], Vh, rc, Ih)
            if has_b:
                for j in range(n_rz):
                    A[r, j] += b[j]
            for k in range(H):
                Rs[rc, k] = sg(XW[row, k] + A[r, k])
                Zs[rc, k] = sg(XW[row, H + k] + A[r, H + k])
            if after:
                for k in range(H):
                    Es[rc, k] = A[r, 2 * H + k]
                    Ns[rc, k] = th(XW[row, 2 * H + k] + Rs[rc, k] * A[r, 2 * H + k])
            else:
                for k in range(H):
                    Es[rc, k] = Rs[rc, k] * hm[r, k]
                    A[r, 2 * H + k] = b[2 * H + k] if has_b else 0.0
                vecmat_acc(A_n, r, Es, rc, WT_n, tok)
                for k in range(H):
                    Ns[rc, k] = th(XW[row, 2 * H + k] + A[r, 2 * H + k])
            for k in range(H):
                n = Ns[rc, k]
                hn = n + Zs[rc, k] * (h[r, k] - n)
                h[r, k] = h[r, k] + kh[row, k] * (hn - h[r, k]) if has_zo else hn
                out[t, r, k] = h[r, k]
    hT[:] = h


@njit(cache=True, fastmath=FAST, error_model="numpy")
def gru_bwd(d_out, dhT, W, mask, has_mask, reverse, after, rm, has_rm, kh, has_zo, lng, has_ln,
            Hs, Hp, Rs, Zs, Ns, Es, Vh, Ih, DX, DHW, dh0, dbh, dln, tok):
    """DX (T*B, 3H) = dL/d(x W_ih^T + b_ih), DHW = dL/d of the recurrent products' outputs (before LN_h's
    backward: dbh collects the bias's gradient first)."""
    T, B, H = d_out.shape
    GH = 3 * H
    dh = dhT.copy()
    part = np.empty(H, d_out.dtype)
    drh = np.zeros((B, H), d_out.dtype)
    n_rec = GH if after else 2 * H
    W_rec, W_n = W[:n_rec], W[2 * H:]
    DX_n, DHW_rec = DX[:, 2 * H:], DHW[:, :n_rec]
    for s in range(T):
        t = s if reverse else T - 1 - s
        for r in range(B):
            row = t * B + r
            if has_mask and mask[t, r] == 0.0:
                for j in range(GH):
                    DX[row, j] = 0.0
                    DHW[row, j] = 0.0
                continue
            for k in range(H):
                g = dh[r, k] + d_out[t, r, k]
                carry = 0.0
                if has_zo:
                    carry = g * (1.0 - kh[row, k])
                    g *= kh[row, k]
                z = Zs[row, k]
                n = Ns[row, k]
                DX[row, H + k] = g * (Hp[row, k] - n) * z * (1.0 - z)
                DX[row, 2 * H + k] = g * (1.0 - z) * (1.0 - n * n)
                part[k] = g * z + carry
            if after:
                for k in range(H):
                    rr = Rs[row, k]
                    dr = DX[row, 2 * H + k] * Es[row, k] * rr * (1.0 - rr)
                    DX[row, k] = dr
                    DHW[row, k] = dr
                    DHW[row, H + k] = DX[row, H + k]
                    DHW[row, 2 * H + k] = DX[row, 2 * H + k] * rr
            else:
                for k in range(H):
                    drh[r, k] = 0.0
                vecmat_acc(drh, r, DX_n, row, W_n, tok)             # dL/d(r h m) = dn W_hn
                for k in range(H):
                    rr = Rs[row, k]
                    DX[row, k] = drh[r, k] * Hs[row, k] * rr * (1.0 - rr)
                    part[k] += drh[r, k] * rr * (rm[r, k] if has_rm else 1.0)
                for j in range(GH):
                    DHW[row, j] = DX[row, j]
            for j in range(GH):
                dbh[j] += DHW[row, j]
            if has_ln:
                _ln_row_bwd(DHW, row, lng[0], Vh, row, Ih, dln[0], dln[1])
            for k in range(H):
                dh[r, k] = 0.0
            vecmat_acc(dh, r, DHW_rec, row, W_rec, tok)
            for k in range(H):
                dh[r, k] = (dh[r, k] * rm[r, k] if has_rm else dh[r, k]) + part[k]
    dh0[:] = dh


# ------------------------------------------------------------------ RNN
@njit(cache=True, fastmath=FAST, error_model="numpy")
def rnn_fwd(XW, h0, WT, b, has_b, mask, has_mask, reverse, act, rm, has_rm, kh, has_zo, out, Hs, Ns, hT, tok):
    """Hs: the product's operand h_{t-1} m; Ns: the cell's new state act(a) before zoneout."""
    T, B, H = out.shape
    keep = Hs.shape[0] == T * B
    h = h0.copy()
    A = np.empty((B, H), out.dtype)
    hm = np.empty((B, H), out.dtype)
    for s in range(T):
        t = T - 1 - s if reverse else s
        for r in range(B):
            row = t * B + r
            rc = row if keep else r
            for k in range(H):
                hm[r, k] = h[r, k] * rm[r, k] if has_rm else h[r, k]
                Hs[rc, k] = hm[r, k]
            if has_mask and mask[t, r] == 0.0:
                for k in range(H):
                    out[t, r, k] = 0.0
                continue
            for k in range(H):
                A[r, k] = XW[row, k] + (b[k] if has_b else 0.0)
            vecmat_acc(A, r, hm, r, WT, tok)
            for k in range(H):
                v = A[r, k]
                if act == 0:
                    v = th(v)
                elif act == 1:
                    v = 0.0 if v <= 0.0 else v
                Ns[rc, k] = v
                h[r, k] = h[r, k] + kh[row, k] * (v - h[r, k]) if has_zo else v
                out[t, r, k] = h[r, k]
    hT[:] = h


@njit(cache=True, fastmath=FAST, error_model="numpy")
def rnn_bwd(d_out, dhT, W, mask, has_mask, reverse, act, rm, has_rm, kh, has_zo, Ns, DA, dh0, tok):
    T, B, H = d_out.shape
    dh = dhT.copy()
    carry = np.zeros(H, d_out.dtype)
    for s in range(T):
        t = s if reverse else T - 1 - s
        for r in range(B):
            row = t * B + r
            if has_mask and mask[t, r] == 0.0:
                for k in range(H):
                    DA[row, k] = 0.0
                continue
            for k in range(H):
                g = dh[r, k] + d_out[t, r, k]
                if has_zo:
                    carry[k] = g * (1.0 - kh[row, k])
                    g *= kh[row, k]
                v = Ns[row, k]
                if act == 0:
                    g *= 1.0 - v * v
                elif act == 1:
                    g = g if v > 0.0 else 0.0
                DA[row, k] = g
                dh[r, k] = 0.0
            vecmat_acc(dh, r, DA, row, W, tok)
            for k in range(H):
                dh[r, k] = (dh[r, k] * rm[r, k] if has_rm else dh[r, k]) + carry[k]
    dh0[:] = dh


# ------------------------------------------------------------------ the contract
def serves(opts, zoneout) -> bool:
    """Whether a call has an option this module implements (``kernels.loop.forward`` asks)."""
    return zoneout is not None or opts.get("rec_mask") is not None or opts.get("ln") is not None


def _flat(v, T, B, dt):
    return np.ascontiguousarray(v, dtype=dt).reshape(T * B, -1)


def _shares(keep, dt) -> list:
    """Zoneout's (h, c) shares as the kernels take them: placeholders without zoneout, h's twice for one state."""
    ks = list(keep) if keep is not None else [np.empty((1, 1), dt)]
    return ks + ks[:1] if len(ks) == 1 else ks


def _ln_gains(ln, GH, H, dt) -> np.ndarray:
    """lng (4, G*H): LN_h's gain and bias, then LN_c's (first H entries); zeros without layer norm."""
    lng = np.zeros((4, GH), dt)
    if ln is not None:
        lng[0], lng[1] = ln["h"]
        if "c" in ln:
            lng[2, :H], lng[3, :H] = ln["c"]
    return lng


def forward(cell_name, x, W_ih, W_hh, b_ih, b_hh, state0, mask, reverse, opts, keep, alloc, zoneout=None):
    T, B, I = x.shape
    GH, H = W_hh.shape
    dt = x.dtype
    tok = token()
    XW = (np.ascontiguousarray(x).reshape(T * B, I) @ W_ih.T).reshape(T, B, GH)
    ln = opts.get("ln")
    ln_x = None
    if ln is not None:
        XW, ln_x = layernorm.forward(XW, *ln["x"])
    if b_ih is not None:
        XW += b_ih
    XW2 = XW.reshape(T * B, GH)
    has_mask = mask is not None
    m2 = np.ascontiguousarray(mask[..., 0]) if has_mask else np.empty((T, 1), dt)
    rm = opts.get("rec_mask")
    has_rm = rm is not None
    rm = np.ascontiguousarray(rm, dtype=dt) if has_rm else np.empty((1, 1), dt)
    has_zo = zoneout is not None
    ks = _shares([_flat(k, T, B, dt) for k in zoneout] if has_zo else None, dt)
    has_b = b_hh is not None
    b = b_hh if has_b else np.empty(1, dt)
    WT = np.ascontiguousarray(W_hh.T)
    n = T * B if keep else B
    cache = alloc if keep else np.empty
    out = np.empty((T, B, H), dt)
    h0 = np.ascontiguousarray(state0[0])
    hT = np.empty((B, H), dt)
    Hs = cache((n, 1, H), dt).reshape(n, H)
    lng = _ln_gains(ln, GH, H, dt)
    nl = n if ln is not None else 1
    Vh, Ih = np.empty((nl, GH), dt), np.empty(nl, dt)
    arrays = dict(cell=cell_name, Hs=Hs, XW_ln=ln_x, rm=rm if has_rm else None, keep=ks[:len(state0)] if has_zo
                  else None, Vh=Vh, Ih=Ih)
    if cell_name == "lstm":
        Cs, TC = cache((n, 1, H), dt).reshape(n, H), np.empty((n, H), dt)
        Gs = cache((n, 1, GH), dt).reshape(n, GH)
        Vc, Ic = np.empty((nl, H), dt), np.empty(nl, dt)
        cT = np.empty((B, H), dt)
        lstm_fwd(XW2, h0, np.ascontiguousarray(state0[1]), WT, b, has_b, m2, has_mask, reverse, rm, has_rm, ks[0],
                 ks[1], has_zo, lng, ln is not None, out, Hs, Cs, Gs, TC, Vh, Ih, Vc, Ic, hT, cT, tok)
        arrays.update(Cs=Cs, Gs=Gs, TC=TC, Vc=Vc, Ic=Ic)
        final = (hT, cT)
    elif cell_name == "gru":
        after = opts.get("reset", "after") == "after"
        Hp, Rs, Zs, Ns, Es = (cache((n, 1, H), dt).reshape(n, H) for _ in range(5))
        gru_fwd(XW2, h0, WT, b, has_b, m2, has_mask, reverse, after, rm, has_rm, ks[0], has_zo, lng, ln is not None,
                out, Hs, Hp, Rs, Zs, Ns, Es, Vh, Ih, hT, tok)
        arrays.update(Hp=Hp, Rs=Rs, Zs=Zs, Ns=Ns, Es=Es, after=after)
        final = (hT,)
    else:
        act = ACT[opts.get("nonlinearity", "tanh")]
        Ns = cache((n, 1, H), dt).reshape(n, H)
        rnn_fwd(XW2, h0, WT, b, has_b, m2, has_mask, reverse, act, rm, has_rm, ks[0], has_zo, out, Hs, Ns, hT, tok)
        arrays.update(Ns=Ns, act=act)
        final = (hT,)
    return out, final, (VariantArrays(T=T, B=B, H=H, **arrays) if keep else None)


def backward(cell_name, d_out, d_state, cache, W_ih, W_hh, has_bias, workspace):
    c, x = cache.arrays, cache.x
    tok = token()
    T, B, H = d_out.shape
    GH = W_hh.shape[0]
    dt = d_out.dtype
    has_mask = cache.mask is not None
    m2 = np.ascontiguousarray(cache.mask[..., 0]) if has_mask else np.empty((T, 1), dt)
    has_rm, has_zo, has_ln = c.rm is not None, c.keep is not None, c.XW_ln is not None
    rm = c.rm if has_rm else np.empty((1, 1), dt)
    ks = _shares(c.keep, dt)
    ln = cache.opts.get("ln")
    lng = _ln_gains(ln if has_ln else None, GH, H, dt)
    dln = np.zeros((4, GH), dt)
    d_out = np.ascontiguousarray(d_out)
    W = np.ascontiguousarray(W_hh)
    DX = workspace((T * B, GH), dt)
    dh0 = np.empty((B, H), dt)
    dh_T = np.ascontiguousarray(d_state[0])
    dbh = None
    Hs_op = c.Hs
    if cell_name == "lstm":
        DHW = np.empty((T * B, GH), dt) if has_ln else DX
        dc0 = np.empty((B, H), dt)
        lstm_bwd(d_out, dh_T, np.ascontiguousarray(d_state[1]), W, m2, has_mask, cache.reverse, rm, has_rm, ks[0],
                 ks[1], has_zo, lng, has_ln, c.Cs, c.Gs, c.TC, c.Vh, c.Ih, c.Vc, c.Ic, DX, DHW, dh0, dc0, dln, tok)
        dstate0 = (dh0, dc0)
    elif cell_name == "gru":
        DHW = np.empty((T * B, GH), dt)
        dbh = np.zeros(GH, dt)
        gru_bwd(d_out, dh_T, W, m2, has_mask, cache.reverse, c.after, rm, has_rm, ks[0], has_zo, lng, has_ln,
                c.Hs, c.Hp, c.Rs, c.Zs, c.Ns, c.Es, c.Vh, c.Ih, DX, DHW, dh0, dbh, dln, tok)
        dstate0 = (dh0,)
    else:
        DHW = DX
        rnn_bwd(d_out, dh_T, W, m2, has_mask, cache.reverse, c.act, rm, has_rm, ks[0], has_zo, c.Ns, DX, dh0, tok)
        dstate0 = (dh0,)
    if cell_name == "gru" and not c.after:
        dW_hh = np.concatenate([DHW[:, :2 * H].T @ Hs_op, DHW[:, 2 * H:].T @ c.Es], axis=0)
    else:
        dW_hh = DHW.T @ Hs_op
    db_ih = db_hh = None
    if has_bias:
        db_ih = DX.sum(axis=0)
        db_hh = dbh if dbh is not None else db_ih.copy()
    extra = {}
    if has_ln:
        DXr, extra["ln_ih_weight"], extra["ln_ih_bias"] = layernorm.backward(DX.reshape(T, B, GH), ln["x"][0],
                                                                           c.XW_ln)
        DX = DXr.reshape(T * B, GH)
        extra["ln_hh_weight"], extra["ln_hh_bias"] = dln[0].copy(), dln[1].copy()
        if "c" in ln:
            extra["ln_c_weight"], extra["ln_c_bias"] = dln[2, :H].copy(), dln[3, :H].copy()
    x2 = x.reshape(T * B, -1)
    return Grads(dx=(DX @ W_ih).reshape(x.shape), dstate0=dstate0, dW_ih=DX.T @ x2, dW_hh=dW_hh, db_ih=db_ih,
                 db_hh=db_hh, extra=extra or None)
