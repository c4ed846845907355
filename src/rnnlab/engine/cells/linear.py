"""What the diagonal linear cells (minGRU, minLSTM, LRU) share: the input projection, padding, and a
forward and backward over ``rnnlab.engine.scan`` built from a cell's coefficients.

A cell gives ``coefficients(x, p, mask, log) -> (a, b, log a, log b, cache)`` for h_t = a_t h_{t-1} + b_t and
``coefficients_backward(da, db, cache) -> dL/dP`` for its projection P = x W_ih^T + b_ih; ``make`` returns
its ``forward``, ``backward`` and ``carry``. ``draw`` fills a parameter block by block in its own dtype; every
layer's initialisation uses it.
"""
from __future__ import annotations

import numpy as np

from rnnlab.engine import scan
from rnnlab.engine._caches import DiagonalArrays


# values drawn per block by ``draw``: float64 scratch of 2 MiB however large the array, so that a float32 layer
# never holds a float64 copy of a whole weight
DRAW_BLOCK = 1 << 18


def draw(sample, shape, dtype):
    """An array of ``shape`` in ``dtype`` filled block by block with ``sample(n)`` (n float64 values in C order):
    the values of ``sample(size).reshape(shape).astype(dtype)``, bit for bit (a Generator's stream does not depend
    on how a draw is split), with float64 scratch of one block instead of the whole array."""
    out = np.empty(shape, dtype)
    flat = out.reshape(-1)
    for start in range(0, flat.size, DRAW_BLOCK):
        flat[start:start + DRAW_BLOCK] = sample(min(DRAW_BLOCK, flat.size - start))
    return out


def projection_shapes(G, I, H, bias):
    """W_ih (G*H, I) and b_ih (G*H,): the whole parameter set of a cell whose gates read x_t only."""
    return {"weight_ih": (G * H, I), **({"bias_ih": (G * H,)} if bias else {})}


def uniform_init(rng, shapes, H, dtype):
    """U(-1/sqrt(H), 1/sqrt(H)) for every parameter, as torch's recurrent layers."""
    k = 1.0 / np.sqrt(H)
    return {n: draw(lambda m: rng.uniform(-k, k, m), s, dtype) for n, s in shapes.items()}


def project(x, p):
    """P = x W_ih^T + b_ih, all steps at once: x (T, B, I) -> (T, B, G*H)."""
    T, B, I = x.shape
    P = (x.reshape(T * B, I) @ p["weight_ih"].T).reshape(T, B, -1)
    if "bias_ih" in p:
        P += p["bias_ih"]
    return P


def project_backward(dP, x, p):
    """-> (dx (T, B, I), {weight_ih, bias_ih} gradients)."""
    T, B, GH = dP.shape
    d2, x2 = dP.reshape(T * B, GH), x.reshape(T * B, -1)
    grads = {"weight_ih": d2.T @ x2}
    if "bias_ih" in p:
        grads["bias_ih"] = d2.sum(axis=0)
    return (d2 @ p["weight_ih"]).reshape(x.shape), grads


def apply_mask(mask, a, b, log_a=None, log_b=None):
    """At padded steps a = 1 and b = 0, so the state passes through (log a = 0; log b is then unused)."""
    if mask is None:
        return a, b, log_a, log_b
    a = np.where(mask > 0, a, 1.0).astype(b.dtype, copy=False)
    b = b * mask
    if log_a is not None:
        log_a = log_a * mask
    return a, b, log_a, log_b


def make(coefficients, coefficients_backward, gate_names=()):
    def forward(x, p, state0, mask, how):
        """x (T, B, I) in processing order, ``how`` one of ``rnnlab.engine.scan.SCANS`` -> (output (T, B, H), final
        state, DiagonalArrays)."""
        a, b, log_a, log_b, c = coefficients(x, p, mask, log=(how == "log"))
        (h0,) = state0
        h = scan.run(a, b, h0, how, log_a, log_b)
        out = h if mask is None else h * mask
        return out, (h[-1],), DiagonalArrays(x, mask, a, h, h0, c, how, gate_names)

    def backward(d_out, d_state, cache, p):
        """-> (dx, (dh_0,), parameter gradients, dL/dh_t (T, B, H) total)."""
        m = cache.mask
        g_out = d_out if m is None else d_out * m                      # gradients at padded outputs ignored
        da, G, dh0 = scan.backward(g_out, cache.a, cache.h, cache.h0, d_state[0],
                                   "loop" if cache.how == "loop" else "associative")
        db = G
        if m is not None:
            da, db = da * m, G * m
        dP = coefficients_backward(da, db, cache.extra)
        dx, grads = project_backward(dP, cache.x, p)
        return dx, (dh0,), grads, G

    def carry(cache):
        """dh_t/dh_{t-1} as a diagonal (T, B, H): a_t (1 at padded steps)."""
        return cache.a

    return forward, backward, carry
