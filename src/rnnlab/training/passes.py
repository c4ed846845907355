"""The passes the trainer runs over a task's batches: ``tbptt_backward`` (a training step's forward and backward,
over the whole sequence or in truncated-BPTT chunks) and ``evaluate`` (the validation metrics), with the
checks of what they return (``strict``: a record fit for metrics.jsonl; ``first_nonfinite``: a gradient gone bad),
and ``gradient_flow`` (a diagnostics.jsonl record).
"""
from __future__ import annotations

import math

import numpy as np

from rnnlab.engine.grad_mode import no_grad
from rnnlab.errors import ConfigError, NonFiniteError
from rnnlab.model.sequence_model import SequenceModel


def tbptt_backward(model: SequenceModel, inputs, targets, lengths=None, hx=None, chunk: int = 0, weight=1.0,
                   weights=None):
    """Forward and backward over time in chunks of ``chunk`` steps (truncated BPTT).

    The state is carried from chunk to chunk, the gradient is cut at each chunk's start (the ``dhx`` that
    backward returns is dropped). Each chunk's loss is weighted by its share of the steps, so the total
    equals the full-sequence mean loss, and with ``chunk`` 0 or >= T this is exactly full BPTT.
    Returns (loss, logits, final state); parameter gradients accumulate in ``model.grads``. ``weight``
    scales the gradient (a rank's share of a distributed batch's loss terms), not the loss returned;
    ``weights`` (B,) weigh the sequences in the loss (``SequenceModel.loss``).
    """
    T = inputs.shape[0]
    if not chunk or chunk >= T:
        logits, state = model(inputs, lengths, hx)
        loss, d_logits = model.loss(logits, targets, lengths, weights)
        model.backward(d_logits if weight == 1.0 else d_logits * d_logits.dtype.type(weight))
        return loss, logits, state
    if lengths is not None or model.config.target != "every":
        raise ConfigError("tbptt: truncated BPTT needs targets at every step and equal lengths")
    total, parts, state = 0.0, [], hx
    for t0 in range(0, T, chunk):
        sl = slice(t0, min(T, t0 + chunk))
        logits, state = model(inputs[sl], None, state)
        loss, d_logits = model.loss(logits, targets[sl], None, weights)
        w = (sl.stop - sl.start) / T
        model.backward(d_logits * d_logits.dtype.type(w * weight))   # dhx dropped: the cut
        total += loss * w
        parts.append(logits)
    return total, np.concatenate(parts), state



@no_grad()
def evaluate(model: SequenceModel, task, batches=None) -> dict:
    """Average the task's metrics over its validation batches (stateful tasks carry the state)."""
    model.eval()
    totals, weight, state = {}, 0.0, None
    for batch in (task.val_batches() if batches is None else batches):
        if batch.reset:
            state = None
        logits, new_state = model(batch.inputs, batch.lengths, state if task.stateful else None)
        state = new_state
        loss, _ = model.loss(logits, batch.targets, batch.lengths)
        m = {"loss": loss, **task.extra_metrics(loss, logits, batch)}
        tg = np.asarray(batch.targets)
        if task.target == "every":                  # the batch's metrics are means over its valid steps
            w = float(np.sum(batch.lengths) if batch.lengths is not None else tg.shape[0] * tg.shape[1])
        else:
            w = float(tg.shape[0])
        for k, v in m.items():
            totals[k] = totals.get(k, 0.0) + v * w
        weight += w
    model.train()
    return {k: v / weight for k, v in totals.items()}


def strict(record: dict, step: int) -> dict:
    """A record that is strict JSON: a skipped step's non-finite loss is written as null (its "skipped" says why);
    any other non-finite metric stops the run before it is written."""
    bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
    if not bad:
        return record
    if record.get("skipped"):
        return {k: (None if k in bad else v) for k, v in record.items()}
    raise NonFiniteError(f"step {step}: the {record.get('split', 'train')} metric {bad[0]} is {record[bad[0]]}; "
                         f"metrics are kept finite -- the model or the data overflowed (rescale the data or lower "
                         f"--lr)")


def first_nonfinite(grads: dict):
    for k, g in grads.items():
        if not np.isfinite(g).all():
            return k
    return None


def gradient_flow(model: SequenceModel, task, step: int, clipped_steps: int) -> dict:
    """The diagnostics.jsonl record of the model at ``step`` (its schema in docs/guide.md): ||dL/dh_t|| for a
    loss at the last step and its first-to-last ratio, the spectral norm of each W_hh, and per layer and
    direction the gates' saturation and mean carry."""
    from rnnlab.study import diagnostics as diag
    model.eval()
    batch = diag.diagnostic_batch(task)
    g = diag.model_grad_norms(model, batch)
    x0 = diag.layer_inputs(model, batch.inputs)
    gates = {}
    for l, d, name in diag.directions(model.rnn):
        st = diag.gate_stats(model.rnn, x0, batch.lengths, l, d=d)
        if st:                                  # scalars only: one line per record stays short
            gates[name] = {**({"saturation": st["saturation"]} if "saturation" in st else {}),
                           **{k: float(np.mean(st[k])) for k in ("forget_mean", "update_carry", "carry_mean")
                              if k in st}}
    spectral = diag.spectral_norms(model.rnn)
    model.train()
    gh = g["grad_norm_h"]
    return {"step": step, "split": "diagnostics", "clipped_steps": clipped_steps,
            **{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in g.items()},
            "grad_ratio": float(gh[0] / gh[-1]) if gh[-1] > 0 else None, "spectral_norms": spectral,
            "gates": gates}
