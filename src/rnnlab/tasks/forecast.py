"""Forecasting one or more series of a long table: the next ``horizon`` values from a window of the past.

The table (``.csv`` / ``.parquet``, or a series shipped in statsmodels: ``sunspots``, ``elec_equip``) has one row
per (series, time):

    id_col        which series the row belongs to (absent from the table: one series)
    time_col      numbers or dates (ISO 8601, or ``time_format``); rows are sorted by it within a series
    target_col    the value(s) to forecast: one column or several, comma-separated
    feature_cols  past covariates: known up to the forecast origin ("" = every other numeric column)
    future_cols   known future covariates (a promotion, a holiday): their values in the horizon's rows are read

One window is ``seq_len`` steps of [targets, past covariates, future covariates] ending at the origin t; with
future covariates it goes on for ``horizon`` more steps that carry only the future covariates and an
``is_future`` flag of 1 (targets and past covariates 0 there). The model reads the window and, at its last step,
predicts every step t+1 ... t+H at once: one head of H x K x Q outputs (direct multi-step forecasting, no
feeding back of its own forecasts), Q quantiles per value when ``quantiles`` are given (pinball loss; the median
is the point forecast and the outer two bound the interval) or one value (MSE) when not.

Training and validation are split by time: the last ``val_fraction`` of the table's distinct times validate,
every training window (inputs and targets) lies before that point, and the standardisation (per column, mean
and standard deviation over the training rows) is fitted on the training rows alone. Metrics are in the data's
units, on the validation windows: MAE, RMSE, MASE (the errors over each series' in-sample seasonal-naive MAE,
Hyndman and Koehler 2006) and the interval's coverage, beside the naive (last value) and seasonal-naive (the
value one season back) forecasts of the same windows. The season is ``--season``, or inferred from a regular
date index (hourly 24, daily 7, business days 5, weekly 52, monthly 12, quarterly 4) and said.

Length: one task: the forecaster's table reading, windows, standardisation, baselines and metrics, each
short, read together.
"""
from __future__ import annotations

import importlib.util
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rnnlab.errors import ConfigError, DataError
from rnnlab.tasks.base import Batch, Task

# series that ship inside statsmodels (extra ``data``): file, time column, target column, time format
DATASETS = {"sunspots": ("sunspots/sunspots.csv", "YEAR", "SUNACTIVITY", ""),
            "elec_equip": ("elec_equip/elec_equip.csv", "DATE", "STS.M.I7.W.TOVT.NS0016.4.000", "%b-%d-%Y")}
FLAG = "is_future"


def dataset_path(name: str) -> Path:
    """The file of a series shipped with statsmodels (``DATASETS``)."""
    spec = importlib.util.find_spec("statsmodels")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"data={name!r} is a series of the statsmodels package; install it with: "
                          f"pip install -e '.[data]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / DATASETS[name][0]
    if not path.is_file():
        raise ConfigError(f"data={name!r}: {path} is missing from the installed statsmodels package")
    return path


def sunspots_path() -> Path:
    return dataset_path("sunspots")


def split_names(text, what) -> list:
    names = [c.strip() for c in str(text).split(",") if c.strip()] if text else []
    if text and str(text).strip() and not names:
        raise ConfigError(f"{what}: expected column names separated by commas, got {text!r}")
    dup = [c for c in names if names.count(c) > 1]
    if dup:
        raise ConfigError(f"{what}: column {dup[0]!r} is named twice; name each column once")
    return names


def parse_quantiles(text) -> list:
    """'0.1,0.5,0.9' -> [0.1, 0.5, 0.9]: increasing, in (0, 1), the median among them ("" = a point forecast)."""
    if not str(text).strip():
        return []
    try:
        qs = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"quantiles: expected numbers in (0, 1) separated by commas, e.g. 0.1,0.5,0.9, got "
                          f"{text!r}") from None
    if not all(0.0 < q < 1.0 for q in qs) or sorted(set(qs)) != qs:
        raise ConfigError(f"quantiles: expected increasing numbers strictly between 0 and 1, got {text!r}")
    if 0.5 not in qs:
        raise ConfigError(f"quantiles: the point forecast is the median, so 0.5 must be among them, got {text!r}")
    return qs


def quantile_name(q: float) -> str:
    """0.1 -> 'q10', 0.025 -> 'q2.5': the column of a quantile forecast."""
    return "q" + f"{100 * q:.6g}"


