"""scikit-learn estimators over rnnlab's sequence models: ``RNNClassifier``, ``RNNRegressor``, ``RNNTagger``.

    clf = RNNClassifier(cell="gru", hidden_size=32, epochs=30).fit(X, y)   # X: (N, T, F), (N, T), or a list
    clf.predict(X_new); clf.predict_proba(X_new); clf.score(X_test, y_test)

Constructor arguments only store hyper-parameters (so ``clone``, ``GridSearchCV`` and ``Pipeline`` work);
``fit`` reads the data (every form ``rnnlab.data.sequences`` reads: a 3-D array, (N, C, T) with
``channels_first=True``, a 2-D array of univariate sequences, a list of (T_i, F) arrays, a long DataFrame
when ``id_col`` is set), standardises features with training statistics, maps labels to classes and trains
with the same loop as ``rnnlab train`` (``rnnlab.training.trainer``). A wide DataFrame (no ``id_col``) is read as a
2-D array, one univariate sequence per row.

``n_features_in_`` is the number of features per step; sequences of any length are accepted at prediction.

The layer options (zoneout, layer norm, the forget-gate bias, ...: ``rnnlab.engine.options.LayerOptions``) go in
one argument, ``layer_options={"zoneout": 0.1, "layer_norm": True}``, checked against ``cell`` at fit.

Defaults: those of ``rnnlab train`` (``TrainConfig``) except where ``DEFAULTS_VS_CLI`` says why. Saving without
pickle: ``save(est, "model.skops")`` and ``load("model.skops")`` (skops; the loader trusts exactly rnnlab's own
types and refuses a file that holds any other).

Length: the three estimators share one fit and predict (``_RNNEstimator``), and scikit-learn's conventions
(parameters, tags, feature names, skops files) live beside it, in one place.
"""
from __future__ import annotations

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils.validation import check_is_fitted
except ImportError:  # pragma: no cover - the message is the point
    raise ImportError("rnnlab's estimators need scikit-learn; install it with: pip install -e '.[data]'") from None

from rnnlab.errors import DataError


# argument: (estimator default, rnnlab train's default, why they differ) -- tests/test_estimators.py checks both
# columns against the code, and that every other shared argument has the same default
DEFAULTS_VS_CLI = {
    "lr": (3e-3, 1e-3, "an estimator trains epochs of a small array (30 epochs of N/32 steps, often a few hundred "
                       "steps), where 3e-3 converges; the CLI's 1e-3 goes with its 1000 steps"),
    "epochs": (30, "--steps 1000", "scikit-learn estimators count passes over the data (max_iter); the CLI counts "
                                   "steps"),
    "validation_fraction": (0.1, 0.2, "scikit-learn's share held out for early stopping (MLPClassifier); the CLI's "
                                      "--val-fraction is a validation split for the report"),
    "patience": (5, 0, "used only with early_stopping=True (scikit-learn's n_iter_no_change); --patience 0 is the "
                       "CLI's switch for no early stopping"),
    "id_col": (None, "id", "arrays need none; a long DataFrame names its id column"),
    "target_col": (None, "target", "y is given to fit; a long DataFrame may name its target column instead"),
}


