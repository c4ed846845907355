"""The 2024 question, timed: a training step of the diagonal cells, step by step and as a parallel scan, beside
rnnlab's GRU and torch's GRU, as T grows.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.scan --out docs/figures/scan

A training step is one layer's forward and backward over the whole sequence (loss = sum of the outputs),
float32, B = 16, I = H = 128 by default, at T = 32 .. 2048, for each cell on its backends: "numpy" (the loop in
NumPy), "loop" (the loop compiled), "scan" (the parallel scan in NumPy). Printed per T: ms per step for each, the
minGRU's ratios, and the crossover T where the scan first beats the faster of the two loops.
Writes OUT.json (every number and the machine) and OUT.png / OUT.svg.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import rnnlab
from rnnlab.engine.layers import LRU, IndRNN, MinGRU, MinLSTM

from .bench_layers import bench_torch, median_time, save_figure

T_SWEEP = (32, 64, 128, 256, 512, 1024, 2048)
RUNS = [(name, cls, backend) for name, cls, backends in
        (("mingru", MinGRU, ("numpy", "loop", "scan")), ("minlstm", MinLSTM, ("numpy", "loop", "scan")),
         ("lru", LRU, ("numpy", "loop", "scan")), ("indrnn", IndRNN, ("numpy", "loop")))
        for backend in backends] + [("gru", rnnlab.GRU, "auto")]


def train_step_time(cls, backend, B, T, I, H, repeats):
    layer = cls(I, H, seed=0, backend=backend)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    d_out = np.ones((T, B, H), np.float32)

    def step():
        layer(x)
        layer.backward(d_out)
    return median_time(step, repeats)


def measure(B, I, H, Ts, repeats):
    rows = []
    for T in Ts:
        row = {"T": T, "B": B, "I": I, "H": H}
        for name, cls, backend in RUNS:
            row[f"{name}/{backend}"] = train_step_time(cls, backend, B, T, I, H, repeats)
        row["torch gru"] = bench_torch("gru", B, T, I, H, repeats)[1]
        rows.append(row)
        print(" ".join(f"{k} {1e3 * v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
              flush=True)
    return rows


def crossover(rows, cell):
    """The first T at which the scan's step is faster than the faster loop (NumPy or compiled), or None."""
    return next((r["T"] for r in rows if r[f"{cell}/scan"] < min(r[f"{cell}/numpy"], r.get(f"{cell}/loop", 1e9))),
                None)


def table(rows) -> str:
    keys = [k for k in rows[0] if k not in ("T", "B", "I", "H")]
    head = "| T | " + " | ".join(keys) + " | minGRU scan / numpy loop | minGRU compiled loop / torch GRU |"
    lines = [head, "|" + "---|" * (len(keys) + 3)]
    for r in rows:
        lines.append(f"| {r['T']} | " + " | ".join(f"{1e3 * r[k]:.2f}" for k in keys)
                     + f" | {r['mingru/scan'] / r['mingru/numpy']:.2f} | {r['mingru/loop'] / r['torch gru']:.2f} |")
    return "\n".join(lines)


def plot(rows, out: Path, machine: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    Ts = [r["T"] for r in rows]
    for k in rows[0]:
        if k in ("T", "B", "I", "H"):
            continue
        ax.plot(Ts, [1e3 * r[k] for r in rows], "o-" if "scan" in k else ("s--" if "gru" in k else "x:"), label=k)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("T (steps)")
    ax.set_ylabel("ms per training step")
    r0 = rows[0]
    ax.set_title(f"One layer's training step, B={r0['B']}, I={r0['I']}, H={r0['H']}, float32")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.suptitle(machine, fontsize=7)
    fig.tight_layout()
    save_figure(fig, out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scan", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="docs/figures/scan", help="path without suffix (.json, .png, .svg)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--input", type=int, default=128)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--t-sweep", type=int, nargs="+", default=T_SWEEP)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    if min(list(args.t_sweep) + [args.batch, args.input, args.hidden, args.repeats]) < 1:
        p.error("sizes and --repeats: expected positive integers")
    from rnnlab.engine._kernels import host
    machine = host.describe()
    print(machine)
    rows = measure(args.batch, args.input, args.hidden, args.t_sweep, args.repeats)
    print(table(rows))
    for cell in ("mingru", "minlstm", "lru"):
        print(f"{cell}: the scan first beats the loop at T = {crossover(rows, cell)}")
    out = Path(args.out)
    plot(rows, out, machine)
    out.with_suffix(".json").write_text(json.dumps({"machine": machine, "rows": rows,
                                                    "crossover": {c: crossover(rows, c) for c in
                                                                  ("mingru", "minlstm", "lru")}}, indent=1))
    print(f"wrote {out.with_suffix('.json')}, .png, .svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
