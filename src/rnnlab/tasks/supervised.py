"""Supervised sequences of the user's own: one label or value per sequence, or one label per step.

    classify   softmax at each sequence's last valid step; cross-entropy; accuracy
    regress    identity at the last valid step; MSE on standardised targets; mse and mae in the data's units
    tag        softmax at every valid step; cross-entropy over valid steps; per-step accuracy

Training batches walk through the training sequences in a new order each epoch (the order is a function of
the seed and the epoch, so a resumed run draws the same batches); a batch is padded to its longest sequence
and carries ``lengths`` when its sequences differ in length.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rnnlab.data.encoding import Encoding, fit_encoding, infer_problem
from rnnlab.errors import DataError
from rnnlab.data.sequences import Sequences, pad
from rnnlab.tasks.base import Batch, Task


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of n cases -> (train indices, validation indices), both non-empty."""
    if n < 2:
        raise DataError(f"val_fraction: {n} sequence(s) cannot be split into training and validation data; "
                        f"give more sequences or a separate validation file (--val-data)")
    perm = np.random.default_rng([seed, 3]).permutation(n)
    if int(round(n * val_fraction)) > n - 1:
        raise DataError(f"val_fraction: {val_fraction} of {n} sequences leaves none for training; give a smaller "
                        f"fraction or a separate validation file (--val-data)")
    n_val = min(n - 1, max(1, int(round(n * val_fraction))))
    return perm[n_val:], perm[:n_val]


_LARGEST = 1e30     # an input's magnitude bound: float32 tops out at 3.4e38 and the products sum many terms


@dataclass
class Encoded:
    """Sequences in the model's terms, unpadded (a batch is padded to its own longest sequence, so one long
    sequence among many short ones costs its own length, not N times it)."""
    cases: list                      # N float64 arrays (T_i, F), standardised
    lengths: np.ndarray              # (N,)
    targets: object = None           # (N,) class indices | (N, K) values | list of N (T_i,) label indices | None
    weights: np.ndarray | None = None    # (N,) each sequence's weight in the training loss, or None (all 1)

    def __len__(self):
        return len(self.cases)


def encode(encoding: Encoding, seqs: Sequences, with_targets: bool = True) -> Encoded:
    """Sequences -> ``Encoded``: features standardised, targets mapped to the model's classes or units."""
    cases = encoding.encode_x(seqs.cases)
    for c in cases:
        big = np.abs(c).max(axis=0) > _LARGEST
        if big.any():                   # float32 weights times such inputs overflow: refuse, never train on inf
            f = int(np.flatnonzero(big)[0])
            name = (encoding.feature_names or [str(i) for i in range(len(big))])[f]
            fix = (f"the data is far off the scale of the training data (x_std {encoding.x_std[f]:.3g})"
                   if encoding.x_std[f] != 1.0 or encoding.x_mean[f] != 0.0 else
                   "standardise it (--standardize) or rescale it")
            raise DataError(f"feature_cols: feature {name!r} reaches {np.abs(c[:, f]).max():.3g} after encoding, too "
                            f"large for the model's arithmetic; {fix}")
    lengths = np.array([len(c) for c in cases], dtype=np.int64)
    if not with_targets:
        return Encoded(cases, lengths)
    if seqs.targets is None:
        raise DataError("y: this needs targets (a target column or array), and the data has none")
    y = encoding.encode_y(seqs.targets)
    if encoding.problem == "tag":
        for i, v in enumerate(y):
            if len(v) != lengths[i]:
                raise DataError(f"y: sequence {i} has {lengths[i]} steps and {len(v)} labels")
    return Encoded(cases, lengths, y)


def take(data: Encoded, idx, problem) -> Batch:
    """The batch of sequences ``idx``: padded to its longest, ``lengths`` only when they differ."""
    lengths = data.lengths[idx]
    x, _ = pad([data.cases[i] for i in idx])                           # (T, B, F)
    ragged = not (lengths == x.shape[0]).all()
    tgt = None
    if data.targets is not None:
        if problem == "tag":
            tgt = np.zeros((x.shape[0], len(idx)), np.int64)              # (T, B), 0 after each end
            for j, i in enumerate(idx):
                tgt[:lengths[j], j] = data.targets[i]
        else:
            tgt = data.targets[idx]
    return Batch(x, tgt, lengths if ragged else None,
                 weights=None if data.weights is None else data.weights[idx])


