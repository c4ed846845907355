"""minGRU (Feng et al. 2024, "Were RNNs All We Needed?"): the GRU with gates that do not read h_{t-1}.

Per step, with the input projection [k | v] = x_t W_ih^T + b_ih (blocks z, h; W_ih (2H, I)):

    z_t = sigmoid(k_t)                      update gate, from x_t alone
    h~_t = g(v_t)                           candidate; g(v) = v + 1/2 (v >= 0), sigmoid(v) (v < 0)
    h_t = (1 - z_t) * h_{t-1} + z_t * h~_t   = a_t h_{t-1} + b_t

a linear recurrence with a_t = 1 - z_t in (0, 1) and b_t = z_t h~_t > 0: ``rnnlab.engine.scan`` runs it step by step,
as the associative doubling scan, or in log space (log a = log sigmoid(-k), log b = log sigmoid(k) + log g(v)). The carry
dh_t/dh_{t-1} = diag(1 - z_t) is exact: no W_hh, no tanh'.

Backward, from dL/da_t and dL/db_t (``scan.backward``):

    dz = -da + db * h~        dk = dz * z (1 - z)        dv = db * z * g'(v)
"""
from __future__ import annotations

import numpy as np

from rnnlab.engine.cells import linear
from rnnlab.engine.cells.activations import g, g_grad, log_g, log_sigmoid, sigmoid

STATE = ("h",)
GATES = ("z",)
BLOCKS = ("z", "h")
SCAN = "associative"                # the default parallel scan; "log" (Feng et al.'s form) too
SCANS = ("associative", "log")


def param_shapes(I, H, bias):
    return linear.projection_shapes(2, I, H, bias)


def init(rng, I, H, bias, dtype, opts):
    return linear.uniform_init(rng, param_shapes(I, H, bias), H, dtype)


def coefficients(x, p, mask, log=False):
    """x (T, B, I) -> (a, b, log a or None, log b or None, cache), masked (a = 1, b = 0 at padding)."""
    P = linear.project(x, p)                                             # (T, B, 2H)
    H = P.shape[-1] // 2
    k, v = P[..., :H], P[..., H:]
    z, ht = sigmoid(k), g(v)
    a, b = 1.0 - z, z * ht
    log_a = log_b = None
    if log:
        log_a, log_b = log_sigmoid(-k), log_sigmoid(k) + log_g(v)
    a, b, log_a, log_b = linear.apply_mask(mask, a, b, log_a, log_b)
    return a, b, log_a, log_b, {"k": k, "v": v, "z": z, "ht": ht}


def coefficients_backward(da, db, c):
    """-> dL/d[k | v] (T, B, 2H)."""
    z = c["z"]
    dk = (-da + db * c["ht"]) * z * (1.0 - z)
    dv = db * z * g_grad(c["v"])
    return np.concatenate([dk, dv], axis=-1)


forward, backward, carry = linear.make(coefficients, coefficients_backward, GATES)
