"""Runs on the user's own files through the command line: train --data, evaluate --data, predict, resume,
gradients, compare and ONNX export, and one-line errors for bad data."""
import json

import numpy as np
import pytest

from rnnlab.cli import main as cli
from rnnlab.training.trainer import load_model
from support import COLS, write_long

pd = pytest.importorskip("pandas")




def run(args, capsys):
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_evaluate_predict_from_a_csv(tmp_path, capsys):
    write_long(tmp_path / "train.csv")
    code, out, err = run(["train", "--data", str(tmp_path / "train.csv"), *COLS, "--model", "gru", "--hidden-size",
                          "8", "--steps", "60", "--lr", "0.01", "--out", str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 0, err
    assert "(classify): 32 train / 8 val sequences, 2 features" in out and "inferred from str labels" in out
    code, out, err = run(["evaluate", str(tmp_path / "run")], capsys)
    assert code == 0 and "accuracy" in out
    write_long(tmp_path / "test.csv", n=20, seed=1)
    code, out, err = run(["evaluate", str(tmp_path / "run"), "--data", str(tmp_path / "test.csv"), "--json",
                          str(tmp_path / "m.json")], capsys)
    assert code == 0, err
    m = json.loads((tmp_path / "m.json").read_text())
    acc = m["accuracy"]
    assert acc > 0.8                                         # the label is easy: the sign of hr's mean
    rep = m["classes"]                                       # per class, with the confusion matrix
    assert rep["classes"] == ["sick", "well"] and "precision" in out and "confusion" in out
    assert sum(map(sum, rep["confusion"])) == 20
    assert rep["accuracy"] == pytest.approx(acc)             # the report's predictions are evaluate's
    new = write_long(tmp_path / "new.parquet", n=10, seed=2, drop_target=True)
    code, out, err = run(["predict", str(tmp_path / "run"), "--data", str(tmp_path / "new.parquet"), "--out",
                          str(tmp_path / "preds.csv")], capsys)
    assert code == 0, err
    preds = pd.read_csv(tmp_path / "preds.csv")
    assert list(preds.columns) == ["patient", "prediction", "p_sick", "p_well"]
    assert preds["patient"].tolist() == list(pd.unique(new["patient"]))
    # the same numbers as the model's own forward on the standardised, padded input
    model, meta = load_model(tmp_path / "run")
    enc = meta["task_info"]["encoding"]
    from rnnlab.data.sequences import from_long_frame, pad
    s = from_long_frame(new, "patient", "visit", "hr,temp", None, require_target=False)
    x, lengths = pad([(c - np.array(enc["x_mean"])) / np.array(enc["x_std"]) for c in s.cases])
    model.eval()
    want = model.predict(x.astype(np.float32), lengths)[0]
    np.testing.assert_allclose(preds[["p_sick", "p_well"]].to_numpy(), want, rtol=1e-5, atol=1e-6)
    pytest.importorskip("pyarrow")
    code, _, err = run(["predict", str(tmp_path / "run"), "--data", str(tmp_path / "new.parquet"), "--out",
                        str(tmp_path / "preds.parquet")], capsys)
    assert code == 0 and pd.read_parquet(tmp_path / "preds.parquet").equals(preds)


def test_regression_from_npz_and_export_to_onnx(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 7, 3))
    np.savez(tmp_path / "d.npz", x=x, y=x[:, :, 0].sum(1) * 5 + 100)
    code, out, err = run(["train", "--data", str(tmp_path / "d.npz"), "--hidden-size", "16", "--epochs", "20",
                          "--lr", "0.01", "--out", str(tmp_path / "reg"), "--quiet"], capsys)
    assert code == 0, err
    assert "(regress)" in out and "mean-prediction MSE" in out
    model, meta = load_model(tmp_path / "reg")
    assert meta["config"]["steps"] == 20 * 2                     # 48 training sequences, batches of 32
    code, _, err = run(["predict", str(tmp_path / "reg"), "--data", str(tmp_path / "d.npz"), "--out",
                        str(tmp_path / "p.csv")], capsys)
    assert code == 0, err
    p = pd.read_csv(tmp_path / "p.csv")
    assert list(p.columns) == ["index", "prediction"] and len(p) == 60
    assert np.corrcoef(p["prediction"], x[:, :, 0].sum(1))[0, 1] > 0.8            # in the data's units
    assert abs(p["prediction"].mean() - 100) < 10
    ort = pytest.importorskip("onnxruntime")
    assert cli.main(["export", str(tmp_path / "reg"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    capsys.readouterr()
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"))       # raw features in, the data's units out
    got = sess.run(["prediction"], {"inputs": x.transpose(1, 0, 2).astype(np.float32)})[0][:, 0]
    np.testing.assert_allclose(got, p["prediction"].to_numpy(), rtol=1e-4, atol=1e-3)


def test_tagging_from_per_row_targets(tmp_path, capsys):
    write_long(tmp_path / "tags.csv", n=50, tag=True)
    code, out, err = run(["train", "--data", str(tmp_path / "tags.csv"), *COLS, "--hidden-size", "12", "--steps",
                          "80", "--lr", "0.01", "--out", str(tmp_path / "tag"), "--quiet"], capsys)
    assert code == 0, err
    assert "(tag)" in out and "one target per step" in out
    code, _, err = run(["predict", str(tmp_path / "tag"), "--data", str(tmp_path / "tags.csv"), "--out",
                        str(tmp_path / "t.csv")], capsys)
    assert code == 0, err
    t = pd.read_csv(tmp_path / "t.csv")
    src = pd.read_csv(tmp_path / "tags.csv")
    assert list(t.columns[:3]) == ["patient", "visit", "prediction"] and len(t) == len(src)
    assert (t["prediction"] == src["label"]).mean() > 0.8


def test_resume_is_bit_exact_and_refuses_changed_data(tmp_path, capsys):
    write_long(tmp_path / "d.csv")
    args = ["--data", str(tmp_path / "d.csv"), *COLS, "--hidden-size", "6", "--steps", "30", "--quiet",
            "--checkpoint-every", "10"]
    assert run(["train", *args, "--out", str(tmp_path / "full")], capsys)[0] == 0
    assert run(["train", *args, "--steps", "10", "--out", str(tmp_path / "part")], capsys)[0] == 0
    assert run(["resume", str(tmp_path / "part"), "--steps", "30", "--quiet"], capsys)[0] == 0
    a, b = load_model(tmp_path / "full")[0].named_parameters(), load_model(tmp_path / "part")[0].named_parameters()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    write_long(tmp_path / "d.csv", seed=9)
    code, _, err = run(["resume", str(tmp_path / "part"), "--steps", "40", "--quiet"], capsys)
    assert code == 2 and "changed since this run started" in err and "\n" not in err.strip()


def test_early_stopping_keeps_the_best_weights(tmp_path, capsys):
    write_long(tmp_path / "d.csv", n=60)
    code, out, err = run(["train", "--data", str(tmp_path / "d.csv"), *COLS, "--hidden-size", "16", "--steps",
                          "2000", "--lr", "0.05", "--eval-every", "5", "--patience", "3", "--out",
                          str(tmp_path / "es"), "--quiet"], capsys)
    assert code == 0, err
    assert "early stopping: no lower validation loss in 3 evaluations" in out
    val = [json.loads(l) for l in (tmp_path / "es" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in val if r["split"] == "val"]
    assert val[-1]["step"] < 2000
    _, meta = load_model(tmp_path / "es")
    assert meta["metrics"]["loss"] == pytest.approx(min(r["loss"] for r in val), rel=1e-6)


def test_gradients_and_compare_on_a_data_run(tmp_path, capsys):
    write_long(tmp_path / "d.csv")
    assert run(["train", "--data", str(tmp_path / "d.csv"), *COLS, "--hidden-size", "6", "--steps", "5", "--out",
                str(tmp_path / "r"), "--quiet"], capsys)[0] == 0
    code, out, err = run(["gradients", str(tmp_path / "r"), "--report", str(tmp_path / "g")], capsys)
    assert code == 0 and "||dL/dh_t||" in out, err
    code, out, err = run(["compare", "--data", str(tmp_path / "d.csv"), *COLS, "--hidden-size", "6", "--steps",
                          "5", "--report", str(tmp_path / "cmp"), "--quiet"], capsys)
    assert code == 0, err
    assert all(m in out for m in ("rnn", "lstm", "gru"))


@pytest.mark.parametrize("edit,flags,match", [
    (lambda df: df.assign(hr=df["hr"].where(df.index != 5, np.nan)), [], r"NaN or Inf \(nan\) in id 'p000'"),
    (lambda df: df.assign(label="sick"), [], r"only one class \('sick'\)"),
    (lambda df: pd.concat([df, df.iloc[[0]]]), [], "duplicated"),
    (lambda df: df, ["--target-col", "lable"], r"no column 'lable'.*did you mean 'label'"),
    (lambda df: df[~((df["patient"] == "p001") & (df["visit"] > 0))], [], r"fewer than 2 rows, e.g. 'p001'"),
    (lambda df: df.drop(columns="visit"), [], r"--time-col: no column 'visit'"),
    (lambda df: df.assign(hr=df["hr"].astype(str) + "bpm"), ["--feature-cols", "hr,temp"], "'hr' .* is not numeric"),
])
def test_bad_data_is_one_line_and_writes_nothing(tmp_path, capsys, edit, flags, match, outcome):
    df = edit(write_long(tmp_path / "d.csv"))
    df.to_csv(tmp_path / "d.csv", index=False)
    out = tmp_path / "run"
    code, _, err = run(["train", "--data", str(tmp_path / "d.csv"), *COLS, *flags, "--steps", "2", "--out", str(out),
                        "--quiet"], capsys)
    assert code == 2 and err.startswith("rnnlab train: error: ") and "\n" not in err.strip(), err
    import re
    assert re.search(match, err), err
    assert not out.exists()                                   # checked before the run folder is made
    outcome("rnnlab train --data: a bad file", "one-line error, nothing written")


def test_predict_needs_a_data_run(tmp_path, capsys):
    assert run(["train", "--task", "adding", "--steps", "2", "--hidden-size", "4", "--out", str(tmp_path / "a"),
                "--quiet"], capsys)[0] == 0
    write_long(tmp_path / "d.csv")
    code, _, err = run(["predict", str(tmp_path / "a"), "--data", str(tmp_path / "d.csv"), "--out",
                        str(tmp_path / "p.csv")], capsys)
    assert code == 2 and "trained on task 'adding'" in err
    code, _, err = run(["train", "--task", "data", "--steps", "2"], capsys)
    assert code == 2 and "needs a file of sequences (--data FILE" in err
