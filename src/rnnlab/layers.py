"""``rnnlab.RNN``, ``rnnlab.LSTM``, ``rnnlab.GRU``: the PyTorch-shaped face of the engine.

Stacking, directions, dropout between layers, initial states, ragged ``lengths``, parameter storage
under PyTorch's names (``weight_ih_l0``, ``bias_hh_l1_reverse``...) and gradient accumulation live
here; the equations live in ``rnnlab.cells`` and the time loop in ``rnnlab.recurrent``.
"""
from __future__ import annotations

import contextlib

import numpy as np

from . import kernels, recurrent
from .cells import CELLS
from .errors import (
    ConfigError, DTypeError, ShapeError, as_float_array, check_choice, check_float,
    check_int, check_unchanged, guard_inputs,
)
from .grad_mode import is_grad_enabled

_DTYPES = {"float32": np.float32, "float64": np.float64}
BACKENDS = ("auto", "numpy", "numba")
# auto: the batch split (each thread runs the whole time loop for its rows, packed products) when there are at
# least two threads with SPLIT_MIN_WORK multiply-adds each per step; else the compiled whole loop while a
# step's recurrent product is small (per-call overhead dominates), above it BLAS for the product and one
# compiled kernel per step for the rest ("hybrid"; the NumPy reference for the reset-before GRU); measured
# crossovers, see docs/performance.md
NUMBA_MAX_WORK = 1 << 17             # B * G*H * H multiply-adds per step
SPLIT_MIN_WORK = 1 << 13             # (B / threads) * G*H * H multiply-adds per step and thread


BLAS_SINGLE_THREAD_WORK = 1 << 20    # below this per-step work, the per-step products run on one BLAS thread
_CONTROLLER = []                     # threadpoolctl's controllers of the loaded BLAS libraries


def blas_limit(B, GH, H):
    """A context that limits BLAS to one thread for small per-step products (threadpoolctl).

    Small (B, H) x (H, G*H) products are dominated by thread start-up and, on a busy two-core machine, by
    worker threads spinning against each other (measured up to 60x slower with two threads; see
    docs/performance.md); large products keep every thread.
    """
    if B * GH * H >= BLAS_SINGLE_THREAD_WORK:
        return contextlib.nullcontext()
    return blas_single_thread()


class _OneBlasThread:
    """BLAS on one thread inside the context, each library's setting restored on exit (nests); the libraries
    are those loaded when it is first used (NumPy's, whose products rnnlab runs). It calls
    threadpoolctl's per-library controllers directly: about 5 us per use, against 40 us for
    ``ThreadpoolController.limit``, which inspects the libraries again every time (a B = 1, T = 1 forward took
    about 105 us in all)."""

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


def choose_backend(backend, B, GH, H, segment, cell_name="lstm", opts=None):
    """-> "numpy" (reference), "loop" (compiled whole time loop), "hybrid" (BLAS product + compiled gates) or
    "split" (the batch's rows split over threads that each run the whole time loop, packed products)."""
    if backend == "numpy" or segment:
        return "numpy"
    if backend == "auto" and not kernels.available():
        return "numpy"
    work = B * GH * H
    hybrid_ok = cell_name in ("lstm", "rnn") or (cell_name == "gru" and (opts or {}).get("reset", "after") == "after")
    if hybrid_ok and B > 1 and work >= 2 * SPLIT_MIN_WORK:
        from .kernels import split_scan
        n = split_scan.threads_for(B)
        if n > 1 and work // n >= SPLIT_MIN_WORK:
            return "split"
    if work <= NUMBA_MAX_WORK:
        return "loop"
    if hybrid_ok:
        return "hybrid"
    return "loop" if backend == "numba" else "numpy"


_MODULES = {}


def _kernel_module(name):
    """rnnlab.kernels.<name>, imported on first use (Numba is optional) and then looked up in a dict: an
    import statement in the per-layer loop cost 1-2 us per call, a B = 1, T = 1 forward is about 40 us."""
    if name not in _MODULES:
        import importlib
        _MODULES[name] = importlib.import_module(f".kernels.{name}", __package__)
    return _MODULES[name]


