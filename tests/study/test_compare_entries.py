"""rnnlab compare as a researcher's control: any model or training setting per entry (read with TrainConfig's own
types), the whole comparison in one TOML file ([compare]) with the flags overriding it, seeds without Ray (the
serial and the pooled runner give the same numbers), thresholds with their metric, diagnostics of every layer
and direction, and the refusals -- each one line, before anything trains."""
import json
import re

import numpy as np
import pytest

from rnnlab.cli import main as cli
from rnnlab.study import compare
from rnnlab.study import diagnostics as diag
from rnnlab.training.config import TrainConfig
from rnnlab.errors import ConfigError
from support import ROOT

EXAMPLES = ROOT / "examples"
TINY = dict(task="adding", seq_len=5, hidden_size=4, batch_size=8, steps=4, eval_every=2, backend="numpy",
            quiet=True)
TINY_FLAGS = ["--seq-len", "5", "--hidden-size", "4", "--batch-size", "8", "--steps", "4", "--eval-every", "2",
              "--backend", "numpy"]


def _no_training(*a, **k):
    raise AssertionError("a refused compare trained a model")


def test_an_entry_sets_any_setting_of_its_model_or_training_with_the_fields_types():
    specs = compare.check_entries(["gru+reset=before", "rnn+nonlinearity=relu", "rnn+recurrent_init=orthogonal",
                                   "lstm+lr=0.01", "lstm+num_layers=2+bidirectional", "lstm+hidden_size=64",
                                   "lstm+layer_norm=false+label=plain",
                                   {"cell": "lstm", "lr": 3e-3, "optimizer": "sgd", "label": "sgd"}])
    assert [(label, cell, over) for label, cell, over in specs] == [
        ("gru+reset=before", "gru", {"reset": "before"}), ("rnn+nonlinearity=relu", "rnn", {"nonlinearity": "relu"}),
        ("rnn+recurrent_init=orthogonal", "rnn", {"recurrent_init": "orthogonal"}),
        ("lstm+lr=0.01", "lstm", {"lr": 0.01}), ("lstm+num_layers=2+bidirectional", "lstm",
                                                 {"num_layers": 2, "bidirectional": True}),
        ("lstm+hidden_size=64", "lstm", {"hidden_size": 64}), ("plain", "lstm", {"layer_norm": False}),
        ("sgd", "lstm", {"lr": 3e-3, "optimizer": "sgd"})]
    assert type(specs[3][2]["lr"]) is float and type(specs[4][2]["num_layers"]) is int


@pytest.mark.parametrize("entries, refusal", [
    (["lstm+steps=10"], r"models: 'lstm\+steps=10': steps is not a setting of one model .*--steps"),
    (["lstm+task=copy"], r"models: 'lstm\+task=copy': task is not a setting of one model"),
    (["lstm+seed=3"], r"models: 'lstm\+seed=3': seed is not a setting of one model"),
    (["lstm+out=x"], r"models: 'lstm\+out=x': out is not a setting of one model"),
    (["lstm+lrr=0.1"], r"models: 'lstm\+lrr=0\.1': unknown option 'lrr'; expected some of .*did you mean 'lr'"),
    (["lstm+num_layers=two"], r"models: 'lstm\+num_layers=two': num_layers needs an integer, as '\+num_layers=1'"),
    (["lstm+lr"], r"models: 'lstm\+lr': lr needs a value, as '\+lr=VALUE'"),
    (["lstm+bidirectional=yes"], r"models: 'lstm\+bidirectional=yes': bidirectional is a switch"),
    (["gru+nonlinearity=relu"], r"models: 'gru\+nonlinearity=relu': nonlinearity is an option of the RNN, not of 'gru'"),
    (["lstm+reset=before"], r"models: 'lstm\+reset=before': reset is an option of the GRU"),
    ([{"cell": "lstm", "lr": "fast"}], r"models: 'lstm\+lr=fast': lr: expected float, got 'fast'"),
    ([{"lr": 0.1}], r"models: .*an entry table needs cell = one of"),
    (["lstm+lr=0.01", {"cell": "lstm", "lr": 0.01, "label": "fast"}],
     r"models: 'fast' is the same model as 'lstm\+lr=0\.01'"),
    (["lstm+label=a", "gru+label=a"], r"models: two entries are labelled 'a'"),
])
def test_an_entry_that_is_not_one_models_setting_is_refused_naming_entry_and_key(entries, refusal):
    with pytest.raises(ConfigError, match=refusal):
        compare.check_entries(entries)


