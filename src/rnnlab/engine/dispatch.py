"""The one dispatch: a layer's forward and backward over the backend that serves the call.

Every backend has the same two functions, per layer and direction:

    forward(cell, x, W_ih, W_hh, b_ih, b_hh, state0, mask, reverse, opts, keep, alloc[, zoneout])
        -> (output (T, B, H), final state (tuple), arrays)      arrays: what backward reads, None if not keep
    backward(cell, d_out, d_state_T, cache: DirCache, W_ih, W_hh, has_bias, workspace)
        -> Grads                                                 every gradient, always filled

    "numpy"   rnnlab.engine._reference        the readable reference (the cells' steps in a Python loop)
    "loop"    rnnlab.engine._kernels.loop     the shared compiled time loop, one thread (every cell and option)
    "split"   rnnlab.engine._kernels.split    the same loop, the batch's rows split over threads
    "units"   rnnlab.engine._kernels.units    inference: the hidden units over threads, each keeping its weights
    "auto"    the fastest that serves the call (``choose``); "numba": the same among the compiled ones

This module stacks the layers and directions (dropout between layers, the variational masks) for every
family of cells: ``forward`` and ``backward`` are the one stack, and each layer runs one direction through its
``_direction_forward``/``_direction_backward`` (the classic cells: the backends below, ``dense_forward``; the
diagonal ones: ``rnnlab.engine._diagonal``). It picks the backend once per call, sets the BLAS threads for it, and
keeps the caches typed (``rnnlab.engine._caches``). A backend that cannot serve a call says so (``BackendError``)
rather than handing it to another one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import math

import numpy as np

from rnnlab.engine import _kernels as kernels
from rnnlab.engine._caches import DirCache, ForwardCache, LayerCache
from rnnlab.errors import BackendError, ConfigError, check_choice

BACKENDS = ("auto", "numba", "numpy", "loop", "split", "units")
COMPILED = ("loop", "split", "units")
_MODULES = {"numpy": "rnnlab.engine._reference", "loop": "rnnlab.engine._kernels.loop", "split": "rnnlab.engine._kernels.split",
            "units": "rnnlab.engine._kernels.units"}
FOLDED = {"hybrid": "'hybrid' (BLAS per step) was folded into 'loop', whose packed products serve its shapes"}

# The auto choice, in vector multiply-adds of one step's recurrent product (B * G*H * H / lanes, the lanes of the
# host's vectors for the dtype: kernels.host): the batch split from two rows when each thread gets
# SPLIT_MIN_VFMA, else the compiled loop on one thread (docs/performance.md).
SPLIT_MIN_VFMA = 1 << 10
BLAS_SINGLE_THREAD_WORK = 1 << 20    # multiply-adds per step below which BLAS runs on one thread
# inference on one row: the units split where each thread gets at least UNITS_MIN_VFMA vector multiply-adds per
# step of [x h 1] [W_ih W_hh b]^T (at I = 64, float32, 512-bit: from H = 152 for the LSTM, 180 the GRU, 331 the
# RNN; below it one thread was as fast at 200 steps), and the call's steps times that at least UNITS_MIN_WORK (a call hands
# work to a second thread, some 50-80 µs: at I = 64 an LSTM takes it from 26 steps at H = 256, 8 at H = 512)
UNITS_MIN_VFMA = 1 << 12
UNITS_MIN_WORK = 64 * UNITS_MIN_VFMA


def module(backend: str):
    """The backend's module (imported on first use: the compiled ones need Numba)."""
    mod = _LOADED.get(backend)
    if mod is None:
        mod = _LOADED[backend] = importlib.import_module(_MODULES[backend])
    return mod


_LOADED = {}


def _vector_bytes():
    if not _VB:                                 # kernels.packed_gemm needs Numba: imported on first use
        from rnnlab.engine._kernels.packed_gemm import vector_bytes
        _VB.append(vector_bytes)
    return _VB[0]()


_VB = []


def _kernel(cell_name, opts):
    from rnnlab.engine.registry import spec
    s = spec(cell_name)
    return None if s.kernel is None or not kernels.available() else s.kernel(opts)


def _units_serve(cell_name, opts, options) -> bool:
    k = _kernel(cell_name, opts)
    return k is not None and k.phases == 1 and not options


