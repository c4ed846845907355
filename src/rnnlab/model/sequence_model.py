"""A sequence model: input -> stacked recurrent layers -> output layer -> prediction.

    x_t = onehot(token_t) | E[token_t] | features_t                  (T, B, I)
    h_t = RNN/LSTM/GRU stack(x)                                      (T, B, D*H)
    o_t = h_t V^T + c             at every step, or at each row's last valid step only
    y_hat_t = softmax | sigmoid | identity (o_t)

Forward and backward by hand like the layers; parameters under flat names ``embedding.weight``,
``rnn.weight_ih_l0`` ..., ``head.weight`` (the seed's V), ``head.bias`` (the seed's c).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from rnnlab.model import heads
from rnnlab.model import losses
from rnnlab.engine import _checks as checks
from rnnlab.engine.cells.linear import DRAW_BLOCK, draw
from rnnlab.engine._checks import as_float_array, check_unchanged, guard_inputs, users_memory
from rnnlab.errors import ConfigError, DTypeError, ShapeError, check_choice, check_int
from rnnlab.engine.grad_mode import is_grad_enabled, no_grad
from rnnlab.engine.options import LayerOptions
from rnnlab.engine.layers import LAYERS, int_text, memory_refusal, resolve_dtype, scale_recurrent


@dataclass(kw_only=True)
class ModelConfig(LayerOptions):
    """What a SequenceModel is: its sizes, input and prediction, and the layer options (inherited from
    ``rnnlab.engine.options.LayerOptions``, declared there once)."""
    input_size: int                 # features (dense) or vocabulary size (onehot, embedding)
    output_size: int                # classes, labels or regression targets
    cell: str = "lstm"              # rnn | lstm | gru
    hidden_size: int = 64
    num_layers: int = 1
    input_mode: str = "dense"       # dense | onehot | embedding
    embedding_dim: int = 32
    prediction: str = "softmax"     # softmax | sigmoid | identity
    target: str = "every"           # every | last
    dropout: float = 0.0
    bidirectional: bool = False
    dtype: str = "float32"
    quantiles: list | None = None   # identity outputs that are these quantiles (Q per target): the pinball loss

    def validate(self) -> "ModelConfig":
        check_choice("cell", self.cell, LAYERS)
        check_choice("input_mode", self.input_mode, ("dense", "onehot", "embedding"))
        check_choice("prediction", self.prediction, heads.PREDICTIONS)
        check_choice("target", self.target, ("every", "last"))
        check_int("input_size", self.input_size, 1)
        check_int("output_size", self.output_size, 1)
        check_int("hidden_size", self.hidden_size, 1)
        check_int("num_layers", self.num_layers, 1)
        self.check_options().check_cell(self.cell)
        if self.input_mode == "embedding":
            check_int("embedding_dim", self.embedding_dim, 1)
        if self.quantiles:
            if self.prediction != "identity" or self.output_size % len(self.quantiles):
                raise ConfigError(f"quantiles: quantile outputs are identity outputs, Q per target; got prediction "
                                  f"{self.prediction!r} and {self.output_size} outputs for {len(self.quantiles)} quantiles")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            from rnnlab.errors import closest
            raise ConfigError(f"model config: unknown keys {unknown}{closest(unknown[0], names)}")
        if d.get("recurrent_max", 0.0) is None:         # written before the options were declared once: no bound
            d = {**d, "recurrent_max": 0.0}
        return cls(**d)


class SequenceModel:
    def __init__(self, config: ModelConfig, seed=None):
        self.config = config.validate()
        cfg = config
        self.dtype = resolve_dtype(cfg.dtype)
        self.rng = np.random.default_rng(seed)
        kw = cfg.layer_kwargs(cfg.cell)
        rnn_in = cfg.embedding_dim if cfg.input_mode == "embedding" else cfg.input_size
        try:
            self.rnn = LAYERS[cfg.cell](rnn_in, cfg.hidden_size, cfg.num_layers, dropout=cfg.dropout,
                                        bidirectional=cfg.bidirectional, dtype=self.dtype, seed=self.rng, **kw)
        except ConfigError as e:
            # the layer's input_size is this model's embedding_dim: name the argument the user set
            if cfg.input_mode == "embedding" and "input_size" in str(e):
                raise ConfigError(str(e).replace("input_size", "embedding_dim")) from None
            raise
        if cfg.recurrent_radius:                   # the sweep's rescaling, as an initialisation (section 3 of the tour)
            try:
                scale_recurrent(self.rnn, cfg.recurrent_radius)
            except ConfigError as e:
                raise ConfigError(f"recurrent_radius: {str(e).partition(': ')[2]}") from None
        feat = self.rnn.output_size * (2 if cfg.bidirectional else 1)
        # the layer refused its own size above; the embedding and the head are refused here, before they are made
        self._check_memory(feat)
        k = 1.0 / np.sqrt(feat)                                         # torch.nn.Linear's init
        self._own = {}
        # drawn block by block in the model's dtype (as the layers): no float64 copy of a whole matrix
        if cfg.input_mode == "embedding":
            self._own["embedding.weight"] = draw(self.rng.standard_normal, (cfg.input_size, cfg.embedding_dim),
                                                 self.dtype)
        self._own["head.weight"] = draw(lambda m: self.rng.uniform(-k, k, m), (cfg.output_size, feat), self.dtype)
        self._own["head.bias"] = draw(lambda m: self.rng.uniform(-k, k, m), (cfg.output_size,), self.dtype)
        self._own_grads = {n: np.zeros_like(v) for n, v in self._own.items()}
        self._cache = None

    def _check_memory(self, feat) -> None:
        """Refuse (ConfigError naming the argument) an embedding and output layer whose weights and gradients would
        not fit: the larger matrix's larger side is named (input_size or embedding_dim; output_size or
        hidden_size, which sets the head's feat = D * (proj_size or hidden_size))."""
        cfg = self.config
        mats = {}
        if cfg.input_mode == "embedding":
            mats["embedding"] = (cfg.input_size, cfg.embedding_dim, "input_size", "embedding_dim")
        mats["output layer"] = (cfg.output_size, feat, "output_size", "hidden_size")
        count = cfg.output_size + sum(r * c for r, c, _, _ in mats.values())
        rows, cols, row_arg, col_arg = max(mats.values(), key=lambda m: m[0] * m[1])
        arg = row_arg if rows >= cols else col_arg
        parts = " and ".join(f"{name} ({int_text(r)} x {int_text(c)})" for name, (r, c, _, _) in mats.items())
        what = (f"the model's {parts}, {int_text(count)} parameters with the bias: their "
                f"{np.dtype(self.dtype).name} weights and gradients")
        nbytes = 2 * count * np.dtype(self.dtype).itemsize + 8 * DRAW_BLOCK         # + one float64 draw block
        error = memory_refusal(arg, what, nbytes, f"use a smaller {arg}")
        if error is not None:
            raise error

    # ------------------------------------------------------------- parameters
    def named_parameters(self) -> dict:
        """Name -> live array (updating it in place updates the model)."""
        p = {}
        if "embedding.weight" in self._own:
            p["embedding.weight"] = self._own["embedding.weight"]
        p.update({"rnn." + k: v for k, v in self.rnn.named_parameters()})
        p["head.weight"], p["head.bias"] = self._own["head.weight"], self._own["head.bias"]
        return p

    @property
    def grads(self) -> dict:
        g = {"rnn." + k: v for k, v in self.rnn.grads.items()}
        g.update(self._own_grads)
        return {k: g[k] for k in self.named_parameters()}

    def num_parameters(self) -> int:
        return int(sum(v.size for v in self.named_parameters().values()))

    def zero_grad(self):
        self.rnn.zero_grad()
        for g in self._own_grads.values():
            g.fill(0)

    def state_dict(self) -> dict:
        return {k: v.copy() for k, v in self.named_parameters().items()}

    def load_state_dict(self, sd) -> None:
        if not hasattr(sd, "items"):
            raise TypeError(f"state_dict: expected a mapping of names to arrays, got {type(sd).__name__}")
        rnn_sd = {k[4:]: v for k, v in sd.items() if k.startswith("rnn.")}
        own = {k: v for k, v in sd.items() if not k.startswith("rnn.")}
        problems, arrays = checks.state_dict_entries(own, {k: v.shape for k, v in self._own.items()})
        rnn_problems, rnn_arrays = checks.state_dict_entries(rnn_sd, self.rnn._param_shapes(), prefix="rnn.")
        problems += rnn_problems
        if problems:
            raise ShapeError(f"load_state_dict: {len(problems)} problem(s): " + "; ".join(problems))
        self.rnn.load_state_dict(rnn_arrays)
        for k, v in arrays.items():
            self._own[k][...] = v

    def train(self, mode=True):
        self.rnn.train(mode)
        return self

    def eval(self):
        return self.train(False)

    # ------------------------------------------------------------- forward / backward
    def _embed(self, inputs):
        cfg = self.config
        if cfg.input_mode == "dense":
            x = np.asarray(inputs)
            if x.dtype.kind != "f":
                raise DTypeError(f"inputs: expected float features (T, B, {cfg.input_size}), got dtype {x.dtype}")
            return as_float_array("inputs", x, self.dtype), None
        tokens = np.asarray(inputs)
        if tokens.dtype.kind not in "iu":
            raise DTypeError(f"inputs: expected integer tokens (T, B) for input_mode={cfg.input_mode!r}, got dtype {tokens.dtype}")
        if tokens.ndim != 2:
            raise ShapeError(f"inputs: expected token indices of shape (T, B), got {tokens.shape}")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= cfg.input_size):
            raise ValueError(f"inputs: expected tokens in [0, {cfg.input_size - 1}], got values in "
                             f"[{tokens.min()}, {tokens.max()}]")
        if cfg.input_mode == "onehot":
            return np.eye(cfg.input_size, dtype=self.dtype)[tokens], tokens     # (T, B, V)
        return self._own["embedding.weight"][tokens], tokens                 # (T, B, E)

    def forward(self, inputs, lengths=None, hx=None):
        """inputs: tokens (T, B) or features (T, B, I), time-major. Returns (logits, state).

        logits are (T, B, K) for target='every' and (B, K) for target='last'.
        """
        x, tokens = self._embed(inputs)
        # BLAS threads (see blas_scope) for the call's rows: one for an unbatched (T, I) input, as the layer takes it
        scope, mm = self.rnn.blas_scope(x.shape[1] if x.ndim == 3 else 1, x.shape[0])
        with scope:
            # inputs checked in _embed; a one-hot or embedded x is the model's own (the layer need not guard it)
            out, state = self.rnn._forward(x, hx, lengths, False, x_private=tokens is not None)
            T, B = out.shape[:2]
            if self.config.target == "last":
                last = np.full(B, T - 1) if lengths is None else np.asarray(lengths) - 1
                h = out[last, np.arange(B)]                                  # (B, D*H)
            else:
                last = None
                h = out
            logits = heads.linear_forward(h, self._own["head.weight"], self._own["head.bias"], mm)
        # the caller's tokens (not a converted copy), fingerprinted: backward refuses tokens changed since
        mine = tokens is not None and is_grad_enabled() and users_memory(tokens, inputs)
        guards = guard_inputs([("inputs", tokens)]) if mine else []
        self._cache = (h, tokens, last, out.shape, guards) if is_grad_enabled() else None
        return logits, state

    __call__ = forward

    def backward(self, d_logits, d_state=None, record_state_grads=False):
        """Backpropagate d_logits (shaped like logits); returns the gradient of the initial state.

        ``record_state_grads`` keeps dL/dh_t (and dL/dc_t) of every step in ``self.rnn.state_grads``.
        """
        if self._cache is None:
            raise RuntimeError("backward: call forward first (outside rnnlab.no_grad(), which keeps no cache)")
        h, tokens, last, out_shape, guards = self._cache
        check_unchanged(guards)
        K = self.config.output_size
        scope, mm = self.rnn.blas_scope(out_shape[1])
        with scope:
            dh, dV, dc = heads.linear_backward(d_logits.reshape(-1, K), h.reshape(-1, h.shape[-1]),
                                               self._own["head.weight"], mm)
            if last is not None:
                d_out = np.zeros(out_shape, self.dtype)
                d_out[last, np.arange(out_shape[1])] = dh
            else:
                d_out = dh.reshape(out_shape)
            dx, dhx = self.rnn.backward(d_out, d_state, check_finite=False,  # NaN: the training guard reports it
                                        record_state_grads=record_state_grads)
        # added after the layer's backward, which refuses inputs changed since the forward before adding any
        self._own_grads["head.weight"] += dV
        self._own_grads["head.bias"] += dc
        if self.config.input_mode == "embedding":
            self._own_grads["embedding.weight"] += heads.embedding_backward(
                dx.reshape(-1, dx.shape[-1]), tokens.reshape(-1), self.config.input_size)
        return dhx

    # ------------------------------------------------------------- loss and prediction
    def target_mask(self, logits_shape, lengths):
        """(N,) mask over the flattened logits: valid steps for target='every'; None when all count."""
        if lengths is None or self.config.target == "last":
            return None
        T, B = logits_shape[:2]
        return (np.arange(T)[:, None] < np.asarray(lengths)[None, :]).reshape(-1)

    def loss(self, logits, targets, lengths=None, weights=None):
        """(loss, d_logits) with the loss matching the prediction layer. ``weights`` (B,): each sequence's weight,
        the loss their weighted mean (the losses' mask is a weight per position)."""
        fn = losses.LOSSES[losses.LOSS_FOR_PREDICTION[self.config.prediction]]
        if self.config.quantiles:
            fn = lambda o, y, m: losses.pinball(o, y, self.config.quantiles, m)     # noqa: E731
        K = self.config.output_size
        y = np.asarray(targets)
        if self.config.prediction != "softmax":
            y = y.reshape(-1, K // len(self.config.quantiles) if self.config.quantiles else K)
        mask = self.target_mask(logits.shape, lengths)
        if weights is not None:
            w = np.asarray(weights, dtype=logits.dtype)
            if self.config.target == "last":
                mask = w                                                        # (B,)
            else:
                T = logits.shape[0]
                mask = (np.broadcast_to(w, (T, len(w))).reshape(-1) if mask is None
                        else mask * np.broadcast_to(w, (T, len(w))).reshape(-1))  # (T*B,) step-major
        loss, d = fn(logits.reshape(-1, K), y, mask)
        return loss, d.reshape(logits.shape)

    def predict(self, inputs, lengths=None, hx=None):
        """-> (probabilities or values, state). Inference whatever the grad mode, as under ``rnnlab.no_grad``:
        no caches kept for a backward, and the inference paths of ``backend='auto'``."""
        with no_grad():
            logits, state = self.forward(inputs, lengths, hx)
        return heads.PREDICTIONS[self.config.prediction](logits), state
