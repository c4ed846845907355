"""The activations the cells share."""
from __future__ import annotations

import numpy as np


def sigmoid(x):
    # the tanh form never overflows (1/(1+exp(-x)) does for x << 0 in float32)
    return 0.5 * np.tanh(0.5 * x) + 0.5


def softplus(x):
    """log(1 + exp(x)), written so exp never overflows."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def log_sigmoid(x):
    return -softplus(-x)


def g(v):
    """Feng et al. (2024)'s candidate activation, positive so the minimal cells' scan runs in log space:
    g(v) = v + 1/2 for v >= 0, sigmoid(v) below (continuous, with slope 1/4 -> 1 at 0 from below)."""
    return np.where(v >= 0, v + 0.5, sigmoid(v))


def g_grad(v):
    s = sigmoid(v)
    d = s * (1.0 - s)
    d[v >= 0] = 1.0
    return d


def log_g(v):
    return np.where(v >= 0, np.log(np.maximum(v, 0) + 0.5), log_sigmoid(v))
