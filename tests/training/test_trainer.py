"""The training path end to end: reproducibility, kill-and-resume, TBPTT, guards, the CLI on every task."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rnnlab.training import trainer as T
from rnnlab.model.checkpoint import load_checkpoint
from rnnlab.cli.main import main
from rnnlab.errors import NonFiniteError
from rnnlab.model.sequence_model import ModelConfig, SequenceModel

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 40


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "text.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


def _weights(path):
    tensors, _ = load_checkpoint(path)
    return tensors


def test_same_config_twice_is_bit_identical():
    cfg = dict(task="adding", seq_len=12, steps=15, hidden_size=8, num_layers=2, dropout=0.3, batch_size=4,
               eval_every=5, seed=3)
    a, b = T.train(cfg), T.train(cfg)
    for k, v in a.model.state_dict().items():
        assert v.tobytes() == b.model.state_dict()[k].tobytes(), k
    assert a.records == b.records
    c = T.train({**cfg, "seed": 4})
    assert not np.array_equal(c.model.state_dict()["head.weight"], a.model.state_dict()["head.weight"])


def _run_cli(args, **kw):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen([sys.executable, "-m", "rnnlab", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.parametrize("task_args", [
    ["--task", "chars", "--seq-len", "16", "--batch-size", "4", "--dropout", "0.2", "--num-layers", "2"],
    ["--task", "adding", "--seq-len", "20", "--batch-size", "8", "--model", "gru", "--optimizer", "sgd",
     "--momentum", "0.9", "--schedule", "cosine"],
], ids=["chars-stateful-dropout", "adding-gru-sgd"])
@pytest.mark.slow
def test_sigkill_and_resume_equals_uninterrupted(tmp_path, text_file, task_args, outcome):
    text = ["--text", str(text_file)] if "chars" in task_args else []
    common = task_args + text + ["--hidden-size", "16", "--steps", "300", "--eval-every", "50",
                                 "--checkpoint-every", "20", "--quiet"]
    full = tmp_path / "full"
    p = _run_cli(["train", *common, "--out", str(full)])
    assert p.wait(timeout=300) == 0, p.stderr.read()

    killed = tmp_path / "killed"
    p = _run_cli(["train", *common, "--out", str(killed)])
    deadline = time.time() + 120
    while not (killed / T.CHECKPOINT).exists():
        assert p.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (killed / T.FINAL).exists()
    step = load_checkpoint(killed / T.CHECKPOINT)[1]["step"]
    assert 0 < step < 300
    r = _run_cli(["resume", str(killed), "--quiet"])
    assert r.wait(timeout=300) == 0, r.stderr.read()
    a, b = _weights(full / T.FINAL), _weights(killed / T.FINAL)
    assert set(a) == set(b)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    recs_full = [json.loads(l) for l in (full / "metrics.jsonl").read_text().splitlines()]
    recs_killed = [json.loads(l) for l in (killed / "metrics.jsonl").read_text().splitlines()]
    assert recs_full == recs_killed
    outcome("training run: SIGKILL after a checkpoint, then rnnlab resume", "final weights bit-identical")


def test_tbptt_with_one_chunk_equals_full_bptt_and_cuts_otherwise():
    rng = np.random.default_rng(0)
    cfg = ModelConfig(input_size=6, output_size=6, cell="lstm", input_mode="onehot", hidden_size=5, dtype="float64")
    model = SequenceModel(cfg, seed=0)
    x = rng.integers(0, 6, (12, 3))
    y = rng.integers(0, 6, (12, 3))
    model.zero_grad()
    logits, _ = model(x)
    loss_full, d = model.loss(logits, y)
    model.backward(d)
    full = {k: v.copy() for k, v in model.grads.items()}
    for chunk in (0, 12, 50):
        model.zero_grad()
        loss, _, _ = T.tbptt_backward(model, x, y, chunk=chunk)
        assert loss == loss_full
        for k in full:
            np.testing.assert_array_equal(model.grads[k], full[k])
    # chunks of 4: the same as running each chunk from the carried state with no gradient into the past
    model.zero_grad()
    loss, _, state = T.tbptt_backward(model, x, y, chunk=4)
    assert loss == pytest.approx(loss_full, rel=1e-12)          # the forward is unchanged
    cut = {k: v.copy() for k, v in model.grads.items()}
    model.zero_grad()
    st = None
    for t0 in (0, 4, 8):
        lg, st_new = model(x[t0:t0 + 4], None, st)
        _, d = model.loss(lg, y[t0:t0 + 4])
        model.backward(d / 3)
        st = st_new
    for k in full:
        np.testing.assert_allclose(cut[k], model.grads[k], rtol=0, atol=1e-15)
    assert not np.allclose(cut["rnn.weight_hh_l0"], full["rnn.weight_hh_l0"])


def test_nonfinite_loss_stops_or_skips(monkeypatch, tmp_path, outcome):
    orig = SequenceModel.loss
    calls = {"n": 0}

    def flaky(self, logits, targets, lengths=None, weights=None):
        calls["n"] += 1
        loss, d = orig(self, logits, targets, lengths, weights)
        if calls["n"] == 3:
            d = d.copy()
            d.flat[0] = np.nan
        return loss, d

    monkeypatch.setattr(SequenceModel, "loss", flaky)
    cfg = dict(task="adding", seq_len=8, steps=6, hidden_size=4, eval_every=0, batch_size=2)
    with pytest.raises(NonFiniteError, match=r"step 3: NaN/Inf in the gradient of .*--clip"):
        T.train({**cfg, "out": str(tmp_path / "a"), "checkpoint_every": 1})
    assert load_checkpoint(tmp_path / "a" / T.CHECKPOINT)[1]["step"] == 2     # the last good one is kept
    calls["n"] = 0
    r = T.train({**cfg, "on_nonfinite": "skip"})
    assert r.skipped_steps == 1
    outcome("training: NaN gradient at step 3", "stops naming step and tensor, last checkpoint kept / skipped")
    assert all(np.isfinite(v).all() for v in r.model.state_dict().values())


def test_metrics_and_run_folder(tmp_path):
    out = tmp_path / "run"
    r = T.train(dict(task="copy", seq_len=5, steps=20, hidden_size=8, eval_every=10, log_every=5, out=str(out)))
    recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in recs if x["split"] == "train"]
    val = [x for x in recs if x["split"] == "val"]
    assert [x["step"] for x in train] == [5, 10, 15, 20] and [x["step"] for x in val] == [10, 20]
    for x in train:
        assert {"loss", "accuracy", "grad_norm", "clipped", "lr"} <= set(x)
    assert {"loss", "accuracy", "recall_accuracy"} <= set(val[-1])
    from rnnlab.training.config import read_toml
    cfg = read_toml(out / "config.toml")
    assert cfg["task"] == "copy" and cfg["steps"] == 20 and "lr" in cfg and "clip" in cfg
    model, meta = T.load_model(out)
    assert meta["metrics"] == r.final


# ------------------------------------------------------------------ CLI smoke tests on every task
def _cli(args, capsys):
    rc = main(args)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _ts_file(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["@problemName toy", "@univariate false", "@equalLength false", "@classLabel true up down", "@data"]
    for i in range(40):
        n = rng.integers(5, 12)
        sign = 1 if i % 2 else -1
        d1 = ",".join(f"{sign * t / n + rng.normal(0, .1):.3f}" for t in range(n))
        d2 = ",".join(f"{rng.normal():.3f}" for t in range(n))
        lines.append(f"{d1}:{d2}:{'up' if sign > 0 else 'down'}")
    p = tmp_path / "toy.ts"
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.mark.parametrize("task,extra", [
    ("adding", ["--seq-len", "10"]),
    ("copy", ["--seq-len", "5", "--model", "gru"]),
    ("digits", ["--model", "rnn"]),
    ("ts", []),
    ("chars", ["--seq-len", "16", "--input-mode", "embedding"]),
    ("forecast", ["--seq-len", "12", "--horizon", "3", "--data", "sunspots"]),
    ("forecast-csv", ["--seq-len", "4", "--time-col", "t", "--target-col", "value"]),
])
def test_every_task_trains_from_the_cli(task, extra, tmp_path, text_file, capsys):
    if task == "digits":
        pytest.importorskip("sklearn")
    if task == "forecast":
        pytest.importorskip("statsmodels")
    out = tmp_path / "run"
    args = ["train", "--task", task.split("-")[0], "--steps", "6", "--hidden-size", "8", "--batch-size", "4",
            "--eval-every", "3", "--quiet", "--out", str(out), *extra]
    if task == "ts":
        args += ["--ts-train", str(_ts_file(tmp_path))]
    if task == "chars":
        args += ["--text", str(text_file)]
    if task == "forecast-csv":
        csv = tmp_path / "s.csv"
        csv.write_text("t,value\n" + "".join(f"{i},{np.sin(i / 3):.4f}\n" for i in range(80)))
        args += ["--data", str(csv)]
    rc, stdout, stderr = _cli(args, capsys)
    assert rc == 0, stderr
    assert "validation:" in stdout and "baseline" in stdout
    model, meta = T.load_model(out / T.FINAL)
    assert meta["config"]["task"] == task.split("-")[0]
    rc, stdout, stderr = _cli(["evaluate", str(out)], capsys)
    assert rc == 0 and "loss" in stdout, stderr


def test_sample_writes_text_of_the_requested_length(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    rc, _, err = _cli(["train", "--task", "chars", "--text", str(text_file), "--seq-len", "16", "--steps", "5",
                       "--hidden-size", "8", "--quiet", "--out", str(out)], capsys)
    assert rc == 0, err
    for extra in ([], ["--prompt", "All:", "--top-k", "3", "--temperature", "0.5"]):
        rc, stdout, err = _cli(["sample", str(out), "--length", "57", "--seed", "1", *extra], capsys)
        assert rc == 0, err
        prompt = extra[1] if extra else ""
        text = stdout[:-1]                       # the trailing newline
        assert len(text) == len(prompt) + 57 and text.startswith(prompt)
        assert set(text) <= set(TEXT)
    rc, _, err = _cli(["sample", str(out), "--prompt", "Zebra#"], capsys)
    assert rc == 2 and "prompt: characters" in err and "'#'" in err


def test_config_file_and_flag_override(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('task = "adding"\nseq_len = 8\nsteps = 4\nhidden_size = 6\nlr = 0.01\n')
    out = tmp_path / "run"
    rc, _, err = _cli(["train", "--config", str(cfg), "--steps", "3", "--quiet", "--out", str(out)], capsys)
    assert rc == 0, err
    from rnnlab.training.config import read_toml
    got = read_toml(out / "config.toml")
    assert got["steps"] == 3 and got["hidden_size"] == 6 and got["lr"] == 0.01


@pytest.mark.parametrize("args,match", [
    (["--task", "addng"], "did you mean 'adding'"),
    (["--modle", "lstm"], "did you mean '--model'"),
    (["--seq-len", "0"], "--seq-len: expected an integer >= 1, got 0"),
    (["--batch-size", "0"], "--batch-size: expected an integer >= 1, got 0"),
    (["--task", "chars", "--text", "EMPTY"], "text: expected at least"),
    (["--task", "chars", "--text", "/no/such/file.txt"], "does not exist"),
    (["--task", "forecast", "--data", "CSV", "--time-col", "a", "--target-col", "nope"], "--target-col: no column 'nope'"),
    (["--task", "ts"], "--ts-train"),
    (["--config", "BADKEY"], "unknown option 'hiden_size' (did you mean 'hidden_size'?)"),
    (["--lr", "-1"], "lr: expected a number > 0.0"),
    (["--optimizer", "adma"], "did you mean 'adam'"),
])
def test_bad_input_is_one_line_and_exit_2(args, match, tmp_path, outcome):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    csv = tmp_path / "s.csv"
    csv.write_text("a,b\n1,2\n")
    bad = tmp_path / "bad.toml"
    bad.write_text("hiden_size = 3\n")
    args = [{"EMPTY": str(empty), "CSV": str(csv), "BADKEY": str(bad)}.get(a, a) for a in args]
    p = subprocess.run([sys.executable, "-m", "rnnlab", "train", "--steps", "1", "--quiet", *args],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert match in lines[0]
    outcome("CLI: unknown task/option, bad values, missing or empty files", "one line on stderr, exit 2")


def test_refuses_to_overwrite_a_run(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--steps", "2", "--seq-len", "5", "--hidden-size", "4", "--quiet", "--out", str(out)]
    assert _cli(args, capsys)[0] == 0
    rc, _, err = _cli(args, capsys)
    assert rc == 2 and "rnnlab resume" in err
