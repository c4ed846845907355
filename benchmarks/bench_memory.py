"""Memory and time of a training step with full BPTT caches vs memory-bounded BPTT (bptt_segment).

    python -m benchmarks.bench_memory [--T 1000] [--B 32] [--H 128] [--cell lstm]

Peak memory is what NumPy allocates during forward + backward (tracemalloc sees NumPy's buffers), measured
in this process; time is the median of a few repeats.
"""
from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np

import rnnlab

CLS = {"lstm": rnnlab.LSTM, "gru": rnnlab.GRU, "rnn": rnnlab.RNN}


def measure(cell, T, B, I, H, segment, repeats=3):
    layer = CLS[cell](I, H, seed=0, bptt_segment=segment, backend="numpy")   # segments run on the reference
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    d = np.ones((T, B, H), np.float32)
    layer(x)
    layer.backward(d)
    layer._cache = None
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    layer(x)
    layer.backward(d)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        layer(x)
        layer.backward(d)
        times.append(time.perf_counter() - t0)
    return peak / 2 ** 20, statistics.median(times) * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cell", default="lstm", choices=CLS)
    p.add_argument("--T", type=int, default=1000)
    p.add_argument("--B", type=int, default=32)
    p.add_argument("--I", type=int, default=32)
    p.add_argument("--H", type=int, default=128)
    p.add_argument("--segments", default="0,100,32,10")
    a = p.parse_args(argv)
    print(f"{a.cell} T={a.T} B={a.B} I={a.I} H={a.H} float32: forward + backward")
    print(f"{'bptt_segment':>12s} {'peak MiB':>9s} {'ms':>8s}")
    for s in (int(v) for v in a.segments.split(",")):
        peak, ms = measure(a.cell, a.T, a.B, a.I, a.H, s or None)
        print(f"{(s or 'off')!s:>12s} {peak:9.1f} {ms:8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
