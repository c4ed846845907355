"""Gradient-flow diagnostics: the seed's vanishing/exploding argument, measured on real models.

    grad_norms           ||dL/dh_t|| (and ||dL/dc_t||) for every step t, for a loss at the last step
    jacobian_norms       ||dh_T/ds_t||_2 for every t, exact: the identity is backpropagated through the
                         cached steps (H vector-Jacobian products at once), then an SVD; s_t = h_t, or
                         (h_t, c_t) for the LSTM
    spectral             singular values and spectral radius of each W_hh gate block
    spectral_norms       the largest singular value of each whole W_hh (diagnostics.jsonl, per record)
    gate_stats           LSTM: mean forget gate per step and the product of forget gates over spans;
                         GRU: the update gate's carry fraction z; saturation of every sigmoid gate
    sweep                W_hh scaled to spectral radius rho: gradient norm vs distance, for any cell

For a linear RNN ``dh_T/dh_t = W_hh^(T-t)`` exactly; with tanh, ``diag(1 - h^2)`` shrinks it further, so
the norm is bounded by ``sigma_max(W_hh)^(T-t)`` (docs/math.md, section 2). The LSTM's cell path is scaled by
the product of forget gates instead.

Every per-layer function takes the layer ``l`` and the direction ``d``; a reverse direction (d = 1, or the only
one of a ``reverse=True`` layer) is reported in its own order, from its first step (each sequence's last valid
step) to its last (t = 0), so "distance from the last step" means the same for both directions.
"""
from __future__ import annotations

import numpy as np

from rnnlab.errors import ConfigError, ShapeError, check_int
from rnnlab.engine.grad_mode import enable_grad
from rnnlab.engine.layers import scale_recurrent
from rnnlab.engine.options import REGULARISERS, LayerOptions


class _reference_backend:
    """Run a layer on the NumPy reference backend (the one that records per-step state gradients)."""

    def __init__(self, layer):
        self.layer = layer

    def __enter__(self):
        self.saved = self.layer.backend
        self.layer.backend = "numpy"
        return self.layer

    def __exit__(self, *exc):
        self.layer.backend = self.saved


def _layer_index(layer, l, d=0):
    if not 0 <= l < layer.num_layers:
        raise ConfigError(f"layer: expected an index in [0, {layer.num_layers - 1}], got {l}")
    if not 0 <= d < layer.num_directions:
        raise ConfigError(f"direction: expected an index in [0, {layer.num_directions - 1}], got {d}")


def reverse_within(x, lengths=None):
    """x (T, B, ...) with each sequence's valid steps in reverse order, padding left at the end: what the
    reverse direction reads, in its own order."""
    x = np.asarray(x)
    if lengths is None:
        return x[::-1]
    T = x.shape[0]
    idx = np.arange(T)[:, None]
    L = np.asarray(lengths)[None, :]
    src = np.where(idx < L, L - 1 - idx, idx)                               # (T, B)
    return np.take_along_axis(x, src.reshape(src.shape + (1,) * (x.ndim - 2)), axis=0)


def directions(layer) -> list:
    """(l, d, name) of every layer and direction of a stack: (0, 0, "layer 0"), (0, 1, "layer 0 reverse")..."""
    return [(l, d, f"layer {l}" + (" reverse" if layer.is_reverse(d) else "")) for l in range(layer.num_layers)
            for d in range(layer.num_directions)]


# ----------------------------------------------------------------------------- per-step gradient norms
def layer_grad_norms(layer, x, d_last=None, lengths=None, l=None, seed=0) -> dict:
    """Norms of dL/dh_t for L = <h_T, g> (a loss at the last step), averaged over the batch.

    ``g`` defaults to a random unit vector per row. ``l`` picks the layer (default: the top one); the
    forward direction is reported. Returns {"grad_norm_h": (T,), ["grad_norm_c": (T,)]}.
    """
    l = layer.num_layers - 1 if l is None else l
    _layer_index(layer, l)
    with _reference_backend(layer):
        return _layer_grad_norms(layer, x, d_last, lengths, l, seed)


