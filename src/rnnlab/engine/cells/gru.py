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

``ln`` {"h": (gamma, beta)} (reset="after"), the layer-normalised GRU: gh = LN(h_{t-1} W_hh^T) + b_hh in place of
the recurrent product (the input projection is normalised outside the loop); backward takes the gradient of
gh through LN's backward and returns the shares of b_hh and of the gain and bias as a fourth value.

``rec_mask`` (B, H), variational recurrent dropout: h_{t-1} * m is the operand of every product with W_hh
(and of r * h for reset="before"); the interpolation h_t = (1 - z) n + z h_{t-1} keeps the unmasked h_{t-1}.
The gradients through the products are multiplied by m.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rnnlab.engine.cells import layernorm
from rnnlab.engine.cells.activations import sigmoid

G = 3
STATE = ("h",)
GATES = ("r", "z", "n")


class StepCache(NamedTuple):
    h_prev: np.ndarray          # (B, H)
    r: np.ndarray
    z: np.ndarray
    n: np.ndarray
    extra: np.ndarray           # after: h W_hn^T + b_hn (for dr); before: r * h_prev (the n block's operand)
    h_rec: np.ndarray | None = None     # the products' operand h_prev * m under recurrent dropout, else None
    ln: tuple | None = None             # layer norm: (v_hat, 1/s) of the recurrent product


def step_forward(xw, state, W_hh, b_hh, reset="after", rec_mask=None, ln=None):
    (h_prev,) = state                               # (B, H)
    H = h_prev.shape[-1]
    h_rec = h_prev if rec_mask is None else h_prev * rec_mask     # what the products read
    ln_h = None
    if reset == "after":
        gh = h_rec @ W_hh.T                         # (B, 3H)
        if ln is not None:
            gh, ln_h = layernorm.forward(gh, *ln["h"])
        if b_hh is not None:
            gh += b_hh
        rz = sigmoid(xw[:, :2 * H] + gh[:, :2 * H])  # (B, 2H)
        r, z = rz[:, :H], rz[:, H:]
        ghn = gh[:, 2 * H:]                         # h W_hn^T + b_hn, cached for dr
        n = np.tanh(xw[:, 2 * H:] + r * ghn)
        extra = ghn
    else:
        gh = h_rec @ W_hh[:2 * H].T                 # (B, 2H)
        if b_hh is not None:
            gh += b_hh[:2 * H]
        rz = sigmoid(xw[:, :2 * H] + gh)
        r, z = rz[:, :H], rz[:, H:]
        rh = r * h_rec                              # (B, H), the n block's recurrent operand
        a_n = xw[:, 2 * H:] + rh @ W_hh[2 * H:].T
        if b_hh is not None:
            a_n += b_hh[2 * H:]
        n = np.tanh(a_n)
        extra = rh
    h = n + z * (h_prev - n)                        # = (1 - z) n + z h_prev
    return (h,), StepCache(h_prev, r, z, n, extra, None if rec_mask is None else h_rec, ln_h)


def step_backward(dstate, cache, W_hh, reset="after", rec_mask=None, ln=None):
    (dh,) = dstate
    h_prev, r, z, n, extra, h_rec, ln_h = cache
    h_rec = h_prev if h_rec is None else h_rec
    m = 1.0 if rec_mask is None else rec_mask
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
        if ln is not None:                                           # through LN to h W_hh^T
            draw, dg, db = layernorm.backward(dhw, ln["h"][0], ln_h)
            dh_prev += (draw @ W_hh) * m
            return dxw, draw, (dh_prev,), {"bias_hh": dhw.sum(axis=0), "ln_hh_weight": dg, "ln_hh_bias": db}
        dh_prev += (dhw @ W_hh) * m
    else:
        drh = dn_pre @ W_hh[2 * H:]                 # (B, H), through (r h) W_hn^T
        dr_pre = drh * h_rec * r * (1.0 - r)
        dz_pre = dz * z * (1.0 - z)
        dh_prev += drh * r * m
        dxw = np.concatenate([dr_pre, dz_pre, dn_pre], axis=1)
        dhw = dxw
        dh_prev += (dxw[:, :2 * H] @ W_hh[:2 * H]) * m
    return dxw, dhw, (dh_prev,)


def grad_W_hh(dHW, caches, reset="after", **_):
    """dW_hh from the recurrent pre-activation gradients dHW (T, B, 3H), one product per operand."""
    H = dHW.shape[-1] // 3
    H_prev = np.stack([c.h_prev if c.h_rec is None else c.h_rec for c in caches]).reshape(-1, H)  # (T*B, H)
    dHW = dHW.reshape(-1, 3 * H)
    if reset == "after":
        return dHW.T @ H_prev
    RH = np.stack([c.extra for c in caches]).reshape(-1, H)       # r * h_prev
    return np.concatenate([dHW[:, :2 * H].T @ H_prev, dHW[:, 2 * H:].T @ RH], axis=0)
