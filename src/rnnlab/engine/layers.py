"""``rnnlab.RNN``, ``rnnlab.LSTM``, ``rnnlab.GRU``: the PyTorch-shaped face of the engine.

Arguments, parameter storage under PyTorch's names (``weight_ih_l0``, ``bias_hh_l1_reverse``...), the
state dict and gradient accumulation live here; input checks in ``rnnlab.engine._checks``; stacking, the backend
choice and the caches in ``rnnlab.engine.dispatch``; the equations in ``rnnlab.engine.cells``.

Length: the public face of every layer class in one place (``rnnlab.RNN`` ... ``rnnlab.LRU``, the names
saved estimator files hold); the math is in ``cells``, the loops behind ``dispatch``.
"""
from __future__ import annotations

import inspect
import math
import sys

import numpy as np

from rnnlab.engine import _checks as checks
from rnnlab.engine import _diagonal as diagonal_family
from rnnlab.engine import dispatch
from rnnlab.engine.cells import CELLS, DIAGONAL
from rnnlab.engine.registry import on_register
from rnnlab.engine.cells.linear import DRAW_BLOCK, draw
from rnnlab.errors import BackendError, ConfigError, DTypeError, ShapeError, check_choice, check_float, check_int
from rnnlab.engine.grad_mode import is_grad_enabled

_DTYPES = {"float32": np.float32, "float64": np.float64}


def resolve_dtype(dtype) -> type:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in _DTYPES:
        raise DTypeError(f"dtype: expected float32 or float64, got {dtype!r}")
    return _DTYPES[name]


def int_text(n: int, commas=True) -> str:
    """An int for a message; an absurd one (hidden_size 10**200) as its power of ten, not 200 digits."""
    if n >= 10**15:
        return f"~10**{len(str(n)) - 1}"
    return f"{n:,}" if commas else str(n)


def size_text(nbytes: int) -> str:
    """Bytes for a message: MiB to EiB, then a power of ten (an absurd size is an exact int past any float)."""
    if nbytes >= 2**70:
        return f"10**{len(str(nbytes)) - 1} bytes"
    unit, exp = next((u, e) for u, e in (("EiB", 60), ("PiB", 50), ("TiB", 40), ("GiB", 30), ("MiB", 20))
                     if nbytes >= 2**e or e == 20)
    return f"{nbytes / 2**exp:.1f} {unit}"


def memory_refusal(arg: str, what: str, nbytes: int, hint: str) -> ConfigError | None:
    """The error for ``nbytes`` of parameters that would not fit (over half the memory available, or past what
    one process can address), or None when they fit. ``what``: the subject of "need", e.g. "LSTM(3, 100000) has
    ... parameters; its float32 weights and their gradients"; ``hint``: what to change."""
    free = checks.available_memory()                        # looked up at each call: tests shrink it
    if nbytes > sys.maxsize:
        return ConfigError(f"{arg}: {what} need about {size_text(nbytes)}, more than one process can address; "
                           f"{hint}")
    if free is not None and nbytes > free // 2:
        return ConfigError(f"{arg}: {what} need about {size_text(nbytes)}, over half of the {size_text(free)} of "
                           f"memory available; {hint}")
    return None