def _layer_grad_norms(layer, x, d_last, lengths, l, seed):
    was = layer.training
    layer.eval()
    out, _ = layer(x, lengths=lengths)
    layer.train(was)
    tm = out if not layer.batch_first else out.transpose(1, 0, 2)
    T, B = tm.shape[:2]
    H = layer.output_size
    if d_last is None:
        g = np.random.default_rng(seed).standard_normal((B, H))
        d_last = g / np.linalg.norm(g, axis=1, keepdims=True)
    d_out = np.zeros_like(tm)
    last = np.full(B, T - 1) if lengths is None else np.asarray(lengths) - 1
    d_out[last, np.arange(B), :H] = d_last
    if layer.batch_first:
        d_out = d_out.transpose(1, 0, 2)
    saved = {k: v.copy() for k, v in layer.grads.items()}
    layer.backward(d_out, record_state_grads=True)
    for k, v in saved.items():                      # diagnostics leave the gradients as they were
        layer.grads[k][...] = v
    grads = layer.state_grads[(l, 0)]
    res = {"grad_norm_h": np.linalg.norm(grads[0], axis=2).mean(axis=1)}
    if len(grads) == 2:
        res["grad_norm_c"] = np.linalg.norm(grads[1], axis=2).mean(axis=1)
    return res


def diagnostic_batch(task, n=32):
    """The first ``n`` sequences of the task's first validation batch: what the diagnostics look at."""
    from rnnlab.tasks import Batch
    b = task.val_batches()[0]
    if task.target == "every":                      # targets (T, B)
        n = min(n, b.inputs.shape[1])
        return Batch(b.inputs[:, :n], b.targets[:, :n], None if b.lengths is None else b.lengths[:n])
    n = min(n, len(b.targets))                      # targets (B, ...)
    return Batch(b.inputs[:, :n], b.targets[:n], None if b.lengths is None else b.lengths[:n])


def model_grad_norms(model, batch) -> dict:
    """||dL/dh_t|| of the top layer for the task loss placed at the last (valid) step of each sequence."""
    with _reference_backend(model.rnn):
        return _model_grad_norms(model, batch)


def _model_grad_norms(model, batch) -> dict:
    logits, _ = model(batch.inputs, batch.lengths)
    K = model.config.output_size
    if model.config.target == "every":
        T, B = logits.shape[:2]
        last = np.full(B, T - 1) if batch.lengths is None else np.asarray(batch.lengths) - 1
        mask = np.zeros((T, B))
        mask[last, np.arange(B)] = 1
        from rnnlab.model import losses
        fn = losses.LOSSES[losses.LOSS_FOR_PREDICTION[model.config.prediction]]
        y = np.asarray(batch.targets)
        y = y.reshape(-1) if model.config.prediction == "softmax" else y.reshape(-1, K)
        loss, d = fn(logits.reshape(-1, K), y, mask.reshape(-1))
        d = d.reshape(logits.shape)
    else:
        loss, d = model.loss(logits, batch.targets, batch.lengths)
    saved = {k: v.copy() for k, v in model.grads.items()}
    rnn = model.rnn
    model.backward(d, record_state_grads=True)
    for k, v in saved.items():
        model.grads[k][...] = v
    grads = rnn.state_grads[(rnn.num_layers - 1, 0)]
    res = {"loss_at_last_step": loss, "grad_norm_h": np.linalg.norm(grads[0], axis=2).mean(axis=1)}
    if len(grads) == 2:
        res["grad_norm_c"] = np.linalg.norm(grads[1], axis=2).mean(axis=1)
    return res


