"""The stack for the diagonal cells (minGRU, minLSTM, IndRNN, LRU): layers, directions, dropout between
layers and padding, as ``rnnlab.engine`` does for the classic cells, with each direction's recurrence run

    "numpy"   step by step (``rnnlab.scan.loop``; streaming inference, the reference)
    "loop"    step by step, each cell's whole time loop compiled (``rnnlab.kernels.diagonal``, Numba)
    "scan"    as a parallel scan over time (``rnnlab.scan``: the associative doubling scan; minGRU and minLSTM
              also in log space with ``scan="log"``); IndRNN's recurrence is not linear and has no scan
    "auto"    "loop" (or "numpy" without Numba): on a CPU the loop's T small steps cost less than the scan's
              log2(T) passes over the whole (T, B, H) arrays at every T measured (32 .. 2048;
              docs/performance.md)

The reverse direction runs on time-reversed arrays: padding then comes first, where a = 1, b = 0 carry the
initial state to each sequence's own last valid step, as torch's packed sequences start there.
"""
from __future__ import annotations

import numpy as np

from . import kernels
from .caches import DirCache, ForwardCache, LayerCache
from .engine import blas_context, dropout_mask, variational_masks
from .errors import BackendError, ConfigError, check_choice

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
        from .kernels.diagonal import CELLS
        fwd, bwd = CELLS[layer.cell_name]
        return (lambda x, p, s, m, how: fwd(x, p, s, m)), bwd
    return layer.cell.forward, layer.cell.backward


def _flip(a, reverse):
    return None if a is None else (np.ascontiguousarray(a[::-1]) if reverse else a)


def forward(layer, x, states0, mask, keep, guards=()):
    """x (T, B, I) -> (output (T, B, D*H), final states [(L*D, B, H)], ForwardCache or None)."""
    T, B, _ = x.shape
    L, D = layer.num_layers, layer.num_directions
    backend = choose(layer.backend, layer.cell, T)
    how = "loop" if backend in ("numpy", "loop") else layer.cell_opts.get("scan", layer.cell.SCAN)
    cell_forward, _ = _cell_functions(layer, backend)
    layer._cache = None
    finals = [np.empty_like(s) for s in states0]
    caches, inp = [], x
    with blas_context("numpy", B, layer.gate_size, layer.hidden_size):
        for l in range(L):
            outs, dirs = [], []
            for d in range(D):
                rev = d == 1
                state0 = tuple(s[l * D + d] for s in states0)
                x_mask = variational_masks(layer, l, d, inp.shape)[0]          # input dropout only
                inp_d = inp if x_mask is None else inp * x_mask
                out, stateT, arrays = cell_forward(_flip(inp_d, rev), layer.direction_params(l, d), state0,
                                                   _flip(mask, rev), how)
                arrays.reverse = rev
                for f, s in zip(finals, stateT):
                    f[l * D + d] = s
                outs.append(_flip(out, rev))
                if keep:
                    dirs.append(DirCache(backend, layer.cell_name, inp_d, mask, rev, layer.cell_opts, arrays, x_mask))
            out_l = outs[0] if D == 1 else np.concatenate(outs, axis=2)
            drop = dropout_mask(layer, out_l.shape) if l < L - 1 else None
            if keep:
                caches.append(LayerCache(inp, dirs, drop))
            inp = out_l if drop is None else out_l * drop
    cache = ForwardCache(caches, backend, False, T, B, len(states0), list(guards)) if keep else None
    return inp, finals, cache


def backward(layer, cache, d_output, d_final, record=False):
    """-> (dx (T, B, I), d_initial [(L*D, B, H)], state_grads or None); parameter gradients added to
    ``layer.grads``. ``record``: dL/dh_t total for every step, ``state_grads[(l, d)] = (dL/dh,)`` (the LRU:
    (dL/d[Re h | Im h] (T, B, 2H),))."""
    L, D, H = layer.num_layers, layer.num_directions, layer.hidden_size
    d_init = [np.empty_like(g) for g in d_final]
    state_grads = {} if record else None
    d_inp = d_output
    _, cell_backward = _cell_functions(layer, cache.backend)
    with blas_context("numpy", cache.B, layer.gate_size, H):
        for l in range(L - 1, -1, -1):
            lc = cache.layers[l]
            d_out_l = d_inp if lc.drop is None else d_inp * lc.drop
            d_x = None
            for d in range(D):
                rev, s = d == 1, layer.suffix(l, d)
                g = _flip(d_out_l[:, :, d * H:(d + 1) * H], rev)
                dx, dstate0, grads, G = cell_backward(g, tuple(f[l * D + d] for f in d_final), lc.dirs[d].arrays,
                                                      layer.direction_params(l, d))
                for name, v in grads.items():
                    layer.grads[name + s] += v
                if record:
                    G = _flip(G, rev)
                    state_grads[(l, d)] = (np.concatenate([G.real, G.imag], axis=-1) if np.iscomplexobj(G) else G,)
                dx = _flip(dx, rev)
                if lc.dirs[d].x_mask is not None:
                    dx = dx * lc.dirs[d].x_mask
                d_x = dx if d_x is None else d_x + dx
                for f, ds in zip(d_init, dstate0):
                    f[l * D + d] = ds
            d_inp = d_x
    return d_inp, d_init, state_grads
