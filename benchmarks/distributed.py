"""Beyond one process, measured: sweep throughput on Ray Tune and the data-parallel speed-up over MPI.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.distributed [--json FILE]

1. Sweep throughput: the same ``--trials`` small trials (adding, T = 50, an LSTM of 32 units, ``--trial-steps``
   steps, different seeds) one after another in this process, then as an ``rnnlab sweep`` on a local Ray with
   ``--workers`` workers (one CPU each); wall-clock seconds for all of them, Ray's start-up included.
2. Data-parallel speed-up: the character LSTM of docs/results.md (Shakespeare, 256 units, batch 32, 100-step
   windows) for ``--dp-steps`` steps as one process (the library's own threads), as one process on one thread,
   and as ``mpiexec -n 2`` (one thread per rank); the median time of a training step (the first, which
   compiles, left out).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def sweep_throughput(trials, steps, workers, tmp):
    from rnnlab.scale import sweep
    from rnnlab.training.config import TrainConfig
    from rnnlab.training.trainer import train
    base = {"task": "adding", "seq_len": 50, "hidden_size": 32, "steps": steps, "eval_every": steps, "quiet": True}
    t0 = time.perf_counter()
    for s in range(trials):
        train({**base, "seed": s})
    sequential = time.perf_counter() - t0
    manifest = sweep.manifest_for(TrainConfig.from_dict(base), [("lstm", {})], trials, "mse", 0.01)
    t0 = time.perf_counter()
    sweep.run(out=str(tmp / "sweep"), manifest=manifest, workers=workers)
    on_ray = time.perf_counter() - t0
    return {"trials": trials, "steps": steps, "workers": workers, "sequential_s": sequential, "ray_s": on_ray,
            "speedup": sequential / on_ray}


def dp_speedup(steps, tmp):
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        return {"error": "no mpiexec (pip install 'rnnlab[mpi]')"}
    args = ["train", "--task", "chars", "--text", "shakespeare", "--seq-len", "100", "--hidden-size", "256",
            "--batch-size", "32", "--steps", str(steps), "--eval-every", "0", "--lr", "0.002", "--clip", "5",
            "--quiet"]
    out = {}
    one = {"RNNLAB_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    for name, prefix, env in (("1 process", [], {}), ("1 process, 1 thread", [], one),
                              ("2 ranks", [mpiexec, "-n", "2"], one)):
        js = tmp / f"{name.replace(' ', '_')}.json"
        subprocess.run(prefix + [sys.executable, "-m", "rnnlab"] + args + ["--json", str(js)], check=True,
                       env={**os.environ, **env}, cwd=tmp)
        out[name] = json.loads(js.read_text())["median_step_ms"]
    out["speedup"] = out["1 process"] / out["2 ranks"]
    out["speedup_vs_1_thread"] = out["1 process, 1 thread"] / out["2 ranks"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--trial-steps", type=int, default=300)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dp-steps", type=int, default=40)
    p.add_argument("--json", help="also write the numbers to this file")
    a = p.parse_args(argv)
    if min(a.trials, a.trial_steps, a.workers, a.dp_steps) < 1:
        p.error("counts: expected positive integers")
    from rnnlab.engine._kernels import host
    print(host.describe())
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')} "
          f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', '(unset)')}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sw = sweep_throughput(a.trials, a.trial_steps, a.workers, tmp)
        print(f"\nsweep: {sw['trials']} trials x {sw['steps']} steps: one after another {sw['sequential_s']:.1f} s, "
              f"on Ray with {sw['workers']} workers {sw['ray_s']:.1f} s -> {sw['speedup']:.2f}x")
        dp = dp_speedup(a.dp_steps, tmp)
        if "error" in dp:
            print(f"data-parallel: not measured ({dp['error']})")
        else:
            print(f"data-parallel, character LSTM (B=32, T=100, H=256): median step {dp['1 process']:.1f} ms as one "
                  f"process (its own threads), {dp['1 process, 1 thread']:.1f} ms as one process on one thread, "
                  f"{dp['2 ranks']:.1f} ms on 2 MPI ranks (one thread each) -> {dp['speedup']:.2f}x and "
                  f"{dp['speedup_vs_1_thread']:.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": host.describe(), "sweep": sw, "data_parallel": dp}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
