"""The command line's answers to a new user's slips: one line each, naming the option, the file or the cause."""
import os
import stat

import numpy as np
import pytest

import rnnlab
from rnnlab.cli import commands as cli
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