class RecurrentLayer:
    """What every layer shares, whatever its cell family: the arguments, the parameters under PyTorch's names,
    the state dict, gradient accumulation, and the forward/backward face over the one stack (``dispatch.forward``
    and ``dispatch.backward``). A family (``DenseLayer``, ``DiagonalLayer``) provides the per-direction
    functions and its parameters' shapes. Use the cells' classes.

    ``reverse=True`` (with ``bidirectional=False``; not in torch, ONNX's ``direction="reverse"``): the one
    direction reads each sequence backwards, from its own last valid step under ``lengths`` -- the second
    direction of a bidirectional layer, run alone -- and the output comes back in the original time order. Its
    parameters keep the unsuffixed names (``weight_ih_l0``, not ``weight_ih_l0_reverse``): a torch module with
    them, run on each sequence reversed within its length, gives the output reversed within it and the same
    ``h_n``."""

    cell_name = ""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, dtype=np.float32, seed=None,
                 recurrent_init="uniform", bptt_segment=None, backend="auto", input_dropout=0.0,
                 recurrent_dropout=0.0, zoneout=0.0, zoneout_cell=0.0, reverse=False, cell_opts=None, **unknown):
        if unknown:
            valid = sorted(p for p in inspect.signature(type(self).__init__).parameters
                           if p not in ("self", "kw", "cell_opts", "unknown"))
            valid = sorted(set(valid) | {"dtype", "seed", "recurrent_init", "bptt_segment", "backend", "input_dropout",
                                         "recurrent_dropout", "zoneout", "zoneout_cell", "reverse"})
            raise ConfigError(f"{type(self).__name__}: unknown option(s) {sorted(unknown)}; expected some of {valid}")
        self.input_size = check_int("input_size", input_size, 1)
        self.hidden_size = check_int("hidden_size", hidden_size, 1)
        self.num_layers = check_int("num_layers", num_layers, 1)
        for arg, val in (("bias", bias), ("batch_first", batch_first), ("bidirectional", bidirectional),
                         ("reverse", reverse)):
            if not isinstance(val, (bool, np.bool_)):
                raise ConfigError(f"{arg}: expected True or False, got {val!r}")
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)
        if reverse and self.bidirectional:
            raise ConfigError("reverse: a bidirectional layer already reads each sequence both ways; use "
                              "reverse=True with bidirectional=False, got bidirectional=True")
        # one direction that reads each sequence backwards, as the second direction of a bidirectional layer
        self.reverse = bool(reverse)
        self.dropout = check_float("dropout", dropout, 0.0, 1.0, high_open=True)
        check_choice("recurrent_init", recurrent_init, ("uniform", "orthogonal"))
        self.recurrent_init = recurrent_init
        # bound BPTT memory: keep states every bptt_segment steps, recompute inside segments in backward
        self.bptt_segment = None if bptt_segment is None else check_int("bptt_segment", bptt_segment, 1)
        self.dtype = resolve_dtype(dtype)
        self.cell = self._cell_module()
        self.cell_opts = dict(cell_opts or {})
        # variational dropout and zoneout (dispatch.variational_masks)
        self.regularization = {k: check_float(k, v, 0.0, 1.0, high_open=True) for k, v in (
            ("input_dropout", input_dropout), ("recurrent_dropout", recurrent_dropout), ("zoneout", zoneout),
            ("zoneout_cell", zoneout_cell))}
        if self.regularization["zoneout_cell"] and len(self.cell.STATE) < 2:
            raise ConfigError(f"zoneout_cell: {type(self).__name__} has no cell state c (only the LSTM does); use "
                              f"zoneout, got zoneout_cell={zoneout_cell}")
        self.backend = self._check_backend(backend, self.bptt_segment)
        self.training = True
        self.rng = np.random.default_rng(seed)
        self.num_directions = 2 if self.bidirectional else 1
        self._check_memory()                    # before any weight array is made
        self._params = self._init_params()
        self.grads = {k: np.zeros_like(v) for k, v in self._params.items()}
        self._cache = None              # dispatch.ForwardCache of the last forward with gradients
        self._no_grad_forward = False
        self.workspace = dispatch.Workspace()    # the compiled backward's dL/dA buffer, reused
        self.row_split = None                  # the batch split's row share (backend "split")
        self.state_grads = {}

    def __getstate__(self):
        """Pickling (joblib, scikit-learn's clone of a fitted estimator): the weights and options; the cell
        module and the caches and buffers of the last call are rebuilt or left out."""
        state = dict(self.__dict__)
        del state["cell"]
        state.update(_cache=None, workspace=None, row_split=None, state_grads={})
        return state

    def __setstate__(self, state):
        state.setdefault("reverse", False)          # pickled before the option existed
        self.__dict__.update(state)
        self.cell = self._cell_module()
        self.workspace = dispatch.Workspace()

    # ----------------------------------------------------------------- what each family provides
    # the one stack (``dispatch.forward``/``backward``) calls these per call and per direction; the parameters'
    # shapes and initialisation, the backend check and the BLAS scope are the family's too
    family = ""

    def _call_plan(self, B, keep, T):
        """-> (backend, what the direction functions take besides the arrays, the BLAS scope) of one call."""
        raise NotImplementedError(f"{type(self).__name__}: a layer family defines _call_plan")

    def _direction_forward(self, backend, ctx, l, d, inp_d, state0, mask, keep, rec_mask, zone):
        """One direction of one layer -> (out (T, B, H), final states, the caches or None, the options used)."""
        raise NotImplementedError(f"{type(self).__name__}: a layer family defines _direction_forward")

    def _direction_backward(self, backend, l, d, d_out, d_final, dircache, record):
        """-> (dx, d(initial states), {parameter name without suffix: gradient}, recorded state gradients)."""
        raise NotImplementedError(f"{type(self).__name__}: a layer family defines _direction_backward")

    def _check_record(self, cache, record):
        raise NotImplementedError(f"{type(self).__name__}: a layer family defines _check_record")

    def _backward_scope(self, cache):
        raise NotImplementedError(f"{type(self).__name__}: a layer family defines _backward_scope")

    def _cell_module(self):
        raise NotImplementedError(f"{type(self).__name__}: a layer family defines _cell_module")

    def _check_backend(self, backend, segment):
        raise NotImplementedError(f"{type(self).__name__}: a layer family defines _check_backend")

    @property
    def gate_size(self) -> int:
        raise NotImplementedError(f"{type(self).__name__}: a layer family defines gate_size")

    def _param_shapes(self, layers=None) -> dict:
        raise NotImplementedError(f"{type(self).__name__}: a layer family defines _param_shapes")

    def _init_params(self) -> dict:
        raise NotImplementedError(f"{type(self).__name__}: a layer family defines _init_params")

    def _init_scratch(self) -> int:
        """Bytes of temporaries the initialisation needs besides the parameters: one float64 draw block."""
        return DRAW_BLOCK * 8

    def blas_scope(self, B, T=None):
        raise NotImplementedError(f"{type(self).__name__}: a layer family defines blas_scope")

    def loop_options(self) -> list:
        """The options set on this layer that the shared compiled loop implements where the cell's kernels
        serve them (``CellKernel.serves``; the NumPy reference implements every one)."""
        return ([k for k in ("recurrent_dropout", "zoneout", "zoneout_cell") if self.regularization[k]]
                + (["layer_norm"] if getattr(self, "layer_norm", False) else []))

    # ----------------------------------------------------------------- parameters
    @property
    def output_size(self) -> int:
        """Features per direction of the output and of h: hidden_size, or an LSTM's proj_size."""
        return self.hidden_size

    @property
    def state_sizes(self) -> tuple:
        """The size of each state variable (h, and c for the LSTM)."""
        return (self.output_size,) + (self.hidden_size,) * (len(self.cell.STATE) - 1)

    def suffix(self, layer, direction) -> str:
        return f"_l{layer}" + ("_reverse" if direction == 1 else "")

    def is_reverse(self, d) -> bool:
        """Whether direction ``d`` reads each sequence backwards: the second of a bidirectional layer, or the
        only one of a ``reverse=True`` layer (whose parameters keep the unsuffixed names, ``weight_ih_l0``...)."""
        return d == 1 or self.reverse

    def _layers(self, layers=None):
        return range(self.num_layers) if layers is None else layers

    def _param_count(self) -> int:
        """Parameters of the layer, an exact Python int (no overflow at any size); the layers past the first are
        alike, so num_layers multiplies one of them instead of listing them all."""
        def count(layers):
            return sum(math.prod(shape) for shape in self._param_shapes(layers).values())
        return count([0]) + (self.num_layers - 1) * count([1])

    def _size_args(self) -> tuple:
        """(the argument to name, the hint). The size grows with G*H*(I + H) for the first layer and G*H*(D*H + H)
        for each further one: the largest of input_size, hidden_size and num_layers is named; the others that
        drive it too are offered in the hint."""
        sizes = {"hidden_size": self.hidden_size, "input_size": self.input_size, "num_layers": self.num_layers}
        main = max(sizes, key=sizes.get)                    # ties: hidden_size, the usual lever
        also = [k for k, v in sizes.items() if k != main and (8 * v >= sizes[main] or k == "num_layers" and v > 1)]
        also += ["bidirectional=False"] if self.bidirectional else []
        if self.cell_name == "lstm" and "hidden_size" in [main] + also and not (self.proj_size or self.peephole
                                                                               or self.layer_norm):
            also.append("a proj_size")                      # W_hh shrinks to 4H x P
        return main, f"use a smaller {main}" + (f" (or {' / '.join(also)})" if also else "")

    def _call_text(self) -> str:
        opts = {"num_layers": self.num_layers if self.num_layers > 1 else 0, "bidirectional": self.bidirectional,
                "proj_size": getattr(self, "proj_size", 0)}
        return (f"{type(self).__name__}({int_text(self.input_size, False)}, {int_text(self.hidden_size, False)}"
                + "".join(f", {k}={v if isinstance(v, bool) else int_text(v, False)}" for k, v in opts.items() if v)
                + ")")

    def _check_memory(self) -> None:
        """Refuse (ConfigError naming the argument) a layer whose weights, their gradients (allocated with them)
        and the init's temporaries would not fit, before any of them is made: NumPy's raw MemoryError, or the
        OS killing the process, would say nothing of which argument to change."""
        count = self._param_count()
        nbytes = 2 * count * np.dtype(self.dtype).itemsize + self._init_scratch()
        arg, hint = self._size_args()
        what = (f"{self._call_text()} has {int_text(count)} parameters; its {np.dtype(self.dtype).name} weights "
                f"and their gradients")
        error = memory_refusal(arg, what, nbytes, hint)
        if error is not None:
            raise error

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
        problems, new = checks.state_dict_entries(state_dict, self._param_shapes(), strict)
        if problems:
            raise ShapeError(f"load_state_dict: {len(problems)} problem(s) for {self!r}: " + "; ".join(problems))
        for k, v in new.items():
            self._params[k][...] = v

    def config(self) -> dict:
        """The constructor arguments that define the architecture (JSON-able); see ``layer_from_config``."""
        return {"cell": self.cell_name, "input_size": self.input_size, "hidden_size": self.hidden_size,
                "num_layers": self.num_layers, "bias": self.bias, "batch_first": self.batch_first,
                "dropout": self.dropout, "bidirectional": self.bidirectional,
                **({"reverse": True} if self.reverse else {}),
                "dtype": np.dtype(self.dtype).name, **self.cell_opts,
                **{k: v for k, v in self.regularization.items() if v}}

    def set_backend(self, backend="auto", bptt_segment=None):
        """Change the backend and the BPTT segment length of a built layer (checked as in the constructor)."""
        segment = None if bptt_segment is None else check_int("bptt_segment", bptt_segment, 1)
        self.backend = self._check_backend(backend, segment)
        self.bptt_segment = segment
        return self

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0)

    def train(self, mode: bool = True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in {**self.cell_opts,
                                                    **{k: v for k, v in self.regularization.items() if v}}.items())
        if self.reverse:
            opts += ", reverse=True"
        if self.backend != "auto":
            opts += f", backend={self.backend!r}"
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bias={self.bias}, batch_first={self.batch_first}, dropout={self.dropout}, "
                f"bidirectional={self.bidirectional}{opts}, dtype={np.dtype(self.dtype).name})")

    # ----------------------------------------------------------------- forward / backward
    def __call__(self, x, hx=None, lengths=None, check_finite=True):
        return self.forward(x, hx, lengths, check_finite)

    def forward(self, x, hx=None, lengths=None, check_finite=True):
        """x (T, B, I), or (B, T, I) with batch_first, or (T, I) unbatched.

        Returns ``(output, h_n)`` (``(output, (h_n, c_n))`` for the LSTM) with torch's shapes.
        """
        return self._forward(x, hx, lengths, check_finite)

    def _forward(self, x, hx, lengths, check_finite, x_private=False, mask=None):
        """``forward``; ``x_private``: x is the caller's own array that nobody else can change (a model's
        one-hot or embedded input), so it is not fingerprinted for backward. ``mask`` (T, B, 1): the steps that
        count, any pattern (``rnnlab.Stream``: streams that begin or end inside a chunk), instead of lengths."""
        x_in = x
        x, unbatched = checks.layer_input(x, self.input_size, self.batch_first, self.dtype, check_finite)
        T, B, _ = x.shape
        if mask is None:
            mask = None if lengths is None else checks.lengths_mask(lengths, T, B, self.dtype)
        keep = is_grad_enabled()
        # the caller's arrays that backward reads again are fingerprinted, so that backward can refuse values
        # changed in place since (as torch does); an array converted here is a private copy
        watched = [("x", x)] if keep and not x_private and checks.users_memory(x, x_in) else []
        states0 = checks.initial_states(hx, len(self.cell.STATE), type(self).__name__,
                                        self.num_layers * self.num_directions, B, self.state_sizes, unbatched,
                                        self.dtype, check_finite, watched if keep else None)
        output, finals, cache = dispatch.forward(self, x, states0, mask, keep, checks.guard_inputs(watched))
        if cache is not None:
            cache.unbatched = unbatched
        self._cache, self._no_grad_forward = cache, not keep
        if unbatched:
            output = output[:, 0, :]
            finals = [f[:, 0, :] for f in finals]
        elif self.batch_first:
            output = output.transpose(1, 0, 2)
        return (output, finals[0]) if len(finals) == 1 else (output, tuple(finals))

    @property
    def last_backend(self):
        """The backend the last forward with gradients ran on (None before one)."""
        return None if self._cache is None else self._cache.backend

    def gates(self, l=0, d=0) -> dict:
        """The gate activations of the last forward with gradients, layer l and direction d: name -> (T, B, H)
        (LSTM i f g o, GRU r z n; the RNN has none), as the cells' docstrings name them. At padded steps
        (``lengths``) the values are unspecified: the compiled backends do not compute them. Copies: the next
        forward reuses the cache's arrays."""
        if self._cache is None:
            raise RuntimeError("gates: no forward with gradients to read them from; call forward first")
        check_int("l", l, 0, self.num_layers - 1)
        check_int("d", d, 0, self.num_directions - 1)
        return {k: np.array(v) for k, v in self._cache.layers[l].dirs[d].gates().items()}

    def states(self, l=0, d=0) -> dict:
        """The states entering each step of the last forward with gradients, layer l and direction d:
        ``h_prev`` (T, B, H), and ``c_prev`` for the LSTM (at padded steps: the state carried). Copies, as
        ``gates``."""
        if self._cache is None:
            raise RuntimeError("states: no forward with gradients to read them from; call forward first")
        check_int("l", l, 0, self.num_layers - 1)
        check_int("d", d, 0, self.num_directions - 1)
        return {k: np.array(v) for k, v in self._cache.layers[l].dirs[d].states().items()}

    def backward(self, d_output, d_hn=None, check_finite=True, record_state_grads=False):
        """Backpropagate through the last forward. Returns ``(dx, dhx)`` (dhx = (dh0, dc0) for the LSTM).

        Parameter gradients are added to ``self.grads`` (accumulated until ``zero_grad()``).
        ``record_state_grads`` (backend "numpy"): also keep the total gradient with respect to every step's
        state in ``self.state_grads[(layer, direction)] = (dL/dh (T, B, H), [dL/dc (T, B, H)])``.
        """
        cache = self._cache
        if cache is None:
            if self._no_grad_forward:
                raise RuntimeError("backward: the last forward ran under rnnlab.no_grad() and kept no cache; "
                                   "run the forward outside no_grad() to backpropagate")
            raise RuntimeError("backward: no forward pass to backpropagate through; call forward first")
        checks.check_unchanged(cache.guards)
        T, B, DH = cache.T, cache.B, self.num_directions * self.output_size
        out_shape = (T, DH) if cache.unbatched else (B, T, DH) if self.batch_first else (T, B, DH)
        d_output = checks.as_float_array("d_output", d_output, self.dtype, check_finite)
        if tuple(d_output.shape) != out_shape:
            raise ShapeError(f"d_output: expected the output's shape {out_shape}, got {tuple(d_output.shape)}")
        if cache.unbatched:
            d_output = d_output[:, None, :]
        elif self.batch_first:
            d_output = d_output.transpose(1, 0, 2)
        d_final = checks.final_state_grads(d_hn, cache.n_state, type(self).__name__,
                                           self.num_layers * self.num_directions, B, self.state_sizes,
                                           cache.unbatched, self.dtype, check_finite)
        dx, d_init, state_grads = dispatch.backward(self, cache, d_output, d_final, record_state_grads)
        if record_state_grads:
            self.state_grads = state_grads
        if cache.unbatched:
            dx, d_init = dx[:, 0, :], [g[:, 0, :] for g in d_init]
        elif self.batch_first:
            dx = dx.transpose(1, 0, 2)
        return dx, (d_init[0] if cache.n_state == 1 else tuple(d_init))


