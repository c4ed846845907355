"""What the LSTM and GRU variants cost: one layer's training step with each option, beside the plain cell on
its fastest path and on the NumPy reference, and torch's plain cell, in one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.variants [--json FILE]

float32, B = 32, T = 100, I = 32, H = 128 by default; median ms of a forward and backward over the sequence in
training mode (the masks drawn every step), the backend each ran on, and the ratio to the plain cell on the
same backend: recurrent dropout, zoneout and layer norm run on the shared compiled loop ("loop" on one thread,
"split" on the batch split: ``rnnlab.engine._kernels.loop``), peepholes and projections on the NumPy reference only.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

import rnnlab

from .bench_layers import bench_torch, median_time

VARIANTS = [("lstm", {}), ("lstm", {"backend": "loop"}), ("lstm", {"backend": "numpy"}),
            ("lstm", {"recurrent_dropout": 0.25}), ("lstm", {"input_dropout": 0.25, "backend": "loop"}),
            ("lstm", {"zoneout": 0.1, "zoneout_cell": 0.1}), ("lstm", {"layer_norm": True}),
            ("lstm", {"recurrent_dropout": 0.25, "backend": "numpy"}), ("lstm", {"layer_norm": True, "backend": "numpy"}),
            ("lstm", {"peephole": True}), ("lstm", {"proj_size": "H/2"}),
            ("gru", {}), ("gru", {"backend": "loop"}), ("gru", {"backend": "numpy"}), ("gru", {"recurrent_dropout": 0.25}),
            ("gru", {"zoneout": 0.1}), ("gru", {"layer_norm": True})]


def step_time(cell, kw, B, T, I, H, repeats):
    kw = {k: (H // 2 if v == "H/2" else v) for k, v in kw.items()}
    layer = {"lstm": rnnlab.LSTM, "gru": rnnlab.GRU}[cell](I, H, seed=0, **kw)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    out, _ = layer(x)
    d_out = np.ones_like(out)

    def step():
        layer(x)
        layer.backward(d_out)
    return median_time(step, repeats), layer.last_backend


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.variants", description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--input", type=int, default=32)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", help="also write the numbers to this file")
    a = p.parse_args(argv)
    if min(a.batch, a.seq_len, a.input, a.hidden, a.repeats) < 1:
        p.error("sizes and --repeats: expected positive integers")
    from rnnlab.engine._kernels import host
    print(host.describe())
    B, T, I, H = a.batch, a.seq_len, a.input, a.hidden
    rows, ref = [], {}
    for cell, kw in VARIANTS:
        sec, backend = step_time(cell, kw, B, T, I, H, a.repeats)
        label = cell + "".join(f"+{k}" + ("" if v is True else f"={v}") for k, v in kw.items() if k != "backend")
        if not any(k != "backend" for k in kw) and "backend" in kw:
            ref[(cell, backend)] = sec
        rows.append({"variant": label, "backend": backend, "ms": 1e3 * sec})
    for cell in ("lstm", "gru"):
        rows.append({"variant": f"torch {cell}", "backend": "torch", "ms": 1e3 * bench_torch(cell, B, T, I, H,
                                                                                              a.repeats)[1]})
    print(f"one layer's training step, B={B}, T={T}, I={I}, H={H}, float32 (ratio: to the plain cell on the same "
          f"backend)")
    print("| variant | backend | ms / step | / plain cell, same backend |")
    print("|---|---|---|---|")
    for r in rows:
        base = ref.get((r["variant"].split("+")[0], r["backend"]))
        ratio = f"{r['ms'] / (1e3 * base):.2f}" if base else ""
        print(f"| {r['variant']} | {r['backend']} | {r['ms']:.2f} | {ratio} |")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump({"machine": host.describe(), "shape": [B, T, I, H], "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
