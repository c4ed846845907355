"""Controlled comparisons: RNN, LSTM and GRU on one task, same data and seed, matched parameter counts.

The seed's "LSTM vs GRU" chapter turned into measurements: final metric, parameters, time per training
and inference step, steps to reach a threshold, and the gradient flow of each model at initialisation and
after training (``rnnlab.diagnostics``). Optionally the LSTM forget-bias ablation (bias 0 vs 1).
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np

from . import diagnostics as diag
from .cells import CELLS, DIAGONAL
from .layers import LAYERS
from .config import TrainConfig
from .errors import ConfigError, RnnlabError, check_float, check_int
from .grad_mode import no_grad
from .model import SequenceModel
from .tasks import Batch, build_task
from .trainer import model_config_for, train

LOWER_IS_BETTER = {"loss", "mse", "mae", "bpc", "perplexity", "naive_mse"}


def count_parameters(cfg: TrainConfig, task, cell: str, hidden: int) -> int:
    """Parameters of the full model (embedding + recurrent stack + output layer) at this hidden size."""
    mcfg = model_config_for(dataclasses.replace(cfg, model=cell, hidden_size=hidden), task)
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
    if task.name == "forecast" or getattr(task, "problem", None) == "regress":
        return "mse", task.baseline()[1]                  # better than predicting the mean (or the last value)
    return "accuracy", 0.9


def _reached(metric, value, threshold):
    return value <= threshold if metric in LOWER_IS_BETTER else value >= threshold


def gradient_report(model: SequenceModel, batch: Batch, jacobian_sequences=4) -> dict:
    """Every diagnostic for one model on one batch (layer 0 for the Jacobian and the gates)."""
    model.eval()
    g = diag.model_grad_norms(model, batch)
    x0 = diag.layer_inputs(model, batch.inputs)
    res = {"grad_norm_h": g["grad_norm_h"],
           "jacobian_norm": diag.jacobian_norms(model.rnn, x0, 0, jacobian_sequences, batch.lengths),
           "spectral_radius": diag.spectral_radius(model.rnn),
           "spectral": {k: {gate: v["spectral_radius"] for gate, v in blocks.items()}
                        for k, blocks in diag.spectral(model.rnn).items()},
           "gates": diag.gate_stats(model.rnn, x0, batch.lengths)}
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


# the options a compare entry may add to its cell: "lstm+layer_norm", "gru+zoneout=0.1", "lstm+proj_size=32"
VARIANT_OPTIONS = ("layer_norm", "peephole", "proj_size", "input_dropout", "recurrent_dropout", "zoneout",
                   "zoneout_cell", "forget_bias")


def parse_model(spec: str) -> tuple[str, dict]:
    """A compare entry ``cell[+option[=value]]...`` -> (cell, the training options it sets)."""
    from .errors import closest
    cell, *opts = [p.strip() for p in str(spec).split("+")]
    if cell not in LAYERS:
        raise ConfigError(f"models: {spec!r}: expected a cell of {list(LAYERS)} first, got {cell!r}{closest(cell, LAYERS)}")
    over = {}
    for o in opts:
        key, eq, val = o.partition("=")
        key = key.strip().replace("-", "_")
        if key not in VARIANT_OPTIONS:
            raise ConfigError(f"models: {spec!r}: unknown option {key!r}; expected some of {list(VARIANT_OPTIONS)}"
                              f"{closest(key, VARIANT_OPTIONS)}")
        if key in over:                             # the last one would silently win
            raise ConfigError(f"models: {spec!r}: option {key!r} given twice; give it once")
        if key == "forget_bias" and cell != "lstm":     # only the LSTM has a forget gate: it would be ignored
            raise ConfigError(f"models: {spec!r}: forget_bias is an option of the LSTM, not of {cell!r}")
        if key in ("layer_norm", "peephole"):
            if eq:
                raise ConfigError(f"models: {spec!r}: {key} is a switch; write '+{key}' without a value")
            over[key] = True
        else:
            try:
                over[key] = int(val) if key == "proj_size" else float(val)
            except ValueError:
                raise ConfigError(f"models: {spec!r}: {key} needs a number, as '+{key}=0.1', got {val!r}") from None
    return cell, over


def check_entries(models) -> list[tuple[str, str, dict]]:
    """The ``--models`` entries -> [(entry, cell, options)], each parsed; an empty list or an entry given twice
    (also as the same cell and options written differently: results are keyed by entry, one would be lost)
    is refused."""
    models = [str(m).strip() for m in models]
    if not models:
        raise ConfigError(f"models: expected some of {list(LAYERS)} (with +options), got none")
    specs, seen = [], {}
    for m in models:
        cell, over = parse_model(m)
        same = seen.get((cell, tuple(sorted(over.items()))))
        if same is not None:
            raise ConfigError(f"models: {m!r} is given twice" if same == m else
                              f"models: {m!r} is the same model as {same!r}; give it once")
        seen[(cell, tuple(sorted(over.items())))] = m
        specs.append((m, cell, over))
    return specs


def check_threshold(value, arg: str = "threshold") -> float:
    """A steps-to-threshold value: a finite number (NaN is never reached, infinity always or never)."""
    return check_float(arg, value)


def check_buildable(cfg: TrainConfig, task) -> None:
    """What building the trainer checks -- epochs against the task, the model against its task and cell, the
    backend, the optimizer -- without training or writing anything, so a compare entry or a sweep trial that
    cannot train is refused before any other one runs. Raises the trainer's own error."""
    from .optim import make_optimizer
    from .trainer import _check_mode, _epochs_to_steps         # the trainer's checks, not copies of them
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


