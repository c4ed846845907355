"""Render `rnnlab compare --json` files into the tables of docs/results.md (the diagonal cells' section).

    python docs/make_diagonal_results.py runs/sc-1.json runs/sc-2.json runs/sc-3.json
    python docs/make_diagonal_results.py runs/add1000.json

One row per model and file: layers, hidden size, parameters, the final and the best validation value of the
task's threshold metric, the first evaluation that reached the threshold, and ms per training step.
"""
from __future__ import annotations

import json
import sys


def rows(path):
    d = json.load(open(path, encoding="utf-8"))
    metric = d["threshold"]["metric"]
    L = d["config"]["num_layers"]
    higher = metric not in ("loss", "mse", "bpc")
    for name, m in d["models"].items():
        curve = m["curve"].get(metric) or [float("nan")]
        best = max(curve) if higher else min(curve)
        yield (name, L, m["hidden_size"], m["parameters"], m["final"][metric], best,
               m["steps_to_threshold"], m["ms_per_train_step"], metric, d["threshold"]["value"])


def main(paths) -> int:
    if not paths:
        print(__doc__)
        return 2
    out = []
    for p in paths:
        out.extend(rows(p))
    metric, thr = out[0][8], out[0][9]
    print(f"| model | layers | hidden | parameters | final {metric} | best {metric} | first step at {thr:g} | "
          f"ms / step |")
    print("|---|---|---|---|---|---|---|---|")
    for name, L, H, n, fin, best, steps, ms, *_ in out:
        print(f"| {name} | {L} | {H} | {n:,} | {fin:.4f} | {best:.4f} | {steps if steps is not None else 'never'} | "
              f"{ms:.1f} |".replace(",", " "))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
