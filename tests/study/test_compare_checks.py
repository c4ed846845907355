"""rnnlab compare refuses what it would silently get wrong -- an entry given twice (the results are keyed by
entry: one would be lost), an option given twice in an entry, an option of another cell, a threshold that is
not a finite number -- and every entry that cannot train, before the first model trains or the report folder
is made, in one line that names the flag."""
import re

import pytest

from rnnlab.cli import main as cli
from rnnlab.study import compare
from rnnlab.errors import ConfigError

ARGS = ["compare", "--task", "adding", "--seq-len", "6", "--steps", "4", "--eval-every", "2", "--quiet"]


def _no_training(*a, **k):
    raise AssertionError("a refused compare trained a model")


BAD = [
    (["--models", "lstm,lstm"], r"models: 'lstm' is given twice"),
    (["--models", "gru+zoneout=0.1,gru+zoneout=0.1"], r"models: 'gru\+zoneout=0\.1' is given twice"),
    (["--models", "rnn,gru+zoneout=0.1,gru+zoneout=.1"],
     r"models: 'gru\+zoneout=\.1' is the same model as 'gru\+zoneout=0\.1'"),
    (["--models", "lstm+layer_norm,lstm+layer-norm"], r"models: 'lstm\+layer-norm' is the same model as"),
    (["--models", "lstm+zoneout=0.1+zoneout=0.2"], r"models: 'lstm\+zoneout=0\.1\+zoneout=0\.2': option 'zoneout' "
     r"given twice"),
    (["--models", "rnn,gru+forget_bias=1"], r"models: 'gru\+forget_bias=1': forget_bias is an option of the LSTM"),
    (["--models", "rnn,lstm", "--threshold", "nan"], r"threshold: expected a finite number, got nan"),
    (["--models", "rnn,lstm", "--threshold", "inf"], r"threshold: expected a finite number, got inf"),
    (["--models", "rnn,lstm", "--threshold=-inf"], r"threshold: expected a finite number, got -inf"),
    # an entry that cannot train is found before the entries before it train
    (["--models", "rnn,gru+peephole"], r"models: 'gru\+peephole': peephole is an option of the LSTM, not of 'gru'"),
    (["--models", "rnn,gru+zoneout_cell=0.1"], r"models: 'gru\+zoneout_cell=0\.1': zoneout_cell is an option of the LSTM, not of 'gru'"),
    (["--models", "rnn,lstm+zoneout=1.5"], r"models: 'lstm\+zoneout=1\.5': zoneout: expected a number < 1\.0"),
    (["--models", "rnn,lstm+proj_size=500"], r"models: 'lstm\+proj_size=500': proj_size: expected 0 < proj_size"),
]


@pytest.mark.parametrize("flags, refusal", BAD)
def test_a_bad_compare_option_is_one_line_before_any_training(tmp_path, monkeypatch, capsys, outcome, flags, refusal):
    monkeypatch.setattr(compare, "train", _no_training)
    report = tmp_path / "report"
    assert cli.main(ARGS + flags + ["--report", str(report)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("rnnlab compare: error: "), err
    assert re.match(refusal, err[0][len("rnnlab compare: error: "):]), err[0]
    assert not report.exists()                       # the corrected command writes a fresh report there
    outcome("compare: a duplicated --models entry, a bad entry or a non-finite --threshold",
            "one-line error, nothing written")


def test_the_checks_cmd_compare_can_call_first():
    assert compare.check_entries(["rnn", " gru+zoneout=0.1 ", "lstm+layer_norm", "lstm"]) == [
        ("rnn", "rnn", {}), ("gru+zoneout=0.1", "gru", {"zoneout": 0.1}),
        ("lstm+layer_norm", "lstm", {"layer_norm": True}), ("lstm", "lstm", {})]
    with pytest.raises(ConfigError, match=r"models: 'mingru' is given twice"):
        compare.check_entries(("mingru", "rnn", "mingru"))
    with pytest.raises(ConfigError, match=r"models: expected some of .*, got none"):
        compare.check_entries(())
    assert compare.check_threshold(0.5) == 0.5 and compare.check_threshold(3) == 3.0
    for bad in (float("nan"), float("inf"), "0.1", None, True):
        with pytest.raises(ConfigError, match=r"^threshold: expected a"):
            compare.check_threshold(bad)


def test_the_library_call_checks_too(monkeypatch):
    from rnnlab.training.config import TrainConfig
    monkeypatch.setattr(compare, "train", _no_training)
    cfg = TrainConfig(task="adding", seq_len=6, steps=4, eval_every=2, quiet=True)
    for kw, refusal in [({"models": ("lstm", "lstm")}, r"models: 'lstm' is given twice"),
                        ({"threshold": ("mse", float("nan"))}, r"threshold: expected a finite number, got nan"),
                        ({"threshold": ("accuracy", 0.9)}, r"threshold: expected a metric of task 'adding'"),
                        ({"target_params": 0}, r"params: expected an integer >= 1, got 0")]:
        with pytest.raises(ConfigError, match=refusal):
            compare.compare(cfg, **{"models": ("rnn", "lstm"), **kw})
    assert "mae" in compare.LOWER_IS_BETTER             # the data task's regression metric: lower is better
