"""Controlled comparisons: models on one task, same data and seed, matched parameter counts.

The seed's "LSTM vs GRU" chapter turned into measurements: final metric, parameters, time per training
and inference step, steps to reach a threshold, and the gradient flow of each model at initialisation and
after training (``rnnlab.study.diagnostics``, every layer and direction). An entry is a cell with any setting of its
model or training (``gru+reset=before``, ``lstm+lr=0.01``); the whole comparison fits a TOML file's
[compare] table (``compare_settings``); ``seeds`` > 1 repeats every entry over seeds, serially or on a process
pool (``seed_runs``), with mean, sd and a 95 % Student-t interval. Optionally the LSTM forget-bias ablation.

Length: a comparison's checks, its runs, its seeds and its summary read together.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import time
from pathlib import Path

import numpy as np

from rnnlab.study import diagnostics as diag
from rnnlab.engine.cells import CELLS, DIAGONAL
from rnnlab.engine.layers import LAYERS
from rnnlab.engine.options import LayerOptions, owner_names
from rnnlab.training.config import TrainConfig
from rnnlab.errors import ConfigError, RnnlabError, check_float, check_int
from rnnlab.engine.grad_mode import no_grad
from rnnlab.model.sequence_model import SequenceModel
from rnnlab.tasks import Batch, build_task
from rnnlab.training.trainer import model_config_for, train

LOWER_IS_BETTER = {"loss", "mse", "mae", "rmse", "mase", "bpc", "perplexity", "naive_mse"}


def count_parameters(cfg: TrainConfig, task, cell: str, hidden: int) -> int:
    """Parameters of the full model (embedding + recurrent stack + output layer) at this hidden size."""
    mcfg = model_config_for(cfg.for_model(model=cell, hidden_size=hidden), task)
    D, H, L = (2 if mcfg.bidirectional else 1), hidden, mcfg.num_layers
    P = mcfg.proj_size if cell == "lstm" and 0 < mcfg.proj_size < H else H          # h's size
    I0 = mcfg.embedding_dim if mcfg.input_mode == "embedding" else mcfg.input_size
    n = 0
    for layer in range(L):
        I = I0 if layer == 0 else D * P
        if cell in DIAGONAL:
            n += D * sum(int(np.prod(s)) for s in DIAGONAL[cell].param_shapes(I, H, True).values())
        else:
            G = CELLS[cell].G
            n += D * (G * (H * I + H * P + 2 * H) + (P * H if P != H else 0)
                      + (3 * H if cell == "lstm" and mcfg.peephole else 0)
                      + ((4 * G * H + (2 * H if cell == "lstm" else 0)) if mcfg.layer_norm else 0))
    n += mcfg.output_size * D * P + mcfg.output_size
    if mcfg.input_mode == "embedding":
        n += mcfg.input_size * mcfg.embedding_dim
    return n


def match_hidden_size(cfg: TrainConfig, task, cell: str, target: int) -> int:
    """The hidden size whose parameter count is closest to ``target``."""
    hi = 1
    while count_parameters(cfg, task, cell, hi) < target and hi < 1 << 16:
        hi *= 2                                     # the count grows with H: bracket, then search the bracket
    return min(range(max(1, hi // 2), hi + 1), key=lambda h: abs(count_parameters(cfg, task, cell, h) - target))


def default_threshold(task) -> tuple[str, float]:
    """The metric and value that count as 'solved' for the steps-to-threshold column."""
    if task.name == "adding":
        return "mse", 0.01
    if task.name == "copy":
        return "loss", task.baseline()[1] / 2
    if task.name == "selective_copy":
        return "recall_accuracy", 0.9
    if task.name == "chars":
        return "bpc", task.baseline()[1] * 0.75
    if task.name == "forecast":
        return "mae", task.baseline()[1]                  # better than the (seasonal-)naive forecast
    if getattr(task, "problem", None) == "regress":
        return "mse", task.baseline()[1]                  # better than predicting the mean (or the last value)
    return "accuracy", 0.9


def _reached(metric, value, threshold):
    return value <= threshold if metric in LOWER_IS_BETTER else value >= threshold


def gradient_report(model: SequenceModel, batch: Batch, jacobian_sequences=4) -> dict:
    """Every diagnostic for one model on one batch: ||dL/dh_t|| of the top layer (the loss's), and the Jacobian
    norms and gate statistics of every layer and direction ("layers", keyed "layer 0", "layer 0 reverse", ...;
    "jacobian_norm" and "gates" at the top are layer 0's forward direction)."""
    model.eval()
    g = diag.model_grad_norms(model, batch)
    x0 = diag.layer_inputs(model, batch.inputs)
    layers = {}
    for l, d, name in diag.directions(model.rnn):
        xl = x0 if l == 0 else diag.layer_inputs(model, batch.inputs, l)
        layers[name] = {"layer": l, "direction": d,
                        "jacobian_norm": diag.jacobian_norms(model.rnn, xl, l, jacobian_sequences, batch.lengths, d),
                        "gates": diag.gate_stats(model.rnn, x0, batch.lengths, l, d=d)}
    res = {"grad_norm_h": g["grad_norm_h"],
           "jacobian_norm": layers["layer 0"]["jacobian_norm"],
           "spectral_radius": diag.spectral_radius(model.rnn),
           "spectral_norms": diag.spectral_norms(model.rnn),
           "spectral": {k: {gate: v["spectral_radius"] for gate, v in blocks.items()}
                        for k, blocks in diag.spectral(model.rnn).items()},
           "gates": layers["layer 0"]["gates"], "layers": layers}
    if "grad_norm_c" in g:
        res["grad_norm_c"] = g["grad_norm_c"]
    model.train()
    return res


def _ms_per_step(step_seconds) -> float | None:
    """The median training step after the first two (the first compiles the kernels a run uses, the second
    may still touch fresh memory): the time a user's later steps take, compilation reported apart."""
    warm = step_seconds[2:] or step_seconds[1:] or step_seconds
    return 1e3 * statistics.median(warm) if warm else None


@no_grad()
def _time_inference(model, task, batch_size, repeats=5) -> float:
    b = task.train_batch(np.random.default_rng(123), batch_size, 0)
    model.eval()
    model(b.inputs, b.lengths)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(b.inputs, b.lengths)
        times.append(time.perf_counter() - t0)
    model.train()
    return statistics.median(times) * 1e3


# the settings a compare entry may give its model: any TrainConfig field that describes the model or its
# training ("gru+reset=before", "rnn+recurrent_init=orthogonal", "lstm+lr=0.01", "lstm+num_layers=2"); the task,
# data, budget, seed, evaluation and outputs stay the comparison's own, the same for every entry
_STRUCTURE = ("hidden_size", "num_layers", "dropout", "bidirectional")
_TRAINING = ("input_mode", "embedding_dim", "dtype", "batch_size", "tbptt", "bptt_segment", "backend", "optimizer",
             "lr", "momentum", "nesterov", "weight_decay", "clip", "clip_value", "schedule", "warmup", "lr_step_size",
             "lr_gamma", "min_lr", "on_nonfinite")
ENTRY_KEYS = _STRUCTURE + LayerOptions.names() + _TRAINING


def _check_entry_key(spec, key, cell):
    from rnnlab.errors import closest
    if key not in ENTRY_KEYS:
        if key in TrainConfig.fields():
            raise ConfigError(f"models: {spec!r}: {key} is not a setting of one model (the task, data, budget, seed, "
                              f"evaluation and outputs are the comparison's, the same for every entry); set it for "
                              f"the whole comparison (--{key.replace('_', '-')} or the TOML file's top level)")
        raise ConfigError(f"models: {spec!r}: unknown option {key!r}; expected some of {list(ENTRY_KEYS)}"
                          f"{closest(key, ENTRY_KEYS)}")
    owners = LayerOptions.owners().get(key)
    if owners and cell not in owners:               # only its own cells read it: elsewhere it would be ignored
        raise ConfigError(f"models: {spec!r}: {key} is an option of the {owner_names(owners)}, not of {cell!r}")


def parse_model(spec) -> tuple[str, dict]:
    """A compare entry ``cell[+option[=value]]...`` (or a TOML table {cell, options..., label}) -> (cell, the
    training options it sets). The label, if any, is left out: ``parse_entry`` returns it."""
    return parse_entry(spec)[1:]


def parse_entry(spec) -> tuple[str, str, dict]:
    """A compare entry -> (label, cell, the options it sets). A string ``cell+key=value+...`` (``+label=NAME``
    names it) or a table ``{cell = "gru", reset = "before", label = "reset before"}``; every value is read with
    TrainConfig's own field type."""
    from rnnlab.training.config import _coerce, parse_setting
    from rnnlab.errors import closest
    if isinstance(spec, dict):
        d = dict(spec)
        cell = d.pop("cell", None)
        label = d.pop("label", None)
        text = "+".join([str(cell)] + [f"{k}={v}" for k, v in d.items()])
        if not isinstance(cell, str):
            raise ConfigError(f"models: {d!r}: an entry table needs cell = one of {list(LAYERS)}, got {cell!r}")
        if cell not in LAYERS:
            raise ConfigError(f"models: {text!r}: expected a cell of {list(LAYERS)}, got {cell!r}{closest(cell, LAYERS)}")
        if label is not None and (not isinstance(label, str) or not label.strip()):
            raise ConfigError(f"models: {text!r}: label: expected a non-empty string, got {label!r}")
        over = {}
        for key, val in d.items():
            _check_entry_key(text, key, cell)
            over[key] = _coerce(key, val, TrainConfig.fields()[key], f"models: {text!r}")
        return (label.strip() if label else text), cell, over
    spec = str(spec).strip()
    cell, *opts = [p.strip() for p in spec.split("+")]
    if cell not in LAYERS:
        raise ConfigError(f"models: {spec!r}: expected a cell of {list(LAYERS)} first, got {cell!r}{closest(cell, LAYERS)}")
    over, label = {}, None
    for o in opts:
        key, eq, val = o.partition("=")
        key = key.strip().replace("-", "_")
        if key == "label":
            if not val.strip() or label is not None:
                raise ConfigError(f"models: {spec!r}: label: expected one '+label=NAME' with a name, got {o!r}")
            label = val.strip()
            continue
        _check_entry_key(spec, key, cell)
        if key in over:                             # the last one would silently win
            raise ConfigError(f"models: {spec!r}: option {key!r} given twice; give it once")
        over[key] = parse_setting(key, val, bool(eq), f"models: {spec!r}")
    return label or spec, cell, over


def check_entries(models, cfg: TrainConfig | None = None) -> list[tuple[str, str, dict]]:
    """The ``--models`` entries -> [(label, cell, options)], each parsed; an empty list, an entry given twice
    (also as the same cell and options written differently: results are keyed by entry, one would be lost) or
    two entries under one label is refused. With ``cfg``, an option at the comparison's own value makes no other
    model (``lstm+lr=0.001`` with lr 0.001 is the same model as ``lstm``)."""
    models = [m.strip() if isinstance(m, str) else m for m in models]
    if not models:
        raise ConfigError(f"models: expected some of {list(LAYERS)} (with +options), got none")
    specs, seen, labels = [], {}, set()
    for m in models:
        label, cell, over = parse_entry(m)
        key = (cell, tuple(sorted((k, v) for k, v in over.items()
                                  if cfg is None or getattr(cfg, k) != v)))
        same = seen.get(key)
        if same is not None:
            raise ConfigError(f"models: {label!r} is given twice" if same == label else
                              f"models: {label!r} is the same model as {same!r}; give it once")
        if label in labels:
            raise ConfigError(f"models: two entries are labelled {label!r}; give each its own label")
        seen[key] = label
        labels.add(label)
        specs.append((label, cell, over))
    return specs


def parse_threshold(text) -> tuple[str | None, float]:
    """``--threshold``: ``METRIC=VALUE`` (``mse=0.01``) or a bare VALUE of the task's default metric."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return None, check_threshold(text)
    metric, eq, value = str(text).partition("=")
    if not eq:
        metric, value = None, metric
    else:
        metric = metric.strip()
        if not metric:
            raise ConfigError(f"threshold: expected METRIC=VALUE (e.g. mse=0.01) or a number, got {text!r}")
    try:
        v = float(value)
    except ValueError:
        raise ConfigError(f"threshold: expected METRIC=VALUE (e.g. mse=0.01) or a number, got {text!r}") from None
    return metric, check_threshold(v)


def check_threshold(value, arg: str = "threshold") -> float:
    """A steps-to-threshold value: a finite number (NaN is never reached, infinity always or never)."""
    return check_float(arg, value)


def check_buildable(cfg: TrainConfig, task) -> None:
    """What building the trainer checks -- epochs against the task, the model against its task and cell, the
    backend, the optimizer -- without training or writing anything, so a compare entry or a sweep trial that
    cannot train is refused before any other one runs. Raises the trainer's own error."""
    from rnnlab.training.optim import make_optimizer
    from rnnlab.training.trainer import _check_mode, _epochs_to_steps         # the trainer's checks, not copies of them
    cfg = dataclasses.replace(cfg)                  # _epochs_to_steps sets steps on the copy
    _epochs_to_steps(cfg, task)
    mcfg = model_config_for(cfg, task)
    _check_mode(cfg, task, mcfg)
    SequenceModel(mcfg).rnn.set_backend(cfg.backend, cfg.bptt_segment or None)
    make_optimizer(cfg.optimizer, {}, cfg.lr, cfg.weight_decay, cfg.momentum, cfg.nesterov)


def _in_entry(label, fn, *args):
    """``fn(*args)``; an error names the entry first (``models: 'gru+zoneout=2': zoneout: ...``)."""
    try:
        return fn(*args)
    except RnnlabError as exc:
        if not isinstance(exc, ValueError):
            raise
        raise ConfigError(f"models: {label!r}: {exc}") from None


RUNNERS = ("serial", "pool", "ray")
# the [compare] table of a TOML file: everything that `rnnlab compare` takes besides the training keys
COMPARE_KEYS = ("entries", "match", "params", "seeds", "workers", "runner", "threshold", "forget_bias_ablation",
                "report", "diagnostics")
COMPARE_DEFAULTS = {"entries": ["rnn", "lstm", "gru"], "match": "params", "params": None, "seeds": 1,
                    "workers": None, "runner": None, "threshold": None, "forget_bias_ablation": False,
                    "report": "runs/compare", "diagnostics": None}


def compare_settings(table, flags: dict | None = None, source: str = "compare") -> dict:
    """The [compare] table of a TOML file <- the command line's flags (those given, not None) -> every setting
    of ``COMPARE_KEYS``, each checked by name (``compare.seeds: expected an integer >= 1, got 0``)."""
    from rnnlab.errors import check_choice, closest
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: expected a table ([compare]), got {table!r}")
    for k in table:
        if k not in COMPARE_KEYS:
            raise ConfigError(f"{source}: unknown key {k!r}{closest(k, COMPARE_KEYS)}; expected some of "
                              f"{list(COMPARE_KEYS)} (the training keys go at the file's top level)")
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    st = {**COMPARE_DEFAULTS, **table, **given}

    def name(k):
        return k if k in given else f"{source}.{k}"
    entries = st["entries"]
    if isinstance(entries, str):                    # --models a,b,c (or the same in the file)
        entries = [m.strip() for m in entries.split(",") if m.strip()]
    if not isinstance(entries, list) or not all(isinstance(e, (str, dict)) for e in entries):
        raise ConfigError(f"{name('entries')}: expected a list of entries (\"gru+reset=before\" or tables with "
                          f"cell = ...), got {entries!r}")
    st["entries"] = entries
    check_choice(name("match"), st["match"], ("params", "hidden"))
    if st["params"] is not None:
        check_int(name("params"), st["params"], 1)
    check_int(name("seeds"), st["seeds"], 1)
    if st["workers"] is not None:
        check_int(name("workers"), st["workers"], 1)
    if st["runner"] is not None:
        check_choice(name("runner"), st["runner"], RUNNERS)
    if not isinstance(st["forget_bias_ablation"], bool):
        raise ConfigError(f"{name('forget_bias_ablation')}: expected true or false, got {st['forget_bias_ablation']!r}")
    if not isinstance(st["report"], str) or not st["report"]:
        raise ConfigError(f"{name('report')}: expected a folder name, got {st['report']!r}")
    if st["diagnostics"] is not None:
        check_int(name("diagnostics"), st["diagnostics"], 0)
    thr = st["threshold"]
    if isinstance(thr, dict):                       # {metric = "mse", value = 0.01}
        unknown = [k for k in thr if k not in ("metric", "value")]
        if unknown or "value" not in thr:
            raise ConfigError(f"{name('threshold')}: expected {{metric = NAME, value = NUMBER}}, got {thr!r}")
        metric = thr.get("metric")
        if metric is not None and (not isinstance(metric, str) or not metric):
            raise ConfigError(f"{name('threshold')}.metric: expected a metric name such as 'mse', got {metric!r}")
        st["threshold"] = (metric, check_threshold(thr["value"], f"{name('threshold')}.value"))
    elif thr is not None:
        try:
            st["threshold"] = parse_threshold(thr)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("threshold:", f"{name('threshold')}:", 1)) from None
    return st


def check_runner(runner, seeds: int, workers) -> str:
    """``--runner`` with ``--seeds`` and ``--workers``: serial, or pool when workers > 1 is given; ray on request."""
    check_int("seeds", seeds, 1)
    if workers is not None:                         # None: the CPUs; 0 must not silently mean that too
        check_int("workers", workers, 1)
    if runner is None:
        runner = "pool" if workers is not None and workers > 1 else "serial"
    if runner not in RUNNERS:
        from rnnlab.errors import closest
        raise ConfigError(f"runner: expected one of {list(RUNNERS)}, got {runner!r}{closest(str(runner), RUNNERS)}")
    if runner == "serial" and workers is not None and workers > 1:
        raise ConfigError(f"workers: the serial runner trains one seed at a time, got workers {workers}; use "
                          f"runner 'pool' (or 'ray') or leave workers out")
    if workers is not None and seeds == 1:
        raise ConfigError(f"workers: only used with seeds > 1, got workers {workers}")
    if runner != "serial" and seeds == 1:
        raise ConfigError(f"runner: {runner!r} trains the seeds of seeds > 1, and seeds is 1; give seeds N > 1 "
                          f"or leave runner out")
    return runner


def compare(cfg: TrainConfig, models=tuple(CELLS), match: str = "params", target_params: int | None = None,
            forget_bias_ablation: bool = False, threshold: tuple | None = None, progress: bool = False,
            on_model=None, seeds: int = 1, runner: str | None = None, workers: int | None = None) -> dict:
    """Train each model with the same data and seed; return the numbers for tables, figures and JSON.

    ``threshold``: (metric or None for the task's default, value). ``seeds`` > 1: every entry also with seeds
    cfg.seed+1 .. cfg.seed+seeds-1 on the ``runner`` "serial" or "pool" (``workers`` processes), summarised
    in ``res["seeds"]`` (the Ray runner is the command line's: ``sweep.manifest_for``)."""
    # everything is checked before the first model trains: a bad last entry must not cost the others' training
    if match not in ("params", "hidden"):
        raise ConfigError(f"match: expected 'params' or 'hidden', got {match!r}")
    runner = check_runner(runner, seeds, workers)
    specs = check_entries(models, cfg)
    for m, cell, over in specs:
        ecfg = _in_entry(m, cfg.for_model(model=cell, **over).validate)
        check_applies_to_entry(m, ecfg, over)
    cfg = dataclasses.replace(cfg, out="").validate()
    if target_params is not None:
        check_int("params", target_params, 1)
    task = build_task(cfg)
    if target_params is None:
        target_params = count_parameters(cfg, task, "lstm", cfg.hidden_size)
    metric, thr = resolve_threshold(task, threshold)
    runs = []
    for m, cell, over in specs:
        vcfg = dataclasses.replace(cfg, **over)
        if "hidden_size" in over:                   # the entry's own size: not matched
            H = over["hidden_size"]
        else:
            H = match_hidden_size(vcfg, task, cell, target_params) if match == "params" else cfg.hidden_size
        runs.append((m, cell, {"model": cell, "hidden_size": H, **over}))
    own_size = {m for m, _, over in specs if "hidden_size" in over}
    if forget_bias_ablation:
        H = next((r[2]["hidden_size"] for r in runs if r[1] == "lstm" and len(r[2]) == 2), cfg.hidden_size)
        for fb in (0.0, 1.0):
            label = f"lstm (forget bias {fb:g})"
            if label in (r[0] for r in runs):
                raise ConfigError(f"models: an entry is labelled {label!r}, the name of a run of the forget-bias "
                                  f"ablation; label it otherwise")
            runs.append((label, "lstm", {"model": "lstm", "hidden_size": H, "forget_bias": fb}))
    for label, cell, over in runs:
        _in_entry(label, check_buildable, cfg.for_model(**over), task)
    out = {"task": task.name, "description": task.describe(), "baseline": task.baseline(),
           "threshold": {"metric": metric, "value": thr}, "match": match, "target_parameters": target_params,
           "config": cfg.to_dict(), "models": {}}
    batch = diag.diagnostic_batch(task)
    for label, cell, over in runs:
        rcfg = cfg.for_model(**over)
        init_model = _init_model(rcfg, task)
        init = gradient_report(init_model, batch)
        r = train(rcfg, progress=progress)
        vals = [rec for rec in r.records if rec["split"] == "val"]
        entry = {"cell": cell, "hidden_size": rcfg.hidden_size, "parameters": r.model.num_parameters(),
                 "config": over, "own_hidden_size": label in own_size,
                 "final": r.final, "steps_to_threshold": _first_reached(vals, metric, thr),
                 "ms_per_train_step": _ms_per_step(r.step_seconds),
                 "first_step_seconds": r.step_seconds[0] if r.step_seconds else None,
                 "ms_per_inference": _time_inference(r.model, task, rcfg.batch_size),
                 "seconds": r.seconds, "clipped_steps": r.clipped_steps,
                 "curve": {"step": [rec["step"] for rec in vals],
                           **{k: [rec.get(k) for rec in vals] for k in task.metrics}},
                 **gradient_report(r.model, batch), "init": init}
        if r.diagnostics:                           # diagnose_every: the records of diagnostics.jsonl
            entry["over_training"] = [_jsonable_record(rec) for rec in r.diagnostics]
        out["models"][label] = entry
        if on_model is not None:
            on_model(label, entry)
    if seeds > 1 and runner != "ray":
        out["seeds"] = seed_runs(cfg, out, seeds, runner, workers)
    return out


def resolve_threshold(task, threshold) -> tuple[str, float]:
    """(metric, value) for the steps-to-threshold column: the task's default, or the user's, whose metric must
    be one the task reports."""
    dm, dv = default_threshold(task)
    metric, thr = threshold if threshold is not None else (None, None)
    metric = metric or dm
    if metric not in task.metrics:
        raise ConfigError(f"threshold: expected a metric of task {task.name!r} {list(task.metrics)}, got {metric!r}")
    if thr is None:
        if metric != dm:
            raise ConfigError(f"threshold: give a value with metric {metric!r} ({metric}=VALUE); the task's default "
                              f"value, {dv:g}, is one of {dm!r}")
        thr = dv
    return metric, check_threshold(thr)


def check_applies_to_entry(label, ecfg: TrainConfig, over: dict) -> None:
    """What ``resolve`` refuses for a flag that the run would not use, for an entry's own settings: the
    schedule's settings without their schedule."""
    for k, sched in (("lr_step_size", "step"), ("lr_gamma", "step"), ("min_lr", "cosine")):
        if k in over and ecfg.schedule != sched:
            raise ConfigError(f"models: {label!r}: {k} is a setting of schedule {sched!r}, and the entry's schedule "
                              f"is {ecfg.schedule!r}; add +schedule={sched} or drop {k}")


def _first_reached(vals, metric, thr):
    return next((rec["step"] for rec in vals if metric in rec and _reached(metric, rec[metric], thr)), None)


def _jsonable_record(rec):
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in rec.items()}


