"""Gradient checks as a feature: compare hand-derived BPTT with float64 central differences.

    L = sum(output * d_output) + sum(h_n * d_hn) [+ sum(c_n * d_cn)]      random d_output, d_hn

so that dL/d(anything) is exactly what ``backward(d_output, d_hn)`` computes. The error per tensor is
``||g_bp - g_fd|| / max(||g_bp|| + ||g_fd||, tiny)``.
"""
from __future__ import annotations

import numpy as np


def relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    denom = max(np.linalg.norm(a) + np.linalg.norm(b), 1e-30)
    return float(np.linalg.norm(a - b) / denom)


def _as_tuple(s):
    return s if isinstance(s, tuple) else (s,)


def numerical_gradient(f, arr, eps=1e-6, entries=None):
    """Central differences of the scalar ``f()`` with respect to ``arr`` (changed in place and restored).

    ``entries``: flat indices to perturb (None = all); the others are left as NaN in the result.
    """
    g = np.full(arr.shape, np.nan) if entries is not None else np.zeros(arr.shape)
    flat, gflat = arr.reshape(-1), g.reshape(-1)
    for j in (range(arr.size) if entries is None else entries):
        old = flat[j]
        flat[j] = old + eps
        fp = f()
        flat[j] = old - eps
        fm = f()
        flat[j] = old
        gflat[j] = (fp - fm) / (2 * eps)
    return g


def check_layer(layer, x, hx=None, lengths=None, *, seed=0, eps=1e-6, max_entries=None) -> dict:
    """Gradient check of a float64 layer at input ``x``: {tensor name: relative error}.

    Checks every parameter, ``x`` and the initial states (``h0``, and ``c0`` for the LSTM).
    ``max_entries`` limits the perturbed entries per tensor (chosen at random) to keep big checks quick.
    """
    if np.dtype(layer.dtype) != np.float64:
        raise TypeError(f"layer: gradient checks need a float64 layer (dtype='float64'), got {np.dtype(layer.dtype).name}")
    rng = np.random.default_rng(seed)
    x = np.array(x, dtype=np.float64)
    out, hn = layer(x, hx, lengths)
    hn = _as_tuple(hn)
    if hx is None:
        hx = tuple(np.zeros_like(h) for h in hn)
    hx = tuple(np.array(h, dtype=np.float64) for h in _as_tuple(hx))
    d_out = rng.standard_normal(out.shape)
    d_hn = tuple(rng.standard_normal(h.shape) for h in hn)
    state_arg = (lambda: hx if len(hx) == 2 else hx[0])

    def loss():
        o, h = layer(x, state_arg(), lengths)
        return float(np.sum(o * d_out) + sum(np.sum(a * b) for a, b in zip(_as_tuple(h), d_hn)))

    layer.zero_grad()
    layer(x, state_arg(), lengths)
    dx, dhx = layer.backward(d_out, d_hn if len(d_hn) == 2 else d_hn[0])
    analytic = {"x": dx}
    for name, g in zip(("h0", "c0"), _as_tuple(dhx)):
        analytic[name] = g
    for name, g in layer.grads.items():
        analytic[name] = g.copy()
    tensors = {"x": x, **dict(zip(("h0", "c0"), hx)), **dict(layer.named_parameters())}
    errors = {}
    for name, arr in tensors.items():
        entries = None
        if max_entries is not None and arr.size > max_entries:
            entries = rng.choice(arr.size, size=max_entries, replace=False)
        num = numerical_gradient(loss, arr, eps, entries)
        ana = analytic[name]
        if entries is not None:
            ana = ana.reshape(-1)[entries]
            num = num.reshape(-1)[entries]
        errors[name] = relative_error(ana, num)
    return errors


def every_kind():
    """(name, layer class, options) of every layer kind ``rnnlab check`` checks: each classic cell and nonlinearity
    or reset, and each diagonal cell on its loop and, where it has one, its parallel scan."""
    from rnnlab.engine.layers import GRU, LRU, LSTM, RNN, IndRNN, MinGRU, MinLSTM
    return [("rnn (tanh)", RNN, {}), ("rnn (relu)", RNN, {"nonlinearity": "relu"}), ("lstm", LSTM, {}),
            ("gru (reset after)", GRU, {}), ("gru (reset before)", GRU, {"reset": "before"}),
            ("mingru (loop)", MinGRU, {"backend": "numpy"}), ("mingru (scan)", MinGRU, {"backend": "scan"}),
            ("minlstm (loop)", MinLSTM, {"backend": "numpy"}), ("minlstm (scan)", MinLSTM, {"backend": "scan"}),
            ("indrnn", IndRNN, {}), ("lru (loop)", LRU, {"backend": "numpy"}), ("lru (scan)", LRU, {"backend": "scan"})]


def check_every_kind(seq_len: int = 6, num_layers: int = 2, seed: int = 0, input_size: int = 4, hidden_size: int = 5):
    """``check_layer`` on every kind of ``every_kind``: bidirectional, float64, a batch of 3 with ragged lengths
    (T, T // 2, T - 1). Yields (name, layer, {tensor: relative error}) as each kind is checked."""
    rng = np.random.default_rng(seed)
    T = seq_len
    for name, cls, kw in every_kind():
        layer = cls(input_size, hidden_size, num_layers, bidirectional=True, dtype="float64", seed=seed, **kw)
        x = rng.standard_normal((T, 3, input_size))
        lengths = np.array([T, max(1, T // 2), max(1, T - 1)])
        yield name, layer, check_layer(layer, x, lengths=lengths, seed=seed)