class DenseLayer(RecurrentLayer):
    """The classic cells' family (RNN, LSTM, GRU and every registered dense cell): per direction the weights
    W_ih, W_hh and biases b_ih, b_hh of one product per step, run by a backend of ``rnnlab.engine.dispatch`` (the NumPy
    reference or the compiled loop). Use the subclasses."""

    family = "dense"

    def _call_plan(self, B, keep, T):
        return dispatch.dense_plan(self, B, keep, T)

    def _direction_forward(self, backend, ctx, l, d, inp_d, state0, mask, keep, rec_mask, zone):
        return dispatch.dense_forward(self, backend, ctx, l, d, inp_d, state0, mask, keep, rec_mask, zone)

    def _direction_backward(self, backend, l, d, d_out, d_final, dircache, record):
        return dispatch.dense_backward(self, backend, l, d, d_out, d_final, dircache, record)

    def _check_record(self, cache, record):
        dispatch.dense_check_record(cache, record)

    def _backward_scope(self, cache):
        return dispatch.blas_context(cache.backend, cache.B, self.gate_size, self.output_size)

    def _cell_module(self):
        return CELLS[self.cell_name]

    def _check_backend(self, backend, segment):
        return dispatch.check_backend(backend, self.cell_name, self.cell_opts, segment, self.reference_options(),
                                    self.loop_options())

    def reference_options(self) -> list:
        """The options set on this layer that only the NumPy reference backend implements."""
        return []

    def _choose(self, B, keep=True, T=None):
        return dispatch.choose(self.backend, self.cell_name, self.cell_opts, B, self.gate_size, self.hidden_size,
                             self.bptt_segment, np.dtype(self.dtype).itemsize, bool(self.reference_options()),
                             tuple(self.loop_options()), keep, self.input_size + self.hidden_size + 1, T)

    def option_params(self, l, d) -> dict:
        """Parameters of the cell's options for layer l, direction d, passed to its steps: the layer norm's
        gains and biases (LSTM and GRU with ``layer_norm``)."""
        if not getattr(self, "layer_norm", False):
            return {}
        s, p = self.suffix(l, d), self._params
        ln = {"x": (p["ln_ih_weight" + s], p["ln_ih_bias" + s]), "h": (p["ln_hh_weight" + s], p["ln_hh_bias" + s])}
        if "ln_c_weight" + s in p:
            ln["c"] = (p["ln_c_weight" + s], p["ln_c_bias" + s])
        return {"ln": ln}

    def _layer_norm_shapes(self, shapes, layers=None) -> dict:
        """The layer norm's gains and biases: the input and recurrent projections (G*H each), the LSTM's c (H)."""
        for l in self._layers(layers):
            for d in range(self.num_directions):
                s = self.suffix(l, d)
                for block, size in (("ih", self.gate_size), ("hh", self.gate_size)) + (
                        (("c", self.hidden_size),) if self.cell_name == "lstm" else ()):
                    shapes[f"ln_{block}_weight{s}"] = (size,)
                    shapes[f"ln_{block}_bias{s}"] = (size,)
        return shapes

    def _init_layer_norm(self):
        for k, v in self._params.items():                   # gains 1, biases 0: the identity at init
            if k.startswith("ln_"):
                v[...] = 1.0 if "_weight" in k else 0.0

    @property
    def gate_size(self) -> int:
        return self.cell.G * self.hidden_size

    def _param_shapes(self, layers=None) -> dict:
        """Name -> shape of every parameter, or of those of the given layer indices only."""
        shapes, GH, H, P = {}, self.gate_size, self.hidden_size, self.output_size
        for l in self._layers(layers):
            in_l = self.input_size if l == 0 else P * self.num_directions
            for d in range(self.num_directions):
                s = self.suffix(l, d)
                shapes["weight_ih" + s] = (GH, in_l)
                shapes["weight_hh" + s] = (GH, P)
                if self.bias:
                    shapes["bias_ih" + s] = (GH,)
                    shapes["bias_hh" + s] = (GH,)
        return shapes

    def _init_scratch(self) -> int:
        """Bytes of temporaries the initialisation needs besides the parameters: one float64 draw block, and for
        the orthogonal init a (H, P) float64 block, its Q (in the QR's own copy) and Q's sign-fixed copy."""
        scratch = DRAW_BLOCK * 8
        if self.recurrent_init == "orthogonal":
            scratch += 4 * 8 * self.hidden_size * self.output_size
        return scratch

    def _init_params(self) -> dict:
        # drawn block by block straight into the layer's dtype (linear.draw): the values of one float64 draw cast
        # to it, bit for bit, without a float64 copy of the whole weight
        k = 1.0 / np.sqrt(self.hidden_size)
        params = {}
        for name, shape in self._param_shapes().items():
            if name.startswith("weight_hh") and self.recurrent_init == "orthogonal":
                H, P = self.hidden_size, shape[1]                    # P < H: orthonormal columns (projections)
                params[name] = w = np.empty(shape, self.dtype)
                for g in range(self.cell.G):                         # one (H, P) float64 block at a time
                    q, r = np.linalg.qr(self.rng.standard_normal((H, P)))
                    w[g * H:(g + 1) * H] = q * np.sign(np.diag(r))   # Haar-uniform orthogonal block
            else:
                params[name] = draw(lambda m: self.rng.uniform(-k, k, m), shape, self.dtype)
        return params

    def layer_params(self, l, d):
        """(W_ih, W_hh, b_ih, b_hh) of layer l, direction d (biases None without bias)."""
        s, p = self.suffix(l, d), self._params
        return p["weight_ih" + s], p["weight_hh" + s], p.get("bias_ih" + s), p.get("bias_hh" + s)

    def blas_scope(self, B, T=None):
        """(context, matmul) for work around this layer on a batch of B rows (and T steps, if known): the BLAS
        thread setting its forward and backward use, and the matrix product to use under it. A model runs its
        own products inside it, so that no two-thread BLAS call leaves worker threads spinning against the split
        path's. The backend is the one the layer's call takes: for inference under ``rnnlab.no_grad()``."""
        backend = self._choose(B, is_grad_enabled(), T)
        return dispatch.blas_context(backend, B, self.gate_size, self.hidden_size), dispatch.matmul_for(backend)


