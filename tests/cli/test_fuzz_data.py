"""Property and fuzz tests of the three promises, over the data readers, the CLI's flags and the estimators:

    1. the same data in another form (columns permuted, rows shuffled, times written as dates, extra columns)
       reads as the same sequences -- compared in canonical form, id by id;
    2. bad input is an error whose one line names the argument, flag or column (never a traceback, never a
       result computed from misread input);
    3. nothing outside the run folder changes, and on an error nothing is written at all.

Each case is counted in docs/reliability.md (python docs/make_reliability.py).
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnlab.cli import main as cli
from rnnlab.errors import DataError
from rnnlab.data.sequences import from_long_frame

pd = pytest.importorskip("pandas")

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])


def canonical(s):
    """id -> (features by name as a sorted tuple of columns, the case's values, its target)."""
    order = np.argsort(s.feature_names)
    out = {}
    for i, case in enumerate(s.cases):
        t = s.targets[i] if s.targets is not None and not isinstance(s.targets, list) else None
        out[s.ids[i]] = (tuple(np.array(s.feature_names)[order]), case[:, order].tolist(),
                         None if t is None else t.item() if hasattr(t, "item") else t)
    return out


@st.composite
def frames(draw):
    """A long table: 2..6 ids of 2..6 rows, 1..3 numeric features, a label per id."""
    n_ids = draw(st.integers(2, 6))
    n_feat = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_ids):
        label = "yes" if i % 2 else "no"
        for t in range(int(rng.integers(2, 7))):
            rows.append({"id": f"u{i}", "time": t, **{f"f{k}": float(rng.normal()) for k in range(n_feat)},
                         "target": label})
    return pd.DataFrame(rows), seed


TRANSFORMS = ["permute columns", "shuffle rows", "ISO dates", "dates with --time-format", "extra text column",
              "float times", "numbers written as text", "time as datetime64"]


@FAST
@given(frame=frames(), transform=st.sampled_from(TRANSFORMS))
def test_the_same_data_in_another_form_reads_the_same(frame, transform, outcome):
    df, seed = frame
    rng = np.random.default_rng(seed)
    base = canonical(from_long_frame(df))
    kw = {}
    other = df.copy()
    if transform == "permute columns":
        other = other[list(rng.permutation(other.columns))]
    elif transform == "shuffle rows":
        other = other.iloc[rng.permutation(len(other))]
    elif transform in ("ISO dates", "dates with --time-format", "time as datetime64"):
        days = pd.Timestamp("2023-12-28") + pd.to_timedelta(other["time"] * 3, unit="D")    # crosses a year
        if transform == "ISO dates":
            other["time"] = days.dt.strftime("%Y-%m-%dT%H:%M")
        elif transform == "time as datetime64":
            other["time"] = days
        else:
            other["time"] = days.dt.strftime("%d/%m/%Y")
            kw["time_format"] = "%d/%m/%Y"
    elif transform == "extra text column":
        other["note"] = "x"
    elif transform == "float times":
        other["time"] = other["time"] * 0.5 - 3.0
    elif transform == "numbers written as text":
        other["f0"] = other["f0"].map(repr).astype(object)
    got = canonical(from_long_frame(other, **kw))
    assert got == base
    outcome(f"reader property: {transform}", "same sequences as the canonical table")


FAULTS = {
    "text cell in a feature": ("feature_cols", lambda df: df.astype({"f0": object}).assign(
        f0=lambda d: d["f0"].where(d.index != 1, "oops"))),
    "text cell in the time": ("time_col", lambda df: df.astype({"time": object}).assign(
        time=lambda d: d["time"].where(d.index != 1, "later"))),
    "day-first dates, no format": ("time_col", lambda df: df.assign(time=(pd.Timestamp("2024-01-13") +
                                   pd.to_timedelta(df["time"], unit="D")).dt.strftime("%d/%m/%Y"))),
    "duplicated (id, time)": ("data", lambda df: pd.concat([df, df.iloc[[0]]])),
    "empty id": ("id_col", lambda df: df.assign(id=df["id"].where(df.index != 2, None))),
    "empty time": ("time_col", lambda df: df.assign(time=df["time"].where(df.index != 2, np.nan))),
    "boolean times": ("time_col", lambda df: df.assign(time=df["time"] % 2 == 0)),
    "header twice": ("data", lambda df: df.rename(columns={"f0": "id"})),
    "no time column": ("time_col", lambda df: df.drop(columns="time")),
    "no target column": ("target_col", lambda df: df.drop(columns="target")),
    "empty target": ("target_col", lambda df: df.assign(target=df["target"].where(df.index != 0, None))),
    "one-row ids": ("data", lambda df: df.groupby("id").head(1)),
}


@FAST
@given(frame=frames(), fault=st.sampled_from(sorted(FAULTS)))
def test_a_bad_table_is_an_error_naming_its_argument(frame, fault, outcome):
    df, _ = frame
    arg, edit = FAULTS[fault]
    with pytest.raises(DataError) as e:
        from_long_frame(edit(df.reset_index(drop=True)))
    msg = str(e.value)
    assert "\n" not in msg and msg.split(":")[0] == arg, msg
    outcome(f"reader fault: {fault}", "one-line error naming the argument")


