"""Compiled input checks: one pass, no temporary array."""
from __future__ import annotations

import numpy as np
from numba import njit, uint64

from rnnlab.engine._kernels import cache_dir

cache_dir()     # a one-line error where Numba has nowhere to cache, and stale kernels dropped, before the first kernel


@njit(cache=True, nogil=True, fastmath={"reassoc"}, error_model="numpy")
def all_finite(flat):
    """True when no entry of the 1-D array is NaN or Inf: a - a is 0 for a finite a and NaN otherwise, and a
    NaN term keeps the (vectorised, reassociated) sum NaN. No boolean array is written, unlike
    ``np.isfinite(x).all()``."""
    s = flat[0] - flat[0]
    for i in range(flat.size):
        s += flat[i] - flat[i]
    return s == 0


@njit(cache=True, nogil=True, fastmath={"reassoc"}, error_model="numpy")
def fingerprint(flat):
    """(sum, weighted sum) of the 1-D array in float64, the weight of entry i the 32 bits of (i + 1) * K taken
    as a signed integer (K = 2654435761, Knuth's multiplicative hash: distinct weights for any 2^32 entries), so
    that the second number changes when values move (a shuffle keeps the plain sum; a period-64 weight missed
    swaps 64 entries apart). One pass. ``rnnlab.engine._checks.fingerprint`` computes the
    same weights with NumPy."""
    s = 0.0
    w = 0.0
    for i in range(flat.size):
        v = np.float64(flat[i])
        s += v
        h = (uint64(i + 1) * uint64(2654435761)) & uint64(0xFFFFFFFF)
        w += v * np.float64(np.int32(h))
    return s, w
