"""Per-class metrics of a classifier or tagger: precision, recall, F1, support and the confusion matrix.

    classification_report(y_true, y_pred, classes) -> {"classes", "confusion", "per_class", "macro",
                                                        "weighted", "accuracy"}

Written with NumPy (the core has no scikit-learn); the definitions are scikit-learn's, and a class that is never
predicted (or never present) has precision (recall) 0, not NaN, so the report stays finite JSON. The tests
compare it with ``sklearn.metrics.precision_recall_fscore_support`` and ``confusion_matrix``.
"""
from __future__ import annotations

import numpy as np

from rnnlab.errors import DataError


def confusion(y_true, y_pred, classes) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class, in the order of ``classes``."""
    index = {c: i for i, c in enumerate(_labels(classes))}
    t, p = _labels(y_true), _labels(y_pred)
    if len(t) != len(p):
        raise DataError(f"y: expected {len(p)} labels (one per prediction), got {len(t)}")
    missing = next((v for v in t if v not in index), None)
    if missing is not None:
        raise DataError(f"y: label {missing!r} is not one of the model's classes {list(index)}")
    m = np.zeros((len(index), len(index)), np.int64)
    np.add.at(m, ([index[v] for v in t], [index[v] for v in p]), 1)
    return m


def classification_report(y_true, y_pred, classes) -> dict:
    """Per-class precision, recall, F1 and support; their macro mean and their support-weighted mean; accuracy;
    the confusion matrix (JSON-able: labels as text, numbers as floats and ints)."""
    m = confusion(y_true, y_pred, classes)
    tp = np.diag(m).astype(np.float64)
    predicted, support = m.sum(axis=0), m.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    pr = precision + recall
    f1 = np.divide(2 * precision * recall, pr, out=np.zeros_like(tp), where=pr > 0)
    names = [str(c) for c in _labels(classes)]
    per_class = {n: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                     "support": int(support[i])} for i, n in enumerate(names)}
    total = int(support.sum())
    w = support / total if total else np.zeros_like(tp)
    return {"classes": names, "confusion": m.tolist(), "per_class": per_class,
            "macro": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())},
            "weighted": {"precision": float(w @ precision), "recall": float(w @ recall), "f1": float(w @ f1)},
            "accuracy": float(tp.sum() / total) if total else 0.0}


def report_text(rep: dict) -> str:
    """The report as a plain-text table and the confusion matrix, for the terminal."""
    width = max(12, *(len(n) for n in rep["classes"]))            # "weighted avg"
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for n, v in rep["per_class"].items():
        lines.append(f"{n:<{width}}  {v['precision']:9.3f}  {v['recall']:6.3f}  {v['f1']:5.3f}  {v['support']:7d}")
    for k in ("macro", "weighted"):
        v = rep[k]
        lines.append(f"{k + ' avg':<{width}}  {v['precision']:9.3f}  {v['recall']:6.3f}  {v['f1']:5.3f}")
    lines.append(f"confusion (rows: true, columns: predicted; {', '.join(rep['classes'])}):")
    lines += ["  " + " ".join(f"{c:6d}" for c in row) for row in rep["confusion"]]
    return "\n".join(lines)


def _labels(values) -> list:
    """Labels as plain Python values (NumPy scalars compare and hash as their values)."""
    a = np.asarray(values, dtype=object).ravel()
    return [v.item() if hasattr(v, "item") else v for v in a]
