"""Streaming from Python: ``rnnlab.Stream.feed`` one step per call against the same steps inside one call.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.stream [--hidden 64 256] [--json FILE]

float32, one stream (B = 1), I = 64, T = 200 steps; for each cell and H: the stream's path (the units split with
its threads kept between calls, or one thread), µs per step of one inference call over the 200 steps
(``rnnlab.no_grad``), µs per step fed one at a time, their ratio and the difference (the cost of a call from
Python), and µs per step fed ``--chunk`` steps per call; best of ``--repeats`` blocks (a short call is at the
mercy of the other processes).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import rnnlab


def best_us_per_step(fn, steps, repeats):
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 1e6 * best / steps


def measure(cell, H, I=64, T=200, repeats=15, chunk=8):
    layer = {"lstm": rnnlab.LSTM, "gru": rnnlab.GRU, "rnn": rnnlab.RNN}[cell](I, H, seed=0)
    x = np.random.default_rng(0).standard_normal((T, 1, I)).astype(np.float32)
    stream = rnnlab.Stream(layer, batch_size=1)

    def whole():
        with rnnlab.no_grad():
            layer(x)

    def steps():
        stream.reset()
        for t in range(T):
            stream.feed(x[t])
    def chunks():
        stream.reset()
        for t in range(0, T, chunk):
            stream.feed(x[t:t + chunk])
    one = best_us_per_step(whole, T, repeats)
    each = best_us_per_step(steps, T, repeats)
    per_chunk = best_us_per_step(chunks, T, repeats)
    path = type(stream._steps).__name__ if stream._steps is not None else "layer forward"
    return {"cell": cell, "H": H, "path": {"UnitsStream": "units, threads kept", "_Chain": "one thread"}.get(path, path),
            "one_call_us_per_step": one, "feed_us_per_step": each, "ratio": each / one,
            "per_call_us": each - one, "chunk": chunk, "chunk_us_per_step": per_chunk,
            "chunk_ratio": per_chunk / one}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stream", description=__doc__.split("\n")[0])
    p.add_argument("--cells", default="lstm,gru,rnn")
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 256])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--chunk", type=int, default=8, help="steps per call of the chunked feed")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--json", help="also write the numbers to this file")
    a = p.parse_args(argv)
    if min(a.hidden + [a.steps, a.repeats, a.chunk]) < 1:
        p.error("--hidden, --steps, --repeats and --chunk: expected positive integers")
    from rnnlab.engine._kernels import host
    print(host.describe())
    rows = [measure(c, H, T=a.steps, repeats=a.repeats, chunk=a.chunk) for c in a.cells.split(",") for H in a.hidden]
    print(f"one stream, I=64, {a.steps} steps, float32: µs per step")
    print(f"| cell | H | stream's path | one call | a step per call | ratio | per call from Python | {a.chunk} steps per call "
          "| ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['cell'].upper()} | {r['H']} | {r['path']} | {r['one_call_us_per_step']:.2f} | {r['feed_us_per_step']:.2f} | "
              f"{r['ratio']:.1f} | {r['per_call_us']:.1f} | {r['chunk_us_per_step']:.2f} | {r['chunk_ratio']:.1f} |")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump({"machine": host.describe(), "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
