"""The command line's answers to a new user's slips: one line each, naming the option, the file or the cause."""
import os
import stat

import numpy as np
import pytest

import rnnlab
from rnnlab.cli import main as cli
from rnnlab.model.checkpoint import load_checkpoint, save_checkpoint
from rnnlab.errors import CheckpointError, ConfigError


def test_a_refused_flag_is_never_suggested_as_the_fix(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["evaluate", "runs/x", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err
    assert "unrecognized arguments: --quiet" in err and "did you mean '--quiet'" not in err
    assert "--quiet is an option of: compare, gradients, resume, train" in err
    with pytest.raises(SystemExit):
        cli.main(["train", "--hiden-size", "3"])
    assert "did you mean '--hidden-size'?" in capsys.readouterr().err


def test_an_allocation_that_cannot_succeed_is_one_line_naming_the_option(capsys, tmp_path):
    code = cli.main(["train", "--task", "adding", "--steps", "1", "--batch-size", str(10 ** 12), "--quiet",
                     "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith("rnnlab train: error: out of memory") and "--batch-size (1000000000000)" in err


def test_a_failed_save_names_the_file_the_cause_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"w": np.ones(3, np.float32)}, {"step": 1})
    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(CheckpointError, match=r"c.safetensors: could not save \(No space left on device\); the "
                                              r"previous file is intact"):
        save_checkpoint(path, {"w": np.zeros(3, np.float32)}, {"step": 2})
    monkeypatch.setattr(os, "fsync", real_fsync)
    tensors, meta = load_checkpoint(path)
    assert meta["step"] == 1 and tensors["w"].tolist() == [1, 1, 1]
    assert os.listdir(tmp_path) == ["c.safetensors"]                     # the temporary file is gone
    with pytest.raises(CheckpointError, match="nothing was written"):
        monkeypatch.setattr(os, "fsync", full_disk)
        save_checkpoint(tmp_path / "new.safetensors", {"w": np.zeros(3, np.float32)}, {})


def test_checkpoint_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "a.safetensors", {"w": np.ones(2, np.float32)}, {})
        os.umask(0o077)
        save_checkpoint(tmp_path / "b.safetensors", {"w": np.ones(2, np.float32)}, {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.safetensors").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "b.safetensors").st_mode) == 0o600


def test_unknown_layer_options_are_refused_when_the_layer_is_built():
    from rnnlab.interop.keras import from_keras, to_keras
    from rnnlab.engine.layers import layer_from_config
    with pytest.raises(ConfigError, match=r"LSTM: unknown option\(s\) \['options'\]; expected some of \[.*'forget_bias'"):
        rnnlab.LSTM(2, 3, options={})
    cfg = rnnlab.GRU(2, 3).config()
    with pytest.raises(ConfigError, match=r"GRU: unknown option\(s\) \['colour'\]"):
        layer_from_config({**cfg, "colour": 1})
    weights = to_keras(rnnlab.LSTM(2, 3))
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['options'\]"):
        from_keras("lstm", weights, options={"batch_first": True})
    assert from_keras("lstm", weights, batch_first=True).batch_first


@pytest.mark.slow
def test_warmup_compiles_every_path_and_reports_the_time(capsys, monkeypatch):
    from rnnlab.engine._kernels import available
    if not available():
        pytest.skip("numba is not installed")
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "2")
    assert cli.main(["warmup"]) == 0
    out = capsys.readouterr().out
    for label in ("lstm loop float32", "gru-before split float32", "rnn split float32", "mingru loop float32",
                  "lru loop float32", "lstm units float32", "gru units float32", "lstm+options split float32"):
        assert label in out
    assert "gru-before units" not in out and "lstm+options units" not in out     # one product a step, no option
    assert "mingru split" not in out                                # the diagonal cells have one compiled path
    assert out.strip().splitlines()[-1].startswith("warm-up done in ")
    with pytest.raises(SystemExit):
        cli.main(["warmup", "--dtype", "float16"])


# ------------------------------------------------------------------------------ whose error it is (#29)
@pytest.mark.parametrize("error", [TypeError, ValueError, KeyError])
def test_a_programming_error_keeps_its_traceback(monkeypatch, tmp_path, capsys, error):
    """A bug's TypeError/ValueError is not dressed up as the user's mistake: it propagates from main."""
    import rnnlab.training.trainer as trainer

    def bug(*args, **kwargs):
        raise error("a bug of rnnlab's, not the user's")
    monkeypatch.setattr(trainer, "train", bug)
    with pytest.raises(error, match="a bug of rnnlab's"):
        cli.main(["train", "--task", "adding", "--steps", "1", "--quiet", "--out", str(tmp_path / "run")])
    assert "error:" not in capsys.readouterr().err


def test_a_programming_error_prints_its_traceback_and_exits_1(tmp_path):
    """End to end: the interpreter prints the traceback (the file and line of the bug) and exits 1."""
    import subprocess
    import sys
    from pathlib import Path
    src = str(Path(rnnlab.__file__).parents[1])
    code = ("import sys, rnnlab.study.gradients as g\n"
            "def gradients(*a, **k):\n"
            "    raise TypeError('a bug')\n"
            "g.gradients = gradients\n"
            "from rnnlab.cli.main import main\n"
            f"sys.exit(main(['gradients', '--sweep', '0.5:1:2', '--report', {str(tmp_path / 'g')!r}]))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": src})
    assert p.returncode == 1
    assert "Traceback (most recent call last)" in p.stderr and "TypeError: a bug" in p.stderr
    assert "rnnlab gradients: error" not in p.stderr


def test_rnnlabs_own_error_is_one_line_in_the_commands_words(monkeypatch, tmp_path, capsys):
    """An RnnlabError (any subclass) is the user's: one line on stderr, exit code 2, a config key as its flag."""
    import rnnlab.training.trainer as trainer
    from rnnlab.errors import DataError

    def refuse(*args, **kwargs):
        raise ConfigError("hidden_size: expected an integer >= 1,\n   got 0")
    monkeypatch.setattr(trainer, "train", refuse)
    assert cli.main(["train", "--task", "adding", "--steps", "1", "--quiet", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == "rnnlab train: error: --hidden-size: expected an integer >= 1, got 0\n"

    def bad_data(*args, **kwargs):
        raise DataError("values.csv: row 3: 'x' is not a number")
    monkeypatch.setattr(trainer, "train", bad_data)
    assert cli.main(["train", "--task", "adding", "--steps", "1", "--quiet", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == "rnnlab train: error: values.csv: row 3: 'x' is not a number\n"


def test_a_missing_input_file_is_one_line(tmp_path, capsys):
    assert cli.main(["train", "--config", str(tmp_path / "none.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnlab train: error: config: file ") and "does not exist" in err and err.count("\n") == 1


@pytest.mark.parametrize("text,match", [
    ("@classLabel true a\n@data\n1,x:a\n", "bad number"),
    ("@data\n1,2:a\n", "no '@classLabel true ...' header"),
    (b"@classLabel true a\n@data\n1,2:\xff\n", "not UTF-8 text"),
])
def test_a_bad_ts_file_is_one_line_naming_the_file(tmp_path, capsys, text, match):
    p = tmp_path / "bad.ts"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert cli.main(["train", "--task", "ts", "--ts-train", str(p), "--steps", "1", "--quiet", "--out",
                     str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnlab train: error: ") and str(p) in err and match in err and err.count("\n") == 1


def test_keras_weights_with_a_foreign_tensor_name_are_one_line(tmp_path, capsys):
    from safetensors.numpy import save_file
    save_file({"layerX.kernel": np.zeros((2, 3), np.float32)}, str(tmp_path / "k.safetensors"))
    assert cli.main(["import", str(tmp_path / "k.safetensors"), "--format", "keras", "--cell", "rnn", "--out",
                     str(tmp_path / "l.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "'layerX.kernel' is not named layer<N>[.backward].kernel" in err and err.count("\n") == 1
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    assert cli.main(["import", str(tmp_path / "junk.safetensors"), "--format", "keras", "--cell", "rnn", "--out",
                     str(tmp_path / "m.safetensors")]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err


def test_the_gradients_and_compare_work_is_the_librarys(tmp_path):
    """The commands' work is a library call: rnnlab.study.gradients.gradients and
    rnnlab.study.comparison.plan_comparison (everything checked before any training)."""
    from rnnlab.study.comparison import plan_comparison
    from rnnlab.study.gradients import gradients
    s = gradients(tmp_path / "g", sweep="0.5:1:2", sweep_cells="rnn-tanh,gru", sweep_len=6, sweep_hidden=3)
    assert set(s.numbers) == {"sweep"} and s.sweep_cells == ["rnn-tanh", "gru"]
    assert s.numbers["sweep"]["gru"].shape == (2, 6) and (tmp_path / "g" / "report.html").is_file()
    s = gradients(tmp_path / "h", overrides={"task": "adding", "seq_len": 5, "hidden_size": 3}, at_step=4)
    assert s.numbers["model"]["label"] == "lstm (fresh)" and len(s.numbers["model"]["grad_norm_h"]) == 5
    with pytest.raises(ConfigError, match=r"--at-step: expected a time step in \[0, 4\]"):
        gradients(tmp_path / "h", overrides={"task": "adding", "seq_len": 5, "hidden_size": 3}, at_step=5)
    with pytest.raises(ConfigError, match="--sweep-cells: the cells of a spectral-radius sweep"):
        gradients(tmp_path / "h", sweep_cells="gru")
    c = plan_comparison(None, {"task": "adding", "seq_len": 5, "steps": 2},
                        {"entries": "gru,rnn+nonlinearity=relu", "report": str(tmp_path / "c")})
    assert [label for label, _, _ in c.entries] == ["gru", "rnn+nonlinearity=relu"] and c.runner == "serial"
    assert c.seeds_dir == tmp_path / "c" / "seeds"
    with pytest.raises(ConfigError, match="out: compare writes its report to --report"):
        plan_comparison(None, {"out": str(tmp_path / "x")})
    with pytest.raises(ConfigError, match="workers: only used with seeds > 1"):
        plan_comparison(None, {"task": "adding"}, {"workers": 2, "runner": "pool"})