def test_the_compare_table_and_its_refusals():
    st = compare.compare_settings({"entries": ["gru+reset=before", "gru"], "seeds": 5, "threshold": "mse=0.05",
                                   "diagnostics": 10}, {"seeds": 2, "entries": None})
    assert st["seeds"] == 2 and st["entries"] == ["gru+reset=before", "gru"]          # the flag wins
    assert st["threshold"] == ("mse", 0.05) and st["diagnostics"] == 10 and st["report"] == "runs/compare"
    assert compare.compare_settings({"threshold": {"metric": "mse", "value": 1}})["threshold"] == ("mse", 1.0)
    assert compare.compare_settings({"threshold": 0.5})["threshold"] == (None, 0.5)
    for table, refusal in [({"seed": 3}, r"compare: unknown key 'seed' \(did you mean 'seeds'\?\)"),
                           ({"seeds": 0}, r"compare\.seeds: expected an integer >= 1, got 0"),
                           ({"runner": "cluster"}, r"compare\.runner: expected one of"),
                           ({"threshold": "mse=low"}, r"compare\.threshold: expected METRIC=VALUE"),
                           ({"threshold": {"metric": "mse"}}, r"compare\.threshold: expected \{metric"),
                           ({"entries": "rnn", "match": "size"}, r"compare\.match: expected one of"),
                           ({"forget_bias_ablation": 1}, r"compare\.forget_bias_ablation: expected true or false")]:
        with pytest.raises(ConfigError, match=refusal):
            compare.compare_settings(table)
    with pytest.raises(ConfigError, match=r"^workers: the serial runner"):
        compare.check_runner("serial", 3, 2)
    assert compare.check_runner(None, 3, 2) == "pool" and compare.check_runner(None, 3, None) == "serial"
    with pytest.raises(ConfigError, match=r"^runner: 'pool' trains the seeds of seeds > 1"):
        compare.check_runner("pool", 1, None)


def _toml(tmp_path, text, name="c.toml"):
    f = tmp_path / name
    f.write_text(text)
    return str(f)


@pytest.mark.parametrize("text, flags, refusal", [
    ('task = "adding"\n[compare]\nentries = ["rnn"]\nseed = 1\n', [], r"compare: unknown key 'seed'"),
    ('task = "adding"\n[compare]\nentries = ["rnn", "gru"]\nthreshold = "accuracy=0.9"\n', [],
     r"threshold: expected a metric of task 'adding' \['loss', 'mse'\], got 'accuracy'"),
    ('task = "adding"\n[compare]\nentries = ["rnn", "gru"]\nthreshold = "loss"\n', [],
     r"compare\.threshold: expected METRIC=VALUE"),
    ('task = "adding"\n[compare]\nentries = ["rnn", "gru+steps=3"]\n', [], r"models: 'gru\+steps=3': steps is not"),
    ('task = "adding"\n[compare]\nentries = ["rnn", "gru"]\n', ["--threshold", "accuracy=0.9"],
     r"threshold: expected a metric of task 'adding'"),
    ('task = "adding"\ndiagnose_every = 2\n[compare]\nentries = ["rnn"]\ndiagnostics = 2\n', [],
     r".*compare\.diagnostics and diagnose_every both"),
    ('task = "adding"\n[compare]\nentries = ["rnn", "gru"]\nworkers = 2\n', [],
     r"workers: only used with seeds > 1, got workers 2"),
    ('task = "adding"\n[compare]\nentries = ["rnn", "lstm+schedule=step+min_lr=0.0001"]\n', [],
     r"models: 'lstm\+schedule=step\+min_lr=0\.0001': min_lr is a setting of schedule 'cosine'"),
])
def test_a_bad_compare_file_is_one_line_before_any_training(tmp_path, monkeypatch, capsys, text, flags, refusal):
    monkeypatch.setattr(compare, "train", _no_training)
    report = tmp_path / "report"
    code = cli.main(["compare", "--config", _toml(tmp_path, text), "--report", str(report)] + TINY_FLAGS[:2] + flags)
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("rnnlab compare: error: "), err
    assert re.match(refusal, err[0][len("rnnlab compare: error: "):]), err[0]
    assert not report.exists()


