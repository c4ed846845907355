"""Fixtures and hooks only; what the tests share otherwise is in support.py (``from support import ...``)."""
import json
import os
from collections import defaultdict

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# ---------------------------------------------------------------- reliability table (docs/make_reliability.py)
_OUTCOMES = defaultdict(lambda: defaultdict(int))


@pytest.fixture(scope="session")
def outcome():
    """record(category, outcome): counts each bad-input case and how rnnlab answered it."""
    def record(category: str, result: str):
        _OUTCOMES[category][result] += 1
    return record


def pytest_sessionfinish(session, exitstatus):
    # docs/make_reliability.py runs its tests in one process (-n 0): the counts live in this process
    path = os.environ.get("RNNLAB_RELIABILITY_JSON")
    if path and _OUTCOMES:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump({k: dict(v) for k, v in _OUTCOMES.items()}, fh, indent=1, sort_keys=True)
