"""Streaming: feed a layer or a model a step or a chunk at a time, the state kept between calls.

    stream = rnnlab.Stream(model_or_layer, batch_size=B)    # B independent streams, zero states
    y = stream.feed(x_t)                  # one step: (B, F) features (tokens (B,)); y (B, ...)
    y = stream.feed(chunk)                # a chunk: (T, B, F) (tokens (T, B)); y (T, B, ...)
    y = stream.feed(chunk, active=m)      # m (T, B) (or (B,) for a step): which streams have this step
    stream.reset(rows)                    # a new stream starts in these slots: their states back to zero
    stream.state                          # the layer's hx: h, or (h, c) for the LSTM, (L, B, H) each
    stream.close()                        # stop its worker threads (or: with rnnlab.Stream(...) as stream:)

A stream that has no step at some time (not yet begun, or ended) keeps its state unchanged, exactly as a padded
row does (the same masks); its output there is 0 for a layer and NaN for a model (no prediction). Feeding a
sequence in chunks of any sizes equals one pass over it (``tests/engine/test_stream.py``, every cell). Time-major
only, one forward direction: a bidirectional or reverse layer needs the whole sequence and is refused. Inference: no caches are
kept, whatever ``rnnlab.no_grad`` says.

Steps and chunks of up to MAX_CHUNK steps (a model's tokens embedded first) fed to a classic cell (no layer norm,
zoneout or projections; fewer than 4 streams; no dropout drawn in training) take a fast path whose arrays are made
with the stream, reading the layer's weights as they are on every call (no copy: a change of the weights is seen
at the next call): where the layer's inference splits its hidden units over threads (one stream, enough units per
thread), ``_kernels.units_stream``, whose worker threads wait in compiled code between calls; else a one-thread
``_kernels.loop.StepCall`` per layer, the same loop and arithmetic as the layer's own short call, bit for bit.
Longer chunks go through the layer's forward.
"""
from __future__ import annotations

import numpy as np

from rnnlab.errors import ConfigError, DTypeError, NonFiniteError, ShapeError, check_int
from rnnlab.engine.grad_mode import no_grad


