"""The compiled backends (Numba), each checked against the NumPy reference in the test suite. Top-down:

    loop.py, hybrid.py, split.py   the three strategies, each one backend of ``rnnlab.engine``
    gates.py                       each cell's gate math, once, shared by the three
    weight_grads.py                the products after the loop (dW_ih, dW_hh, dx, the bias sums)
    packed_gemm.py                 the packed matrix product of the loop and split paths, sized to the host
    host.py                        the host CPU, its vector features, the variant in use (RNNLAB_SIMD)
    checks.py                      the compiled NaN/Inf check and fingerprint of ``rnnlab.checks``

Numba's on-disk cache is checked against each function's own source file only: after editing a kernel module,
delete the ``__pycache__/*.nbi``/``*.nbc`` files of the modules that call into it (an installed release is
always consistent: every file is new).

``available()`` tells whether Numba is installed.
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
