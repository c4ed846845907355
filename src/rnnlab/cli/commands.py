"""The commands on runs: ``rnnlab train``, ``resume``, ``evaluate``, ``predict``, ``info`` and ``sample``.

The command line is split by what the commands work on, each module parsing nothing itself (``rnnlab.cli.parser``
builds the grammar), calling the library and printing:

    rnnlab.cli.main       main(argv): parse, run, rnnlab's errors as one line (a bug keeps its traceback)
    rnnlab.cli.parser     every command's arguments and help
    rnnlab.cli.commands   runs: train, resume, evaluate, predict, info, sample
    rnnlab.cli.study      studies: compare, gradients, sweep
    rnnlab.cli.interop    export, import
    rnnlab.cli.tools      lab, check, warmup
    rnnlab.cli.common     what they share (--json, inputs that outputs may not overwrite, a run's summary)

``main`` is also importable from here (``from rnnlab.cli.commands import main``), as before the split.
"""
from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

from rnnlab.cli.common import check_json, inputs, print_baselines, print_summary, write_json


def main(argv=None) -> int:
    """``rnnlab.cli.main.main``: run the command line ``argv``; returns the exit code."""
    from rnnlab.cli.main import main as run
    return run(argv)


# ------------------------------------------------------------------------------ training
def _add_config_flags(p):
    from rnnlab.training.config import TrainConfig
    hints = typing.get_type_hints(TrainConfig)
    for name, f in TrainConfig.fields().items():
        flag = "--" + name.replace("_", "-")
        typ = hints[name]
        if typ is bool:
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
        else:
            conv = float if typ in (float, typing.Optional[float]) else typ
            p.add_argument(flag, dest=name, type=conv, default=argparse.SUPPRESS,
                           metavar=name.upper(), help=f"default: {f.default!r}")