def check_backend(backend, cell_name, opts, segment, reference=(), options=()) -> str:
    """At construction: the backend is a known name, its package is installed, and it can serve the layer.
    ``reference``: the names of options set on the layer that only the NumPy reference implements;
    ``options``: those that the compiled loop implements where the cell's kernel serves them
    (``CellKernel.serves``)."""
    if backend in FOLDED:
        raise ConfigError(f"backend: {FOLDED[backend]}; use 'loop' or 'auto', got {backend!r}")
    check_choice("backend", backend, BACKENDS)
    if reference and backend not in ("auto", "numpy"):
        raise BackendError(f"{', '.join(reference)}: runs on backend='numpy' only, got backend={backend!r}; use "
                           f"'numpy' or 'auto' (which picks it)")
    if backend not in ("auto", "numpy") and not kernels.available():
        raise ConfigError(f"backend: {backend!r} needs the numba package; install it with: pip install numba "
                          f"(or use backend='numpy')")
    if segment and backend not in ("auto", "numpy"):
        raise BackendError(f"bptt_segment: the segment recomputation runs on backend='numpy' only, got "
                           f"backend={backend!r}; use backend='numpy' or 'auto' (which picks it)")
    if backend in COMPILED + ("numba",):
        from rnnlab.engine.registry import spec
        if spec(cell_name).kernel is None:
            raise BackendError(f"backend: cell {cell_name!r} has no compiled kernels, got backend={backend!r}; use "
                               "'numpy' or 'auto'")
        kern = _kernel(cell_name, opts)
        missing = [o for o in options if o not in kern.serves]
        if missing:
            raise BackendError(f"{', '.join(missing)}: the compiled {kern.name} kernels do not serve it, got "
                               f"backend={backend!r}; use 'numpy' or 'auto' (which picks it)")
        if backend == "units" and not _units_serve(cell_name, opts, options):
            raise BackendError(f"backend: 'units' serves cells with one product per step and no recurrent "
                               f"dropout, zoneout or layer norm, got {kern.name}"
                               f"{' with ' + ', '.join(options) if options else ''}; use 'loop' or 'split'")
    return backend


def choose(backend, cell_name, opts, B, GH, H, segment, itemsize=4, reference=False, options=(), keep=True,
           K=None, T=None) -> str:
    """The backend for one call of B rows: ``backend`` itself when it names one (checked that it can serve
    the call), else the automatic choice (itemsize: of the dtype, 4 or 8; ``reference``: the layer uses an
    option only the NumPy reference implements; ``options``: the names of the options the compiled loop
    serves that the layer uses; ``keep``: a forward for training; K: the rows of the step's product, I + H
    (+ 1), H if not given; T: the steps of the call, if known)."""
    if backend == "units":
        from rnnlab.engine._kernels import units
        if keep:
            raise BackendError(units.INFERENCE_ONLY)
        if units.threads_for(H) < 2:
            raise BackendError(f"backend: 'units' needs at least 2 threads and {2 * units.MIN_UNITS} hidden units, "
                               f"got {units.threads_for(H)} thread(s) for H={H} "
                               f"(RNNLAB_NUM_THREADS={units.num_threads()}"
                               f"{'' if units.SUPPORTED else '; it needs POSIX sched_yield, which this platform lacks'}"
                               f"); use 'loop' or 'split'")
        return backend
    if backend == "split":
        from rnnlab.engine._kernels import split
        n = split.threads_for(B)
        if n < 2:
            raise BackendError(f"backend: 'split' needs at least 2 threads and 2 batch rows, got {n} thread(s) for "
                               f"B={B} (RNNLAB_NUM_THREADS={split.num_threads()}); use 'loop'")
        return backend
    if backend in ("numpy",) + COMPILED:
        return backend
    if segment or reference or (backend == "auto" and not kernels.available()):
        return "numpy"
    kern = _kernel(cell_name, opts)
    if kern is None or any(o not in kern.serves for o in options):
        return "numpy"
    vb = _vector_bytes()
    vfma = B * GH * H * itemsize // vb
    step = GH * (K or H) * itemsize // vb             # a step's vector multiply-adds at one row
    # the thread count (an environment read, the CPU affinity) only where two threads could get enough work
    if not keep and B == 1 and T and kern.phases == 1 and not options and step >= 2 * UNITS_MIN_VFMA:
        from rnnlab.engine._kernels import units
        n = units.threads_for(H)
        per_thread = step // max(1, n)
        if n > 1 and per_thread >= UNITS_MIN_VFMA and T * per_thread >= UNITS_MIN_WORK:
            return "units"
    if B > 1 and vfma >= 2 * SPLIT_MIN_VFMA:
        from rnnlab.engine._kernels import split
        n = split.threads_for(B)
        if n > 1 and vfma // n >= SPLIT_MIN_VFMA:
            return "split"
    return "loop"


