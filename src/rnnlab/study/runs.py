"""A trained run put to use: opened with what it was trained on, then scored or asked for predictions on new data
(``rnnlab evaluate``, ``rnnlab predict``), a new file always read as the run read its training data.

    run = open_run("runs/x")                       # a run folder, model.safetensors or checkpoint.safetensors
    evaluate_run(run).metrics                      # the run's validation data; evaluate_run(run, "held_out.csv")
    predict_run(run, "new.csv").frame              # a DataFrame: a row per sequence (a tagger's: per step)

A run trained on ``--data`` (an ``Encoding``: features and labels by name) takes files in its training file's
layout; a forecaster (a ``ForecastSpec``) takes tables of each series' recent values; any other run is scored on
its own task. ``load_any`` opens a run or a layer file (``rnnlab export``, ``rnnlab gradients``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from rnnlab.errors import ConfigError


def load_any(path, with_meta: bool = False):
    """A run folder / model checkpoint -> ("model", SequenceModel); a layer file -> ("layer", layer).
    ``with_meta``: (kind, object, the model's metadata or None)."""
    from rnnlab.interop.files import load_layer
    from rnnlab.model.checkpoint import load_checkpoint
    from rnnlab.training.trainer import load_model
    p = Path(path)
    if p.is_file():
        _, meta = load_checkpoint(p)
        if meta.get("kind") == "layer":
            return ("layer", load_layer(p), None) if with_meta else ("layer", load_layer(p))
    model, meta = load_model(p)
    return ("model", model, meta) if with_meta else ("model", model)


@dataclasses.dataclass
class Run:
    """A trained model with its configuration and metadata (``task_info``: what its task stored)."""
    path: str
    model: object
    config: object
    meta: dict

    @property
    def info(self) -> dict:
        return self.meta.get("task_info", {})

    @property
    def encoding(self):
        """The ``Encoding`` of a run trained on --data (features, labels, statistics by name), else None."""
        from rnnlab.data.encoding import Encoding
        return Encoding.from_dict(self.info["encoding"]) if "encoding" in self.info else None

    @property
    def forecast(self):
        """The ``ForecastSpec`` of a forecaster, else None."""
        from rnnlab.tasks.forecast import ForecastSpec
        return ForecastSpec.from_dict(self.info["forecast"]) if "forecast" in self.info else None


def open_run(checkpoint) -> Run:
    """The run of a run folder, model.safetensors or checkpoint.safetensors (``CheckpointError`` otherwise)."""
    from rnnlab.training.config import TrainConfig
    from rnnlab.training.trainer import load_model
    model, meta = load_model(checkpoint)
    return Run(str(checkpoint), model, TrainConfig.from_dict(meta["config"]), meta)


def require_data_run(run: Run) -> None:
    """Refuse a run not trained on sequences of a file or arrays (no ``Encoding``): --data is not its input."""
    if "encoding" not in run.info:
        raise ConfigError(f"data: {run.path} was trained on task {run.config.task!r}, not on sequences of a file or "
                          f"arrays; --data works with runs of `rnnlab train --data FILE`")


def read_like(run: Run, path, require_target: bool):
    """A new file read as the run read its training data: a table's features by the stored names, in their order."""
    from rnnlab.data.sequences import is_table, read_data
    from rnnlab.errors import DataError
    require_data_run(run)
    cfg, encoding = run.config, run.encoding
    table, trained_on_table = is_table(path), is_table(cfg.data)
    if table != trained_on_table:
        raise DataError(f"data: {Path(path).name} is a {'table' if table else '.npz file'}, but the run was trained "
                        f"on a {'table (features read by column name)' if trained_on_table else '.npz file'}; give "
                        f"the new data in the training file's layout")
    return read_data(path, cfg.id_col, cfg.time_col, None, cfg.target_col, require_target, cfg.channels_first,
                     cfg.missing, cfg.min_length, cfg.time_format,
                     trained_features=encoding.feature_names if table else None, for_training=False)


def recent_panel(run: Run, path):
    """A table of recent values read as a forecaster read its training table: its columns by name (the run's own
    statsmodels series by its name)."""
    from rnnlab.tasks.forecast import read_with_spec, table_path
    return read_with_spec(run.forecast, *table_path(path, shipped=path == run.config.data))


@dataclasses.dataclass
class Evaluation:
    """``metrics``: as --json writes them (a forecaster's with ``baselines``, a classifier's file with ``classes``,
    its per-class report); ``task``: the task scored; ``sequences``: a data run's file, its sequence count;
    ``notes``: what reading the file changed or dropped."""
    metrics: dict
    task: object
    sequences: int | None = None
    notes: list = dataclasses.field(default_factory=list)


def evaluate_run(run: Run, data=None) -> Evaluation:
    """Score ``run`` on its validation data, or on the file ``data``: a forecaster backtests every window of a
    held-out table beside its baselines; a run trained on --data scores the file's sequences (targets needed)."""
    from rnnlab.training.trainer import evaluate
    if data and run.forecast is not None:           # a held-out table: every window of it scored (a backtest)
        from rnnlab.tasks.forecast import ForecastTask
        task = ForecastTask(recent_panel(run, data), run.forecast, fitted=True, backtest=True, name=Path(data).name)
        metrics = evaluate(run.model, task)
        return Evaluation({**metrics, "baselines": task.baselines()}, task)
    if data:
        from rnnlab.tasks import targets_named
        from rnnlab.tasks.supervised import SequenceTask
        seqs = read_like(run, data, True)
        with targets_named(run.config, data):
            task = SequenceTask(f"data:{Path(data).name}", run.encoding, seqs)     # the file as the data to score
            metrics = evaluate(run.model, task, task.batches_of(seqs))
        report = task.class_report(run.model)      # per class: accuracy alone hides a neglected class
        if report is not None:
            metrics["classes"] = report
        return Evaluation(metrics, task, len(seqs.cases), list(seqs.notes))
    from rnnlab.tasks import build_task
    task = build_task(run.config, info=run.info)
    metrics = evaluate(run.model, task)
    if hasattr(task, "baselines"):
        metrics["baselines"] = task.baselines()
    return Evaluation(metrics, task)


@dataclasses.dataclass
class Prediction:
    """``frame``: the predictions (a pandas DataFrame); ``what``: its rows in words; ``notes``: as Evaluation's."""
    frame: object
    what: str
    notes: list = dataclasses.field(default_factory=list)


def check_prediction(run: Run, each_step: bool = False, chunk: int | None = None) -> int:
    """Refuse what ``predict_run`` would refuse, before any file is read or made; returns the chunk (1 if None)."""
    from rnnlab.errors import check_int
    if run.forecast is not None:
        if each_step or chunk is not None:
            raise ConfigError("each_step: a forecaster predicts the horizon from each series' last window; "
                              "--each-step and --chunk are options of a run trained on --data")
        return 1
    require_data_run(run)
    if chunk is not None and not each_step:
        raise ConfigError("--chunk: the steps fed to the stream per call, an option of --each-step; add --each-step")
    return check_int("--chunk", chunk if chunk is not None else 1, 1)


def predict_run(run: Run, data, each_step: bool = False, chunk: int | None = None) -> Prediction:
    """Predictions of ``run`` for the file ``data`` (targets not needed). A forecaster: a row per (series, step
    ahead) from each series' last window. A run trained on --data: a row per sequence (a tagger's: per step), or
    with ``each_step`` the prediction after every step, the sequences fed ``chunk`` steps at a time to an
    ``rnnlab.Stream`` as a deployed model reads them."""
    chunk = check_prediction(run, each_step, chunk)
    if run.forecast is not None:
        from rnnlab.tasks.forecast import forecast_frame
        spec = run.forecast
        panel = recent_panel(run, data)
        what = f"{len(panel.ids)} series x {spec.horizon} steps" + (
            f"; interval {spec.quantiles[0]}-{spec.quantiles[-1]} quantiles" if len(spec.quantiles) > 1 else "")
        return Prediction(forecast_frame(run.model, spec, panel), what, list(panel.notes))
    from rnnlab.tasks.supervised import prediction_frame, predict_outputs
    cfg, encoding = run.config, run.encoding
    seqs = read_like(run, data, False)
    id_name = cfg.id_col if seqs.ids is not None else "index"
    if each_step and encoding.problem != "tag":    # a deployed stream: the prediction after every step
        from rnnlab.tasks.supervised import stream_outputs
        from rnnlab.tasks.supervised import step_frame
        frame = step_frame(encoding, seqs, stream_outputs(run.model, encoding, seqs, chunk), id_name, cfg.time_col)
    else:
        frame = prediction_frame(encoding, seqs, predict_outputs(run.model, encoding, seqs), id_name=id_name,
                                 time_name=cfg.time_col)
    return Prediction(frame, encoding.problem, list(seqs.notes))
