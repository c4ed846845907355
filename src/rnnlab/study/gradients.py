"""A gradient-flow study as ``rnnlab gradients`` runs it: a model (fresh, a trained run, or a layer file) measured
by ``rnnlab.study.diagnostics``, an optional spectral-radius sweep, a report folder and the numbers.

    study = gradients("runs/gradients", overrides={"task": "copy", "model": "lstm"}, sweep="0.5:1.5:11")
    study.numbers["model"]["grad_norm_h"]          # ||dL/dh_t|| per step; study.paths["html"]: the report

What the settings alone decide is checked before anything is measured (the report folder, the sweep's range and
cells, the model's settings); a model's ``at_step`` once its task's length is known. The caller prints what it
wants from the returned ``GradientsStudy``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from rnnlab.errors import ConfigError

# the settings a layer file takes: the standard-normal input's shape, and its seed
LAYER_SETTINGS = ("seq_len", "batch_size", "seed")


@dataclasses.dataclass
class GradientsStudy:
    """What ``gradients`` measured and wrote.

    ``numbers``: as ``--json`` writes them: "sweep" ({"radii", "distance", cell: relative norms}), "model"
    ({"label", "parameters", grad_norm_h, jacobian_norm, spectral, gates, layers, ...}) or "layer" (a layer file's
    {"label", "parameters", "spectral_radius", "grad_norm_h", "jacobian_norm"}), "over_training" (a run's
    diagnostics.jsonl records). ``paths``: the report's files (``html``, ...). ``task``: the model's task
    described, or the layer file's input (``N(0, 1) input, T=50, B=16``). ``sweep_cells``: the sweep's cells, in
    order."""
    numbers: dict
    paths: dict
    task: str | None = None
    sweep_cells: list = dataclasses.field(default_factory=list)


def parse_range(text) -> np.ndarray:
    """``LOW:HIGH:COUNT`` (``0.5:1.5:11``) -> the COUNT radii from LOW to HIGH."""
    try:
        lo, hi, n = str(text).split(":")
        lo, hi, n = float(lo), float(hi), int(n)
    except ValueError:
        raise ConfigError(f"sweep: expected LOW:HIGH:COUNT such as 0.5:1.5:11, got {text!r}") from None
    if n < 1 or lo <= 0 or hi <= 0 or hi < lo:
        raise ConfigError(f"sweep: expected 0 < LOW <= HIGH and COUNT >= 1, got {text!r}")
    return np.linspace(lo, hi, n)


def check_at_step(at_step, T: int) -> None:
    """``--at-step``: a step of the model's sequence of ``T`` steps."""
    if at_step is not None and not 0 <= at_step < T:
        raise ConfigError(f"--at-step: expected a time step in [0, {T - 1}] (the sequence has {T} steps), "
                          f"got {at_step}")


def gradients(report, checkpoint=None, config=None, overrides: dict | None = None, sweep=None, sweep_cells=None,
              sweep_len: int = 100, sweep_hidden: int = 64, at_step: int | None = None,
              force: bool = False) -> GradientsStudy:
    """Measure the gradient flow and write the report to the folder ``report``.

    ``checkpoint``: a run folder, a model checkpoint or a layer file (``rnnlab import``); without it, a fresh model
    from ``config`` (a TOML file) and ``overrides`` (training keys, as ``rnnlab.training.config.resolve``). A
    trained model's settings are its own: with a checkpoint, ``config`` and ``overrides`` are refused, except
    ``LAYER_SETTINGS`` for a layer file (its N(0, 1) input's T, B and seed; 50, 16 and 0 by default).
    ``sweep``: ``LOW:HIGH:COUNT`` or the radii themselves, over ``sweep_cells`` (comma-separated or a list;
    default ``diagnostics.SWEEP_CELLS``) at length ``sweep_len`` and hidden size ``sweep_hidden``. With a sweep
    alone (no checkpoint, config or overrides) no model is measured. ``at_step``: a step that must exist in the
    model's sequence. ``force``: write the report among files rnnlab did not write.
    """
    from rnnlab.data.outputs import check_report_dir
    from rnnlab.study import diagnostics as diag
    from rnnlab.study import report as reports
    from rnnlab.study.runs import load_any
    from rnnlab.training.config import flag, resolve
    overrides = dict(overrides or {})
    out = check_report_dir(report, "--report", force)
    if sweep_cells is not None and sweep is None:
        raise ConfigError(f"--sweep-cells: the cells of a spectral-radius sweep, and no --sweep LOW:HIGH:COUNT is "
                          f"given; add --sweep or drop --sweep-cells, got --sweep-cells {sweep_cells}")
    cells = []
    if sweep is not None:
        radii = parse_range(sweep) if isinstance(sweep, str) else np.asarray(sweep, dtype=np.float64)
        if isinstance(sweep_cells, str) or sweep_cells is None:
            cells = [c.strip() for c in (sweep_cells or ",".join(diag.SWEEP_CELLS)).split(",") if c.strip()]
        else:
            cells = list(sweep_cells)
        for c in cells:
            diag.sweep_cell(c)                      # each cell's name and options, before anything runs
    kind = load_any(checkpoint)[0] if checkpoint else None
    if checkpoint:                                  # a trained model's settings are its own
        unused = sorted(k for k in overrides if not (kind == "layer" and k in LAYER_SETTINGS))
        if unused or config:
            given = unused[0] if unused else "config"
            raise ConfigError(f"{given}: {flag(given)} sets up a fresh model, and {checkpoint} is a trained "
                              f"{kind}; drop it"
                              + (" (a layer file takes --seq-len, --batch-size and --seed)" if kind == "layer" else ""))
    if kind == "layer":
        check_at_step(at_step, overrides.get("seq_len", 50))
    measured = bool(checkpoint or sweep is None or overrides or config)      # a sweep alone measures no model
    cfg = resolve(config, overrides) if measured and not checkpoint else None
    study, sections = GradientsStudy({}, {}, sweep_cells=cells), []
    if sweep is not None:
        study.numbers["sweep"] = diag.sweep(radii, cells, T=sweep_len, hidden_size=sweep_hidden,
                                            seed=overrides.get("seed", 0))
    if kind == "layer":
        sections += _layer(study, checkpoint, overrides, out)
    elif measured:
        sections += _model(study, checkpoint, cfg, at_step, out)
    if sweep is not None:
        sections.append(("Spectral-radius sweep", "W_hh rescaled to each spectral radius; log10 of ||dL/dh_t|| "
                         "relative to the last step.", [reports.plot_sweep(study.numbers["sweep"], out / "figures")]))
    study.paths = reports.write_report(out, "rnnlab gradients", sections)
    return study