def test_train_refuses_a_compare_table_instead_of_ignoring_it(tmp_path, capsys):
    f = _toml(tmp_path, 'task = "adding"\nsteps = 2\n[compare]\nentries = ["rnn"]\n')
    assert cli.main(["train", "--config", f]) == 2
    assert "[compare] is a table of rnnlab compare" in capsys.readouterr().err


def test_the_serial_and_the_pooled_runner_give_the_same_numbers():
    cfg = TrainConfig(**TINY)
    kw = dict(models=("rnn", "gru+reset=before+hidden_size=3"), seeds=3)
    res = compare.compare(cfg, runner="serial", **kw)
    serial = res["seeds"]
    pooled = compare.compare(cfg, runner="pool", workers=2, **kw)["seeds"]
    assert res["models"]["gru+reset=before+hidden_size=3"]["hidden_size"] == 3          # its own size: kept
    assert res["models"]["rnn"]["hidden_size"] > 4                    # matched to the LSTM's count at 4 units
    assert serial["runner"] == "serial" and pooled["runner"] == "pool" and serial["seeds"] == [0, 1, 2]
    assert [r["values"] for r in serial["rows"]] == [r["values"] for r in pooled["rows"]]     # bit for bit
    assert serial["curves"] == pooled["curves"]
    for r in serial["rows"]:
        assert r["seeds"] == 3 and len(set(r["values"])) == 3                  # three different seeds ran
        assert r["ci95"] == pytest.approx(4.302652729749464 * np.std(r["values"], ddof=1) / np.sqrt(3))
    # the gradient flow over seeds: every seed's curve relative to its own last step, mean and 95 % band
    assert serial["gradient_bands"] == pooled["gradient_bands"]
    for label, b in serial["gradient_bands"].items():
        for key in ("grad_norm_h", "init_grad_norm_h", "jacobian_norm"):
            mean, lo, hi = (np.array(b[key][k]) for k in ("mean", "lo", "hi"))
            assert mean[0] == pytest.approx(1.0) and lo[0] == pytest.approx(1.0)    # distance 0: 1 for every seed
            assert (lo <= mean + 1e-12).all() and (mean <= hi + 1e-12).all() and (hi > lo).any()
        g0 = np.asarray(res["models"][label]["grad_norm_h"])
        assert g0[0] / g0[-1] in b["grad_ratio"]["values"]                # seed 0's own run is one of them
        v = np.log10(b["grad_ratio"]["values"])                           # geometric mean, interval of the logs
        assert b["grad_ratio"]["geomean"] == pytest.approx(10 ** v.mean())
        assert b["grad_ratio"]["hi"] == pytest.approx(10 ** (v.mean() + 4.302652729749464 * v.std(ddof=1) / np.sqrt(3)))