class RNN(DenseLayer):
    """Elman RNN, ``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` (or ReLU), as ``torch.nn.RNN``.

    Arguments follow torch's order: ``RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh',
    bias=True, batch_first=False, dropout=0.0, bidirectional=False, *, dtype=float32, seed=None,
    recurrent_init='uniform', bptt_segment=None, backend='auto')``. ``nonlinearity='identity'`` (not in
    torch) gives the linear RNN used by the gradient diagnostics.
    """

    cell_name = "rnn"

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, **kw):
        check_choice("nonlinearity", nonlinearity, ("tanh", "relu", "identity"))
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         cell_opts={"nonlinearity": nonlinearity}, **kw)

    @property
    def nonlinearity(self):
        return self.cell_opts["nonlinearity"]


class LSTM(DenseLayer):
    """LSTM with gate blocks i, f, g, o, as ``torch.nn.LSTM`` (no ``proj_size``).

    ``forget_bias`` (default None: plain uniform init) sets the forget-gate block of ``bias_ih`` to that
    value and of ``bias_hh`` to 0 at init, so the two biases sum to it (Jozefowicz et al. 2015 use 1.0).
    ``peephole=True`` adds Gers and Schmidhuber's diagonal cell-to-gate weights, ``weight_ph_l{k}`` (3H,) =
    [p_i | p_f | p_o] (``rnnlab.engine.cells.lstm``); they run on the NumPy reference only (``auto`` picks it) and
    export to ONNX's input P.
    ``proj_size=P`` (0 < P < H) is torch's LSTM with projections (Sak et al. 2014): h_t = (o * tanh c_t)
    W_hr^T of size P, ``weight_hr_l{k}`` (P, H), ``weight_hh`` (4H, P), output (T, B, D*P), h_0 (L*D, B, P),
    c_0 (L*D, B, H); the NumPy reference only (``auto`` picks it).
    ``layer_norm=True``: LN(x W_ih^T), LN(h W_hh^T) and LN(c_t) with their gains and biases (``ln_ih_*``,
    ``ln_hh_*`` (4H,), ``ln_c_*`` (H,)), Ba et al. 2016; backends "numpy" and "loop" (``auto``: the loop for small
    steps, the reference above; ``dispatch.choose``), as recurrent dropout and zoneout.
    """

    cell_name = "lstm"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, forget_bias=None, peephole=False, proj_size=0,
                 layer_norm=False, **kw):
        for arg, val in (("peephole", peephole), ("layer_norm", layer_norm)):
            if not isinstance(val, (bool, np.bool_)):
                raise ConfigError(f"{arg}: expected True or False, got {val!r}")
        self.peephole, self.layer_norm = bool(peephole), bool(layer_norm)
        if self.layer_norm and (self.peephole or proj_size):
            raise ConfigError("layer_norm: not combined with peephole or proj_size here; use one of them")
        self.proj_size = check_int("proj_size", proj_size, 0)
        if self.proj_size and self.proj_size >= check_int("hidden_size", hidden_size, 1):
            raise ConfigError(f"proj_size: expected 0 < proj_size < hidden_size = {hidden_size} (as torch), got "
                              f"{self.proj_size}")
        if self.peephole and kw.get("bptt_segment") is not None:
            raise BackendError("bptt_segment: the peephole LSTM keeps every step's cache; use bptt_segment=None")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, **kw)
        if self.layer_norm:
            self._init_layer_norm()
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

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size

    def reference_options(self) -> list:
        return (super().reference_options() + (["peephole"] if self.peephole else [])
                + (["proj_size"] if self.proj_size else []))

    def option_params(self, l, d) -> dict:
        s, p = self.suffix(l, d), super().option_params(l, d)
        if self.peephole:
            p["peephole"] = self._params["weight_ph" + s]
        if self.proj_size:
            p["proj"] = self._params["weight_hr" + s]
        return p

    def _param_shapes(self, layers=None) -> dict:
        shapes = super()._param_shapes(layers)
        for l in self._layers(layers):
            for d in range(self.num_directions):
                s = self.suffix(l, d)
                if self.peephole:
                    shapes["weight_ph" + s] = (3 * self.hidden_size,)
                if self.proj_size:
                    shapes["weight_hr" + s] = (self.proj_size, self.hidden_size)
        return self._layer_norm_shapes(shapes, layers) if self.layer_norm else shapes

    def config(self) -> dict:
        return {**super().config(), **({"peephole": True} if self.peephole else {}),
                **({"proj_size": self.proj_size} if self.proj_size else {}),
                **({"layer_norm": True} if self.layer_norm else {})}


