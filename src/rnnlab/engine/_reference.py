"""backend="numpy": the readable reference. The one time loop over a cell of ``rnnlab.engine.cells``.

    forward(...)  x (T, B, I) -> output (T, B, H), final state, StepCaches    (the engine's contract)
    backward(...) d_out (T, B, H), d_state_T -> Grads                          (every gradient)
    time_forward / time_backward                                               the loop itself, from xw

The input projection x W_ih^T + b_ih is one product over all steps before the loop; dW_ih, dx and the
bias gradients are products and sums after it.

``mask`` (T, B, 1), 1 at valid steps and 0 at padding, implements ragged batches exactly as torch's
packed sequences do: at a padded step the state is carried unchanged and the output is zero, so
``h_n`` is each sequence's last valid state and the reverse direction starts at each sequence's own
last valid step (padding sits at the end, where the reverse scan starts, and is skipped).
Gradients that arrive at padded outputs are ignored.

``zone`` implements zoneout (Krueger et al. 2017): per state, the share k_t (T, B, H) of the new state taken
at each step, s_t = k_t * s_new + (1 - k_t) * s_{t-1} -- in training k is 0 or 1 per unit and step (a unit
zoned out keeps its previous value), at evaluation the expectation 1 - p. Padding is the special case k = 0 at
padded rows, so both share one code path (k * mask); the output is the zoned h_t.

``segment`` bounds BPTT memory: the forward keeps the state only at every ``segment``-th step and the
backward recomputes each segment's caches from it just before backpropagating through that segment
(about one extra forward pass of time for caches of ``segment`` steps instead of T). Results are the same.
"""
from __future__ import annotations

import numpy as np

from rnnlab.engine._caches import Grads, StepCaches
from rnnlab.engine.cells import CELLS
from rnnlab.engine.cells import layernorm


def _zone_shares(zone, mask, t):
    """The share of the new state per state at step t: zoneout's k times the padding mask."""
    return [k[t] if mask is None else k[t] * mask[t] for k in zone]


def _run(cell, xw, state, W_hh, b_hh, mask, steps, opts, out, caches, zone=None):
    """Advance ``state`` over ``steps`` (time indices in processing order); fill out[t] and caches[t]."""
    for t in steps:
        new, cache_t = cell.step_forward(xw[t], state, W_hh, b_hh, **opts)
        if caches is not None:
            caches[t] = cache_t
        if zone is not None:
            state = tuple(s + k * (s_new - s) for s_new, s, k in zip(new, state, _zone_shares(zone, mask, t)))
            if out is not None:
                out[t] = state[0] if mask is None else state[0] * mask[t]
        elif mask is None:
            state = new
            if out is not None:
                out[t] = new[0]
        else:
            m = mask[t]                                                     # (B, 1)
            state = tuple(np.where(m, s_new, s) for s_new, s in zip(new, state))
            if out is not None:
                out[t] = new[0] * m
    return state


def _order(T, reverse):
    return list(range(T - 1, -1, -1)) if reverse else list(range(T))


def time_forward(cell, xw, state0, W_hh, b_hh, mask=None, reverse=False, opts=None, segment=None, zone=None):
    opts = opts or {}
    T = xw.shape[0]
    out = np.empty(xw.shape[:2] + (state0[0].shape[-1],), dtype=xw.dtype)   # (T, B, H)
    order = _order(T, reverse)
    if not segment or segment >= T:
        caches = [None] * T
        state = _run(cell, xw, tuple(state0), W_hh, b_hh, mask, order, opts, out, caches, zone)
        return out, state, StepCaches(caches, zone=zone)
    # memory-bounded: keep only the state entering each segment
    segments = [order[i:i + segment] for i in range(0, T, segment)]
    starts, state = [], tuple(state0)
    for seg in segments:
        starts.append(state)
        state = _run(cell, xw, state, W_hh, b_hh, mask, seg, opts, out, None, zone)
    return out, state, StepCaches(None, segments, starts, xw, b_hh, zone=zone)


def time_backward(cell, d_out, d_state, cache, W_hh, mask=None, reverse=False, has_bias=True, opts=None,
                  record=None, extras=None):
    """-> (dL/dxw (T, B, G*H), dL/d state0, dW_hh, db_hh). ``record``: an optional list that receives ``(t,
    dstate_t)``, the total gradient with respect to each step's state (dL/dh_t, and dL/dc_t for the LSTM).
    ``extras``: an optional dict that receives the sums of what the cell's steps return for its option
    parameters (an LSTM's projection: weight_hr)."""
    opts = opts or {}
    T = d_out.shape[0]
    GH = W_hh.shape[0]
    dXW = np.empty(d_out.shape[:2] + (GH,), dtype=d_out.dtype)             # (T, B, G*H)
    dHW = [None]                                                            # allocated if the cell needs it
    if cache.steps is None:                                                 # segmented: recompute each segment
        dstate, dW_hh = tuple(d_state), np.zeros_like(W_hh)
        for seg, start in zip(reversed(cache.segments), reversed(cache.starts)):
            seg_caches = [None] * T
            _run(cell, cache.xw, start, W_hh, cache.b_hh, mask, seg, opts, None, seg_caches, cache.zone)
            dstate = _backward_steps(cell, d_out, dstate, seg_caches, W_hh, mask, seg[::-1], opts, dXW, dHW, record,
                                     cache.zone, extras)
            idx = sorted(seg)
            dW_hh += cell.grad_W_hh((dXW if dHW[0] is None else dHW[0])[idx], [seg_caches[t] for t in idx], **opts)
    else:
        dstate = _backward_steps(cell, d_out, tuple(d_state), cache.steps, W_hh, mask, _order(T, reverse)[::-1],
                                 opts, dXW, dHW, record, cache.zone, extras)
        dW_hh = cell.grad_W_hh(dXW if dHW[0] is None else dHW[0], cache.steps, **opts)
    db_hh = (dXW if dHW[0] is None else dHW[0]).sum(axis=(0, 1)) if has_bias else None
    return dXW, dstate, dW_hh, db_hh