class _Recycler:
    """``alloc(shape, dtype)``: an array of the last forward's compiled-backend caches with that shape when one is
    left, else ``np.empty``. A new forward drops the last one's caches anyway; handing their arrays to the new
    caches keeps one set alive instead of two, and avoids the page faults of fresh allocations (measured: freeing
    the old caches first and allocating anew cost 10 ms per LSTM (32, 100, 32, 128) training step here)."""

    def __init__(self, cache):
        self.free = {}
        for _, dir_caches, _ in (cache[0] if cache else ()):
            for c in dir_caches:
                if c[0] != "numba":
                    continue
                for name, v in c[2].items():
                    if isinstance(v, np.ndarray) and v.ndim == 3:   # (the output is not in a cache: it is the user's)
                        self.free.setdefault((v.shape, v.dtype), []).append(v)

    def __call__(self, shape, dtype):
        arrays = self.free.get((tuple(shape), np.dtype(dtype)))
        return arrays.pop() if arrays else np.empty(shape, dtype)


def _users_memory(arr, given) -> bool:
    """Whether the converted array ``arr`` is the caller's ``given`` array or a view of memory the caller can
    still change (a converted copy is private)."""
    return arr is given or not arr.flags.owndata


def _project(x2, W_ih, b_ih):
    """x W_ih^T + b_ih for all steps at once, outside the time loop: (T*B, I) -> (T*B, G*H)."""
    xw = x2 @ W_ih.T
    if b_ih is not None:
        xw += b_ih
    return xw


def resolve_dtype(dtype) -> type:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in _DTYPES:
        raise DTypeError(f"dtype: expected float32 or float64, got {dtype!r}")
    return _DTYPES[name]