class _RNNEstimator(BaseEstimator):
    """The shared fit/predict of the three estimators; ``_problem`` says which one."""

    _problem = "classify"

    def __init__(self, cell="lstm", hidden_size=64, num_layers=1, bidirectional=False, dropout=0.0,
                 optimizer="adam", lr=3e-3, epochs=30, batch_size=32, clip=1.0, weight_decay=0.0,
                 early_stopping=False, validation_fraction=0.1, patience=5, standardize=True,
                 channels_first=False, id_col=None, time_col="time", feature_cols=None, target_col=None,
                 time_format=None, missing="error", seed=0, backend="auto", dtype="float32", warm_start=False,
                 verbose=False, class_weight=None, layer_options=None):
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.optimizer = optimizer
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.clip = clip
        self.weight_decay = weight_decay
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.standardize = standardize
        self.channels_first = channels_first
        self.id_col = id_col
        self.time_col = time_col
        self.feature_cols = feature_cols
        self.target_col = target_col
        self.time_format = time_format
        self.missing = missing
        self.seed = seed
        self.backend = backend
        self.dtype = dtype
        self.warm_start = warm_start
        self.verbose = verbose
        self.class_weight = class_weight
        self.layer_options = layer_options

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.input_tags.allow_nan = self.missing == "zero"
        tags.non_deterministic = False
        return tags

    # -------------------------------------------------------------- data
    def _sequences(self, X, y=None, lengths=None, require_target=True, fitting=False):
        """-> (Sequences, the number of columns when X is a 2-D table, else None).

        Feature names as scikit-learn keeps them: a long DataFrame's feature columns (not the id or time) are
        ``feature_names_in_`` and are read by name at prediction; a wide DataFrame's columns are checked by
        scikit-learn's own rule (same names, same order)."""
        from sklearn.utils.validation import validate_data
        from rnnlab.data.sequences import Sequences, check_targets, from_arrays, from_long_frame
        if hasattr(X, "columns") and self.id_col is not None:
            fc = ",".join(self.feature_cols) if isinstance(self.feature_cols, (list, tuple)) else self.feature_cols
            trained = None if fitting else getattr(self, "feature_names_in_", None)
            s = from_long_frame(X, self.id_col, self.time_col, fc, self.target_col,
                                require_target=require_target and y is None and bool(self.target_col),
                                missing=self.missing, source="X", time_format=self.time_format or "",
                                trained_features=None if trained is None else list(trained),
                                for_training=fitting)
            if fitting:
                self.feature_names_in_ = np.asarray(s.feature_names, dtype=object)
            if y is not None:
                if self.target_col and self.target_col in X.columns:
                    raise DataError(f"y: given both y and target_col {self.target_col!r} (a column of X); give one "
                                    f"source of targets")
                if not (hasattr(y, "index") and hasattr(y, "reindex") and set(s.ids) <= set(y.index)):
                    raise DataError("y: with a long DataFrame, give y as a pandas Series indexed by the ids of "
                                    f"id_col {self.id_col!r} (labels by id, never by position), or use target_col")
                y = y.reindex(s.ids)                 # labels by id
                y = self._prepare_y(y)
                s = Sequences(s.cases, check_targets(y, s.cases), s.ids, s.feature_names, s.notes)
            return s, None
        if fitting or hasattr(self, "model_"):
            validate_data(self, X, reset=fitting, skip_check_array=True, ensure_2d=False)
        if hasattr(X, "columns"):
            X = X.to_numpy()
        X, width = _table(X)
        y = self._prepare_y(y) if y is not None else None
        return from_arrays(X, y, lengths, self.channels_first, self.missing), width

    def _prepare_y(self, y):
        return y

    def _check_params(self, X):
        """Every argument checked at fit, used or not: a setting that would be ignored is an error, as in the CLI."""
        from rnnlab.errors import check_float, check_int
        check_float("validation_fraction", self.validation_fraction, 0.0, 1.0, low_open=True, high_open=True)
        check_int("patience", self.patience, 0)
        self._layer_options()
        if self.id_col is None:
            for key, default in (("time_col", "time"), ("feature_cols", None), ("target_col", None),
                                 ("time_format", None)):
                if getattr(self, key) != default:
                    raise DataError(f"{key}: an argument of long DataFrames, which need id_col; got {key}="
                                    f"{getattr(self, key)!r} without id_col")
        elif not hasattr(X, "columns"):
            raise DataError(f"X: id_col={self.id_col!r} reads a long DataFrame, got {type(X).__name__}")

    def _y_by_id(self, X, y):
        """y of a long DataFrame, in the order predict returns its sequences (by id, never by position)."""
        from rnnlab.data.sequences import natural
        if not (hasattr(y, "index") and hasattr(y, "reindex")):
            raise DataError("y: with a long DataFrame, give y as a pandas Series indexed by the ids of "
                            f"id_col {self.id_col!r} (labels by id, never by position)")
        idv = X[self.id_col]
        ids = sorted(pd_unique(idv.astype(object) if str(idv.dtype) == "category" else idv), key=natural)
        if not set(ids) <= set(y.index):
            raise DataError(f"y: the Series has no label for id {next(i for i in ids if i not in set(y.index))!r}")
        return y.reindex(ids)

    def _score_y(self, X, y):
        """y for scoring X: by id for a long DataFrame, of the same count as the sequences."""
        if hasattr(X, "columns") and self.id_col is not None:
            return self._y_by_id(X, y)
        return _plain(y)

    def _layer_options(self):
        """``layer_options`` checked as the layer options (``rnnlab.engine.options.LayerOptions``) of ``cell``."""
        from rnnlab.engine.options import LayerOptions
        from rnnlab.errors import ConfigError
        try:
            return LayerOptions.from_mapping(self.layer_options).check_options().check_cell(self.cell)
        except ConfigError as exc:
            msg = str(exc)
            raise ConfigError(msg if msg.startswith("layer_options") else f"layer_options: {msg}") from None

    def _config(self, task, has_val):
        from rnnlab.training.config import TrainConfig
        from rnnlab.errors import check_choice, check_int
        from rnnlab.engine.layers import LAYERS
        check_choice("cell", self.cell, LAYERS)
        check_int("epochs", self.epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        per_epoch = task.steps_per_epoch(self.batch_size)
        return TrainConfig(
            task="data", model=self.cell, hidden_size=self.hidden_size, num_layers=self.num_layers,
            bidirectional=self.bidirectional, dropout=self.dropout, optimizer=self.optimizer, lr=self.lr,
            epochs=self.epochs, batch_size=self.batch_size, clip=self.clip, weight_decay=self.weight_decay,
            patience=self.patience if (self.early_stopping and has_val) else 0,
            eval_every=per_epoch if has_val else 0, log_every=per_epoch, seed=self.seed, backend=self.backend,
            dtype=self.dtype, quiet=not self.verbose, missing=self.missing, standardize=self.standardize,
            val_fraction=0.2, **self._layer_options().options()).validate()

    def fit(self, X, y=None, sample_weight=None, validation_data=None, lengths=None):
        """Train on X (and y, unless a long DataFrame's ``target_col`` holds them).

        ``sample_weight``: one weight per sequence in the training loss (a weighted mean); with a long DataFrame, a
        Series indexed by the ids. ``class_weight`` (classifier): ``{label: weight}`` or ``"balanced"`` (n / (K n_k),
        scikit-learn's rule), multiplied into the sample weights. Validation metrics stay unweighted.
        ``validation_data``: ``(X_val, y_val)`` evaluated once per epoch (early stopping reads it when
        ``early_stopping``); without it, ``early_stopping`` holds out ``validation_fraction`` of X.
        """
        from rnnlab.tasks.supervised import sequence_task
        from rnnlab.training.trainer import Trainer
        if y is None and not (hasattr(X, "columns") and self.id_col is not None and self.target_col):
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        self._check_params(X)
        y = _plain(y)
        train, width = self._sequences(X, y, lengths, fitting=True)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise DataError("validation_data: expected a pair (X_val, y_val)")
            val = self._sequences(validation_data[0], validation_data[1])[0]
        fraction = self.validation_fraction if (self.early_stopping and val is None) else 0.0
        if fraction:
            from rnnlab.errors import check_float
            check_float("validation_fraction", fraction, 0.0, 1.0, low_open=True, high_open=True)
        warm = self.warm_start and hasattr(self, "model_")
        weights = self._weights(X, train, sample_weight)
        task = sequence_task("fit", train, val, self._problem, fraction, self.seed, self.standardize, self.missing,
                             encoding=self.encoding_ if warm else None, weights=weights)
        has_val = task.has_validation
        cfg = self._config(task, has_val)
        trainer = Trainer(cfg, task, progress=self.verbose)
        if warm:
            trainer.model.load_state_dict(self.model_.state_dict())
        r = trainer.fit()
        self.model_, self.encoding_ = r.model, task.encoding
        self.n_features_in_ = task.input_size if width is None else width
        self._table_width = width
        self.history_ = r.records
        self.n_iter_ = -(-r.steps_run // task.steps_per_epoch(cfg.batch_size))
        self.best_step_ = r.best_step
        self.stopped_early_ = r.stopped_early
        self.validation_score_ = r.final if has_val else None
        self._fitted_hook(train)
        return self

    def _fitted_hook(self, train):
        pass

    def _weights(self, X, train, sample_weight):
        """(N,) weights of the training sequences in their order in ``train``, or None: sample_weight (by id for a
        long DataFrame) times the class weights."""
        from rnnlab.tasks.supervised import check_weights
        n = len(train.cases)
        w = None
        if sample_weight is not None:
            if hasattr(X, "columns") and self.id_col is not None:
                if not (hasattr(sample_weight, "index") and hasattr(sample_weight, "reindex")
                        and set(train.ids) <= set(sample_weight.index)):
                    raise DataError("sample_weight: with a long DataFrame, give a pandas Series indexed by the ids of "
                                    f"id_col {self.id_col!r} (weights by id, never by position)")
                sample_weight = sample_weight.reindex(train.ids).to_numpy()
            w = check_weights(sample_weight, n)
        if self.class_weight is not None:
            cw = self._class_weights(train)
            w = cw if w is None else check_weights(w * cw, n)
        return w

    def _class_weights(self, train):
        raise DataError(f"class_weight: an option of RNNClassifier, got class_weight={self.class_weight!r} for "
                        f"{type(self).__name__}; use sample_weight")

    def _outputs(self, X, lengths=None) -> list:
        """One output per sequence, after the prediction layer (see ``tasks.sequences.predict_outputs``)."""
        from rnnlab.tasks.supervised import predict_outputs
        check_is_fitted(self, "model_")
        seqs, width = self._sequences(X, None, lengths, require_target=False)
        if self._table_width is not None and width != self._table_width:
            got = width if width is not None else f"sequences of {seqs.num_features} feature(s) per step"
            raise DataError(f"X has {got} features, but {type(self).__name__} is expecting {self._table_width} "
                            f"features as input (fitted on a 2-D table: one univariate sequence of "
                            f"{self._table_width} steps per row)")
        if seqs.num_features != len(self.encoding_.x_mean):
            raise DataError(f"X: expected {len(self.encoding_.x_mean)} features per step (as in fit), got "
                            f"{seqs.num_features}")
        return predict_outputs(self.model_, self.encoding_, seqs)


class RNNClassifier(ClassifierMixin, _RNNEstimator):
    """One label per sequence (softmax at its last valid step). Labels: integers, strings or booleans."""

    _problem = "classify"

    def _prepare_y(self, y):
        from sklearn.utils.multiclass import type_of_target
        from sklearn.utils.validation import column_or_1d
        if isinstance(y, (list, tuple)) and len(y) and np.ndim(y[0]) > 0:
            raise DataError("y: a classifier takes one label per sequence; for a label per step use RNNTagger")
        if isinstance(y, (list, tuple)) or getattr(y, "dtype", None) == object:   # [1, "a"] refused, not cast
            from rnnlab.data.encoding import label_kind
            label_kind(np.asarray(y, dtype=object))
        y = column_or_1d(y, warn=True)
        kind = type_of_target(y)
        if kind not in ("binary", "multiclass"):
            raise ValueError(f"Unknown label type: {kind!r}; RNNClassifier takes class labels (integers, strings or "
                             f"booleans). Use RNNRegressor for continuous targets")
        return y

    def _fitted_hook(self, train):
        self.classes_ = self.encoding_.classes_array

    def _class_weights(self, train):
        """(N,) the class weight of each training sequence's label."""
        y = np.asarray(train.targets, dtype=object)
        labels = sorted(set(y.tolist()), key=str)
        cw = self.class_weight
        if isinstance(cw, str):
            if cw != "balanced":
                raise DataError(f"class_weight: expected 'balanced' or a dict {{label: weight}}, got {cw!r}")
            from sklearn.utils.class_weight import compute_sample_weight
            return compute_sample_weight("balanced", y.tolist())          # n / (K n_k), scikit-learn's rule
        if isinstance(cw, dict):
            unknown = [k for k in cw if k not in set(labels)]
            if unknown:
                raise DataError(f"class_weight: label {unknown[0]!r} is not a class of y (classes: {labels})")
            table = {k: float(cw.get(k, 1.0)) for k in labels}
            bad = [k for k, v in table.items() if not (np.isfinite(v) and v >= 0)]
            if bad:
                raise DataError(f"class_weight: expected finite weights >= 0, got {table[bad[0]]} for {bad[0]!r}")
        else:
            raise DataError(f"class_weight: expected 'balanced' or a dict {{label: weight}}, got {cw!r}")
        return np.array([table[v] for v in y.tolist()], dtype=np.float64)

    def classification_report(self, X, y, lengths=None) -> dict:
        """Per-class precision, recall, F1 and support, their macro and support-weighted means, accuracy and
        the confusion matrix (rows: true class, columns: predicted, in the order of ``classes_``) on (X, y)."""
        from rnnlab.training.metrics import classification_report
        return classification_report(self._score_y(X, y), self.predict(X, lengths), self.classes_)

    def score(self, X, y, sample_weight=None):
        """Accuracy; with a long DataFrame, y is a Series matched to the sequences by id."""
        return ClassifierMixin.score(self, X, self._score_y(X, y), sample_weight)

    def predict_proba(self, X, lengths=None):
        """(N, K) class probabilities, columns in the order of ``classes_``."""
        return np.stack(self._outputs(X, lengths))

    def predict(self, X, lengths=None):
        proba = self.predict_proba(X, lengths)
        return self.classes_[proba.argmax(1)]


class RNNRegressor(RegressorMixin, _RNNEstimator):
    """One value (y (N,)) or vector (y (N, K)) per sequence, read at its last valid step."""

    _problem = "regress"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True          # y (N, K): K outputs from one head
        return tags

    def _prepare_y(self, y):
        a = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
        if a.dtype.kind == "c":
            raise DataError(f"y: Complex data not supported (dtype {a.dtype}); expected real targets")
        try:
            return a.astype(np.float64)
        except (TypeError, ValueError):
            raise DataError(f"y: Unknown label type: RNNRegressor takes numeric targets, got {a.dtype} values such "
                            f"as {a.ravel()[0].item()!r}; for class labels use RNNClassifier") from None

    def _fitted_hook(self, train):
        self._y_1d = np.ndim(train.targets) == 1

    def score(self, X, y, sample_weight=None):
        """R^2; with a long DataFrame, y is a Series matched to the sequences by id."""
        return RegressorMixin.score(self, X, self._score_y(X, y), sample_weight)

    def predict(self, X, lengths=None):
        y = np.stack(self._outputs(X, lengths))
        return y[:, 0] if self._y_1d else y


class RNNTagger(_RNNEstimator):
    """A label per step (softmax at every valid step). y: (N, T) labels or a list of (T_i,) label arrays."""

    _problem = "tag"

    def _prepare_y(self, y):
        if isinstance(y, np.ndarray) and y.ndim == 2:
            return [v for v in y]
        return [np.asarray(v) for v in y]

    def _fitted_hook(self, train):
        self.classes_ = self.encoding_.classes_array

    def predict_proba(self, X, lengths=None):
        """A list of (T_i, K) per-step probabilities."""
        return self._outputs(X, lengths)

    def predict(self, X, lengths=None):
        """A list of (T_i,) label arrays (an (N, T) array when every sequence has the same length)."""
        labels = [self.classes_[p.argmax(1)] for p in self.predict_proba(X, lengths)]
        return np.stack(labels) if len({len(v) for v in labels}) == 1 else labels

    def score(self, X, y, lengths=None):
        """Per-step accuracy over every valid step."""
        pred = self.predict(X, lengths)
        y = self._prepare_y(y)
        if len(y) != len(pred):
            raise DataError(f"y: expected labels for {len(pred)} sequences, got {len(y)}")
        hits = total = 0
        for p, t in zip(pred, y):
            t = np.asarray(t)
            if len(p) != len(t):
                raise DataError(f"y: a sequence of {len(p)} steps has {len(t)} labels")
            hits += int((np.asarray(p) == t).sum())
            total += len(t)
        return hits / total


def pd_unique(values):
    import pandas as pd
    return pd.unique(values)


def _plain(y):
    """A pandas nullable y (Int64, boolean, string) as the NumPy values it holds; a missing label is an error."""
    dt = getattr(y, "dtype", None)
    if dt is None or not hasattr(dt, "numpy_dtype") or not hasattr(y, "isna"):
        return y
    if y.isna().any():
        raise DataError(f"y: {int(y.isna().sum())} missing label(s) (NA); every sequence needs a target")
    out = y.astype(dt.numpy_dtype) if dt.numpy_dtype.kind in "biuf" else y.astype(object)
    return out


def _table(X):
    """(X, its number of columns when it is a 2-D table of numbers, else None); sparse and object input checked."""
    from rnnlab.errors import DTypeError
    if hasattr(X, "tocsr") or type(X).__module__.startswith("scipy.sparse"):
        raise DTypeError("X: sparse input is not supported; pass a dense array (X.toarray())")
    if isinstance(X, (list, tuple)):
        try:
            a = np.asarray(X)
        except ValueError:                     # ragged: a list of sequences of different lengths
            return X, None
        if a.ndim != 2 or a.dtype == object:
            return X, None
        X = a
    if isinstance(X, np.ndarray) and X.dtype == object:
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise DTypeError(f"X: expected numbers, got an object array holding {X.ravel()[0]!r} ({exc})") from None
    X = np.asarray(X) if not isinstance(X, (list, tuple)) else X
    if isinstance(X, np.ndarray) and X.ndim == 2:
        if X.shape[1] == 0:
            raise DataError(f"X: 0 feature(s) (shape={X.shape}) while a minimum of 1 is required (each row is a "
                            f"sequence and needs at least one step)")
        return X, X.shape[1]
    return X, None


def _trusted() -> set:
    """The rnnlab types a fitted estimator holds, as skops names them (``module.Class``)."""
    from rnnlab.data.encoding import Encoding
    from rnnlab.engine.layers import LAYERS
    from rnnlab.model.sequence_model import ModelConfig, SequenceModel
    types = [RNNClassifier, RNNRegressor, RNNTagger, SequenceModel, ModelConfig, Encoding]
    types += [c for c in LAYERS.values() if c.__module__ == "rnnlab.engine.layers"]
    return {f"{t.__module__}.{t.__qualname__}" for t in types}


def _skops():
    try:
        import skops.io as sio
    except ImportError:
        raise ImportError("saving an estimator needs skops; install it with: pip install -e '.[data]'") from None
    return sio


def save(estimator, path, overwrite: bool = False) -> None:
    """Write a fitted estimator to ``path`` with skops (no pickle: ``load`` rebuilds only known types). An
    existing file is refused unless ``overwrite``."""
    from pathlib import Path
    from rnnlab.errors import ConfigError
    sio = _skops()
    if not isinstance(estimator, _RNNEstimator):
        raise ConfigError(f"estimator: expected an rnnlab estimator (RNNClassifier, RNNRegressor, RNNTagger), got "
                          f"{type(estimator).__name__}")
    check_is_fitted(estimator, "model_")
    if Path(path).exists() and not overwrite:
        raise ConfigError(f"path: {path} exists; pass overwrite=True to replace it, or give a new path")
    sio.dump(estimator, path)


# modules that held an estimator's parts before the package layout of 0.2 (files saved then name them)
_MOVED = {"rnnlab.layers": "rnnlab.engine.layers", "rnnlab.model": "rnnlab.model.sequence_model",
          "rnnlab.encoding": "rnnlab.data.encoding"}


def _renamed(data: bytes) -> bytes:
    """A skops file's bytes with the module names of an older layout replaced by today's (schema only); a file
    that names none is returned as it is."""
    import io
    import json
    import zipfile
    src = zipfile.ZipFile(io.BytesIO(data))
    schema = json.loads(src.read("schema.json"))

    def walk(node) -> bool:
        moved = False
        if isinstance(node, dict):
            if node.get("__module__") in _MOVED:
                node["__module__"] = _MOVED[node["__module__"]]
                moved = True
            node = node.values()
        if isinstance(node, (list, type({}.values()))):
            for v in node:
                moved = walk(v) or moved
        return moved
    if not walk(schema):
        return data
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = json.dumps(schema).encode() if info.filename == "schema.json" else src.read(info)
            dst.writestr(info, body)
    return out.getvalue()


def load(path):
    """An estimator written by ``save``. Only rnnlab's own types (and the NumPy and built-in ones skops trusts
    by itself) are rebuilt: a file holding any other type is refused, naming it, before anything is built.
    Files written by older versions load too (their module names are translated)."""
    from pathlib import Path
    sio = _skops()
    try:
        data = _renamed(Path(path).read_bytes())
        types = sio.get_untrusted_types(data=data)
    except FileNotFoundError:
        raise DataError(f"path: no such file {path}") from None
    except Exception as exc:                    # not a skops file: a zip/JSON error
        raise DataError(f"path: {path} is not a file written by rnnlab.estimators.save ({exc})") from None
    foreign = sorted(set(types) - _trusted())
    if foreign:
        raise DataError(f"path: {path} holds type(s) that are not rnnlab's own: {', '.join(foreign)}; refusing to "
                        f"load it (loading would run their code)")
    est = sio.loads(data, trusted=list(types))
    if not isinstance(est, _RNNEstimator):
        raise DataError(f"path: {path} holds a {type(est).__name__}, not an rnnlab estimator")
    return est


__all__ = ["RNNClassifier", "RNNRegressor", "RNNTagger", "save", "load", "DEFAULTS_VS_CLI"]