def cmd_train(args) -> int:
    from rnnlab.training.config import resolve
    from rnnlab.training.trainer import train
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "func", "config", "json", "argv", "force")}
    cfg = resolve(args.config, overrides)
    from rnnlab.data.outputs import RUN_FILES
    run_files = [Path(cfg.out) / n for n in RUN_FILES + (".lock",)] if cfg.out else []
    check_json(args, inputs(cfg, args) + run_files)
    r = train(cfg, progress=not cfg.quiet)
    if r.rank:
        return 0                                    # distributed: rank 0 reports for all
    print_summary(r)
    if args.json:
        steps = sorted(r.step_seconds[1:]) or r.step_seconds    # the first step includes compiling
        write_json(args.json, {"final": r.final, "baseline": r.baseline, "seconds": r.seconds,
                                "train_seconds": r.train_seconds,
                                "median_step_ms": 1e3 * steps[len(steps) // 2] if steps else None,
                                "parameters": r.model.num_parameters(), "config": cfg.to_dict()})
    return 0


def cmd_resume(args) -> int:
    from rnnlab.errors import check_int
    from rnnlab.training.trainer import resume
    if args.steps is not None:
        check_int("--steps", args.steps, 1)
    r = resume(args.run_dir, progress=not args.quiet, steps=args.steps)
    if r.rank:
        return 0
    print_summary(r)
    return 0



def _data_run(checkpoint):
    """(model, config, encoding) of a run trained on --data; a clear error for any other run."""
    from rnnlab.training.config import TrainConfig
    from rnnlab.data.encoding import Encoding
    from rnnlab.errors import ConfigError
    from rnnlab.training.trainer import load_model
    model, meta = load_model(checkpoint)
    cfg = TrainConfig.from_dict(meta["config"])
    info = meta.get("task_info", {})
    if "encoding" not in info:
        raise ConfigError(f"data: {checkpoint} was trained on task {cfg.task!r}, not on sequences of a file or "
                          f"arrays; --data works with runs of `rnnlab train --data FILE`")
    return model, cfg, Encoding.from_dict(info["encoding"]), meta


def _read_like(cfg, encoding, path, require_target):
    """A new file read as the run read its training data: a table's features by the stored names, in their order."""
    from rnnlab.errors import DataError
    from rnnlab.data.sequences import is_table, read_data
    table, trained_on_table = is_table(path), is_table(cfg.data)
    if table != trained_on_table:
        raise DataError(f"data: {Path(path).name} is a {'table' if table else '.npz file'}, but the run was trained "
                        f"on a {'table (features read by column name)' if trained_on_table else '.npz file'}; give "
                        f"the new data in the training file's layout")
    return read_data(path, cfg.id_col, cfg.time_col, None, cfg.target_col, require_target, cfg.channels_first,
                     cfg.missing, cfg.min_length, cfg.time_format,
                     trained_features=encoding.feature_names if table else None, for_training=False)


def cmd_evaluate(args) -> int:
    from rnnlab.training.config import TrainConfig
    from rnnlab.tasks import build_task
    from rnnlab.training.trainer import evaluate, load_model
    fc = _forecast_run(args.checkpoint) if args.data else None
    if fc is not None:                              # a held-out table: every window of it scored (a backtest)
        from rnnlab.tasks.forecast import ForecastTask
        model, cfg, spec = fc
        check_json(args, [args.data, args.checkpoint] + inputs(cfg))
        panel = _recent_panel(spec, cfg, args.data)
        task = ForecastTask(panel, spec, fitted=True, backtest=True, name=Path(args.data).name)
        metrics = evaluate(model, task)
        print(f"{task.describe()}\n{Path(args.data).name} / {cfg.model}: "
              + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        print_baselines(task)
        metrics["baselines"] = task.baselines()
    elif args.data:
        from rnnlab.tasks.supervised import SequenceTask
        model, cfg, encoding, _ = _data_run(args.checkpoint)
        check_json(args, [args.data, args.checkpoint] + inputs(cfg))
        seqs = _read_like(cfg, encoding, args.data, True)
        from rnnlab.tasks import targets_named
        with targets_named(cfg, args.data):
            task = SequenceTask(f"data:{Path(args.data).name}", encoding, seqs)     # the file as the data to score
            metrics = evaluate(model, task, task.batches_of(seqs))
        print(f"{Path(args.data).name} ({len(seqs.cases)} sequences) / {cfg.model}: "
              + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        report = task.class_report(model)           # per class: accuracy alone hides a neglected class
        if report is not None:
            from rnnlab.training.metrics import report_text
            metrics["classes"] = report
            print(report_text(report))
        for n in seqs.notes:
            print(f"note: {n}")
    else:
        model, meta = load_model(args.checkpoint)
        cfg = TrainConfig.from_dict(meta["config"])
        check_json(args, [args.checkpoint] + inputs(cfg))
        task = build_task(cfg, info=meta.get("task_info", {}))
        metrics = evaluate(model, task)
        print(f"{cfg.task} / {cfg.model}: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        b = task.baseline()
        if hasattr(task, "baselines"):
            print_baselines(task)
            metrics["baselines"] = task.baselines()
        elif b:
            print(f"baseline: {b[0]} {b[1]:.4f}")
    if args.json:
        write_json(args.json, metrics)
    return 0



def cmd_predict(args) -> int:
    from rnnlab.data.sequences import write_table
    from rnnlab.tasks.supervised import prediction_frame, predict_outputs
    from rnnlab.data.outputs import check_output
    fc = _forecast_run(args.checkpoint)
    if fc is not None:
        if args.each_step or args.chunk is not None:
            from rnnlab.errors import ConfigError
            raise ConfigError("each_step: a forecaster predicts the horizon from each series' last window; "
                              "--each-step and --chunk are options of a run trained on --data")
        return _predict_forecast(args, *fc)
    model, cfg, encoding, _ = _data_run(args.checkpoint)           # reads the run, writes nothing
    out = check_output(args.out, "--out", [args.data, args.checkpoint] + inputs(cfg), args.force,
                       (".csv", ".parquet"))
    if args.chunk is not None and not args.each_step:
        from rnnlab.errors import ConfigError
        raise ConfigError("--chunk: the steps fed to the stream per call, an option of --each-step; add --each-step")
    from rnnlab.errors import check_int
    chunk = check_int("--chunk", args.chunk if args.chunk is not None else 1, 1)
    seqs = _read_like(cfg, encoding, args.data, False)
    id_name = cfg.id_col if seqs.ids is not None else "index"
    if args.each_step and encoding.problem != "tag":       # a deployed stream: the prediction after every step
        from rnnlab.engine.stream import stream_outputs
        from rnnlab.tasks.supervised import step_frame
        frame = step_frame(encoding, seqs, stream_outputs(model, encoding, seqs, chunk), id_name, cfg.time_col)
    else:
        frame = prediction_frame(encoding, seqs, predict_outputs(model, encoding, seqs), id_name=id_name,
                                 time_name=cfg.time_col)
    write_table(frame, out)
    for n in seqs.notes:
        print(f"note: {n}")
    print(f"wrote {out}: {len(frame)} rows ({encoding.problem}; columns {', '.join(map(str, frame.columns[:6]))}"
          f"{', ...' if len(frame.columns) > 6 else ''})")
    return 0


def _forecast_run(checkpoint):
    """(model, config, spec) of a forecasting run, or None for any other run."""
    from rnnlab.training.config import TrainConfig
    from rnnlab.training.trainer import load_model
    from rnnlab.tasks.forecast import ForecastSpec
    model, meta = load_model(checkpoint)
    info = meta.get("task_info", {})
    if "forecast" not in info:
        return None
    return model, TrainConfig.from_dict(meta["config"]), ForecastSpec.from_dict(info["forecast"])


def _recent_panel(spec, cfg, path):
    """A table of recent values read as the run read its training table: its columns by name (the run's own
    statsmodels series by its name)."""
    from rnnlab.tasks.forecast import read_with_spec, table_path
    return read_with_spec(spec, *table_path(path, shipped=path == cfg.data))


def _predict_forecast(args, model, cfg, spec) -> int:
    from rnnlab.data.outputs import check_output
    from rnnlab.data.sequences import write_table
    from rnnlab.tasks.forecast import DATASETS, forecast_frame
    data = args.data if args.data not in DATASETS else ""
    out = check_output(args.out, "--out", [data, args.checkpoint] + inputs(cfg), args.force, (".csv", ".parquet"))
    panel = _recent_panel(spec, cfg, args.data)
    frame = forecast_frame(model, spec, panel)
    write_table(frame, out)
    for n in panel.notes:
        print(f"note: {n}")
    what = f"{len(panel.ids)} series x {spec.horizon} steps" + (
        f"; interval {spec.quantiles[0]}-{spec.quantiles[-1]} quantiles" if len(spec.quantiles) > 1 else "")
    print(f"wrote {out}: {len(frame)} rows ({what}; columns {', '.join(map(str, frame.columns))})")
    return 0


def cmd_info(args) -> int:
    from rnnlab.model.card import CARD_JSON, card_data, card_markdown
    run = Path(args.run)
    if run.is_file():
        run = run.parent
    check_json(args, [str(run)])
    card = card_data(run)                           # from the model file: current even for a run made before cards
    print(card_markdown(card))
    if args.json:
        write_json(args.json, card)
    if not (run / CARD_JSON).exists():
        print(f"note: {run} has no card files (made before rnnlab wrote them); nothing was written to the run")
    return 0


def cmd_sample(args) -> int:
    from rnnlab.errors import ConfigError
    from rnnlab.model.sample import sample_text
    from rnnlab.training.trainer import load_model
    model, meta = load_model(args.checkpoint)
    vocab = meta.get("task_info", {}).get("vocab")
    if vocab is None:
        raise ConfigError(f"checkpoint: {args.checkpoint} is not a character language model (no vocabulary stored)")
    text = sample_text(model, vocab, args.length, args.prompt, args.temperature, args.top_k, args.seed)
    sys.stdout.write(text + "\n")
    return 0

