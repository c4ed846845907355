"""GRU cell, gate blocks in PyTorch order r, z, n (seed: "GRU结构及原理").

Forward, per step (xw (B, 3H) = x_t W_ih^T + b_ih split into x_r, x_z, x_n; W_hh (3H, H) into W_hr, W_hz, W_hn):

    r = sigmoid(x_r + h_{t-1} W_hr^T + b_hr)                 reset gate
    z = sigmoid(x_z + h_{t-1} W_hz^T + b_hz)                 update gate
    n = tanh(x_n + r * (h_{t-1} W_hn^T + b_hn))              reset="after"  (PyTorch, cuDNN, ONNX lbr=1)
    n = tanh(x_n + (r * h_{t-1}) W_hn^T + b_hn)              reset="before" (Cho et al. 2014)
    h_t = (1 - z) * n + z * h_{t-1}

Backward, with dh = dL/dh_t:

    dz = dh * (h_{t-1} - n)      dn = dh * (1 - z)      dh_{t-1} = dh * z + ...
    dn_pre = dn * (1 - n^2)
    after:  dr = dn_pre * (h_{t-1} W_hn^T + b_hn);  the recurrent n-block gradient is dn_pre * r
    before: d(r h) = dn_pre W_hn;  dr = d(r h) * h_{t-1};  dh_{t-1} += d(r h) * r
    dr_pre = dr r (1 - r),  dz_pre = dz z (1 - z)
    dh_{t-1} += [dr_pre | dz_pre | dn-block] W_hh            (before: only the r, z blocks here)
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .activations import sigmoid

G = 3
STATE = ("h",)
GATES = ("r", "z", "n")


class StepCache(NamedTuple):
    h_prev: np.ndarray          # (B, H)
    r: np.ndarray
    z: np.ndarray
    n: np.ndarray
    extra: np.ndarray           # after: h W_hn^T + b_hn (for dr); before: r * h_prev (the n block's operand)


def step_forward(xw, state, W_hh, b_hh, reset="after"):
    (h_prev,) = state                               # (B, H)
    H = h_prev.shape[-1]
    if reset == "after":
        gh = h_prev @ W_hh.T                        # (B, 3H)
        if b_hh is not None:
            gh += b_hh
        rz = sigmoid(xw[:, :2 * H] + gh[:, :2 * H])  # (B, 2H)
        r, z = rz[:, :H], rz[:, H:]
        ghn = gh[:, 2 * H:]                         # h W_hn^T + b_hn, cached for dr
        n = np.tanh(xw[:, 2 * H:] + r * ghn)
        extra = ghn
    else:
        gh = h_prev @ W_hh[:2 * H].T                # (B, 2H)
        if b_hh is not None:
            gh += b_hh[:2 * H]
        rz = sigmoid(xw[:, :2 * H] + gh)
        r, z = rz[:, :H], rz[:, H:]
        rh = r * h_prev                             # (B, H), the n block's recurrent operand
        a_n = xw[:, 2 * H:] + rh @ W_hh[2 * H:].T
        if b_hh is not None:
            a_n += b_hh[2 * H:]
        n = np.tanh(a_n)
        extra = rh
    h = n + z * (h_prev - n)                        # = (1 - z) n + z h_prev
    return (h,), StepCache(h_prev, r, z, n, extra)


def step_backward(dstate, cache, W_hh, reset="after"):
    (dh,) = dstate
    h_prev, r, z, n, extra = cache
    H = h_prev.shape[-1]
    dz = dh * (h_prev - n)
    dn_pre = dh * (1.0 - z) * (1.0 - n * n)         # backprop through h, then tanh
    dh_prev = dh * z                                # the direct (carry) path
    if reset == "after":
        dr = dn_pre * extra                         # extra = h W_hn^T + b_hn
        dr_pre = dr * r * (1.0 - r)
        dz_pre = dz * z * (1.0 - z)
        dxw = np.concatenate([dr_pre, dz_pre, dn_pre], axis=1)      # (B, 3H)
        dhw = np.concatenate([dr_pre, dz_pre, dn_pre * r], axis=1)  # (B, 3H)
        dh_prev += dhw @ W_hh
    else:
        drh = dn_pre @ W_hh[2 * H:]                 # (B, H), through (r h) W_hn^T
        dr_pre = drh * h_prev * r * (1.0 - r)
        dz_pre = dz * z * (1.0 - z)
        dh_prev += drh * r
        dxw = np.concatenate([dr_pre, dz_pre, dn_pre], axis=1)
        dhw = dxw
        dh_prev += dxw[:, :2 * H] @ W_hh[:2 * H]
    return dxw, dhw, (dh_prev,)


def grad_W_hh(dHW, caches, reset="after"):
    """dW_hh from the recurrent pre-activation gradients dHW (T, B, 3H), one product per operand."""
    H = dHW.shape[-1] // 3
    H_prev = np.stack([c.h_prev for c in caches]).reshape(-1, H)  # (T*B, H)
    dHW = dHW.reshape(-1, 3 * H)
    if reset == "after":
        return dHW.T @ H_prev
    RH = np.stack([c.extra for c in caches]).reshape(-1, H)       # r * h_prev
    return np.concatenate([dHW[:, :2 * H].T @ H_prev, dHW[:, 2 * H:].T @ RH], axis=0)