class RecurrentLayer:
    """Shared machinery of RNN, LSTM and GRU. Use the subclasses."""

    cell_name = ""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, dtype=np.float32, seed=None,
                 recurrent_init="uniform", bptt_segment=None, backend="auto", **cell_opts):
        self.input_size = check_int("input_size", input_size, 1)
        self.hidden_size = check_int("hidden_size", hidden_size, 1)
        self.num_layers = check_int("num_layers", num_layers, 1)
        for arg, val in (("bias", bias), ("batch_first", batch_first), ("bidirectional", bidirectional)):
            if not isinstance(val, (bool, np.bool_)):
                raise ConfigError(f"{arg}: expected True or False, got {val!r}")
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)
        self.dropout = check_float("dropout", dropout, 0.0, 1.0, high_open=True)
        check_choice("recurrent_init", recurrent_init, ("uniform", "orthogonal"))
        self.recurrent_init = recurrent_init
        # bound BPTT memory: keep states every bptt_segment steps, recompute inside segments in backward
        self.bptt_segment = None if bptt_segment is None else check_int("bptt_segment", bptt_segment, 1)
        self.dtype = resolve_dtype(dtype)
        check_choice("backend", backend, BACKENDS)
        if backend == "numba":
            from .kernels import available
            if not available():
                raise ConfigError("backend: 'numba' needs the numba package; install it with: pip install -e '.[fast]'")
        self.backend = backend
        self.cell = CELLS[self.cell_name]
        self.cell_opts = cell_opts
        self.training = True
        self.rng = np.random.default_rng(seed)
        self.num_directions = 2 if self.bidirectional else 1
        self._params = self._init_params()
        self.grads = {k: np.zeros_like(v) for k, v in self._params.items()}
        self._cache = None
        self._work = None               # the compiled backward's (T*B, G*H) buffer for dL/dA

    # ----------------------------------------------------------------- parameters
    @property
    def gate_size(self) -> int:
        return self.cell.G * self.hidden_size

    def _suffix(self, layer, direction) -> str:
        return f"_l{layer}" + ("_reverse" if direction == 1 else "")

    def _param_shapes(self) -> dict:
        shapes, GH, H = {}, self.gate_size, self.hidden_size
        for l in range(self.num_layers):
            in_l = self.input_size if l == 0 else H * self.num_directions
            for d in range(self.num_directions):
                s = self._suffix(l, d)
                shapes["weight_ih" + s] = (GH, in_l)
                shapes["weight_hh" + s] = (GH, H)
                if self.bias:
                    shapes["bias_ih" + s] = (GH,)
                    shapes["bias_hh" + s] = (GH,)
        return shapes

    def _init_params(self) -> dict:
        k = 1.0 / np.sqrt(self.hidden_size)
        params = {}
        for name, shape in self._param_shapes().items():
            if name.startswith("weight_hh") and self.recurrent_init == "orthogonal":
                H = self.hidden_size
                blocks = []
                for _ in range(self.cell.G):
                    q, r = np.linalg.qr(self.rng.standard_normal((H, H)))
                    blocks.append(q * np.sign(np.diag(r)))        # Haar-uniform orthogonal block
                params[name] = np.concatenate(blocks, axis=0).astype(self.dtype)
            else:
                params[name] = self.rng.uniform(-k, k, size=shape).astype(self.dtype)
        return params

    def _layer_params(self, l, d):
        s, p = self._suffix(l, d), self._params
        return p["weight_ih" + s], p["weight_hh" + s], p.get("bias_ih" + s), p.get("bias_hh" + s)

    def named_parameters(self):
        """(name, array) pairs; the arrays are the live parameters (in-place updates change the layer)."""
        return list(self._params.items())

    def parameters(self):
        return list(self._params.values())

    def num_parameters(self) -> int:
        return int(sum(v.size for v in self._params.values()))

    def state_dict(self) -> dict:
        return {k: v.copy() for k, v in self._params.items()}

    def load_state_dict(self, state_dict, strict=True) -> None:
        """Copy arrays (NumPy, or anything ``np.asarray`` takes) into the layer; all mismatches are listed at once."""
        if not hasattr(state_dict, "items"):
            raise TypeError(f"state_dict: expected a mapping of names to arrays, got {type(state_dict).__name__}")
        expected = self._param_shapes()
        problems, new = [], {}
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in state_dict if k not in expected]
        if missing:
            problems.append(f"missing keys {missing}")
        if unexpected and strict:
            problems.append(f"unexpected keys {unexpected}")
        for k in expected:
            if k not in state_dict:
                continue
            v = state_dict[k]
            if hasattr(v, "detach"):            # a torch tensor
                v = v.detach().cpu().numpy()
            v = np.asarray(v)
            if v.dtype.kind != "f":
                problems.append(f"{k}: expected a floating-point array, got dtype {v.dtype}")
            elif tuple(v.shape) != expected[k]:
                problems.append(f"{k}: expected shape {expected[k]}, got {tuple(v.shape)}")
            elif not np.isfinite(v).all():
                problems.append(f"{k}: contains NaN or Inf")
            else:
                new[k] = v
        if problems:
            raise ShapeError(f"load_state_dict: {len(problems)} problem(s) for {self!r}: " + "; ".join(problems))
        for k, v in new.items():
            self._params[k][...] = v

    def config(self) -> dict:
        """The constructor arguments that define the architecture (JSON-able); see ``layer_from_config``."""
        return {"cell": self.cell_name, "input_size": self.input_size, "hidden_size": self.hidden_size,
                "num_layers": self.num_layers, "bias": self.bias, "batch_first": self.batch_first,
                "dropout": self.dropout, "bidirectional": self.bidirectional,
                "dtype": np.dtype(self.dtype).name, **self.cell_opts}

    def to_torch(self):
        """A ``torch.nn.RNN/LSTM/GRU`` with this layer's options and weights (needs the torch extra)."""
        from .interop.torch import to_torch
        return to_torch(self)

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0)

    def train(self, mode: bool = True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.cell_opts.items())
        if self.backend != "auto":
            opts += f", backend={self.backend!r}"
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bias={self.bias}, batch_first={self.batch_first}, dropout={self.dropout}, "
                f"bidirectional={self.bidirectional}{opts}, dtype={np.dtype(self.dtype).name})")

    # ----------------------------------------------------------------- validation
    def _check_state(self, arg, value, B, unbatched, check_finite, guards=None):
        LD, H = self.num_layers * self.num_directions, self.hidden_size
        arr = as_float_array(arg, value, self.dtype, check_finite)
        expected = (LD, H) if unbatched else (LD, B, H)
        if tuple(arr.shape) != expected:
            raise ShapeError(f"{arg}: expected shape {expected} (num_layers * num_directions, "
                             f"{'' if unbatched else 'batch, '}hidden_size), got {tuple(arr.shape)}")
        if guards is not None and _users_memory(arr, value):
            guards.append((arg, arr))
        return arr[:, None, :] if unbatched else arr

    def _split_state(self, hx, B, unbatched, check_finite, guards=None):
        """hx -> tuple of (L*D, B, H) arrays, one per state variable. ``guards``: a list that gets (name,
        array) for each state array that is the caller's memory (see ``forward``)."""
        zeros = lambda: np.zeros((self.num_layers * self.num_directions, B, self.hidden_size), self.dtype)  # noqa: E731
        n_state = len(self.cell.STATE)
        if n_state == 1:
            if isinstance(hx, tuple):
                raise TypeError(f"hx: expected one array for {type(self).__name__}, got a tuple of {len(hx)}")
            return (zeros() if hx is None else self._check_state("hx", hx, B, unbatched, check_finite, guards),)
        if hx is None:
            return zeros(), zeros()
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"hx: expected a pair (h_0, c_0) for LSTM, got {type(hx).__name__}")
        return (self._check_state("hx[0] (h_0)", hx[0], B, unbatched, check_finite, guards),
                self._check_state("hx[1] (c_0)", hx[1], B, unbatched, check_finite, guards))

    def _check_lengths(self, lengths, T, B):
        arr = np.asarray(lengths.detach().cpu().numpy() if hasattr(lengths, "detach") else lengths)
        if arr.dtype.kind not in "iu":
            raise DTypeError(f"lengths: expected integers, got dtype {arr.dtype}")
        if arr.shape != (B,):
            raise ShapeError(f"lengths: expected shape ({B},) (one length per batch row), got {arr.shape}")
        if arr.min() < 1 or arr.max() > T:
            bad = arr[(arr < 1) | (arr > T)]
            raise ValueError(f"lengths: expected values in [1, {T}] (the sequence length), got {bad.tolist()}")
        if (arr == T).all():
            return None
        return (np.arange(T)[:, None] < arr[None, :])[..., None].astype(self.dtype)   # (T, B, 1)

    # ----------------------------------------------------------------- forward / backward
    def __call__(self, x, hx=None, lengths=None, check_finite=True):
        return self.forward(x, hx, lengths, check_finite)

    def forward(self, x, hx=None, lengths=None, check_finite=True):
        """x (T, B, I), or (B, T, I) with batch_first, or (T, I) unbatched.

        Returns ``(output, h_n)`` (``(output, (h_n, c_n))`` for the LSTM) with torch's shapes.
        """
        return self._forward(x, hx, lengths, check_finite)

    def _forward(self, x, hx, lengths, check_finite, x_private=False):
        """``forward``; ``x_private``: x is the caller's own array that nobody else can change (a model's
        one-hot or embedded input), so it is not fingerprinted for backward."""
        x_in, x = x, as_float_array("x", x, self.dtype, check_finite)
        if x.ndim not in (2, 3):
            raise ShapeError(f"x: expected a 3-D array ({'B, T' if self.batch_first else 'T, B'}, input_size) "
                             f"or a 2-D unbatched (T, input_size), got shape {x.shape}")
        unbatched = x.ndim == 2
        if unbatched:
            x = x[:, None, :]
        elif self.batch_first:
            x = x.transpose(1, 0, 2)
        T, B, I = x.shape
        if I != self.input_size:
            raise ShapeError(f"x: expected input_size (last dimension) {self.input_size}, got {I}")
        if T < 1 or B < 1:
            raise ShapeError(f"x: expected at least one time step and one batch row, got T={T}, B={B}")
        mask = None if lengths is None else self._check_lengths(lengths, T, B)
        keep = is_grad_enabled()
        # the caller's arrays that backward reads again: fingerprinted, so that backward can refuse to run on
        # values changed in place since (as torch does); an array converted here is a private copy
        watched = [("x", x)] if keep and not x_private and _users_memory(x, x_in) else []
        states0 = self._split_state(hx, B, unbatched, check_finite, watched if keep else None)
        guards = guard_inputs(watched)
        recycle = _Recycler(self._cache)    # the last forward's cache arrays, reused (peak memory, page faults)
        self._cache = None
        finals = [np.empty_like(s) for s in states0]
        layer_caches = []
        impl = choose_backend(self.backend, B, self.gate_size, self.hidden_size, self.bptt_segment, self.cell_name,
                              self.cell_opts)
        # the compiled loop's forward makes no BLAS call (its products are its own): no thread setting to change
        with contextlib.nullcontext() if impl == "loop" else self._blas_context(impl, B):
            output = self._forward_layers(x, states0, finals, layer_caches, mask, T, B, keep, impl, recycle)
        self._cache = (layer_caches, unbatched, (T, B), len(states0), guards, impl) if keep else None
        self._no_grad_forward = not keep
        if unbatched:
            output = output[:, 0, :]
            finals = [f[:, 0, :] for f in finals]
        elif self.batch_first:
            output = output.transpose(1, 0, 2)
        if len(finals) == 1:
            return output, finals[0]
        return output, tuple(finals)

    def blas_scope(self, B):
        """(context, matmul) for work around this layer on a batch of B rows: the BLAS thread setting its
        forward and backward use, and the matrix product to use under it (split over rnnlab's threads when the
        batch-split path runs, ``np.matmul`` otherwise). A model runs its own products inside it, so that no
        two-thread BLAS call leaves worker threads spinning against the split path's threads (measured: an
        LSTM model's training step (32, 100, 32, 128) 55 -> 30 ms)."""
        impl = choose_backend(self.backend, B, self.gate_size, self.hidden_size, self.bptt_segment, self.cell_name,
                              self.cell_opts)
        return self._blas_context(impl, B), self._matmul(impl)

    def _blas_context(self, impl, B):
        """BLAS threads for a forward or backward: one while rnnlab's own threads run the batch-split scan (BLAS
        workers woken by a two-thread product spin against them), else by the size of the per-step product."""
        if impl == "split":
            return blas_single_thread()
        return blas_limit(B, self.gate_size, self.hidden_size)

    def _workspace(self, shape):
        """A view of the layer's work buffer with this shape (grown when too small). The compiled backward
        writes dL/dA (T, B, G*H) into it, used up by the weight products: reusing it spares the page faults of
        a fresh block each call (glibc maps blocks over 32 MiB afresh: 6 ms per 52 MiB array measured here)."""
        n = int(np.prod(shape))
        if self._work is None or self._work.size < n or self._work.dtype != self.dtype:
            self._work = np.empty(n, self.dtype)
        return self._work[:n].reshape(shape)

    def _matmul(self, impl):
        if impl == "split":
            from .kernels.split_scan import pmatmul
            return pmatmul
        return np.matmul

    def _forward_layers(self, inp, states0, finals, layer_caches, mask, T, B, keep=True, impl="numpy",
                        alloc=np.empty):
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        for l in range(L):
            outs, dir_caches = [], []
            for d in range(D):
                W_ih, W_hh, b_ih, b_hh = self._layer_params(l, d)
                # compiled LSTM/RNN: b_ih joins b_hh in the gate kernel (one pass over x W_ih^T less)
                fold = impl != "numpy" and self.cell_name != "gru" and b_ih is not None
                state0 = tuple(s[l * D + d] for s in states0)
                b_rec = b_ih + b_hh if fold else b_hh
                if impl in ("split", "loop"):   # the input projection runs inside the compiled loop
                    scan = _kernel_module("split_scan").split_forward if impl == "split" else \
                        _kernel_module("numba_scan").scan_forward
                    out, stateT, cache = scan(
                        self.cell_name, inp, W_ih, None if fold else b_ih, state0, W_hh, b_rec, mask,
                        reverse=(d == 1), opts=self.cell_opts, keep=keep, alloc=alloc)
                elif impl == "hybrid":
                    numba_scan = _kernel_module("numba_scan")
                    xw = _project(inp.reshape(T * B, -1), W_ih, None if fold else b_ih).reshape(T, B, -1)
                    out, stateT, cache = numba_scan.hybrid_forward(
                        self.cell_name, xw, state0, W_hh, b_rec, mask, reverse=(d == 1), opts=self.cell_opts,
                        keep=keep, alloc=alloc)
                else:
                    xw = _project(inp.reshape(T * B, -1), W_ih, b_ih).reshape(T, B, -1)      # (T, B, G*H)
                    out, stateT, cache = recurrent.scan_forward(
                        self.cell, xw, state0, W_hh, b_hh, mask, reverse=(d == 1), opts=self.cell_opts,
                        segment=self.bptt_segment)
                for f, s in zip(finals, stateT):
                    f[l * D + d] = s
                outs.append(out)
                if keep:
                    dir_caches.append(cache)
            out_l = outs[0] if D == 1 else np.concatenate(outs, axis=2)    # (T, B, D*H)
            drop = None
            if self.training and self.dropout > 0 and l < L - 1:
                kept = self.rng.random(out_l.shape) >= self.dropout
                drop = kept.astype(self.dtype) / self.dtype(1.0 - self.dropout)
            if keep:
                layer_caches.append((inp, dir_caches, drop))
            inp = out_l if drop is None else out_l * drop
        return inp

    def backward(self, d_output, d_hn=None, check_finite=True, record_state_grads=False):
        """Backpropagate through the last forward. Returns ``(dx, dhx)`` (dhx = (dh0, dc0) for the LSTM).

        Parameter gradients are added to ``self.grads`` (accumulated until ``zero_grad()``).
        ``record_state_grads``: also keep the total gradient with respect to every step's state in
        ``self.state_grads[(layer, direction)] = (dL/dh (T, B, H), [dL/dc (T, B, H)])``.
        """
        if self._cache is None:
            if getattr(self, "_no_grad_forward", False):
                raise RuntimeError("backward: the last forward ran under rnnlab.no_grad() and kept no cache; "
                                   "run the forward outside no_grad() to backpropagate")
            raise RuntimeError("backward: no forward pass to backpropagate through; call forward first")
        layer_caches, unbatched, (T, B), n_state, guards, impl = self._cache
        check_unchanged(guards)
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        out_shape = ((T, D * H) if unbatched else (B, T, D * H) if self.batch_first else (T, B, D * H))
        d_output = as_float_array("d_output", d_output, self.dtype, check_finite)
        if tuple(d_output.shape) != out_shape:
            raise ShapeError(f"d_output: expected the output's shape {out_shape}, got {tuple(d_output.shape)}")
        if unbatched:
            d_output = d_output[:, None, :]
        elif self.batch_first:
            d_output = d_output.transpose(1, 0, 2)
        if n_state == 1:
            d_hn = (d_hn,)
        elif d_hn is None:
            d_hn = (None, None)
        elif not isinstance(d_hn, (tuple, list)) or len(d_hn) != 2:
            raise TypeError(f"d_hn: expected a pair (dh_n, dc_n) for LSTM (entries may be None), got {type(d_hn).__name__}")
        names = ("d_hn",) if n_state == 1 else ("d_hn[0] (dh_n)", "d_hn[1] (dc_n)")
        d_final = [np.zeros((L * D, B, H), self.dtype) if g is None
                   else self._check_state(n, g, B, unbatched, check_finite) for n, g in zip(names, d_hn)]
        d_init = [np.empty_like(g) for g in d_final]
        if record_state_grads:
            self.state_grads = {}
        with self._blas_context(impl, B):
            dx = self._backward_layers(d_output, d_final, d_init, layer_caches, T, B, n_state, record_state_grads,
                                       self._matmul(impl))
        if unbatched:
            dx = dx[:, 0, :]
            d_init = [g[:, 0, :] for g in d_init]
        elif self.batch_first:
            dx = dx.transpose(1, 0, 2)
        return dx, (d_init[0] if n_state == 1 else tuple(d_init))

    def _backward_layers(self, d_output, d_final, d_init, layer_caches, T, B, n_state, record_state_grads,
                         mm=np.matmul):
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        d_inp = d_output                                                     # (T, B, D*H)
        for l in range(L - 1, -1, -1):
            inp, dir_caches, drop = layer_caches[l]
            d_out_l = d_inp if drop is None else d_inp * drop               # backprop through dropout
            d_x = None
            inp2 = inp.reshape(T * B, -1)
            for d in range(D):
                s = self._suffix(l, d)
                W_ih, W_hh, b_ih, b_hh = self._layer_params(l, d)
                rec = [] if record_state_grads else None
                dXW, dstate0, dW_hh, db_hh, dxd, db_ih = recurrent.scan_backward(
                    self.cell, d_out_l[:, :, d * H:(d + 1) * H], tuple(g[l * D + d] for g in d_final),
                    dir_caches[d], W_hh, has_bias=self.bias, opts=self.cell_opts, record=rec,
                    alloc=lambda shape, dtype: self._workspace(shape), W_ih=W_ih)
                if rec is not None:
                    rec.sort(key=lambda r: r[0])
                    self.state_grads[(l, d)] = tuple(np.stack([r[1][i] for r in rec]) for i in range(n_state))
                dXW2 = dXW.reshape(T * B, -1)                                # (T*B, G*H)
                if dW_hh is None:       # the split LSTM: dW_ih, dW_hh (and db) from one product, dL/dA^T [X H 1]
                    XH = dir_caches[d][2]["XH"]
                    dW = mm(dXW2.T, XH.reshape(T * B, -1))                   # (G*H, I+H[+1])
                    I = W_ih.shape[1]
                    self.grads["weight_ih" + s] += dW[:, :I]
                    self.grads["weight_hh" + s] += dW[:, I:I + H]
                    db_hh = dW[:, I + H] if self.bias else None
                else:
                    self.grads["weight_ih" + s] += mm(dXW2.T, inp2)         # one product for all steps
                    self.grads["weight_hh" + s] += dW_hh
                if self.bias:
                    # compiled LSTM/RNN: the gradient of b_ih is that of b_hh (the same dA summed)
                    same = dir_caches[d][0] == "numba" and self.cell_name != "gru"
                    if db_ih is None:
                        db_ih = db_hh if same else dXW2.sum(axis=0)
                    self.grads["bias_ih" + s] += db_ih
                    self.grads["bias_hh" + s] += db_hh
                if dxd is None:                                              # (the split path: in its loop)
                    dxd = mm(dXW2, W_ih).reshape(inp.shape)                  # (T, B, I)
                d_x = dxd if d_x is None else d_x + dxd
                for g, ds in zip(d_init, dstate0):
                    g[l * D + d] = ds
            d_inp = d_x
        return d_inp


