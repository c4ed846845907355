"""The benchmark script runs end to end on a tiny shape (no timing is asserted: speed is measured, not tested)."""
import json

import pytest

pytest.importorskip("torch")


@pytest.mark.slow
def test_benchmark_runs_and_writes_every_number(tmp_path, capsys):
    from benchmarks.bench_layers import main
    out = tmp_path / "bench.json"
    assert main(["--shapes", "2,3,4,5", "--cells", "gru,lstm", "--repeats", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["cell"] for r in rows] == ["gru", "lstm"]
    for r in rows:
        assert r["rnnlab_fwd"] > 0 and r["rnnlab_train"] > 0 and r["torch_train"] > 0
    assert "ratio = rnnlab time / torch time" in capsys.readouterr().out


def test_render_marks_the_targets(tmp_path, capsys):
    from benchmarks.render import main
    row = {"cell": "gru", "shape": [2, 3, 4, 5], "backend": "loop", "rnnlab_fwd": 0.7, "torch_fwd": 1.0,
           "ort_fwd": 0.5, "jax_fwd": float("nan"), "rnnlab_train": 0.9, "torch_train": 1.0, "jax_train": 1.0,
           "peak_fraction": float("nan")}
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"sgemm_peak_flops": 1e11, "rows": [row, {**row, "cell": "lstm"}]}))
    assert main([str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    gru, lstm = out[-2], out[-1]
    assert "| **0.70** | 500.00 | 1.40 |" in gru and "| 0.90 |" in gru      # GRU target 0.8: 0.9 misses
    assert "| **0.90** |" in lstm                                          # LSTM target 1.0: met
    assert main([]) == 2
