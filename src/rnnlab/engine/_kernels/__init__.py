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

Numba's on-disk cache is checked against each function's own source file only: a kernel whose callee in
another file changed would run the callee's old code (an edited checkout, an editable install after a pull).
So the first ``cache_dir()`` of a process compares a digest of this folder's sources with the one kept beside
the cache, and where they differ drops the cached kernels of these modules (their ``.nbi``/``.nbc`` files,
nothing else) before any loads. The loops' cache also keys on a digest of the row kernels' files
(``cell.py``), which covers cells registered from elsewhere.

``available()`` tells whether Numba is installed; ``cache_dir()`` where Numba keeps the compiled kernels.
"""
from __future__ import annotations

import hashlib
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
    would refuse to define the kernels). The first call per folder drops stale kernels (``drop_stale``): every
    compiled module calls it on import. Needs Numba."""
    from numba.core.caching import FunctionCache
    try:
        path = FunctionCache(_probe).cache_path
    except RuntimeError:                    # Numba: "cannot cache function ...: no locator available"
        from numba.misc.appdirs import AppDirs
        from rnnlab.errors import ConfigError
        raise ConfigError(f"NUMBA_CACHE_DIR: Numba finds no writable folder for rnnlab's compiled kernels (not "
                          f"{os.path.join(os.path.dirname(__file__), '__pycache__')}, not "
                          f"{AppDirs('numba', appauthor=False).user_cache_dir}); set NUMBA_CACHE_DIR to a writable "
                          f"folder") from None
    if path not in _CHECKED:                # once per folder and process, before any kernel loads from it
        _CHECKED.append(path)
        drop_stale(path)
    return path


_CHECKED = []
_HERE = os.path.dirname(os.path.abspath(__file__))
STAMP = "rnnlab-kernels.sha1"               # the digest of the sources the cached kernels were compiled from


def sources_digest() -> str:
    """A digest of this folder's Python sources (names and contents)."""
    h = hashlib.sha1()
    for name in sorted(os.listdir(_HERE)):
        if name.endswith(".py"):
            with open(os.path.join(_HERE, name), "rb") as f:
                h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()


def drop_stale(path: str) -> bool:
    """Removes the cached kernels of this folder's modules from ``path`` unless the digest kept there
    (``STAMP``) is that of the sources now, then keeps the new one; True when it removed. Only files named
    ``<module>.*.nbi`` or ``.nbc`` after one of these modules go: Numba's cache of other code stays."""
    digest = sources_digest()
    stamp = os.path.join(path, STAMP)
    try:
        with open(stamp) as f:
            if f.read().strip() == digest:
                return False
    except OSError:
        pass
    modules = {name[:-3] for name in os.listdir(_HERE) if name.endswith(".py")}
    for name in os.listdir(path):
        if name.endswith((".nbi", ".nbc")) and name.split(".", 1)[0] in modules:
            try:
                os.remove(os.path.join(path, name))
            except OSError:                 # another process removed it first
                pass
    tmp = f"{stamp}.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(digest + "\n")
    os.replace(tmp, stamp)                  # whole, for a process reading it at the same time
    return True