# ------------------------------------------------------------------ seeds without Ray
def _seed_run(cfg_dict: dict, metric: str, thr: float) -> dict:
    """One (entry, seed): the final metrics and the validation curve. Module level, so a spawned process can
    run it; the config travels as a dict (TrainConfig.from_dict rebuilds and checks it there)."""
    cfg = TrainConfig.from_dict(cfg_dict)
    r = train(cfg, progress=False)
    vals = [rec for rec in r.records if rec["split"] == "val"]
    return {"final": r.final, "steps_to_threshold": _first_reached(vals, metric, thr),
            "curve": [(rec["step"], rec.get(metric)) for rec in vals], **_seed_diagnostics(cfg, r.model)}


def _init_model(cfg: TrainConfig, task) -> SequenceModel:
    """The model as a run of ``cfg`` starts it (its seed's initialisation): the gradient flow "at init"."""
    return SequenceModel(model_config_for(cfg, task), seed=np.random.default_rng([cfg.seed, 0]))


def _seed_diagnostics(cfg: TrainConfig, model: SequenceModel) -> dict:
    """The gradient flow of one seed's run on the task's diagnostic batch, as the first seed's is measured:
    ||dL/dh_t|| at initialisation and after training, and the exact Jacobian norms of layer 0 (forward)."""
    task = build_task(cfg)
    batch = diag.diagnostic_batch(task)
    init = _init_model(cfg, task)
    out = {}
    for key, m in (("grad_norm_h", model), ("init_grad_norm_h", init)):
        m.eval()
        out[key] = np.asarray(diag.model_grad_norms(m, batch)["grad_norm_h"]).tolist()
        m.train()
    model.eval()
    out["jacobian_norm"] = np.asarray(diag.jacobian_norms(model.rnn, diag.layer_inputs(model, batch.inputs), 0, 4,
                                                          batch.lengths)).tolist()
    model.train()
    return out