# ----------------------------------------------------------------------------------------------- the table
@dataclass
class Panel:
    """The series of one table, each sorted by time: raw values in the column order targets + past + future."""
    ids: list                      # one per series (None: the table has no id column)
    times: list                    # per series: (n,) float64 numbers or int64 nanoseconds (datetimes)
    written: list                  # per series: (n,) the times as the table wrote them
    values: list                   # per series: (n, K + P + Fu) float64, NaN where a cell is empty
    columns: dict                  # "targets", "past", "future": the column names
    time_kind: str                 # number | datetime
    notes: list = field(default_factory=list)


def read_panel(frame, id_col, time_col, target_col, feature_cols="", future_cols="", time_format="",
               source="data", for_training=True, columns: dict | None = None) -> Panel:
    """A long table -> Panel. ``columns``: a trained model's target, past and future columns (read by name)."""
    import pandas as pd

    from rnnlab.data.sequences import _as_numbers, _column, _py, _row, _time_values, natural
    cols = [str(c) for c in frame.columns]
    frame = frame.rename(columns=dict(zip(frame.columns, cols))).reset_index(drop=True)
    if len(frame) == 0:
        raise DataError(f"{source}: no rows (only a header)")
    notes = []
    _column(time_col, cols, "time_col")
    has_id = bool(id_col) and id_col in cols
    if columns is not None:
        targets, past, future = columns["targets"], columns["past"], columns["future"]
        for what, names in (("target_col", targets), ("feature_cols", past), ("future_cols", future)):
            for c in names:
                _column(c, cols, what)
        if columns.get("id_col") and not has_id:
            _column(columns["id_col"], cols, "id_col")
    else:
        targets = split_names(target_col, "target_col")
        if not targets:
            raise ConfigError("target_col: the forecast task needs the column(s) to forecast, got none")
        future = split_names(future_cols, "future_cols")
        for what, names in (("target_col", targets), ("future_cols", future)):
            for c in names:
                _column(c, cols, what)
        taken = {time_col, *(targets), *(future)} | ({id_col} if has_id else set())
        if feature_cols:
            past = split_names(feature_cols, "feature_cols")
            for c in past:
                _column(c, cols, "feature_cols")
        else:
            past, skipped = [], []
            for c in sorted((c for c in cols if c not in taken), key=natural):
                (past if _as_numbers(frame[c], c, source, "feature_cols") is not None else skipped).append(c)
            if skipped:
                notes.append(f"{source}: non-numeric columns {skipped} left out of the covariates")
        words = {"target_col": "target", "feature_cols": "past covariate", "future_cols": "future covariate"}
        roles = {id_col: "id", time_col: "time"} if has_id else {time_col: "time"}
        for what, names in (("target_col", targets), ("feature_cols", past), ("future_cols", future)):
            for c in names:
                if c in roles:
                    raise DataError(f"{what}: {c!r} is the {roles[c]} column; it cannot also be a {words[what]} column")
                roles[c] = words[what]
        if not has_id and id_col and for_training:
            notes.append(f"{source}: no column {id_col!r}, so the table is one series (name the series' id "
                         f"column with --id-col when it holds several)")
    numbers = {}
    for what, names in (("target_col", targets), ("feature_cols", past), ("future_cols", future)):
        for c in names:
            v = _as_numbers(frame[c], c, source, what)
            if v is None:
                raise DataError(f"{what}: column {c!r} of {source} is not numeric (dtype {frame[c].dtype}); convert it "
                                f"or leave it out")
            numbers[c] = v.to_numpy(dtype=np.float64)
    if frame[time_col].isna().any():
        i = frame.index[frame[time_col].isna().to_numpy()][0]
        raise DataError(f"time_col: empty time in column {time_col!r} ({_row(i, source)})")
    parsed = _time_values(frame[time_col], time_col, source, time_format, for_training)
    if pd.api.types.is_datetime64_any_dtype(parsed):
        if getattr(parsed.dt, "tz", None) is not None:
            parsed = parsed.dt.tz_convert(None)
        t_all, kind = parsed.to_numpy().astype("datetime64[ns]").astype(np.int64), "datetime"
    elif pd.api.types.is_timedelta64_dtype(parsed):
        t_all, kind = parsed.to_numpy().astype("timedelta64[ns]").astype(np.int64), "datetime"
    else:
        t_all, kind = np.asarray(parsed, dtype=np.float64), "number"
    if has_id:
        idv = frame[id_col]
        if idv.isna().any():
            i = frame.index[idv.isna().to_numpy()][0]
            raise DataError(f"id_col: empty id in column {id_col!r} ({_row(i, source)})")
        order = sorted(pd.unique(idv.astype(object)), key=natural)
        code = pd.Categorical(idv.astype(object), categories=order).codes
    else:
        order, code = [None], np.zeros(len(frame), np.int64)
    allv = np.stack([numbers[c] for c in targets + past + future], axis=1)
    ids, times, written, values = [], [], [], []
    raw_t = frame[time_col].to_numpy()
    unsorted = False
    for k, name in enumerate(order):
        rows = np.flatnonzero(code == k)
        srt = np.argsort(t_all[rows], kind="stable")
        unsorted |= bool((srt != np.arange(len(rows))).any())
        rows = rows[srt]
        t = t_all[rows]
        dup = np.flatnonzero(np.diff(t) == 0)
        if len(dup):
            i = rows[dup[0] + 1]
            who = f"series {_py(name)!r}" if has_id else "the table"
            hint = "" if has_id else (f"; is there an id column? name it with --id-col (no column {id_col!r})"
                                      if id_col else "")
            raise DataError(f"{source}: time {_py(raw_t[i])!r} appears twice in {who} ({_row(i, source)}){hint}")
        ids.append(_py(name))
        times.append(t)
        written.append(raw_t[rows])
        values.append(allv[rows])
    if unsorted:
        notes.append(f"{source}: rows were not in time order within each series; sorted by {time_col!r}")
    return Panel(ids, times, written, values, {"targets": targets, "past": past, "future": future}, kind, notes)


