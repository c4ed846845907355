"""From the user's values to the model's and back: labels to class indices, features and regression targets
standardised with training statistics.

    classify / tag:  label -> index into ``classes`` (sorted unique training labels; ints, strings, bools or floats)
    features:        x' = (x - mean) / std   per feature, over every valid step of the training sequences
    regress:         y' = (y - y_mean) / y_std per output; predictions are mapped back with the inverse

An ``Encoding`` is fitted once on the training data and stored (as JSON) with the model, so evaluation and
prediction on new data apply exactly the same maps.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from rnnlab.errors import DataError, check_choice

PROBLEMS = ("classify", "regress", "tag")
_KINDS = {"b": "bool", "i": "int", "u": "int", "f": "float", "U": "str", "S": "str"}


def _kind_words(a) -> str:
    """A dtype in the user's words: text, booleans, numbers."""
    return {"U": "text", "S": "text", "O": "Python objects", "b": "booleans"}.get(np.asarray(a).dtype.kind,
                                                                                   f"dtype {np.asarray(a).dtype}")


def label_kind(y: np.ndarray, what: str = "y") -> str:
    """'bool' | 'int' | 'float' | 'str' for an array of labels; mixed Python types are refused."""
    y = np.asarray(y)
    if y.dtype.kind in _KINDS:
        return _KINDS[y.dtype.kind]
    if y.dtype != object:
        raise DataError(f"{what}: expected labels that are integers, strings or booleans, got dtype {y.dtype}")
    kinds = set()
    for v in y.ravel():
        if isinstance(v, (bool, np.bool_)):
            kinds.add("bool")
        elif isinstance(v, (int, np.integer)):
            kinds.add("int")
        elif isinstance(v, (float, np.floating)):
            kinds.add("float" if np.isfinite(v) else "missing")
        elif isinstance(v, str):
            kinds.add("str")
        elif v is None:
            kinds.add("missing")
        else:
            raise DataError(f"{what}: expected labels that are integers, strings or booleans, got {type(v).__name__} "
                            f"{v!r}")
    if "missing" in kinds:
        raise DataError(f"{what}: missing labels (None or NaN); every sequence (or step) needs a label")
    if len(kinds) > 1:
        raise DataError(f"{what}: labels of mixed types {sorted(kinds)}; give every label the same type "
                        f"(e.g. all strings)")
    return kinds.pop() if kinds else "str"


def _cast(values, kind):
    return np.asarray(values, dtype={"bool": bool, "int": np.int64, "float": np.float64, "str": str}[kind])


def infer_problem(targets) -> tuple[str, str]:
    """(problem, why) from the targets as given: per step -> tag; floats -> regress; else classify."""
    if isinstance(targets, list):
        return "tag", "one target per step"
    y = np.asarray(targets)
    if y.dtype.kind == "f":
        return "regress", f"floating-point targets{' with ' + str(y.shape[1]) + ' outputs' if y.ndim == 2 else ''}"
    return "classify", f"{label_kind(y)} labels"


@dataclass
class Encoding:
    problem: str                               # classify | regress | tag
    x_mean: list
    x_std: list
    classes: list | None = None                # classify / tag: the labels, in class-index order
    label_kind: str | None = None              # bool | int | float | str
    y_mean: list | None = None                 # regress
    y_std: list | None = None
    feature_names: list | None = None
    missing: str = "error"                     # error | zero: NaN features read as the training mean

    @property
    def output_size(self) -> int:
        return len(self.classes) if self.problem != "regress" else len(self.y_mean)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Encoding":
        return cls(**d)

    # -------------------------------------------------------------- features
    def encode_x(self, cases) -> list:
        F = len(self.x_mean)
        mu, sd = np.asarray(self.x_mean), np.asarray(self.x_std)
        out = []
        for i, c in enumerate(cases):
            if c.shape[1] != F:
                raise DataError(f"X: expected {F} features per step (as in training), got {c.shape[1]} in case {i}")
            z = (c - mu) / sd
            out.append(np.nan_to_num(z, nan=0.0) if self.missing == "zero" else z)
        return out

    # -------------------------------------------------------------- targets
    @property
    def classes_array(self) -> np.ndarray:
        return _cast(self.classes, self.label_kind)

    def encode_y(self, targets, what="y"):
        if self.problem == "regress":
            y = np.asarray(targets)
            if isinstance(targets, list) or y.dtype.kind not in "biuf":
                raise DataError(f"{what}: expected numeric regression targets, got {y.dtype if not isinstance(targets, list) else 'per-step targets'}")
            y = y.astype(np.float64).reshape(len(y), -1)
            if y.shape[1] != len(self.y_mean):
                raise DataError(f"{what}: expected {len(self.y_mean)} target value(s) per sequence, got {y.shape[1]}")
            if not np.isfinite(y).all():
                raise DataError(f"{what}: NaN or Inf in the regression targets (row {int(np.argwhere(~np.isfinite(y))[0, 0])})")
            _check_spread(y, np.asarray(self.y_mean), None)
            return (y - np.asarray(self.y_mean)) / np.asarray(self.y_std)
        if (self.problem == "tag") != isinstance(targets, list):
            want = "one label per step" if self.problem == "tag" else "one label per sequence"
            raise DataError(f"{what}: this model predicts {want}, got "
                            f"{'per-step' if isinstance(targets, list) else 'per-sequence'} targets")
        index = {c: i for i, c in enumerate(self.classes_array.tolist())}

        def enc(v):
            v = np.asarray(v)
            kind = label_kind(v, what)
            if kind != self.label_kind and not {kind, self.label_kind} <= {"int", "float"}:
                raise DataError(f"{what}: expected {self.label_kind} labels as in training, got {kind} labels")
            if kind == "float" and self.label_kind == "int":     # 0.2 is not class 0: no truncation
                frac = v[np.asarray(v, np.float64) != np.round(np.asarray(v, np.float64))]
                if len(frac):
                    raise DataError(f"{what}: labels {sorted(set(frac.tolist()))[:5]} were not in the training "
                                    f"data's classes {self.classes[:20]}")
            vals = _cast(v, self.label_kind).tolist()
            unknown = sorted({x for x in vals if x not in index}, key=str)
            if unknown:
                raise DataError(f"{what}: labels {unknown[:5]} were not in the training data's classes "
                                f"{self.classes[:20]}")
            return np.array([index[x] for x in vals], dtype=np.int64)
        if self.problem == "tag":
            return [enc(v) for v in targets]
        return enc(targets)

    def decode_classes(self, index: np.ndarray) -> np.ndarray:
        return self.classes_array[index]

    def decode_values(self, y: np.ndarray) -> np.ndarray:
        return y * np.asarray(self.y_std) + np.asarray(self.y_mean)