def chunks(n: int, size: int = 256):
    return [np.arange(i, min(n, i + size)) for i in range(0, n, size)]


class SequenceTask(Task):
    """Sequences with their targets, encoded with an ``Encoding`` fitted on the training part."""

    input_mode = "dense"

    def __init__(self, name: str, encoding: Encoding, train: Sequences, val: Sequences | None = None,
                 seed: int = 0, info: dict | None = None, notes=(), weights=None):
        self.name, self.encoding, self.problem, self.seed = name, encoding, encoding.problem, seed
        self.prediction = "identity" if self.problem == "regress" else "softmax"
        self.target = "every" if self.problem == "tag" else "last"
        self.metrics = ("loss", "mse", "mae") if self.problem == "regress" else ("loss", "accuracy")
        self.input_size, self.output_size = len(encoding.x_mean), encoding.output_size
        self.train_data = encode(encoding, train)
        self.train_data.weights = weights           # the training loss only: metrics stay unweighted
        self.has_validation = val is not None
        self.val_data = encode(encoding, val) if val is not None else self.train_data
        self.n_train, self.n_val = len(self.train_data), len(self.val_data)
        self._info = dict(info or {})
        self.notes = list(notes)
        self._epoch, self._perm = -1, None

    # -------------------------------------------------------------- batches
    def train_batch(self, rng, batch_size, step):
        n = self.n_train
        per_epoch = math.ceil(n / batch_size)
        epoch, k = divmod(step, per_epoch)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, 7, epoch]).permutation(n)
        return take(self.train_data, self._perm[k * batch_size:(k + 1) * batch_size], self.problem)

    def val_batches(self):
        return [take(self.val_data, idx, self.problem) for idx in chunks(self.n_val)]

    def batches_of(self, seqs: Sequences, with_targets=True) -> list[Batch]:
        """Other data (a held-out file, new sequences) in this task's encoding."""
        data = encode(self.encoding, seqs, with_targets)
        return [take(data, idx, self.problem) for idx in chunks(len(data))]

    def steps_per_epoch(self, batch_size) -> int:
        return math.ceil(self.n_train / batch_size)

    # -------------------------------------------------------------- metrics
    def _step_mask(self, batch):
        T, B = batch.targets.shape
        if batch.lengths is None:
            return np.ones((T, B), bool)
        return np.arange(T)[:, None] < np.asarray(batch.lengths)[None, :]

    def extra_metrics(self, loss, logits, batch):
        if self.problem == "classify":
            return {"accuracy": float((logits.argmax(-1) == batch.targets).mean())}
        if self.problem == "tag":
            m = self._step_mask(batch)
            return {"accuracy": float(((logits.argmax(-1) == batch.targets) & m).sum() / m.sum())}
        err = self.encoding.decode_values(logits.reshape(len(logits), -1)) - self.encoding.decode_values(
            batch.targets.reshape(len(batch.targets), -1))
        return {"mse": float((err ** 2).mean()), "mae": float(np.abs(err).mean())}

    def class_report(self, model) -> dict | None:
        """Per-class precision, recall, F1 and the confusion matrix of ``model`` on the validation data
        (``rnnlab.training.metrics``), in the data's labels; None for a regression."""
        if self.problem == "regress":
            return None
        from rnnlab.engine.grad_mode import no_grad
        from rnnlab.training.metrics import classification_report
        true, pred = [], []
        was = model.rnn.training
        model.eval()
        try:
            with no_grad():
                for b in self.val_batches():
                    logits = model(b.inputs, b.lengths)[0]
                    p, t = logits.argmax(-1), np.asarray(b.targets)
                    if self.problem == "tag":
                        m = self._step_mask(b)
                        p, t = p[m], t[m]
                    true.append(t.ravel())
                    pred.append(p.ravel())
        finally:
            model.train(was)
        classes = self.encoding.classes_array
        return classification_report(classes[np.concatenate(true)], classes[np.concatenate(pred)], classes)

    def baseline(self):
        ytr, yva = self.train_data.targets, self.val_data.targets
        if self.problem == "regress":
            y = self.encoding.decode_values(yva)
            return ("mean-prediction MSE", float(((y - np.asarray(self.encoding.y_mean)) ** 2).mean()))
        if self.problem == "tag":
            ytr, yva = np.concatenate(ytr), np.concatenate(yva)
        top = np.bincount(ytr, minlength=self.output_size).argmax()
        return (f"majority-{'label' if self.problem == 'tag' else 'class'} accuracy", float((yva == top).mean()))

    def describe(self):
        kind = {"classify": f"{self.output_size} classes", "tag": f"{self.output_size} labels per step",
                "regress": f"{self.output_size} output(s)"}[self.problem]
        val = f"{self.n_val} val" if self.has_validation else "no validation split (metrics on training data)"
        return (f"{self.name} ({self.problem}): {self.n_train} train / {val} sequences, {self.input_size} features, "
                f"up to {int(self.train_data.lengths.max())} steps, {kind}")

    def info(self):
        return {**self._info, "encoding": self.encoding.to_dict()}