def test_one_file_runs_the_comparison_with_intervals_settings_and_every_layer(tmp_path, capsys):
    report = tmp_path / "r"
    code = cli.main(["compare", "--config", str(EXAMPLES / "gru-reset.toml"), "--report", str(report), "--seeds", "2",
                     "--diagnose-every", "2", "--num-layers", "2", "--bidirectional"] + TINY_FLAGS)
    out = capsys.readouterr().out
    assert code == 0, out
    res = json.loads((report / "compare.json").read_text())
    assert list(res["models"]) == ["gru+reset=after", "gru+reset=before"]
    assert res["seeds"]["runner"] == "serial" and all(r["seeds"] == 2 for r in res["seeds"]["rows"])
    assert res["threshold"] == {"metric": "mse", "value": 0.05}                      # from the file
    e = res["models"]["gru+reset=before"]
    assert list(e["layers"]) == ["layer 0", "layer 0 reverse", "layer 1", "layer 1 reverse"]
    assert all(len(v["gates"]["update_carry"]) == 5 for v in e["layers"].values())
    rec = e["over_training"][-1]                                 # diagnostics.jsonl's records, over training
    assert rec["step"] == 4 and rec["grad_ratio"] > 0 and set(rec["gates"]) == set(e["layers"])
    assert set(rec["spectral_norms"]) == {"weight_hh_l0", "weight_hh_l0_reverse", "weight_hh_l1",
                                          "weight_hh_l1_reverse"}
    md = (report / "summary.md").read_text()
    assert "| reset |" in md and "95 % interval" in md and "## Over training" in md
    assert "layer 0, layer 0 reverse, layer 1, layer 1 reverse" in md and "jacobian_norms_layer_1_reverse" in md
    assert "band of its 95 % Student-t interval on the log scale" in md
    for stem in ("learning_curves", "jacobian_norms_layer_1_reverse", "gates_layer_1", "over_training",
                 "grad_norms", "jacobian_norms_seeds"):
        assert (report / "figures" / f"{stem}.png").is_file()


def test_every_example_file_is_a_valid_comparison(monkeypatch):
    from rnnlab.training.config import read_toml, resolve
    for f in sorted(EXAMPLES.glob("*.toml")):
        st = compare.compare_settings(read_toml(f)["compare"])
        cfg = resolve(f, {}, one_model=False, table="compare")
        assert st["seeds"] > 1 and len(compare.check_entries(st["entries"], cfg)) >= 2, f


def _reverse_as_forward(layer):
    """A one-direction copy of ``layer`` whose weights are the reverse direction's."""
    one = type(layer)(layer.input_size, layer.hidden_size, dtype="float64", seed=1)
    params = dict(layer.named_parameters())
    for name, W in dict(one.named_parameters()).items():
        W[...] = params[name + "_reverse"]
    return one


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "IndRNN", "LRU", "MinGRU"])
def test_the_reverse_directions_diagnostics_are_those_of_its_reading_of_the_sequence(cls, rng):
    from rnnlab.engine import layers
    layer = getattr(layers, cls)(4, 5, bidirectional=True, dtype="float64", seed=3)
    one = _reverse_as_forward(layer)
    T, lengths = 7, np.array([7, 4, 6])
    x = rng.standard_normal((T, 3, 4))
    if layer.family != "diagonal":
        for a, b in zip(diag.state_jacobians(layer, x[:, 1], 0, d=1), diag.state_jacobians(one, x[::-1, 1], 0)):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    xr = diag.reverse_within(x, lengths)
    assert np.array_equal(xr[:4, 1], x[3::-1, 1]) and np.array_equal(xr[4:, 1], x[4:, 1])
    np.testing.assert_allclose(diag.jacobian_norms(layer, x, 0, 3, lengths, d=1),
                               diag.jacobian_norms(one, xr, 0, 3, lengths), rtol=0, atol=1e-12)
    got, want = diag.gate_stats(layer, x, lengths, d=1), diag.gate_stats(one, xr, lengths)
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k] if k != "saturation" else list(got[k].values())),
                                   np.asarray(want[k] if k != "saturation" else list(want[k].values())), atol=1e-12)
    with pytest.raises(ConfigError, match=r"direction: expected an index in \[0, 0\], got 1"):
        diag.jacobian_norms(one, xr, 0, d=1)