def regular_step(panel: Panel):
    """(frequency or step, words) of the panel's time index, or (None, why not) when it is not regular."""
    import pandas as pd
    if panel.time_kind == "datetime":
        freqs = set()
        for t in panel.times:
            if len(t) < 3:
                return None, "a series has fewer than 3 times"
            with warnings.catch_warnings():           # pandas 3 warns that an offset will replace the string
                warnings.simplefilter("ignore")
                f = pd.infer_freq(pd.DatetimeIndex(t.astype("datetime64[ns]")))
            f = getattr(f, "freqstr", f)
            if f is None:
                return None, "the dates are not evenly spaced"
            freqs.add(f)
        if len(freqs) != 1:
            return None, f"the series have different frequencies {sorted(freqs)}"
        return freqs.pop(), "dates"
    steps = set()
    for t in panel.times:
        d = np.diff(t)
        if len(d) == 0 or not np.allclose(d, d[0]):
            return None, "the times are not evenly spaced"
        steps.add(float(d[0]))
    if len(steps) != 1:
        return None, "the series have different time steps"
    return steps.pop(), "numbers"


_SEASONS = {"h": 24, "D": 7, "B": 5, "W": 52, "M": 12, "MS": 12, "ME": 12, "Q": 4, "QS": 4, "QE": 4,
            "min": 60, "T": 60}


def infer_season(freq) -> tuple[int, str]:
    """(season, words) from a pandas frequency: the calendar's cycle one step up (days -> the week)."""
    if not isinstance(freq, str):
        return 1, "no season inferred from a numeric time column (set --season)"
    import pandas as pd
    off = pd.tseries.frequencies.to_offset(freq)
    base = off.rule_code.split("-")[0].upper().rstrip("E").rstrip("S") or off.rule_code
    code = {"H": "h", "D": "D", "B": "B", "W": "W", "M": "M", "Q": "Q", "MIN": "min", "T": "min"}.get(base)
    if off.n != 1 or code is None:
        return 1, f"no season inferred from frequency {freq!r} (set --season)"
    m = _SEASONS[code]
    word = {"h": "hourly", "D": "daily", "B": "business-day", "W": "weekly", "M": "monthly", "Q": "quarterly",
            "min": "minutely"}[code]
    return m, f"season {m} inferred from the {word} dates (set --season to change it)"


