"""minLSTM (Feng et al. 2024): the LSTM with gates from x_t alone and no output gate or cell/hidden split.

Per step, with [k_f | k_i | v] = x_t W_ih^T + b_ih (blocks f, i, h; W_ih (3H, I)):

    f_t = sigmoid(k_f)      i_t = sigmoid(k_i)      h~_t = g(v)      (g as in ``rnnlab.engine.cells.mingru``)
    f'_t = f_t / (f_t + i_t)      i'_t = i_t / (f_t + i_t)          normalised so that f' + i' = 1
    h_t = f'_t * h_{t-1} + i'_t * h~_t                              = a_t h_{t-1} + b_t

In log space: log f' = log sigmoid(k_f) - log(f + i) with log(f + i) = logaddexp(log f, log i), and log b =
log i' + log g(v). The carry dh_t/dh_{t-1} = diag(f'_t).

Backward, with S = f + i: df = (da - db h~) i / S^2, di = (db h~ - da) f / S^2, dh~ = db i / S;
dk_f = df f (1 - f), dk_i = di i (1 - i), dv = dh~ g'(v).
"""
from __future__ import annotations

import numpy as np

from rnnlab.engine.cells import linear
from rnnlab.engine.cells.activations import g, g_grad, log_g, log_sigmoid, sigmoid

STATE = ("h",)
GATES = ("f", "i")
BLOCKS = ("f", "i", "h")
SCAN = "associative"                # the default parallel scan; "log" (Feng et al.'s form) too
SCANS = ("associative", "log")


def param_shapes(I, H, bias):
    return linear.projection_shapes(3, I, H, bias)


def init(rng, I, H, bias, dtype, opts):
    return linear.uniform_init(rng, param_shapes(I, H, bias), H, dtype)


def coefficients(x, p, mask, log=False):
    P = linear.project(x, p)                                             # (T, B, 3H)
    H = P.shape[-1] // 3
    kf, ki, v = P[..., :H], P[..., H:2 * H], P[..., 2 * H:]
    f, i, ht = sigmoid(kf), sigmoid(ki), g(v)
    S = f + i
    a, b = f / S, (i / S) * ht
    log_a = log_b = None
    if log:
        lf, li = log_sigmoid(kf), log_sigmoid(ki)
        lS = np.logaddexp(lf, li)
        log_a, log_b = lf - lS, li - lS + log_g(v)
    a, b, log_a, log_b = linear.apply_mask(mask, a, b, log_a, log_b)
    return a, b, log_a, log_b, {"kf": kf, "ki": ki, "v": v, "f_raw": f, "i_raw": i, "ht": ht, "f": f / S,
                                "i": i / S}


def coefficients_backward(da, db, c):
    f, i, ht = c["f_raw"], c["i_raw"], c["ht"]
    S2 = (f + i) ** 2
    df = (da - db * ht) * i / S2
    di = (db * ht - da) * f / S2
    dv = db * (i / (f + i)) * g_grad(c["v"])
    return np.concatenate([df * f * (1.0 - f), di * i * (1.0 - i), dv], axis=-1)


forward, backward, carry = linear.make(coefficients, coefficients_backward, GATES)