class Stream:
    def __init__(self, net, batch_size: int = 1):
        from rnnlab.engine.layers import RecurrentLayer
        from rnnlab.model.sequence_model import SequenceModel
        if isinstance(net, SequenceModel):
            self.model, self.layer = net, net.rnn
        elif isinstance(net, RecurrentLayer):
            self.model, self.layer = None, net
        else:
            raise ConfigError(f"net: expected an rnnlab layer or SequenceModel, got {type(net).__name__}")
        if self.layer.bidirectional:
            raise ConfigError("net: a bidirectional layer reads each sequence from its end too, so it cannot run "
                              "as a stream; got bidirectional=True")
        if self.layer.reverse:
            raise ConfigError("net: a reverse layer reads each sequence from its end, so it cannot run as a stream; "
                              "got reverse=True")
        if self.layer.batch_first:
            raise ConfigError("net: a stream feeds time-major chunks (T, B, F); got a layer with batch_first=True")
        self.batch_size = check_int("batch_size", batch_size, 1)
        self._steps = self._step_calls()
        # the fast path draws no dropout: a layer in training with some (between layers, on x_t or h_t) takes its
        # forward, which does
        reg = getattr(self.layer, "regularization", {})
        self._drops = bool((self.layer.num_layers > 1 and self.layer.dropout) or reg.get("input_dropout")
                           or reg.get("recurrent_dropout"))
        if self._steps:
            from rnnlab.engine._kernels.compiled_checks import all_finite
            self._all_finite = all_finite               # one pass, no boolean array: a step's check in 0.3 µs
            self._step_shape = None if self.tokens else self._steps.x.shape[1:]     # the short lane: features
            self._x0 = self._steps.x[0].reshape(-1)     # a view: the step's features, flat
        self.reset()

    def _step_calls(self):
        """The fast path for steps and chunks of up to MAX_CHUNK steps, its arrays made once with the stream
        (inference of a classic cell without layer norm, zoneout or projections, B below the packed product's
        rows): the units split with its threads kept waiting between calls (``_kernels.units_stream``) where
        the layer's inference would split its units over threads, else per layer a one-thread
        ``_kernels.loop.StepCall``, chained (layer l's output is layer l+1's input); None where neither serves
        (each call goes through the layer's forward)."""
        from rnnlab.engine._kernels import loop
        from rnnlab.engine.layers import DenseLayer
        layer = self.layer
        reg = getattr(layer, "regularization", {})
        B = self.batch_size
        if (not isinstance(layer, DenseLayer)
                or B >= loop.PACK_MIN_ROWS or layer.output_size != layer.hidden_size
                or layer.cell_opts.get("layer_norm") or any(reg.get(k) for k in ("zoneout", "zoneout_cell"))):
            return None
        params = [layer.layer_params(l, 0) for l in range(layer.num_layers)]
        opts = [{**layer.cell_opts, **layer.option_params(l, 0)} for l in range(layer.num_layers)]
        if any(o.get("ln") is not None for o in opts):
            return None
        n_states = len(layer.state_sizes)
        # the units split where the layer's own inference of a long call would take it (its threads' hand-over
        # is paid once per stream here, not per call)
        if layer._choose(B, False, 1 << 30) == "units" and all(
                p is None or (p.flags.c_contiguous and p.dtype == layer.dtype) for ps in params for p in ps):
            from rnnlab.engine._kernels.units_stream import UnitsStream
            return UnitsStream(layer.cell_name, params, opts[0], B, layer.dtype, n_states, MAX_CHUNK)
        if layer._choose(B, False, 1) != "loop":
            return None
        calls, x, mask = [], None, None
        for ps, o in zip(params, opts):
            c = loop.StepCall(layer.cell_name, *ps, o, B, layer.dtype, n_states, x, MAX_CHUNK, mask)
            calls.append(c)
            x, mask = c.out, c.mask                     # layer l's output is layer l+1's input; one mask
        return _Chain(calls)

    def close(self) -> None:
        """Stop the fast path's worker threads (the stream's collection does too); the stream still works, each
        call through the layer's forward."""
        if self._steps is not None:
            self._sync_from_steps()
            if hasattr(self._steps, "close"):
                self._steps.close()
            self._steps = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def tokens(self) -> bool:
        return self.model is not None and self.model.config.input_mode != "dense"

    def reset(self, rows=None) -> None:
        """Zero the states of the streams ``rows`` (an index, a list of them, or a (B,) bool mask; all: None)."""
        L, B = self.layer.num_layers, self.batch_size
        if rows is None:
            self._state = [np.zeros((L, B, n), self.layer.dtype) for n in self.layer.state_sizes]
            for S in self._steps.state if self._steps else ():
                S[...] = 0.0
            return
        sel = np.asarray(rows)
        if sel.size == 0 and sel.ndim == 1:                 # no stream (an empty list): nothing to reset
            return
        if sel.dtype == bool:
            if sel.shape != (B,):
                raise ShapeError(f"rows: expected a bool mask of shape ({B},), got {sel.shape}")
            idx = np.flatnonzero(sel)
        elif sel.dtype.kind in "iu" and sel.ndim <= 1:
            idx = np.atleast_1d(sel)
        else:
            raise ShapeError(f"rows: expected a stream index, a list of them or a ({B},) bool mask, got {rows!r}")
        if idx.size and (idx.min() < -B or idx.max() >= B):
            raise ShapeError(f"rows: expected stream indices in [{-B}, {B - 1}], got {idx.tolist()}")
        for s in self._state:
            s[:, idx] = 0.0
        for S in self._steps.state if self._steps else ():
            S[:, idx] = 0.0

    def _sync_from_steps(self):
        """The fast path keeps the states in its own arrays: copy them to ``_state`` (L, B, n) per kind."""
        for l, S in enumerate(self._steps.state):
            for j, s in enumerate(self._state):
                s[l] = S[j]

    def _sync_to_steps(self):
        for l, S in enumerate(self._steps.state):
            for j, s in enumerate(self._state):
                S[j] = s[l]

    @property
    def state(self):
        """The states as the layer's ``hx`` takes them: h, or (h, c) for the LSTM; copies."""
        if self._steps:
            self._sync_from_steps()
        s = [v.copy() for v in self._state]
        return s[0] if len(s) == 1 else tuple(s)

    def feed(self, x, active=None):
        """One step ((B, F), tokens (B,)) or a chunk ((T, B, F), tokens (T, B)) -> the outputs of its steps:
        the layer's output, or the model's prediction (probabilities or values) at every step."""
        f = self._steps
        if f is not None and self._drops and self.layer.training:
            f = None                                    # dropout drawn: the layer's forward
        if (f is not None and active is None and type(x) is np.ndarray and x.shape == self._step_shape
                and x.dtype.kind == "f"):
            f.x[0] = x                                  # the usual step: (B, I) features, every stream
            if not self._all_finite(self._x0):
                raise NonFiniteError("x: expected finite values, found NaN or Inf in the step's features")
            out = f.run(1, False)
            return self._predict(out, None)[0] if self.model is not None else out[0].copy()
        x = np.asarray(x)
        step = x.ndim == (1 if self.tokens else 2)
        if step:
            x = x[None]
        B = self.batch_size
        if x.ndim < 2 or x.shape[1] != B:
            raise ShapeError(f"x: expected a step ({B}, ...) or a chunk (T, {B}, ...) for {B} stream(s), got "
                             f"shape {x.shape[1:] if step else x.shape}")
        T = x.shape[0]
        mask = None
        if active is not None:
            a = np.asarray(active)
            a = a[None] if step and a.ndim == 1 else a
            if a.shape != (T, B) or a.dtype.kind not in "bui":
                raise ShapeError(f"active: expected {('(' + str(B) + ',)') if step else (T, B)} bools, one per "
                                 f"{'stream' if step else 'step and stream'}, got shape {np.asarray(active).shape} of "
                                 f"{np.asarray(active).dtype}")
            mask = a.astype(self.layer.dtype)[..., None]             # (T, B, 1)
        if f is not None and T <= MAX_CHUNK:
            if self.model is not None:
                x, _ = self.model._embed(x)             # tokens to vectors; features checked as the model does
            elif x.dtype.kind != "f":
                raise DTypeError(f"x: expected a floating-point array, got dtype {x.dtype}")
            return self._fast(x, mask, step)
        if self._steps:
            self._sync_from_steps()
        with no_grad():
            if self.model is None:
                inp = x
            else:
                inp, _ = self.model._embed(x)
            hx = self._state[0] if len(self._state) == 1 else tuple(self._state)
            out, new = self.layer._forward(inp, hx, None, True, x_private=self.model is not None, mask=mask)
            self._state = [np.array(v) for v in ((new,) if len(self._state) == 1 else new)]
            if self._steps:
                self._sync_to_steps()
            if self.model is not None:
                out = self._predict(out, mask)
        return out[0] if step else out

    def _fast(self, x, mask, step):
        """Steps through the fast path: the same arithmetic as the layer's forward (``_step_calls``)."""
        T = x.shape[0]
        f = self._steps
        xb = f.x[:T]
        if x.shape != xb.shape:
            raise ShapeError(f"x: expected a step of shape {xb.shape[1:]} or a chunk (T, {', '.join(map(str, xb.shape[1:]))}),"
                             f" got {x.shape[1:] if step else x.shape}")
        xb[...] = x
        if not self._all_finite(f.x.reshape(-1)[:xb.size]):
            raise NonFiniteError(f"x: expected finite values, found NaN or Inf in the {'step' if step else 'chunk'}'s "
                                 "features")
        if mask is not None:
            f.mask[:T] = mask[..., 0]
        out = f.run(T, mask is not None)
        if self.model is not None:
            y = self._predict(out, mask)
        else:
            y = out.copy()
        return y[0] if step else y

    def _predict(self, out, mask):
        """The model's prediction at every step of the chunk (T, B, K); NaN where a stream had no step."""
        from rnnlab.model import heads
        m = self.model
        logits = heads.linear_forward(out, m._own["head.weight"], m._own["head.bias"], np.matmul)
        y = heads.PREDICTIONS[m.config.prediction](logits)
        if mask is not None:
            y = np.where(mask > 0, y, np.nan)
        return y