# ----------------------------------------------------------------------------- exact Jacobians
def state_jacobians(layer, x, l=0, d=0) -> list:
    """Exact ``dh_T/ds_t`` for one sequence x (T, I) through layer ``l``, direction ``d``.

    ``x`` is that layer's input, in time order (the reverse direction reads it backwards). Returns a list over
    the direction's steps of (H, n_state*H) matrices; the identity is backpropagated through the cached steps,
    so each is a product of exact step Jacobians.
    """
    _layer_index(layer, l, d)
    x = np.asarray(x, dtype=layer.dtype)
    if x.ndim != 2:
        raise ShapeError(f"x: expected one sequence (T, input_size), got shape {x.shape}")
    if layer.is_reverse(d):
        x = x[::-1]                                                         # the reverse direction's order
    from rnnlab.engine._reference import time_forward
    W_ih, W_hh, b_ih, b_hh = layer.layer_params(l, d)
    xw = x @ W_ih.T
    if b_ih is not None:
        xw = xw + b_ih
    sizes = layer.state_sizes
    H = sizes[0]
    opts = {**layer.cell_opts, **layer.option_params(l, d)}
    state0 = tuple(np.zeros((1, k), layer.dtype) for k in sizes)
    caches = time_forward(layer.cell, xw[:, None, :], state0, W_hh, b_hh, opts=opts)[2].steps
    T = len(caches)
    dstate = (np.eye(H, dtype=layer.dtype),) + tuple(np.zeros((H, k), layer.dtype) for k in sizes[1:])
    J = [None] * T
    J[T - 1] = np.concatenate(dstate, axis=1)
    for t in range(T - 1, 0, -1):
        dstate = layer.cell.step_backward(dstate, caches[t], W_hh, **opts)[2]
        J[t - 1] = np.concatenate(dstate, axis=1)                     # rows: d h_T / d s_{t-1}
    return J


def layer_inputs(model, inputs, l=0):
    """The input sequence that layer ``l`` of a model's stack sees (T, B, features)."""
    x, _ = model._embed(inputs)
    rnn = model.rnn
    was = rnn.training
    rnn.eval()
    for k in range(l):
        sub_out = _run_prefix(rnn, x, k)
        x = sub_out
    rnn.train(was)
    return x


def _run_prefix(rnn, x, k):
    """Layer k of ``rnn`` on x, both directions, zero initial states, as the stack runs it (``engine``: the
    layer's own direction function, layer norm and, at evaluation, zoneout's expected mix included)."""
    from rnnlab.engine.dispatch import variational_masks
    T, B, _ = x.shape
    backend, ctx, scope = rnn._call_plan(B, False, T)
    x = np.ascontiguousarray(x, dtype=rnn.dtype)
    outs = []
    with scope:
        for d in range(rnn.num_directions):
            st = tuple(np.zeros((B, n), rnn.dtype) for n in rnn.state_sizes)
            x_mask, rec_mask, zone = variational_masks(rnn, k, d, x.shape)
            xd = x if x_mask is None else x * x_mask
            outs.append(rnn._direction_forward(backend, ctx, k, d, xd, st, None, False, rec_mask, zone)[0])
    return np.concatenate(outs, axis=2)


def diagonal_carry(layer, x, l=0, lengths=None, d=0) -> np.ndarray:
    """|dh_t/dh_{t-1}| of a diagonal layer's layer ``l``, direction ``d``, on x (T, B, I), that layer's
    input: (T, B, H) in the direction's order, 1 at padded steps (``rnnlab.engine.layers.DiagonalLayer.carry``)."""
    _layer_index(layer, l, d)
    from rnnlab.engine._checks import lengths_mask
    x = np.asarray(x, dtype=layer.dtype)
    if layer.is_reverse(d):
        x = np.ascontiguousarray(reverse_within(x, lengths))
    T, B, _ = x.shape
    mask = None if lengths is None else lengths_mask(lengths, T, B, layer.dtype)
    state0 = tuple(np.zeros((B, layer.hidden_size), layer.dtype) for _ in layer.cell.STATE)
    _, _, arrays = layer.cell.forward(x, layer.direction_params(l, d), state0, mask, "loop")
    return np.abs(layer.cell.carry(arrays))


