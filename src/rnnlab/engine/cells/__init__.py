"""One module per cell: a step forward and a step backward side by side, the equations in the docstring.

Every cell shares one interface, used by the NumPy reference's time loop (``rnnlab.engine._reference``):

    G, STATE, GATES                               gate blocks in W_ih/W_hh, state names, gate names
    step_forward(xw, state, W_hh, b_hh, **opts) -> (state_new, StepCache)
    step_backward(dstate, cache, W_hh, **opts)  -> (dxw, dhw, dstate_prev)
    grad_W_hh(dHW, caches, **opts)              -> dW_hh

``xw`` is the input projection ``x_t W_ih^T + b_ih`` (for all steps at once, outside the loop), ``state`` a
tuple ``(h,)`` or ``(h, c)``; ``StepCache`` is a NamedTuple of what backward reads (named as in the
equations); ``dxw`` is the gradient with respect to ``xw`` and ``dhw`` with respect to the recurrent
pre-activation ``h_{t-1} W_hh^T + b_hh`` (they differ only for the GRU). A new cell is one such module, its
compiled row kernels (``rnnlab.engine._kernels.gates`` has the three here) and a ``rnnlab.engine.registry.register`` call;
``CELLS`` maps the names to the modules (the registry adds to it).
"""
from rnnlab.engine.cells import gru
from rnnlab.engine.cells import indrnn
from rnnlab.engine.cells import lru
from rnnlab.engine.cells import lstm
from rnnlab.engine.cells import mingru
from rnnlab.engine.cells import minlstm
from rnnlab.engine.cells import rnn

CELLS = {"rnn": rnn, "lstm": lstm, "gru": gru}

# Diagonal cells: the recurrence's Jacobian is diagonal. Each module has STATE, GATES, SCAN (its parallel scan
# or None), param_shapes(I, H, bias), init(...), forward(x, p, state0, mask, how) -> (out, state, arrays),
# backward(d_out, d_state, arrays, p) -> (dx, dstate0, grads, dL/dh_t) and carry(arrays); rnnlab.engine._diagonal
# stacks them.
DIAGONAL = {"mingru": mingru, "minlstm": minlstm, "indrnn": indrnn, "lru": lru}
