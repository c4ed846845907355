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
    assert "| **0.90** |" in lstm                                          # LSTM target 0.9: met
    assert main([]) == 2


@pytest.mark.slow
def test_scaling_figure_is_written(tmp_path, capsys):
    from benchmarks.scaling import main
    out = tmp_path / "scaling"
    assert main(["--out", str(out), "--batch", "2", "--input", "3", "--seq-len", "4", "--hidden", "5",
                 "--h-sweep", "4", "8", "--t-sweep", "3", "6", "--repeats", "1"]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    assert [r["H"] for r in data["rows"] if r["sweep"] == "H"] == [4, 8]
    assert [r["T"] for r in data["rows"] if r["sweep"] == "T"] == [3, 6]
    assert all(r["rnnlab"] > 0 and r["torch"] > 0 for r in data["rows"])
    assert out.with_suffix(".png").stat().st_size > 1000 and out.with_suffix(".svg").exists()
    assert "rnnlab vectors" in data["machine"]


def test_diff_takes_the_best_of_each_side(tmp_path, capsys):
    from benchmarks.diff import main
    row = {"cell": "lstm", "shape": [2, 3, 4, 5], "rnnlab_fwd": 0.010, "rnnlab_train": 0.020, "torch_fwd": 0.010,
           "torch_train": 0.040}
    files = []
    for name, scale in (("b1", 1.0), ("b2", 0.5), ("a1", 0.75)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"rows": [{k: (v * scale if k.startswith(("rnnlab", "torch")) else v)
                                              for k, v in row.items()}]}))
        files.append(str(path))
    assert main([files[0], files[1], "--", files[2]]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    # best before: 5 ms inference, 10 ms training; after: 7.5 and 15 -> 1.50, torch likewise 1.50
    assert line == "| LSTM | 2, 3, 4, 5 | 5.00 | 7.50 | 1.50 | 1.50 | 10.00 | 15.00 | 1.50 | 1.50 |"
    assert main([files[0]]) == 2


@pytest.mark.slow
def test_scan_and_variant_benchmarks_run(tmp_path, capsys):
    from benchmarks.scan import main as scan_main
    from benchmarks.variants import main as variants_main
    assert scan_main(["--out", str(tmp_path / "scan"), "--t-sweep", "4", "8", "--batch", "2", "--input", "3",
                      "--hidden", "4", "--repeats", "1"]) == 0
    rows = json.loads((tmp_path / "scan.json").read_text())["rows"]
    assert [r["T"] for r in rows] == [4, 8] and all(r["mingru/loop"] > 0 and r["torch gru"] > 0 for r in rows)
    assert variants_main(["--batch", "2", "--seq-len", "3", "--input", "3", "--hidden", "8", "--repeats", "1",
                          "--json", str(tmp_path / "v.json")]) == 0
    v = json.loads((tmp_path / "v.json").read_text())["rows"]
    assert {r["backend"] for r in v if "layer_norm" in r["variant"]} == {"loop", "numpy"}
    assert {r["backend"] for r in v if "peephole" in r["variant"]} == {"numpy"}
    out = capsys.readouterr().out
    assert "| lstm+layer_norm | loop |" in out and "| lstm+layer_norm | numpy |" in out


@pytest.mark.slow
def test_tile_benchmark_checks_and_times_every_candidate(tmp_path, capsys):
    from benchmarks.tiles import CANDIDATES, main
    out = tmp_path / "tiles.json"
    assert main(["--shapes", "5,7,40", "--variants", "sse", "--reps", "1", "--json", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["shape"] == [5, 7, 40] and row["openblas_1thread"] > 0
    assert all(row[f"sse {m}x{n}"] > 0 for m, n in CANDIDATES["sse"])
    assert "sse 6x2*" in capsys.readouterr().out              # the tile rnnlab uses is marked
    with pytest.raises(SystemExit):
        main(["--variants", "neon"])


@pytest.mark.slow
def test_stream_benchmark_runs(tmp_path, capsys):
    from benchmarks.stream import main
    assert main(["--cells", "gru", "--hidden", "8", "--steps", "4", "--repeats", "1", "--json",
                 str(tmp_path / "s.json")]) == 0
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert len(rows) == 1 and rows[0]["feed_us_per_step"] > 0 and rows[0]["one_call_us_per_step"] > 0
    assert "| GRU | 8 |" in capsys.readouterr().out


@pytest.mark.slow
def test_serve_benchmark_runs(tmp_path, capsys):
    from benchmarks.serve import main
    assert main(["--cold-start", "--cell", "rnn", "--runs", "1", "--json", str(tmp_path / "s.json")]) == 0
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert [r["case"] for r in rows] == ["import only", "empty cache", "warm cache", "warm cache, no SciPy",
                                         "NumPy backend"]
    assert all(r["runs"][0]["total"] > 0 for r in rows[1:])
    assert "backward loops compiled or loaded by a prediction: [0]" in capsys.readouterr().out


@pytest.mark.slow
def test_breakdown_and_peak_benchmarks_run(tmp_path, capsys):
    """benchmarks.breakdown takes a small layer's call apart (the backward's weight gradients inside the loop
    at this shape), benchmarks.peak gives the sgemm spread and the FMA peak; no time is asserted."""
    from benchmarks.breakdown import main as breakdown_main
    from benchmarks.peak import main as peak_main
    assert breakdown_main(["--shapes", "8,5,4,16", "--cells", "lstm,gru", "--repeats", "2",
                           "--json", str(tmp_path / "b.json")]) == 0
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["cell"] for r in rows] == ["lstm", "gru"]
    for r in rows:
        assert r["backward"]["wgrad_in_loop"] and r["backward"]["wgrad"] > 0
        assert all(r[p]["loop"] > 0 and r[p]["product"] > 0 for p in ("inference", "train", "backward"))
    assert peak_main(["--size", "256", "--repeats", "3", "--json", str(tmp_path / "p.json")]) == 0
    p = json.loads((tmp_path / "p.json").read_text())
    assert p["sgemm_gflops"]["best"] >= p["sgemm_gflops"]["median"] >= p["sgemm_gflops"]["worst"] > 0
    assert "sgemm 256^3" in capsys.readouterr().out


@pytest.mark.slow
def test_compile_benchmark_runs(tmp_path, capsys):
    """benchmarks.compile: a first and a second process per run; a folder without rnnlab is refused."""
    from benchmarks.compile import main
    assert main(["--runs", "1", "--shapes", "one-row"]) == 0
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("one-row")][0]
    first, second = (float(v.split()[-2]) for v in line.split(":")[-1].split(","))
    assert first > 0 and second > 0
    with pytest.raises(SystemExit):
        main(["--src", str(tmp_path)])
    assert "--src: expected a folder holding the rnnlab package" in capsys.readouterr().err


def test_compile_benchmark_runs_the_checkout_given_by_a_relative_src(tmp_path, monkeypatch):
    """--src src (relative, as the docs' "alternating checkouts" invite): the child processes run in the temp
    folder, so PYTHONPATH=src named nothing there and they imported whatever rnnlab was installed instead."""
    import os
    import benchmarks.compile as bc
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    seen = tmp_path / "seen.txt"
    monkeypatch.setattr(bc, "CHILD", f"import rnnlab; open({str(seen)!r}, 'a').write(rnnlab.__file__ + '\\n'); "
                                     "print(0.0)")
    monkeypatch.chdir(root)
    bc.cold("src", (1, 1, 1, 1), "numpy")
    for path in seen.read_text().split():
        assert os.path.realpath(path).startswith(os.path.realpath(os.path.join(root, "src")) + os.sep), path