def _layer(study, checkpoint, overrides, out) -> list:
    """A bare layer (e.g. imported from torch or ONNX) on standard-normal input."""
    from rnnlab.interop.files import load_layer
    from rnnlab.study import diagnostics as diag
    from rnnlab.study import report
    layer = load_layer(checkpoint)
    T, B = overrides.get("seq_len", 50), overrides.get("batch_size", 16)
    x = np.random.default_rng(overrides.get("seed", 0)).standard_normal((T, B, layer.input_size))
    if layer.batch_first:
        x = x.transpose(1, 0, 2)
    g = diag.layer_grad_norms(layer, x)
    j = diag.jacobian_norms(layer, x.transpose(1, 0, 2) if layer.batch_first else x)
    label = f"{type(layer).__name__} ({Path(checkpoint).name})"
    study.task = f"loss <h_T, g> on N(0, 1) input, T={T}, B={B}"
    study.numbers["layer"] = {"label": label, "parameters": layer.num_parameters(),
                              "spectral_radius": diag.spectral_radius(layer), **g, "jacobian_norm": j}
    figs = [report.plot_grad_norms({label: g["grad_norm_h"]}, out / "figures"),
            report.plot_grad_norms({label: j}, out / "figures", "jacobian_norms", "Exact Jacobian norm",
                                   r"$\|\partial h_T/\partial s_t\|_2$")]
    return [("Gradient flow", f"{label}", figs)]


def _model(study, checkpoint, cfg, at_step, out) -> list:
    """A trained model (its own task) or a fresh one of ``cfg``: every layer and direction, and a run's
    diagnostics over training."""
    from rnnlab.model.sequence_model import SequenceModel
    from rnnlab.study import diagnostics as diag
    from rnnlab.study import report
    from rnnlab.study.compare import gradient_report
    from rnnlab.tasks import build_task
    from rnnlab.training.config import TrainConfig
    from rnnlab.training.trainer import load_model, model_config_for
    if checkpoint:
        model, meta = load_model(checkpoint)
        cfg = TrainConfig.from_dict(meta["config"])
        task = build_task(cfg, info=meta.get("task_info", {}))
        label = f"{cfg.model} ({Path(checkpoint).name})"
    else:
        task = build_task(cfg)
        model = SequenceModel(model_config_for(cfg, task), seed=np.random.default_rng([cfg.seed, 0]))
        label = f"{cfg.model} (fresh)"
    g = gradient_report(model, diag.diagnostic_batch(task))
    check_at_step(at_step, len(g["grad_norm_h"]))
    study.task = task.describe()
    study.numbers["model"] = {"label": label, "parameters": model.num_parameters(), **g}
    series = {label: g["grad_norm_h"]}
    if "grad_norm_c" in g:
        series[label.replace("(", "(cell c, ")] = g["grad_norm_c"]
    figs = [report.plot_grad_norms(series, out / "figures")]
    jac, gates, more = [], [], []
    for name, lay in g["layers"].items():           # every layer and direction, each figure titled with its own
        where = name if "reverse" in name else f"{name}, forward"
        stem = "jacobian_norms" if name == "layer 0" else f"jacobian_norms_{name.replace(' ', '_')}"
        fig = report.plot_grad_norms({label: lay["jacobian_norm"]}, out / "figures", stem,
                                     f"Exact Jacobian norm ||dh_T/ds_t||_2 ({where})",
                                     r"$\|\partial h_T/\partial s_t\|_2$")
        (jac if name == "layer 0" else more).append(fig)
        if lay["gates"]:
            gfig = report.plot_gate_stats({label: lay["gates"]}, out / "figures", "gates" if name == "layer 0"
                                          else f"gates_{name.replace(' ', '_')}", title=where)
            (gates if name == "layer 0" else more).append(gfig)
    sections = [("Gradient flow", "Loss at the last step; norms against the distance from it (the gradient norm: "
                 "the top layer's forward direction; the Jacobians and gates: the layer and direction in each title).",
                 figs + jac + gates + more)]
    if checkpoint:                                  # a run folder's diagnostics.jsonl, over training
        from rnnlab.training.trainer import read_diagnostics
        p = Path(checkpoint)
        recs = read_diagnostics(p if p.is_dir() else p.parent)
        if recs:
            sections.append(("Over training", f"The {len(recs)} records of diagnostics.jsonl (--diagnose-every): the "
                             "ratio ||dL/dh_0|| / ||dL/dh_T|| of the top layer, the spectral norm of each W_hh and the "
                             "saturation of each gate per layer and direction, at each record's step.",
                             [report.plot_over_training({label: recs}, out / "figures")]))
            study.numbers["over_training"] = recs
    return sections