@contextlib.contextmanager
def _quiet():
    """NumPy's all-NaN and overflow warnings off: the checks after the computation name the column instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _check_spread(y, mean, name):
    """Regression targets whose squared errors stay finite (metrics in the data's units), else an error."""
    with np.errstate(over="ignore", invalid="ignore"):
        ok = np.isfinite(((y - mean) ** 2).sum(axis=0)) & np.isfinite(y.std(axis=0))
    if not ok.all():
        k = int(np.flatnonzero(~ok)[0])
        who = f"target_col: column {name!r}" if name else "y: the targets"
        raise DataError(f"{who} has values too large to fit (largest |value| {np.abs(y[:, k]).max():.3g}: their "
                        f"squared errors overflow); rescale the targets")


def fit_encoding(seqs, problem: str, standardize: bool = True, missing: str = "error") -> Encoding:
    """Fit the maps on training ``Sequences`` (``targets`` required)."""
    check_choice("problem", problem, PROBLEMS)
    check_choice("missing", missing, ("error", "zero"))
    allv = np.concatenate(seqs.cases)                                   # (sum T_i, F)
    names = list(seqs.feature_names) or [str(f) for f in range(allv.shape[1])]
    if standardize:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"), _quiet():
            mu = np.nanmean(allv, axis=0) if missing == "zero" else allv.mean(axis=0)
            sd = np.nanstd(allv, axis=0) if missing == "zero" else allv.std(axis=0)
        seen = np.isfinite(allv).any(axis=0)
        for f in np.flatnonzero(seen & ~(np.isfinite(mu) & np.isfinite(sd))):
            raise DataError(f"feature_cols: feature {names[f]!r} has values too large to standardise (largest "
                            f"|value| {np.nanmax(np.abs(allv[:, f])):.3g}: its mean or spread overflows); rescale it")
        mu = np.nan_to_num(mu)
        sd = np.where(np.isfinite(sd) & (sd > 1e-12), sd, 1.0)       # constant features pass through centred
    else:
        mu, sd = np.zeros(allv.shape[1]), np.ones(allv.shape[1])
    enc = Encoding(problem, mu.tolist(), sd.tolist(), feature_names=list(seqs.feature_names), missing=missing)
    t = seqs.targets
    if t is None:
        raise DataError("y: targets are needed to fit a model, got none")
    if problem == "regress":
        if isinstance(t, list):
            raise DataError("y: per-step targets cannot train a regressor of one value per sequence")
        y = np.asarray(t)
        if y.dtype.kind not in "biuf":
            raise DataError(f"y: expected numeric regression targets, got {_kind_words(y)} (e.g. {y.ravel()[0].item()!r}); "
                            f"for labels use problem 'classify'")
        y = y.astype(np.float64).reshape(len(y), -1)
        if not np.isfinite(y).all():
            raise DataError(f"y: NaN or Inf in the regression targets (row {int(np.argwhere(~np.isfinite(y))[0, 0])})")
        _check_spread(y, y.mean(axis=0) if np.isfinite(y.mean(axis=0)).all() else np.zeros(y.shape[1]),
                      getattr(seqs, "target_name", None))
        ysd = y.std(axis=0)
        enc.y_mean, enc.y_std = y.mean(axis=0).tolist(), np.where(ysd > 1e-12, ysd, 1.0).tolist()
        return enc
    if problem == "tag":
        if not isinstance(t, list):
            raise DataError("y: a tagger needs one label per step ((N, T) labels or a list of (T_i,) arrays), "
                            "got one per sequence")
        flat = np.concatenate([np.asarray(v) for v in t])
    else:
        if isinstance(t, list):
            raise DataError("y: one label per sequence expected, got a label per step (use problem 'tag')")
        flat = np.asarray(t)
        if flat.ndim != 1:
            raise DataError(f"y: expected one label per sequence (N,), got shape {flat.shape}")
    kind = label_kind(flat)
    if kind == "float" and not np.isfinite(flat.astype(np.float64)).all():
        raise DataError("y: NaN or Inf labels")
    classes = np.unique(_cast(flat, kind))
    if len(classes) < 2:
        raise DataError(f"y: only one class ({classes[0].item()!r}) in the training data; a classifier needs at least 2 classes")
    enc.classes, enc.label_kind = classes.tolist(), kind
    return enc
