"""One lab run in its own process: the trainer, a control hook, and the measurements sent to the page.

The process is started with multiprocessing's spawn (a fresh interpreter: no state shared with the server's
event loop). It reads commands from one queue and puts events on another:

    commands   {"op": "pause" | "resume" | "step" | "stop"}, {"op": "change", "lr": .., "clip": ..}
    events     {"type": "record", ...}        every metrics.jsonl record (train and val)
               {"type": "measure", ...}       ``measure`` of the model before step ``step``
               {"type": "change", ...}        a change as journalled in changes.jsonl
               {"type": "state", "state": "running" | "paused" | "done" | "error", "step": .., "message": ..}
"""
from __future__ import annotations

import queue
import time

import numpy as np

CARRY_GATE = {"lstm": "f", "gru": "z", "mingru": "z", "minlstm": "f"}   # the gate that carries the old state


def _floats(a) -> list:
    """A JSON list: NaN and infinities (an underflowed or unmeasured norm) as null."""
    a = np.asarray(a, dtype=np.float64)
    return [float(v) if np.isfinite(v) else None for v in a.ravel()]


def measure(model, task, sequences: int = 8) -> dict:
    """What the page draws of the model as it is now, on the first validation sequences: ||dL/dh_t||, the
    Jacobian norms ||dh_T/dh_t||, the singular values of each W_hh gate block, the carry gate's quantiles per
    unit (LSTM f, GRU z), and the products of forget gates (or diagonal carries) over spans of k steps."""
    from rnnlab.study import diagnostics as diag
    from rnnlab.study.compare import gradient_report
    from rnnlab.engine.grad_mode import enable_grad
    batch = diag.diagnostic_batch(task, sequences)
    rep = gradient_report(model, batch, jacobian_sequences=min(4, sequences))
    out = {"grad_norm_h": _floats(rep["grad_norm_h"]), "jacobian_norm": _floats(rep["jacobian_norm"]),
           "spectral_norms": rep["spectral_norms"]}
    rnn = model.rnn
    out["singular_values"] = {gate: _floats(v["singular_values"])
                              for gate, v in next(iter(diag.spectral(rnn).values()), {}).items()}
    gates = rep["gates"]
    product = gates.get("forget_product", gates.get("carry_product"))
    if product is not None:
        out["carry_product"] = _floats(product)
    name = CARRY_GATE.get(rnn.cell_name)
    if name is not None:
        x0 = diag.layer_inputs(model, batch.inputs)
        was = rnn.training
        rnn.eval()
        with enable_grad():                         # the gates are read from the forward's cache
            rnn(x0, lengths=batch.lengths)
        rnn.train(was)
        g = rnn.gates(0, 0)[name]                                           # (T, B, H)
        q = np.quantile(g.reshape(-1, g.shape[-1]), [0.1, 0.5, 0.9], axis=0)  # (3, H)
        order = np.argsort(q[1])                    # units sorted by their median: the shape of the distribution
        out["gate"] = {"name": name, "p10": _floats(q[0, order]), "p50": _floats(q[1, order]),
                       "p90": _floats(q[2, order])}
    model.train()
    return out


def run(settings: dict, commands, events, measure_every: int, paused: bool = False) -> None:
    """Train the run ``settings`` (a TrainConfig's dict, already checked), obeying ``commands``."""
    import signal
    import warnings
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C at the server: it stops the run, which is then saved
    warnings.simplefilter("ignore", RuntimeWarning)  # overflow in a diverging run: the trainer reports NaN itself
    from rnnlab.training.config import TrainConfig
    from rnnlab.training.trainer import train

    st = {"paused": paused, "once": False, "stop": False, "said": None, "measured": -1}

    def emit(kind, **kw):
        events.put({"type": kind, "time": time.time(), **kw})   # the time sent: the page's latency is measurable

    def say(state, step):
        key = (state, step) if state != "running" else state      # "running" once, not at every step
        if st["said"] != key:
            st["said"] = key
            emit("state", state=state, step=step)

    def apply(cmd, tr):
        op = cmd.get("op")
        if op == "pause":
            st["paused"] = True
        elif op == "resume":
            st["paused"], st["once"] = False, False
        elif op == "step":
            st["paused"], st["once"] = True, True
        elif op == "stop":
            st["stop"] = True
        elif op == "change":
            try:
                rec = tr.change(**{k: cmd[k] for k in ("lr", "clip") if k in cmd})
                emit("change", **rec)
            except Exception as exc:                # checked by the server already; said, never fatal
                emit("state", state="warning", step=tr.step, message=str(exc))

    def control(tr):
        st["trainer"] = tr
        if tr.step % measure_every == 0 and st["measured"] != tr.step:
            st["measured"] = tr.step
            emit("measure", step=tr.step, **measure(tr.model, tr.task))
        while True:
            block = st["paused"] and not st["once"] and not st["stop"]
            if block:
                say("paused", tr.step)
            try:
                cmd = commands.get() if block else commands.get_nowait()
            except queue.Empty:
                cmd = None
            if cmd is not None:                     # every pending command first, then decide
                apply(cmd, tr)
                continue
            if st["stop"]:
                return False
            if st["once"]:
                st["once"] = False
                say("stepping", tr.step)
                return True
            say("running", tr.step)
            return True

    cfg = TrainConfig.from_dict(settings)
    try:
        r = train(cfg, on_record=lambda rec: emit("record", **rec), control=control)
        step = st["trainer"].step if "trainer" in st else r.steps_run
        if st["measured"] != step:
            emit("measure", step=step, **measure(r.model, r.task))
        emit("state", state="done", step=step, final=r.final, warnings=r.warnings)
    except Exception as exc:                        # said on the page in one line; the folder keeps what was saved
        msg = " ".join(str(exc).split()) or type(exc).__name__
        emit("state", state="error", step=None, message=msg)