# ------------------------------------------------------------------ the CLI's flags
BAD = {"--seq-len": ["0", "-3", "x"], "--hidden-size": ["0", "1.5"], "--batch-size": ["-1"], "--steps": ["0"],
       "--lr": ["0", "-1", "nan", "inf", "fast"], "--clip": ["-1", "nan"], "--dropout": ["1", "-0.1"],
       "--lr-gamma": ["0", "-1", "3"], "--min-lr": ["-1", "5"], "--lr-step-size": ["0"], "--warmup": ["-1"],
       "--seed": ["-1", "abc", str(2**70)], "--momentum": ["1", "-1"], "--weight-decay": ["-1"],
       "--schedule": ["linear"], "--optimizer": ["adma"], "--model": ["transformer"], "--dtype": ["float16"],
       "--recurrent-dropout": ["1.5"], "--zoneout": ["-1"], "--eval-every": ["-1"], "--checkpoint-every": ["-2"],
       "--track": ["wandb"], "--distributed": ["slurm"], "--on-nonfinite": ["ignore"], "--tbptt": ["-1"],
       "--forget-bias": ["nan"], "--val-fraction": ["0", "1"], "--backend": ["cuda"], "--num-layers": ["0"]}
GOOD = {"--lr": ["0.01"], "--clip": ["0"], "--schedule": ["cosine", "step"], "--optimizer": ["sgd", "rmsprop"],
        "--model": ["rnn", "gru", "mingru"], "--dropout": ["0.2"], "--seed": ["7"], "--warmup": ["1"]}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=st.sampled_from(sorted(BAD)), data=st.data(), good=st.dictionaries(st.sampled_from(sorted(GOOD)),
                                                                               st.just(None), max_size=2))
def test_cli_flags_either_run_or_name_the_flag(tmp_path_factory, capsys, bad, data, good, outcome):
    value = data.draw(st.sampled_from(BAD[bad]))
    extra = []
    for k in good:
        if k != bad:
            extra += [k, data.draw(st.sampled_from(GOOD[k]))]
    folder = tmp_path_factory.mktemp("flags")
    (folder / "mine.txt").write_text("the user's file")
    before = sorted(os.listdir(folder))
    args = ["train", "--task", "adding", "--seq-len", "4", "--hidden-size", "3", "--steps", "2", "--quiet",
            "--out", str(folder / "run"), *extra, bad, value]
    try:
        code = cli.main(args)
    except SystemExit as e:                               # argparse: a value of the wrong type, exit 2
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, (args, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    key = bad[2:].replace("-", "_")
    assert bad in err or key in err, (args, err)
    assert sorted(os.listdir(folder)) == before and (folder / "mine.txt").read_text() == "the user's file"
    outcome("CLI fuzz: a bad flag value among valid ones", "one-line error naming the flag, nothing written")


# ------------------------------------------------------------------ the estimators' inputs
EST_FAULTS = ["none", "NaN in X", "Inf in X", "y too short", "mixed labels", "one class", "strings in X",
              "4-D X", "empty X", "ragged list X", "complex X"]


@settings(max_examples=40, deadline=None)
@given(fault=st.sampled_from(EST_FAULTS), seed=st.integers(0, 1000), as_list=st.booleans())
def test_estimator_inputs_either_fit_or_name_the_argument(fault, seed, as_list, outcome):
    from rnnlab.estimators import RNNClassifier
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(8, 4, 2))
    y = np.array(["a", "b"] * 4)
    if fault == "NaN in X":
        X[1, 2, 0] = np.nan
    elif fault == "Inf in X":
        X[0, 0, 1] = np.inf
    elif fault == "y too short":
        y = y[:5]
    elif fault == "mixed labels":
        y = [1, "a"] * 4
    elif fault == "one class":
        y = np.array(["a"] * 8)
    elif fault == "strings in X":
        X = X.astype(str)
    elif fault == "4-D X":
        X = X[..., None]
    elif fault == "empty X":
        X, y = X[:0], y[:0]
    elif fault == "complex X":
        X = X + 1j
    Xin = [x[: 2 + i % 3] for i, x in enumerate(X)] if fault == "ragged list X" or as_list else X
    if fault == "ragged list X":
        Xin[0] = Xin[0][:, :1]                            # one sequence with fewer features
    clf = RNNClassifier(cell="gru", hidden_size=4, epochs=1)
    try:
        clf.fit(Xin, y)
        p = clf.predict(Xin)
        assert fault == "none", f"{fault} was accepted"
        assert len(p) == 8
        outcome("estimator fuzz: valid input", "ok")
    except (ValueError, TypeError) as exc:
        assert fault != "none", exc
        msg = str(exc)
        assert ":" in msg and "\n" not in msg.strip(), msg
        assert msg.split(":")[0].split("[")[0].strip() in ("X", "y", "lengths") or msg.startswith(
            ("Found input variables", "Unknown label type", "Complex data")), msg
        outcome(f"estimator fuzz: {fault}", "clear error naming X or y")