MAX_CHUNK = 63      # the longest chunk the fast path takes (a short call: ``_kernels.loop.SHORT_CALL`` - 1)


class _Chain:
    """The one-thread fast path: a ``StepCall`` per layer, chained; the interface of ``UnitsStream``."""

    def __init__(self, calls):
        self.calls = calls
        self.x, self.mask = calls[0].x, calls[0].mask   # the first layer's: the others read its mask too
        # each layer's states before the call (two layers or more: one layer takes a step whole or not at all)
        self.before = [np.empty_like(c.S) for c in calls] if len(calls) > 1 else []

    @property
    def state(self):
        return [c.S for c in self.calls]

    def run(self, T, masked):
        if not self.before:
            self.calls[0](T, masked)
            return self.calls[0].out[:T]
        for c, b in zip(self.calls, self.before):
            b[...] = c.S                                # (half of np.copyto's time)
        try:
            for c in self.calls:
                c(T, masked)
        except BaseException:
            # a KeyboardInterrupt between two layers' calls (or as one returns: CPython checks for signals after a
            # call) leaves the layers below a step ahead. A layer's compiled call takes the whole step or none;
            # one whose states are still those before the call takes it now (one that took it and kept them
            # unchanged computes the same again): the layers stay at one step, the step taken, then the raise.
            for c, b in zip(self.calls, self.before):
                if np.array_equal(c.S, b, equal_nan=True):
                    c(T, masked)
            raise
        return self.calls[-1].out[:T]
