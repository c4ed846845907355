"""Diagonal linear recurrences, two ways: step by step, and as a parallel scan over time.

    h_t = a_t * h_{t-1} + b_t          a, b (T, B, H), real or complex; h_0 (B, H)

Unrolled, h_t = A_t h_0 + sum_{s<=t} (A_t / A_s) b_s with A_t = a_1 ... a_t. The pair (a, b) composes
associatively, (a1, b1) then (a2, b2) = (a2 a1, a2 b1 + b2), so all T states follow from log2(T) passes of
whole-array products (``associative``, Hillis and Steele's doubling scan): no division, any sign, complex
allowed. For 0 < a < 1, as the minimal GRU and LSTM have it, ``log_space`` follows Feng et al. (2024) and
Heinsen (2023): log A_t = cumsum log a, and the sum is a log-cumulative-sum-exp, taken separately over the
positive and the negative terms so that any sign of b and h_0 works.

Backward: with g_t = dL/dh_t from outside the recurrence, the total gradient G_t = g_t + conj(a_{t+1}) G_{t+1}
is the same recurrence run backwards; then dL/db_t = G_t, dL/da_t = G_t conj(h_{t-1}), dL/dh_0 =
conj(a_1) G_1 (for complex values the gradient of a real loss is dL/dRe + i dL/dIm).

Padding (``lengths``): the caller sets a = 1 and b = 0 at padded steps, so the state passes through them.
"""
from __future__ import annotations

import numpy as np

SCANS = ("loop", "associative", "log")


def loop(a, b, h0):
    """The reference: one step at a time. -> h (T, B, H)."""
    h = np.empty(np.broadcast_shapes(a.shape, b.shape), np.result_type(a, b, h0))
    prev = h0
    for t in range(h.shape[0]):
        prev = a[t] * prev + b[t]
        h[t] = prev
    return h


def associative(a, b, h0):
    """Hillis-Steele doubling scan: log2(T) passes over the whole arrays. -> h (T, B, H)."""
    A = np.array(np.broadcast_to(a, np.broadcast_shapes(a.shape, b.shape)), dtype=np.result_type(a, b, h0))
    Bs = np.array(b, dtype=A.dtype)
    Bs[0] += A[0] * h0                                   # fold h_0 into the first step
    T, d = A.shape[0], 1
    while d < T:
        Bs[d:] = A[d:] * Bs[:-d] + Bs[d:]               # right-hand sides first: they read the old A
        A[d:] = A[d:] * A[:-d]
        d *= 2
    return Bs


def log_space(log_a, b, h0, log_b=None):
    """For real a = exp(log_a) > 0: log A_t = cumsum log a, and
    h_t = exp(log A_t) * (h_0 + sum_{s<=t} b_s exp(-log A_s)), each sum a log-cumulative-sum-exp over the
    positive and the negative terms apart. ``log_b``: log b where b > 0 is known in log form (then ``b`` is
    only its shape and sign). -> h (T, B, H)."""
    logA = np.cumsum(log_a, axis=0)                                     # (T, B, H)
    terms = np.concatenate([np.broadcast_to(h0, b.shape[1:])[None], b], axis=0)   # (T+1, B, H): h_0, b_1..b_T
    shift = np.concatenate([np.zeros((1,) + logA.shape[1:], logA.dtype), logA], axis=0)
    with np.errstate(divide="ignore"):
        log_mag = np.log(np.abs(terms)) - shift                          # log |term_s| - log A_s
        if log_b is not None:
            log_mag[1:] = log_b - logA
    out = np.zeros(b.shape, np.result_type(log_a, b, h0))
    for sign in (1.0, -1.0):
        part = np.where(np.sign(terms) == sign, log_mag, -np.inf)
        acc = np.logaddexp.accumulate(part, axis=0)[1:]                  # over s = 0..t, for t = 1..T
        with np.errstate(over="ignore", invalid="ignore"):
            out += sign * np.exp(acc + logA)
    return out


def run(a, b, h0, how="loop", log_a=None, log_b=None):
    """h (T, B, H) of h_t = a_t h_{t-1} + b_t by ``how`` in SCANS (``log`` needs ``log_a``)."""
    if how == "loop":
        return loop(a, b, h0)
    if how == "associative":
        return associative(a, b, h0)
    if log_a is None:
        raise ValueError("scan: the log-space scan needs log(a)")
    return log_space(log_a, b, h0, log_b)


def backward(g, a, h, h0, dhT=None, how="loop"):
    """Gradients of a linear recurrence. g (T, B, H): dL/dh_t from outside it; dhT: dL/dh_T from the final
    state. -> (da, db, dh0), each shaped like a, b, h0 (conjugates taken for complex values)."""
    dtype = np.result_type(g, a)
    ac = np.conj(a) if np.iscomplexobj(a) else a
    if how == "loop":
        G = np.empty(g.shape, dtype)
        acc = np.zeros(g.shape[1:], dtype) if dhT is None else np.asarray(dhT, dtype)
        for t in range(g.shape[0] - 1, -1, -1):
            acc = g[t] + acc if t == g.shape[0] - 1 else g[t] + ac[t + 1] * acc
            G[t] = acc
    else:
        G_in = np.array(g, dtype=dtype)
        if dhT is not None:
            G_in[-1] += dhT
        # G_t = g_t + conj(a_{t+1}) G_{t+1}: the forward recurrence on reversed time, coefficients shifted by one
        a_rev = np.concatenate([ac[1:], np.zeros_like(ac[:1])], axis=0)[::-1]
        G = associative(a_rev, G_in[::-1], np.zeros(G_in.shape[1:], dtype))[::-1]
    h_prev = np.empty_like(h)
    h_prev[0], h_prev[1:] = h0, h[:-1]
    da = G * (np.conj(h_prev) if np.iscomplexobj(h_prev) else h_prev)
    return da, G, ac[0] * G[0]
