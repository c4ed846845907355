"""Serving on a CPU: the cold start of a process, from ``import rnnlab`` to the first prediction of a saved model.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.serve --cold-start [--venv PATH] [--runs 3]

Every measurement is a fresh process. A small model (LSTM by default, I = 8, H = 32, one layer, softmax over 4
classes, float32, untrained weights) is saved once; each process imports rnnlab, loads the model
(``rnnlab.load_model``) and predicts one row of 20 steps (``model.predict``), timing each part, and this script
times the process from its start to the prediction and to its exit. The cases, in fresh processes, in order:

    import only            ``import rnnlab``
    empty cache            a fresh NUMBA_CACHE_DIR: every kernel the prediction needs compiles
    warm cache             the same folder after that process: every kernel loads from it
    warm cache, no SciPy   SciPy hidden from the process, as where it is not installed (Numba imports SciPy's
                           BLAS with its first kernel when SciPy is there; rnnlab does not need it)
    NumPy backend          the model on ``backend="numpy"``: no Numba at all

for each install: "editable" (this checkout's ``src`` on PYTHONPATH, as ``pip install -e .``) and, with
``--venv PATH``, "wheel" (the rnnlab that PATH's python imports, from ``pip install .`` in that venv). Each case
runs ``--runs`` times (each time in a fresh cache folder); the table gives min / median in seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
I, H, K, T = 8, 32, 4, 20

# the process measured: argv = case ("import", "predict", "predict-noscipy", "predict-numpy"), model path
CHILD = r"""
import sys
if sys.argv[1].endswith("noscipy"):
    sys.modules["scipy"] = None             # as where SciPy is not installed: Numba's import of it fails
import time
t0 = time.perf_counter()
import numpy as np
import rnnlab
t1 = time.perf_counter()
out = {"import": t1 - t0, "rnnlab": rnnlab.__file__}
if sys.argv[1] != "import":
    model, _ = rnnlab.load_model(sys.argv[2])
    if sys.argv[1].endswith("numpy"):
        model.rnn.set_backend("numpy")
    t2 = time.perf_counter()
    x = np.random.default_rng(0).standard_normal((%d, 1, %d)).astype(np.float32)
    y, _ = model.predict(x)
    t3 = time.perf_counter()
    out.update(load=t2 - t1, predict=t3 - t2, total=t3 - t0, at=time.time())
    if "rnnlab.engine._kernels.loop" in sys.modules:                 # the backward loop: never called, never compiled
        out["backward_signatures"] = sum(len(fn.signatures) for name, fn in
                                         sys.modules["rnnlab.engine._kernels.loop"].compiled_loops()
                                         if name == "_bwd_loop")
        out["cache"] = rnnlab.engine._kernels.cache_dir()
print("RESULT " + __import__("json").dumps(out))
""" % (T, I)


def save_model(path, cell):
    """A small saved model, as ``rnnlab train --out`` leaves one (``load_model`` reads either)."""
    import rnnlab
    from rnnlab.model.checkpoint import save_checkpoint
    m = rnnlab.SequenceModel(rnnlab.ModelConfig(input_size=I, output_size=K, cell=cell, hidden_size=H,
                                                target="last"), seed=0)
    save_checkpoint(path, dict(m.named_parameters()), {"kind": "model", "model_config": m.config.to_dict()})


# the rows, in the order they run, and the child's case for each
CASES = {"import only": "import", "empty cache": "predict", "warm cache": "predict",
         "warm cache, no SciPy": "predict-noscipy", "NumPy backend": "predict-numpy"}


def run_child(python, env, case, model):
    """-> the child's numbers, "start": from the process's start to its prediction (the clock of the machine,
    shared), and "wall": from its start to its exit (seconds)."""
    start, t0 = time.time(), time.perf_counter()
    p = subprocess.run([python, "-c", CHILD, case, model], env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"benchmarks.serve: the {case} process failed ({python}):\n{p.stderr[-2000:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    if "at" in out:
        out["start"] = out.pop("at") - start
    return {**out, "wall": wall}


def install_env(install, cache):
    """The environment of a child: the install's path, and Numba's cache folder."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if install == "editable":
        env["PYTHONPATH"] = os.path.join(ROOT, "src") + (os.pathsep + os.environ["PYTHONPATH"]
                                                         if os.environ.get("PYTHONPATH") else "")
    env["NUMBA_CACHE_DIR"] = cache
    return env


def cold_start(installs, model, runs, scratch):
    """-> rows {install, case, runs: [child numbers]}. The installs take turns in each run, so that a drift of
    the machine's load over the minutes does not land on one of them."""
    got = {(install, c): [] for install, _ in installs for c in CASES}
    for r in range(runs):
        for install, python in installs:
            cache = os.path.join(scratch, f"{install}-{r}")
            env = install_env(install, cache)
            for case, child in CASES.items():           # in this order: "empty" fills the folder "warm" reads
                got[install, case].append(run_child(python, env, child, model))
            shutil.rmtree(cache, ignore_errors=True)
    return [{"install": i, "case": c, "runs": v} for (i, c), v in got.items()]


def _cell(values):
    return "-" if not values else f"{min(values):.2f} / {statistics.median(values):.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.split("\n")[0])
    p.add_argument("--cold-start", action="store_true", help="import to first prediction, fresh processes")
    p.add_argument("--venv", help="a venv with rnnlab installed from a wheel (pip install .): measured too")
    p.add_argument("--cell", default="lstm", choices=("lstm", "gru", "rnn"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", help="also write the numbers to this file")
    a = p.parse_args(argv)
    if not a.cold_start:
        p.error("choose a measurement: --cold-start")
    if a.runs < 1:
        p.error(f"--runs: expected a positive integer, got {a.runs}")
    installs = [("editable", sys.executable)]
    if a.venv:
        python = os.path.join(a.venv, "bin", "python")
        if not os.path.isfile(python):
            p.error(f"--venv: no bin/python in {a.venv}")
        installs.append(("wheel", python))
    from rnnlab.engine._kernels import host
    print(host.describe())
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("PYTHONDONTWRITEBYTECODE is set: an editable checkout without __pycache__ compiles its modules at "
              "every import")
    scratch = tempfile.mkdtemp(prefix="rnnlab-serve-")
    try:
        model = os.path.join(scratch, "model.safetensors")
        save_model(model, a.cell)
        rows = cold_start(installs, model, a.runs, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{a.cell.upper()} I={I} H={H} K={K}, one row of {T} steps, float32; seconds, min / median of {a.runs} "
          f"fresh processes")
    print("| install | case | import rnnlab | load model | first predict | import to prediction | "
          "process start to prediction | process start to exit |")
    print("|---|---|---|---|---|---|---|---|")
    keys = ("import", "load", "predict", "total", "start", "wall")
    for r in rows:
        col = {k: [x[k] for x in r["runs"] if k in x] for k in keys}
        print(f"| {r['install']} | {r['case']} | " + " | ".join(_cell(col[k]) for k in keys) + " |")
    for install, _ in installs:
        ran = [x for r in rows if r["install"] == install for x in r["runs"]]
        bwd = sorted({x["backward_signatures"] for x in ran if "backward_signatures" in x})
        print(f"{install}: rnnlab from {os.path.dirname(ran[0]['rnnlab'])}; backward loops compiled or loaded by "
              f"a prediction: {bwd}")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump({"machine": host.describe(), "cell": a.cell, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