def seed_runs(cfg: TrainConfig, res: dict, seeds: int, runner: str = "serial", workers: int | None = None) -> dict:
    """Every entry of a compare result again with seeds cfg.seed+1 .. cfg.seed+seeds-1, serially or on a pool of
    ``workers`` processes (the standard library's, started by spawn: a fresh interpreter each, no inherited
    threads or locks); seed cfg.seed is the run already in ``res``. The same seeds give the same numbers on
    either runner: each run is the trainer's, seeded by its config alone. Returns the summary in the shape of
    ``sweep.summarize``'s (rows with mean, sd, 95 % Student-t interval; curves with mean, sd, min, max)."""
    metric, thr = res["threshold"]["metric"], res["threshold"]["value"]
    jobs = []
    for label, e in res["models"].items():
        for s in range(1, seeds):
            d = {**cfg.for_model(**e["config"]).to_dict(), "seed": cfg.seed + s, "quiet": True, "out": "",
                 "diagnose_every": 0}                # the diagnostics are the first seed's
            jobs.append((label, d))
    if runner == "pool":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1,
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_seed_run, d, metric, thr) for _, d in jobs]
            done = [f.result() for f in futures]
    else:
        done = [_seed_run(d, metric, thr) for _, d in jobs]
    per = {label: [{"final": e["final"], "steps_to_threshold": e["steps_to_threshold"],
                    "curve": list(zip(e["curve"]["step"], e["curve"].get(metric, []))),
                    "grad_norm_h": e["grad_norm_h"], "init_grad_norm_h": e["init"]["grad_norm_h"],
                    "jacobian_norm": e["jacobian_norm"]}]
           for label, e in res["models"].items()}
    for (label, _), r in zip(jobs, done):
        per[label].append(r)
    return summarize_seeds(per, metric, thr, runner, cfg.seed)