def test_the_spectral_sweep_takes_any_cell():
    res = diag.sweep([0.5, 0.9], cells=("gru+reset=before", "indrnn", "lru", "rnn-tanh"), T=6, hidden_size=4,
                     batch_size=3)
    for c in ("gru+reset=before", "indrnn", "lru", "rnn-tanh"):
        assert res[c].shape == (2, 6) and np.all(res[c][:, 0] == 1.0) and np.isfinite(res[c]).all()
    assert res["lru"][0, -1] < res["lru"][1, -1]           # |lambda| scaled down: less of the gradient from afar
    with pytest.raises(ConfigError, match=r"cells: the mingru layer has no recurrent weights"):
        diag.sweep([0.9], cells=("mingru",), T=4, hidden_size=3)
    with pytest.raises(ConfigError, match=r"radii: the LRU's \|lambda\| .* expected radii < 1"):
        diag.sweep([1.2], cells=("lru",), T=4, hidden_size=3)
    with pytest.raises(ConfigError, match=r"cells: 'lstm\+lr=0\.1': lr is not a setting of the layer"):
        diag.sweep([0.9], cells=("lstm+lr=0.1",), T=4, hidden_size=3)


def test_the_default_threshold_of_a_regression_is_a_regression_metric():
    from types import SimpleNamespace
    task = SimpleNamespace(name="data:x.csv", problem="regress", metrics=("loss", "mse", "mae"),
                           baseline=lambda: ("predict the mean", 0.8))
    assert compare.resolve_threshold(task, None) == ("mse", 0.8)
    assert compare.resolve_threshold(task, ("mae", 0.1)) == ("mae", 0.1)
    with pytest.raises(ConfigError, match=r"threshold: give a value with metric 'mae'"):
        compare.resolve_threshold(task, ("mae", None))
    with pytest.raises(ConfigError, match=r"threshold: expected a metric of task 'data:x\.csv' \['loss', 'mse', "
                                          r"'mae'\], got 'accuracy'"):
        compare.resolve_threshold(task, ("accuracy", 0.9))


def test_gradients_draws_every_layer_and_direction_and_sweeps_any_cell(tmp_path, capsys):
    assert cli.main(["gradients", "--task", "adding", "--model", "gru", "--num-layers", "2", "--bidirectional",
                     "--seq-len", "6", "--hidden-size", "4", "--report", str(tmp_path / "g")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"layer 0 [\d.e-]+; layer 0 reverse [\d.e-]+; layer 1 [\d.e-]+; layer 1 reverse", out), out
    for stem in ("jacobian_norms", "jacobian_norms_layer_1_reverse", "gates_layer_0_reverse"):
        assert (tmp_path / "g" / "figures" / f"{stem}.png").is_file()
    assert cli.main(["gradients", "--sweep", "0.5:0.9:2", "--sweep-cells", "gru+reset=before,lru", "--sweep-len", "5",
                     "--sweep-hidden", "3", "--report", str(tmp_path / "s")]) == 0
    assert "gru+reset=before" in capsys.readouterr().out
    assert cli.main(["gradients", "--sweep-cells", "lru", "--report", str(tmp_path / "n")]) == 2
    assert capsys.readouterr().err.startswith("rnnlab gradients: error: --sweep-cells: the cells of a spectral")


def test_a_run_folders_diagnostics_are_written_as_documented_and_plotted_over_training(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--task", "adding", "--model", "lstm", "--num-layers", "2", "--diagnose-every", "2",
                     "--out", str(run), "--quiet"] + TINY_FLAGS) == 0
    recs = [json.loads(line) for line in (run / "diagnostics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 4]
    for r in recs:
        assert {"step", "split", "clipped_steps", "loss_at_last_step", "grad_norm_h", "grad_norm_c", "grad_ratio",
                "spectral_norms", "gates"} == set(r)
        assert r["grad_ratio"] == pytest.approx(r["grad_norm_h"][0] / r["grad_norm_h"][-1])
        assert set(r["spectral_norms"]) == {"weight_hh_l0", "weight_hh_l1"} and set(r["gates"]) == {"layer 0", "layer 1"}
        assert set(r["gates"]["layer 1"]) == {"saturation", "forget_mean"} and 0 < r["gates"]["layer 1"]["forget_mean"] < 1
    assert cli.main(["gradients", str(run), "--report", str(tmp_path / "g")]) == 0
    assert "## Over training" in (tmp_path / "g" / "summary.md").read_text()
    assert (tmp_path / "g" / "figures" / "over_training.png").is_file()
