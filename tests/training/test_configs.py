"""Every file in configs/ is a valid run configuration (they double as documentation)."""
import pytest

from rnnlab.training.config import resolve
from support import ROOT

CONFIGS = sorted((ROOT / "configs").glob("*.toml"))


def test_there_are_configs():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_resolves(path):
    cfg = resolve(path)
    assert cfg.steps >= 1
