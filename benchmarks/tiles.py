"""The packed product's register tiles on this host: GFLOP/s of each (rows x vectors) tile of each vector width,
one thread, against OpenBLAS's ``A @ W`` on one thread, at the per-thread shapes of the split path.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.tiles [--json FILE]

``kernels.packed_gemm.TILES`` names the tile each variant uses; this is the measurement behind that table,
to run again on a CPU where the choice may differ. Every product is checked against NumPy before it is timed.
Shapes (M, K, N): M rows of one thread, K = I + H + 1 and N = 4H for an LSTM's forward product, and the
backward's transpose (K = 4H, N = I + H).
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time

import numpy as np
from numba import njit
from threadpoolctl import threadpool_limits

from rnnlab.engine._kernels import host
from rnnlab.engine._kernels.packed_gemm import TILES, _TOKEN, _make_ukr

CANDIDATES = {"avx512": [(12, 2), (8, 2), (8, 3), (6, 4), (4, 3)], "avx2": [(6, 2), (4, 3), (3, 4), (8, 1)],
              "sse": [(6, 2), (4, 3)]}
SHAPES = [(64, 641, 2048), (64, 2048, 640), (32, 321, 1024), (16, 161, 512), (8, 41, 128)]


@functools.lru_cache(maxsize=None)
def driver(mr, nv):
    """C (M, NP*NR) = A (M, K) @ the panels P (NP, K, NR): whole tiles of mr rows, then one row at a time."""
    tile, row = _make_ukr(mr, nv), _make_ukr(1, nv)

    @njit(nogil=True)
    def run(C, A, P, reps, tok):
        M, K = A.shape
        NP, NR = P.shape[0], P.shape[2]
        isz = A.itemsize
        z = A[0, 0]
        for _ in range(reps):
            for p in range(NP):
                bp = P.ctypes.data + isz * p * K * NR
                i = 0
                while i + mr <= M:
                    tile(K, A.ctypes.data + isz * i * K, K, bp, NR, C.ctypes.data + isz * (i * C.shape[1] + p * NR),
                         C.shape[1], 0, z, tok)
                    i += mr
                while i < M:
                    row(K, A.ctypes.data + isz * i * K, K, bp, NR, C.ctypes.data + isz * (i * C.shape[1] + p * NR),
                        C.shape[1], 0, z, tok)
                    i += 1
    return run


def best_time(f, rounds=5):
    f()
    ts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def measure(M, K, N, variant, mr, nv, reps):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((M, K)).astype(np.float32)
    W = rng.standard_normal((K, N)).astype(np.float32)
    nr = nv * host.VARIANTS[variant] // 32                  # float32 columns per panel
    NP = -(-N // nr)
    Wp = np.zeros((K, NP * nr), np.float32)
    Wp[:, :N] = W
    P = np.ascontiguousarray(Wp.reshape(K, NP, nr).transpose(1, 0, 2))     # (NP, K, NR)
    C = np.zeros((M, NP * nr), np.float32)
    tok = np.empty(0, _TOKEN[variant])
    run = driver(mr, nv)
    run(C, A, P, 1, tok)
    np.testing.assert_allclose(C[:, :N], A @ W, rtol=1e-4, atol=1e-3 * np.sqrt(K))
    return 2 * M * K * N * reps / best_time(lambda: run(C, A, P, reps, tok)) / 1e9


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", nargs="+", default=[",".join(map(str, s)) for s in SHAPES], help="M,K,N ...")
    ap.add_argument("--variants", default=",".join(CANDIDATES), help="avx512,avx2,sse")
    ap.add_argument("--reps", type=int, default=20, help="products per timed call")
    ap.add_argument("--json", help="write every number to this file")
    args = ap.parse_args(argv)
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes]
    variants = args.variants.split(",")
    for v in variants:
        if v not in CANDIDATES:
            ap.error(f"--variants: expected names from {sorted(CANDIDATES)}, got {v!r}")
    print(host.describe())
    print("GFLOP/s on one thread; * marks the tile rnnlab uses (kernels.packed_gemm.TILES)")
    rows = []
    for M, K, N in shapes:
        with threadpool_limits(1):
            A = np.ones((M, K), np.float32)
            W = np.ones((K, N), np.float32)
            blas = 2 * M * K * N * args.reps / best_time(lambda: [A @ W for _ in range(args.reps)]) / 1e9
        row = {"shape": [M, K, N], "openblas_1thread": blas}
        for v in variants:
            for mr, nv in CANDIDATES[v]:
                row[f"{v} {mr}x{nv}"] = measure(M, K, N, v, mr, nv, args.reps)
        rows.append(row)
        cells = [f"{k}{'*' if tuple(map(int, k.split()[1].split('x'))) == TILES[k.split()[0]] else ''} {x:.1f}"
                 for k, x in row.items() if k not in ("shape", "openblas_1thread")]
        print(f"M={M} K={K} N={N}: " + ", ".join(cells) + f"; OpenBLAS {blas:.1f}", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"machine": host.describe(), "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
