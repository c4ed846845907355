"""Time rnnlab's layers against torch.nn (training and inference) and onnxruntime (inference) on the CPU.

    python -m benchmarks [--shapes 32,100,32,128 ...] [--cells lstm,gru,rnn] [--repeats 10] [--rounds 3]
                         [--memory] [--compile] [--backend auto]

Per cell and shape (B, T, I, H), float32, default settings of every library: median time of inference
(forward) and of a training step (forward + backward over the sequence), the ratio rnnlab / torch, the
ratio rnnlab / onnxruntime for inference, and at H >= 256 the fraction of the machine's measured sgemm
peak that rnnlab's training step reaches (its FLOPs / peak / time). Each library is timed in its own block
(warm-up, then repeats): alternating single calls makes the libraries' spinning worker threads fight.
``--memory`` adds the peak resident memory of a training step, each library in its own process;
``--compile`` the Numba compile time of a first call and the start of a second process with a warm cache.
``--rounds N`` times every library's blocks N times in turn and keeps each library's best median (other jobs
on a shared machine slow whichever block they hit).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import rnnlab

# the last: RLtools' GRU training shape (B = 32, T = 64, I = 32, H = 64; its published step against PyTorch's
# is quoted in docs/performance.md)
SHAPES = [(32, 100, 32, 128), (64, 100, 64, 256), (16, 500, 16, 64), (128, 50, 128, 512), (1, 1000, 8, 32),
          (32, 64, 32, 64)]
CLS = {"lstm": rnnlab.LSTM, "gru": rnnlab.GRU, "rnn": rnnlab.RNN}
G = {"lstm": 4, "gru": 3, "rnn": 1}


def save_figure(fig, out):
    """out.png and out.svg (``out``: a path without suffix), then the figure closed."""
    import matplotlib.pyplot as plt
    out.parent.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "svg"):
        fig.savefig(out.with_suffix("." + ext), dpi=110)
    plt.close(fig)


def median_time(fn, repeats, warmup=2, budget=20.0):
    for _ in range(warmup):
        fn()
    times = []
    t_end = time.perf_counter() + budget
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() > t_end and len(times) >= 3:
            break
    return statistics.median(times)


def sgemm_peak(n=2048, repeats=7):
    """The machine's sgemm peak in FLOP/s: the best of several 2048^3 products (a peak, so not the median;
    ``benchmarks.peak`` gives the spread)."""
    from benchmarks.peak import sgemm
    return sgemm(n, repeats)[0] * 1e9


def train_flops(cell, B, T, I, H):
    """Multiply-adds x 2 of forward (input and recurrent products) and backward (dx, dW_ih, dh, dW_hh)."""
    return 3 * 2 * T * B * G[cell] * H * (I + H)


def bench_rnnlab(cell, B, T, I, H, repeats, backend="auto"):
    layer = CLS[cell](I, H, seed=0, backend=backend)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    d_out = np.ones((T, B, H), np.float32)

    def fwd():
        with rnnlab.no_grad():                  # as torch.no_grad() for torch's inference below
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


def bench_ort(cell, B, T, I, H, repeats):
    import onnxruntime as ort
    from rnnlab.interop.onnx import export
    layer = CLS[cell](I, H, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.onnx")
        export(layer, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    return median_time(lambda: sess.run(None, {"x": x}), repeats)


def bench_jax(cell, B, T, I, H, repeats):
    """(inference, training step) of a jitted ``lax.scan`` over the cell; the gradient is taken with respect
    to the weights (which the step must use, or XLA folds the whole computation away)."""
    import jax
    import jax.numpy as jnp
    k = 1 / np.sqrt(H)
    rng = np.random.default_rng(0)
    p = tuple(jnp.asarray(rng.uniform(-k, k, shape), jnp.float32)
              for shape in ((G[cell] * H, I), (G[cell] * H, H), (G[cell] * H,)))
    x = jnp.asarray(rng.standard_normal((T, B, I)), jnp.float32)

    def run(params, x):
        Wi, Wh, b = params

        def step(carry, xw_t):
            h, c = carry
            a = xw_t + h @ Wh.T
            if cell == "rnn":
                h = jnp.tanh(a)
            elif cell == "lstm":
                i, f, g, o = jnp.split(a, 4, axis=-1)
                c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
                h = jax.nn.sigmoid(o) * jnp.tanh(c)
            else:                                           # reset after, as torch
                ar, az, an = jnp.split(xw_t, 3, axis=-1)
                hr, hz, hn = jnp.split(h @ Wh.T, 3, axis=-1)
                r, z = jax.nn.sigmoid(ar + hr), jax.nn.sigmoid(az + hz)
                n = jnp.tanh(an + r * hn)
                h = n + z * (h - n)
            return (h, c), h

        h0 = jnp.zeros((B, H), jnp.float32)
        xw = x @ Wi.T + b                                   # the input product outside the loop, as ours
        return jax.lax.scan(step, (h0, h0), xw)[1]

    fwd = jax.jit(run)
    grad = jax.jit(jax.grad(lambda p, x: run(p, x).sum()))
    return (median_time(lambda: fwd(p, x).block_until_ready(), repeats),
            median_time(lambda: jax.block_until_ready(grad(p, x)), repeats))


_MEM = r"""
import sys, numpy as np
lib, cell, B, T, I, H, steps = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:8])
if lib == "torch":
    import torch
    mod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](I, H)
    def step(T, B):
        x = torch.randn(T, B, I, requires_grad=True)
        out, _ = mod(x); out.sum().backward()
