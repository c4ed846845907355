"""One module per cell: a step forward and a step backward side by side.

Every cell shares one interface, used by the time loop in ``rnnlab.recurrent``:

    step_forward(xw, state, W_hh, b_hh, **opts) -> (state_new, cache)
    step_backward(dstate, cache, W_hh, **opts)  -> (dxw, dhw, dstate_prev)
    grad_W_hh(dHW, caches_stacked, **opts)        -> dW_hh

``xw`` is the input projection ``x_t W_ih^T + b_ih`` (computed for all steps at once outside the loop),
``state`` a tuple ``(h,)`` or ``(h, c)``; ``dxw`` is the gradient with respect to ``xw`` and ``dhw`` the
gradient with respect to the recurrent pre-activation ``h_{t-1} W_hh^T + b_hh`` (they differ only for the GRU).
"""
from . import gru, lstm, rnn

CELLS = {"rnn": rnn, "lstm": lstm, "gru": gru}
