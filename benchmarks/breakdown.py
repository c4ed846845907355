"""Where a small step's time goes: a layer's training step and inference call taken apart.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.breakdown [--shapes 32,100,32,128 ...]
        [--cells lstm,gru] [--repeats 30] [--json FILE]

Per cell and shape (B, T, I, H), float32, the backend ``auto`` picks; µs per call, best of ``--repeats``:

    call            the layer's forward (training: with its caches) or backward, from Python
    loop            the compiled time loop alone (``_kernels.loop.time_fwd``/``time_bwd``) on the threads the call
                    uses, handed out as the call hands it (``RowSplit.run``)
    loop, 1 block   the same loop over the first thread's block of rows on this thread alone: loop minus this
                    is the cost of handing work to the second thread and waiting for it
    product         the step's recurrent product alone over the same steps and rows (the packed product the
                    loop calls, in a compiled loop of its own)
    rest of loop    loop, 1 block minus product: the cell's row kernel (gates), the state copies, the cache writes
    products after  backward: dW_hh, dW_ih and dx, the BLAS products over all steps after the loop
    Python          call minus loop (minus products after): the setup around the loop (arrays, packing the
                    weights, the biases, the checks)

The loop's arguments are the ones the layer's own call builds (captured from it), so each part is timed on the
arrays the call really uses. The FLOP count of each product is beside its time, at the machine's sgemm peak.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from numba import njit

import rnnlab
from benchmarks.bench_layers import CLS, parse_shape, sgemm_peak
from rnnlab.engine._kernels import host, loop
from rnnlab.engine._kernels.packed_gemm import pgemm, tgemm_acc

SHAPES = [(32, 100, 32, 128), (16, 500, 16, 64), (32, 64, 32, 64)]


@njit(cache=False, nogil=True)
def _products(C, V, W, N, T, r0, r1, acc, tile, tok):
    """T packed products C[r0:r1] = V[r0:r1] @ W, as the loop runs them per step."""
    for _ in range(T):
        pgemm(C[r0:r1], V[r0:r1], W, N, acc, tile, tok)


@njit(cache=False, nogil=True)
def _wgrad_products(dWi, dWh, DX, x2, Hs, dx2, Pih, gb, T, B, r0, r1, tile, tok):
    """The weight-gradient products the loop runs per step when it accumulates them (``loop.wgrad_in_loop``):
    per group of rows in [r0, r1) (group g: rows gb[g] .. gb[g+1]), and dx for the block."""
    n1 = dWh.shape[1]
    for t in range(T):
        for g in range(dWi.shape[0]):
            if gb[g] < r0 or gb[g] >= r1:
                continue
            a0, a1 = t * B + gb[g], t * B + gb[g + 1]
            tgemm_acc(dWi[g], DX[a0:a1], x2[a0:a1], tok)
            tgemm_acc(dWh[g, :n1], DX[a0:a1, :n1], Hs[a0:a1], tok)
        pgemm(dx2[t * B + r0:t * B + r1], DX[t * B + r0:t * B + r1], Pih, dx2.shape[1], False, tile, tok)


def best_us(fn, repeats, setup=None):
    """The best time of ``fn()`` in µs, ``setup()`` (untimed) before each call."""
    best = float("inf")
    for i in range(repeats + 1):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        if i:                                   # the first call warms up
            best = min(best, time.perf_counter() - t0)
    return 1e6 * best


class _Capture:
    """Replaces ``loop.time_fwd``/``time_bwd`` for one call: records (r0, r1, args) of every block."""

    def __init__(self, name):
        self.name, self.calls = name, []
        self.real = getattr(loop, name)

    def __enter__(self):
        def spy(r0, r1, *args):
            self.calls.append((r0, r1, args))
            return self.real(r0, r1, *args)
        setattr(loop, self.name, spy)
        return self

    def __exit__(self, *exc):
        setattr(loop, self.name, self.real)


def _loop_parts(real, calls, B, rows, repeats):
    """(loop on its threads, loop over the first block alone) in µs, from the captured blocks (split as the
    call split them)."""
    args = calls[0][2]
    first = min(calls, key=lambda c: c[0])
    bounds = sorted(c[0] for c in calls) + [max(c[1] for c in calls)]
    both = (lambda: rows.run(real, B, args, bounds=bounds)) if len(calls) > 1 else (lambda: real(0, B, *args))
    return best_us(both, repeats), best_us(lambda: real(first[0], first[1], *args), repeats), first


def measure(cell, B, T, I, H, repeats):
    layer = CLS[cell](I, H, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    d_out = np.ones((T, B, H), np.float32)
    dt, tok = np.float32, loop.token()
    row = {"cell": cell, "shape": [B, T, I, H]}
    for phase in ("inference", "train"):
        if phase == "inference":
            def call():
                with rnnlab.no_grad():
                    layer(x)
        else:
            call = lambda: layer(x)                     # noqa: E731  the forward that keeps its caches
        call()
        with _Capture("time_fwd") as cap:
            call()
        rows = layer.row_split if len(cap.calls) > 1 else None
        r = row[phase] = {"threads": len(cap.calls), "call": best_us(call, repeats)}
        r["loop"], r["loop_1block"], (r0, r1, args) = _loop_parts(cap.real, cap.calls, B, rows, repeats)
        plan, xx, w, st, io = args[:5]
        Pih, W1 = w[0], w[1]
        if W1.ndim == 3:                                # packed: the product the loop calls per step
            V = st[3] if st[3].shape[1] else st[1]      # [x | h | 1] (fused) or the operand h
            A = io[1]
            tile = loop.tile_for(A.dtype, tok)
            N = A.shape[1] if st[3].shape[1] else W1.shape[0] * W1.shape[2]
            N = min(N, A.shape[1])
            r["product"] = best_us(lambda: _products(A, V, W1, N, T, r0, r1, False, tile, tok), repeats)
            r["product_flops"] = 2 * T * (r1 - r0) * V.shape[1] * N
    # backward
    layer(x)
    layer.backward(d_out)
    with _Capture("time_bwd") as cap:
        layer(x)
        layer.backward(d_out)

    def train_step():
        layer(x)
        layer.backward(d_out)
    rows = layer.row_split if len(cap.calls) > 1 else None
    # backward() drops the caches: a fresh forward, untimed, before each timed backward
    r = row["backward"] = {"threads": len(cap.calls),
                           "call": best_us(lambda: layer.backward(d_out), repeats, setup=lambda: layer(x))}
    row["train_step"] = best_us(train_step, repeats)
    r["loop"], r["loop_1block"], (r0, r1, args) = _loop_parts(cap.real, cap.calls, B, rows, repeats)
    plan, d, w, gst, io = args[:5]
    r["wgrad_in_loop"] = in_loop = args[7][3].shape[0] > 0
    W1 = w[0]
    if W1.ndim == 3:
        P, DHW = gst[3], io[1]
        tile = loop.tile_for(io[0].dtype, tok)
        H_ = P.shape[1]
        r["product"] = best_us(lambda: _products(P, DHW, W1, H_, T, r0, r1, False, tile, tok), repeats)
        r["product_flops"] = 2 * T * (r1 - r0) * W1.shape[1] * H_
    W_ih, W_hh = layer.layer_params(0, 0)[:2]
    GH = W_hh.shape[0]
    DX = np.random.default_rng(1).standard_normal((T * B, GH)).astype(dt)
    Hs = np.random.default_rng(2).standard_normal((T * B, H)).astype(dt)
    x2 = x.reshape(T * B, I)
    mm = loop.pmatmul if rows is not None else np.matmul
    r["products_after_flops"] = 2 * T * B * GH * (H + 2 * I)
    if in_loop:                                         # the loop computes them, a step's rows at a time
        x2w, dx2, Pih, dWi, dWh, _, gb = args[7]
        DXa, Hs2 = io[0], args[5][0]
        r["wgrad"] = best_us(lambda: _wgrad_products(dWi, dWh, DXa, x2w, Hs2, dx2, Pih, gb, T, B, r0, r1, tile,
                                                     tok), repeats)
        r["wgrad_flops"] = r["products_after_flops"] * (r1 - r0) // B
    else:
        r["products_after"] = best_us(lambda: (mm(DX.T, Hs), mm(DX.T, x2), mm(DX, W_ih)), repeats)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", type=parse_shape, nargs="+", default=SHAPES, help="B,T,I,H ...")
    p.add_argument("--cells", default="lstm,gru,rnn")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--json")
    a = p.parse_args(argv)
    peak = sgemm_peak()
    print(host.describe())
    print(f"sgemm peak (2048^3, all threads): {peak / 1e9:.1f} GFLOP/s; µs per call, best of {a.repeats}")
    rows = []
    for cell in a.cells.split(","):
        for shape in a.shapes:
            row = measure(cell, *shape, a.repeats)
            rows.append(row)
            print(f"{cell} {','.join(map(str, shape))}: training step {row['train_step']:.0f} µs")
            for phase in ("inference", "train", "backward"):
                r = row[phase]
                parts = [f"call {r['call']:.0f}", f"loop {r['loop']:.0f} ({r['threads']} thr)",
                         f"1 block {r['loop_1block']:.0f}"]
                if "product" in r:
                    frac = r["product_flops"] * r["threads"] / (r["product"] * 1e-6) / peak
                    parts.append(f"product {r['product']:.0f} ({100 * frac:.0f} % of peak)")
                    rest = r["loop_1block"] - r["product"]
                    if "wgrad" in r:
                        frac = r["wgrad_flops"] * r["threads"] / (r["wgrad"] * 1e-6) / peak
                        parts.append(f"weight gradients in the loop {r['wgrad']:.0f} ({100 * frac:.0f} %)")
                        rest -= r["wgrad"]
                    parts.append(f"rest of loop {rest:.0f}")
                after = r.get("products_after", 0.0)
                if after:
                    parts.append(f"products after {after:.0f} "
                                 f"({100 * r['products_after_flops'] / (after * 1e-6) / peak:.0f} %)")
                parts.append(f"Python {r['call'] - r['loop'] - after:.0f}")
                print(f"  {phase:9s} " + ", ".join(parts))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": host.describe(), "sgemm_peak_flops": peak, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