# ----------------------------------------------------------------------------------------------- the spec
@dataclass
class ForecastSpec:
    """What a trained forecaster reads and writes; stored with the model (``task_info['forecast']``)."""
    targets: list
    past: list
    future: list
    horizon: int
    seq_len: int
    quantiles: list                 # [] = a point forecast (MSE)
    mean: list                      # per column, targets + past + future: the training rows' statistics
    std: list
    season: int
    id_col: str | None              # None: the table was one series
    time_col: str
    time_kind: str                  # number | datetime
    freq: object = None             # a pandas frequency (dates) or a number (the step), None when irregular
    time_format: str = ""
    missing: str = "error"          # error | zero: an empty covariate reads as its training mean

    @property
    def input_names(self) -> list:
        return self.targets + self.past + self.future + ([FLAG] if self.future else [])

    @property
    def input_size(self) -> int:
        return len(self.input_names)

    @property
    def window(self) -> int:
        """Steps the model reads: the past, and the horizon's rows when future covariates are known."""
        return self.seq_len + (self.horizon if self.future else 0)

    @property
    def Q(self) -> int:
        return max(1, len(self.quantiles))

    @property
    def output_size(self) -> int:
        return self.horizon * len(self.targets) * self.Q

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> "ForecastSpec":
        return cls(**d)

    def standardise(self, values) -> np.ndarray:
        """(n, C) raw -> (n, C) standardised; empty covariates read as 0 (the mean) under missing='zero'."""
        z = (values - np.asarray(self.mean)) / np.asarray(self.std)
        if self.missing == "zero":
            K = len(self.targets)
            z[:, K:] = np.nan_to_num(z[:, K:], nan=0.0)
        return z

    def decode(self, out) -> np.ndarray:
        """(B, H*K*Q) model outputs -> (B, H, K, Q) in the data's units, the quantiles sorted (no crossing)."""
        K = len(self.targets)
        y = out.reshape(len(out), self.horizon, K, self.Q).astype(np.float64)
        y = y * np.asarray(self.std[:K])[None, None, :, None] + np.asarray(self.mean[:K])[None, None, :, None]
        return np.sort(y, axis=-1)

    def point(self, decoded) -> np.ndarray:
        """(B, H, K, Q) -> (B, H, K): the median (or the one output of a point forecast)."""
        return decoded[..., self.quantiles.index(0.5)] if self.quantiles else decoded[..., 0]


def windows(spec: ForecastSpec, z_list, series_idx, origins) -> np.ndarray:
    """Windows ending at ``origins`` (the last known step) of series ``series_idx`` -> x (window, B, F)."""
    K, P, Fu = len(spec.targets), len(spec.past), len(spec.future)
    B = len(origins)
    x = np.zeros((spec.window, B, spec.input_size))
    for j, (s, o) in enumerate(zip(series_idx, origins)):
        z = z_list[s]
        x[:spec.seq_len, j, :K + P + Fu] = z[o - spec.seq_len + 1:o + 1]
        if Fu:                              # the horizon: only the known future covariates, flagged
            x[spec.seq_len:, j, K + P:K + P + Fu] = z[o + 1:o + 1 + spec.horizon, K + P:]
            x[spec.seq_len:, j, -1] = 1.0
    return x


def _seasonal_scale(y, m) -> np.ndarray:
    """(n, K) -> (K,) the in-sample MAE of the seasonal-naive forecast (MASE's denominator); NaN when undefined."""
    if len(y) <= m:
        return np.full(y.shape[1], np.nan)
    return np.abs(y[m:] - y[:-m]).mean(axis=0)


