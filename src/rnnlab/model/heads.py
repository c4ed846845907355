"""Input and output layers around the recurrent stack (seed: output layer and prediction layer).

    embedding:  x_t = E[token_t]                           E (V, I)
    output:     o_t = h_t V^T + c                          V (K, H), c (K,)   -- the seed's V
    prediction: y_hat_t = softmax(o_t) | sigmoid(o_t) | o_t

The prediction layer is folded into the loss (``rnnlab.model.losses``) so its gradient is the stable
``y_hat - y``; ``predict`` applies it for inference.
"""
from __future__ import annotations

import numpy as np

from rnnlab.engine.cells.activations import sigmoid


def linear_forward(h, V, c, mm=np.matmul):
    """h (..., H) -> o (..., K). ``mm``: the matrix product of 2-D arrays to use (the recurrent layer's)."""
    o = mm(h.reshape(-1, h.shape[-1]), V.T).reshape(h.shape[:-1] + (V.shape[0],))
    if c is not None:
        o += c
    return o


def linear_backward(do, h, V, mm=np.matmul):
    """do (N, K), h (N, H) -> dh (N, H), dV (K, H), dc (K,)."""
    return mm(do, V), mm(do.T, h), do.sum(axis=0)


def embedding_backward(d_emb, tokens, num_embeddings):
    """Scatter-add d_emb (N, I) into the rows of E picked by tokens (N,) -> dE (V, I)."""
    dE = np.zeros((num_embeddings, d_emb.shape[-1]), dtype=d_emb.dtype)
    np.add.at(dE, tokens, d_emb)
    return dE


def softmax(o, axis=-1):
    e = np.exp(o - o.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


PREDICTIONS = {"softmax": softmax, "sigmoid": sigmoid, "identity": lambda o: o}
