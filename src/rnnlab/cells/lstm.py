"""LSTM cell, gate blocks in PyTorch order i, f, g, o (seed: "LSTM结构与原理").

Forward, per step (xw, a (B, 4H); h, c (B, H); W_hh (4H, H)):

    [a_i | a_f | a_g | a_o] = xw_t + h_{t-1} W_hh^T + b_hh
    i = sigmoid(a_i)   input gate           f = sigmoid(a_f)   forget gate
    g = tanh(a_g)      candidate cell        o = sigmoid(a_o)   output gate
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

Backward, with dh = dL/dh_t and dc = dL/dc_t arriving from step t+1:

    do  = dh * tanh(c_t)
    dc += dh * o * (1 - tanh(c_t)^2)
    di  = dc * g      df = dc * c_{t-1}      dg = dc * i
    dc_{t-1} = dc * f                        the forget-gate path: scaled by f, not by W_hh
    da  = [di i(1-i) | df f(1-f) | dg (1-g^2) | do o(1-o)]
    dh_{t-1} = da W_hh

``rec_mask`` (B, H), variational recurrent dropout: h_{t-1} * m enters the product in place of h_{t-1};
dh_{t-1} = (da W_hh) * m; the cache's h_prev is the masked operand.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .activations import sigmoid

G = 4
STATE = ("h", "c")
GATES = ("i", "f", "g", "o")


class StepCache(NamedTuple):
    h_prev: np.ndarray          # (B, H) the recurrent product's operand (masked under recurrent dropout)
    c_prev: np.ndarray
    i: np.ndarray
    f: np.ndarray
    g: np.ndarray
    o: np.ndarray
    tanh_c: np.ndarray          # cached: backward needs it and h needs it


def step_forward(xw, state, W_hh, b_hh, rec_mask=None):
    h_prev, c_prev = state                          # (B, H) each
    if rec_mask is not None:
        h_prev = h_prev * rec_mask
    H = h_prev.shape[-1]
    a = xw + h_prev @ W_hh.T                        # (B, 4H)
    if b_hh is not None:
        a += b_hh
    s = sigmoid(a)                                  # i, f, o read from here; the g block is unused
    i, f, o = s[:, :H], s[:, H:2 * H], s[:, 3 * H:]
    g = np.tanh(a[:, 2 * H:3 * H])
    c = f * c_prev + i * g                          # (B, H)
    tanh_c = np.tanh(c)
    h = o * tanh_c
    return (h, c), StepCache(h_prev, c_prev, i, f, g, o, tanh_c)


def step_backward(dstate, cache, W_hh, rec_mask=None):
    dh, dc = dstate
    h_prev, c_prev, i, f, g, o, tanh_c = cache
    do = dh * tanh_c
    dc = dc + dh * o * (1.0 - tanh_c * tanh_c)      # backprop through h = o * tanh(c)
    da = np.concatenate(
        [
            (dc * g) * i * (1.0 - i),               # input gate
            (dc * c_prev) * f * (1.0 - f),          # forget gate
            (dc * i) * (1.0 - g * g),               # candidate
            do * o * (1.0 - o),                     # output gate
        ],
        axis=1,
    )                                               # (B, 4H)
    dc_prev = dc * f                                # the cell path
    dh_prev = da @ W_hh                             # (B, H)
    if rec_mask is not None:
        dh_prev *= rec_mask
    return da, da, (dh_prev, dc_prev)


def grad_W_hh(dHW, caches, **_):
    """dW_hh = sum_t da_t^T h_{t-1}: one product over all steps. dHW (T, B, 4H)."""
    H_prev = np.stack([c.h_prev for c in caches])   # (T, B, H)
    return dHW.reshape(-1, dHW.shape[-1]).T @ H_prev.reshape(-1, H_prev.shape[-1])
