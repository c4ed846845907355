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

from rnnlab.errors import ConfigError, DataError
from rnnlab.data.sequences import Sequences
from rnnlab.tasks.supervised import SequenceTask, sequence_task


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
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text, so not a .ts file") from None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            low = line.lower()
            if low.startswith("@classlabel"):
                parts = line.split()
                if len(parts) < 2 or parts[1].lower() != "true":
                    raise DataError(f"{path}:{lineno}: expected '@classLabel true <labels>' (classification), got {line!r}")
                classes = parts[2:]
            elif low.startswith("@data"):
                in_data = True
            continue
        fields = line.split(":")
        if len(fields) < 2:
            raise DataError(f"{path}:{lineno}: expected 'dim1:...:label', got {line[:60]!r}")
        label = fields[-1].strip()
        try:
            dims = [np.array([np.nan if v.strip() == "?" else float(v) for v in f.split(",")])
                    for f in fields[:-1]]
        except ValueError as exc:
            raise DataError(f"{path}:{lineno}: bad number ({exc})") from None
        if len({len(d) for d in dims}) != 1:
            raise DataError(f"{path}:{lineno}: expected every dimension of a case to have the same length, "
                            f"got {[len(d) for d in dims]}")
        cases.append(np.stack(dims, axis=1))
        labels.append(label)
    if classes is None:
        raise DataError(f"{path}: no '@classLabel true ...' header; only classification files are supported")
    if not cases:
        raise DataError(f"{path}: no cases after @data")
    if len({c.shape[1] for c in cases}) != 1:
        raise DataError(f"{path}: cases have different numbers of dimensions")
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise DataError(f"{path}: labels {unknown} are not in @classLabel {classes}")
    index = {c: i for i, c in enumerate(classes)}
    return cases, np.array([index[l] for l in labels]), classes


def digits_task(val_fraction=0.2, seed=0) -> SequenceTask:
    images, labels = load_digits_sequences()
    seqs = Sequences(list(images), labels, feature_names=[f"pixel{j}" for j in range(8)])
    return sequence_task("digits", seqs, problem="classify", val_fraction=val_fraction, seed=seed,
                         standardize=False)


def ts_sequences(path) -> tuple[Sequences, list[str]]:
    """A ``.ts`` file as Sequences (labels as the file's class names; missing values stay NaN), and the classes."""
    cases, labels, classes = read_ts(path)
    seqs = Sequences(cases, np.array(classes)[labels], feature_names=[f"dim{j}" for j in range(cases[0].shape[1])])
    return seqs, classes


def ts_task(train_path, test_path=None, val_fraction=0.2, seed=0) -> SequenceTask:
    """Standardised per dimension with training statistics; ``?`` values read as the dimension's mean."""
    from pathlib import Path
    train, classes = ts_sequences(train_path)
    val = None
    if test_path:
        val, vclasses = ts_sequences(test_path)
        if vclasses != classes:
            raise DataError(f"ts_test: class labels {vclasses} differ from ts_train's {classes}")
    return sequence_task(f"ts:{Path(train_path).stem}", train, val, problem="classify", val_fraction=val_fraction,
                         seed=seed, missing="zero")
