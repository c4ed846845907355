"""Compiled fast paths (Numba), each checked against the NumPy reference in the test suite.

The reference backend (``rnnlab.cells`` + ``rnnlab.recurrent``) is the readable one; ``numba_scan`` compiles
the whole time loop of each cell, forward and backward, for the shapes where per-call overhead dominates.
``available()`` tells whether Numba is installed (extra ``fast``).
"""
from __future__ import annotations


_AVAILABLE = []


def available() -> bool:
    if not _AVAILABLE:                      # asked at every forward: the import is looked up once
        try:
            import numba  # noqa: F401
        except ImportError:
            _AVAILABLE.append(False)
        else:
            _AVAILABLE.append(True)
    return _AVAILABLE[0]