def forward(cell_name, x, W_ih, W_hh, b_ih, b_hh, state0, mask, reverse, opts, keep, alloc=None, segment=None,
            zoneout=None):
    """The engine's contract: x (T, B, I) -> (output (T, B, H), final state, StepCaches or None).
    ``zoneout``: the ``zone`` shares of zoneout per state (see the module docstring), or None. With
    ``opts["ln"]`` (layer norm) the input projection is LN_x(x W_ih^T) + b_ih."""
    T, B, I = x.shape
    xw = (x.reshape(T * B, I) @ W_ih.T).reshape(T, B, -1)                  # (T, B, G*H), all steps at once
    ln_x = None
    if opts.get("ln") is not None:
        xw, ln_x = layernorm.forward(xw, *opts["ln"]["x"])
    if b_ih is not None:
        xw += b_ih
    out, stateT, cache = time_forward(CELLS[cell_name], xw, state0, W_hh, b_hh, mask, reverse, opts, segment,
                                      zoneout)
    if ln_x is not None:
        cache.ln_x = ln_x                                                   # read by backward (layer norm)
    return out, stateT, cache if keep else None


def backward(cell_name, d_out, d_state, cache, W_ih, W_hh, has_bias, workspace=None, record=False):
    """The engine's contract: -> Grads (every gradient). record: also the total gradient with respect to each
    step's state, (dL/dh (T, B, H)[, dL/dc]) in ``Grads.state_grads``."""
    rec = [] if record else None
    extra = {}
    dXW, dstate0, dW_hh, db_hh = time_backward(CELLS[cell_name], d_out, d_state, cache.arrays, W_hh, cache.mask,
                                               cache.reverse, has_bias, cache.opts, rec, extra)
    T, B, GH = dXW.shape
    db_ih = dXW.sum(axis=(0, 1)) if has_bias else None                    # the bias comes after LN_x
    if cache.opts.get("ln") is not None:
        db_hh = extra.pop("bias_hh")                                        # b_hh too, after LN_h
        dXW, extra["ln_ih_weight"], extra["ln_ih_bias"] = layernorm.backward(dXW, cache.opts["ln"]["x"][0],
                                                                            cache.arrays.ln_x)
    dX2, x2 = dXW.reshape(T * B, GH), cache.x.reshape(T * B, -1)
    state_grads = None
    if rec is not None:
        rec.sort(key=lambda r: r[0])
        state_grads = tuple(np.stack([r[1][i] for r in rec]) for i in range(len(dstate0)))
    if cache.opts.get("peephole") is not None:
        extra["weight_ph"] = CELLS[cell_name].grad_peephole(dXW, cache.arrays.steps)
    return Grads(dx=(dX2 @ W_ih).reshape(cache.x.shape), dstate0=dstate0, dW_ih=dX2.T @ x2, dW_hh=dW_hh,
                 db_ih=db_ih, db_hh=db_hh, state_grads=state_grads, extra=extra)


def _backward_steps(cell, d_out, dstate, caches, W_hh, mask, steps, opts, dXW, dHW, record, zone=None, extras=None):
    for t in steps:
        if zone is not None:
            d_total = (dstate[0] + (d_out[t] if mask is None else d_out[t] * mask[t]),) + dstate[1:]
            k = _zone_shares(zone, mask, t)
            d_new = tuple(d * ki for d, ki in zip(d_total, k))               # through the new state's share
            carry = tuple(d * (1 - ki) for d, ki in zip(d_total, k))         # past the cell: the kept share
        elif mask is None:
            d_new = (dstate[0] + d_out[t],) + dstate[1:]
            carry = None
        else:
            m = mask[t]
            d_total = (dstate[0] + d_out[t] * m,) + dstate[1:]              # padded outputs ignored
            d_new = tuple(d * m for d in d_total)                            # into the cell at valid rows
            carry = tuple(d * (1 - m) for d in d_total)                      # past the cell at padded rows
        if record is not None:
            record.append((t, d_new if mask is None and zone is None else d_total))
        dxw, dhw, dstate, *more = cell.step_backward(d_new, caches[t], W_hh, **opts)
        for name, v in (more[0].items() if more else ()):                  # option parameters' shares
            extras[name] = extras[name] + v if name in extras else v
        if carry is not None:
            dstate = tuple(ds + c for ds, c in zip(dstate, carry))
        dXW[t] = dxw
        if dhw is not dxw:
            if dHW[0] is None:
                dHW[0] = np.empty_like(dXW)
            dHW[0][t] = dhw
    return dstate