def _diagonal_jacobian_norms(layer, x, l, lengths, d=0):
    """||dh_T/dh_t||_2 = max_j prod_{s=t+1}^{T} |carry_s[j]| exactly, per batch row: (B, T)."""
    c = diagonal_carry(layer, x, l, lengths, d)                                # (T, B, H)
    T, B, _ = c.shape
    with np.errstate(divide="ignore"):
        logc = np.log(c)
    out = np.full((B, T), np.nan)
    for b in range(B):
        Tb = T if lengths is None else int(lengths[b])
        tail = np.concatenate([np.cumsum(logc[1:Tb, b][::-1], axis=0)[::-1], np.zeros((1, c.shape[2]))])
        out[b, T - Tb:] = np.exp(tail.max(axis=1))                          # aligned on the last step
    return out


def jacobian_norms(layer, x, l=0, max_sequences=8, lengths=None, d=0) -> np.ndarray:
    """Mean over up to ``max_sequences`` batch rows of ||dh_T/ds_t||_2, for every step of direction ``d`` (in
    its order, aligned on its last step). x (T, B, I)."""
    _layer_index(layer, l, d)
    x = np.asarray(x)
    B = x.shape[1]
    norms = []
    if layer.family == "diagonal":                                 # diagonal: the product of carries
        n = min(B, max_sequences)
        norms = list(_diagonal_jacobian_norms(layer, x[:, :n], l, None if lengths is None else lengths[:n], d))
    for b in range(min(B, max_sequences) if not norms else 0):
        Tb = x.shape[0] if lengths is None else int(lengths[b])
        J = state_jacobians(layer, x[:Tb, b], l, d)
        nb = np.array([np.linalg.norm(j, 2) for j in J])
        norms.append(np.pad(nb, (x.shape[0] - Tb, 0), constant_values=np.nan))   # align on the last step
    norms = np.stack(norms)
    seen = (~np.isnan(norms)).sum(axis=0)
    # steps before every short sequence's start have no norm: NaN there, without nanmean's empty-slice warning
    return np.where(seen > 0, np.nansum(norms, axis=0) / np.maximum(seen, 1), np.nan)


# ----------------------------------------------------------------------------- weights and gates
def spectral(layer) -> dict:
    """For each W_hh (name -> per gate block): singular values and spectral radius. Diagonal layers: the
    recurrent diagonal itself (IndRNN's u, the LRU's lambda); minGRU and minLSTM have none."""
    if layer.family == "diagonal":
        out = {}
        for name, W in layer.named_parameters():
            if name.startswith("weight_hh"):                                # IndRNN: u (H,)
                mags = np.abs(W.astype(np.float64))
                out[name] = {"u": {"singular_values": np.sort(mags)[::-1], "spectral_radius": float(mags.max())}}
            elif name.startswith("nu_log"):                                 # LRU: |lambda| = exp(-exp(nu_log))
                mags = np.exp(-np.exp(W.astype(np.float64)))
                out["lambda" + name[len("nu_log"):]] = {"lambda": {"singular_values": np.sort(mags)[::-1],
                                                                  "spectral_radius": float(mags.max())}}
        return out
    blocks = layer.cell.GATES
    out = {}
    for name, W in layer.named_parameters():
        if not name.startswith("weight_hh"):
            continue
        out[name] = {}
        for gate, blk in zip(blocks, np.split(W.astype(np.float64), len(blocks))):
            out[name][gate] = {"singular_values": np.linalg.svd(blk, compute_uv=False),
                               "spectral_radius": float(np.abs(np.linalg.eigvals(blk)).max())}
    return out


def spectral_norms(layer) -> dict:
    """The largest singular value of each whole W_hh (name -> float; a diagonal cell: its largest |u| or
    |lambda|): the bound on one step's Jacobian that diagnostics.jsonl follows over training."""
    if layer.family == "diagonal":
        return {name: float(blocks[next(iter(blocks))]["singular_values"][0]) for name, blocks in spectral(layer).items()}
    return {name: float(np.linalg.norm(W.astype(np.float64), 2)) for name, W in layer.named_parameters()
            if name.startswith("weight_hh")}