def summarize_seeds(per: dict, metric: str, thr: float, runner: str, seed0: int) -> dict:
    """{label: [one run per seed]} -> the rows and curves of ``sweep.summarize``, for ``sweep.table``."""
    from rnnlab.study.seeds import interval as _interval
    rows, curves = [], {}
    for c, (label, runs) in enumerate(per.items()):
        finals = [r["final"].get(metric) for r in runs]
        finals = [float(v) for v in finals if v is not None]
        if not finals:
            continue
        mean, sd, ci = _interval(finals)
        hits = [r["steps_to_threshold"] for r in runs if r["steps_to_threshold"] is not None]
        rows.append({"config": c, "label": label, "seeds": len(finals), "finished": len(finals), "mean": mean,
                     "sd": sd, "ci95": ci, "reached": len(hits),
                     "steps_to_threshold": float(np.median(hits)) if hits else None, "values": finals})
        at = {}
        for r in runs:
            for step, v in r["curve"]:
                if v is not None:
                    at.setdefault(step, []).append(float(v))
        curves[label] = [[step, float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                          float(np.min(v)), float(np.max(v)), _interval(v)[2] if len(v) > 1 else 0.0]
                         for step, v in sorted(at.items())]          # step mean sd min max ci95
    bands = {}
    for label, runs in per.items():                 # the gradient flow over seeds (runs that measured it)
        if all("grad_norm_h" in r for r in runs) and len(runs) > 1:
            bands[label] = {k: _band(r[k] for r in runs) for k in ("grad_norm_h", "init_grad_norm_h", "jacobian_norm")}
            for key, out in (("grad_norm_h", "grad_ratio"), ("init_grad_norm_h", "init_grad_ratio")):
                bands[label][out] = ratio_band([float(g[0] / g[-1]) if g[-1] > 0 else float("nan")
                                                for g in (np.asarray(r[key], float) for r in runs)])
    return {"metric": metric, "mode": "min" if metric in LOWER_IS_BETTER else "max", "threshold": thr,
            "rows": rows, "curves": curves, "runner": runner, "seeds": [seed0 + s for s in range(len(next(
                iter(per.values()))))], "stopped_by_scheduler": [], "gradient_bands": bands}


