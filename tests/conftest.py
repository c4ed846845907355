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
    from rnnlab.kernels import available
    return available()




# "numba" picks its path by size (the whole-loop kernels at test sizes); "numba-hybrid" and "numba-split" force
# the per-step BLAS paths: one thread, or the batch split over two threads (blocks of a single row allowed)
NUMBA_BACKENDS = (["numba"] if _numba_ok() else []) + (["numba-hybrid"] if _numba_ok() else []) + (
    ["numba-split"] if _numba_ok() else [])
BACKENDS = ["numpy"] + NUMBA_BACKENDS


def use_backend(backend, monkeypatch):
    """-> the layer's ``backend=`` argument, after forcing the path a test backend name asks for."""
    if backend in ("numba-hybrid", "numba-split"):
        from rnnlab import layers
        monkeypatch.setattr(layers, "NUMBA_MAX_WORK", 0)
        monkeypatch.setattr(layers, "SPLIT_MIN_WORK", 0)
        monkeypatch.setenv("RNNLAB_NUM_THREADS", "2" if backend == "numba-split" else "1")
        if backend == "numba-split":
            from rnnlab.kernels import split_scan
            monkeypatch.setattr(split_scan, "MIN_ROWS", 1)
            monkeypatch.setattr(split_scan, "PMATMUL_MIN_ROWS", 1)
        return "numba"
    return backend