# ------------------------------------------------------------------ BLAS threads
_CONTROLLER = []                     # threadpoolctl's controllers of the loaded BLAS libraries


class _OneBlasThread:
    """BLAS on one thread inside the context, each library's setting restored on exit (nests). It calls
    threadpoolctl's per-library controllers directly: ``ThreadpoolController.limit`` inspects the libraries
    again at every use, which is a measurable part of a short call."""

    def __enter__(self):
        if not _CONTROLLER:
            from threadpoolctl import ThreadpoolController
            _CONTROLLER.extend(ThreadpoolController().select(user_api="blas").lib_controllers)
        self.saved = [(lib, lib.get_num_threads()) for lib in _CONTROLLER]
        for lib, n in self.saved:
            if n != 1:
                lib.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        for lib, n in self.saved:
            if n != 1:
                lib.set_num_threads(n)
        return False


def blas_single_thread():
    """A context that runs BLAS on one thread (threadpoolctl), e.g. while rnnlab's own threads call it."""
    return _OneBlasThread()


def blas_context(backend, B, GH, H):
    """BLAS threads for a forward or backward: one while the split path's threads run (BLAS workers woken by
    a two-thread product spin against them) or while the per-step products are small (thread start-up
    dominates them); all threads for large products."""
    if backend in ("split", "units") or B * GH * H < BLAS_SINGLE_THREAD_WORK:
        return blas_single_thread()
    return contextlib.nullcontext()


def matmul_for(backend):
    """The matrix product to use around a layer on this backend (split over rnnlab's threads on "split")."""
    if backend == "split":
        from rnnlab.engine._kernels.split import pmatmul
        return pmatmul
    return np.matmul


# ------------------------------------------------------------------ memory reuse
@functools.lru_cache(maxsize=None)
def _fields(cls) -> tuple:
    """The fields of a cache class that may hold (T, B, .) arrays: its RECYCLE, else every field."""
    return getattr(cls, "RECYCLE", None) or tuple(f.name for f in dataclasses.fields(cls))


class Recycler:
    """``alloc(shape, dtype)``: an array of the last forward's compiled caches with that shape when one is
    left, else ``np.empty``. A new forward drops the last one's caches anyway; handing their arrays to the new
    caches keeps one set alive instead of two and avoids fresh pages (docs/performance.md)."""

    def __init__(self, cache):
        self.free = {}
        for lc in (cache.layers if cache is not None else ()):
            for dc in lc.dirs:
                if dc.backend == "numpy" or not dataclasses.is_dataclass(dc.arrays):
                    continue
                for name in _fields(type(dc.arrays)):
                    v = getattr(dc.arrays, name)
                    if isinstance(v, np.ndarray) and v.ndim == 3:     # (T, B, .) caches, never an output
                        self.free.setdefault((v.shape, v.dtype), []).append(v)

    def __call__(self, shape, dtype):
        arrays = self.free.get((tuple(shape), np.dtype(dtype)))
        return arrays.pop() if arrays else np.empty(shape, dtype)


class Workspace:
    """A reused buffer for the compiled backward's dL/dA (T, B, G*H), grown when too small: a fresh block each
    call costs its page faults (glibc maps blocks over 32 MiB afresh)."""

    def __init__(self):
        self.buf = None

    def __call__(self, shape, dtype):
        n = math.prod(shape)
        if self.buf is None or self.buf.size < n or self.buf.dtype != np.dtype(dtype):
            self.buf = np.empty(n, dtype)
        return self.buf[:n].reshape(shape)