def sequence_task(name, train: Sequences, val: Sequences | None = None, problem: str = "auto",
                  val_fraction: float = 0.0, seed: int = 0, standardize: bool = True, missing: str = "error",
                  encoding: Encoding | None = None, info: dict | None = None, weights=None) -> SequenceTask:
    """Split (when no ``val`` and ``val_fraction`` > 0), fit the encoding on the training part, build the task.

    ``encoding``: a stored one (evaluating a trained model) instead of fitting a new one. ``weights`` (N,): each
    training sequence's weight in the loss (checked: ``check_weights``), split with the sequences.
    """
    notes = list(train.notes)
    if encoding is not None:
        problem = encoding.problem
    elif problem == "auto":
        if train.targets is None:
            raise DataError("y: no targets in the training data")
        problem, why = infer_problem(train.targets)
        notes.append(f"problem: {problem} (inferred from {why}; set --problem to choose)")
    if weights is not None:
        weights = check_weights(weights, len(train.cases))
    if val is None and val_fraction > 0:
        tr, va = split_indices(len(train.cases), val_fraction, seed)
        train, val = train.subset(tr), train.subset(va)
        weights = None if weights is None else weights[tr]
        if weights is not None and not weights.sum() > 0:
            raise DataError("sample_weight: every sequence left for training after the validation split has weight 0")
    if encoding is None:
        encoding = fit_encoding(train, problem, standardize, missing)
    return SequenceTask(name, encoding, train, val, seed, info, notes, weights)


