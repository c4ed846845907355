"""Masked losses with their gradients with respect to the output layer's ``o`` (logits).

Each takes ``o (N, K)``, targets and an optional ``mask (N,)`` (1 at positions that count) and returns
``(loss, do)``: the mean over counted positions (for MSE and BCE, over counted elements) and its gradient.

    softmax cross-entropy:  L = -mean log softmax(o)[y]          do = (softmax(o) - onehot(y)) / n
    sigmoid BCE:            L = mean softplus(o) - y o           do = (sigmoid(o) - y) / n
    MSE:                    L = mean (o - y)^2                   do = 2 (o - y) / n
    pinball (quantiles):    L = mean max(tau u, (tau - 1) u),  u = y - o      do = (1[o > y] - tau) / n
"""
from __future__ import annotations

import numpy as np

from rnnlab.errors import ShapeError
from rnnlab.model.heads import sigmoid, softmax


def _mask(mask, N, dtype):
    if mask is None:
        return np.ones(N, dtype), float(N)
    mask = np.asarray(mask, dtype=dtype).reshape(-1)
    if mask.shape != (N,):
        raise ShapeError(f"mask: expected shape ({N},), got {mask.shape}")
    n = float(mask.sum())
    if n <= 0:
        raise ValueError("mask: expected at least one position to count, got none")
    return mask, n


def softmax_cross_entropy(o, y, mask=None):
    """o (N, K) logits, y (N,) class indices."""
    N, K = o.shape
    y = np.asarray(y).reshape(-1)
    if y.shape != (N,):
        raise ShapeError(f"targets: expected shape ({N},) of class indices, got {y.shape}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"targets: expected integer class indices, got dtype {y.dtype}")
    if N and (y.min() < 0 or y.max() >= K):
        raise ValueError(f"targets: expected class indices in [0, {K - 1}], got values in [{y.min()}, {y.max()}]")
    m, n = _mask(mask, N, o.dtype)
    shifted = o - o.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))          # log softmax
    nll = -logp[np.arange(N), y]
    loss = float((nll * m).sum() / n)
    do = np.exp(logp)
    do[np.arange(N), y] -= 1.0                                                   # softmax - onehot
    do *= (m / n)[:, None]
    return loss, do.astype(o.dtype, copy=False)


def _elementwise(o, y, mask):
    """Targets shaped like o, the row mask and the number of counted elements, for BCE and MSE."""
    y = np.asarray(y, dtype=o.dtype)
    if y.shape != o.shape:
        raise ShapeError(f"targets: expected shape {o.shape}, got {y.shape}")
    m, n = _mask(mask, o.shape[0], o.dtype)
    return y, m, n * o.shape[1]


def sigmoid_binary_cross_entropy(o, y, mask=None):
    """o (N, K) logits, y (N, K) targets in [0, 1] (multi-label)."""
    y, m, n = _elementwise(o, y, mask)
    # softplus(o) - y o, written so exp never overflows
    per = np.maximum(o, 0) - o * y + np.log1p(np.exp(-np.abs(o)))
    loss = float((per * m[:, None]).sum() / n)
    do = (sigmoid(o) - y) * (m / n)[:, None]
    return loss, do.astype(o.dtype, copy=False)


def mse(o, y, mask=None):
    """o (N, K) predictions, y (N, K) targets."""
    y, m, n = _elementwise(o, y, mask)
    diff = (o - y) * m[:, None]
    return float((diff * diff).sum() / n), (2.0 / n) * diff


def pinball(o, y, taus, mask=None):
    """o (N, M*Q) quantile forecasts (Q per target, the quantile fastest), y (N, M) targets, taus (Q,) levels in
    (0, 1): the mean quantile (pinball) loss over counted rows, targets and levels (Koenker and Bassett 1978).
    Its minimiser over o is the tau-quantile of y; at o = y the subgradient taken is -tau."""
    taus = np.asarray(taus, dtype=o.dtype)
    Q = len(taus)
    N = o.shape[0]
    y = np.asarray(y, dtype=o.dtype).reshape(N, -1)
    if o.shape[1] != y.shape[1] * Q:
        raise ShapeError(f"targets: expected {o.shape[1] // Q} values per row for {o.shape[1]} outputs of {Q} "
                         f"quantiles, got {y.shape[1]}")
    m, n = _mask(mask, N, o.dtype)
    u = np.repeat(y, Q, axis=1) - o                                         # (N, M*Q)
    t = np.tile(taus, y.shape[1])[None, :]
    per = np.maximum(t * u, (t - 1) * u)
    n = n * o.shape[1]
    loss = float((per * m[:, None]).sum() / n)
    do = ((u < 0).astype(o.dtype) - t) * (m / n)[:, None]
    return loss, do.astype(o.dtype, copy=False)


LOSSES = {"cross_entropy": softmax_cross_entropy, "bce": sigmoid_binary_cross_entropy, "mse": mse}
LOSS_FOR_PREDICTION = {"softmax": "cross_entropy", "sigmoid": "bce", "identity": "mse"}


def accuracy(o, y, mask=None) -> float:
    pred = o.argmax(axis=-1).reshape(-1)
    y = np.asarray(y).reshape(-1)
    m, n = _mask(mask, pred.shape[0], np.float64)
    return float(((pred == y) * m).sum() / n)


__all__ = ["softmax_cross_entropy", "sigmoid_binary_cross_entropy", "mse", "accuracy", "softmax", "sigmoid"]
