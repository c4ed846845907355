"""The user's own sequences: arrays, lists, long-format tables and files in, one checked form out.

Every input form becomes ``Sequences``: ``cases``, a list of N float arrays ``(T_i, F)``, with the targets
and the ids beside them. The forms:

    3-D array       (N, T, F) -- or (N, C, T) with ``channels_first=True`` (aeon / sktime layout);
                    ``lengths`` (N,) marks padded rows: case i is X[i, :lengths[i]]
    2-D array       (N, T): N univariate sequences (scikit-learn's X read as sequences)
    list            N arrays (T_i, F) or (T_i,) of any lengths
    long table      a pandas DataFrame (or a .csv / .parquet file) with one row per (id, time): an id column,
                    a time column, feature columns and, for training, a target column
    .npz            arrays ``x`` (N, T, F) or (N, T), ``y`` and optionally ``lengths`` (read without pickle)

Targets: one per sequence (N,) or (N, K), or one per step -- (N, T) / a list of (T_i,) arrays, or a long
table's target column that changes within an id (tagging). Nothing here standardises or encodes labels;
that is ``rnnlab.data.encoding``.

Length: every form the user's sequences arrive in (arrays, lists, long tables, files) is read into one
checked form here, so that each refusal is written once.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnlab.engine import _checks
from rnnlab.errors import DataError, closest

FILE_FORMATS = (".npz", ".csv", ".parquet")


@dataclass
class Sequences:
    cases: list                        # N float64 arrays (T_i, F)
    targets: object = None             # (N,) labels | (N, K) floats | list of N (T_i,) per-step labels | None
    ids: list | None = None            # the long table's id of each case (None: the row index)
    feature_names: list = field(default_factory=list)
    notes: list = field(default_factory=list)     # what was done to the data on the way in (e.g. rows sorted)
    times: list | None = None          # the long table's time values of each case's steps
    target_name: str | None = None     # the long table's target column (for messages)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(c) for c in self.cases], dtype=np.int64)

    @property
    def num_features(self) -> int:
        return self.cases[0].shape[1]

    @property
    def per_step(self) -> bool:
        """Targets given per step (tagging)."""
        return isinstance(self.targets, list)

    def subset(self, idx) -> "Sequences":
        t = self.targets
        if t is not None:
            t = [t[i] for i in idx] if isinstance(t, list) else t[idx]
        pick = (lambda v: None if v is None else [v[i] for i in idx])
        return Sequences([self.cases[i] for i in idx], t, pick(self.ids), self.feature_names, self.notes,
                         pick(self.times), self.target_name)


# ------------------------------------------------------------------------------------------------ memory
def _size(nbytes) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} bytes"


def check_memory(nbytes: int, what: str) -> None:
    """Refuse an allocation estimated at over half the available memory, before making it."""
    free = _checks.available_memory()
    if free is not None and nbytes > free // 2:
        raise DataError(f"{what}: needs about {_size(nbytes)}, over half of the "
                        f"{_size(free)} of memory available; use fewer or shorter sequences "
                        f"(or a machine with more memory)")


# ------------------------------------------------------------------------------------------------ checks
def _finite_features(cases, what, ids=None, names=None, for_training=True):
    for i, c in enumerate(cases):
        bad = ~np.isfinite(c)
        if bad.any():
            t, f = np.argwhere(bad)[0]
            who = f"id {ids[i]!r}" if ids is not None else f"case {i}"
            feat = names[f] if names else int(f)
            if np.isinf(c[t, f]):               # a number too large for float64 (1e400) or an explicit inf
                raise DataError(f"{what}: an infinite value ({c[t, f]}) in {who}, step {t}, feature {feat!r}; "
                                f"values must be finite numbers (within +-1.8e308)")
            fix = ("pass missing='zero' (--missing zero) to read them as the feature's training mean" if for_training
                   else "the model was trained with --missing error, so it reads no missing values")
            raise DataError(f"{what}: NaN or Inf ({c[t, f]}) in {who}, step {t}, feature {feat!r}; rnnlab does not impute "
                            f"-- fill or drop missing values first, or {fix}")


def _as_float_case(a, what):
    a = np.asarray(a)
    if a.dtype == object or a.dtype.kind not in "biuf":
        raise DataError(f"{what}: expected numbers, got an array of dtype {a.dtype}")
    a = a.astype(np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise DataError(f"{what}: expected a (T, F) or (T,) array, got shape {a.shape}")
    if a.shape[0] == 0:
        raise DataError(f"{what}: an empty sequence (0 steps); every sequence needs at least one step")
    return a


def from_arrays(X, y=None, lengths=None, channels_first: bool = False, missing: str = "error") -> Sequences:
    """X as a 3-D array, a 2-D array of univariate sequences, or a list of (T_i, F) / (T_i,) arrays."""
    if isinstance(X, (list, tuple)):
        if len(X) == 0:
            raise DataError("X: expected at least one sequence, got an empty list")
        if lengths is not None:
            raise DataError("lengths: a list of arrays carries its own lengths; pass lengths only with a padded array")
        if channels_first:                         # (C, T_i) each
            X = [np.asarray(c).T if np.ndim(c) == 2 else c for c in X]
        cases = [_as_float_case(c, f"X[{i}]") for i, c in enumerate(X)]
        widths = sorted({c.shape[1] for c in cases})
        if len(widths) > 1:
            first = next(i for i, c in enumerate(cases) if c.shape[1] != cases[0].shape[1])
            raise DataError(f"X: expected every sequence to have the same number of features, got {cases[0].shape[1]} "
                            f"in X[0] and {cases[first].shape[1]} in X[{first}]")
    else:
        if hasattr(X, "to_numpy") and not hasattr(X, "columns"):
            X = X.to_numpy()
        a = np.asarray(X) if not hasattr(X, "columns") else None
        if a is None:
            raise DataError("X: a DataFrame is read as a long table; give id_col, time_col and feature_cols "
                            "(rnnlab.data.sequences.from_long_frame)")
        if a.dtype == object:
            raise DataError(f"X: an array of Python objects (ragged rows?) of shape {a.shape}; pass a list of "
                            f"(T_i, F) arrays, or a padded (N, T, F) array with lengths=")
        if a.dtype.kind == "c":
            raise DataError(f"X: Complex data not supported (dtype {a.dtype}); expected real numbers")
        if a.dtype.kind not in "biuf":
            raise DataError(f"X: expected numbers, got dtype {a.dtype}")
        if a.ndim == 1:
            raise DataError(f"X: expected a (N, T, F) or (N, T) array or a list of (T_i, F) arrays, got shape "
                            f"{a.shape}. Reshape your data: one univariate sequence is X.reshape(1, -1)")
        if a.ndim == 2:
            if channels_first:                     # nothing to transpose: refused rather than ignored
                raise DataError(f"channels_first: X of shape {a.shape} is (N, T), one channel per step; "
                                f"channels_first applies to (N, C, T) arrays only")
            a = a[:, :, None]                      # (N, T) univariate
        elif a.ndim == 3:
            if channels_first:
                a = a.transpose(0, 2, 1)           # (N, C, T) -> (N, T, C)
        else:
            raise DataError(f"X: expected a (N, T, F) or (N, T) array or a list of (T_i, F) arrays, got shape {a.shape}")
        N, T, _ = a.shape
        if N == 0 or T == 0:
            raise DataError(f"X: expected at least one sequence of at least one step, got shape {a.shape}")
        a = a.astype(np.float64, copy=False)
        if lengths is None:
            cases = list(a)
        else:
            lengths = np.asarray(lengths)
            if lengths.shape != (N,) or lengths.dtype.kind not in "iu":
                raise DataError(f"lengths: expected {N} integers (one per sequence), got {lengths.dtype} array of "
                                f"shape {lengths.shape}")
            if lengths.min() < 1 or lengths.max() > T:
                i = int(np.argmax((lengths < 1) | (lengths > T)))
                raise DataError(f"lengths: expected values in [1, {T}], got {int(lengths[i])} for sequence {i}")
            cases = [a[i, :int(n)] for i, n in enumerate(lengths)]
            yy = None if y is None else np.asarray(y)
            if yy is not None and yy.ndim == 2 and yy.shape == (N, T) and yy.dtype.kind not in "fc":
                y = [yy[i, :int(n)] for i, n in enumerate(lengths)]       # padded per-step labels
    if missing == "error":
        _finite_features(cases, "X")
    elif np.isinf(np.concatenate([c.ravel() for c in cases])).any():
        raise DataError("X: Inf values; missing='zero' reads NaN as missing, an infinite value is refused")
    return Sequences(cases, check_targets(y, cases), feature_names=[str(f) for f in range(cases[0].shape[1])])


def check_targets(y, cases):
    """Targets as given, checked against the cases: (N,) / (N, K) per sequence, or per step."""
    if y is None:
        return None
    N = len(cases)
    lens = [len(c) for c in cases]
    if isinstance(y, (list, tuple)) and len(y) and all(np.ndim(v) == 1 for v in y) and len(y) == N and (
            len(set(lens)) > 1 or any(len(v) != 1 for v in y)):
        for i, (v, n) in enumerate(zip(y, lens)):  # per step: one label for each step of its sequence
            if len(v) != n:
                raise DataError(f"y: sequence {i} has {n} steps and {len(v)} labels; per-step labels need one "
                                f"label per step")
        return [np.asarray(v) for v in y]          # per step, ragged
    if isinstance(y, (list, tuple)) and len(y) and len({np.ndim(v) for v in y} | {len(v) for v in y
                                                                                if np.ndim(v) == 1}) > 1:
        raise DataError(f"y: expected one target per sequence or a label per step, got {len(y)} entries of "
                        f"different shapes")
    if hasattr(y, "to_numpy"):
        y = y.to_numpy()
    y = np.asarray(y)
    if y.dtype == object and y.ndim == 1 and len(y) and isinstance(y[0], (list, tuple, np.ndarray)):
        return check_targets(list(y), cases)
    if y.shape[:1] != (N,):
        raise DataError(f"y: expected {N} targets (one per sequence), got {y.shape[0] if y.ndim else 'a scalar'}"
                        f" (shape {y.shape})")
    if y.ndim == 2 and len(set(lens)) == 1 and y.shape[1] == lens[0] and y.dtype.kind not in "f":
        return [v for v in y]                       # (N, T) labels: per step
    if y.ndim > 2:
        raise DataError(f"y: expected (N,) or (N, K) targets, or (N, T) per-step labels, got shape {y.shape}")
    return y


# ------------------------------------------------------------------------------------------------ long tables
def _py(v):
    """A NumPy scalar as the Python value it holds, so that messages read 3, not np.int64(3)."""
    return v.item() if hasattr(v, "item") else v


def _column(name, columns, what):
    if name not in columns:
        flag = "--" + what.replace("_", "-")
        raise DataError(f"{what}: no column {name!r}; the columns are {list(columns)}{closest(name, columns)} "
                        f"(name it with {what}= / {flag})")
    return name


def natural(v):
    """A sort key in natural order (s2 before s10, dim2 before dim10); values of one type sort among themselves."""
    if isinstance(v, str):
        return ("str", tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", v) if t), v)
    return (type(v).__name__, v)


def _row(i, source) -> str:
    """A table row as the user counts it: from 1, after the header."""
    return f"data row {int(i) + 1} of {source}"


def _as_numbers(series, name, source, what):
    """A column as float64 numbers, or None when it is text. Python Decimals (Parquet decimal columns) and
    numbers written as text count as numbers; a mostly numeric column with a few other cells is an error
    naming the first of them, never a column dropped or a cell read as missing."""
    import pandas as pd
    if pd.api.types.is_bool_dtype(series):
        return None
    if pd.api.types.is_numeric_dtype(series):
        return series.astype(np.float64)
    filled = series.dropna()
    if len(filled) == 0:
        return None
    parsed = pd.to_numeric(filled.map(lambda v: str(v) if not isinstance(v, (int, float)) else v),
                           errors="coerce")
    bad = parsed.isna()
    if not bad.any():
        return pd.to_numeric(series.map(lambda v: v if v is None or isinstance(v, (int, float)) else str(v)),
                             errors="coerce").astype(np.float64)
    if bad.mean() <= 0.5:
        i = bad.index[bad.to_numpy()][0]
        raise DataError(f"{what}: column {name!r} is numeric but {_row(i, source)} holds {series[i]!r} "
                        f"({int(bad.sum())} such cell(s)); fix or drop those rows")
    return None


def _time_values(series, time_col, source, time_format="", for_training=True):
    """The time column as numbers or datetimes, never text (text sorts 10 before 2 and 13/01 before 14/12).

    Numbers stay numbers; text is parsed as ISO 8601 dates and times, or with ``time_format`` (strptime
    codes, e.g. ``%d/%m/%Y``) when it is given."""
    import pandas as pd
    if time_format:
        if pd.api.types.is_datetime64_any_dtype(series) or pd.api.types.is_timedelta64_dtype(series):
            raise DataError(f"time_format: column {time_col!r} of {source} already holds dates or durations, not "
                            f"text; drop --time-format")
        text = series.astype(str)
        try:
            parsed = pd.to_datetime(text, format=time_format, errors="coerce", utc=True)
        except ValueError as exc:                 # a bad directive such as %Q
            raise DataError(f"time_format: {time_format!r} is not a strptime format ({exc})") from None
        bad = parsed.isna()
        if bad.any():
            i = bad.index[bad.to_numpy()][0]
            raise DataError(f"time_format: {_row(i, source)} has time {_py(series[i])!r} in column {time_col!r}, "
                            f"which does not match {time_format!r}")
        return parsed
    if pd.api.types.is_datetime64_any_dtype(series) or pd.api.types.is_timedelta64_dtype(series) or (
            pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)):
        return series
    if pd.api.types.is_bool_dtype(series):
        raise DataError(f"time_col: column {time_col!r} of {source} holds true/false values, not times")
    numbers = _as_numbers(series, time_col, source, "time_col")
    if numbers is not None:
        return numbers
    parsed = pd.to_datetime(series.astype(str), format="ISO8601", errors="coerce", utc=True)
    bad = parsed.isna()
    if not bad.any():
        return parsed
    i = bad.index[bad.to_numpy()][0]
    hint = ("text times are never sorted as text -- pass --time-format (time_format=), e.g. '%d/%m/%Y'" if
            for_training else "the run reads its times as numbers or ISO 8601 dates")
    raise DataError(f"time_col: column {time_col!r} is text that is neither numbers nor ISO 8601 dates: "
                    f"{_row(i, source)} has {_py(series[i])!r}; {hint}")


def from_long_frame(df, id_col="id", time_col="time", feature_cols=None, target_col="target",
                    require_target: bool = True, missing: str = "error", min_length: int = 2,
                    source: str = "data", time_format: str = "", trained_features=None,
                    for_training: bool = True) -> Sequences:
    """A long table (one row per id and time) -> Sequences, cases in the order of their ids (sorted, so the
    order of the rows does not change a run).

    Rows are sorted by time within each id (a note says so when they were not); (id, time) pairs must be
    unique. The time column is numeric or a date/time (ISO 8601, or ``time_format``). ``feature_cols``: a list,
    a comma-separated string, or None / "" for every other numeric column (sorted by name). ``trained_features``: the feature
    names a trained model reads, by name and in its order (extra columns are ignored). ``target_col`` may be
    missing from the table when ``require_target`` is False (prediction).
    """
    import pandas as pd
    cols = [str(c) for c in df.columns]
    if len(set(cols)) != len(cols):
        dup = next(c for c in cols if cols.count(c) > 1)
        raise DataError(f"{source}: column {dup!r} appears {cols.count(dup)} times in the header; name each column once")
    df = df.rename(columns=dict(zip(df.columns, cols))).reset_index(drop=True)
    _column(id_col, cols, "id_col")
    _column(time_col, cols, "time_col")
    if id_col == time_col:
        raise DataError(f"time_col: the time column {time_col!r} is also the id column; they must differ")
    if target_col and target_col in (id_col, time_col):
        raise DataError(f"target_col: {target_col!r} is the {'id' if target_col == id_col else 'time'} column; the "
                        f"target must be another column")
    has_target = bool(target_col) and target_col in cols
    if target_col and require_target:
        _column(target_col, cols, "target_col")
    if isinstance(feature_cols, str):
        text = feature_cols
        feature_cols = [c.strip() for c in feature_cols.split(",") if c.strip()]
        if text.strip() and not feature_cols:
            raise DataError(f"feature_cols: expected column names separated by commas, got {text!r}")
    if len(df) == 0:
        raise DataError(f"{source}: no rows (only a header)")
    skipped = []
    numbers = {}
    if trained_features is not None:
        feature_cols = [str(c) for c in trained_features]
        lost = [c for c in feature_cols if c not in cols]
        if lost:
            raise DataError(f"feature_cols: column {lost[0]!r} is missing from {source}; the model reads its features "
                            f"by name {feature_cols} and the file has {cols}{closest(lost[0], cols)}")
    elif not feature_cols:
        rest = [c for c in cols if c not in (id_col, time_col, target_col)]
        for c in rest:
            v = _as_numbers(df[c], c, source, "feature_cols")
            if v is None:
                skipped.append(c)
            else:
                numbers[c] = v
        feature_cols = sorted((c for c in rest if c in numbers), key=natural)   # canonical, not the file's order
        if not feature_cols:
            raise DataError(f"feature_cols: no numeric feature columns in {source} besides id {id_col!r}, time "
                            f"{time_col!r} and target {target_col!r}; the columns are {cols}")
    else:
        for c in feature_cols:
            _column(c, cols, "feature_cols")
        dup = [c for c in feature_cols if feature_cols.count(c) > 1]
        if dup:
            raise DataError(f"feature_cols: column {dup[0]!r} is named twice in {feature_cols}; name each feature once")
    for c in feature_cols:
        if c in (id_col, time_col) or (c == target_col and has_target):
            role = "id" if c == id_col else ("time" if c == time_col else "target")
            raise DataError(f"feature_cols: {c!r} is the {role} column (--{role}-col); a feature must be another column")
        if c not in numbers:
            v = _as_numbers(df[c], c, source, "feature_cols")
            if v is None:
                sample = df[c].dropna().iloc[0] if df[c].notna().any() else None
                raise DataError(f"feature_cols: column {c!r} of {source} is not numeric (dtype {df[c].dtype}, e.g. "
                                f"{sample!r}); convert it or leave it out of feature_cols")
            numbers[c] = v
    if len(df) == 0:
        raise DataError(f"{source}: no rows")
    for arg, which in (("id_col", id_col), ("time_col", time_col)):
        if df[which].isna().any():
            i = df.index[df[which].isna().to_numpy()][0]
            raise DataError(f"{arg}: {int(df[which].isna().sum())} empty value(s) in column {which!r}, the first in "
                            f"{_row(i, source)}")
    check_memory(len(df) * len(feature_cols) * 8 * 3, f"{source}")
    times = _time_values(df[time_col], time_col, source, time_format, for_training)
    key = pd.DataFrame({"_id": df[id_col].astype(object), "_time": times})
    dup = key.duplicated(["_id", "_time"])
    if dup.any():
        i = dup.index[dup.to_numpy()][0]
        raise DataError(f"{source}: duplicated (id, time) pair ({_py(df[id_col][i])!r}, {_py(df[time_col][i])!r}) in "
                        f"{_row(i, source)} -- {int(dup.sum())} duplicated row(s); each id may have one row per time")
    notes = []
    idv = df[id_col].astype(object) if isinstance(df[id_col].dtype, pd.CategoricalDtype) else df[id_col]
    order = sorted(pd.unique(idv), key=natural)       # canonical: not the rows' order
    keyed = pd.DataFrame({"_rnnlab_order": pd.Categorical(idv, categories=order, ordered=True),
                          "_time": times, "_row": np.arange(len(df))})
    is_sorted = keyed.groupby("_rnnlab_order", observed=True, sort=False)["_time"].apply(
        lambda s: s.is_monotonic_increasing).all()
    if not is_sorted:
        notes.append(f"{source}: rows were not in time order within each id; sorted by {time_col!r}")
    keyed = keyed.sort_values(["_rnnlab_order", "_time"], kind="stable")
    rows = keyed["_row"].to_numpy()
    values = np.stack([numbers[c].to_numpy(dtype=np.float64)[rows] for c in feature_cols], axis=1)
    codes = keyed["_rnnlab_order"].cat.codes.to_numpy()
    bounds = np.flatnonzero(np.diff(codes)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(codes)]])
    cases = [values[a:b] for a, b in zip(starts, ends)]
    ids = [_py(o) for o in order]
    short = [ids[i] for i, c in enumerate(cases) if len(c) < min_length]
    if short:
        if len(short) == len(cases) and all(len(c) == 1 for c in cases):
            hint = f"; every id has one row -- is {id_col!r} the right id column?"
        elif for_training:
            hint = "; drop them, or pass min_length=1 (--min-length 1) to keep them"
        else:
            hint = f"; the model was trained with --min-length {min_length}, so such ids are refused here too"
        raise DataError(f"{source}: {len(short)} id(s) with fewer than {min_length} rows, e.g. {short[0]!r} "
                        f"({len(cases[ids.index(short[0])])} row(s); {len(cases)} ids in all){hint}")
    if missing == "error":
        _finite_features(cases, source, ids, feature_cols, for_training)
    targets = None
    if has_target:
        t = df[target_col].to_numpy()[rows]
        tn = pd.isna(t)
        if tn.any():
            i = rows[np.flatnonzero(tn)[0]]
            raise DataError(f"target_col: empty target in id {_py(df[id_col][i])!r}, time {_py(df[time_col][i])!r} "
                            f"({_row(i, source)})")
        per_case = [t[a:b] for a, b in zip(starts, ends)]
        varies = any(len(pd.unique(pd.Series(p))) > 1 for p in per_case)
        targets = [np.asarray(p) for p in per_case] if varies else np.array([p[0] for p in per_case])
    if skipped:
        notes.append(f"{source}: non-numeric columns {skipped} left out of the features")
    tv = df[time_col].to_numpy()[rows]                 # the times as the user wrote them, in step order
    return Sequences(cases, targets, ids, list(feature_cols), notes, [tv[a:b] for a, b in zip(starts, ends)],
                     target_col if has_target else None)


# ------------------------------------------------------------------------------------------------ files
def is_table(path) -> bool:
    """A long table (.csv, .parquet), whose features are read by column name; else an .npz of arrays."""
    return Path(path).suffix in (".csv", ".parquet")


def changed_since(path, digest) -> bool:
    """Whether the file at ``path`` no longer has the sha256 ``digest`` stored when a run read it."""
    return bool(digest) and bool(path) and Path(path).is_file() and file_digest(path) != digest


def file_digest(path) -> str:
    """sha256 of a file's bytes: a run refuses to resume on data that changed since it started."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pandas(what):
    try:
        import pandas as pd
    except ImportError:
        raise DataError(f"{what} needs pandas; install it with: pip install -e '.[data]'") from None
    return pd