def spectral_radius(layer) -> float:
    """The largest spectral radius over all W_hh gate blocks (NaN for a layer without recurrent weights)."""
    radii = [g["spectral_radius"] for blocks in spectral(layer).values() for g in blocks.values()]
    return max(radii) if radii else float("nan")


def gate_stats(layer, x, lengths=None, l=0, max_span=None, d=0) -> dict:
    """Gate statistics of layer ``l``, direction ``d`` (in its order), valid steps only; x (T, B, I) is the
    stack's input (the gates of every layer are read from one forward of the stack)."""
    _layer_index(layer, l, d)
    if layer.cell_name == "rnn":
        return {}
    if layer.family == "diagonal":
        return _diagonal_gate_stats(layer, x, lengths, l, max_span, d)
    was = layer.training
    layer.eval()
    with enable_grad():                                                     # the gates are read from the cache
        layer(x, lengths=lengths)
    layer.train(was)
    gates = layer.gates(l, d)                                               # name -> (T, B, H), time order
    if layer.is_reverse(d):                                                 # the direction's own order
        gates = {k: reverse_within(v, lengths) for k, v in gates.items()}
    T, B = next(iter(gates.values())).shape[:2]
    valid = np.ones((T, B), bool) if lengths is None else (np.arange(T)[:, None] < np.asarray(lengths)[None, :])
    res = {}

    def saturation(a):  # share of units below 0.05 or above 0.95, valid steps only
        v = a[valid]
        return float(((v < 0.05) | (v > 0.95)).mean())

    if layer.cell_name == "lstm":
        f, i, o = gates["f"], gates["i"], gates["o"]                        # (T, B, H)
        f = np.where(valid[..., None], f, 1.0)                              # padded steps: unspecified, carry 1
        res["forget_mean"] = np.array([f[t][valid[t]].mean() for t in range(T)])
        res["forget_product"] = _span_products(f, valid, max_span)         # prod f over (t, t+k]
        res["saturation"] = {"i": saturation(i), "f": saturation(f), "o": saturation(o)}
    else:
        r, z = gates["r"], gates["z"]
        res["update_carry"] = np.array([z[t][valid[t]].mean() for t in range(T)])
        res["saturation"] = {"r": saturation(r), "z": saturation(z)}
    return res


def _span_products(c, valid, max_span):
    """Mean over valid steps of prod c over (t, t+k], for k = 0..K: c (T, B, H), 1 at padded steps."""
    T = c.shape[0]
    logc = np.cumsum(np.log(np.maximum(c, 1e-30)), axis=0)
    K = T - 1 if max_span is None else min(max_span, T - 1)
    spans = [1.0]
    for k in range(1, K + 1):
        spans.append(float(np.exp(logc[k:] - logc[:-k])[valid[k:]].mean()))
    return np.array(spans)


def _diagonal_gate_stats(layer, x, lengths, l, max_span, d=0):
    """The diagonal carry |dh_t/dh_{t-1}| (1 - z, f', u [pre > 0], |lambda|): its mean per step and its mean
    product over spans of k steps -- the whole Jacobian, not a bound -- and the gates' saturation."""
    x = np.asarray(x)
    T, B = x.shape[:2]
    valid = np.ones((T, B), bool) if lengths is None else (np.arange(T)[:, None] < np.asarray(lengths)[None, :])
    xl = x                                                                  # the stack's input -> layer l's
    if l:
        was = layer.training
        layer.eval()
        for k in range(l):
            xl = _run_prefix(layer, xl, k)
        layer.train(was)
    c = diagonal_carry(layer, xl, l, lengths, d).astype(np.float64)
    res = {"carry_mean": np.array([c[t][valid[t]].mean() for t in range(T)]),
           "carry_product": _span_products(c, valid, max_span)}
    if layer.cell.GATES:
        was = layer.training
        layer.eval()
        with enable_grad():
            layer(x, lengths=lengths)
        layer.train(was)
        res["saturation"] = {k: float(((v[valid] < 0.05) | (v[valid] > 0.95)).mean())
                             for k, v in layer.gates(l, d).items()}
    return res