def compare(cfg: TrainConfig, models=tuple(CELLS), match: str = "params", target_params: int | None = None,
            forget_bias_ablation: bool = False, threshold: tuple | None = None, progress: bool = False,
            on_model=None) -> dict:
    """Train each model with the same data and seed; return the numbers for tables, figures and JSON."""
    # everything is checked before the first model trains: a bad last entry must not cost the others' training
    if match not in ("params", "hidden"):
        raise ConfigError(f"match: expected 'params' or 'hidden', got {match!r}")
    specs = check_entries(models)
    for m, cell, over in specs:
        _in_entry(m, dataclasses.replace(cfg, model=cell, **over).validate)
    cfg = dataclasses.replace(cfg, out="").validate()
    if target_params is not None:
        check_int("params", target_params, 1)
    task = build_task(cfg)
    if target_params is None:
        target_params = count_parameters(cfg, task, "lstm", cfg.hidden_size)
    metric, thr = threshold or default_threshold(task)
    if metric not in task.metrics:
        raise ConfigError(f"threshold: expected a metric of task {task.name!r} {list(task.metrics)}, got {metric!r}")
    thr = check_threshold(thr)
    runs = []
    for m, cell, over in specs:
        vcfg = dataclasses.replace(cfg, **over)
        H = match_hidden_size(vcfg, task, cell, target_params) if match == "params" else cfg.hidden_size
        runs.append((m, cell, {"model": cell, "hidden_size": H, **over}))
    if forget_bias_ablation:
        H = next((r[2]["hidden_size"] for r in runs if r[0] == "lstm"), cfg.hidden_size)
        for fb in (0.0, 1.0):
            runs.append((f"lstm (forget bias {fb:g})", "lstm", {"model": "lstm", "hidden_size": H, "forget_bias": fb}))
    for label, cell, over in runs:
        _in_entry(label, check_buildable, dataclasses.replace(cfg, **over), task)
    out = {"task": task.name, "description": task.describe(), "baseline": task.baseline(),
           "threshold": {"metric": metric, "value": thr}, "match": match, "target_parameters": target_params,
           "config": cfg.to_dict(), "models": {}}
    batch = diag.diagnostic_batch(task)
    for label, cell, over in runs:
        rcfg = dataclasses.replace(cfg, **over)
        init_model = SequenceModel(model_config_for(rcfg, task), seed=np.random.default_rng([rcfg.seed, 0]))
        init = gradient_report(init_model, batch)
        r = train(rcfg, progress=progress)
        vals = [rec for rec in r.records if rec["split"] == "val"]
        reached = next((rec["step"] for rec in vals if metric in rec and _reached(metric, rec[metric], thr)), None)
        entry = {"cell": cell, "hidden_size": rcfg.hidden_size, "parameters": r.model.num_parameters(),
                 "config": over,
                 "final": r.final, "steps_to_threshold": reached,
                 "ms_per_train_step": _ms_per_step(r.step_seconds),
                 "first_step_seconds": r.step_seconds[0] if r.step_seconds else None,
                 "ms_per_inference": _time_inference(r.model, task, cfg.batch_size),
                 "seconds": r.seconds, "clipped_steps": r.clipped_steps,
                 "curve": {"step": [rec["step"] for rec in vals],
                           **{k: [rec.get(k) for rec in vals] for k in task.metrics}},
                 **gradient_report(r.model, batch), "init": init}
        out["models"][label] = entry
        if on_model is not None:
            on_model(label, entry)
    return out