_TINY = 1e-300                          # a norm of exactly 0 on the log scale


def ratio_band(ratios: list) -> dict:
    """A gradient ratio over seeds: the geometric mean and 95 % Student-t interval of the seeds whose ratio is a
    number > 0 (on a log scale: norms span orders of magnitude); a ratio that underflowed to 0 has no logarithm
    and is counted apart ("zero"), as is one that is undefined (NaN), not clamped into the interval."""
    from rnnlab.study.seeds import interval as _interval
    pos = [v for v in ratios if np.isfinite(v) and v > 0]
    mean, _, ci = _interval(np.log10(pos)) if pos else (float("nan"),) * 3
    return {"geomean": 10 ** mean, "lo": 10 ** (mean - ci), "hi": 10 ** (mean + ci), "values": ratios,
            "zero": sum(v == 0 for v in ratios), "undefined": sum(not np.isfinite(v) for v in ratios)}


def _band(curves) -> dict:
    """Norms per step t of each seed, each relative to its own value at the last step (as the figures plot
    them), reversed to distance from the loss -> {"mean", "lo", "hi"} over seeds: the geometric mean and the
    95 % Student-t interval of the log10 norms (norms span orders of magnitude; an interval of the values
    themselves would reach below zero)."""
    from rnnlab.study.seeds import interval as _interval
    rel = []
    for g in curves:
        g = np.asarray(g, float)
        rel.append(g[::-1] / (g[-1] if g[-1] > 0 else 1.0))
    logs = np.log10(np.maximum(np.array(rel), _TINY))                    # (seeds, T)
    stats = [_interval(logs[:, i]) for i in range(logs.shape[1])]
    mean = np.array([s[0] for s in stats])
    ci = np.array([s[2] for s in stats])
    return {"mean": (10 ** mean).tolist(), "lo": (10 ** (mean - ci)).tolist(), "hi": (10 ** (mean + ci)).tolist()}


