"""The commands on runs: ``rnnlab train``, ``resume``, ``evaluate``, ``predict``, ``info`` and ``sample`` (the
library's ``rnnlab.training`` and ``rnnlab.study.runs``), and the training keys' flags (``_add_config_flags``).

The command line's entry point is ``rnnlab.cli.main.main``.
"""
from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

from rnnlab.cli.common import check_json, inputs, print_baselines, print_summary, write_json


# ------------------------------------------------------------------------------ training
def _flag_help(f) -> str:
    """A training key's sentence (declared with the key: ``TrainConfig``, ``LayerOptions``) and its default."""
    default = "on" if f.default is True else "off" if f.default is False else repr(f.default)
    return f"{f.metadata['help']} (default: {default})".replace("%", "%%")


def _add_config_flags(p):
    """Every training key as a flag, in the groups of ``config.GROUPS``, each with its sentence and default."""
    from rnnlab.training.config import GROUPS, TrainConfig
    hints = typing.get_type_hints(TrainConfig)
    groups = {g: p.add_argument_group(f"{g} (TOML keys of the same names, with underscores)" if g == GROUPS[0]
                                      else g) for g in GROUPS}
    for name, f in TrainConfig.fields().items():
        flag = "--" + name.replace("_", "-")
        typ = hints[name]
        g = groups[f.metadata["group"]]
        if typ is bool:
            g.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=_flag_help(f))
        else:
            conv = float if typ in (float, typing.Optional[float]) else typ
            g.add_argument(flag, dest=name, type=conv, default=argparse.SUPPRESS, metavar=name.upper(),
                           help=_flag_help(f))


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



def cmd_evaluate(args) -> int:
    from rnnlab.study.runs import evaluate_run, open_run, require_data_run
    run = open_run(args.checkpoint)
    cfg = run.config
    if args.data and run.forecast is None:
        require_data_run(run)
    check_json(args, ([args.data] if args.data else []) + [args.checkpoint] + inputs(cfg))
    ev = evaluate_run(run, args.data)
    scores = "  ".join(f"{k} {v:.4f}" for k, v in ev.metrics.items() if k not in ("baselines", "classes"))
    if args.data and run.forecast is not None:      # a held-out table: every window of it scored (a backtest)
        print(f"{ev.task.describe()}\n{Path(args.data).name} / {cfg.model}: {scores}")
    elif args.data:
        print(f"{Path(args.data).name} ({ev.sequences} sequences) / {cfg.model}: {scores}")
    else:
        print(f"{cfg.task} / {cfg.model}: {scores}")
    if "classes" in ev.metrics:
        from rnnlab.training.metrics import report_text
        print(report_text(ev.metrics["classes"]))
    if hasattr(ev.task, "baselines"):               # a forecaster's, scored on the same windows
        print_baselines(ev.task)
    elif not args.data and ev.task.baseline():
        name, value = ev.task.baseline()
        print(f"baseline: {name} {value:.4f}")
    for n in ev.notes:
        print(f"note: {n}")
    if args.json:
        write_json(args.json, ev.metrics)
    return 0


def cmd_predict(args) -> int:
    from rnnlab.data.outputs import check_output
    from rnnlab.data.sequences import write_table
    from rnnlab.study.runs import check_prediction, open_run, predict_run
    from rnnlab.tasks.forecast import DATASETS
    run = open_run(args.checkpoint)                 # reads the run, writes nothing
    check_prediction(run, args.each_step, args.chunk)
    data = "" if run.forecast is not None and args.data in DATASETS else args.data
    out = check_output(args.out, "--out", [data, args.checkpoint] + inputs(run.config), args.force,
                       (".csv", ".parquet"))
    p = predict_run(run, args.data, args.each_step, args.chunk)
    write_table(p.frame, out)
    for n in p.notes:
        print(f"note: {n}")
    columns = list(map(str, p.frame.columns))
    if run.forecast is None and len(columns) > 6:
        columns = columns[:6] + ["..."]
    print(f"wrote {out}: {len(p.frame)} rows ({p.what}; columns {', '.join(columns)})")
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

