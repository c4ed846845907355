"""One direction of a diagonal cell (minGRU, minLSTM, IndRNN, LRU) for the one stack (``rnnlab.engine.dispatch``: layers,
directions, dropout between layers, padding), with the recurrence run

    "numpy"   step by step (``rnnlab.engine.scan.loop``; streaming inference, the reference)
    "loop"    step by step, each cell's whole time loop compiled (``rnnlab.engine._kernels.diagonal_loop``, Numba)
    "scan"    as a parallel scan over time (``rnnlab.engine.scan``: the associative doubling scan; minGRU and minLSTM
              also in log space with ``scan="log"``); IndRNN's recurrence is not linear and has no scan
    "auto"    "loop" (or "numpy" without Numba): on a CPU the loop's T small steps cost less than the scan's
              log2(T) passes over the whole (T, B, H) arrays at every T measured (32 .. 2048;
              docs/performance.md)

The reverse direction runs on time-reversed arrays: padding then comes first, where a = 1, b = 0 carry the
initial state to each sequence's own last valid step, as torch's packed sequences start there.
"""
from __future__ import annotations

import numpy as np

from rnnlab.engine import _kernels as kernels
from rnnlab.engine.dispatch import blas_context
from rnnlab.errors import BackendError, ConfigError, check_choice

BACKENDS = ("auto", "numpy", "loop", "scan")


def check_backend(backend, cell_name, cell) -> str:
    check_choice("backend", backend, BACKENDS)
    if backend == "loop" and not kernels.available():
        raise ConfigError("backend: 'loop' needs the numba package; install it with: pip install numba (or use "
                          "backend='numpy')")
    if backend == "scan" and cell.SCAN is None:
        raise BackendError(f"backend: {cell_name!r} has a nonlinear recurrence, which no parallel scan computes; "
                           f"use 'numpy' (step by step) or 'auto'")
    return backend


def choose(backend, cell, T) -> str:
    if backend != "auto":
        return backend
    return "loop" if kernels.available() else "numpy"


def _cell_functions(layer, backend):
    """(forward, backward) of the layer's cell on ``backend``; forward takes ``how`` on the NumPy paths."""
    if backend == "loop":
        from rnnlab.engine._kernels.diagonal_loop import LOOPS
        fwd, bwd = LOOPS[layer.cell_name]
        return (lambda x, p, s, m, how: fwd(x, p, s, m)), bwd
    return layer.cell.forward, layer.cell.backward


def _flip(a, reverse):
    return None if a is None else (np.ascontiguousarray(a[::-1]) if reverse else a)


def plan(layer, B, keep, T):
    """(backend, what the direction functions take, the BLAS scope) of one call; the stack is ``dispatch.forward``."""
    backend = choose(layer.backend, layer.cell, T)
    how = "loop" if backend in ("numpy", "loop") else layer.cell_opts.get("scan", layer.cell.SCAN)
    fwd, bwd = _cell_functions(layer, backend)
    return backend, {"how": how, "fwd": fwd}, blas_context("numpy", B, layer.gate_size, layer.hidden_size)


def direction_forward(layer, backend, ctx, l, d, inp_d, state0, mask):
    """One direction: the reverse one on time-reversed arrays. -> (out, final state, arrays, opts)."""
    rev = layer.is_reverse(d)
    out, stateT, arrays = ctx["fwd"](_flip(inp_d, rev), layer.direction_params(l, d), state0, _flip(mask, rev),
                                     ctx["how"])
    arrays.reverse = rev
    return _flip(out, rev), stateT, arrays, layer.cell_opts


def direction_backward(layer, backend, l, d, d_out, d_final, dircache, record):
    """-> (dx, dstate0, {parameter name: gradient}, (dL/dh_t total,) when recorded: the LRU's as
    dL/d[Re h | Im h] (T, B, 2H))."""
    rev = layer.is_reverse(d)
    _, cell_backward = _cell_functions(layer, backend)
    dx, dstate0, grads, G = cell_backward(_flip(d_out, rev), d_final, dircache.arrays, layer.direction_params(l, d))
    sg = None
    if record:
        G = _flip(G, rev)
        sg = (np.concatenate([G.real, G.imag], axis=-1) if np.iscomplexobj(G) else G,)
    return _flip(dx, rev), dstate0, grads, sg