# ----------------------------------------------------------------------------- the sweep
SWEEP_CELLS = {"rnn-tanh": ("rnn", {"nonlinearity": "tanh"}), "rnn-linear": ("rnn", {"nonlinearity": "identity"}),
               "lstm": ("lstm", {}), "gru": ("gru", {})}
# the settings of a sweep cell that change its layer ("gru+reset=before", "rnn+recurrent_init=orthogonal")
# (the regularisers act in training only; the sweep measures the cells at initialisation)
SWEEP_OPTIONS = tuple(k for k in LayerOptions.layer_names() if k not in REGULARISERS)


def sweep_cell(spec: str) -> tuple[str, dict]:
    """A sweep cell: a name of SWEEP_CELLS, or any cell of the registry with options as a compare entry
    (``indrnn``, ``gru+reset=before``) -> (cell, the layer's keyword arguments)."""
    if spec in SWEEP_CELLS:
        return SWEEP_CELLS[spec]
    from rnnlab.training.config import parse_setting
    from rnnlab.errors import closest
    from rnnlab.engine.layers import LAYERS
    cell, *opts = [p.strip() for p in str(spec).split("+")]
    if cell not in LAYERS:
        raise ConfigError(f"cells: {spec!r}: expected a cell of {list(LAYERS)} or one of {list(SWEEP_CELLS)}, got "
                          f"{cell!r}{closest(cell, list(LAYERS) + list(SWEEP_CELLS))}")
    over = {}
    for o in opts:
        key, eq, val = o.partition("=")
        key = key.strip().replace("-", "_")
        if key not in SWEEP_OPTIONS or key in over:
            raise ConfigError(f"cells: {spec!r}: {key} is not a setting of the layer (or given twice); a sweep cell "
                              f"takes each of {list(SWEEP_OPTIONS)} once")
        over[key] = parse_setting(key, val, bool(eq), f"cells: {spec!r}")
    return cell, over


def sweep(radii, cells=tuple(SWEEP_CELLS), T=100, hidden_size=64, batch_size=16, input_size=2, seed=0) -> dict:
    """Gradient norm ||dL/dh_t|| vs distance T-1-t for W_hh scaled to each spectral radius in ``radii``; ``cells``:
    names of SWEEP_CELLS or any registry cell with options (``sweep_cell``).

    The input is the adding problem's (uniform values and markers). Returns {"radii": ..., "distance": ...,
    cell: (len(radii), T) array of norms, normalised by the norm at distance 0}.
    """
    from rnnlab.engine.layers import layer_class
    radii = np.asarray(radii, dtype=np.float64)
    if radii.size == 0:
        raise ConfigError("radii: expected at least one spectral radius, got an empty range")
    if (radii <= 0).any() or not np.isfinite(radii).all():
        raise ConfigError(f"radii: expected positive finite values, got {radii.tolist()}")
    check_int("T", T, 2)
    kinds = {name: sweep_cell(name) for name in cells}              # every cell checked before any runs
    if not kinds:
        raise ConfigError(f"cells: expected some cells (e.g. {list(SWEEP_CELLS)}), got none")
    from rnnlab.tasks import Adding
    x = Adding(T, val_size=1).generate(np.random.default_rng(seed), batch_size).inputs
    res = {"radii": radii, "distance": np.arange(T)}
    for name in cells:
        kind, kw = kinds[name]
        rows = []
        for rho in radii:
            layer = layer_class(kind)(input_size, hidden_size, dtype="float64", seed=seed, **kw)
            scale_recurrent(layer, rho)
            g = layer_grad_norms(layer, x, seed=seed)["grad_norm_h"]
            rows.append((g / g[-1])[::-1])                                   # index = distance from the loss
        res[name] = np.array(rows)
    return res