def check_weights(weights, n: int) -> np.ndarray:
    """Sample weights -> (n,) float64: one finite, non-negative number per sequence, not all zero."""
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"sample_weight: expected {n} numbers, one per sequence, got {type(weights).__name__} "
                        "that is not numeric") from None
    if w.shape != (n,):
        raise DataError(f"sample_weight: expected {n} weights, one per sequence, got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        bad = int(np.flatnonzero(~np.isfinite(w) | (w < 0))[0])
        raise DataError(f"sample_weight: expected finite weights >= 0, got {w[bad]} for sequence {bad}")
    if not w.sum() > 0:
        raise DataError("sample_weight: expected some weight > 0, got all weights zero")
    return w


def predict_outputs(model, encoding: Encoding, seqs: Sequences) -> list:
    """The model's outputs after its prediction layer, one per case in input order: class probabilities (K,),
    values (K,) in the data's units, or per-step probabilities (T_i, K)."""
    from rnnlab.engine.grad_mode import no_grad
    data = encode(encoding, seqs, with_targets=False)
    lengths = data.lengths
    was_training = model.rnn.training
    model.eval()
    out = []
    try:
        with no_grad():
            for idx in chunks(len(lengths)):
                b = take(data, idx, encoding.problem)
                p = model.predict(b.inputs, b.lengths)[0].astype(np.float64)
                if encoding.problem == "tag":                          # (T, B, K)
                    out += [p[:lengths[i], j] for j, i in enumerate(idx)]
                else:                                                   # (B, K)
                    out += list(encoding.decode_values(p) if encoding.problem == "regress" else p)
    finally:
        model.train(was_training)
    return out


def prediction_frame(encoding: Encoding, seqs: Sequences, outputs: list, id_name="id", time_name="time",
                     target_name="target"):
    """A pandas DataFrame of predictions: one row per sequence (per step when tagging), with the id,
    ``prediction`` and, for labels, a ``p_<class>`` column per class."""
    import pandas as pd
    outs = {"prediction"} | ({f"p_{c}" for c in encoding.classes_array.tolist()} if encoding.problem != "regress"
                             else {f"prediction_{k}" for k in range(len(encoding.y_mean))})
    for arg, name in (("id_col", id_name), ("time_col", time_name)):
        if name in outs and (arg == "id_col" or encoding.problem == "tag"):
            raise DataError(f"{arg}: the column {name!r} would be overwritten by the prediction column of the same "
                            f"name; rename it in the data (and train again) to keep both")
    ids = seqs.ids if seqs.ids is not None else list(range(len(seqs.cases)))
    if encoding.problem == "regress":
        vals = np.stack(outputs)
        cols = {"prediction": vals[:, 0]} if vals.shape[1] == 1 else {
            f"prediction_{k}": vals[:, k] for k in range(vals.shape[1])}
        return pd.DataFrame({id_name: ids, **cols})
    classes = encoding.classes_array
    if encoding.problem == "classify":
        p = np.stack(outputs)
        return pd.DataFrame({id_name: ids, "prediction": classes[p.argmax(1)],
                             **{f"p_{c}": p[:, k] for k, c in enumerate(classes.tolist())}})
    return step_frame(encoding, seqs, outputs, id_name, time_name)


def step_frame(encoding: Encoding, seqs: Sequences, outputs: list, id_name="id", time_name="time"):
    """One row per (case, step): the prediction of a tagger at each step, or a stream's prediction so far."""
    import pandas as pd
    classes = encoding.classes_array if encoding.problem != "regress" else None
    p = np.concatenate(outputs)
    steps = np.concatenate([np.arange(len(o)) for o in outputs])
    ids = seqs.ids if seqs.ids is not None else list(range(len(seqs.cases)))
    if classes is None:
        rows = {id_name: np.repeat(np.array(ids, dtype=object), [len(o) for o in outputs]),
                (time_name if seqs.ids is not None else "step"): steps}
        cols = {"prediction": p[:, 0]} if p.shape[1] == 1 else {f"prediction_{k}": p[:, k] for k in range(p.shape[1])}
        frame = pd.DataFrame({**rows, **cols})
        if seqs.times is not None:
            frame[time_name] = np.concatenate(seqs.times)
        return frame
    rows = {id_name: np.repeat(np.array(ids, dtype=object), [len(o) for o in outputs]),
            (time_name if seqs.ids is not None else "step"): steps, "prediction": classes[p.argmax(1)]}
    frame = pd.DataFrame({**rows, **{f"p_{c}": p[:, k] for k, c in enumerate(classes.tolist())}})
    if seqs.times is not None:
        frame[time_name] = np.concatenate(seqs.times)
    return frame


def stream_outputs(model, encoding, seqs, chunk: int = 1) -> list:
    """The model's prediction after every step of each case, fed to an ``rnnlab.Stream`` ``chunk`` steps at a
    time as a deployed model would be (all cases side by side, each ending on its own): per case (T_i, K)
    probabilities or values in the data's units. Its last row is ``predict_outputs``' prediction of the case."""
    from rnnlab.data.sequences import pad
    from rnnlab.model.stream import Stream
    data = encode(encoding, seqs, with_targets=False)
    lengths = data.lengths
    out = []
    was_training = model.rnn.training
    model.eval()
    try:
        for idx in chunks(len(lengths)):
            x, _ = pad([data.cases[i] for i in idx])                       # (T, B, F)
            x = x.astype(model.dtype)
            active = np.arange(x.shape[0])[:, None] < lengths[idx][None, :]
            stream = Stream(model, batch_size=len(idx))
            ys = [stream.feed(x[t0:t0 + chunk], active=active[t0:t0 + chunk]) for t0 in range(0, x.shape[0], chunk)]
            y = np.concatenate(ys).astype(np.float64)                      # (T, B, K)
            for j, i in enumerate(idx):
                yi = y[:lengths[i], j]
                out.append(encoding.decode_values(yi) if encoding.problem == "regress" else yi)
    finally:
        model.train(was_training)
    return out
