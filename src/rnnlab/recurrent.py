"""The one time loop: run a cell over a sequence, forward and backward, in either direction.

    forward:  xw (T, B, G*H) -> outputs (T, B, H), final state, cache
    backward: d_out (T, B, H), d_state_T -> dxw (T, B, G*H), d_state_0, dW_hh, db_hh

``mask`` (T, B, 1), 1 at valid steps and 0 at padding, implements ragged batches exactly as torch's
packed sequences do: at a padded step the state is carried unchanged and the output is zero, so
``h_n`` is each sequence's last valid state and the reverse direction starts at each sequence's own
last valid step (padding sits at the end, where the reverse scan starts, and is skipped).
Gradients that arrive at padded outputs are ignored.
"""
from __future__ import annotations

import numpy as np


def scan_forward(cell, xw, state0, W_hh, b_hh, mask=None, reverse=False, opts=None):
    opts = opts or {}
    T = xw.shape[0]
    state = tuple(state0)
    out = np.empty(xw.shape[:2] + (state[0].shape[-1],), dtype=xw.dtype)   # (T, B, H)
    caches = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        new, caches[t] = cell.step_forward(xw[t], state, W_hh, b_hh, **opts)
        if mask is None:
            state = new
            out[t] = new[0]
        else:
            m = mask[t]                                                     # (B, 1)
            state = tuple(np.where(m, s_new, s) for s_new, s in zip(new, state))
            out[t] = new[0] * m
    return out, state, (caches, mask, reverse)


def scan_backward(cell, d_out, d_state, cache, W_hh, has_bias=True, opts=None, record=None):
    """``record``: an optional list that receives ``(t, dstate_t)``, the total gradient with respect to each
    step's state (dL/dh_t, and dL/dc_t for the LSTM) -- what the gradient-flow diagnostics plot."""
    opts = opts or {}
    caches, mask, reverse = cache
    T = len(caches)
    GH = W_hh.shape[0]
    dXW = np.empty(d_out.shape[:2] + (GH,), dtype=d_out.dtype)             # (T, B, G*H)
    dHW = dXW
    dstate = tuple(d_state)
    for t in (range(T) if reverse else range(T - 1, -1, -1)):
        if mask is None:
            d_new = (dstate[0] + d_out[t],) + dstate[1:]
            carry = None
        else:
            m = mask[t]
            d_total = (dstate[0] + d_out[t] * m,) + dstate[1:]              # padded outputs ignored
            d_new = tuple(d * m for d in d_total)                            # into the cell at valid rows
            carry = tuple(d * (1 - m) for d in d_total)                      # past the cell at padded rows
        if record is not None:
            record.append((t, d_new if mask is None else d_total))
        dxw, dhw, dstate = cell.step_backward(d_new, caches[t], W_hh, **opts)
        if carry is not None:
            dstate = tuple(ds + c for ds, c in zip(dstate, carry))
        dXW[t] = dxw
        if dhw is not dxw:
            if dHW is dXW:
                dHW = np.empty_like(dXW)
            dHW[t] = dhw
    dW_hh = cell.grad_W_hh(dHW, caches, **opts)
    db_hh = dHW.sum(axis=(0, 1)) if has_bias else None
    return dXW, dstate, dW_hh, db_hh
