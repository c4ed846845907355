"""rnnlab.data.sequences: every input form to the same cases, and a named error for every kind of bad data."""
import numpy as np
import pytest

from rnnlab.errors import DataError
from rnnlab.data.sequences import check_memory, from_arrays, from_long_frame, pad, read_data, write_table

pd = pytest.importorskip("pandas")


def long_frame(cases, labels, per_step=None):
    rows = []
    for i, c in enumerate(cases):
        for t, v in enumerate(c):
            r = {"id": f"s{i}", "time": t, **{f"f{j}": v[j] for j in range(c.shape[1])}}
            r["target"] = labels[i] if per_step is None else per_step[i][t]
            rows.append(r)
    return pd.DataFrame(rows)


@pytest.fixture
def cases():
    rng = np.random.default_rng(0)
    return [rng.standard_normal((n, 3)) for n in (4, 2, 5)]


def test_forms_agree(cases):
    x, lengths = pad(cases)                                  # (T, N, F)
    padded = x.transpose(1, 0, 2)
    a = from_arrays(padded, [0, 1, 0], lengths=lengths)
    b = from_arrays(cases, [0, 1, 0])
    c = from_arrays([np.asarray(v).T for v in cases], [0, 1, 0], channels_first=True)
    d = from_long_frame(long_frame(cases, [0, 1, 0]))
    for s in (a, b, c, d):
        assert s.lengths.tolist() == [4, 2, 5]
        for u, v in zip(s.cases, cases):
            np.testing.assert_array_equal(u, v)
        assert np.asarray(s.targets).tolist() == [0, 1, 0]
    assert d.ids == ["s0", "s1", "s2"] and d.feature_names == ["f0", "f1", "f2"]
    e = from_arrays(np.ones((2, 5)))                          # 2-D: univariate sequences
    assert e.lengths.tolist() == [5, 5] and e.num_features == 1
    f = from_arrays(np.ones((2, 3, 7)), channels_first=True)   # (N, C, T)
    assert f.lengths.tolist() == [7, 7] and f.num_features == 3


def test_per_step_targets(cases):
    tags = [np.arange(len(c)) % 2 for c in cases]
    assert from_arrays(cases, tags).per_step
    s = from_long_frame(long_frame(cases, None, tags))
    assert s.per_step and [t.tolist() for t in s.targets] == [t.tolist() for t in tags]
    eq = from_arrays(np.ones((3, 4, 1)), np.zeros((3, 4), int))   # (N, T) integer labels: per step
    assert eq.per_step
    padded = from_arrays(np.ones((2, 4, 1)), np.arange(8).reshape(2, 4), lengths=np.array([4, 2]))
    assert [t.tolist() for t in padded.targets] == [[0, 1, 2, 3], [4, 5]]           # cut to each length


def test_unsorted_times_sorted_and_said(cases):
    df = long_frame(cases, [0, 1, 0]).sample(frac=1.0, random_state=0)
    s = from_long_frame(df)
    assert any("sorted" in n for n in s.notes)
    assert s.ids == sorted(pd.unique(df["id"]))                  # canonical: sorted, whatever the rows
    for u in s.cases:
        assert u.shape[1] == 3
    by_id = dict(zip(s.ids, s.cases))
    np.testing.assert_array_equal(by_id["s2"], cases[2])


@pytest.mark.parametrize("mutate,match", [
    (lambda df: df.assign(f1=df["f1"].where(df.index != 3, np.nan)), r"NaN or Inf .* id 's0', step 3, feature 'f1'"),
    (lambda df: df.assign(f0=df["f0"].where(df.index != 0, np.inf)), r"an infinite value \(inf\)"),
    (lambda df: pd.concat([df, df.iloc[[1]]]), r"duplicated \(id, time\) pair \('s0', 1\)"),
    (lambda df: df.assign(f2=df["f2"].astype(str) + "x"), "column 'f2' .* is not numeric"),
    (lambda df: df[df["id"] != "s1"].pipe(lambda d: pd.concat([d, df[df["id"] == "s1"].iloc[:1]])),
     r"1 id\(s\) with fewer than 2 rows, e.g. 's1'"),
    (lambda df: df.assign(id=np.arange(len(df))), "every id has one row -- is 'id' the right id column"),
    (lambda df: df.assign(target=df["target"].astype(object).where(df.index != 2, None)), "empty target in id 's0'"),
    (lambda df: df.iloc[:0], "no rows"),
])
def test_bad_long_tables(cases, mutate, match, outcome):
    with pytest.raises(DataError, match=match):
        from_long_frame(mutate(long_frame(cases, [0, 1, 0])), feature_cols=["f0", "f1", "f2"])
    outcome("your data: a long table with bad values, pairs, groups or columns", "named error")


def test_columns_named_with_suggestions(cases):
    df = long_frame(cases, [0, 1, 0])
    with pytest.raises(DataError, match=r"target_col: no column 'targt'.*did you mean 'target'.*--target-col"):
        from_long_frame(df, target_col="targt")
    with pytest.raises(DataError, match=r"id_col: no column 'ID'"):
        from_long_frame(df, id_col="ID")
    with pytest.raises(DataError, match=r"feature_cols: no column 'f9'"):
        from_long_frame(df, feature_cols="f0,f9")
    s = from_long_frame(df.assign(note="x"), feature_cols=None)
    assert s.feature_names == ["f0", "f1", "f2"] and any("non-numeric columns ['note']" in n for n in s.notes)
    assert from_long_frame(df, feature_cols="f2,f0").cases[0].tolist() == cases[0][:, [2, 0]].tolist()
    assert from_long_frame(df.drop(columns="target"), require_target=False).targets is None
    short = pd.concat([df[df["id"] != "s1"], df[df["id"] == "s1"].iloc[:1]])
    assert from_long_frame(short, min_length=1).lengths.tolist() == [4, 1, 5]      # ids s0, s1, s2


