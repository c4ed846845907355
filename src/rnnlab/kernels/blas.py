"""NumPy's own BLAS ``gemm``, callable from compiled (Numba) code without the GIL.

The batch-split scans (``rnnlab.kernels.split_scan``) run a whole time loop per thread, so the per-step
recurrent product must be called from inside compiled code. Numba's ``np.dot`` goes through SciPy's
bundled OpenBLAS, which measured 1.7x slower than NumPy's on the small products of a step here
((16, 128) x (128, 512): 65 us against 39 us, one thread); so this module finds the CBLAS ``sgemm``/``dgemm``
of the OpenBLAS that NumPy's wheel bundles and wraps them as ctypes functions, which Numba calls as
first-class function arguments (so the compiled kernels still cache on disk).

``gemm(dtype)`` returns the function, or None where no such library is found (another BLAS vendor, another
platform's wheel layout): the callers then keep the single-threaded hybrid path. Every candidate is checked
on a small product against NumPy before it is used.
"""
from __future__ import annotations

import ctypes
import glob
import os

import numpy as np

ROW_MAJOR, NO_TRANS = 101, 111
# (symbol pattern, integer type): NumPy's wheels bundle scipy-openblas with ILP64 and a "scipy_" prefix
_SYMBOLS = [("scipy_cblas_{}gemm64_", ctypes.c_int64), ("cblas_{}gemm64_", ctypes.c_int64),
            ("scipy_cblas_{}gemm", ctypes.c_int), ("cblas_{}gemm", ctypes.c_int)]
_FOUND: dict = {}


def _library_paths():
    root = os.path.dirname(np.__file__)
    pats = [os.path.join(root, "..", "numpy.libs", "*openblas*"), os.path.join(root, ".dylibs", "*openblas*")]
    return sorted(p for pat in pats for p in glob.glob(pat))


def _wrap(lib, letter, integer, real):
    for pattern, ity in _SYMBOLS:
        if ity is not integer:
            continue
        name = pattern.format(letter)
        if hasattr(lib, name):
            addr = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
            P = ctypes.c_void_p
            proto = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_int, ity, ity, ity, real, P, ity, P,
                                     ity, real, P, ity)
            return proto(addr)
    return None


def _works(fn, dtype):
    """One small product against NumPy's: guards against a wrong ABI guess."""
    rng = np.random.default_rng(0)
    a, w = rng.standard_normal((3, 5)).astype(dtype), rng.standard_normal((5, 4)).astype(dtype)
    c = np.full((3, 4), 7.0, dtype)
    fn(ROW_MAJOR, NO_TRANS, NO_TRANS, 3, 4, 5, dtype(1.0), a.ctypes.data, 5, w.ctypes.data, 4, dtype(0.0),
       c.ctypes.data, 4)
    return np.allclose(c, a @ w, rtol=1e-4, atol=1e-5)


def gemm(dtype):
    """CBLAS ``?gemm`` of NumPy's BLAS for float32 or float64 (as a ctypes function), or None."""
    key = np.dtype(dtype).name
    if key not in _FOUND:
        _FOUND[key] = None
        letter, real = ("s", ctypes.c_float) if key == "float32" else ("d", ctypes.c_double)
        for path in _library_paths():
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            integer = ctypes.c_int64 if "64_" in os.path.basename(path) else ctypes.c_int   # ILP64 or LP64 build
            fn = _wrap(lib, letter, integer, real)
            if fn is not None and _works(fn, np.dtype(dtype).type):
                _FOUND[key] = fn
                break
    return _FOUND[key]