# ----------------------------------------------------------------------------------------------- the task
class ForecastTask(Task):
    name = "forecast"
    input_mode = "dense"
    prediction = "identity"
    target = "last"

    def __init__(self, panel: Panel, spec: ForecastSpec, val_fraction: float = 0.2, name: str = "forecast",
                 fitted: bool = False, backtest: bool = False, season_note: str = ""):
        """``spec``: its statistics are fitted on the training rows unless ``fitted`` (a trained model's).
        ``backtest``: every window of the panel validates (a held-out file), MASE scaled by each whole series."""
        self.panel, self.spec, self.series_name = panel, spec, name
        self.notes = list(panel.notes) + ([season_note] if season_note else [])
        self.quantiles = list(spec.quantiles) or None
        H, L, K = spec.horizon, spec.seq_len, len(spec.targets)
        self.metrics = ("loss", "mae", "rmse", "mase") + (("coverage",) if spec.Q > 1 else ())
        self.input_size, self.output_size = spec.input_size, spec.output_size
        n = np.array([len(t) for t in panel.times])
        if backtest:
            n_train, self.cutoff = np.zeros(len(n), np.int64), None
        else:
            distinct = np.unique(np.concatenate(panel.times))
            n_val = int(round(len(distinct) * val_fraction))
            if n_val < 1 or n_val >= len(distinct):
                raise DataError(f"val_fraction: {val_fraction} of the table's {len(distinct)} distinct times leaves "
                                f"{'no validation' if n_val < 1 else 'no training'} times")
            self.cutoff = distinct[len(distinct) - n_val]            # the first validation time
            n_train = np.array([np.searchsorted(t, self.cutoff, "left") for t in panel.times])
        self.n_train_rows = n_train
        for s, v in enumerate(panel.values):                         # the targets the model learns from or is scored on
            bad = np.flatnonzero(np.isnan(v[:, :K]).any(axis=1))
            if len(bad):
                who = f"series {panel.ids[s]!r}, " if panel.ids[s] is not None else ""
                why = ("scoring needs the actual values -- give a table with them (predict is the command that takes "
                       "the horizon's empty rows)" if backtest else "a forecaster learns from complete targets -- fill "
                       "or drop the row")
                raise DataError(f"target_col: empty target at {who}time {panel.written[s][bad[0]]!r}; {why}")
        if not fitted:
            if (n_train == 0).all():
                raise DataError("val_fraction: no series has rows before the validation time; lower --val-fraction")
            train_rows = np.concatenate([v[:k] for v, k in zip(panel.values, n_train)])
            mean, std = np.nanmean(train_rows, axis=0), np.nanstd(train_rows, axis=0)
            const = [c for c, s in zip(spec.targets + spec.past + spec.future, std) if not s > 0]
            if const:
                self.notes.append(f"columns {const} are constant in the training rows (read as 0 after centring)")
            spec.mean, spec.std = mean.tolist(), np.where(std > 0, std, 1.0).tolist()
        if spec.missing == "error":
            C = K + len(spec.past) + len(spec.future)
            for s, v in enumerate(panel.values):
                bad = np.argwhere(np.isnan(v[:, K:C]))
                if len(bad):
                    r, c = bad[0]
                    who = f"series {panel.ids[s]!r}, " if panel.ids[s] is not None else ""
                    col = (spec.past + spec.future)[c]
                    raise DataError(f"{'future_cols' if col in spec.future else 'feature_cols'}: empty value in column "
                                    f"{col!r} at {who}time {panel.written[s][r]!r}; fill it, or pass --missing zero "
                                    f"to read it as the training mean")
        self.z = [spec.standardise(v) for v in panel.values]
        train, val = [], []
        for s in range(len(n)):
            last_train = n_train[s] - H - 1                              # every target of the window before the cutoff
            train += [(s, o) for o in range(L - 1, last_train + 1)]
            val += [(s, o) for o in range(max(L - 1, n_train[s] - 1), n[s] - H)]
        if not backtest and not train:
            raise DataError(f"seq_len: no training window fits: a window of {L} steps and a horizon of {H} need "
                            f"{L + H} rows before the validation time, and the longest series has "
                            f"{int(n_train.max())}; lower --seq-len, --horizon or --val-fraction")
        if not val:
            raise DataError(f"val_fraction: no {'' if backtest else 'validation '}window fits: it needs {L} known steps "
                            f"and {H} more {'after them' if backtest else 'in the validation part'}; the longest "
                            f"series has {int(n.max())} rows{'' if backtest else f' ({int((n - n_train).max())} of them validation rows)'}")
        self.train_windows = np.array(train, dtype=np.int64).reshape(-1, 2)
        self.val_windows = np.array(val, dtype=np.int64)
        m = spec.season
        scales = []
        for s, v in enumerate(panel.values):
            part = v[:, :K] if backtest else v[:n_train[s], :K]
            scales.append(_seasonal_scale(part, m))
        self.scale = np.array(scales)                                   # (S, K)
        if np.isnan(self.scale).any() or (self.scale == 0).any():
            self.notes.append("MASE leaves out series whose training part is too short or constant for its scale")
        self.n_train, self.n_val = len(self.train_windows), len(self.val_windows)
        self._val = None
        self._baselines = None
        self._truth_values = None

    # -------------------------------------------------------------- batches
    def _batch(self, pairs) -> Batch:
        s, o = pairs[:, 0], pairs[:, 1]
        H, K = self.spec.horizon, len(self.spec.targets)
        x = windows(self.spec, self.z, s, o)
        tgt = np.stack([self.z[si][oi + 1:oi + 1 + H, :K].reshape(-1) for si, oi in zip(s, o)])   # (B, H*K)
        return Batch(x, tgt)

    def train_batch(self, rng, batch_size, step):
        return self._batch(self.train_windows[rng.integers(0, self.n_train, size=batch_size)])

    def val_batches(self):
        if self._val is None:                      # one batch: RMSE and coverage are not means of batch means
            self._val = self._batch(self.val_windows)
        return [self._val]

    def steps_per_epoch(self, batch_size) -> int:
        return max(1, -(-self.n_train // batch_size))

    # -------------------------------------------------------------- metrics, in the data's units
    def _truth(self) -> np.ndarray:
        """The validation windows' actual values (B, H, K) in the data's units, gathered once."""
        if self._truth_values is None:
            H, K = self.spec.horizon, len(self.spec.targets)
            self._truth_values = np.stack([self.panel.values[s][o + 1:o + 1 + H, :K] for s, o in self.val_windows])
        return self._truth_values

    def _scores(self, point, truth, lo=None, hi=None, with_mase=True) -> dict:
        err = point - truth
        out = {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean()))}
        if with_mase:
            sc = self.scale[self.val_windows[:, 0]][:, None, :]            # (B, 1, K)
            ok = np.isfinite(sc) & (sc > 0)
            ok = np.broadcast_to(ok, err.shape)
            if ok.any():
                out["mase"] = float((np.abs(err) / np.where(ok, np.broadcast_to(sc, err.shape), 1.0))[ok].mean())
        if lo is not None:
            out["coverage"] = float(((truth >= lo) & (truth <= hi)).mean())
        return out

    def extra_metrics(self, loss, logits, batch):
        dec = self.spec.decode(np.asarray(logits))
        point = self.spec.point(dec)
        lo, hi = (dec[..., 0], dec[..., -1]) if self.spec.Q > 1 else (None, None)
        if batch is self._val:
            return self._scores(point, self._truth(), lo, hi)
        K = len(self.spec.targets)
        truth = (batch.targets.reshape(point.shape) * np.asarray(self.spec.std[:K])
                 + np.asarray(self.spec.mean[:K]))
        return self._scores(point, truth, lo, hi, with_mase=False)

    def baselines(self) -> dict:
        """The naive and (with a season) seasonal-naive forecasts of the validation windows, scored like the model."""
        if self._baselines is None:
            H, m = self.spec.horizon, self.spec.season
            s, o = self.val_windows[:, 0], self.val_windows[:, 1]
            K = len(self.spec.targets)
            truth = self._truth()
            naive = np.stack([np.repeat(self.panel.values[si][oi:oi + 1, :K], H, axis=0) for si, oi in zip(s, o)])
            out = {"naive": self._scores(naive, truth)}
            if m > 1 and (o + 1 - m >= 0).all():
                h = np.arange(1, H + 1)
                back = h - m * np.ceil(h / m).astype(np.int64)                # the same season's last known value
                out[f"seasonal_naive_{m}"] = self._scores(np.stack(
                    [self.panel.values[si][oi + back, :K] for si, oi in zip(s, o)]), truth)
            self._baselines = out
        return self._baselines

    def baseline(self):
        b = self.baselines()
        name = next((k for k in b if k.startswith("seasonal")), "naive")
        words = f"seasonal-naive (season {self.spec.season})" if name != "naive" else "naive (last value)"
        return (f"{words} MAE", b[name]["mae"])

    # -------------------------------------------------------------- facts
    def describe(self):
        spec, p = self.spec, self.panel
        split = "backtest: every window validates" if self.cutoff is None else (
            f"split at time {_time_text(self.cutoff, p.time_kind)}: {self.n_train} train / {self.n_val} val windows")
        head = " x ".join([str(spec.horizon)] + ([str(len(spec.targets))] if len(spec.targets) > 1 else [])
                          + ([f"{spec.Q} quantiles"] if spec.Q > 1 else []))
        cov = (f", past covariates {spec.past}" if spec.past else "") + (
            f", known future covariates {spec.future}" if spec.future else "")
        return (f"forecast {self.series_name}: {len(p.ids)} series, {split}; window {spec.seq_len}, horizon "
                f"{spec.horizon} (direct: one head of {head} outputs){cov}; season {spec.season}")

    def info(self):
        digest = getattr(self, "digest", None)
        return {"forecast": self.spec.to_dict(), **({"data_digest": digest} if digest else {})}


