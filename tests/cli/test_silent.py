"""The six silent failures of the adversarial probe, each now a right answer or a one-line error (and nothing of
the user's lost). Every case here failed on main before they were fixed; each is counted in docs/reliability.md."""
import json
import os

import numpy as np
import pytest

from rnnlab.cli import main as cli

pd = pytest.importorskip("pandas")


def run(args, capsys):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code, err, command):
    assert code == 2, err
    assert err.startswith(f"rnnlab {command}: error: ") and err.count("\n") == 1 and "Traceback" not in err, err


def good_frame(n=48, seed=0):
    """id, time, a, b, target: the label is the sign of a's mean; b is noise on another scale."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        s = 1.0 if i % 2 else -1.0
        for t in range(6):
            rows.append({"id": f"s{i:02d}", "time": t, "a": rng.normal(s), "b": 50 + 10 * rng.normal(),
                         "target": "up" if s > 0 else "down"})
    return pd.DataFrame(rows)


T = ["train", "--model", "gru", "--hidden-size", "8", "--steps", "40", "--batch-size", "8", "--lr", "0.02",
     "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("silent")
    good_frame().to_csv(d / "good.csv", index=False)
    assert cli.main([*T, "--data", str(d / "good.csv"), "--out", str(d / "run")]) == 0
    return d


# ------------------------------------------------------------------ 1. columns by name
def test_evaluate_predict_and_val_data_read_features_by_name(trained, tmp_path, capsys, outcome):
    d = trained
    df = pd.read_csv(d / "good.csv")
    df[["b", "target", "time", "a", "id"]].to_csv(tmp_path / "reordered.csv", index=False)
    df.assign(extra=1.0)[["extra", "b", "a", "id", "time", "target"]].to_csv(tmp_path / "extra.csv", index=False)
    got = {}
    for name in ("good.csv", "reordered.csv", "extra.csv"):
        path = d / name if name == "good.csv" else tmp_path / name
        code, _, err = run(["evaluate", d / "run", "--data", path, "--json", tmp_path / f"{name}.json"], capsys)
        assert code == 0, err
        got[name] = json.loads((tmp_path / f"{name}.json").read_text())
        code, _, err = run(["predict", d / "run", "--data", path, "--out", tmp_path / f"p-{name}"], capsys)
        assert code == 0, err
    assert got["reordered.csv"] == got["good.csv"] == got["extra.csv"]
    assert got["good.csv"]["accuracy"] > 0.8
    preds = [pd.read_csv(tmp_path / f"p-{n}") for n in ("good.csv", "reordered.csv", "extra.csv")]
    pd.testing.assert_frame_equal(preds[0], preds[1])
    pd.testing.assert_frame_equal(preds[0], preds[2])
    outcome("evaluate/predict: columns reordered or extra", "same result as the canonical file")

    df.rename(columns={"a": "alpha"}).to_csv(tmp_path / "renamed.csv", index=False)
    for cmd in (["evaluate", d / "run", "--data", tmp_path / "renamed.csv"],
                ["predict", d / "run", "--data", tmp_path / "renamed.csv", "--out", tmp_path / "x.csv"]):
        code, _, err = run(cmd, capsys)
        one_line_error(code, err, cmd[0])
        assert "column 'a' is missing" in err and "by name" in err
    assert not (tmp_path / "x.csv").exists()
    outcome("evaluate/predict: a feature column renamed", "one-line error naming the column")

    # --val-data in another column order: the same validation metrics as the same rows in the training order
    df.to_csv(tmp_path / "val.csv", index=False)
    for name, frame in (("v1", df), ("v2", df[["target", "b", "a", "time", "id"]])):
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        code, _, err = run([*T, "--data", d / "good.csv", "--val-data", tmp_path / f"{name}.csv", "--out",
                            tmp_path / f"run-{name}"], capsys)
        assert code == 0, err
    last = [json.loads((tmp_path / f"run-{n}" / "metrics.jsonl").read_text().splitlines()[-1]) for n in ("v1", "v2")]
    assert last[0] == last[1]
    outcome("train --val-data: columns reordered", "same result as the canonical file")


def test_estimators_read_long_frames_by_name_and_keep_feature_names(outcome):
    from rnnlab.estimators import RNNClassifier
    df = good_frame(32)
    clf = RNNClassifier(cell="gru", hidden_size=8, epochs=3, id_col="id", time_col="time", target_col="target")
    clf.fit(df)
    assert list(clf.feature_names_in_) == ["a", "b"]
    p1 = clf.predict_proba(df.drop(columns="target"))
    p2 = clf.predict_proba(df[["b", "time", "id", "a"]])
    np.testing.assert_array_equal(p1, p2)
    with pytest.raises(ValueError, match="column 'a' is missing"):
        clf.predict(df.rename(columns={"a": "alpha"}))
    outcome("estimators: a long frame's columns reordered or renamed", "same result or a clear error")

    wide = pd.DataFrame(np.random.default_rng(0).normal(size=(20, 5)), columns=[f"t{i}" for i in range(5)])
    y = (wide["t0"] > 0).map({True: "p", False: "n"})
    clf = RNNClassifier(cell="gru", hidden_size=4, epochs=2).fit(wide, y)
    assert list(clf.feature_names_in_) == list(wide.columns)
    with pytest.raises(ValueError, match="Feature names must be in the same order"):
        clf.predict(wide[wide.columns[::-1]])
    outcome("estimators: a wide frame's columns reordered", "scikit-learn's feature-name error")


# ------------------------------------------------------------------ 2. time columns
def _dated(df, fmt):
    days = pd.Timestamp("2024-12-25") + pd.to_timedelta(df["time"] * 9, unit="D")   # crosses months and a year
    return df.assign(time=days.dt.strftime(fmt))


def test_text_times_are_parsed_never_sorted_as_text(tmp_path, capsys, outcome):
    df = good_frame(24)
    codes = pd.factorize(df["id"])[0]                  # the ids keep their order; rows within each id are shuffled
    shuffled = df.iloc[np.lexsort((np.random.default_rng(1).random(len(df)), codes))]
    (d := tmp_path).joinpath("x").mkdir()
    df.to_csv(d / "num.csv", index=False)
    _dated(shuffled, "%Y-%m-%d").to_csv(d / "iso.csv", index=False)
    _dated(shuffled, "%d/%m/%Y").to_csv(d / "dmy.csv", index=False)
    res = {}
    for name, extra in (("num", []), ("iso", []), ("dmy", ["--time-format", "%d/%m/%Y"])):
        code, _, err = run([*T, "--data", d / f"{name}.csv", *extra, "--out", d / name, "--steps", "10"], capsys)
        assert code == 0, err
        res[name] = (d / name / "metrics.jsonl").read_text().splitlines()[-1]
    assert res["num"] == res["iso"] == res["dmy"]                 # the same order of steps, so the same run
    outcome("train --data: dates (ISO 8601, or --time-format)", "same result as numeric times")

    code, _, err = run([*T, "--data", d / "dmy.csv", "--out", d / "bad"], capsys)
    one_line_error(code, err, "train")
    assert "--time-format" in err and "neither numbers nor ISO 8601" in err and not (d / "bad").exists()
    outcome("train --data: dd/mm/yyyy dates without --time-format", "one-line error naming --time-format")

    stray = df.astype({"time": object})
    stray.loc[7, "time"] = "t7"
    stray.to_csv(d / "stray.csv", index=False)
    code, _, err = run([*T, "--data", d / "stray.csv", "--out", d / "bad"], capsys)
    one_line_error(code, err, "train")
    assert "data row 8" in err and "'t7'" in err and not (d / "bad").exists()
    outcome("train --data: one text cell in a numeric time column", "one-line error naming the row")

    code, _, err = run([*T, "--data", d / "iso.csv", "--time-format", "%d/%m/%Y", "--out", d / "bad"], capsys)
    one_line_error(code, err, "train")
    assert err.startswith("rnnlab train: error: --time-format: data row 1") and "does not match" in err
    outcome("train --data: times that do not match --time-format", "one-line error naming the row")


# ------------------------------------------------------------------ 3. overflow
@pytest.mark.parametrize("column,value,match", [
    ("target", 1e308, "--target-col: column 'target' has values too large"),
    ("a", 1e308, "feature 'a' has values too large to standardise"),
    ("a", 1e200, "feature 'a' has values too large to standardise"),
])
def test_overflow_is_refused_not_trained_on(tmp_path, capsys, column, value, match, outcome):
    df = good_frame(16).assign(target=lambda f: f.groupby("id")["a"].transform("mean") * 2.0)
    df.loc[df["id"] == df["id"][3] if column == "target" else 3, column] = value
    df.to_csv(tmp_path / "big.csv", index=False)
    code, _, err = run([*T, "--data", tmp_path / "big.csv", "--problem", "regress", "--out", tmp_path / "r"], capsys)
    one_line_error(code, err, "train")
    assert match in err and not (tmp_path / "r").exists(), err
    outcome("train --data: a value that overflows (1e200, 1e308)", "one-line error naming the column")


def test_unstandardised_overflow_and_metrics_stay_strict_json(tmp_path, capsys, outcome):
    df = good_frame(16)
    df.loc[3, "b"] = 1e35
    df.to_csv(tmp_path / "big.csv", index=False)
    code, _, err = run([*T, "--data", tmp_path / "big.csv", "--no-standardize", "--out", tmp_path / "r"], capsys)
    one_line_error(code, err, "train")
    assert "feature 'b' reaches 1e+35" in err
    outcome("train --data --no-standardize: a feature beyond float32", "one-line error naming the column")
    code, _, err = run(["train", "--task", "adding", "--seq-len", "8", "--hidden-size", "4", "--steps", "12",
                        "--lr", "1e6", "--clip", "0", "--on-nonfinite", "skip", "--log-every", "1", "--eval-every",
                        "0", "--quiet", "--out", tmp_path / "skip"], capsys)
    for line in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in metrics.jsonl"))


# ------------------------------------------------------------------ 4. the learning rate stays in [min_lr, lr]
@pytest.mark.parametrize("flags,match", [
    (["--schedule", "cosine", "--min-lr", "-1"], "--min-lr: expected a number >= 0.0"),
    (["--schedule", "step", "--lr-gamma", "-1"], "--lr-gamma: expected a number > 0.0"),
    (["--schedule", "step", "--lr-gamma", "2"], "--lr-gamma: expected a number <= 1.0"),
    (["--schedule", "cosine", "--min-lr", "1", "--lr", "0.001"], "--min-lr: expected a number <= lr (0.001)"),
    (["--schedule", "step", "--lr-step-size", "0"], "--lr-step-size: expected an integer >= 1"),
    (["--model", "gru", "--forget-bias", "1"], "--forget-bias: an option of the LSTM only"),
    (["--model", "rnn", "--reset", "before"], "--reset: an option of the GRU only"),
    (["--model", "lstm", "--nonlinearity", "relu"], "--nonlinearity: an option of the RNN only"),
    (["--epochs", "2", "--steps", "5"], "--epochs: give epochs (2) or steps (5), not both"),
    (["--distributed", "mpi"], "distributed: 'mpi' needs several processes"),
    (["--lr-gamma", "0.1"], "--lr-gamma: a setting of --schedule step, got schedule 'constant'"),
    (["--schedule", "cosine", "--lr-step-size", "2"], "--lr-step-size: a setting of --schedule step"),
    (["--schedule", "step", "--min-lr", "0.0005"], "--min-lr: a setting of --schedule cosine"),
    (["--mlflow-uri", "http://127.0.0.1:9"], "--mlflow-uri: a setting of --track mlflow, which is not on"),
    (["--id-col", "pid"], "--id-col: an option of your own data (--data FILE), got it with task 'adding'"),
    (["--val-data", "x.csv"], "--val-data: an option of your own data"),
])
def test_settings_are_refused_before_the_run_folder(tmp_path, capsys, flags, match, outcome):
    code, _, err = run(["train", "--task", "adding", "--seq-len", "8", "--hidden-size", "4", "--quiet", *flags,
                        "--out", tmp_path / "run"], capsys)
    one_line_error(code, err, "train")
    assert match in err and not (tmp_path / "run").exists(), err
    outcome("train: a schedule, cell or run setting out of range", "one-line error, nothing written")


# ------------------------------------------------------------------ 5. nothing of the user's overwritten
def test_predict_never_writes_over_its_input_or_an_unforced_file(trained, tmp_path, capsys, outcome):
    d = trained
    mine = tmp_path / "mine.csv"
    pd.read_csv(d / "good.csv").to_csv(mine, index=False)
    before = mine.read_bytes()
    for out, force in ((mine, []), (mine, ["--force"]), (tmp_path / "." / "mine.csv", ["--force"])):
        code, _, err = run(["predict", d / "run", "--data", mine, "--out", out, *force], capsys)
        one_line_error(code, err, "predict")
        assert "also an input" in err
    assert mine.read_bytes() == before
    outcome("predict --out equal to --data (with and without --force)", "one-line error, the data unchanged")

    other = tmp_path / "preds.csv"
    other.write_text("keep me\n")
    os.chmod(other, 0o600)
    code, _, err = run(["predict", d / "run", "--data", mine, "--out", other], capsys)
    one_line_error(code, err, "predict")
    assert "already exists; pass --force" in err and other.read_text() == "keep me\n"
    code, _, err = run(["predict", d / "run", "--data", mine, "--out", other, "--force"], capsys)
    assert code == 0, err
    assert other.read_text().startswith("id,prediction") and (other.stat().st_mode & 0o777) == 0o600
    outcome("predict --out an existing file", "refused; with --force replaced, its mode kept")

    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "target.csv")
    code, _, err = run(["predict", d / "run", "--data", mine, "--out", link, "--force"], capsys)
    one_line_error(code, err, "predict")
    assert "symbolic link" in err and link.is_symlink() and not (tmp_path / "target.csv").exists()
    outcome("predict --out a symbolic link", "one-line error, nothing written")


@pytest.mark.parametrize("cmd", [
    ["export", "RUN", "--format", "onnx", "--out", "EXISTING"],
    ["export", "RUN", "--format", "torch", "--out", "EXISTING"],
    ["export", "RUN", "--format", "keras", "--out", "EXISTING"],
    ["evaluate", "RUN", "--json", "EXISTING"],
    ["export", "RUN", "--format", "torch", "--out", "RUN/model.safetensors", "--force"],
])
def test_exports_and_json_refuse_existing_files(trained, tmp_path, capsys, cmd, outcome):
    existing = tmp_path / ("existing.onnx" if "onnx" in cmd else "existing.safetensors")
    existing.write_bytes(b"user's file")
    args = [str(trained / "run") + a[3:] if a.startswith("RUN") else (existing if a == "EXISTING" else a)
            for a in cmd]
    before = (trained / "run" / "model.safetensors").read_bytes()
    code, _, err = run(args, capsys)
    one_line_error(code, err, cmd[0])
    assert existing.read_bytes() == b"user's file" and (trained / "run" / "model.safetensors").read_bytes() == before
    outcome(f"{cmd[0]} --out/--json an existing file or the input", "one-line error, nothing written")


def test_export_to_a_missing_folder_and_an_unwritable_one(trained, tmp_path, capsys, outcome):
    for fmt in ("onnx", "torch", "keras"):
        out = tmp_path / "new" / fmt / ("m.onnx" if fmt == "onnx" else "m.safetensors")
        code, _, err = run(["export", trained / "run", "--format", fmt, "--out", out], capsys)
        assert code == 0 and out.is_file(), err
    (tmp_path / "afile").write_text("x")                      # a folder that cannot be made, even by root
    for fmt in ("onnx", "torch", "keras"):
        code, _, err = run(["export", trained / "run", "--format", fmt, "--out",
                            tmp_path / "afile" / ("m.onnx" if fmt == "onnx" else "m.safetensors")], capsys)
        one_line_error(code, err, "export")
        assert "is a file" in err
    outcome("export --out in a missing folder or under a file", "written, or a one-line error")


@pytest.mark.parametrize("name", ["model.safetensors", "checkpoint.safetensors", "metrics.jsonl"])
def test_train_out_never_writes_over_files_rnnlab_did_not_write(tmp_path, capsys, name, outcome):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / name).write_bytes(b"precious")
    code, _, err = run(["train", "--task", "adding", "--seq-len", "8", "--hidden-size", "4", "--steps", "2",
                        "--quiet", "--out", folder], capsys)
    one_line_error(code, err, "train")
    assert "not a run of rnnlab's" in err and (folder / name).read_bytes() == b"precious"
    assert not (folder / "config.toml").exists()
    outcome("train --out a folder holding files rnnlab did not write", "one-line error, nothing written")


def test_train_out_a_file_and_late_json_paths(tmp_path, capsys, outcome):
    f = tmp_path / "afile"
    f.write_text("x")
    code, _, err = run(["train", "--task", "adding", "--steps", "2", "--quiet", "--out", f], capsys)
    one_line_error(code, err, "train")
    assert "is a file" in err
    code, _, err = run(["train", "--task", "adding", "--seq-len", "8", "--hidden-size", "4", "--steps", "2",
                        "--quiet", "--out", tmp_path / "run", "--json", tmp_path / "nodir" / "afile" / "x.json"],
                       capsys)
    assert code == 0, err                                          # a missing folder for --json is made
    f2 = tmp_path / "f2"
    f2.write_text("x")
    code, _, err = run(["train", "--task", "adding", "--steps", "2", "--quiet", "--out", tmp_path / "run2",
                        "--json", f2 / "x.json"], capsys)
    one_line_error(code, err, "train")
    assert "--json" in err and not (tmp_path / "run2").exists()     # checked before training
    outcome("train --out a file, --json under a file", "one-line error, nothing written")


def test_runs_work_from_another_folder(tmp_path, capsys, monkeypatch, outcome):
    monkeypatch.chdir(tmp_path)
    good_frame(16).to_csv("d.csv", index=False)
    code, _, err = run([*T, "--data", "d.csv", "--steps", "4", "--checkpoint-every", "2", "--out", "run"], capsys)
    assert code == 0, err
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    for cmd in (["evaluate", "../run"], ["resume", "../run", "--steps", "6"], ["gradients", "../run", "--report",
                                                                                "rep"]):
        code, _, err = run(cmd, capsys)
        assert code == 0, (cmd, err)
    code, _, err = run(["resume", "../run", "--steps", "3"], capsys)
    one_line_error(code, err, "resume")
    assert "at step 6 already" in err
    outcome("evaluate/resume/gradients from another folder", "ok")


# ------------------------------------------------------------------ the classes of rough edges
def test_decimal_parquet_and_mostly_numeric_columns(tmp_path, capsys, outcome):
    import decimal
    pytest.importorskip("pyarrow")
    df = good_frame(16)
    dec = df.assign(a=df["a"].map(lambda v: decimal.Decimal(f"{v:.6f}")))
    dec.to_parquet(tmp_path / "dec.parquet")
    code, out, err = run([*T, "--data", tmp_path / "dec.parquet", "--steps", "2", "--out", tmp_path / "r"], capsys)
    assert code == 0, err
    assert "2 features" in out and "left out" not in out                 # the decimal column is a feature
    outcome("train --data: a Parquet decimal column", "read as numbers")

    bad = df.astype({"b": object})
    bad.loc[5, "b"] = "n.a."
    bad.to_csv(tmp_path / "cell.csv", index=False)
    code, _, err = run([*T, "--data", tmp_path / "cell.csv", "--out", tmp_path / "r2"], capsys)
    one_line_error(code, err, "train")
    assert "column 'b' is numeric but data row 6" in err and not (tmp_path / "r2").exists()
    outcome("train --data: one bad cell in a numeric feature column", "one-line error naming the row")

    df.to_csv(tmp_path / "d.csv", index=False)
    for cols, match in (("a,a", "named twice"), ("a,time", "is the time column")):
        code, _, err = run([*T, "--data", tmp_path / "d.csv", "--feature-cols", cols, "--out", tmp_path / "r3"],
                           capsys)
        one_line_error(code, err, "train")
        assert match in err and not (tmp_path / "r3").exists()
    outcome("train --feature-cols naming a column twice or the time column", "one-line error")


def test_short_ids_messages_fit_the_command(trained, tmp_path, capsys, outcome):
    df = pd.read_csv(trained / "good.csv")
    df.to_csv(tmp_path / "d.csv", index=False)
    code, _, err = run([*T, "--data", tmp_path / "d.csv", "--min-length", "8", "--out", tmp_path / "r"], capsys)
    one_line_error(code, err, "train")
    assert "fewer than 8 rows" in err and "one row" not in err and "(6 row(s)" in err
    short = df[~((df["id"] == "s01") & (df["time"] > 0))]
    short.to_csv(tmp_path / "short.csv", index=False)
    code, _, err = run(["predict", trained / "run", "--data", tmp_path / "short.csv", "--out", tmp_path / "p.csv"],
                       capsys)
    one_line_error(code, err, "predict")
    assert "trained with --min-length 2" in err and "pass min_length" not in err
    nan = df.assign(a=df["a"].where(df.index != 4, np.nan))
    nan.to_csv(tmp_path / "nan.csv", index=False)
    code, _, err = run(["predict", trained / "run", "--data", tmp_path / "nan.csv", "--out", tmp_path / "p.csv"],
                       capsys)
    one_line_error(code, err, "predict")
    assert "trained with --missing error" in err and "--missing zero" not in err
    outcome("predict: short ids or missing values", "one-line error that suggests nothing predict lacks")


def test_a_closed_pipe_ends_quietly(tmp_path):
    import subprocess
    import sys
    cmd = (f"{sys.executable} -m rnnlab check --seq-len 3 --num-layers 1 | head -c 10 > /dev/null; "
           f"exit ${{PIPESTATUS[0]}}")
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr


def test_one_long_id_among_many_short_ones_is_not_padded_whole(tmp_path, capsys, outcome):
    import tracemalloc
    rng = np.random.default_rng(0)
    long_id = pd.DataFrame({"id": "long", "time": np.arange(20000), "a": rng.normal(size=20000), "target": "x"})
    short = pd.DataFrame({"id": np.repeat([f"s{i}" for i in range(2000)], 2), "time": np.tile([0, 1], 2000),
                          "a": rng.normal(size=4000), "target": np.repeat(["x", "y"] * 1000, 2)})
    pd.concat([long_id, short]).to_csv(tmp_path / "d.csv", index=False)
    tracemalloc.start()
    try:
        code, _, err = run(["train", "--data", tmp_path / "d.csv", "--model", "gru", "--hidden-size", "4", "--steps",
                            "3", "--batch-size", "8", "--eval-every", "0", "--val-fraction", "0.01", "--quiet"],
                           capsys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 0, err
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MiB"            # padded whole: 20000 x 2001 x 8 B = 305 MiB
    outcome("train --data: one long id among 2000 short ones", "padded per batch, not whole")


def test_a_batch_over_the_memory_names_the_remedy_that_helps(monkeypatch, outcome):
    from rnnlab.data import sequences
    from rnnlab.engine import _checks
    from rnnlab.errors import DataError
    monkeypatch.setattr(_checks, "available_memory", lambda: 2**20)
    with pytest.raises(DataError, match="batch_size: 8 sequence.*lower --batch-size"):
        sequences.pad([np.zeros((5000, 2))] * 8)
    with pytest.raises(DataError, match="split the long sequence"):
        sequences.pad([np.zeros((200000, 2))])
    outcome("padding a batch over the memory", "clear error naming the remedy that helps")



# ------------------------------------------------------------------ the second probe's findings
def test_a_runs_own_files_and_data_are_inputs_of_commands_on_it(trained, tmp_path, capsys, outcome):
    d = trained
    run_files = {n: (d / "run" / n).read_bytes() for n in ("model.safetensors", "config.toml", "metrics.jsonl")}
    for cmd in (["evaluate", d / "run", "--json", d / "run" / "model.safetensors", "--force"],
                ["evaluate", d / "run", "--data", d / "good.csv", "--json", d / "run" / "config.toml", "--force"],
                ["predict", d / "run", "--data", tmp_path / "other.csv", "--out", d / "good.csv", "--force"],
                ["gradients", d / "run", "--json", d / "run" / "metrics.jsonl", "--force", "--report", tmp_path / "g"],
                ["export", d / "run", "--format", "torch", "--out", d / "run" / "checkpoint.safetensors", "--force"]):
        pd.read_csv(d / "good.csv").to_csv(tmp_path / "other.csv", index=False)
        before = (d / "good.csv").read_bytes()
        code, _, err = run(cmd, capsys)
        one_line_error(code, err, cmd[0])
        assert "also an input" in err and (d / "good.csv").read_bytes() == before
    assert run_files == {n: (d / "run" / n).read_bytes() for n in run_files}
    code, _, err = run(["train", "--task", "adding", "--seq-len", "8", "--hidden-size", "4", "--steps", "2", "--quiet",
                        "--out", tmp_path / "n", "--json", tmp_path / "n" / "metrics.jsonl"], capsys)
    one_line_error(code, err, "train")
    assert not (tmp_path / "n").exists()
    outcome("--out/--json a file of the run read, or its training data (with --force)", "one-line error")


def test_report_folders_hold_only_rnnlabs_reports(trained, tmp_path, capsys, outcome):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("my page")
    code, _, err = run(["gradients", trained / "run", "--report", mine], capsys)
    one_line_error(code, err, "gradients")
    assert "did not write" in err and (mine / "report.html").read_text() == "my page"
    (tmp_path / "link").symlink_to(mine, target_is_directory=True)
    code, _, err = run(["gradients", trained / "run", "--report", tmp_path / "link"], capsys)
    one_line_error(code, err, "gradients")
    assert "symbolic link" in err
    for _ in range(2):                                 # rnnlab's own report folder is rewritten freely
        code, _, err = run(["gradients", trained / "run", "--report", tmp_path / "rep"], capsys)
        assert code == 0, err
    outcome("--report a folder of the user's files, or a link", "one-line error, nothing written")


def test_ids_are_values_not_positions_or_numbers(tmp_path, capsys, outcome):
    pytest.importorskip("pyarrow")
    df = good_frame(24)
    df.to_parquet(tmp_path / "plain.parquet")
    df.assign(id=pd.Categorical(df["id"], categories=sorted(df["id"].unique(), reverse=True))).to_parquet(
        tmp_path / "cat.parquet")
    code, _, err = run([*T, "--data", tmp_path / "plain.parquet", "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    for name in ("plain", "cat"):
        code, _, err = run(["predict", tmp_path / "run", "--data", tmp_path / f"{name}.parquet", "--out",
                            tmp_path / f"{name}.csv"], capsys)
        assert code == 0, err
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "plain.csv"), pd.read_csv(tmp_path / "cat.csv"))
    outcome("predict: a categorical id column", "same predictions per id as plain ids")

    from rnnlab.data.sequences import read_data
    (tmp_path / "z.csv").write_text("id,time,a,target\n007,0,1.0,x\n007,1,2.0,x\n7,0,3.0,y\n7,1,4.0,y\n")
    s = read_data(tmp_path / "z.csv")
    assert s.ids == ["007", "7"] and s.lengths.tolist() == [2, 2]
    outcome("train --data: CSV ids 007 and 7", "two ids, kept as written")


def test_rows_shuffled_or_columns_permuted_train_the_same_model(tmp_path, capsys, outcome):
    df = good_frame(24)
    rng = np.random.default_rng(3)
    df.to_csv(tmp_path / "a.csv", index=False)
    df.iloc[rng.permutation(len(df))][["target", "b", "time", "id", "a"]].to_csv(tmp_path / "b.csv", index=False)
    for name in ("a", "b"):
        code, _, err = run([*T, "--data", tmp_path / f"{name}.csv", "--steps", "12", "--out", tmp_path / name],
                           capsys)
        assert code == 0, err
    from rnnlab.training.trainer import load_model
    wa, wb = (load_model(tmp_path / n)[0].named_parameters() for n in ("a", "b"))
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    outcome("train --data: rows shuffled and columns permuted", "bit-identical weights")


def test_compare_and_export_refuse_options_they_would_ignore(trained, tmp_path, capsys, outcome):
    code, _, err = run(["compare", "--task", "adding", "--seq-len", "6", "--steps", "2", "--models", "gru,rnn",
                        "--forget-bias", "1", "--quiet", "--report", tmp_path / "c"], capsys)
    one_line_error(code, err, "compare")
    assert "--models gru,rnn has none" in err and not (tmp_path / "c").exists()
    code, _, err = run(["export", trained / "run", "--format", "torch", "--lengths", "--out", tmp_path / "m.safetensors"],
                       capsys)
    one_line_error(code, err, "export")
    assert "--lengths changes the ONNX graph" in err and not (tmp_path / "m.safetensors").exists()
    outcome("compare/export: an option that would be ignored", "one-line error, nothing written")


def test_resume_continues_the_same_run_only(tmp_path, capsys, outcome):
    good_frame(16).to_csv(tmp_path / "d.csv", index=False)
    code, _, err = run([*T, "--data", tmp_path / "d.csv", "--steps", "4", "--out", tmp_path / "r"], capsys)
    assert code == 0, err
    code, _, err = run(["resume", tmp_path / "r", "--steps", "6", "--quiet"], capsys)
    assert code == 0, err
    from rnnlab.training.config import read_toml, write_toml
    assert read_toml(tmp_path / "r" / "config.toml")["steps"] == 6         # the new length is the run's
    cfg = read_toml(tmp_path / "r" / "config.toml")
    write_toml(tmp_path / "r" / "config.toml", {**cfg, "lr": 0.5})
    code, _, err = run(["resume", tmp_path / "r", "--steps", "8"], capsys)
    one_line_error(code, err, "resume")
    assert "lr:" in err and "checkpoint was made with 0.02" in err
    write_toml(tmp_path / "r" / "config.toml", cfg)
    good_frame(16, seed=9).drop(columns="time").to_csv(tmp_path / "d.csv", index=False)
    code, _, err = run(["resume", tmp_path / "r", "--steps", "8"], capsys)
    one_line_error(code, err, "resume")
    assert "changed since this run started" in err
    outcome("resume: config.toml edited, or the data file replaced", "one-line error naming the change")


def test_estimators_take_targets_by_id_from_one_source(outcome):
    from rnnlab.estimators import RNNClassifier
    df = good_frame(16)
    clf = RNNClassifier(cell="gru", hidden_size=4, epochs=1, id_col="id", time_col="time", target_col="target")
    with pytest.raises(ValueError, match="given both y and target_col"):
        clf.fit(df, df.groupby("id")["target"].first())
    clf = RNNClassifier(cell="gru", hidden_size=4, epochs=1, id_col="id", time_col="time")
    with pytest.raises(ValueError, match="indexed by the ids"):
        clf.fit(df.drop(columns="target"), np.array(["up", "down"] * 8))
    clf.fit(df.drop(columns="target"), df.groupby("id")["target"].first())
    outcome("estimators: y by position with a long frame, or y and target_col", "clear error")


@pytest.mark.parametrize("edit,flags,match", [
    (lambda df: df.assign(target="up"), [], "--target-col: column 'target' of d.csv: only one class ('up')"),
    (lambda df: df, ["--val-fraction", "0.99"], "--val-fraction: 0.99 of 24 sequences leaves none for training"),
    (lambda df: df.iloc[:0], [], "no rows (only a header)"),
    (lambda df: df.assign(time=["2024-13-01" if i == 4 else f"2024-01-{t + 10:02d}"
                                for i, t in enumerate(df["time"])]), [], "data row 5 of"),
    (lambda df: df, ["--time-format", "%Q"], "--time-format: '%Q' is not a strptime format"),
    (lambda df: df, ["--problem", "regress"], "--target-col: column 'target' of d.csv: expected numeric regression targets, "
                                              "got text"),
])
def test_data_messages_name_the_users_column_and_flag(tmp_path, capsys, edit, flags, match, outcome):
    df = edit(good_frame(24))
    df.to_csv(tmp_path / "d.csv", index=False)
    code, _, err = run([*T, "--data", tmp_path / "d.csv", *flags, "--out", tmp_path / "r"], capsys)
    one_line_error(code, err, "train")
    assert match in err and "np.str_" not in err and "np.int64" not in err, err
    assert not (tmp_path / "r").exists()
    outcome("train --data: a bad target, fraction, header-only file, date or format", "one-line error in the "
            "user's words")


def test_iso_times_with_offsets_and_a_diverging_run_print_one_line(tmp_path, capsys, outcome):
    df = good_frame(8)
    stamps = pd.Timestamp("2024-03-01T10:00:00Z") + pd.to_timedelta(df["time"], unit="h")
    df.assign(time=[(t.strftime("%Y-%m-%dT%H:%M:%SZ") if i % 2 else
                     (t + pd.Timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+01:00")) for i, t in enumerate(stamps)]
              ).to_csv(tmp_path / "tz.csv", index=False)
    code, _, err = run([*T, "--data", tmp_path / "tz.csv", "--steps", "2", "--out", tmp_path / "tz"], capsys)
    assert code == 0, err
    code, _, err = run(["train", "--task", "adding", "--seq-len", "8", "--hidden-size", "4", "--steps", "30",
                        "--lr", "1e30", "--optimizer", "sgd", "--clip", "0", "--model", "rnn", "--nonlinearity",
                        "relu", "--quiet"], capsys)
    one_line_error(code, err, "train")
    assert "RuntimeWarning" not in err
    outcome("train: ISO 8601 times with offsets; a diverging run", "ok; one line, no NumPy warnings")


# ------------------------------------------------------------------ the second probe's findings
def test_csv_headers_labels_and_prediction_columns_as_written(trained, tmp_path, capsys, outcome):
    df = good_frame(12)
    (tmp_path / "dup.csv").write_text(df.to_csv(index=False).replace("id,time,a,b,target", "id,time,a,a,target", 1))
    df.to_csv(tmp_path / "index.csv")                                    # the index saved as an unnamed column
    lab = df.assign(target=np.where(df["id"].str[-1].astype(int) % 3 == 0, "01",
                                    np.where(df["id"].str[-1].astype(int) % 3 == 1, "1", "2")))
    lab.to_csv(tmp_path / "labels.csv", index=False)
    df.assign(target=df["id"]).to_csv(tmp_path / "tid.csv", index=False)
    for name, flags, match in (("dup.csv", [], "column 'a' appears 2 times in the header"),
                               ("index.csv", [], "column 1 of"),
                               ("labels.csv", [], "labels ['01', '1'] in column 'target' are different text"),
                               ("tid.csv", ["--target-col", "time"], "'time' is the time column"),
                               ("dup.csv", ["--id-col", "target", "--target-col", "b"], "appears 2 times")):
        code, _, err = run([*T, "--data", tmp_path / name, *flags, "--out", tmp_path / "r"], capsys)
        one_line_error(code, err, "train")
        assert match in err and not (tmp_path / "r").exists(), err
    outcome("train --data: a CSV header with a repeated or empty name, labels 01 and 1, target = time",
            "one-line error, nothing written")

    pd.read_csv(trained / "good.csv").rename(columns={"id": "prediction"}).to_csv(tmp_path / "p.csv", index=False)
    code, _, err = run([*T, "--data", tmp_path / "p.csv", "--id-col", "prediction", "--out", tmp_path / "rp"], capsys)
    assert code == 0, err
    code, _, err = run(["predict", tmp_path / "rp", "--data", tmp_path / "p.csv", "--out", tmp_path / "o.csv"], capsys)
    one_line_error(code, err, "predict")
    assert "would be overwritten by the prediction column" in err and not (tmp_path / "o.csv").exists()
    outcome("predict: an id column named like an output column", "one-line error, nothing written")


def test_labels_and_data_a_model_did_not_see_are_refused(tmp_path, capsys, outcome):
    df = good_frame(16).assign(target=lambda f: np.where(f["target"] == "up", 1, 0))
    df.to_csv(tmp_path / "int.csv", index=False)
    code, _, err = run([*T, "--data", tmp_path / "int.csv", "--out", tmp_path / "r"], capsys)
    assert code == 0, err
    df.assign(target=np.where(df["target"] == 1, 0.7, 0.2)).to_csv(tmp_path / "frac.csv", index=False)
    code, _, err = run(["evaluate", tmp_path / "r", "--data", tmp_path / "frac.csv"], capsys)
    one_line_error(code, err, "evaluate")
    assert "[0.2, 0.7] were not in the training data's classes" in err and "frac.csv" in err
    good_frame(16, seed=4).assign(target=lambda f: np.where(f["target"] == "up", 1, 0)).to_csv(
        tmp_path / "int.csv", index=False)
    for cmd in (["evaluate", tmp_path / "r"], ["gradients", tmp_path / "r", "--report", tmp_path / "g"]):
        code, _, err = run(cmd, capsys)
        one_line_error(code, err, cmd[0])
        assert "changed since this model was trained on it" in err
    outcome("evaluate/gradients: unseen fractional labels, or the run's data changed", "one-line error")


def test_tagging_metrics_are_means_over_valid_steps(tmp_path, capsys, outcome):
    rng = np.random.default_rng(0)
    n, T = 300, 40
    lengths = np.where(np.arange(n) % 7 == 0, T, 2)
    x = rng.normal(size=(n, T, 1))
    y = (x[..., 0] > 0).astype(np.int64)
    np.savez(tmp_path / "tag.npz", x=x, y=y, lengths=lengths)
    code, _, err = run(["train", "--data", tmp_path / "tag.npz", "--problem", "tag", "--model", "gru",
                        "--hidden-size", "4", "--steps", "20", "--lr", "0.05", "--quiet", "--out", tmp_path / "r"],
                       capsys)
    assert code == 0, err
    code, _, err = run(["evaluate", tmp_path / "r", "--data", tmp_path / "tag.npz", "--json", tmp_path / "m.json"],
                       capsys)
    assert code == 0, err
    code, _, err = run(["predict", tmp_path / "r", "--data", tmp_path / "tag.npz", "--out", tmp_path / "p.csv"], capsys)
    assert code == 0, err
    p = pd.read_csv(tmp_path / "p.csv")
    truth = np.concatenate([y[i, :lengths[i]] for i in range(n)])
    acc = float((p["prediction"].to_numpy() == truth).mean())
    assert json.loads((tmp_path / "m.json").read_text())["accuracy"] == pytest.approx(acc, abs=1e-12)
    outcome("evaluate: tagging accuracy over ragged batches", "the mean over valid steps")


@pytest.mark.parametrize("args,match", [
    (["train", "--data", "D", "--seq-len", "50"], "--seq-len: an option of task"),
    (["train", "--task", "adding", "--text", "x.txt"], "--text: an option of task 'chars'"),
    (["train", "--task", "adding", "--steps", str(10**13)], "--steps: expected an integer <= 1000000000000"),
    (["train", "--task", "adding", "--steps", "5", "--eval-every", "1000", "--patience", "2"],
     "--patience: early stopping compares evaluations every 1000 steps"),
    (["compare", "--task", "adding", "--out", "X"], "out: compare writes its report to --report"),
    (["compare", "--task", "adding", "--models", "rnn,gru", "--model", "lstm"], "model: compare trains the cells"),
])
def test_more_settings_that_would_be_ignored(tmp_path, capsys, args, match, outcome):
    good_frame(8).to_csv(tmp_path / "d.csv", index=False)
    args = [str(tmp_path / "d.csv") if a == "D" else (str(tmp_path / "x") if a == "X" else a) for a in args]
    code, _, err = run([*args, "--quiet", "--report" if args[0] == "compare" else "--out", tmp_path / "o"], capsys)
    one_line_error(code, err, args[0])
    assert match in err and not (tmp_path / "o").exists(), err
    outcome("train/compare: a setting the run would not use", "one-line error, nothing written")


def test_gradients_import_and_out_links(trained, tmp_path, capsys, outcome):
    code, _, err = run(["gradients", trained / "run", "--hidden-size", "8", "--report", tmp_path / "g"], capsys)
    one_line_error(code, err, "gradients")
    assert "sets up a fresh model" in err
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    code, _, err = run(["train", "--task", "adding", "--steps", "2", "--quiet", "--out", tmp_path / "link"], capsys)
    one_line_error(code, err, "train")
    assert "symbolic link" in err and not any((tmp_path / "real").iterdir())
    outcome("gradients RUN with fresh-model flags; train --out a link", "one-line error")


def test_estimators_score_by_id_and_take_pandas_nullable_targets(outcome):
    from rnnlab.estimators import RNNClassifier, RNNTagger
    from rnnlab.errors import DataError
    df = good_frame(16)
    y = df.groupby("id")["target"].first()
    clf = RNNClassifier(cell="gru", hidden_size=8, epochs=20, lr=0.05, id_col="id", time_col="time").fit(
        df.drop(columns="target"), y)
    X = df.drop(columns="target")
    assert clf.score(X, y) == clf.score(X, y.sample(frac=1.0, random_state=2))   # matched by id, not position
    with pytest.raises(DataError, match="indexed by the ids"):
        clf.score(X, y.to_numpy())
    rng = np.random.default_rng(0)
    x3 = rng.normal(size=(12, 4, 2))
    assert RNNClassifier(epochs=1).fit(x3, pd.Series([0, 1] * 6, dtype="Int64")).classes_.dtype.kind == "i"
    assert RNNClassifier(epochs=1).fit(x3, pd.Series([True, False] * 6, dtype="boolean")).classes_.dtype == bool
    with pytest.raises(DataError, match="missing label"):
        RNNClassifier(epochs=1).fit(x3, pd.Series([0, None] * 6, dtype="Int64"))
    for kw, match in ((dict(validation_fraction=1.5), "validation_fraction"), (dict(patience=-3), "patience"),
                      (dict(time_col="t"), "time_col: an argument of long DataFrames")):
        with pytest.raises(ValueError, match=match):
            RNNClassifier(epochs=1, **kw).fit(x3, np.array([0, 1] * 6))
    tag = RNNTagger(hidden_size=4, epochs=1).fit(x3, (x3[..., 0] > 0).astype(int))
    with pytest.raises(DataError, match="expected labels for 12 sequences, got 5"):
        tag.score(x3, (x3[..., 0] > 0).astype(int)[:5])
    outcome("estimators: y by id in score, nullable y, unused arguments, short y", "ok or a clear error")


def test_the_last_ignored_settings_and_messages(tmp_path, capsys, outcome):
    pytest.importorskip("pyarrow")
    df = good_frame(12)
    df.assign(time=pd.Timestamp("2024-01-01") + pd.to_timedelta(df["time"], unit="D")).to_parquet(tmp_path / "t.parquet")
    code, _, err = run([*T, "--data", tmp_path / "t.parquet", "--time-format", "%d/%m/%Y", "--out", tmp_path / "r"],
                       capsys)
    one_line_error(code, err, "train")
    assert "already holds dates" in err
    np.savez(tmp_path / "x2.npz", x=np.random.default_rng(0).normal(size=(12, 5)), y=np.arange(12) % 2)
    code, _, err = run([*T, "--data", tmp_path / "x2.npz", "--channels-first", "--out", tmp_path / "r"], capsys)
    one_line_error(code, err, "train")
    assert "channels_first applies to (N, C, T) arrays only" in err
    df.to_csv(tmp_path / "d.csv", index=False)
    code, _, err = run([*T, "--data", tmp_path / "d.csv", "--out", tmp_path / "r"], capsys)
    assert code == 0, err
    (tmp_path / "d.csv").unlink()
    code, _, err = run(["evaluate", tmp_path / "r"], capsys)
    one_line_error(code, err, "evaluate")
    assert err.startswith("rnnlab evaluate: error: checkpoint: the run's training data") and "--data FILE" in err
    with pytest.raises(SystemExit):
        cli.main(["train", "--task", "adding", "--bogus"])
    assert capsys.readouterr().err.startswith("rnnlab train: error: unrecognized arguments: --bogus")
    outcome("--time-format on dates, --channels-first on 2-D x, a run's deleted data, an unknown flag",
            "one-line error naming what to change")
