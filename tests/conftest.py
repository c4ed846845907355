import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# ---------------------------------------------------------------- reliability table (docs/make_reliability.py)
import json  # noqa: E402
import os  # noqa: E402
from collections import defaultdict  # noqa: E402

_OUTCOMES = defaultdict(lambda: defaultdict(int))


@pytest.fixture(scope="session")
def outcome():
    """record(category, outcome): counts each bad-input case and how rnnlab answered it."""
    def record(category: str, result: str):
        _OUTCOMES[category][result] += 1
    return record


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("RNNLAB_RELIABILITY_JSON")
    if path and _OUTCOMES:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump({k: dict(v) for k, v in _OUTCOMES.items()}, fh, indent=1, sort_keys=True)


# ---------------------------------------------------------------- compiled paths, forced at the tests' small sizes
def _numba_ok():
    from rnnlab.engine._kernels import available
    return available()




# every backend by name: the NumPy reference and, with Numba, the compiled ones (forced at the tests' small sizes
# by naming them; "split" on two threads, blocks of a single row allowed). "loop-packed": the loop with its
# packed block products and the fused [x h 1] product from one row, which it otherwise takes from PACK_MIN_ROWS
# rows; each kind of product compiles its own loops, so the suites that compare every cell and option with the
# reference name it (WITH_PACKED); the gradient checks and torch parity run on the others.
COMPILED = ["loop", "split"] if _numba_ok() else []
WITH_PACKED = COMPILED + (["loop-packed"] if COMPILED else [])
BACKENDS = ["numpy"] + COMPILED


SIMD = ["avx512", "avx2", "sse"]     # every vector variant runs on any x86 host (RNNLAB_SIMD)


def simd_cases(cells):
    """(simd, cls, kw) to run: every cell with the first variant; with the others, which change only the
    products (the same code for every cell), the LSTM: its x and h products summed, fused or accumulated."""
    return [(simd, cls, kw) for simd in SIMD for cls, kw in cells if simd == SIMD[0] or cls.__name__ == "LSTM"]


def use_backend(backend, monkeypatch):
    """-> the layer's ``backend=`` argument for a test backend name ("split" gets two threads)."""
    if backend == "split":
        monkeypatch.setenv("RNNLAB_NUM_THREADS", "2")
    if backend == "loop-packed":
        from rnnlab.engine._kernels import loop
        monkeypatch.setattr(loop, "PACK_MIN_ROWS", 1)
        return "loop"
    return backend


def serves(backend, cls, opts=None, B=2):
    """Whether ``backend`` serves this layer kind and batch (split: not one row)."""
    return backend != "split" or B >= 2
