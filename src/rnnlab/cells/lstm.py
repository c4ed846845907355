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

``peephole`` (3H,) = [p_i | p_f | p_o], the diagonal cell-to-gate weights of Gers and Schmidhuber (2000), as
ONNX's LSTM input P has them:

    i = sigmoid(a_i + p_i * c_{t-1})   f = sigmoid(a_f + p_f * c_{t-1})   o = sigmoid(a_o + p_o * c_t)

Backward: da_o = do o (1 - o) first, then dc += da_o * p_o (o reads c_t); dc_{t-1} = dc * f + da_i * p_i +
da_f * p_f; and after the loop dp_i = sum da_i c_{t-1}, dp_f = sum da_f c_{t-1}, dp_o = sum da_o c_t
(``grad_peephole``).

``proj`` (P, H), the projection of Sak et al. (2014) as torch's ``proj_size``: h_t = (o * tanh(c_t)) W_hr^T, of
size P, is the state the next step's product reads (W_hh (4H, P)). Backward: dm = dh W_hr replaces dh in the
formulas above, and the step returns its share of dW_hr = sum_t dh_t^T m_t as a fourth value.

``ln`` {"h": (gamma, beta), "c": (gamma, beta)}, the layer-normalised LSTM of Ba et al. (2016): the recurrent
product and the cell state are normalised (``rnnlab.cells.layernorm``; the input projection is normalised
outside the loop, ``rnnlab.recurrent``):

    a_t = xw_t + LN_h(h_{t-1} W_hh^T) + b_hh          h_t = o * tanh(LN_c(c_t))

Backward runs the same formulas with tanh(LN_c(c_t)) in place of tanh(c_t), then dc_t += LN_c's backward of
dh o (1 - tanh^2), and the recurrent product's gradient is LN_h's backward of da; the step returns the shares
of b_hh and of the LN gains and biases as a fourth value.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import layernorm
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
    c: np.ndarray | None = None  # with peepholes: c_t, which the output gate reads
    ln: tuple | None = None     # layer norm: the (v_hat, 1/s) of the recurrent product and of c_t


def step_forward(xw, state, W_hh, b_hh, rec_mask=None, peephole=None, proj=None, ln=None):
    h_prev, c_prev = state                          # (B, H) each; h (B, P) with a projection
    if rec_mask is not None:
        h_prev = h_prev * rec_mask
    H = c_prev.shape[-1]
    if ln is not None:
        return _ln_forward(xw, h_prev, c_prev, W_hh, b_hh, ln, H)
    a = xw + h_prev @ W_hh.T                        # (B, 4H)
    if b_hh is not None:
        a += b_hh
    if peephole is not None:
        (h, c), cache = _peephole_forward(a, h_prev, c_prev, peephole, H)
        return ((h @ proj.T, c) if proj is not None else (h, c)), cache
    if proj is not None:
        (h, c), cache = _gates_forward(a, h_prev, c_prev, H)
        return (h @ proj.T, c), cache
    return _gates_forward(a, h_prev, c_prev, H)


def _ln_forward(xw, h_prev, c_prev, W_hh, b_hh, ln, H):
    gh, ln_h = layernorm.forward(h_prev @ W_hh.T, *ln["h"])
    a = xw + gh
    if b_hh is not None:
        a += b_hh
    s = sigmoid(a)
    i, f, o = s[:, :H], s[:, H:2 * H], s[:, 3 * H:]
    g = np.tanh(a[:, 2 * H:3 * H])
    c = f * c_prev + i * g
    cn, ln_c = layernorm.forward(c, *ln["c"])
    tanh_c = np.tanh(cn)
    return (o * tanh_c, c), StepCache(h_prev, c_prev, i, f, g, o, tanh_c, None, (ln_h, ln_c))


def _gates_forward(a, h_prev, c_prev, H):
    s = sigmoid(a)                                  # i, f, o read from here; the g block is unused
    i, f, o = s[:, :H], s[:, H:2 * H], s[:, 3 * H:]
    g = np.tanh(a[:, 2 * H:3 * H])
    c = f * c_prev + i * g                          # (B, H)
    tanh_c = np.tanh(c)
    h = o * tanh_c
    return (h, c), StepCache(h_prev, c_prev, i, f, g, o, tanh_c)