def read_table(path, id_col=None):
    """A .csv or .parquet file -> DataFrame, with an error naming the file when its content does not fit.
    A CSV's id column is read as text: ids 007 and 7 are two ids, and come back as written."""
    path = Path(path)
    pd = _pandas(f"reading {path.suffix} files")
    if path.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise DataError("reading .parquet files needs pyarrow; install it with: pip install -e '.[data]'") from None
        try:
            return pd.read_parquet(path)
        except Exception as exc:            # pyarrow raises its own types for a file that is not Parquet
            raise DataError(f"data: {path} is not a readable Parquet file ({type(exc).__name__}: "
                            f"{str(exc)[:120]}); is it another format with a .parquet name?") from None
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
        if head.startswith(b"PAR1") or head.startswith(b"PK\x03\x04"):
            kind = "Parquet" if head.startswith(b"PAR1") else "zip (.npz?)"
            raise DataError(f"data: {path} holds {kind} data, not CSV text; give it its own extension")
        frame = pd.read_csv(path, dtype={id_col: str} if id_col else None)
        _check_header(path, frame)
        return frame
    except UnicodeDecodeError:
        raise DataError(f"data: {path} is not UTF-8 text, so not a CSV file") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"data: {path} is empty") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"data: {path} is not a readable CSV file ({str(exc)[:160]})") from None