class GRU(DenseLayer):
    """GRU with gate blocks r, z, n, as ``torch.nn.GRU``.

    ``reset='after'`` (default) is PyTorch's/cuDNN's ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``;
    ``reset='before'`` is Cho et al. 2014's ``n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)``.
    ``layer_norm=True`` (reset='after'): LN(x W_ih^T) and LN(h W_hh^T) with their gains and biases
    (``ln_ih_*``, ``ln_hh_*`` (3H,)), Ba et al. 2016; backends "numpy" and "loop" (``auto``: the loop for small
    steps, the reference above; ``dispatch.choose``).
    ``update_bias`` (default None: plain uniform init) sets the update-gate block z of ``bias_ih`` to that value
    and of ``bias_hh`` to 0 at init: h_t = (1 - z) n + z h_(t-1), so a positive value starts the units keeping
    their state, as the LSTM's ``forget_bias`` does (an init only: the weights carry it).
    """

    cell_name = "gru"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, reset="after", layer_norm=False, update_bias=None, **kw):
        check_choice("reset", reset, ("after", "before"))
        if not isinstance(layer_norm, (bool, np.bool_)):
            raise ConfigError(f"layer_norm: expected True or False, got {layer_norm!r}")
        if layer_norm and reset == "before":
            raise ConfigError("layer_norm: the layer-normalised GRU normalises W_hh h whole, which reset='before' "
                              "splits; use reset='after'")
        self.layer_norm = bool(layer_norm)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         cell_opts={"reset": reset}, **kw)
        if self.layer_norm:
            self._init_layer_norm()
        self.update_bias = None if update_bias is None else check_float("update_bias", update_bias)
        if self.update_bias is not None:
            if not self.bias:
                raise ConfigError("update_bias: needs bias=True, got bias=False")
            H = self.hidden_size
            for k, v in self._params.items():          # blocks r, z, n: z is the second
                if k.startswith("bias_ih"):
                    v[H:2 * H] = self.update_bias
                elif k.startswith("bias_hh"):
                    v[H:2 * H] = 0.0

    @property
    def reset(self):
        return self.cell_opts["reset"]

    def _param_shapes(self, layers=None) -> dict:
        shapes = super()._param_shapes(layers)
        return self._layer_norm_shapes(shapes, layers) if self.layer_norm else shapes

    def config(self) -> dict:
        return {**super().config(), **({"layer_norm": True} if self.layer_norm else {})}