else:
    import rnnlab
    layer = {"lstm": rnnlab.LSTM, "gru": rnnlab.GRU, "rnn": rnnlab.RNN}[cell](I, H, seed=0)
    def step(T, B):
        x = np.random.randn(T, B, I).astype(np.float32)
        out, _ = layer(x); layer.backward(np.ones_like(out))
step(2, B)                       # warm-up at a tiny length: loads kernels and libraries in both processes
for _ in range(steps):
    step(T, B)
# VmHWM (peak RSS of this address space): unlike ru_maxrss it is not inherited from the parent across fork+exec
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(int(hwm.split()[1]) / 1024)
"""


def peak_memory(lib, cell, shape):
    """Peak RSS of a process that runs 3 training steps minus that of one that only warms up (T = 2)."""
    def run(steps):
        p = subprocess.run([sys.executable, "-c", _MEM, lib, cell, *map(str, shape), str(steps)],
                           capture_output=True, text=True)
        return float(p.stdout.strip()) if p.returncode == 0 else float("nan")
    return run(3) - run(0)


_COMPILE = r"""
import time, numpy as np
t0 = time.perf_counter()
import rnnlab
layer = rnnlab.LSTM(8, 32, seed=0, backend="numba")
x = np.random.randn(20, 1, 8).astype(np.float32)
out, _ = layer(x); layer.backward(np.ones_like(out))
print(time.perf_counter() - t0)
"""


def compile_times():
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        first = float(subprocess.run([sys.executable, "-c", _COMPILE], env=env, capture_output=True, text=True).stdout)
        second = float(subprocess.run([sys.executable, "-c", _COMPILE], env=env, capture_output=True, text=True).stdout)
    return first, second


def parse_shape(s):
    parts = tuple(int(p) for p in s.split(","))
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"--shapes: expected B,T,I,H, got {s!r}")
    return parts


def _have(mod):
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", type=parse_shape, nargs="+", default=SHAPES, help="B,T,I,H ...")
    p.add_argument("--cells", default="lstm,gru,rnn")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--rounds", type=int, default=1,
                   help="time every library's blocks this many times in turn and keep each one's best median")
    p.add_argument("--backend", default="auto", choices=("auto", "numba", "numpy", "loop", "split"))
    p.add_argument("--memory", action="store_true", help="peak memory of a training step, per library")
    p.add_argument("--compile", action="store_true", help="Numba compile and cached start-up times")
    p.add_argument("--json", help="write every number to this file")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.repeats < 1:
        p.error(f"--rounds and --repeats: expected positive integers, got {args.rounds} and {args.repeats}")
    have = {m: _have(m) for m in ("torch", "onnxruntime", "jax", "numba")}
    import torch
    print(f"rnnlab {rnnlab.__version__} (backend {args.backend}), numpy {np.__version__}, torch {torch.__version__}"
          f"{', onnxruntime ' + __import__('onnxruntime').__version__ if have['onnxruntime'] else ''}"
          f"{', jax ' + __import__('jax').__version__ if have['jax'] else ', jax not installed'}; "
          f"{platform.machine()}, {os.cpu_count()} cpus; float32, medians")
    from rnnlab.engine._kernels import host
    print(host.describe())
    forced = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ]
    if forced:
        print(f"warning: {' and '.join(forced)} set: OpenBLAS runs forced kernels, not the ones it picks for this "
              f"CPU; unset them for users' numbers: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks")
    from benchmarks.peak import fma_peak, sgemm
    best, med, worst = sgemm(repeats=11)
    peak = best * 1e9
    fma, how = fma_peak()
    print(f"sgemm peak (2048^3, numpy/BLAS, all threads, 11 runs): {best:.1f} GFLOP/s (median {med:.1f}, worst "
          f"{worst:.1f}); FMA peak {f'{fma:.1f} GFLOP/s = {how}' if fma else f'unknown ({how})'}")
    from rnnlab.engine.dispatch import choose
    rows = []
    head = (f"{'cell':4s} {'B,T,I,H':>14s} {'be':>5s} | {'inf ms':>8s} {'torch':>8s} {'ratio':>5s} {'ort':>8s} {'r/ort':>5s} | "
            f"{'train ms':>8s} {'torch':>8s} {'ratio':>5s} {'jax':>8s} {'r/jax':>5s} | {'peak%':>5s}")
    print(head)
    for cell in args.cells.split(","):
        for B, T, I, H in args.shapes:
            be = choose(args.backend, cell, {}, B, G[cell] * H, H, None)
            runs = []
            for _ in range(args.rounds):          # each library in its own block, the blocks in rounds
                f_us, t_us = bench_rnnlab(cell, B, T, I, H, args.repeats, args.backend)
                f_th, t_th = bench_torch(cell, B, T, I, H, args.repeats)
                f_ort = bench_ort(cell, B, T, I, H, args.repeats) if have["onnxruntime"] else float("nan")
                f_jax, t_jax = bench_jax(cell, B, T, I, H, args.repeats) if have["jax"] else (float("nan"),) * 2
                runs.append((f_us, t_us, f_th, t_th, f_ort, f_jax, t_jax))
            # the best round's median per library: drifting load from other jobs on a shared machine slows
            # whichever block it hits; the least disturbed block of each library is the comparable number
            f_us, t_us, f_th, t_th, f_ort, f_jax, t_jax = (min(col) for col in zip(*runs))
            frac = train_flops(cell, B, T, I, H) / peak / t_us if H >= 256 else float("nan")
            row = {"cell": cell, "shape": [B, T, I, H], "backend": be, "rnnlab_fwd": f_us, "torch_fwd": f_th,
                   "ort_fwd": f_ort, "jax_fwd": f_jax, "rnnlab_train": t_us, "torch_train": t_th, "jax_train": t_jax,
                   "peak_fraction": frac}
            if args.memory:
                row["rnnlab_peak_mib"] = peak_memory("rnnlab", cell, (B, T, I, H))
                row["torch_peak_mib"] = peak_memory("torch", cell, (B, T, I, H))
            rows.append(row)
            line = (f"{cell:4s} {f'{B},{T},{I},{H}':>14s} {be:>5s} | {f_us * 1e3:8.2f} {f_th * 1e3:8.2f} {f_us / f_th:5.2f} "
                    f"{f_ort * 1e3:8.2f} {f_us / f_ort:5.2f} | {t_us * 1e3:8.2f} {t_th * 1e3:8.2f} {t_us / t_th:5.2f}"
                    f" {t_jax * 1e3:8.2f} {t_us / t_jax:5.2f} | {100 * frac:5.1f}")
            if args.memory:
                line += f" | MiB {row['rnnlab_peak_mib']:.1f} vs torch {row['torch_peak_mib']:.1f}"
            print(line, flush=True)
    print("ratio = rnnlab time / torch time, r/ort = rnnlab / onnxruntime, r/jax = rnnlab / jax (training; below 1: "
          "rnnlab is faster); jax inference is in --json; "
          "peak% = training FLOPs / sgemm peak / time (H >= 256)")
    # the peak is a best case: measured again at the end, the better of the two counts (a run that started
    # while another job was computing would otherwise report fractions above 100 %)
    peak_end = sgemm_peak()
    if peak_end > peak:
        print(f"sgemm peak measured again at the end: {peak_end / 1e9:.1f} GFLOP/s; the JSON's fractions use it")
        peak = peak_end
        for row in rows:
            B, T, I, H = row["shape"]
            row["peak_fraction"] = (train_flops(row["cell"], B, T, I, H) / peak / row["rnnlab_train"]
                                    if H >= 256 else float("nan"))
    out = {"sgemm_peak_flops": peak, "rows": rows, "machine": host.describe()}
    if args.compile and have["numba"]:
        first, second = compile_times()
        out["compile"] = {"first_process_s": first, "cached_second_process_s": second}
        print(f"numba: first process (compile LSTM fwd+bwd, import included) {first:.1f} s; "
              f"second process with the disk cache {second:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0