def _check_header(path, frame):
    """The header as written: pandas renames a repeated name (x1 -> x1.1) and names an empty one 'Unnamed: k'."""
    import csv
    with open(path, newline="", encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh), [])
    seen = set()
    for k, name in enumerate(header):
        if not name.strip():
            raise DataError(f"data: column {k + 1} of {path} has no name in the header (a saved index? write the "
                            f"file with index=False, or name the column)")
        if name in seen:
            raise DataError(f"data: column {name!r} appears {header.count(name)} times in the header of {path}; "
                            f"name each column once")
        seen.add(name)


def _labels_as_written(path, target_col, targets):
    """Integer labels read from text must be as many as the texts: '01' and '1' are two labels, not one."""
    import pandas as pd
    text = pd.read_csv(path, usecols=[target_col], dtype=str)[target_col].dropna()
    pairs = text.drop_duplicates()
    numbers = pd.to_numeric(pairs, errors="coerce")
    clash = numbers[numbers.duplicated(keep=False)]
    if len(clash):
        same = sorted(pairs[clash.index].tolist())
        raise DataError(f"target_col: labels {same[:3]} in column {target_col!r} are different text but the same "
                        f"number; write each label one way")


def read_npz(path, channels_first=False, missing="error") -> Sequences:
    path = Path(path)
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            raise DataError(f"data: {path} is not a readable .npz file (not a zip archive of .npy arrays; "
                            f"write it with numpy.savez)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(f"data: {path} holds object arrays (ragged rows?), which load only with pickle; save a "
                            f"padded x (N, T, F) with lengths (N,) instead") from None
        raise DataError(f"data: {path} is not a readable .npz file ({exc})") from None
    except Exception as exc:                # a torn zip raises BadZipFile, zlib.error, EOFError, OSError ...
        raise DataError(f"data: {path} is not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if "x" not in arrays:
        near = [k for k in arrays if k.lower() in ("x", "xs", "inputs", "features")]
        hint = f" (did you mean {near[0]!r}? the arrays must be named x, y and lengths)" if near else ""
        raise DataError(f"data: {path} has no array 'x'; it holds {sorted(arrays)}{hint}")
    s = from_arrays(arrays["x"], arrays.get("y"), arrays.get("lengths"), channels_first, missing)
    return s


def read_data(path, id_col="id", time_col="time", feature_cols=None, target_col="target", require_target=True,
              channels_first=False, missing="error", min_length=2, time_format="", trained_features=None,
              for_training=True, what="data") -> Sequences:
    """A .npz, .csv or .parquet file -> Sequences (see the module docstring for the layouts).

    ``trained_features``: a trained model's feature names, read by name from a table (see from_long_frame).
    ``what``: the argument that named the file (data, val_data), for messages."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{what}: {str(path)!r} is a folder; expected a .npz, .csv or .parquet file")
    if not path.is_file():
        raise FileNotFoundError(f"{what}: file {str(path)!r} does not exist")
    if path.suffix not in FILE_FORMATS:
        raise DataError(f"{what}: {path.name}: expected a file ending in one of {list(FILE_FORMATS)}, got {path.suffix!r}")
    check_memory(path.stat().st_size * 4, f"{what}: {path}")
    if path.suffix == ".npz":
        s = read_npz(path, channels_first, missing)
        if require_target and s.targets is None:
            raise DataError(f"{what}: {path} has no array 'y' of targets")
        return s
    frame = read_table(path, id_col)
    if path.suffix == ".csv" and target_col in frame.columns and frame[target_col].dtype.kind in "iu":
        _labels_as_written(path, target_col, frame[target_col])
    return from_long_frame(frame, id_col, time_col, feature_cols, target_col, require_target, missing,
                           min_length, source=str(path), time_format=time_format, trained_features=trained_features,
                           for_training=for_training)


def pad(cases, T: int | None = None, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """cases (T_i, F) -> x (T, N, F) time-major, zero after each case's end, and lengths (N,)."""
    lengths = np.array([len(c) for c in cases], dtype=np.int64)
    T = int(lengths.max()) if T is None else T
    nbytes = T * len(cases) * cases[0].shape[1] * np.dtype(dtype).itemsize
    free = _checks.available_memory()
    if free is not None and nbytes > free // 2:           # the remedy depends on what makes the batch big
        raise DataError(f"batch_size: {len(cases)} sequence(s) padded to {T} steps need about {_size(nbytes)}, "
                        f"over half of the {_size(free)} available; "
                        + ("lower --batch-size" if len(cases) > 1 else "split the long sequence into shorter "
                           "ones (e.g. windows of a few thousand steps)"))
    x = np.zeros((T, len(cases), cases[0].shape[1]), dtype)
    for i, c in enumerate(cases):
        x[:len(c), i] = c
    return x, lengths


def write_table(frame, path) -> Path:
    """Write a DataFrame to .csv or .parquet atomically (the old file stays whole if anything fails)."""
    import io

    from rnnlab.model.checkpoint import atomic_write
    path = Path(path)
    if path.suffix not in (".csv", ".parquet"):
        raise DataError(f"out: expected a file ending in .csv or .parquet, got {path.name!r}")
    if path.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise DataError("writing .parquet files needs pyarrow; install it with: pip install -e '.[data]'") from None
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        data = buf.getvalue()
    else:
        data = frame.to_csv(index=False).encode("utf-8")
    try:
        return atomic_write(path, data)
    except OSError as exc:
        raise DataError(f"out: could not write {path} ({exc.strerror or exc}); "
                        f"{getattr(exc, 'rnnlab_kept', 'nothing was written')}") from None
