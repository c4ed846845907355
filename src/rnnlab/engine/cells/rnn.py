"""Vanilla (Elman) RNN cell -- the seed's hidden layer, with tanh or ReLU.

Forward, per step (shapes: xw, h (B, H); W_hh (H, H); b_hh (H,)):

    a_t = xw_t + h_{t-1} W_hh^T + b_hh          xw_t = x_t W_ih^T + b_ih, computed outside the loop
    h_t = tanh(a_t)         or  relu(a_t)  or  a_t ("identity": the linear RNN of the gradient diagnostics)

Backward, with dh = dL/dh_t (from the output at t and from step t+1):

    da_t     = dh * (1 - h_t^2)                 tanh' from the cached output (relu: dh * [h_t > 0])
    dh_{t-1} = da_t W_hh
    dW_hh    = sum_t da_t^T h_{t-1}             one product after the loop (grad_W_hh)

``rec_mask`` (B, H), variational recurrent dropout (Gal and Ghahramani 2016): h_{t-1} * m enters the product
in place of h_{t-1} at every step of the sequence; then dh_{t-1} = (da_t W_hh) * m and the cache's h_prev is
the masked one (the product's operand).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

G = 1  # gate blocks stacked in W_ih / W_hh
STATE = ("h",)
GATES = ("h",)                                      # the one block of W_hh (no gates)


class StepCache(NamedTuple):
    h_prev: np.ndarray          # (B, H) the recurrent product's operand (masked under recurrent dropout)
    h: np.ndarray               # the step's output: tanh' and relu' are read from it


def step_forward(xw, state, W_hh, b_hh, nonlinearity="tanh", rec_mask=None):
    (h_prev,) = state                               # (B, H)
    if rec_mask is not None:
        h_prev = h_prev * rec_mask
    a = xw + h_prev @ W_hh.T                        # (B, H)
    if b_hh is not None:
        a += b_hh
    if nonlinearity == "tanh":
        h = np.tanh(a)
    elif nonlinearity == "relu":
        h = np.maximum(a, 0.0)
    else:
        h = a                                       # identity
    return (h,), StepCache(h_prev, h)


def step_backward(dstate, cache, W_hh, nonlinearity="tanh", rec_mask=None):
    (dh,) = dstate
    h_prev, h = cache
    if nonlinearity == "tanh":
        da = dh * (1.0 - h * h)                     # backprop through tanh
    elif nonlinearity == "relu":
        da = dh * (h > 0)                           # backprop through relu
    else:
        da = dh
    dh_prev = da @ W_hh                             # (B, H)
    if rec_mask is not None:
        dh_prev *= rec_mask
    return da, da, (dh_prev,)


def grad_W_hh(dHW, caches, **_):
    """dW_hh = sum_t dhw_t^T h_{t-1}: one product over all steps. dHW (T, B, H)."""
    H_prev = np.stack([c.h_prev for c in caches])   # (T, B, H)
    return dHW.reshape(-1, dHW.shape[-1]).T @ H_prev.reshape(-1, H_prev.shape[-1])
