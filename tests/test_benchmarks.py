"""The benchmark script runs end to end on a tiny shape (no timing is asserted: speed is measured, not tested)."""
import json

import pytest

pytest.importorskip("torch")


def test_benchmark_runs_and_writes_every_number(tmp_path, capsys):
    from benchmarks.bench_layers import main
    out = tmp_path / "bench.json"
    assert main(["--shapes", "2,3,4,5", "--cells", "gru,lstm", "--repeats", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["cell"] for r in rows] == ["gru", "lstm"]
    for r in rows:
        assert r["rnnlab_fwd"] > 0 and r["rnnlab_train"] > 0 and r["torch_train"] > 0
    assert "ratio = rnnlab time / torch time" in capsys.readouterr().out
