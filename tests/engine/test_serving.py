"""A serving process: where Numba keeps the compiled kernels, and an inference call needs the forward kernels only.

Fresh processes: the locators of Numba's cache are fixed when a kernel is defined, and this process's dispatchers
hold whatever the other tests compiled."""
import json
import os
import subprocess
import sys

import pytest

from support import ROOT, needs_numba

pytestmark = needs_numba

SRC = str(ROOT / "src")


def _run(args, cache, **env):
    e = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "NUMBA_CACHE_DIR": cache,
         **env}
    return subprocess.run([sys.executable, *args], env=e, capture_output=True, text=True, timeout=600)


def test_numba_cache_dir_is_where_the_kernels_go(tmp_path):
    p = _run(["-c", "from rnnlab.engine._kernels import cache_dir; print(cache_dir())"], str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().startswith(str(tmp_path) + os.sep)


def test_nowhere_to_cache_is_one_line_naming_the_fix(tmp_path):
    import numba.core.config
    if not hasattr(numba.core.config, "CACHE_LOCATOR_CLASSES"):
        pytest.skip("this Numba cannot be limited to NUMBA_CACHE_DIR")
    (tmp_path / "file").write_text("")
    # Numba asked for NUMBA_CACHE_DIR only, a folder that cannot be made: as a read-only install without a home
    env = {"NUMBA_CACHE_LOCATOR_CLASSES": "UserProvidedCacheLocator"}
    p = _run(["-m", "rnnlab", "warmup", "--cell", "rnn"], str(tmp_path / "file" / "cache"), **env)
    err = p.stderr.strip()
    assert p.returncode == 2 and "\n" not in err, err
    assert "Numba finds no writable folder" in err and "set NUMBA_CACHE_DIR to a writable folder" in err
    p = _run(["-c", "import rnnlab.engine._kernels.gates"], str(tmp_path / "file" / "cache"), **env)
    assert "rnnlab.errors.ConfigError: NUMBA_CACHE_DIR: Numba finds no writable folder" in p.stderr


_SERVE = """
import json, sys
import numpy as np
import rnnlab
from rnnlab.engine._kernels import loop
model = rnnlab.SequenceModel(rnnlab.ModelConfig(input_size=3, output_size=2, cell="rnn", hidden_size=5), seed=0)
x = np.ones((7, 1, 3), np.float32)
model.predict(x)                                   # grad mode on: predict is inference all the same
rnnlab.Stream(model).feed(x[0])
loops = loop.compiled_loops()
n = {name: sum(len(fn.signatures) for k, fn in loops if k == name) for name in ("_fwd_loop", "_bwd_loop")}
print(json.dumps({"bwd": n["_bwd_loop"], "fwd": n["_fwd_loop"],
                  "misses": sum(sum(fn.stats.cache_misses.values()) for _, fn in loops),
                  "hits": sum(sum(fn.stats.cache_hits.values()) for _, fn in loops)}))
"""


@pytest.mark.slow
def test_warmup_inference_serves_a_prediction_without_compiling(tmp_path):
    """``rnnlab warmup --inference`` fills NUMBA_CACHE_DIR with forward kernels only; a later process's
    prediction and stream step load them (no compile) and never touch a backward kernel."""
    cache = str(tmp_path / "cache")
    p = _run(["-m", "rnnlab", "warmup", "--cell", "rnn", "--inference"], cache, RNNLAB_NUM_THREADS="1")
    assert p.returncode == 0, p.stderr
    assert f"Numba's cache: {cache}{os.sep}" in p.stdout.splitlines()[-1]
    files = os.listdir(os.path.join(cache, os.listdir(cache)[0]))
    assert any(f.startswith("loop._fwd_loop") for f in files)
    assert not any(f.startswith("loop._bwd_loop") for f in files)
    p = _run(["-c", _SERVE], cache, RNNLAB_NUM_THREADS="1")
    assert p.returncode == 0, p.stderr
    n = json.loads(p.stdout.strip().splitlines()[-1])
    assert n["bwd"] == 0 and n["fwd"] >= 1
    assert n["misses"] == 0 and n["hits"] >= 1, n


def test_stale_kernels_are_dropped_when_a_kernel_source_changed(tmp_path, monkeypatch):
    """Numba checks a cached kernel against its own file only (a loop whose callee in another file changed
    would run the old callee): rnnlab drops its kernels' cache files when the digest of their sources kept
    beside them differs from the sources now, and leaves every other file of the folder alone."""
    from rnnlab.engine import _kernels
    ours = ["loop._fwd_loop-238.py311.nbi", "loop._fwd_loop-238.py311.1.nbc", "packed_gemm.pgemm-560.py311.nbi"]
    theirs = ["mymodule.f-3.py311.nbi", "mymodule.f-3.py311.1.nbc", "loop.cpython-311.pyc", "notes.txt"]
    for name in ours + theirs:
        (tmp_path / name).write_text("x")
    assert _kernels.drop_stale(str(tmp_path))           # no digest kept: kernels of unknown sources
    assert sorted(os.listdir(tmp_path)) == sorted(theirs + [_kernels.STAMP])
    for name in ours:
        (tmp_path / name).write_text("x")
    assert not _kernels.drop_stale(str(tmp_path))       # the same sources: kept
    assert all((tmp_path / name).exists() for name in ours)
    monkeypatch.setattr(_kernels, "sources_digest", lambda: "0" * 40)      # a kernel's source edited
    assert _kernels.drop_stale(str(tmp_path))
    assert not any((tmp_path / name).exists() for name in ours)
    assert all((tmp_path / name).exists() for name in theirs)
    assert (tmp_path / _kernels.STAMP).read_text().strip() == "0" * 40