def _time_text(t, kind):
    if kind == "datetime":
        return str(np.datetime64(int(t), "ns").astype("datetime64[s]")).replace("T00:00:00", "")
    return f"{t:g}"


def table_path(name, shipped: bool = True) -> tuple[Path, str]:
    """(file, the name messages use) of a forecaster's table: a statsmodels series by name (``shipped``), or a
    .csv / .parquet file."""
    if shipped and name in DATASETS:
        return dataset_path(name), name
    path = Path(name)
    if path.suffix not in (".csv", ".parquet"):
        raise DataError(f"data: the forecast task reads a long table (.csv or .parquet) or one of {list(DATASETS)}, "
                        f"got {path.name!r}")
    if not path.is_file():
        raise FileNotFoundError(f"data: file {str(path)!r} does not exist")
    return path, str(path)


def read_with_spec(spec: ForecastSpec, path, source) -> Panel:
    """A table read as a trained forecaster reads it: its columns by name, its time format."""
    from rnnlab.data.sequences import read_table
    return read_panel(read_table(path, spec.id_col), spec.id_col or "", spec.time_col, "", source=source,
                      time_format=spec.time_format, for_training=False,
                      columns={"targets": spec.targets, "past": spec.past, "future": spec.future,
                               "id_col": spec.id_col})