class DiagonalLayer(RecurrentLayer):
    """Shared face of the diagonal cells (``rnnlab.engine.cells.DIAGONAL``): the same arguments, shapes, state dict,
    lengths, stacking and directions as RNN/LSTM/GRU, run by ``rnnlab.engine._diagonal``. ``backend``: ``'auto'``,
    ``'numpy'`` (step by step) or ``'scan'`` (parallel over time, where the cell's recurrence is linear)."""

    family = "diagonal"

    def _call_plan(self, B, keep, T):
        return diagonal_family.plan(self, B, keep, T)

    def _direction_forward(self, backend, ctx, l, d, inp_d, state0, mask, keep, rec_mask, zone):
        return diagonal_family.direction_forward(self, backend, ctx, l, d, inp_d, state0, mask)

    def _direction_backward(self, backend, l, d, d_out, d_final, dircache, record):
        return diagonal_family.direction_backward(self, backend, l, d, d_out, d_final, dircache, record)

    def _check_record(self, cache, record):
        return None                             # every backend records dL/dh_t of a diagonal cell

    def _backward_scope(self, cache):
        return dispatch.blas_context("numpy", cache.B, self.gate_size, self.hidden_size)

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, *, recurrent_init="uniform", bptt_segment=None, **kw):
        if recurrent_init != "uniform":
            raise ConfigError(f"recurrent_init: the {self.cell_name} layer has its own initialisation (see "
                              f"rnnlab.engine.cells.{self.cell_name}), got recurrent_init={recurrent_init!r}")
        if bptt_segment is not None:
            raise BackendError(f"bptt_segment: the {self.cell_name} layer keeps every state (its memory is that of "
                               f"one (T, B, H) array per direction), got bptt_segment={bptt_segment!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, **kw)

    def _cell_module(self):
        return DIAGONAL[self.cell_name]

    def _check_backend(self, backend, segment):
        if segment is not None:
            raise BackendError(f"bptt_segment: not used by the {self.cell_name} layer, got {segment}")
        if self.loop_options():
            raise ConfigError(f"{', '.join(self.loop_options())}: not implemented for the {self.cell_name} layer "
                              f"(the classic cells have them); input_dropout and dropout between layers apply to it")
        return diagonal_family.check_backend(backend, self.cell_name, self.cell)

    @property
    def gate_size(self) -> int:
        return max(1, len(self.cell.BLOCKS)) * self.hidden_size

    def _param_shapes(self, layers=None) -> dict:
        shapes, H = {}, self.hidden_size
        for l in self._layers(layers):
            in_l = self.input_size if l == 0 else H * self.num_directions
            for d in range(self.num_directions):
                s = self.suffix(l, d)
                shapes.update({k + s: v for k, v in self.cell.param_shapes(in_l, H, self.bias).items()})
        return shapes

    def _init_scratch(self) -> int:
        # the LRU's ring: a few (H,) float64 vectors drawn and transformed whole
        return DRAW_BLOCK * 8 + 8 * 8 * self.hidden_size

    def _init_params(self) -> dict:
        params, H = {}, self.hidden_size
        for l in range(self.num_layers):
            in_l = self.input_size if l == 0 else H * self.num_directions
            for d in range(self.num_directions):
                s = self.suffix(l, d)
                p = self.cell.init(self.rng, in_l, H, self.bias, self.dtype, self.cell_opts)
                params.update({k + s: v for k, v in p.items()})
        return params

    def direction_params(self, l, d) -> dict:
        """The parameters of layer l, direction d, by their names without the suffix."""
        s = self.suffix(l, d)
        return {n: self._params[n + s] for n in self.cell.param_shapes(1, 1, self.bias)}

    def blas_scope(self, B, T=None):
        return dispatch.blas_context("numpy", B, self.gate_size, self.hidden_size), np.matmul

    def carry(self, l=0, d=0) -> np.ndarray:
        """|dh_t/dh_{t-1}| of the last forward with gradients, a diagonal per step: (T, B, H) -- 1 - z (minGRU),
        f' (minLSTM), u [pre > 0] (IndRNN), |lambda| (LRU); 1 at padded steps."""
        if self._cache is None:
            raise RuntimeError("carry: no forward with gradients to read it from; call forward first")
        check_int("l", l, 0, self.num_layers - 1)
        check_int("d", d, 0, self.num_directions - 1)
        arrays = self._cache.layers[l].dirs[d].arrays
        c = np.abs(self.cell.carry(arrays))
        return np.array(c[::-1] if arrays.reverse else c)


class _MinimalLayer(DiagonalLayer):
    """``scan``: the parallel scan of backend 'scan' -- 'associative' (the doubling scan, the default) or
    'log' (Feng et al.'s log-space form); both equal the step-by-step loop (tested)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, *, scan="associative", **kw):
        check_choice("scan", scan, DIAGONAL[self.cell_name].SCANS)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         cell_opts={"scan": scan}, **kw)


class MinGRU(_MinimalLayer):
    """minGRU (Feng et al. 2024): h_t = (1 - z_t) h_{t-1} + z_t g(W_h x_t + b_h), z_t = sigmoid(W_z x_t + b_z);
    the equations in ``rnnlab.engine.cells.mingru``. Parameters ``weight_ih_l{k}`` (2H, I) (blocks z, h),
    ``bias_ih_l{k}``; no recurrent weights."""

    cell_name = "mingru"


class MinLSTM(_MinimalLayer):
    """minLSTM (Feng et al. 2024): h_t = f'_t h_{t-1} + i'_t g(W_h x_t + b_h) with f', i' the normalised forget
    and input gates of x_t alone (``rnnlab.engine.cells.minlstm``); ``weight_ih_l{k}`` (3H, I), blocks f, i, h."""

    cell_name = "minlstm"


class IndRNN(DiagonalLayer):
    """IndRNN (Li et al. 2018): h_t = relu(W x_t + b + u * h_{t-1}) with one recurrent weight per unit
    (``weight_hh_l{k}`` (H,)); ``recurrent_max`` bounds |u| after each optimizer step (``constrain``),
    Li et al. use 2^(1/T). Step by step only (the recurrence is not linear)."""

    cell_name = "indrnn"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, *, recurrent_max=None, **kw):
        if recurrent_max is not None:
            recurrent_max = check_float("recurrent_max", recurrent_max, 0.0, low_open=True)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         cell_opts={"recurrent_max": recurrent_max}, **kw)

    def constrain(self) -> None:
        """Clip every u into [-recurrent_max, recurrent_max] (no-op without a bound)."""
        bound = self.cell_opts["recurrent_max"]
        if bound is not None:
            for k, v in self._params.items():
                if k.startswith("weight_hh"):
                    np.clip(v, -bound, bound, out=v)


class LRU(DiagonalLayer):
    """The linear recurrent unit (Orvieto et al. 2023): complex diagonal h_t = lambda h_{t-1} + gamma (B x_t),
    y_t = Re(C h_t) + D x_t (``rnnlab.engine.cells.lru``). The state is (h_re, h_im), each (L*D, B, H), passed and
    returned as the LSTM's (h, c). ``r_min``, ``r_max``: the ring |lambda| is drawn from; ``max_phase``."""

    cell_name = "lru"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, *, r_min=0.9, r_max=0.999, max_phase=2 * np.pi, **kw):
        r_min = check_float("r_min", r_min, 0.0, 1.0, high_open=True)
        r_max = check_float("r_max", r_max, 0.0, 1.0, high_open=True)
        if r_max < r_min:
            raise ConfigError(f"r_max: expected r_max >= r_min = {r_min}, got {r_max}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         cell_opts={"r_min": r_min, "r_max": r_max,
                                    "max_phase": check_float("max_phase", max_phase, 0.0, low_open=True)}, **kw)