def _peephole_forward(a, h_prev, c_prev, p, H):
    i = sigmoid(a[:, :H] + p[:H] * c_prev)
    f = sigmoid(a[:, H:2 * H] + p[H:2 * H] * c_prev)
    g = np.tanh(a[:, 2 * H:3 * H])
    c = f * c_prev + i * g
    o = sigmoid(a[:, 3 * H:] + p[2 * H:] * c)
    tanh_c = np.tanh(c)
    return (o * tanh_c, c), StepCache(h_prev, c_prev, i, f, g, o, tanh_c, c)


def step_backward(dstate, cache, W_hh, rec_mask=None, peephole=None, proj=None, ln=None):
    dh, dc = dstate
    if ln is not None:
        return _ln_backward(dh, dc, cache, W_hh, rec_mask, ln)
    if proj is not None:                            # h = m W_hr^T with m = o tanh(c)
        m = cache.o * cache.tanh_c                  # broadcast: the diagnostics pass identity rows as the batch
        dW_hr = dh.T @ np.broadcast_to(m, (dh.shape[0], m.shape[1]))
        dh = dh @ proj
    if peephole is not None:
        res = _peephole_backward(dh, dc, cache, W_hh, rec_mask, peephole)
    else:
        res = _gates_backward(dh, dc, cache, W_hh, rec_mask)
    return res if proj is None else res + ({"weight_hr": dW_hr},)


def _ln_backward(dh, dc, cache, W_hh, rec_mask, ln):
    h_prev, c_prev, i, f, g, o, tanh_c, _, (ln_h, ln_c) = cache
    do = dh * tanh_c
    dcx, dgc, dbc = layernorm.backward(dh * o * (1.0 - tanh_c * tanh_c), ln["c"][0], ln_c)
    dc = dc + dcx
    da = np.concatenate([(dc * g) * i * (1.0 - i), (dc * c_prev) * f * (1.0 - f), (dc * i) * (1.0 - g * g),
                         do * o * (1.0 - o)], axis=1)
    draw, dgh, dbh = layernorm.backward(da, ln["h"][0], ln_h)        # through LN_h to h W_hh^T
    dh_prev = draw @ W_hh
    if rec_mask is not None:
        dh_prev *= rec_mask
    return da, draw, (dh_prev, dc * f), {"bias_hh": da.sum(axis=0), "ln_hh_weight": dgh, "ln_hh_bias": dbh,
                                         "ln_c_weight": dgc, "ln_c_bias": dbc}


def _gates_backward(dh, dc, cache, W_hh, rec_mask):
    h_prev, c_prev, i, f, g, o, tanh_c, _, _ = cache
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


def _peephole_backward(dh, dc, cache, W_hh, rec_mask, p):
    h_prev, c_prev, i, f, g, o, tanh_c, c, _ = cache
    H = c_prev.shape[-1]
    da_o = dh * tanh_c * o * (1.0 - o)
    dc = dc + dh * o * (1.0 - tanh_c * tanh_c) + da_o * p[2 * H:]
    da_i = (dc * g) * i * (1.0 - i)
    da_f = (dc * c_prev) * f * (1.0 - f)
    da = np.concatenate([da_i, da_f, (dc * i) * (1.0 - g * g), da_o], axis=1)
    dc_prev = dc * f + da_i * p[:H] + da_f * p[H:2 * H]
    dh_prev = da @ W_hh
    if rec_mask is not None:
        dh_prev *= rec_mask
    return da, da, (dh_prev, dc_prev)


def grad_peephole(dXW, caches):
    """[dp_i | dp_f | dp_o] (3H,) from the pre-activation gradients dXW (T, B, 4H) and the step caches."""
    H = dXW.shape[-1] // 4
    c_prev = np.stack([s.c_prev for s in caches])
    c = np.stack([s.c for s in caches])
    return np.concatenate([(dXW[..., :H] * c_prev).sum(axis=(0, 1)), (dXW[..., H:2 * H] * c_prev).sum(axis=(0, 1)),
                           (dXW[..., 3 * H:] * c).sum(axis=(0, 1))])


def grad_W_hh(dHW, caches, **_):
    """dW_hh = sum_t da_t^T h_{t-1}: one product over all steps. dHW (T, B, 4H)."""
    H_prev = np.stack([c.h_prev for c in caches])   # (T, B, H)
    return dHW.reshape(-1, dHW.shape[-1]).T @ H_prev.reshape(-1, H_prev.shape[-1])