def forecast_task(cfg, info: dict | None = None) -> ForecastTask:
    """The forecast task of a run config (``rnnlab.training.config.TrainConfig``); ``info``: a trained model's stored spec
    (its statistics and columns)."""
    from rnnlab.data.sequences import changed_since, file_digest, read_table
    if not cfg.data:
        raise ConfigError("data: the forecast task needs a table of series (--data FILE.csv or .parquet, or a "
                          f"statsmodels series: {', '.join(DATASETS)}), got none")
    path, source = table_path(cfg.data)
    stored = (info or {}).get("forecast")
    if info and info.get("data_digest") and changed_since(path, info["data_digest"]):
        raise ConfigError(f"data: {path} changed since this model was trained on it; its validation metrics would be "
                          f"of other data -- score the file with --data, or restore it")
    note = ""
    if stored:
        spec = ForecastSpec.from_dict(stored)
        panel = read_with_spec(spec, path, source)
    else:
        from rnnlab.errors import check_int
        quantiles = parse_quantiles(cfg.quantiles)
        panel = read_panel(read_table(path, cfg.id_col), cfg.id_col, cfg.time_col, cfg.target_col, cfg.feature_cols,
                           cfg.future_cols, cfg.time_format, source=source)
        freq, _ = regular_step(panel)
        if cfg.season:
            season = check_int("season", cfg.season, 1)
        else:
            season, note = infer_season(freq)
        spec = ForecastSpec(panel.columns["targets"], panel.columns["past"], panel.columns["future"], cfg.horizon,
                            cfg.seq_len, quantiles, [], [], season,
                            cfg.id_col if panel.ids[0] is not None else None, cfg.time_col, panel.time_kind, freq,
                            cfg.time_format, cfg.missing)
    task = ForecastTask(panel, spec, cfg.val_fraction, name=Path(cfg.data).name, fitted=bool(stored),
                        season_note=note)
    task.digest = file_digest(path)
    return task


# ----------------------------------------------------------------------------------------------- forecasts
def split_recent(spec: ForecastSpec, panel: Panel):
    """Each series of a recent table -> (its known rows, its horizon rows): the rows after the last target value
    are the horizon's (their future covariates are read; their targets are empty)."""
    K = len(spec.targets)
    out = []
    for s, v in enumerate(panel.values):
        who = f"series {panel.ids[s]!r}" if panel.ids[s] is not None else "the table"
        known = ~np.isnan(v[:, :K]).any(axis=1)
        if not known.any():
            raise DataError(f"target_col: {who} has no target values to forecast from")
        end = int(np.flatnonzero(known)[-1]) + 1
        if not known[:end].all():
            r = int(np.flatnonzero(~known[:end])[0])
            raise DataError(f"target_col: empty target at {who}, time {panel.written[s][r]!r}, before its last value; "
                            f"the window must be complete")
        if end < spec.seq_len:
            raise DataError(f"data: {who} has {end} rows with targets; the model reads the last {spec.seq_len} "
                            f"(--seq-len it was trained with)")
        extra = len(v) - end
        if spec.future and extra < spec.horizon:
            raise DataError(f"future_cols: the model reads the known future covariates {spec.future} of the "
                            f"{spec.horizon} steps after the last target; {who} has {extra} row(s) after its last "
                            f"target value")
        C = K + len(spec.past)
        holes = np.isnan(v[end - spec.seq_len:end, K:C]).any() or (
            spec.future and np.isnan(v[end - spec.seq_len:end + spec.horizon, C:]).any())
        if holes and spec.missing == "error" and extra <= spec.horizon:
            cols = spec.past + spec.future
            c = next(c for j, c in enumerate(cols) if np.isnan(v[end - spec.seq_len:end + (
                spec.horizon if c in spec.future else 0), K + j]).any())
            raise DataError(f"{'future_cols' if c in spec.future else 'feature_cols'}: empty value in column {c!r} "
                            f"of {who} within the window the model reads; fill it (the model was trained with "
                            f"--missing error)")
        if extra > spec.horizon:
            raise DataError(f"data: {who} has {extra} rows after its last target value, more than the horizon "
                            f"{spec.horizon}; give at most {spec.horizon} (the steps to forecast)")
        out.append((end, extra))
    return out


