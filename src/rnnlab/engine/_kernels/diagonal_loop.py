"""Backend "loop" of the diagonal cells: each cell's whole time loop compiled, forward and backward.

The input projection P = x W_ih^T + b_ih (and the LRU's x B^T) and the products after the loop (dW_ih, dx) are
BLAS calls, shared with the NumPy reference (``rnnlab.engine.cells.linear``); what is compiled is the element-wise
work of every step -- the gates, g(v), the recurrence and, backwards, the recurrence's gradient and the
gates' -- one pass over (T, B, H) instead of a dozen NumPy temporaries. The equations are the cells' own
(``rnnlab.engine.cells.mingru`` ...; ``tests/engine/test_diagonal.py`` checks this path against the reference in
float64).

Each ``forward(x, p, state0, mask)`` / ``backward(d_out, d_state, arrays, p)`` pair has the signature of the
cells' NumPy functions (without ``how``) and returns the same ``DiagonalArrays`` and gradients.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from rnnlab.engine._caches import DiagonalArrays
from rnnlab.engine.cells import linear
from rnnlab.engine.cells import lru
from rnnlab.engine._kernels.gates import sg


def _mask2(mask, T, B, dtype):
    """(T, B) 1/0, or an empty (0, 1) array without padding (one specialisation; the kernels test its rows)."""
    if mask is None:
        return np.empty((0, 1), dtype)
    return np.ascontiguousarray(mask[:, :, 0])


@njit(inline="always", error_model="numpy")
def _g(v):
    return v + 0.5 if v >= 0 else sg(v)


@njit(inline="always", error_model="numpy")
def _g_grad(v):
    if v >= 0:
        return 1.0
    s = sg(v)
    return s * (1.0 - s)


# ------------------------------------------------------------------ minGRU
@njit(cache=True, error_model="numpy")
def _mingru_fwd(P, h0, mask, h, z, ht):
    has_mask = mask.shape[0] > 0
    T, B, H = h.shape
    for t in range(T):
        for b in range(B):
            valid = (not has_mask) or mask[t, b] > 0
            for j in range(H):
                prev = h0[b, j] if t == 0 else h[t - 1, b, j]
                zz = sg(P[t, b, j])
                gg = _g(P[t, b, H + j])
                z[t, b, j] = zz
                ht[t, b, j] = gg
                h[t, b, j] = (1.0 - zz) * prev + zz * gg if valid else prev


@njit(cache=True, error_model="numpy")
def _mingru_bwd(g, dhT, P, z, ht, h, h0, mask, dP, G, dh0):
    has_mask = mask.shape[0] > 0
    T, B, H = h.shape
    for b in range(B):
        for j in range(H):
            dh0[b, j] = dhT[b, j]                       # the running total, dL/dh_t
    for t in range(T - 1, -1, -1):
        for b in range(B):
            valid = (not has_mask) or mask[t, b] > 0
            for j in range(H):
                acc = dh0[b, j] + g[t, b, j]
                G[t, b, j] = acc
                if valid:
                    prev = h0[b, j] if t == 0 else h[t - 1, b, j]
                    zz = z[t, b, j]
                    dz = acc * (ht[t, b, j] - prev)        # -da + db h~, da = G h_prev, db = G
                    dP[t, b, j] = dz * zz * (1.0 - zz)
                    dP[t, b, H + j] = acc * zz * _g_grad(P[t, b, H + j])
                    acc = acc * (1.0 - zz)
                else:
                    dP[t, b, j] = 0.0
                    dP[t, b, H + j] = 0.0
                dh0[b, j] = acc


# ------------------------------------------------------------------ minLSTM
@njit(cache=True, error_model="numpy")
def _minlstm_fwd(P, h0, mask, h, fn, inn, ht):
    has_mask = mask.shape[0] > 0
    T, B, H = h.shape
    for t in range(T):
        for b in range(B):
            valid = (not has_mask) or mask[t, b] > 0
            for j in range(H):
                prev = h0[b, j] if t == 0 else h[t - 1, b, j]
                f = sg(P[t, b, j])
                i = sg(P[t, b, H + j])
                gg = _g(P[t, b, 2 * H + j])
                S = f + i
                fn[t, b, j] = f / S
                inn[t, b, j] = i / S
                ht[t, b, j] = gg
                h[t, b, j] = (f * prev + i * gg) / S if valid else prev


@njit(cache=True, error_model="numpy")
def _minlstm_bwd(g, dhT, P, fn, inn, ht, h, h0, mask, dP, G, dh0):
    has_mask = mask.shape[0] > 0
    T, B, H = h.shape
    for b in range(B):
        for j in range(H):
            dh0[b, j] = dhT[b, j]
    for t in range(T - 1, -1, -1):
        for b in range(B):
            valid = (not has_mask) or mask[t, b] > 0
            for j in range(H):
                acc = dh0[b, j] + g[t, b, j]
                G[t, b, j] = acc
                if valid:
                    prev = h0[b, j] if t == 0 else h[t - 1, b, j]
                    f = sg(P[t, b, j])
                    i = sg(P[t, b, H + j])
                    S2 = (f + i) * (f + i)
                    gg = ht[t, b, j]
                    da, db = acc * prev, acc
                    df = (da - db * gg) * i / S2
                    di = (db * gg - da) * f / S2
                    dP[t, b, j] = df * f * (1.0 - f)
                    dP[t, b, H + j] = di * i * (1.0 - i)
                    dP[t, b, 2 * H + j] = db * inn[t, b, j] * _g_grad(P[t, b, 2 * H + j])
                    acc = acc * fn[t, b, j]
                else:
                    dP[t, b, j] = 0.0
                    dP[t, b, H + j] = 0.0
                    dP[t, b, 2 * H + j] = 0.0
                dh0[b, j] = acc


# ------------------------------------------------------------------ IndRNN
@njit(cache=True, error_model="numpy")
def _indrnn_fwd(P, u, h0, mask, h, pre):
    has_mask = mask.shape[0] > 0
    T, B, H = h.shape
    for t in range(T):
        for b in range(B):
            valid = (not has_mask) or mask[t, b] > 0
            for j in range(H):
                prev = h0[b, j] if t == 0 else h[t - 1, b, j]
                a = P[t, b, j] + u[j] * prev
                pre[t, b, j] = a
                h[t, b, j] = (a if a > 0 else 0.0) if valid else prev


@njit(cache=True, error_model="numpy")
def _indrnn_bwd(g, dhT, u, pre, h, h0, mask, dP, G, dh0, du):
    has_mask = mask.shape[0] > 0
    T, B, H = h.shape
    for b in range(B):
        for j in range(H):
            dh0[b, j] = dhT[b, j]
    for t in range(T - 1, -1, -1):
        for b in range(B):
            valid = (not has_mask) or mask[t, b] > 0
            for j in range(H):
                acc = dh0[b, j] + g[t, b, j]
                G[t, b, j] = acc
                if valid:
                    prev = h0[b, j] if t == 0 else h[t - 1, b, j]
                    d = acc if pre[t, b, j] > 0 else 0.0
                    dP[t, b, j] = d
                    du[j] += d * prev
                    acc = d * u[j]
                else:
                    dP[t, b, j] = 0.0
                dh0[b, j] = acc


# ------------------------------------------------------------------ LRU (complex)
@njit(cache=True, error_model="numpy")
def _lru_fwd(bb, lam, h0, mask, h):
    has_mask = mask.shape[0] > 0
    T, B, H = h.shape
    for t in range(T):
        for b in range(B):
            valid = (not has_mask) or mask[t, b] > 0
            for j in range(H):
                prev = h0[b, j] if t == 0 else h[t - 1, b, j]
                h[t, b, j] = lam[j] * prev + bb[t, b, j] if valid else prev


@njit(cache=True, error_model="numpy")
def _lru_bwd(gh, dhT, lam, h, h0, mask, db, G, dh0, dlam):
    has_mask = mask.shape[0] > 0
    T, B, H = h.shape
    for b in range(B):
        for j in range(H):
            dh0[b, j] = dhT[b, j]
    for t in range(T - 1, -1, -1):
        for b in range(B):
            valid = (not has_mask) or mask[t, b] > 0
            for j in range(H):
                acc = dh0[b, j] + gh[t, b, j]
                G[t, b, j] = acc
                if valid:
                    prev = h0[b, j] if t == 0 else h[t - 1, b, j]
                    dlam[j] += acc * np.conj(prev)
                    db[t, b, j] = acc
                    acc = np.conj(lam[j]) * acc
                else:
                    db[t, b, j] = 0.0
                dh0[b, j] = acc


# ------------------------------------------------------------------ the cells' forward / backward
def _backward_inputs(d_out, d_state, c):
    """What every compiled backward reads: dL/dh_t from outside (0 at padding), dL/dh_T, the (T, B) mask, and
    the buffers for dL/dh_t total and dL/dh_0."""
    g = np.ascontiguousarray(d_out if c.mask is None else d_out * c.mask)
    T, B, _ = c.h.shape
    m = _mask2(c.mask, T, B, g.dtype)
    return g, np.ascontiguousarray(d_state[0]), m, np.empty_like(c.h), np.empty_like(c.h0)


def _carry(a, mask):
    return a if mask is None else np.where(mask > 0, a, 1.0).astype(a.dtype, copy=False)


def mingru_forward(x, p, state0, mask):
    P = linear.project(x, p)
    T, B, _ = x.shape
    H = P.shape[-1] // 2
    m = _mask2(mask, T, B, x.dtype)
    h, z, ht = (np.empty((T, B, H), x.dtype) for _ in range(3))
    h0 = np.ascontiguousarray(state0[0])
    _mingru_fwd(P, h0, m, h, z, ht)
    out = h if mask is None else h * mask
    arrays = DiagonalArrays(x, mask, _carry(1.0 - z, mask), h, h0, {"P": P, "z": z, "ht": ht}, "compiled", ("z",))
    return out, (h[-1],), arrays


def mingru_backward(d_out, d_state, c, p):
    g, dhT, m, G, dh0 = _backward_inputs(d_out, d_state, c)
    dP = np.empty_like(c.extra["P"])
    _mingru_bwd(g, dhT, c.extra["P"], c.extra["z"], c.extra["ht"], c.h, c.h0, m, dP, G, dh0)
    dx, grads = linear.project_backward(dP, c.x, p)
    return dx, (dh0,), grads, G


def minlstm_forward(x, p, state0, mask):
    P = linear.project(x, p)
    T, B, _ = x.shape
    H = P.shape[-1] // 3
    m = _mask2(mask, T, B, x.dtype)
    h, fn, inn, ht = (np.empty((T, B, H), x.dtype) for _ in range(4))
    h0 = np.ascontiguousarray(state0[0])
    _minlstm_fwd(P, h0, m, h, fn, inn, ht)
    out = h if mask is None else h * mask
    arrays = DiagonalArrays(x, mask, _carry(fn, mask), h, h0, {"P": P, "f": fn, "i": inn, "ht": ht}, "compiled",
                            ("f", "i"))
    return out, (h[-1],), arrays


def minlstm_backward(d_out, d_state, c, p):
    g, dhT, m, G, dh0 = _backward_inputs(d_out, d_state, c)
    dP = np.empty_like(c.extra["P"])
    _minlstm_bwd(g, dhT, c.extra["P"], c.extra["f"], c.extra["i"], c.extra["ht"], c.h, c.h0, m, dP, G, dh0)
    dx, grads = linear.project_backward(dP, c.x, p)
    return dx, (dh0,), grads, G


def indrnn_forward(x, p, state0, mask):
    P = linear.project(x, p)
    T, B, H = P.shape
    m = _mask2(mask, T, B, x.dtype)
    h, pre = np.empty((T, B, H), x.dtype), np.empty((T, B, H), x.dtype)
    h0 = np.ascontiguousarray(state0[0])
    u = p["weight_hh"]
    _indrnn_fwd(P, u, h0, m, h, pre)
    out = h if mask is None else h * mask
    arrays = DiagonalArrays(x, mask, _carry(((pre > 0) * u).astype(x.dtype), mask), h, h0, {"pre": pre}, "compiled")
    return out, (h[-1],), arrays


def indrnn_backward(d_out, d_state, c, p):
    g, dhT, m, G, dh0 = _backward_inputs(d_out, d_state, c)
    dP, du = np.empty_like(c.h), np.zeros_like(p["weight_hh"])
    _indrnn_bwd(g, dhT, p["weight_hh"], c.extra["pre"], c.h, c.h0, m, dP, G, dh0, du)
    dx, grads = linear.project_backward(dP, c.x, p)
    grads["weight_hh"] = du
    return dx, (dh0,), grads, G


def lru_forward(x, p, state0, mask):
    T, B, _ = x.shape
    u, lam, bb = lru.project_input(x, p)
    H = bb.shape[-1]
    m = _mask2(mask, T, B, x.dtype)
    h = np.empty((T, B, H), bb.dtype)
    h0 = np.ascontiguousarray((state0[0] + 1j * state0[1]).astype(bb.dtype))
    _lru_fwd(bb, lam, h0, m, h)
    a = _carry(np.broadcast_to(np.abs(lam).astype(x.dtype), (T, B, H)), mask)
    return lru.readout(h, x, p, mask), (h[-1].real.astype(x.dtype), h[-1].imag.astype(x.dtype)), DiagonalArrays(
        x, mask, a, h, h0, {"u": u, "lambda": lam}, "compiled")


def lru_backward(d_out, d_state, c, p):
    x, h = c.x, c.h
    T, B, _ = x.shape
    gh, grads, dx = lru.readout_backward(d_out, h, x, p, c.mask)
    m = _mask2(c.mask, T, B, x.dtype)
    lam = c.extra["lambda"]
    db, G, dh0 = np.empty_like(h), np.empty_like(h), np.empty_like(c.h0)
    dlam = np.zeros(h.shape[-1], h.dtype)
    _lru_bwd(np.ascontiguousarray(gh), np.ascontiguousarray((d_state[0] + 1j * d_state[1]).astype(h.dtype)), lam, h,
             c.h0, m, db, G, dh0, dlam)
    dx = dx + lru.input_backward(dlam, db, c.extra["u"], lam, x, p, grads)
    grads = {k: np.asarray(v, dtype=x.dtype) for k, v in grads.items()}
    return dx.astype(x.dtype), (dh0.real.astype(x.dtype), dh0.imag.astype(x.dtype)), grads, G


LOOPS = {"mingru": (mingru_forward, mingru_backward), "minlstm": (minlstm_forward, minlstm_backward),
         "indrnn": (indrnn_forward, indrnn_backward), "lru": (lru_forward, lru_backward)}