class RNN(RecurrentLayer):
    """Elman RNN, ``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` (or ReLU), as ``torch.nn.RNN``.

    Arguments follow torch's order: ``RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh',
    bias=True, batch_first=False, dropout=0.0, bidirectional=False, *, dtype=float32, seed=None,
    recurrent_init='uniform')``. ``recurrent_init='orthogonal'`` draws each W_hh block orthogonal.
    ``nonlinearity='identity'`` (not in torch) gives the linear RNN used by the gradient diagnostics.
    """

    cell_name = "rnn"

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, **kw):
        check_choice("nonlinearity", nonlinearity, ("tanh", "relu", "identity"))
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         nonlinearity=nonlinearity, **kw)

    @property
    def nonlinearity(self):
        return self.cell_opts["nonlinearity"]


class LSTM(RecurrentLayer):
    """LSTM with gate blocks i, f, g, o, as ``torch.nn.LSTM`` (no ``proj_size``).

    ``forget_bias`` (default None: plain uniform init) sets the forget-gate block of ``bias_ih`` to that
    value and of ``bias_hh`` to 0 at init, so the two biases sum to it (Jozefowicz et al. 2015 use 1.0):
    the product of forget gates then starts near sigmoid(1)^T instead of 0.5^T.
    """

    cell_name = "lstm"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, forget_bias=None, **kw):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, **kw)
        self.forget_bias = None if forget_bias is None else check_float("forget_bias", forget_bias)
        if self.forget_bias is not None:
            if not self.bias:
                raise ConfigError("forget_bias: needs bias=True, got bias=False")
            H = self.hidden_size
            for k, v in self._params.items():
                if k.startswith("bias_ih"):
                    v[H:2 * H] = self.forget_bias
                elif k.startswith("bias_hh"):
                    v[H:2 * H] = 0.0


class GRU(RecurrentLayer):
    """GRU with gate blocks r, z, n, as ``torch.nn.GRU``.

    ``reset='after'`` (default) is PyTorch's/cuDNN's ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``;
    ``reset='before'`` is Cho et al. 2014's ``n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)``
    (ONNX linear_before_reset=0, Keras reset_after=False).
    """

    cell_name = "gru"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, reset="after", **kw):
        check_choice("reset", reset, ("after", "before"))
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         reset=reset, **kw)

    @property
    def reset(self):
        return self.cell_opts["reset"]


def layer_from_config(cfg: dict, seed=None) -> RecurrentLayer:
    """Build a layer from ``layer.config()`` output (weights freshly initialised)."""
    cfg = dict(cfg)
    kinds = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
    cell = cfg.pop("cell", None)
    check_choice("cell", cell, kinds)
    return kinds[cell](seed=seed, **cfg)