def recent_windows(spec: ForecastSpec, panel: Panel) -> np.ndarray:
    """Each series' last window in the data's units -> x (window, S, inputs): the model's input before its
    standardisation (what an exported ONNX graph takes), NaN where the horizon's rows have no value."""
    K, P, Fu = len(spec.targets), len(spec.past), len(spec.future)
    parts = split_recent(spec, panel)
    x = np.full((spec.window, len(parts), spec.input_size), np.nan)
    for s, (end, _) in enumerate(parts):
        v = panel.values[s]
        x[:spec.seq_len, s, :K + P + Fu] = v[end - spec.seq_len:end]
        if Fu:
            x[:spec.seq_len, s, -1] = 0.0
            x[spec.seq_len:, s, K + P:K + P + Fu] = v[end:end + spec.horizon, K + P:]
            x[spec.seq_len:, s, -1] = 1.0
    return x


def standardise_window(spec: ForecastSpec, x) -> np.ndarray:
    """recent_windows' x -> the model's input: standardised, an empty cell read as 0 (the training mean)."""
    mean = np.asarray(spec.mean + [0.0] * (spec.input_size - len(spec.mean)))
    std = np.asarray(spec.std + [1.0] * (spec.input_size - len(spec.std)))
    return np.nan_to_num((x - mean) / std, nan=0.0)


def forecast_frame(model, spec: ForecastSpec, panel: Panel):
    """One row per (series, horizon step): the id, the time (given in the horizon's rows, or stepped on from a
    regular index), ``step``, the forecast and one column per quantile, in the data's units."""
    import pandas as pd

    from rnnlab.engine.grad_mode import no_grad
    parts = split_recent(spec, panel)
    x = standardise_window(spec, recent_windows(spec, panel))
    was = model.rnn.training
    model.eval()
    try:
        with no_grad():
            out = model.predict(x)[0]
    finally:
        model.train(was)
    dec = spec.decode(out)                                          # (S, H, K, Q)
    H, K = spec.horizon, len(spec.targets)
    rows = {}
    if spec.id_col:
        rows[spec.id_col] = np.repeat(np.array(panel.ids, dtype=object), H)
    times = [_future_times(spec, panel, s, end, extra) for s, (end, extra) in enumerate(parts)]
    if all(t is not None for t in times):
        rows[spec.time_col] = np.concatenate(times)
    rows["step"] = np.tile(np.arange(1, H + 1), len(parts))
    for k, name in enumerate(spec.targets):
        pre = "" if K == 1 else f"{name}_"
        rows[f"{pre}forecast"] = spec.point(dec)[:, :, k].reshape(-1)
        for q, tau in enumerate(spec.quantiles):
            rows[f"{pre}{quantile_name(tau)}"] = dec[:, :, k, q].reshape(-1)
    return pd.DataFrame(rows)


def _future_times(spec, panel, s, end, extra):
    """The horizon's times of series s: its own rows' as written, then stepped on from the regular index."""
    import pandas as pd
    H = spec.horizon
    given = list(panel.written[s][end:end + extra])
    if extra == H:
        return np.array(given, dtype=object)
    if spec.freq is None:
        return None
    last = panel.times[s][end + extra - 1]
    n = H - extra
    if spec.time_kind == "datetime":
        stamps = pd.date_range(pd.Timestamp(int(last)), periods=n + 1, freq=spec.freq)[1:]
        text = [t.date().isoformat() if t == t.normalize() else t.isoformat() for t in stamps]
        return np.array([str(g) for g in given] + text, dtype=object)
    new = last + spec.freq * np.arange(1, n + 1)
    return np.array(given + [int(v) if float(v).is_integer() else v for v in new], dtype=object)
