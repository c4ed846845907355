"""Numba's compile time: the first LSTM forward and backward in a fresh process, from an empty cache.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.compile [--runs 3] [--src DIR ...]
                                                                               [--shapes one-row training]

Each run is two fresh processes sharing a fresh NUMBA_CACHE_DIR: the first imports rnnlab and runs one forward
and one backward (every kernel they need compiles), the second does the same from the cache. The shapes
(T, B, I, H), float32:

    one-row    (20, 1, 8, 32), backend "numba": a short one-row call (the snippet of ``python -m benchmarks
               --compile``)
    long-row   (200, 1, 8, 32): a long one-row call (its own one-row products)
    training   (100, 32, 32, 128), backend "auto": a training step's shape (the packed products on two threads,
               the weight gradients inside the backward loop)

``--src`` names the ``src`` folders of checkouts to compare (default: this one); their runs alternate, so that
the machine's drift falls on every side alike. Prints seconds per run, first process / second process.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHAPES = {"one-row": ((20, 1, 8, 32), "numba"), "long-row": ((200, 1, 8, 32), "auto"),
          "training": ((100, 32, 32, 128), "auto")}

CHILD = r"""
import sys, time
t0 = time.perf_counter()
import numpy as np
import rnnlab
T, B, I, H = map(int, sys.argv[1:5])
layer = rnnlab.LSTM(I, H, seed=0, backend=sys.argv[5])
x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
out, _ = layer(x)
layer.backward(np.ones_like(out))
print(time.perf_counter() - t0)
"""


def cold(src, shape, backend):
    """(first process, second process) seconds for one shape with the rnnlab of ``src``, a fresh cache."""
    src = os.path.abspath(src)                              # the children run in another folder
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": src}
        times = []
        for _ in range(2):
            p = subprocess.run([sys.executable, "-c", CHILD, *map(str, shape), backend], env=env,
                               capture_output=True, text=True, cwd=tempfile.gettempdir())
            if p.returncode != 0:
                raise SystemExit(f"{src}: the process failed:\n{p.stderr[-2000:]}")
            times.append(float(p.stdout))
    return tuple(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--src", nargs="+", default=[os.path.join(ROOT, "src")],
                   help="src folders of the checkouts to compare")
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    args = p.parse_args(argv)
    args.src = [os.path.abspath(src) for src in args.src]   # the children run in another folder
    if args.runs < 1:
        p.error(f"--runs: expected a positive integer, got {args.runs}")
    for src in args.src:
        if not os.path.isdir(os.path.join(src, "rnnlab")):
            p.error(f"--src: expected a folder holding the rnnlab package, got {src!r}")
    from rnnlab.engine._kernels import host
    print(host.describe())
    for name in args.shapes:
        shape, backend = SHAPES[name]
        for run in range(args.runs):
            for src in args.src:
                first, second = cold(src, shape, backend)
                print(f"{name} {shape} run {run + 1} {src}: first process {first:.2f} s, second {second:.2f} s",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
