"""One writer per run folder (the lock), and data-parallel training over MPI with ``mpiexec -n 2`` on this
machine: equal weights to one process (float64, last-step and per-step targets, TBPTT streams), a rank killed
mid-run (the job ends within a bounded time, the dead pid maps to its rank, the last checkpoint loads, resume
gives the uninterrupted weights), and the refusals."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rnnlab.cli import main as cli
from rnnlab.scale import distributed
from rnnlab.scale import netns
from rnnlab.errors import CheckpointError, ConfigError
from rnnlab.training._runlock import RunLock, RunLockedError, holder
from rnnlab.training.trainer import load_model, resume, train

MPIEXEC = shutil.which("mpiexec")
needs_mpi = pytest.mark.skipif(MPIEXEC is None or not __import__("importlib").util.find_spec("mpi4py"),
                               reason="needs the mpi extra (mpi4py and an MPI with mpiexec)")
RNNLAB = [sys.executable, "-m", "rnnlab"]


def _weights(run):
    model, _ = load_model(run)
    return model.named_parameters()


def _max_diff(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    return max(float(np.abs(wa[k] - wb[k]).max()) for k in wa)


def _env():
    env = dict(os.environ, RNNLAB_NUM_THREADS="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def _launch(args):
    """mpiexec -n 2 rnnlab ARGS, loopback-only (rnnlab.scale.netns) where this machine allows it."""
    cmd = [MPIEXEC, "-n", "2"] + RNNLAB + args
    return netns.command(cmd) if netns.available() else cmd


def _mpi(args, tmp_path, timeout=240, **kw):
    return subprocess.run(_launch(args), cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=timeout,
                          **kw)


# ------------------------------------------------------------------------------ the lock
def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    run = tmp_path / "r"
    with RunLock(run):
        assert holder(run) == os.getpid()
        with pytest.raises(RunLockedError, match=f"being written by process {os.getpid()}"):
            RunLock(run).acquire()
        with pytest.raises(RunLockedError):
            train({"task": "adding", "seq_len": 5, "hidden_size": 4, "steps": 2, "out": str(run), "quiet": True})
    assert holder(run) is None
    train({"task": "adding", "seq_len": 5, "hidden_size": 4, "steps": 2, "out": str(run), "quiet": True})


@pytest.mark.slow
def test_resume_beside_a_running_writer_is_refused_and_a_killed_one_resumes_at_once(tmp_path):
    run = tmp_path / "r"
    args = ["train", "--task", "adding", "--seq-len", "20", "--hidden-size", "16", "--steps", "100000",
            "--checkpoint-every", "20", "--eval-every", "0", "--out", str(run), "--quiet"]
    proc = subprocess.Popen(RNNLAB + args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (run / "checkpoint.safetensors").exists():
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else "slow"
            time.sleep(0.2)
        assert holder(run) == proc.pid
        code = cli.main(["resume", str(run), "--quiet"])
        assert code == 2                                            # refused: the writer is alive
        with pytest.raises(RunLockedError, match=f"process {proc.pid}"):
            resume(run)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert holder(run) is None                                     # the OS released it with the process
    from rnnlab.model.checkpoint import load_checkpoint
    k = load_checkpoint(run / "checkpoint.safetensors")[1]["step"]
    r = resume(run, steps=k + 40)
    assert r.steps_run == 40 and (run / "model.safetensors").exists()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == k + 40   # one writer: no duplicates, in order


# ------------------------------------------------------------------------------ MPI
def test_rows_and_refusals():
    assert [distributed.rows_for(7, 3, r) for r in range(3)] == [slice(0, 3), slice(3, 5), slice(5, 7)]
    with pytest.raises(ConfigError, match="2 ranks need at least 2 rows per batch, got batch_size=1"):
        distributed.check_batch(1, 2)
    with pytest.raises(ConfigError, match="distributed: expected one of"):
        train({"task": "adding", "distributed": "ray"})
    assert distributed.connect("auto") is None and distributed.connect("none") is None


TEXT = ("To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer the slings and "
        "arrows of outrageous fortune, or to take arms against a sea of troubles. ") * 12


@pytest.mark.slow
@needs_mpi
@pytest.mark.parametrize("task", ["adding", "chars", "data"])
def test_two_ranks_give_the_weights_of_one_process(task, tmp_path):
    common = ["--hidden-size", "8", "--steps", "12", "--batch-size", "6", "--dtype", "float64", "--eval-every", "6",
              "--checkpoint-every", "6", "--quiet"]
    if task == "adding":
        common += ["--task", "adding", "--seq-len", "9", "--model", "gru"]
    elif task == "chars":
        (tmp_path / "t.txt").write_text(TEXT)
        common += ["--task", "chars", "--text", str(tmp_path / "t.txt"), "--seq-len", "7", "--val-fraction", "0.2"]
    else:                                                            # ragged sequences: lengths and per-rank masks
        rng = np.random.default_rng(0)
        seqs = [rng.standard_normal((int(n), 2)) for n in rng.integers(2, 9, 40)]
        y = np.array([int(s[:, 0].sum() > 0) for s in seqs])
        x = np.zeros((40, 8, 2))
        for i, s in enumerate(seqs):
            x[i, :len(s)] = s
        np.savez(tmp_path / "d.npz", x=x, y=y, lengths=np.array([len(s) for s in seqs]))
        common += ["--task", "data", "--data", str(tmp_path / "d.npz"), "--model", "lstm"]
    assert cli.main(["train", "--out", str(tmp_path / "one")] + common) == 0
    p = _mpi(["train", "--out", str(tmp_path / "two"), "--distributed", "mpi"] + common, tmp_path)
    assert p.returncode == 0, p.stderr
    assert _max_diff(tmp_path / "one", tmp_path / "two") < 1e-12
    one = (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()
    two = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(one) == len(two)                                      # rank 0 alone logs


@pytest.mark.slow
@needs_mpi
def test_a_killed_rank_ends_the_job_and_resume_gives_the_uninterrupted_weights(tmp_path):
    args = ["--task", "adding", "--seq-len", "30", "--hidden-size", "16", "--steps", "400", "--batch-size", "8",
            "--dtype", "float64", "--eval-every", "0", "--checkpoint-every", "20"]   # distributed auto: detected
    full = _mpi(["train", "--out", str(tmp_path / "full"), "--quiet"] + args, tmp_path)
    assert full.returncode == 0, full.stderr
    out = open(tmp_path / "log.txt", "w")
    proc = subprocess.Popen(_launch(["train", "--out", str(tmp_path / "cut"), "--no-quiet"] + args), cwd=tmp_path,
                            env=_env(), stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while True:
            text = (tmp_path / "log.txt").read_text()
            ck = tmp_path / "cut" / "checkpoint.safetensors"
            if "rank 1=" in text and ck.exists():
                break
            assert proc.poll() is None and time.time() < deadline, text
            time.sleep(0.2)
        pid1 = int(text.split("rank 1=")[1].split()[0].strip(","))
        if netns.available():                                        # nobody else gets in
            from support import process_tree, reachable_from_outside
            bad, seen = reachable_from_outside(process_tree(proc.pid))
            assert seen and not bad, bad
        os.kill(pid1, signal.SIGKILL)
        t0 = time.time()
        rc = proc.wait(timeout=60)                                   # the launcher ends the other rank
        assert time.time() - t0 < 60 and rc != 0
    finally:
        if proc.poll() is None:
            proc.kill()
        out.close()
    log = (tmp_path / "log.txt").read_text()
    assert f"PID {pid1}" in log or str(pid1) in log.split("rank 1=")[-1]    # the dead rank's pid, mapped to rank 1
    load_model(tmp_path / "cut" / "checkpoint.safetensors")          # the last checkpoint loads
    assert holder(tmp_path / "cut") is None
    p = _mpi(["resume", str(tmp_path / "cut"), "--quiet"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert _max_diff(tmp_path / "full", tmp_path / "cut") < 1e-12
    with pytest.raises(CheckpointError, match="written by a run on 2 process"):
        resume(tmp_path / "cut", steps=500)                          # one process cannot continue a 2-rank run
