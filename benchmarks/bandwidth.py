"""How fast the one-row product streams its weights, against what the caches give a Numba loop.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.bandwidth [--json FILE]

At one batch row a step's product reads every weight once and does one multiply-add with it, so its time is
the time to stream the weights from wherever they sit (the second-level cache, the third, memory). Part 1:
GB/s of reading a float32 array of S bytes per thread, S = 64 KB .. 64 MB, on one thread and on two at once
(each its own array; GB/s of both together), two ways: the one-row micro-kernel of ``kernels.packed_gemm``
(8 vectors of accumulators, ``_r8``) over a contiguous (S / 512 B, 8 vectors) matrix, and a plain sum that
LLVM vectorises itself. Part 2: per cell and H (B = 1, T = 200, I = 64, float32), the weight bytes a step
streams (W_hh: x W_ih^T is a matrix product over many steps outside the recurrence) divided by the time of a
step: of the whole inference call on ``backend="units"`` (two threads) and "loop" (one), and of the product
alone on one thread's share of the units split (``dots_acc`` over its (G*H/n, H) rows of W_hh, the two threads
at once), so the distance from the kernel to the cache is read off one table.
Best of ``--repeats`` timings each (other jobs on a shared machine slow whichever timing they hit).
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import numpy as np
from numba import njit

import rnnlab
from rnnlab.engine._kernels import host
from rnnlab.engine._kernels.gates import FAST
from rnnlab.engine._kernels.packed_gemm import dots_acc, token, vecmat_acc

SIZES_KB = [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
CLS = {"lstm": rnnlab.LSTM, "gru": rnnlab.GRU, "rnn": rnnlab.RNN}
G = {"lstm": 4, "gru": 3, "rnn": 1}


@njit(nogil=True, fastmath=FAST)
def _fma8(W, v, out, reps, tok):
    """reps passes of out[0] += v[0] @ W, W (K, 8 vectors) contiguous: one stream, 8 vector accumulators."""
    for _ in range(reps):
        vecmat_acc(out, 0, v, 0, W, tok)


@njit(nogil=True, fastmath=FAST)
def _sum(a, reps):
    """reps passes of sum(a), vectorised by LLVM (reassociation allowed)."""
    s = a[0] * 0
    for _ in range(reps):
        for i in range(a.size):
            s += a[i]
    return s


@njit(nogil=True, fastmath=FAST)
def _product(W, v, out, reps, tok):
    """reps one-row products out[0] = W @ v[0], W (N, K) a units thread's rows of W_hh, read in place."""
    for _ in range(reps):
        out[0, :] = 0.0
        dots_acc(out, 0, 0, W, 0, W.shape[0], v, 0, tok)


def _threads(fns):
    """Run the fns at once, one thread each; -> the wall time from a common start to the last one's end."""
    go = threading.Barrier(len(fns) + 1)
    ths = [threading.Thread(target=lambda f=f: (go.wait(), f())) for f in fns]
    for th in ths:
        th.start()
    go.wait()
    t0 = time.perf_counter()
    for th in ths:
        th.join()
    return time.perf_counter() - t0


def best(make, nthreads, repeats):
    """Best time of ``repeats`` runs of make(i)'s function on each of nthreads threads at once."""
    fns = [make(i) for i in range(nthreads)]
    for f in fns:
        f()                                     # compiled, and the arrays in cache
    return min(_threads(fns) if nthreads > 1 else _one(fns[0]) for _ in range(repeats))


def _one(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def stream_table(repeats, sizes_kb):
    tok = token()
    cols = 8 * host.VARIANTS[host.variant()] // 32            # 8 vectors of float32
    rows = []
    for kb in sizes_kb:
        nbytes = kb * 1024
        reps = max(1, (64 << 20) // nbytes)    # about 64 MB read per timing per thread
        row = {"kb": kb}
        for n in (1, 2):
            Ws = [np.random.default_rng(i).standard_normal((nbytes // 4 // cols, cols)).astype(np.float32)
                  for i in range(n)]
            v = np.ones((1, Ws[0].shape[0]), np.float32)
            outs = [np.zeros((1, cols), np.float32) for _ in range(n)]
            t = best(lambda i: (lambda: _fma8(Ws[i], v, outs[i], reps, tok)), n, repeats)
            row[f"fma8_{n}"] = n * reps * nbytes / t / 1e9
            flat = [W.reshape(-1) for W in Ws]
            t = best(lambda i: (lambda: _sum(flat[i], reps)), n, repeats)
            row[f"sum_{n}"] = n * reps * nbytes / t / 1e9
        rows.append(row)
        print(f"| {kb:>6d} | {row['fma8_1']:6.1f} | {row['fma8_2']:6.1f} | {row['sum_1']:6.1f} | {row['sum_2']:6.1f} |",
              flush=True)
    return rows


def step_bytes(cell, H):
    """Weight bytes one step streams: W_hh, float32 (x W_ih^T is computed for blocks of steps, or all, by a
    matrix product outside the recurrence)."""
    return 4 * G[cell] * H * H


def layer_table(cells, hidden, repeats, T=200, I=64):
    from rnnlab.engine._kernels import units
    tok = token()
    rows = []
    for cell in cells:
        for H in hidden:
            x = np.random.default_rng(0).standard_normal((T, 1, I)).astype(np.float32)
            nbytes = step_bytes(cell, H)
            row = {"cell": cell, "H": H, "step_kb": nbytes / 1024}
            for be in ("units", "loop"):
                layer = CLS[cell](I, H, seed=0, backend=be)

                def call():
                    with rnnlab.no_grad():
                        layer(x)
                t = best(lambda i: call, 1, repeats)
                row[f"{be}_us"] = 1e6 * t / T
                row[f"{be}_gbs"] = nbytes * T / t / 1e9
            n = units.threads_for(H)
            K, N = H, G[cell] * H // n
            Ws = [np.random.default_rng(i).standard_normal((N, K)).astype(np.float32) for i in range(n)]
            v = np.ones((1, K), np.float32)
            outs = [np.zeros((1, N), np.float32) for _ in range(n)]
            t = best(lambda i: (lambda: _product(Ws[i], v, outs[i], T, tok)), n, repeats)
            row["product_us"] = 1e6 * t / T
            row["product_gbs"] = n * K * N * 4 * T / t / 1e9
            rows.append(row)
            print(f"| {cell.upper()} | {H} | {nbytes / 1024 / n:.0f} | {row['units_us']:.2f} | {row['units_gbs']:.1f} | "
                  f"{row['loop_us']:.2f} | {row['loop_gbs']:.1f} | {row['product_us']:.2f} | {row['product_gbs']:.1f} |",
                  flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bandwidth", description=__doc__.split("\n")[0])
    p.add_argument("--cells", default="lstm,gru")
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    p.add_argument("--sizes", type=int, nargs="+", default=SIZES_KB, help="KB per thread")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", help="also write the numbers to this file")
    a = p.parse_args(argv)
    print(host.describe())
    print(f"reading S bytes per thread, GB/s (all threads together), best of {a.repeats}")
    print("| S KB | 8-vector FMA, 1 thread | 2 threads | LLVM sum, 1 thread | 2 threads |")
    print("|---|---|---|---|---|")
    stream = stream_table(a.repeats, a.sizes)
    print(f"\none row, I = 64, T = 200, float32: µs per step and weight GB/s, best of {a.repeats}")
    print("| cell | H | share KB per thread | units µs | units GB/s | loop µs | loop GB/s | product alone µs | GB/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    layers = layer_table(a.cells.split(","), a.hidden, a.repeats)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump({"machine": host.describe(), "stream": stream, "layers": layers}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
