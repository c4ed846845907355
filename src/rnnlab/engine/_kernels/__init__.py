"""The compiled backends (Numba), each checked against the NumPy reference in the test suite. Top-down:

    loop.py          the shared time loop, written once for every cell and option: backend "loop" (one thread)
    split.py         backend "split": the same loop with the batch's rows split over threads (threads.py)
    units.py         backend "units": one-row inference with the hidden units split over threads
    cell.py          the token by which the loops call a cell's row kernels (its Numba type names them)
    gates.py         each cell's row kernels: the only compiled copy of the cells' math
    packed_gemm.py   the packed matrix product of the loops, sized to the host
    threads.py       the thread count (RNNLAB_NUM_THREADS, the affinity mask, the CPU quota), the row split
    handoff.py       the worker threads that stay up between calls: a block handed over in microseconds
    diagonal.py      the diagonal cells' compiled loops (minGRU, minLSTM, IndRNN, LRU)
    host.py          the host CPU, its vector features, the variant in use (RNNLAB_SIMD)
    checks.py        the compiled NaN/Inf check and fingerprint of ``rnnlab.engine._checks``

Numba's on-disk cache is checked against each function's own source file only. The loops' cache also keys
on a digest of the row kernels' files (``cell.py``); after editing another kernel module (``packed_gemm.py``,
``threads.py``), delete the ``__pycache__/*.nbi``/``*.nbc`` files of the modules that call into it (an
installed release is always consistent: every file is new).

``available()`` tells whether Numba is installed; ``cache_dir()`` where Numba keeps the compiled kernels.
"""
from __future__ import annotations

import os


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


def _probe():  # pragma: no cover - never called: Numba's cache locators are asked where a kernel here would go
    pass


def cache_dir() -> str:
    """The folder Numba keeps the compiled kernels in, as Numba's own cache locators choose it, in their order:
    NUMBA_CACHE_DIR when set and writable (a subfolder of it); else ``__pycache__`` beside the kernels when
    writable (a source checkout, an editable install); else the user's cache folder (``~/.cache/numba/...``),
    where the kernels of an install into a read-only site-packages go. ConfigError when none is writable (Numba
    would refuse to define the kernels). Needs Numba."""
    from numba.core.caching import FunctionCache
    try:
        return FunctionCache(_probe).cache_path
    except RuntimeError:                    # Numba: "cannot cache function ...: no locator available"
        from numba.misc.appdirs import AppDirs
        from rnnlab.errors import ConfigError
        raise ConfigError(f"NUMBA_CACHE_DIR: Numba finds no writable folder for rnnlab's compiled kernels (not "
                          f"{os.path.join(os.path.dirname(__file__), '__pycache__')}, not "
                          f"{AppDirs('numba', appauthor=False).user_cache_dir}); set NUMBA_CACHE_DIR to a writable "
                          f"folder") from None
