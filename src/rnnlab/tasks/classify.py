"""Sequence classification: scikit-learn's bundled digits row by row, and UCR/UEA ``.ts`` files.

digits: 1797 8x8 images; each image is a sequence of 8 rows of 8 pixels (scaled to [0, 1]); 10 classes;
cross-entropy at the last step. A fixed 80/20 split by the seed.

``.ts`` (the UCR/UEA archive's text format, used by sktime and aeon): ``@``-headers (``@problemName``,
``@univariate``, ``@equalLength``, ``@classLabel true c1 c2 ...``, ``@data``), then one case per line:
dimensions separated by ``:``, values within a dimension by ``,``, the class label last. Missing values
are ``?``. Cases may differ in length (``lengths`` then pads them); every dimension of a case must have
the same length.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .base import Batch, Task


def _missing(extra: str, what: str):
    return ConfigError(f"{what} needs an optional package; install it with: pip install -e '.[{extra}]'")


def load_digits_sequences():
    """(N, 8, 8) float rows in [0, 1], (N,) labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise _missing("data", "the digits task (scikit-learn)") from None
    d = load_digits()
    return d.images.astype(np.float64) / 16.0, d.target.astype(np.int64)


def read_ts(path) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Read a ``.ts`` file -> (cases as (length, dims) arrays, int labels, class names)."""
    from pathlib import Path
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ts file: {path} does not exist")
    classes, cases, labels, in_data = None, [], [], False
    with path.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                low = line.lower()
                if low.startswith("@classlabel"):
                    parts = line.split()
                    if len(parts) < 2 or parts[1].lower() != "true":
                        raise ValueError(f"{path}:{lineno}: expected '@classLabel true <labels>' (classification), got {line!r}")
                    classes = parts[2:]
                elif low.startswith("@data"):
                    in_data = True
                continue
            fields = line.split(":")
            if len(fields) < 2:
                raise ValueError(f"{path}:{lineno}: expected 'dim1:...:label', got {line[:60]!r}")
            label = fields[-1].strip()
            try:
                dims = [np.array([np.nan if v.strip() == "?" else float(v) for v in f.split(",")])
                        for f in fields[:-1]]
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: bad number ({exc})") from None
            if len({len(d) for d in dims}) != 1:
                raise ValueError(f"{path}:{lineno}: expected every dimension of a case to have the same length, "
                                 f"got {[len(d) for d in dims]}")
            cases.append(np.stack(dims, axis=1))
            labels.append(label)
    if classes is None:
        raise ValueError(f"{path}: no '@classLabel true ...' header; only classification files are supported")
    if not cases:
        raise ValueError(f"{path}: no cases after @data")
    if len({c.shape[1] for c in cases}) != 1:
        raise ValueError(f"{path}: cases have different numbers of dimensions")
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise ValueError(f"{path}: labels {unknown} are not in @classLabel {classes}")
    index = {c: i for i, c in enumerate(classes)}
    return cases, np.array([index[l] for l in labels]), classes


def pad_cases(cases: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """cases of (len_i, D) -> x (T, N, D) zero-padded (missing values as 0), lengths (N,)."""
    lengths = np.array([len(c) for c in cases])
    x = np.zeros((lengths.max(), len(cases), cases[0].shape[1]))
    for i, c in enumerate(cases):
        x[:len(c), i] = np.nan_to_num(c, nan=0.0)
    return x, lengths


class Classification(Task):
    """Sequences (T, N, D) with lengths and labels; cross-entropy at each sequence's last valid step."""

    input_mode = "dense"
    prediction = "softmax"
    target = "last"
    metrics = ("loss", "accuracy")

    def __init__(self, name, x_train, len_train, y_train, x_val, len_val, y_val, n_classes, val_batch=256):
        self.name = name
        self.x_train, self.len_train, self.y_train = x_train, len_train, y_train
        self.x_val, self.len_val, self.y_val = x_val, len_val, y_val
        self.input_size, self.output_size = x_train.shape[2], n_classes
        self.val_batch = val_batch
        self.describe_text = (f"{name}: {x_train.shape[1]} train / {x_val.shape[1]} val sequences, "
                              f"{x_train.shape[2]} features, up to {x_train.shape[0]} steps, {n_classes} classes")

    def _take(self, x, lengths, y, idx) -> Batch:
        T = int(lengths[idx].max())
        ragged = not (lengths[idx] == T).all()
        return Batch(x[:T, idx], y[idx], lengths[idx] if ragged else None)

    def train_batch(self, rng, batch_size, step):
        idx = rng.integers(0, len(self.y_train), batch_size)
        return self._take(self.x_train, self.len_train, self.y_train, idx)

    def val_batches(self):
        n = len(self.y_val)
        return [self._take(self.x_val, self.len_val, self.y_val, np.arange(i, min(n, i + self.val_batch)))
                for i in range(0, n, self.val_batch)]

    def baseline(self):
        counts = np.bincount(self.y_train, minlength=self.output_size)
        return ("majority-class accuracy", float((self.y_val == counts.argmax()).mean()))

    def describe(self):
        return self.describe_text

    def extra_metrics(self, loss, logits, batch):
        return {"accuracy": float((logits.argmax(-1) == batch.targets).mean())}


def _split(n, val_fraction, seed):
    perm = np.random.default_rng([seed, 3]).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    return perm[n_val:], perm[:n_val]


def digits_task(val_fraction=0.2, seed=0) -> Classification:
    images, labels = load_digits_sequences()
    x = images.transpose(1, 0, 2)                                    # (8 rows, N, 8 pixels)
    lengths = np.full(len(labels), 8)
    tr, va = _split(len(labels), val_fraction, seed)
    return Classification("digits", x[:, tr], lengths[tr], labels[tr], x[:, va], lengths[va], labels[va], 10)


def ts_task(train_path, test_path=None, val_fraction=0.2, seed=0) -> Classification:
    cases, labels, classes = read_ts(train_path)
    if test_path:
        vcases, vlabels, vclasses = read_ts(test_path)
        if vclasses != classes:
            raise ValueError(f"ts_test: class labels {vclasses} differ from ts_train's {classes}")
    else:
        tr, va = _split(len(labels), val_fraction, seed)
        vcases, vlabels = [cases[i] for i in va], labels[va]
        cases, labels = [cases[i] for i in tr], labels[tr]
    # standardise each dimension with training statistics
    allv = np.concatenate(cases)
    mu, sd = np.nanmean(allv, axis=0), np.nanstd(allv, axis=0) + 1e-8
    x, lt = pad_cases([(c - mu) / sd for c in cases])
    xv, lv = pad_cases([(c - mu) / sd for c in vcases])
    T = max(x.shape[0], xv.shape[0])
    x = np.pad(x, ((0, T - x.shape[0]), (0, 0), (0, 0)))
    xv = np.pad(xv, ((0, T - xv.shape[0]), (0, 0), (0, 0)))
    from pathlib import Path
    return Classification(f"ts:{Path(train_path).stem}", x, lt, labels, xv, lv, vlabels, len(classes))
