"""IndRNN (Li et al. 2018): every unit keeps its own recurrent weight, a diagonal W_hh.

    h_t = relu(x_t W_ih^T + b_ih + u * h_{t-1})             u (H,): ``weight_hh``, one weight per unit

The carry dh_t/dh_{t-1} = diag(u * [pre_t > 0]) is exact; over a span it is the product of those factors, so
|u_j| <= 2^(1/T) (Li et al.'s bound, ``recurrent_max``; the layer clips u after each optimizer step) keeps it
from exploding over T steps. The recurrence is not linear (relu), so it runs step by step only.

Backward, with G_t = dL/dh_t total:  dpre_t = G_t [pre_t > 0],  du += dpre_t h_{t-1},  G_{t-1} += dpre_t u.
"""
from __future__ import annotations

import numpy as np

from rnnlab.engine._caches import DiagonalArrays
from rnnlab.engine.cells import linear

STATE = ("h",)
GATES = ()
BLOCKS = ("h",)
SCAN = None                     # nonlinear: no parallel scan
SCANS = ()


def param_shapes(I, H, bias):
    return {"weight_ih": (H, I), "weight_hh": (H,), **({"bias_ih": (H,)} if bias else {})}


def init(rng, I, H, bias, dtype, opts):
    """W_ih, b_ih as torch's Linear; u uniform in [0, min(1, recurrent_max)]."""
    k = 1.0 / np.sqrt(I)
    p = {n: linear.draw(lambda m: rng.uniform(-k, k, m), s, dtype) for n, s in param_shapes(I, H, bias).items()}
    top = min(1.0, opts.get("recurrent_max") or 1.0)
    p["weight_hh"] = linear.draw(lambda m: rng.uniform(0.0, top, m), H, dtype)
    return p


def forward(x, p, state0, mask, how):
    P = linear.project(x, p)                                             # (T, B, H)
    u = p["weight_hh"]
    (h,) = state0
    T = P.shape[0]
    pre = np.empty_like(P)
    hs = np.empty_like(P)
    for t in range(T):
        pre[t] = P[t] + u * h
        new = np.maximum(pre[t], 0)
        h = new if mask is None else np.where(mask[t] > 0, new, h)
        hs[t] = h
    out = hs if mask is None else hs * mask
    carry = (pre > 0) * u
    if mask is not None:
        carry = np.where(mask > 0, carry, 1.0)
    return out, (h,), DiagonalArrays(x, mask, carry.astype(P.dtype), hs, state0[0], {"pre": pre}, how)


def backward(d_out, d_state, cache, p):
    u, m, pre = p["weight_hh"], cache.mask, cache.extra["pre"]
    T = pre.shape[0]
    G = np.empty_like(pre)
    dP = np.empty_like(pre)
    du = np.zeros_like(u)
    (g,) = d_state
    g = g.copy()
    for t in range(T - 1, -1, -1):
        g = g + (d_out[t] if m is None else d_out[t] * m[t])
        G[t] = g
        h_prev = cache.h0 if t == 0 else cache.h[t - 1]
        dpre = g * (pre[t] > 0)
        if m is not None:
            dpre = dpre * m[t]
            g = g * (1 - m[t]) + dpre * u                                # padded rows carry g past the step
        else:
            g = dpre * u
        du += (dpre * h_prev).sum(axis=0)
        dP[t] = dpre
    dx, grads = linear.project_backward(dP, cache.x, p)
    grads["weight_hh"] = du
    return dx, (g,), grads, G


def carry(cache):
    return cache.a