def differing_settings(res: dict) -> list[str]:
    """The settings (other than the cell and the hidden size, which have columns) whose value is not the same
    for every entry: the columns that say what the comparison varies."""
    base = res["config"]
    keys = sorted({k for e in res["models"].values() for k in e["config"]} - {"model", "hidden_size"})
    return [k for k in keys if len({repr(e["config"].get(k, base.get(k))) for e in res["models"].values()}) > 1]


def _setting(key: str, e: dict, res: dict):
    """An entry's value of a varied setting; "-" for an option of other cells (the entry's cell has none)."""
    owners = LayerOptions.owners().get(key)
    if owners and e["cell"] not in owners:
        return "-"
    return e["config"].get(key, res["config"].get(key))


def summary_rows(res: dict) -> list[dict]:
    metric = res["threshold"]["metric"]
    varied = differing_settings(res)
    seeds = {r["label"]: r for r in res.get("seeds", {}).get("rows", [])}
    rows = []
    for label, e in res["models"].items():
        g0, gi = e["grad_norm_h"], e["init"]["grad_norm_h"]
        row = {"model": label, "cell": e["cell"], "hidden": e["hidden_size"], "params": e["parameters"],
               **{k: _setting(k, e, res) for k in varied},
               f"val {metric}": e["final"].get(metric), "steps to threshold": e["steps_to_threshold"],
               "ms/train step": e["ms_per_train_step"], "ms/inference": e["ms_per_inference"],
               "first step s": e.get("first_step_seconds"),
               "grad ratio init": float(gi[0] / gi[-1]) if gi[-1] > 0 else None,
               "grad ratio trained": float(g0[0] / g0[-1]) if g0[-1] > 0 else None}
        sr = seeds.get(label)
        if sr is not None:                          # over seeds: mean, sd and the 95 % Student-t interval
            row.update({"mean": sr["mean"], "sd": sr["sd"],
                        "ci95": f"[{sr['mean'] - sr['ci95']:.4g}, {sr['mean'] + sr['ci95']:.4g}]"})
        for key, col in (("grad_ratio", "grad ratio trained"), ("init_grad_ratio", "grad ratio init")):
            gr = res.get("seeds", {}).get("gradient_bands", {}).get(label, {}).get(key)
            if gr is not None:                      # over seeds: geometric mean, 95 % interval
                row[col] = _ratio_text(gr)
        rows.append(row)
    return rows