# ------------------------------------------------------------------ the stack
def dropout_mask(layer, shape):
    """Inverted dropout between layers in training: kept / (1 - p), drawn from the layer's generator; None
    when off."""
    if not (layer.training and layer.dropout > 0):
        return None
    kept = layer.rng.random(shape) >= layer.dropout
    return kept.astype(layer.dtype) / layer.dtype(1.0 - layer.dropout)


def variational_masks(layer, l, d, shape):
    """The masks of one layer and direction for this forward, drawn from the layer's generator (so that a
    resumed run draws the same): -> (x_mask (B, I) or None, rec_mask (B, H) or None, zoneout's shares
    (one (T, B, H) per state) or None). ``shape``: the direction's input (T, B, I).

    input_dropout / recurrent_dropout (Gal and Ghahramani 2016): one inverted-dropout mask per sequence, the
    same at every step, on x_t and on the h_{t-1} that enters the recurrent product; off at evaluation.
    zoneout / zoneout_cell (Krueger et al. 2017): per unit and step, keep the previous h (c) with probability
    p in training; the expectation, a share 1 - p of the new state, at evaluation."""
    reg = layer.regularization
    if not any(reg.values()):
        return None, None, None
    T, B, I = shape
    sizes, dt, rng = layer.state_sizes, layer.dtype, layer.rng

    def drop(p, size):
        return (rng.random(size) >= p).astype(dt) / dt(1.0 - p)
    train = layer.training
    x_mask = drop(reg["input_dropout"], (B, I)) if train and reg["input_dropout"] else None
    rec_mask = drop(reg["recurrent_dropout"], (B, sizes[0])) if train and reg["recurrent_dropout"] else None
    zone = None
    zs = (reg["zoneout"], reg["zoneout_cell"])[:len(layer.cell.STATE)]
    if any(zs):
        zone = tuple((rng.random((T, B, H)) >= p).astype(dt) if train and p else
                     np.broadcast_to(dt(1.0 - p), (T, B, H)) for p, H in zip(zs, sizes))
    return x_mask, rec_mask, zone


def forward(layer, x, states0, mask, keep, guards=()):
    """x (T, B, I) through every layer and direction of ``layer``, for every family of cells: the one stack
    (layers x directions x dropout between layers x the variational masks). Each direction runs through the
    layer's ``_direction_forward`` (the classic cells: the backend's ``forward``; the diagonal ones:
    ``rnnlab.engine._diagonal``). -> (output (T, B, D*H), final states [(L*D, B, H)], ForwardCache or None)."""
    T, B, _ = x.shape
    L, D = layer.num_layers, layer.num_directions
    backend, ctx, scope = layer._call_plan(B, keep, T)
    layer._cache = None                 # dropped before the new caches are made (peak memory)
    finals = [np.empty_like(s) for s in states0]
    layer_caches = []
    inp = x
    with scope:
        for l in range(L):
            outs, dirs = [], []
            for d in range(D):
                state0 = tuple(s[l * D + d] for s in states0)
                x_mask, rec_mask, zone = variational_masks(layer, l, d, inp.shape)
                inp_d = inp if x_mask is None else inp * x_mask
                out, stateT, arrays, opts = layer._direction_forward(backend, ctx, l, d, inp_d, state0, mask, keep,
                                                                     rec_mask, zone)
                for f, s in zip(finals, stateT):
                    f[l * D + d] = s
                outs.append(out)
                if keep:
                    dirs.append(DirCache(backend, layer.cell_name, inp_d, mask, layer.is_reverse(d), opts, arrays,
                                         x_mask))
            out_l = outs[0] if D == 1 else np.concatenate(outs, axis=2)    # (T, B, D*H)
            drop = dropout_mask(layer, out_l.shape) if l < L - 1 else None
            if keep:
                layer_caches.append(LayerCache(inp, dirs, drop))
            inp = out_l if drop is None else out_l * drop
    cache = ForwardCache(layer_caches, backend, False, T, B, len(states0), list(guards)) if keep else None
    return inp, finals, cache


