"""Layer normalisation over the last axis (Ba et al. 2016), the block the layer-normalised LSTM and GRU use.

    y = gamma * (v - mean(v)) / sqrt(var(v) + eps) + beta          per row, over the K features of v

Backward, with v_hat = (v - mean) / s and g = dy * gamma:

    dv = (g - mean(g) - v_hat * mean(g * v_hat)) / s       dgamma = sum dy * v_hat       dbeta = sum dy
"""
from __future__ import annotations

import numpy as np

EPS = 1e-5                          # torch.nn.functional.layer_norm's default


def forward(v, gamma, beta):
    """v (..., K) -> (y, (v_hat, 1 / s))."""
    mu = v.mean(axis=-1, keepdims=True)
    d = v - mu
    inv = 1.0 / np.sqrt((d * d).mean(axis=-1, keepdims=True) + EPS)
    v_hat = d * inv
    return v_hat * gamma + beta, (v_hat, inv)


def backward(dy, gamma, cache):
    """-> (dv, dgamma, dbeta), the parameter gradients summed over every leading axis."""
    v_hat, inv = cache
    g = dy * gamma
    dv = inv * (g - g.mean(axis=-1, keepdims=True) - v_hat * (g * v_hat).mean(axis=-1, keepdims=True))
    lead = tuple(range(dy.ndim - 1))
    return dv, (dy * v_hat).sum(axis=lead), dy.sum(axis=lead)
