"""Time forward and forward+backward of rnnlab's layers against torch.nn on the same shapes.

    python -m benchmarks [--shapes 32,100,32,128 ...] [--repeats 10] [--cells lstm,gru,rnn]

Each library is timed in its own block (warm-up, then repeats; median reported): alternating single calls
makes the two libraries' spinning worker threads slow each other down on two cores.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

import rnnlab

SHAPES = [(32, 100, 32, 128), (64, 100, 64, 256), (16, 500, 16, 64), (128, 50, 128, 512), (1, 1000, 8, 32)]
CLS = {"lstm": rnnlab.LSTM, "gru": rnnlab.GRU, "rnn": rnnlab.RNN}


def median_time(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_rnnlab(cell, B, T, I, H, repeats):
    layer = CLS[cell](I, H, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    d_out = np.ones((T, B, H), np.float32)

    def fwd():
        layer(x)

    def train_step():
        layer(x)
        layer.backward(d_out)

    return median_time(fwd, repeats), median_time(train_step, repeats)


def bench_torch(cell, B, T, I, H, repeats):
    import torch
    mod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](I, H)
    x = torch.randn(T, B, I)
    xg = x.clone().requires_grad_(True)

    def fwd():
        with torch.no_grad():
            mod(x)

    def train_step():
        out, _ = mod(xg)
        out.sum().backward()

    return median_time(fwd, repeats), median_time(train_step, repeats)


def parse_shape(s):
    parts = tuple(int(p) for p in s.split(","))
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"--shapes: expected B,T,I,H, got {s!r}")
    return parts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", type=parse_shape, nargs="+", default=SHAPES, help="B,T,I,H ...")
    p.add_argument("--cells", default="lstm,gru,rnn")
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch = None
        torch_version = "not installed (pip install -e '.[torch]')"
    print(f"rnnlab {rnnlab.__version__}, numpy {np.__version__}, torch {torch_version}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus; float32, medians of {args.repeats}")
    print(f"{'cell':5s} {'B,T,I,H':>16s} | {'fwd ms':>8s} {'torch':>8s} {'ratio':>6s} | "
          f"{'train ms':>8s} {'torch':>8s} {'ratio':>6s}")
    for cell in args.cells.split(","):
        for B, T, I, H in args.shapes:
            f_us, t_us = bench_rnnlab(cell, B, T, I, H, args.repeats)
            if torch is not None:
                f_th, t_th = bench_torch(cell, B, T, I, H, args.repeats)
                rf, rt = f"{f_us / f_th:6.2f}", f"{t_us / t_th:6.2f}"
                f_th, t_th = f"{f_th * 1e3:8.2f}", f"{t_th * 1e3:8.2f}"
            else:
                f_th = t_th = f"{'-':>8s}"
                rf = rt = f"{'-':>6s}"
            print(f"{cell:5s} {f'{B},{T},{I},{H}':>16s} | {f_us * 1e3:8.2f} {f_th} {rf} | {t_us * 1e3:8.2f} {t_th} {rt}",
                  flush=True)
    print("ratio = rnnlab time / torch time (below 1: rnnlab is faster)")
    return 0