def _ratio_text(gr: dict) -> str:
    """A gradient ratio over seeds: the geometric mean and 95 % interval of the seeds where it is a number > 0,
    and how many seeds it underflowed to 0 in (or was undefined in), said rather than folded into the interval."""
    n = len(gr["values"])
    zero, undefined = gr.get("zero", 0), gr.get("undefined", 0)
    left = n - zero - undefined
    apart = "; ".join(t for t in (f"{zero} of {n} seeds 0 (underflow)" if zero else "",
                                   f"{undefined} of {n} undefined" if undefined else "") if t)
    if left == 0:
        return apart
    text = (f"{gr['geomean']:.3g} [{gr['lo']:.3g}, {gr['hi']:.3g}]" if np.isfinite(gr["lo"])
            else f"{gr['geomean']:.3g}")
    return f"{text}{f' over {left} seeds; ' + apart if apart else ''}"


def summary_columns(res: dict) -> list[tuple[str, str]]:
    metric = res["threshold"]["metric"]
    named = any(not label.startswith(e["cell"]) for label, e in res["models"].items())
    cols = [("model", "model")] + ([("cell", "cell")] if named else []) + [("hidden", "hidden"), ("params", "params")]
    cols += [(k, k) for k in differing_settings(res)]
    cols.append((f"val {metric}", f"val {metric}" + (f" (seed {res['config'].get('seed', 0)})"
                                                     if res.get("seeds") else "")))
    if res.get("seeds", {}).get("rows"):
        n = res["seeds"]["rows"][0]["seeds"]
        cols += [("mean", f"mean ({n} seeds)"), ("sd", "sd"), ("ci95", "95 % interval")]
    return cols + [("steps to threshold", "steps to threshold"), ("ms/train step", "ms/train step"),
                   ("ms/inference", "ms/inference"), ("first step s", "1st step s (compiles)"),
                   ("grad ratio init", "grad h_0/h_T init"),
                   ("grad ratio trained", "grad h_0/h_T trained")]


