"""The machine's limit for float32 products: the measured sgemm peak with its spread, and the FMA peak.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.peak [--repeats 21] [--size 2048]

sgemm: 2048^3 products through NumPy's BLAS on all threads, ``--repeats`` of them after a warm-up; the best,
median and worst GFLOP/s (the best is the peak the other benchmarks divide by; the spread says how far a short
block may fall from it on this machine). FMA peak: CPUs x float32 FLOPs per cycle x clock, the FLOPs per cycle
from the CPU model's FMA units (``FLOPS_PER_CYCLE``: LLVM's name for the CPU), the clock measured with a chain
of dependent fused multiply-adds, assuming their latency is 4 cycles (Zen 2-5 and Intel from Skylake): a
virtual machine's /proc/cpuinfo often shows no clock.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

# float32 FLOPs per cycle per core: FMA units x lanes x 2. Zen 4 runs a 512-bit FMA on its two 256-bit units
# (2 x 8 x 2); Zen 5 and Intel's server cores from Skylake-SP have two 512-bit FMA units (some Xeon models
# one: the table is the upper bound); AVX2 cores two 256-bit ones
FLOPS_PER_CYCLE = {"znver4": 32, "znver5": 64, "znver3": 32, "znver2": 32, "znver1": 16,
                   "skylake-avx512": 64, "cascadelake": 64, "cooperlake": 64, "icelake-server": 64,
                   "sapphirerapids": 64, "emeraldrapids": 64, "graniterapids": 64,
                   "haswell": 32, "broadwell": 32, "skylake": 32, "alderlake": 32, "icelake-client": 64}
FMA_LATENCY = 4          # cycles of a dependent fused multiply-add (the clock measurement's assumption)


def sgemm(n=2048, repeats=21):
    """GFLOP/s of ``repeats`` n^3 products after a warm-up: (best, median, worst)."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    a @ a
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ a
        rates.append(2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return max(rates), statistics.median(rates), min(rates)


def clock_ghz(chain=20_000_000, repeats=5):
    """The core clock in GHz from a chain of dependent multiply-adds (FMA_LATENCY cycles each), best of
    ``repeats``; None without Numba."""
    try:
        from numba import njit
    except ImportError:
        return None

    @njit(fastmath=True)
    def fma_chain(n, a, b):
        x = 1.0
        for _ in range(n):
            x = x * a + b                   # each multiply-add waits for the last
        return x
    fma_chain(10, 0.999999, 1e-7)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fma_chain(chain, 0.999999, 1e-7)
        best = min(best, time.perf_counter() - t0)
    return chain * FMA_LATENCY / best / 1e9


def fma_peak():
    """(GFLOP/s, how it was computed) of all CPUs' FMA units at the measured clock, or (None, why not)."""
    try:
        from llvmlite import binding as llvm
        name = llvm.get_host_cpu_name()
    except ImportError:
        return None, "llvmlite not installed"
    per = FLOPS_PER_CYCLE.get(name)
    ghz = clock_ghz()
    if per is None or ghz is None:
        return None, f"CPU {name!r} not in FLOPS_PER_CYCLE" if per is None else "Numba not installed"
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return n * per * ghz, (f"{n} CPUs x {per} float32 FLOP/cycle ({name}) x {ghz:.2f} GHz (a dependent FMA "
                           f"chain, {FMA_LATENCY}-cycle latency assumed)")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.peak", description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--size", type=int, default=2048, help="n of the n^3 products")
    p.add_argument("--json")
    a = p.parse_args(argv)
    from rnnlab.engine._kernels import host
    print(host.describe())
    best, med, worst = sgemm(a.size, a.repeats)
    print(f"sgemm {a.size}^3, all threads, {a.repeats} runs: best {best:.1f}, median {med:.1f}, worst {worst:.1f} GFLOP/s")
    peak, how = fma_peak()
    print(f"FMA peak: {peak:.1f} GFLOP/s = {how}" if peak else f"FMA peak: unknown ({how})")
    if peak:
        print(f"the measured sgemm peak is {100 * best / peak:.0f} % of it")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"machine": host.describe(), "sgemm_gflops": {"best": best, "median": med, "worst": worst},
                       "fma_peak_gflops": peak, "fma_peak_how": how}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