# the one registry of layer kinds: the classic cells and the diagonal ones; a cell added later with
# rnnlab.engine.registry.register gets a DenseLayer named after it
def scale_recurrent(layer, radius: float) -> None:
    """Rescale the recurrence so its spectral radius equals ``radius``: every W_hh gate block, IndRNN's u, the
    LRU's |lambda| (below 1 by construction). A cell without recurrent weights (minGRU, minLSTM) is refused."""
    names = [n for n, _ in layer.named_parameters()]
    if layer.family == "diagonal":
        scaled = False
        for name, W in layer.named_parameters():
            if name.startswith("weight_hh"):                               # IndRNN: u (H,), the carry's scale
                W *= radius / np.abs(W.astype(np.float64)).max()
                scaled = True
            elif name.startswith("nu_log"):                                # LRU: |lambda| = exp(-exp(nu_log))
                if radius >= 1:
                    raise ConfigError(f"radii: the LRU's |lambda| = exp(-exp(nu_log)) is below 1 by construction; "
                                      f"expected radii < 1 for it, got {radius:g}")
                mags = np.exp(-np.exp(W.astype(np.float64)))
                W[...] = np.log(-np.log(mags * (radius / mags.max())))
                scaled = True
        if not scaled:
            raise ConfigError(f"cells: the {layer.cell_name} layer has no recurrent weights (its carry is computed "
                              f"from x_t, {names}); nothing to rescale")
        return
    for name, W in layer.named_parameters():
        if name.startswith("weight_hh"):
            for blk in np.split(W, layer.cell.G):                          # views into W
                rho = np.abs(np.linalg.eigvals(blk.astype(np.float64))).max()
                blk *= radius / rho


LAYERS = {"rnn": RNN, "lstm": LSTM, "gru": GRU, "mingru": MinGRU, "minlstm": MinLSTM, "indrnn": IndRNN, "lru": LRU}


def _add_layer(spec) -> None:
    if spec.name not in LAYERS:
        LAYERS[spec.name] = type(spec.name.upper(), (DenseLayer,), {"cell_name": spec.name, "__module__": __name__})


on_register(_add_layer)


def layer_class(cell: str) -> type:
    check_choice("cell", cell, LAYERS)
    return LAYERS[cell]


def layer_from_config(cfg: dict, seed=None) -> RecurrentLayer:
    """Build a layer from ``layer.config()`` output (weights freshly initialised); unknown keys are refused."""
    cfg = dict(cfg)
    return layer_class(cfg.pop("cell", None))(seed=seed, **cfg)