def write_compare_report(res: dict, out_dir) -> dict:
    """Figures (PNG + SVG), summary.md, report.html and compare.json in ``out_dir``."""
    from rnnlab.study import report
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    metric = res["threshold"]["metric"]
    sd = res.get("seeds")
    figs = {}
    if sd and sd.get("curves") and all(len(p) == 6 for pts in sd["curves"].values() for p in pts):
        figs["learning"] = report.plot_seed_curves(sd["curves"], metric, fig_dir, "learning_curves",
                                                   baseline=res["baseline"])
    else:
        curves = {k: (e["curve"]["step"], e["curve"].get(metric, [])) for k, e in res["models"].items()}
        figs["learning"] = report.plot_learning_curves(curves, metric, fig_dir, baseline=res["baseline"])
    series = {}
    for k, e in res["models"].items():
        series[f"{k} (init)"] = e["init"]["grad_norm_h"]
        series[f"{k} (trained)"] = e["grad_norm_h"]
    bands = (sd or {}).get("gradient_bands") or {}
    banded = bool(bands) and set(bands) == set(res["models"])
    if banded:                                      # over seeds: mean and 95 % interval of every seed's curve
        n_seeds = len(sd["seeds"])
        figs["grad"] = report.plot_grad_norms(
            {f"{k} ({w})": bands[k][key] for k in res["models"] for w, key in (("init", "init_grad_norm_h"),
                                                                                ("trained", "grad_norm_h"))},
            fig_dir, "grad_norms", f"Gradient norm vs distance from the loss (top layer), {n_seeds} seeds: "
            "geometric mean, band 95 %", r"$\|\partial L/\partial h_t\|$ (relative to the last step)")
    else:
        figs["grad"] = report.plot_grad_norms(series, fig_dir, title="Gradient norm vs distance from the loss "
                                              "(top layer, forward direction)")
    names = list(dict.fromkeys(n for e in res["models"].values() for n in e.get("layers", {"layer 0": None})))
    jac_figs, gate_figs = [], []
    for n_i, name in enumerate(names):
        where = name.replace("reverse", "(reverse direction)") if "reverse" in name else f"{name} (forward direction)"
        jac, gates = {}, {}
        for k, e in res["models"].items():
            for when, src in (("trained", e), ("init", e["init"])):
                lay = src.get("layers", {}).get(name) or ({"jacobian_norm": src["jacobian_norm"], "gates": src["gates"]}
                                                          if name == "layer 0" else None)
                if lay is None:
                    continue
                jac[f"{k} ({when})"] = lay["jacobian_norm"]
                if lay["gates"]:
                    gates[f"{k} ({when})"] = lay["gates"]
        stem = "jacobian_norms" if n_i == 0 else f"jacobian_norms_{name.replace(' ', '_')}"
        jac_figs.append(report.plot_grad_norms(jac, fig_dir, stem, f"Exact Jacobian norm ||dh_T/ds_t||_2, {where}",
                                               r"$\|\partial h_T/\partial s_t\|_2$"))
        if n_i == 0 and banded:                     # layer 0 over seeds too (the trained models')
            jac_figs.insert(0, report.plot_grad_norms(
                {f"{k} (trained)": bands[k]["jacobian_norm"] for k in res["models"]}, fig_dir, "jacobian_norms_seeds",
                f"Exact Jacobian norm ||dh_T/ds_t||_2, {where}, {len(sd['seeds'])} seeds: geometric mean, band 95 %",
                r"$\|\partial h_T/\partial s_t\|_2$ (relative to the last step)"))
        if gates:
            gate_figs.append(report.plot_gate_stats(gates, fig_dir, "gates" if n_i == 0 else
                                                    f"gates_{name.replace(' ', '_')}", title=where))
    rows = summary_rows(res)
    table = report.markdown_table(rows, summary_columns(res))
    base = res["baseline"]
    varied = differing_settings(res)
    intro = (f"{res['description']}. Same data and seed for every model; hidden sizes "
             f"{'matched to ' + str(res['target_parameters']) + ' parameters' if res['match'] == 'params' else 'equal'}"
             f"{' (except where an entry sets its own)' if any(e.get('own_hidden_size') for e in res['models'].values()) else ''}. "
             + (f"The entries differ in: {', '.join(varied)} (columns). " if varied else "")
             + f"Threshold: {metric} {'<=' if metric in LOWER_IS_BETTER else '>='} {res['threshold']['value']:.4g}."
             + (f" Baseline: {base[0]} {base[1]:.4g}." if base else ""))
    if sd and sd.get("rows"):
        intro += (f" Over {sd['rows'][0]['seeds']} seeds: mean, sd and 95 % Student-t interval of the final "
                  f"validation {metric}; the learning curves show the mean and its 95 % interval as a band.")
    grad_text = ("Norm of dL/dh_t of the top layer (forward direction) for a loss at the last step, relative to its "
                 "value at the last step, against the distance from the loss (dashed: at initialisation; solid: "
                 "after training). A curve that falls geometrically is the vanishing gradient of the seed's "
                 "eigenvalue argument; the exact Jacobian norms below show the same through the recurrence alone, "
                 f"for every layer and direction ({', '.join(names)}; a reverse direction in its own order, from "
                 "the last valid step back to t = 0).")
    if sd and sd.get("rows") and banded:
        grad_text += (f" Over {len(sd['seeds'])} seeds: the top layer's gradient norms (at initialisation and trained) "
                      "and layer 0's trained Jacobian norms are the geometric mean of every seed's curve (each "
                      "relative to its own last step) with a band of its 95 % Student-t interval on the log scale, "
                      "and the table's gradient ratios are geometric means with that interval; the other layers' "
                      f"figures, the gates, the speed columns and "
                      f"steps to threshold are seed {res['config'].get('seed', 0)}'s run.")
    elif sd and sd.get("rows"):
        grad_text += (f" These diagnostics, the speed columns and steps to threshold are those of seed "
                      f"{res['config'].get('seed', 0)}'s run (the Ray runner's trials measure no gradients); the seeds' "
                      f"spread is in the table and the learning curves.")
    sections = [("Results", intro + "\n\n" + table, [figs["learning"]])]
    if sd and sd.get("rows"):
        from rnnlab.study.seeds import table as seeds_table
        seed_figs = [{"png": out_dir / "seeds" / "curves.png"}] if sd.get("runner", "ray") == "ray" else []
        where = ("(the trials' run folders are in seeds/trials, on Ray)" if sd.get("runner", "ray") == "ray"
                 else f"({sd['runner']} runner, seeds {sd['seeds'][0]} .. {sd['seeds'][-1]})")
        sections.append((f"Over {sd['rows'][0]['seeds']} seeds", "Each entry trained again with consecutive seeds "
                         f"{where}: the final validation metric's mean, standard deviation and 95 % Student-t "
                         "interval, and how many seeds reached the threshold.\n\n" + seeds_table(sd), seed_figs))
    sections.append(("Gradient flow", grad_text, [figs["grad"]] + jac_figs))
    if gate_figs:
        sections.append(("Gates", "Per layer and direction (titles). LSTM: the product of forget gates over k steps "
                         "scales the cell-path gradient over k steps; GRU: the update gate z is the share of h_{t-1} "
                         "carried to h_t.", gate_figs))
    over = {k: e["over_training"] for k, e in res["models"].items() if e.get("over_training")}
    if over:
        figs["over"] = report.plot_over_training(over, fig_dir)
        sections.append(("Over training", "The records of diagnostics.jsonl (diagnose_every) of each entry's run: "
                         "the ratio ||dL/dh_0|| / ||dL/dh_T|| of the top layer, the spectral norm of each W_hh and the "
                         "saturation of each gate per layer and direction, at every record's step.", [figs["over"]]))
    paths = report.write_report(out_dir, f"rnnlab compare: {res['task']}", sections)
    report.write_json(out_dir / "compare.json", res)
    paths["json"] = out_dir / "compare.json"
    paths["figures"] = fig_dir
    return paths