def summary_rows(res: dict) -> list[dict]:
    metric = res["threshold"]["metric"]
    rows = []
    for label, e in res["models"].items():
        g0, gi = e["grad_norm_h"], e["init"]["grad_norm_h"]
        rows.append({"model": label, "hidden": e["hidden_size"], "params": e["parameters"],
                     f"val {metric}": e["final"].get(metric), "steps to threshold": e["steps_to_threshold"],
                     "ms/train step": e["ms_per_train_step"], "ms/inference": e["ms_per_inference"],
                     "first step s": e.get("first_step_seconds"),
                     "grad ratio init": float(gi[0] / gi[-1]) if gi[-1] > 0 else None,
                     "grad ratio trained": float(g0[0] / g0[-1]) if g0[-1] > 0 else None})
    return rows


def summary_columns(res: dict) -> list[tuple[str, str]]:
    metric = res["threshold"]["metric"]
    return [("model", "model"), ("hidden", "hidden"), ("params", "params"), (f"val {metric}", f"val {metric}"),
            ("steps to threshold", "steps to threshold"), ("ms/train step", "ms/train step"),
            ("ms/inference", "ms/inference"), ("first step s", "1st step s (compiles)"),
            ("grad ratio init", "grad h_0/h_T init"),
            ("grad ratio trained", "grad h_0/h_T trained")]


def write_compare_report(res: dict, out_dir) -> dict:
    """Figures (PNG + SVG), summary.md, report.html and compare.json in ``out_dir``."""
    from . import report
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    metric = res["threshold"]["metric"]
    curves = {k: (e["curve"]["step"], e["curve"].get(metric, [])) for k, e in res["models"].items()}
    figs = {"learning": report.plot_learning_curves(curves, metric, fig_dir, baseline=res["baseline"])}
    series = {}
    for k, e in res["models"].items():
        series[f"{k} (init)"] = e["init"]["grad_norm_h"]
        series[f"{k} (trained)"] = e["grad_norm_h"]
    figs["grad"] = report.plot_grad_norms(series, fig_dir)
    jac = {f"{k} (trained)": e["jacobian_norm"] for k, e in res["models"].items()}
    jac.update({f"{k} (init)": e["init"]["jacobian_norm"] for k, e in res["models"].items()})
    figs["jac"] = report.plot_grad_norms(jac, fig_dir, "jacobian_norms", "Exact Jacobian norm ||dh_T/ds_t||_2 (layer 0)",
                                         r"$\|\partial h_T/\partial s_t\|_2$")
    gates = {}
    for k, e in res["models"].items():
        if e["gates"]:
            gates[f"{k} (trained)"] = e["gates"]
            gates[f"{k} (init)"] = e["init"]["gates"]
    if gates:
        figs["gates"] = report.plot_gate_stats(gates, fig_dir)
    rows = summary_rows(res)
    table = report.markdown_table(rows, summary_columns(res))
    base = res["baseline"]
    intro = (f"{res['description']}. Same data and seed for every model; hidden sizes "
             f"{'matched to ' + str(res['target_parameters']) + ' parameters' if res['match'] == 'params' else 'equal'}. "
             f"Threshold: {metric} {'<=' if metric in LOWER_IS_BETTER else '>='} {res['threshold']['value']:.4g}."
             + (f" Baseline: {base[0]} {base[1]:.4g}." if base else ""))
    grad_text = ("Norm of dL/dh_t for a loss at the last step, relative to its value at the last step, against the "
                 "distance from the loss (dashed: at initialisation; solid: after training). A curve that falls "
                 "geometrically is the vanishing gradient of the seed's eigenvalue argument; the exact Jacobian "
                 "norms below show the same through the recurrence alone.")
    sections = [("Results", intro + "\n\n" + table, [figs["learning"]])]
    if res.get("seeds"):                            # the sweep runner's summary and table (cli: compare --seeds)
        sd = res["seeds"]
        sections.append((f"Over {sd['rows'][0]['seeds']} seeds", "Each entry trained again with consecutive seeds "
                         "(the trials' run folders are in seeds/trials): the final validation metric's mean, standard "
                         "deviation and 95 % Student-t interval, and how many seeds reached the threshold.\n\n" +
                         sd["table"], [{"png": out_dir / "seeds" / "curves.png"}]))
    sections.append(("Gradient flow", grad_text, [figs["grad"], figs["jac"]]))
    if "gates" in figs:
        sections.append(("Gates", "LSTM: the product of forget gates over k steps scales the cell-path gradient "
                         "over k steps; GRU: the update gate z is the share of h_{t-1} carried to h_t.", [figs["gates"]]))
    paths = report.write_report(out_dir, f"rnnlab compare: {res['task']}", sections)
    report.write_json(out_dir / "compare.json", res)
    paths["json"] = out_dir / "compare.json"
    paths["figures"] = fig_dir
    return paths
