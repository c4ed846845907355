"""Forecasting one column of a CSV file: windows of ``seq_len`` past values predict the next ``horizon``.

Format: a CSV file with a header row; ``column`` is a header name or a 0-based index; rows whose value is
empty are dropped. The series is split in time (the last ``val_fraction`` validates) and standardised with
the training part's mean and standard deviation. Target: the next ``horizon`` values at the window's last
step (horizon 1 = one-step ahead; larger = direct multi-step). Metric: MSE in standardised units, with the
naive last-value forecast's MSE beside it.

``csv = "sunspots"`` reads the yearly sunspot numbers (1700-2008) that ship inside ``statsmodels``
(column ``SUNACTIVITY``; extra ``data``).
"""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np

from ..errors import ConfigError, check_int
from .base import Batch, Task


def sunspots_path() -> Path:
    spec = importlib.util.find_spec("statsmodels")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("csv='sunspots' needs the statsmodels package; install it with: pip install -e '.[data]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "sunspots" / "sunspots.csv"
    if not path.is_file():
        raise ConfigError(f"csv='sunspots': {path} is missing from the installed statsmodels package")
    return path


def read_csv_column(path, column) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"csv: file {str(path)!r} does not exist")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        raise ConfigError(f"csv: {path} needs a header row and at least one data row, got {len(rows)} rows")
    header = [h.strip() for h in rows[0]]
    if isinstance(column, str) and column.strip() in header:
        j = header.index(column.strip())
    else:
        try:
            j = int(column)
        except (TypeError, ValueError):
            from ..errors import closest
            raise ConfigError(f"column: expected one of {header} or an index, got {column!r}{closest(column, header)}") from None
        if not 0 <= j < len(header):
            raise ConfigError(f"column: expected an index in [0, {len(header) - 1}], got {j}")
    values = []
    for lineno, row in enumerate(rows[1:], 2):
        if j >= len(row) or not row[j].strip():
            continue
        try:
            values.append(float(row[j]))
        except ValueError:
            raise ConfigError(f"csv: {path}:{lineno}: column {header[j]!r} holds {row[j]!r}, not a number") from None
    arr = np.array(values)
    if not np.isfinite(arr).all():
        raise ConfigError(f"csv: column {header[j]!r} of {path} holds NaN or Inf values")
    return arr


class Forecast(Task):
    name = "forecast"
    input_mode = "dense"
    prediction = "identity"
    target = "last"
    metrics = ("loss", "mse", "naive_mse")
    input_size = 1

    def __init__(self, series: np.ndarray, seq_len: int, horizon: int = 1, val_fraction: float = 0.2, name="forecast"):
        self.T = check_int("seq_len", seq_len, 1)
        self.horizon = check_int("horizon", horizon, 1)
        self.output_size = self.horizon
        n = len(series)
        n_val = int(round(n * val_fraction))
        n_train = n - n_val
        if n_train < self.T + self.horizon + 1 or n_val < self.horizon:
            raise ConfigError(f"seq_len: a series of {n} values is too short for seq_len={self.T}, "
                              f"horizon={self.horizon} and val_fraction={val_fraction}")
        self.mean, self.std = float(series[:n_train].mean()), float(series[:n_train].std() + 1e-12)
        z = (series - self.mean) / self.std
        self.z, self.n_train = z, n_train
        self.train_starts = np.arange(0, n_train - self.T - self.horizon + 1)
        # validation windows: targets in the validation part; inputs may reach back into training data
        self.val_starts = np.arange(max(0, n_train - self.T), n - self.T - self.horizon + 1)
        self.series_name = name

    def _windows(self, starts) -> Batch:
        idx = starts[None, :] + np.arange(self.T)[:, None]                   # (T, B)
        x = self.z[idx][..., None]                                           # (T, B, 1)
        tgt = starts[:, None] + self.T + np.arange(self.horizon)[None, :]    # (B, horizon)
        return Batch(x, self.z[tgt])

    def train_batch(self, rng, batch_size, step):
        return self._windows(rng.choice(self.train_starts, size=batch_size))

    def val_batches(self):
        return [self._windows(self.val_starts)]

    def naive_mse(self, batch) -> float:
        last = batch.inputs[-1, :, 0][:, None]
        return float(((batch.targets - last) ** 2).mean())

    def baseline(self):
        return ("naive last-value MSE", self.naive_mse(self.val_batches()[0]))

    def describe(self):
        return (f"forecast {self.series_name}: {self.n_train} train / {len(self.z) - self.n_train} val values, "
                f"window {self.T}, horizon {self.horizon}")

    def extra_metrics(self, loss, logits, batch):
        return {"mse": loss, "naive_mse": self.naive_mse(batch)}

    def info(self):
        return {"mean": self.mean, "std": self.std}
