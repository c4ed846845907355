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
product and the cell state are normalised (``rnnlab.engine.cells.layernorm``; the input projection is normalised
outside the loop, ``rnnlab.engine._reference``):

    a_t = xw_t + LN_h(h_{t-1} W_hh^T) + b_hh          h_t = o * tanh(LN_c(c_t))

Backward runs the same formulas with tanh(LN_c(c_t)) in place of tanh(c_t), then dc_t += LN_c's backward of
dh o (1 - tanh^2), and the recurrent product's gradient is LN_h's backward of da; the step returns the shares
of b_hh and of the LN gains and biases as a fourth value.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rnnlab.engine.cells import layernorm
from rnnlab.engine.cells.activations import sigmoid

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
    """The backward of every variant in one pass (the equations in the module docstring): the projection first,
    then do, dL/dc_t through h = o tanh(c_t) (through LN_c under layer norm; plus the output gate's peephole),
    [di | df | dg | do] once, the cell path dc_{t-1} = dc f (plus the input and forget peepholes), and dh_{t-1}
    through W_hh (through LN_h under layer norm). Returns (da, dhw, (dh_{t-1}, dc_{t-1})) and, with a projection
    or layer norm, the shares of their parameters' gradients as a fourth value."""
    dh, dc = dstate
    h_prev, c_prev, i, f, g, o, tanh_c, _, lns = cache
    H = c_prev.shape[-1]
    extra = {}
    if proj is not None:                            # h = m W_hr^T with m = o tanh(c)
        m = o * tanh_c                              # broadcast: the diagnostics pass identity rows as the batch
        extra["weight_hr"] = dh.T @ np.broadcast_to(m, (dh.shape[0], m.shape[1]))
        dh = dh @ proj
    da_o = (dh * tanh_c) * o * (1.0 - o)            # output gate
    dct = dh * o * (1.0 - tanh_c * tanh_c)          # backprop through h = o * tanh(c)
    if ln is not None:                              # ... and through LN_c
        dct, extra["ln_c_weight"], extra["ln_c_bias"] = layernorm.backward(dct, ln["c"][0], lns[1])
    dc = dc + dct
    if peephole is not None:                        # o reads c_t
        dc = dc + da_o * peephole[2 * H:]
    da_i = (dc * g) * i * (1.0 - i)                 # input gate
    da_f = (dc * c_prev) * f * (1.0 - f)            # forget gate
    da = np.concatenate([da_i, da_f, (dc * i) * (1.0 - g * g), da_o], axis=1)     # (B, 4H), candidate third
    dc_prev = dc * f                                # the cell path
    if peephole is not None:
        dc_prev = dc_prev + da_i * peephole[:H] + da_f * peephole[H:2 * H]
    dhw = da
    if ln is not None:                              # through LN_h to h W_hh^T
        dhw, extra["ln_hh_weight"], extra["ln_hh_bias"] = layernorm.backward(da, ln["h"][0], lns[0])
        extra["bias_hh"] = da.sum(axis=0)
    dh_prev = dhw @ W_hh                            # (B, H)
    if rec_mask is not None:
        dh_prev *= rec_mask
    return (da, dhw, (dh_prev, dc_prev)) + ((extra,) if extra else ())


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