def test_missing_zero_option(cases):
    bad = [c.copy() for c in cases]
    bad[1][0, 2] = np.nan
    with pytest.raises(DataError, match=r"case 1, step 0, feature 2;.*missing='zero'"):
        from_arrays(bad, [0, 1, 0])
    assert np.isnan(from_arrays(bad, [0, 1, 0], missing="zero").cases[1][0, 2])
    bad[0][1, 1] = np.inf
    with pytest.raises(DataError, match="infinite value is refused"):
        from_arrays(bad, [0, 1, 0], missing="zero")


@pytest.mark.parametrize("X,kw,match", [
    (np.array([np.ones((2, 1)), np.ones((3, 1))], dtype=object), {}, r"ragged rows\?"),
    (np.ones((3, 4, 2)), {"lengths": np.array([4, 0, 2])}, r"lengths: expected values in \[1, 4\], got 0 for sequence 1"),
    (np.ones((3, 4, 2)), {"lengths": np.array([4, 5, 2])}, r"got 5 for sequence 1"),
    (np.ones((3, 4, 2)), {"lengths": np.array([4, 2])}, "lengths: expected 3 integers"),
    ([np.ones((2, 2)), np.ones((3, 3))], {}, "same number of features, got 2 in X\\[0\\] and 3 in X\\[1\\]"),
    ([np.ones((0, 2))], {}, "empty sequence"),
    ([], {}, "empty list"),
    (np.ones(4), {}, "Reshape your data"),
    (np.ones((2, 3), complex), {}, "Complex data not supported"),
    (np.array([["a", "b"]]), {}, "expected numbers"),
])
def test_bad_arrays(X, kw, match, outcome):
    with pytest.raises(DataError, match=match):
        from_arrays(X, **kw)
    outcome("your data: arrays that are ragged, empty, complex or with bad lengths", "named error")


def test_targets_checked_against_cases(cases):
    with pytest.raises(DataError, match="expected 3 targets"):
        from_arrays(cases, [0, 1])


def test_files(tmp_path, cases):
    df = long_frame(cases, ["a", "b", "a"])
    df.to_csv(tmp_path / "d.csv", index=False)
    pytest.importorskip("pyarrow")
    df.to_parquet(tmp_path / "d.parquet")
    x, lengths = pad(cases)
    np.savez(tmp_path / "d.npz", x=x.transpose(1, 0, 2), y=np.array(["a", "b", "a"]), lengths=lengths)
    for name in ("d.csv", "d.parquet", "d.npz"):
        s = read_data(tmp_path / name)
        assert s.lengths.tolist() == [4, 2, 5] and np.asarray(s.targets).tolist() == ["a", "b", "a"], name
        np.testing.assert_allclose(s.cases[2], cases[2], rtol=1e-15)
    # content that does not match its extension
    (tmp_path / "csv.parquet").write_text(df.to_csv(index=False))
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_data(tmp_path / "csv.parquet")
    (tmp_path / "pq.csv").write_bytes((tmp_path / "d.parquet").read_bytes())
    with pytest.raises(DataError, match="holds Parquet data, not CSV"):
        read_data(tmp_path / "pq.csv")
    (tmp_path / "junk.npz").write_text("x,y\n1,2\n")
    with pytest.raises(DataError, match="not a readable .npz"):
        read_data(tmp_path / "junk.npz")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(DataError, match="not UTF-8 text"):
        read_data(tmp_path / "bin.csv")
    np.savez(tmp_path / "ragged.npz", x=np.array([np.ones(2), np.ones(3)], dtype=object), y=np.zeros(2))
    with pytest.raises(DataError, match="object arrays .* only with pickle"):
        read_data(tmp_path / "ragged.npz")
    np.savez(tmp_path / "nox.npz", X=np.ones((2, 3)), y=np.zeros(2))
    with pytest.raises(DataError, match="no array 'x'.*did you mean"):
        read_data(tmp_path / "nox.npz")
    (tmp_path / "d.json").write_text("{}")
    with pytest.raises(DataError, match=r"ending in one of \['.npz', '.csv', '.parquet'\]"):
        read_data(tmp_path / "d.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_data(tmp_path / "none.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="is empty"):
        read_data(tmp_path / "empty.csv")


def test_memory_estimated_before_allocating(monkeypatch, cases):
    from rnnlab.engine import _checks
    monkeypatch.setattr(_checks, "available_memory", lambda: 10_000)
    with pytest.raises(DataError, match="batch_size: 3 sequence.* padded to 1000 steps need about .*iB, over half of the .* available"):
        pad([np.ones((1000, 4))] * 3)
    check_memory(4000, "small")                                # under half: fine


def test_write_table_atomic(tmp_path, monkeypatch):
    frame = pd.DataFrame({"id": [1, 2], "prediction": ["a", "b"]})
    path = write_table(frame, tmp_path / "p.csv")
    assert pd.read_csv(path)["prediction"].tolist() == ["a", "b"]
    import rnnlab.model.checkpoint as C

    def fail(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(C.os, "fsync", fail)
    with pytest.raises(DataError, match="No space left on device.*previous file is intact"):
        write_table(pd.DataFrame({"id": [9]}), tmp_path / "p.csv")
    monkeypatch.undo()
    assert pd.read_csv(path)["prediction"].tolist() == ["a", "b"]        # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["p.csv"]             # no temporary file left
    with pytest.raises(DataError, match="ending in .csv or .parquet"):
        write_table(frame, tmp_path / "p.txt")
