"""How the cost of a training step grows: time per LSTM training step against H and against T, rnnlab beside
torch, with the time the step's FLOPs would take at the measured sgemm peak on the H plot.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.scaling --out docs/figures/scaling

writes OUT.png, OUT.svg and OUT.json (every number, the machine's description). Defaults: B = 32, I = 32,
T = 50 for the H sweep (H = 32 .. 1024), H = 128 for the T sweep (T = 10 .. 400); float32, medians.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .bench_layers import bench_rnnlab, bench_torch, save_figure, sgemm_peak, train_flops

H_SWEEP = (32, 64, 128, 256, 512, 1024)
T_SWEEP = (10, 25, 50, 100, 200, 400)


def measure(cell, B, I, T, Hs, Ts, H_fixed, repeats):
    rows = []
    for H in Hs:
        rows.append({"sweep": "H", "B": B, "T": T, "I": I, "H": H,
                     "rnnlab": bench_rnnlab(cell, B, T, I, H, repeats)[1],
                     "torch": bench_torch(cell, B, T, I, H, repeats)[1]})
    for t in Ts:
        rows.append({"sweep": "T", "B": B, "T": t, "I": I, "H": H_fixed,
                     "rnnlab": bench_rnnlab(cell, B, t, I, H_fixed, repeats)[1],
                     "torch": bench_torch(cell, B, t, I, H_fixed, repeats)[1]})
    return rows


def plot(rows, peak, cell, out: Path, machine: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, sweep in zip(axes, ("H", "T")):
        rs = [r for r in rows if r["sweep"] == sweep]
        xs = [r[sweep] for r in rs]
        ax.plot(xs, [1e3 * r["rnnlab"] for r in rs], "o-", label="rnnlab")
        ax.plot(xs, [1e3 * r["torch"] for r in rs], "s-", label="torch")
        if sweep == "H":
            ax.plot(xs, [1e3 * train_flops(cell, r["B"], r["T"], r["I"], r["H"]) / peak for r in rs], "k--",
                    label=f"FLOPs at sgemm peak ({peak / 1e9:.0f} GFLOP/s)")
            ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        fixed = f"B={rs[0]['B']}, I={rs[0]['I']}, " + (f"T={rs[0]['T']}" if sweep == "H" else f"H={rs[0]['H']}")
        ax.set_xlabel(sweep)
        ax.set_ylabel("ms per training step")
        ax.set_title(f"{cell.upper()} training step vs {sweep} ({fixed})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(machine, fontsize=7)
    fig.tight_layout()
    save_figure(fig, out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="docs/figures/scaling", help="path without suffix (.png, .svg, .json)")
    p.add_argument("--cell", default="lstm", choices=("lstm", "gru", "rnn"))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--input", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=50, help="T of the H sweep")
    p.add_argument("--hidden", type=int, default=128, help="H of the T sweep")
    p.add_argument("--h-sweep", type=int, nargs="+", default=H_SWEEP)
    p.add_argument("--t-sweep", type=int, nargs="+", default=T_SWEEP)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    if min(list(args.h_sweep) + list(args.t_sweep) + [args.batch, args.input, args.repeats]) < 1:
        p.error("sizes and --repeats: expected positive integers")
    from rnnlab.engine._kernels import host
    machine = host.describe()
    print(machine)
    peak = sgemm_peak()
    rows = measure(args.cell, args.batch, args.input, args.seq_len, args.h_sweep, args.t_sweep, args.hidden,
                   args.repeats)
    for r in rows:
        print(f"{r['sweep']}: B={r['B']} T={r['T']} I={r['I']} H={r['H']}  rnnlab {1e3 * r['rnnlab']:8.2f} ms  "
              f"torch {1e3 * r['torch']:8.2f} ms  ratio {r['rnnlab'] / r['torch']:.2f}")
    # the peak is a best case: measured again at the end, the better of the two (as the layer benchmark)
    peak = max(peak, sgemm_peak())
    print(f"sgemm peak {peak / 1e9:.1f} GFLOP/s")
    out = Path(args.out)
    plot(rows, peak, args.cell, out, machine)
    out.with_suffix(".json").write_text(json.dumps({"machine": machine, "sgemm_peak_flops": peak, "cell": args.cell,
                                                    "rows": rows}, indent=1))
    print(f"wrote {out.with_suffix('.png')}, .svg, .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
