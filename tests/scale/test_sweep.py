"""rnnlab sweep on Ray Tune: the space (grid, random draws with Tune's samplers, seeds) and its refusals, the
summary over seeds (mean, sd, Student-t interval, steps-to-threshold), and, on an embedded local Ray with 2
workers: a worker killed mid-trial (the trial continues from its checkpoint to the uninterrupted weights), the
driver killed (--resume finishes, no finished trial rerun), loopback-only listening, compare --seeds --runner ray
(the numbers of the serial runner)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rnnlab.cli import main as cli
from rnnlab.scale import sweep
from rnnlab.errors import ConfigError
from rnnlab.training._runlock import holder
from rnnlab.training.trainer import load_model, train
from support import cmdline, process_tree, reachable_from_outside

BASE = {"task": "adding", "seq_len": 10, "hidden_size": 8, "steps": 300, "eval_every": 50, "checkpoint_every": 20,
        "backend": "numpy", "dtype": "float64"}
SPEC = {**BASE, "sweep": {"seeds": 2, "grid": {"model": ["rnn", "gru"]}}}


def test_the_space_and_its_refusals(tmp_path):
    m = sweep.expand(SPEC)
    assert [t["id"] for t in m["trials"]] == ["c000-s0", "c000-s1", "c001-s0", "c001-s1"]
    assert [t["overrides"] for t in m["trials"]][::2] == [{"model": "rnn"}, {"model": "gru"}]
    pytest.importorskip("ray")
    rnd = {**BASE, "sweep": {"seeds": 1, "grid": {"model": ["lstm"]},
                             "random": {"samples": 3, "lr": {"loguniform": [1e-4, 1e-2]},
                                        "hidden_size": {"choice": [4, 8]}}}}
    a, b = sweep.expand(rnd), sweep.expand(rnd)
    assert a == b and len(a["trials"]) == 3                               # seeded draws: a resume sees the same
    lrs = [t["overrides"]["lr"] for t in a["trials"]]
    assert all(1e-4 <= v <= 1e-2 for v in lrs) and len(set(lrs)) == 3
    bad = [({"grid": {"modle": ["rnn"]}}, "unknown training key 'modle' \\(did you mean 'model'\\?\\)"),
           ({"grid": {"model": []}}, "sweep.grid.model: expected a non-empty list"),
           ({"seeds": 0}, "sweep.seeds: expected an integer >= 1, got 0"),
           ({"seeds": 1}, "nothing to sweep"),
           ({"random": {"lr": {"logunifrom": [1, 2]}}}, "unknown distribution 'logunifrom'"),
           ({"grid": {"seed": [1, 2]}}, "'seed' is set by the sweep itself"),
           ({"seed": 3}, "sweep: unknown key 'seed' \\(did you mean 'seeds'\\?\\)"),
           ({"grid": {"model": ["rnn", "lstmm"]}}, "model: expected one of")]
    for sw, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            sweep.expand({**BASE, "sweep": sw})
    t0 = time.time()
    with pytest.raises(ConfigError, match="no Ray cluster answers at '127.0.0.1:1'"):
        sweep.run(out=str(tmp_path / "never"), spec=SPEC, address="127.0.0.1:1")
    assert time.time() - t0 < 30 and not (tmp_path / "never").exists()
    from rnnlab.training._runlock import RunLock, RunLockedError
    (tmp_path / "held").mkdir()
    (tmp_path / "held" / "sweep.json").write_text(json.dumps(m))
    with RunLock(tmp_path / "held"):                                   # one driver per sweep folder
        with pytest.raises(RunLockedError, match=f"being written by process {os.getpid()}"):
            sweep.run(resume_dir=str(tmp_path / "held"))


# ------------------------------------------------------------------------------ refused before anything is written
def _sweep_file(tmp_path, sweep_lines="", grid='model = ["rnn", "gru"]', base=None, name="s.toml"):
    """A sweep file as a user writes it: the base keys, [sweep] with seeds = 2 and ``sweep_lines``, [sweep.grid]."""
    text = "\n".join(f"{k} = {json.dumps(v)}" for k, v in (base or BASE).items())
    text += f"\n[sweep]\nseeds = 2\n{sweep_lines}\n" + (f"[sweep.grid]\n{grid}\n" if grid else "")
    f = tmp_path / name
    f.write_text(text)
    return f


def _no_ray(*a, **k):
    raise AssertionError("a refused sweep started Ray")


# (the [sweep] lines, extra flags, the refusal, the corrected lines and flags)
BAD_SWEEPS = [
    ('threshold = "low"', [], r"sweep\.threshold: expected a number, got 'low'", "threshold = 0.01", []),
    ("threshold = nan", [], r"sweep\.threshold: expected a finite number, got nan", "threshold = 0.01", []),
    ("threshold = inf", [], r"sweep\.threshold: expected a finite number, got inf", "", []),
    ("workers = -1", [], r"sweep\.workers: expected an integer >= 1, got -1", "workers = 1", []),
    ("workers = 0", [], r"sweep\.workers: expected an integer >= 1, got 0", "", []),
    ('workers = "2"', [], r"sweep\.workers: expected an integer, got '2'", "workers = 2", []),
    ('scheduler = "hyperband"', [], r"sweep\.scheduler: expected one of \['asha'\], got 'hyperband'",
     'scheduler = "asha"', []),
    ('metric = "accuracy"', [], r"sweep\.metric: expected one of \['loss', 'mse'\] .*got 'accuracy'",
     'metric = "mse"', []),
    ('metric = "loss"', [], r"sweep\.threshold: needed with sweep\.metric = 'loss'", 'metric = "loss"\nthreshold = 0.1',
     []),
    ("grace_steps = 20", [], r"sweep\.grace_steps: only used by scheduler = 'asha'",
     'scheduler = "asha"\ngrace_steps = 20', []),
    ('scheduler = "asha"\ngrace_steps = 0', [], r"sweep\.grace_steps: expected an integer >= 1, got 0",
     'scheduler = "asha"\ngrace_steps = 20', []),
    ('scheduler = "asha"\ngrace_steps = 301', [], r"sweep\.grace_steps: expected an integer <= steps \(300",
     'scheduler = "asha"', []),
    ("", ["--workers", "0"], r"workers: expected an integer >= 1, got 0", "", ["--workers", "1"]),
    ("", ["--workers", "-2"], r"workers: expected an integer >= 1, got -2", "", []),
    ("", ["--address", "no-port-here"], r"address: expected HOST:PORT, ray://HOST:PORT, auto or local, got "
     r"'no-port-here'", "", []),
    ("", ["--address", "host:99999"], r"address: expected HOST:PORT", "", []),
]


@pytest.mark.parametrize("lines, flags, refusal, fixed, fixed_flags", BAD_SWEEPS)
def test_a_bad_sweep_setting_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, outcome, lines, flags,
                                                             refusal, fixed, fixed_flags):
    monkeypatch.setenv("RNNLAB_NETNS", "1")          # this process, not a loopback-only copy of it
    monkeypatch.setattr(sweep, "_start_ray", _no_ray)
    f, out = _sweep_file(tmp_path, lines), tmp_path / "sw"
    assert cli.main(["sweep", str(f), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("rnnlab sweep: error: "), err
    import re
    assert re.match(refusal, err[0][len("rnnlab sweep: error: "):]), err[0]
    assert not out.exists()                          # so the corrected command may use the same --out
    outcome("sweep: a bad [sweep] key, --workers or --address", "one-line error, nothing written")
    workers = int(fixed_flags[1]) if fixed_flags else None
    m = sweep.check(str(_sweep_file(tmp_path, fixed, name="fixed.toml")), out=str(out), workers=workers)
    assert len(m["trials"]) == 4 and not out.exists()


# (the sweep file's base keys, its [sweep.grid], the refusal): each trial's config and model, as it will train
BAD_TRIALS = [
    (BASE, "lr = [1e-3, -1.0]", r"sweep\.grid\.lr: expected a number > 0\.0, got -1\.0 \(trial lr=-1\.0\)"),
    (BASE, 'lr = [1e-3, "fast"]', r"sweep\.grid\.lr: expected float, got 'fast'"),
    (BASE, 'model = ["lstm", "lstmm"]', r"sweep\.grid\.model: expected one of"),
    ({**BASE, "peephole": True}, 'model = ["lstm", "gru"]',
     r"peephole: an option of the LSTM only, got it with model 'gru', in trial model=gru \(rnnlab train refuses it\)"),
    (BASE, 'model = ["gru"]\nzoneout_cell = [0.1]', r"sweep\.grid\.zoneout_cell: an option of the LSTM only, .* in trial model=gru,zoneout_cell=0\.1 "),
    (BASE, 'optimizer = ["sgd"]\nnesterov = [true]', r"sweep\.grid\.nesterov: needs momentum > 0"),
    (BASE, 'task = ["adding", "copy"]', r"sweep\.metric: expected one of .* of task 'copy'\), got 'mse'"),
    ({**BASE, "out": "elsewhere"}, 'model = ["rnn"]', r"out \(in the sweep file\): set by the sweep itself"),
    # another cell's option, refused as rnnlab train refuses it (TrainConfig.check_cell_options), naming the trial
    ({**BASE, "forget_bias": 1.0}, 'model = ["gru", "lstm"]',
     r"^forget_bias: an option of the LSTM only, got it with model 'gru', in trial model=gru \(rnnlab train refuses "
     r"it\); .*lstm\+forget_bias=1\.0"),
    (BASE, 'model = ["lstm", "gru"]\nforget_bias = [1.0]',
     r"^sweep\.grid\.forget_bias: an option of the LSTM only, got it with model 'gru', in trial "
     r"model=gru,forget_bias=1\.0 "),
    ({**BASE, "reset": "before"}, 'model = ["gru", "lstm"]', r"^reset: an option of the GRU only, got it with model "
     r"'lstm', in trial model=lstm \(rnnlab train refuses it\); .*a file of its own, or compare .*\(gru\+reset=before\)$"),
    ({**BASE, "recurrent_max": 2.0}, 'model = ["indrnn", "rnn"]', r"^recurrent_max: an option of the IndRNN only.* in "
     r"trial model=rnn "),
    ({**BASE, "nonlinearity": "relu"}, 'model = ["rnn", "gru"]', r"^nonlinearity: an option of the RNN only.* in "
     r"trial model=gru "),
]


@pytest.mark.parametrize("base, grid, refusal", BAD_TRIALS)
def test_a_trial_that_cannot_train_is_refused_before_the_folder_is_made(tmp_path, monkeypatch, outcome, base, grid,
                                                                        refusal):
    monkeypatch.setattr(sweep, "_start_ray", _no_ray)
    f, out = _sweep_file(tmp_path, grid=grid, base=base), tmp_path / "sw"
    with pytest.raises(ConfigError, match=refusal):
        sweep.run(str(f), out=str(out))
    assert not out.exists()
    outcome("sweep: a trial whose config or model is bad", "one-line error, nothing written")


def test_another_cells_option_is_one_line_through_the_cli(tmp_path, monkeypatch, capsys, outcome):
    """A grid over models with a base forget_bias: rnnlab train refuses it for the GRU, so does the sweep, in one
    line, before the folder is made."""
    monkeypatch.setenv("RNNLAB_NETNS", "1")          # this process, not a loopback-only copy of it
    monkeypatch.setattr(sweep, "_start_ray", _no_ray)
    f, out = _sweep_file(tmp_path, grid='model = ["gru", "lstm"]', base={**BASE, "forget_bias": 1.0}), tmp_path / "sw"
    assert cli.main(["sweep", str(f), "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    outcome("sweep: a trial given another cell's option", "one-line error, nothing written")
    assert len(err) == 1 and err[0].startswith("rnnlab sweep: error: "), err
    assert "forget_bias" in err[0] and "in trial model=gru" in err[0], err[0]
    assert not out.exists()
    m = sweep.check(str(_sweep_file(tmp_path, grid='model = ["lstm"]\nhidden_size = [4, 8]',
                                    base={**BASE, "forget_bias": 1.0}, name="fixed.toml")), out=str(out))
    assert len(m["trials"]) == 4 and not out.exists()              # the LSTM alone takes it


def test_resume_refuses_bad_settings_of_an_old_manifest_and_a_second_folder(tmp_path, monkeypatch, outcome):
    monkeypatch.setattr(sweep, "_start_ray", _no_ray)
    m = sweep.expand(SPEC)
    old = tmp_path / "old"
    old.mkdir()
    bad = {**m, "sweep": {**m["sweep"], "threshold": "low"}}   # as main wrote it before the checks
    (old / "sweep.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=r"sweep\.threshold: expected a number, got 'low'"):
        sweep.run(resume_dir=str(old))
    assert sorted(p.name for p in old.iterdir()) == ["sweep.json"]          # no lock, status or summary added
    with pytest.raises(ConfigError, match=r"out: not with --resume"):
        sweep.run(resume_dir=str(old), out=str(tmp_path / "other"))
    assert not (tmp_path / "other").exists()
    (tmp_path / "afile").write_text("")
    with pytest.raises(ConfigError, match=r"out: expected a folder for the sweep, got the file"):
        sweep.run(spec=SPEC, out=str(tmp_path / "afile"))
    outcome("sweep: a bad [sweep] key, --workers or --address", "one-line error, nothing written")


def test_settings_are_resolved_into_the_manifest():
    m = sweep.expand(SPEC)
    assert m["sweep"] == {"seeds": 2, "metric": "mse", "threshold": 0.01}       # a resume summarises the same way
    m = sweep.expand({**BASE, "sweep": {"seeds": 2, "metric": "loss", "threshold": 0.2}})
    assert m["sweep"]["metric"] == "loss" and m["sweep"]["threshold"] == 0.2
    assert sweep.check_workers(None) is None and sweep.check_workers(3) == 3
    for ok in ("auto", "local", "10.0.0.1:6379", "ray://head:10001", None):
        sweep.check_address_format(ok)
    with pytest.raises(ConfigError, match=r"sweep\.random\.samples: 3 draws of nothing"):
        sweep.expand({**BASE, "sweep": {"seeds": 2, "random": {"samples": 3}}})
    with pytest.raises(ConfigError, match=r"sweep\.random\.samples: expected an integer, got True"):
        sweep.expand({**BASE, "sweep": {"seeds": 2, "random": {"samples": True, "lr": {"choice": [1e-3]}}}})
    with pytest.raises(ConfigError, match=r"sweep\.grid: expected a table"):
        sweep.expand({**BASE, "sweep": {"seeds": 2, "grid": [1]}})


def test_relative_files_are_the_ones_the_driver_checked(tmp_path, monkeypatch):
    """Tune starts each trial in a folder of its own: the manifest names the files the driver read."""
    monkeypatch.chdir(tmp_path)
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("the quick brown fox jumps over the lazy dog. " * 60)
    spec = {**BASE, "task": "chars", "text": "a.txt", "sweep": {"seeds": 1, "grid": {"text": ["a.txt", "b.txt"]}}}
    m = sweep.expand(spec)
    assert m["base"]["text"] == str(tmp_path / "a.txt")
    assert [t["overrides"]["text"] for t in m["trials"]] == [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    assert [t["label"] for t in m["trials"]] == ["text=a.txt", "text=b.txt"]          # as the user wrote them
    with pytest.raises((ConfigError, FileNotFoundError), match="missing.txt"):
        sweep.expand({**spec, "sweep": {"seeds": 1, "grid": {"text": ["a.txt", "missing.txt"]}}})


def test_summary_over_seeds(tmp_path):
    from scipy import stats
    m = sweep.expand(SPEC)
    finals = {"c000-s0": 0.2, "c000-s1": 0.1, "c001-s0": 0.004, "c001-s1": 0.008}
    for t in m["trials"]:
        d = tmp_path / "trials" / t["id"]
        d.mkdir(parents=True)
        recs = [{"step": 50, "split": "val", "loss": 0.5, "mse": 0.5},
                {"step": 100, "split": "val", "loss": finals[t["id"]], "mse": finals[t["id"]]}]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = sweep.summarize(tmp_path, m, "mse", "min", 0.01)
    rnn, gru = s["rows"]
    assert rnn["mean"] == pytest.approx(0.15) and rnn["sd"] == pytest.approx(np.std([0.2, 0.1], ddof=1))
    assert rnn["ci95"] == pytest.approx(stats.t.ppf(0.975, 1) * rnn["sd"] / np.sqrt(2))
    assert (rnn["reached"], gru["reached"], gru["steps_to_threshold"]) == (0, 2, 100)
    assert "| model=gru | 2 | 0.006 |" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "report.html").read_text().count("<tr>") == 3 and (tmp_path / "curves.png").is_file()


# ------------------------------------------------------------------------------ on Ray
needs_ray = pytest.mark.skipif(__import__("importlib").util.find_spec("ray") is None,
                               reason="needs the sweep extra (ray[tune])")


def _uninterrupted(tmp_path, manifest, trial):
    cfg = sweep.trial_config(manifest, trial, tmp_path / "ref")
    train(cfg)
    return load_model(cfg.out)[0].named_parameters()


def _same(a, b):
    return max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-12


def _start(args, tmp_path):
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    return subprocess.Popen([sys.executable, "-m", "rnnlab", "sweep"] + args, cwd=tmp_path, env=env,
                            stdout=open(tmp_path / "sweep.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)


def _wait(cond, proc, tmp_path, limit=300):
    deadline = time.time() + limit
    while not cond():
        assert proc.poll() is None, (tmp_path / "sweep.log").read_text()[-3000:]
        assert time.time() < deadline, "timed out; log: " + (tmp_path / "sweep.log").read_text()[-3000:]
        time.sleep(0.3)


@pytest.mark.slow
@needs_ray
def test_a_killed_worker_continues_its_trial_on_loopback_only(tmp_path):
    (tmp_path / "s.toml").write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in BASE.items()) +
                                     '\n[sweep]\nseeds = 2\n[sweep.grid]\nmodel = ["rnn", "gru"]\n')
    proc = _start(["s.toml", "--out", "sw", "--workers", "2"], tmp_path)
    trials = tmp_path / "sw" / "trials"
    victim = {}
    try:
        def running():
            for d in sorted(trials.glob("*")) if trials.is_dir() else ():
                pid = holder(d)
                if pid and (d / "checkpoint.safetensors").exists() and not (d / "model.safetensors").exists():
                    victim.update(dir=d, pid=pid)
                    return True
            return False
        _wait(running, proc, tmp_path)
        ray_pids = [p for p in process_tree(proc.pid) if "ray" in cmdline(p)]
        bad, seen = reachable_from_outside(ray_pids)
        assert ray_pids and seen and not bad, bad                      # nobody else gets in
        assert all(os.readlink(f"/proc/{p}/ns/net") != os.readlink("/proc/self/ns/net") for p in ray_pids)
        os.kill(victim["pid"], signal.SIGKILL)
        assert proc.wait(timeout=600) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    manifest = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    trial = next(t for t in manifest["trials"] if t["id"] == victim["dir"].name)
    assert _same(load_model(victim["dir"])[0].named_parameters(), _uninterrupted(tmp_path, manifest, trial))
    summary = json.loads((tmp_path / "sw" / "summary.json").read_text())
    assert [r["seeds"] for r in summary["rows"]] == [2, 2] and [r["finished"] for r in summary["rows"]] == [2, 2]


@pytest.mark.slow
@needs_ray
def test_a_killed_driver_resumes_without_rerunning_finished_trials(tmp_path):
    spec = {**BASE, "steps": 400}
    (tmp_path / "s.toml").write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in spec.items()) +
                                     '\n[sweep]\nseeds = 2\n[sweep.grid]\nmodel = ["rnn", "lstm"]\n')
    proc = _start(["s.toml", "--out", "sw", "--workers", "2"], tmp_path)
    trials = tmp_path / "sw" / "trials"
    try:
        def one_done_one_half():
            dirs = sorted(trials.glob("*")) if trials.is_dir() else []
            done = [d for d in dirs if (d / "model.safetensors").exists()]
            half = [d for d in dirs if (d / "checkpoint.safetensors").exists() and d not in done]
            return done and half
        _wait(one_done_one_half, proc, tmp_path)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)                            # the driver and the Ray it started
        proc.wait()
    done = {d.name: (d / "model.safetensors").stat().st_mtime_ns for d in trials.glob("*")
            if (d / "model.safetensors").exists()}
    deadline = time.time() + 30
    while any(holder(d) for d in trials.glob("*")) and time.time() < deadline:
        time.sleep(0.2)                                                # the killed workers' locks go with them
    again = subprocess.run([sys.executable, "-m", "rnnlab", "sweep", "--resume", "sw", "--workers", "2"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    manifest = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    for t in manifest["trials"]:
        d = trials / t["id"]
        assert (d / "model.safetensors").exists()
        if t["id"] in done:
            assert (d / "model.safetensors").stat().st_mtime_ns == done[t["id"]]     # not run again
    half = next(t for t in manifest["trials"] if t["id"] not in done)
    assert _same(load_model(trials / half["id"])[0].named_parameters(), _uninterrupted(tmp_path, manifest, half))


@pytest.mark.slow
@needs_ray
def test_compare_with_seeds_shows_the_spread(tmp_path, capsys):
    assert cli.main(["compare", "--task", "adding", "--seq-len", "6", "--steps", "20", "--eval-every", "10",
                     "--models", "rnn,gru", "--seeds", "0", "--report", str(tmp_path / "x")]) == 2
    assert "seeds: expected an integer >= 1, got 0" in capsys.readouterr().err
    assert cli.main(["compare", "--task", "adding", "--seq-len", "6", "--steps", "20", "--eval-every", "10",
                     "--models", "rnn,gru+zoneout=0.1", "--seeds", "2", "--workers", "2", "--runner", "ray", "--report",
                     str(tmp_path / "c"), "--quiet"]) == 0
    res = json.loads((tmp_path / "c" / "compare.json").read_text())
    rows = res["seeds"]["rows"]
    assert [r["label"] for r in rows] == ["rnn", "gru+zoneout=0.1"] and all(r["seeds"] == 2 for r in rows)
    assert all(r["finished"] == 2 and r["sd"] >= 0 for r in rows)
    trial = json.loads((tmp_path / "c" / "seeds" / "sweep.json").read_text())["trials"][3]
    assert trial["overrides"]["zoneout"] == 0.1 and trial["seed"] == 1
    assert "## Over 2 seeds" in (tmp_path / "c" / "summary.md").read_text()
    assert cli.main(["compare", "--task", "adding", "--seq-len", "6", "--steps", "20", "--eval-every", "10",
                     "--models", "rnn,gru+zoneout=0.1", "--seeds", "2", "--report", str(tmp_path / "s"), "--quiet"]) == 0
    serial = json.loads((tmp_path / "s" / "compare.json").read_text())["seeds"]
    assert serial["runner"] == "serial" and [r["values"] for r in serial["rows"]] == [r["values"] for r in rows]


@pytest.mark.slow
@needs_ray
def test_a_sweep_on_an_existing_cluster_by_address(tmp_path):
    import shutil
    ray_cli = shutil.which("ray")
    assert ray_cli, "the ray command comes with ray[tune]"
    import re
    import socket
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token")   # the cluster's token, by file
    start = subprocess.run([ray_cli, "start", "--head", "--port", str(port), "--num-cpus", "2",
                            "--include-dashboard=false", "--disable-usage-stats"], env=env, capture_output=True,
                           text=True, timeout=120)
    assert start.returncode == 0, start.stderr[-2000:]
    address = re.search(r"ray start --address='([^']+)'", start.stdout + start.stderr).group(1)
    try:
        (tmp_path / "s.toml").write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in {**BASE, "steps": 40}.items())
                                         + '\n[sweep]\nseeds = 2\n')
        p = subprocess.run([sys.executable, "-m", "rnnlab", "sweep", "s.toml", "--out", "sw", "--address", address],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        assert "| base | 2 |" in p.stdout
        assert all((tmp_path / "sw" / "trials" / f"c000-s{s}" / "model.safetensors").exists() for s in (0, 1))
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)


@pytest.mark.slow
@needs_ray
def test_asha_stops_trials_and_resume_does_not_rerun_them(tmp_path):
    spec = {**BASE, "steps": 200, "eval_every": 20,
            "sweep": {"seeds": 2, "scheduler": "asha", "grace_steps": 20, "grid": {"lr": [1e-5, 3e-2]}}}
    s = sweep.run(out=str(tmp_path / "sw"), spec=spec, workers=2)
    status = json.loads((tmp_path / "sw" / "status.json").read_text())
    trials = json.loads((tmp_path / "sw" / "sweep.json").read_text())["trials"]
    for t in trials:                                  # each trial either ran to the end or was stopped by ASHA
        assert sweep.finished(tmp_path / "sw" / "trials" / t["id"]) != (t["id"] in status["stopped"])
    assert s["stopped_by_scheduler"] == status["stopped"]
    again = sweep.run(resume_dir=str(tmp_path / "sw"))
    assert again["rows"] == s["rows"]                 # nothing left to run: the same summary