def backward(layer, cache, d_output, d_final, record=False):
    """Backpropagate d_output (T, B, D*H) and d_final [(L*D, B, H)] through ``cache``, every family; adds every
    parameter gradient to ``layer.grads``. -> (dx (T, B, I), d_initial [(L*D, B, H)], state_grads or None)."""
    layer._check_record(cache, record)
    L, D, H = layer.num_layers, layer.num_directions, layer.output_size
    d_init = [np.empty_like(g) for g in d_final]
    state_grads = {} if record else None
    d_inp = d_output                                                     # (T, B, D*H)
    with layer._backward_scope(cache):
        for l in range(L - 1, -1, -1):
            lc = cache.layers[l]
            d_out_l = d_inp if lc.drop is None else d_inp * lc.drop          # backprop through dropout
            d_x = None
            for d in range(D):
                s = layer.suffix(l, d)
                dx_d, dstate0, grads, sg = layer._direction_backward(cache.backend, l, d, d_out_l[:, :, d * H:(d + 1) * H],
                                                                     tuple(f[l * D + d] for f in d_final), lc.dirs[d],
                                                                     record)
                for name, v in grads.items():
                    if v is not None:
                        layer.grads[name + s] += v
                if record:
                    state_grads[(l, d)] = sg
                if lc.dirs[d].x_mask is not None:
                    dx_d = dx_d * lc.dirs[d].x_mask
                d_x = dx_d if d_x is None else d_x + dx_d
                for f, ds in zip(d_init, dstate0):
                    f[l * D + d] = ds
            d_inp = d_x
    return d_inp, d_init, state_grads


def dense_plan(layer, B, keep, T):
    """A classic cell's call: (backend, what its functions take besides the arrays, the BLAS scope)."""
    backend = layer._choose(B, keep, T)
    ctx = {"mod": module(backend), "extra": {}, "alloc": Recycler(layer._cache)}
    if backend == "numpy":
        ctx["extra"] = {"segment": layer.bptt_segment}
    elif backend == "split":
        if layer.row_split is None:
            layer.row_split = ctx["mod"].RowSplit()     # the layer's row split, adapted to the threads' speeds
        ctx["extra"] = {"rows": layer.row_split}
    # the one-thread loop makes no BLAS call inside its forward (layer norm's one product aside): no thread
    # setting to change, which costs more than a short call
    scope = contextlib.nullcontext() if backend == "loop" else blas_context(backend, B, layer.gate_size,
                                                                            layer.hidden_size)
    return backend, ctx, scope


def dense_forward(layer, backend, ctx, l, d, inp_d, state0, mask, keep, rec_mask, zone):
    """One direction of a classic cell on ``backend``. -> (out, final state, arrays, opts)."""
    W_ih, W_hh, b_ih, b_hh = layer.layer_params(l, d)
    opts = {**layer.cell_opts, **layer.option_params(l, d)}
    if rec_mask is not None:
        opts["rec_mask"] = rec_mask
    more = ctx["extra"] if zone is None else {**ctx["extra"], "zoneout": zone}
    out, stateT, arrays = ctx["mod"].forward(layer.cell_name, inp_d, W_ih, W_hh, b_ih, b_hh, state0, mask,
                                             layer.is_reverse(d), opts, keep, ctx["alloc"], **more)
    return out, stateT, arrays, opts


def dense_backward(layer, backend, l, d, d_out, d_final, dircache, record):
    """-> (dx, dstate0, {parameter name: gradient}, recorded state gradients or None)."""
    W_ih, W_hh, b_ih, b_hh = layer.layer_params(l, d)
    extra = {"record": True} if record else {"rows": layer.row_split} if backend == "split" else {}
    g = module(backend).backward(layer.cell_name, d_out, d_final, dircache, W_ih, W_hh, layer.bias, layer.workspace,
                                 **extra)
    grads = {"weight_ih": g.dW_ih, "weight_hh": g.dW_hh, **(g.extra or {})}
    if layer.bias:
        grads.update(bias_ih=g.db_ih, bias_hh=g.db_hh)
    return g.dx, g.dstate0, grads, g.state_grads


def dense_check_record(cache, record):
    if record and cache.backend != "numpy":
        raise BackendError(f"record_state_grads: the per-step state gradients are recorded by backend='numpy' only; "
                           f"the last forward ran on backend={cache.backend!r} (build the layer with "
                           f"backend='numpy'; rnnlab.study.diagnostics does)")
