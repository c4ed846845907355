"""Command-line interface: parsing and printing only; the work happens in the library.

    rnnlab train    [--config FILE] [--task ...] [--model ...] ...   train a model (flags override the file)
    rnnlab resume   DIR                                              continue a killed run from its checkpoint
    rnnlab evaluate RUN_OR_CHECKPOINT [--data FILE]                  validation (or held-out file) metrics
    rnnlab predict  RUN --data FILE --out preds.csv|.parquet         predictions for new sequences
    rnnlab sample   RUN_OR_CHECKPOINT [--length N] [--prompt S]       text from a character model
    rnnlab compare  [--config FILE] [--models gru+reset=before,gru] [--seeds N]  controlled comparisons, a report
    rnnlab gradients [CHECKPOINT] [--task ...] [--sweep 0.5:1.5:11]   gradient-flow diagnostics and figures
    rnnlab export   CHECKPOINT --format onnx|torch|keras --out FILE  deploy a model or layer elsewhere
    rnnlab import   FILE --format onnx|torch|keras --out LAYER       read another tool's weights
    rnnlab lab      [--port N] [--no-browser] [--runs DIR]            the live gradient lab, a page on 127.0.0.1
    rnnlab check                                                     gradient-check every layer kind
    rnnlab warmup   [--dtype float32 float64] [--cell lstm] [--inference]  compile the kernels ahead

Length: every command's parser and printer in one module, until the command line is split by command.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import typing
from pathlib import Path

import numpy as np

from rnnlab.engine.cells import CELLS
from rnnlab.training.config import flag
from rnnlab.errors import closest


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors that suggest the closest valid option of the command that was used."""

    def error(self, message):
        if "unrecognized arguments:" in message:
            bad = [b.split("=")[0] for b in message.split(":", 1)[1].split() if b.startswith("-")]
            command, sub_opts = self._command_options()
            hints = []
            for b in bad:
                if b in sub_opts.get(command, ()) or command is None:
                    continue
                elsewhere = sorted(c for c, opts in sub_opts.items() if b in opts)
                hint = closest(b, [o for o in sub_opts.get(command, ()) if o != b])
                if elsewhere:
                    hint += f" ({b} is an option of: {', '.join(elsewhere)}; `rnnlab {command} --help` lists "
                    hint += f"{command}'s)"
                hints.append(hint)
            message += "".join(h for h in hints if h)
            prog = f"rnnlab {command}" if command else self.prog     # the top parser sees the command's extras
            self.exit(2, f"{prog}: error: {message}\n")
        self.exit(2, f"{self.prog}: error: {message}\n")

    def _command_options(self):
        """(the subcommand on the command line or None, {subcommand: its option strings})."""
        sub_opts = {}
        for a in self._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    sub_opts[name] = {o for b in sp._actions for o in b.option_strings}
        argv = getattr(self, "argv", None)
        argv = sys.argv[1:] if argv is None else argv
        command = next((w for w in argv if w in sub_opts), None) if sub_opts else None
        return command, sub_opts


# ------------------------------------------------------------------------------ gradient check
def cmd_check(args) -> int:
    from rnnlab import GRU, LSTM, RNN
    from rnnlab.engine.gradcheck import check_layer
    from rnnlab.engine.layers import LRU, IndRNN, MinGRU, MinLSTM

    rng = np.random.default_rng(args.seed)
    kinds = [("rnn (tanh)", RNN, {}), ("rnn (relu)", RNN, {"nonlinearity": "relu"}), ("lstm", LSTM, {}),
             ("gru (reset after)", GRU, {}), ("gru (reset before)", GRU, {"reset": "before"}),
             ("mingru (loop)", MinGRU, {"backend": "numpy"}), ("mingru (scan)", MinGRU, {"backend": "scan"}),
             ("minlstm (loop)", MinLSTM, {"backend": "numpy"}), ("minlstm (scan)", MinLSTM, {"backend": "scan"}),
             ("indrnn", IndRNN, {}), ("lru (loop)", LRU, {"backend": "numpy"}), ("lru (scan)", LRU, {"backend": "scan"})]
    T, B, I, H = args.seq_len, 3, 4, 5
    print(f"gradient check: float64 central differences vs hand-derived BPTT "
          f"(T={T}, B={B}, I={I}, H={H}, {args.num_layers} layers, bidirectional, ragged lengths)")
    worst = 0.0
    for name, cls, kw in kinds:
        layer = cls(I, H, args.num_layers, bidirectional=True, dtype="float64", seed=args.seed, **kw)
        x = rng.standard_normal((T, B, I))
        lengths = np.array([T, max(1, T // 2), max(1, T - 1)])
        errors = check_layer(layer, x, lengths=lengths, seed=args.seed)
        top = max(errors, key=errors.get)
        worst = max(worst, errors[top])
        print(f"  {name:20s} {layer.num_parameters():5d} params  max relative error {errors[top]:.2e} ({top})")
    ok = worst < 1e-6
    print(f"{'PASS' if ok else 'FAIL'}: worst relative error {worst:.2e} (tolerance 1e-6)")
    return 0 if ok else 1


# ------------------------------------------------------------------------------ the live lab
def cmd_lab(args) -> int:
    from rnnlab.errors import ConfigError
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"lab: needs the lab extra ({exc.name} is not installed): pip install 'rnnlab[lab]'") from None
    from rnnlab.lab.app import serve

    def announce(url):
        print(f"rnnlab lab: {url}  (run folders in {args.runs}; Ctrl-C stops the server and saves its runs)",
              flush=True)
    serve(args.port, not args.no_browser, args.runs, announce)
    return 0


# ------------------------------------------------------------------------------ warm-up
def cmd_warmup(args) -> int:
    import time
    from rnnlab.engine._kernels import available, cache_dir
    from rnnlab.engine.warmup import CELL_CONFIGS, warmup
    t0 = time.perf_counter()

    def report(label, seconds):
        if not args.quiet:
            print(f"  {label:28s} {seconds:6.2f} s")
    where = cache_dir() if available() else None
    if not args.quiet:
        print(f"compiling rnnlab's {'inference ' if args.inference else ''}kernels for {', '.join(args.dtype)} "
              f"(cached on disk for later processes)")
    warmup(tuple(args.dtype), cells=tuple(args.cell or CELL_CONFIGS), report=report, inference=args.inference)
    print(f"warm-up done in {time.perf_counter() - t0:.1f} s; Numba's cache: {where}{_cache_note(where)}")
    return 0


def _cache_note(where) -> str:
    """Why the cache is where it is, when NUMBA_CACHE_DIR was set and Numba could not write there."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env and not os.path.abspath(where).startswith(os.path.abspath(env) + os.sep):
        return f" (NUMBA_CACHE_DIR={env} is not writable)"
    return ""


# ------------------------------------------------------------------------------ training
def _flag_help(name, default) -> str:
    """A layer option's help from its declaration (``LayerOptions``); every flag says its default."""
    from rnnlab.engine.options import LayerOptions
    what = f"{LayerOptions.help(name)}; " if name in LayerOptions.names() else ""
    return f"{what}default: {default!r}".replace("%", "%%")


def _add_config_flags(p):
    from rnnlab.engine.options import LayerOptions
    from rnnlab.training.config import TrainConfig
    hints = typing.get_type_hints(TrainConfig)
    for name, f in TrainConfig.fields().items():
        flag = "--" + name.replace("_", "-")
        typ = hints[name]
        if typ is bool:
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=_flag_help(name, f.default) if name in LayerOptions.names() else None)
        else:
            conv = float if typ in (float, typing.Optional[float]) else typ
            p.add_argument(flag, dest=name, type=conv, default=argparse.SUPPRESS,
                           metavar=name.upper(), help=_flag_help(name, f.default))


def _print_summary(r, file=None):
    cfg = r.config
    lines = [f"== {cfg.task} / {cfg.model}  (hidden {cfg.hidden_size} x {cfg.num_layers} layers, "
             f"{r.model.num_parameters()} parameters)",
             f"   {r.task.describe()}"]
    lines += [f"   note: {n}" for n in getattr(r.task, "notes", ())]
    rate = r.steps_run / r.seconds if r.seconds > 0 else float("nan")
    lines.append(f"   steps {cfg.steps} ({r.steps_run} this run) in {r.seconds:.1f} s  ({rate:.1f} steps/s)"
                 f";  clipped {r.clipped_steps}, skipped {r.skipped_steps}")
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in r.final.items())
    lines.append(f"   validation: {metrics}")
    if hasattr(r.task, "baselines"):
        lines += [f"   baseline {n.replace('_', ' ')}: " + "  ".join(f"{k} {v:.4f}" for k, v in m.items())
                  for n, m in r.task.baselines().items()]
    elif r.baseline:
        lines.append(f"   baseline:   {r.baseline[0]} {r.baseline[1]:.4f}")
    if r.stopped_early:
        lines.append(f"   early stopping: no lower validation loss in {cfg.patience} evaluations; weights of step "
                     f"{r.best_step} kept")
    for w in r.warnings:
        lines.append(f"   warning: {w}")
    if r.out is not None:
        lines.append(f"   run folder: {r.out}  (config.toml, metrics.jsonl, checkpoint.safetensors, model.safetensors, card.md)")
    print("\n".join(lines), file=file or sys.stdout)


def _inputs(cfg, args=None) -> list:
    """The files a command reads (its outputs may not be any of them)."""
    from rnnlab.tasks.forecast import DATASETS
    files = [cfg.data if not (cfg.task == "forecast" and cfg.data in DATASETS) else "", cfg.val_data, cfg.ts_train,
             cfg.ts_test]
    files += [cfg.text] if cfg.task == "chars" and cfg.text != "shakespeare" else []
    files += [getattr(args, "config", None)] if args is not None else []
    return [f for f in files if f]


def _run_data(checkpoint) -> list:
    """The data files a run (folder or a file in one) was trained on: a command on the run reads them too."""
    from rnnlab.training.config import TrainConfig, read_toml
    p = Path(checkpoint) if checkpoint else None
    if p is None:
        return []
    folder = p if p.is_dir() else p.parent
    try:
        cfg = TrainConfig.from_dict(read_toml(folder / "config.toml"))
    except (OSError, ValueError):
        return []
    return _inputs(cfg)


def _check_json(args, inputs=()):
    """--json checked before the work (it is written after)."""
    if getattr(args, "json", None):
        from rnnlab.data.outputs import check_output
        check_output(args.json, "--json", inputs, getattr(args, "force", False))


def _write_json(path, obj):
    from rnnlab.data.outputs import write_output
    write_output(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode("utf-8"), "--json")


def cmd_train(args) -> int:
    from rnnlab.training.config import resolve
    from rnnlab.training.trainer import train
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "func", "config", "json", "argv", "force")}
    cfg = resolve(args.config, overrides)
    from rnnlab.data.outputs import RUN_FILES
    run_files = [Path(cfg.out) / n for n in RUN_FILES + (".lock",)] if cfg.out else []
    _check_json(args, _inputs(cfg, args) + run_files)
    r = train(cfg, progress=not cfg.quiet)
    if r.rank:
        return 0                                    # distributed: rank 0 reports for all
    _print_summary(r)
    if args.json:
        steps = sorted(r.step_seconds[1:]) or r.step_seconds    # the first step includes compiling
        _write_json(args.json, {"final": r.final, "baseline": r.baseline, "seconds": r.seconds,
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
    _print_summary(r)
    return 0


def _embedded_ray_loopback_only(args):
    """The exit code of this same command rerun in a loopback-only network namespace (``rnnlab.scale.netns``), or
    None to go on here (inside one already, a cluster address given, or no namespace possible: then a warning)."""
    import os
    import subprocess
    from rnnlab.scale import netns
    if getattr(args, "address", None) or os.environ.get(netns.ENV):
        return None
    if netns.available():
        return subprocess.call(netns.command([sys.executable, "-m", "rnnlab"] + args.argv))
    print(f"rnnlab {args.command}: warning: no private network namespace here (unshare unavailable or unprivileged "
          f"user namespaces off), so the embedded Ray's servers listen on every interface of this machine (Ray's "
          f"token authentication still guards them)", file=sys.stderr)
    return None


def cmd_sweep(args) -> int:
    from rnnlab.scale import sweep
    if (args.config is None) == (args.resume is None):
        raise ValueError("sweep: give a sweep file (rnnlab sweep CONFIG --out DIR) or --resume DIR, not both")
    code = _embedded_ray_loopback_only(args)
    if code is not None:
        return code
    s = sweep.run(args.config, args.out, args.resume, args.address, args.workers)
    folder = args.resume or args.out
    print(sweep.table(s))
    print(f"\nsweep folder: {folder}  (summary.md, summary.json, report.html, curves.png, trials/)")
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
        _check_json(args, [args.data, args.checkpoint] + _inputs(cfg))
        panel = _recent_panel(spec, cfg, args.data)
        task = ForecastTask(panel, spec, fitted=True, backtest=True, name=Path(args.data).name)
        metrics = evaluate(model, task)
        print(f"{task.describe()}\n{Path(args.data).name} / {cfg.model}: "
              + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        _print_baselines(task)
        metrics["baselines"] = task.baselines()
    elif args.data:
        from rnnlab.tasks.supervised import SequenceTask
        model, cfg, encoding, _ = _data_run(args.checkpoint)
        _check_json(args, [args.data, args.checkpoint] + _inputs(cfg))
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
        _check_json(args, [args.checkpoint] + _inputs(cfg))
        task = build_task(cfg, info=meta.get("task_info", {}))
        metrics = evaluate(model, task)
        print(f"{cfg.task} / {cfg.model}: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        b = task.baseline()
        if hasattr(task, "baselines"):
            _print_baselines(task)
            metrics["baselines"] = task.baselines()
        elif b:
            print(f"baseline: {b[0]} {b[1]:.4f}")
    if args.json:
        _write_json(args.json, metrics)
    return 0


def _print_baselines(task, indent="", file=None):
    """A forecaster's baselines, scored as the model is on the same windows."""
    for name, m in task.baselines().items():
        print(f"{indent}baseline {name.replace('_', ' ')}: " + "  ".join(f"{k} {v:.4f}" for k, v in m.items()),
              file=file or sys.stdout)


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
    out = check_output(args.out, "--out", [args.data, args.checkpoint] + _inputs(cfg), args.force,
                       (".csv", ".parquet"))
    if args.chunk is not None and not args.each_step:
        from rnnlab.errors import ConfigError
        raise ConfigError("--chunk: the steps fed to the stream per call, an option of --each-step; add --each-step")
    from rnnlab.errors import check_int
    chunk = check_int("--chunk", args.chunk if args.chunk is not None else 1, 1)
    seqs = _read_like(cfg, encoding, args.data, False)
    id_name = cfg.id_col if seqs.ids is not None else "index"
    if args.each_step and encoding.problem != "tag":       # a deployed stream: the prediction after every step
        from rnnlab.tasks.supervised import stream_outputs
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
    out = check_output(args.out, "--out", [data, args.checkpoint] + _inputs(cfg), args.force, (".csv", ".parquet"))
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
    _check_json(args, [str(run)])
    card = card_data(run)                           # from the model file: current even for a run made before cards
    print(card_markdown(card))
    if args.json:
        _write_json(args.json, card)
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


def _overrides(args, skip):
    return {k: v for k, v in vars(args).items() if k not in skip and k not in ("command", "func", "argv")}


def cmd_compare(args) -> int:
    from rnnlab.study.compare import (
        check_entries, compare, compare_settings, check_runner, parse_entry, summary_columns, summary_rows,
        write_compare_report,
    )
    from rnnlab.training.config import read_toml, resolve
    from rnnlab.errors import ConfigError
    from rnnlab.study.report import text_table
    over = _overrides(args, ("config", "json", "models", "match", "params", "forget_bias_ablation", "threshold",
                             "report", "seeds", "workers", "runner", "force"))
    for key, why in (("out", "compare writes its report to --report and keeps no run folders"),
                     ("model", "compare trains the cells of --models")):
        if key in over:
            raise ConfigError(f"{key}: {why}; drop --{key}")
    file = read_toml(args.config) if args.config else {}
    st = compare_settings(file.get("compare", {}), {
        "entries": args.models, "match": args.match, "params": args.params, "seeds": args.seeds,
        "workers": args.workers, "runner": args.runner, "threshold": args.threshold,
        "forget_bias_ablation": args.forget_bias_ablation, "report": args.report})
    if st["diagnostics"] is not None and "diagnose_every" not in over:     # the flag wins, as for train
        if "diagnose_every" in file:
            raise ConfigError(f"{args.config}: compare.diagnostics and diagnose_every both set the steps between "
                              f"diagnostics records; give one of them")
        over["diagnose_every"] = st["diagnostics"]
    cfg = resolve(args.config, over, one_model=False, table="compare")
    from rnnlab.data.outputs import check_report_dir
    _check_json(args, _inputs(cfg, args))
    check_report_dir(st["report"], "--report", args.force)
    models = st["entries"]
    runner = check_runner(st["runner"], st["seeds"], st["workers"])
    specs = check_entries(models, cfg)
    cells = {cell for _, cell, _ in specs} | ({"lstm"} if st["forget_bias_ablation"] else set())
    shown = ",".join(label for label, _, _ in specs)
    for key, owners in cfg.set_options():           # applied to the entries of its cells; with none, ignored: refuse
        if not set(owners) & cells:
            raise ConfigError(f"{key}: an option of the {' and '.join(owners)} entries, and --models {shown} has "
                              f"none; drop {flag(key)} or add a {owners[0]} entry")
    if st["threshold"] is not None and st["threshold"][0] is not None:    # its metric against the task, first
        from rnnlab.study.compare import resolve_threshold
        from rnnlab.tasks import build_task
        resolve_threshold(build_task(cfg), st["threshold"])
    if runner == "ray":
        from rnnlab.scale.sweep import _tune
        _tune()                                     # Ray installed? told before any entry trains
        code = _embedded_ray_loopback_only(args)
        if code is not None:
            return code
    if not cfg.quiet:
        print(f"rnnlab compare: {cfg.task}, models {', '.join(label for label, _, _ in specs)}, {cfg.steps} steps "
              f"each, seed {cfg.seed}" + (f", {st['seeds']} seeds ({runner})" if st["seeds"] > 1 else ""), flush=True)

    def done(label, e):
        if not cfg.quiet:
            fin = "  ".join(f"{k} {v:.4g}" for k, v in e["final"].items())
            print(f"  {label}: {e['parameters']} parameters, {e['seconds']:.1f} s, validation {fin}", flush=True)

    res = compare(cfg, models, st["match"], st["params"], st["forget_bias_ablation"], st["threshold"],
                  progress=not cfg.quiet, on_model=done, seeds=st["seeds"], runner=runner, workers=st["workers"])
    print()
    print(text_table(summary_rows(res), summary_columns(res)))
    if res["baseline"]:
        print(f"baseline: {res['baseline'][0]} {res['baseline'][1]:.4g};  threshold: {res['threshold']['metric']} "
              f"{res['threshold']['value']:.4g}")
    from rnnlab.scale import sweep
    seeds_dir = Path(st["report"]) / "seeds"
    if runner == "ray":                             # every entry again over seeds, on the sweep runner
        entries = [(label, {k: v for k, v in e["config"].items()}) for label, e in res["models"].items()]
        manifest = sweep.manifest_for(cfg, entries, st["seeds"], res["threshold"]["metric"],
                                      res["threshold"]["value"])
        if (seeds_dir / sweep.MANIFEST).exists():
            import shutil
            shutil.rmtree(seeds_dir)                # the report folder is rewritten on every compare
        res["seeds"] = sweep.run(out=str(seeds_dir), manifest=manifest, workers=st["workers"])
        res["seeds"]["runner"] = "ray"
    if st["seeds"] > 1:
        res["seeds"]["table"] = sweep.table(res["seeds"])
        where = f"trials in {seeds_dir}" if runner == "ray" else f"{runner} runner"
        print(f"\nover {st['seeds']} seeds ({cfg.seed} .. {cfg.seed + st['seeds'] - 1}), {where}:")
        print(sweep.table(res["seeds"]))
    paths = write_compare_report(res, st["report"])
    print(f"report: {paths['html']}  (figures in {paths['figures']}, numbers in {paths['json']})")
    if args.json:
        from rnnlab.study.report import write_json
        write_json(args.json, res)
    return 0


def _parse_range(text):
    from rnnlab.errors import ConfigError
    try:
        lo, hi, n = text.split(":")
        lo, hi, n = float(lo), float(hi), int(n)
    except ValueError:
        raise ConfigError(f"sweep: expected LOW:HIGH:COUNT such as 0.5:1.5:11, got {text!r}") from None
    if n < 1 or lo <= 0 or hi <= 0 or hi < lo:
        raise ConfigError(f"sweep: expected 0 < LOW <= HIGH and COUNT >= 1, got {text!r}")
    return np.linspace(lo, hi, n)


def _layer_gradients(args, out) -> int:
    """Diagnostics of a bare layer (e.g. imported from torch or ONNX) on standard-normal input."""
    from rnnlab.study import diagnostics as diag
    from rnnlab.study import report
    from rnnlab.errors import ConfigError
    from rnnlab.interop.files import load_layer
    layer = load_layer(args.checkpoint)
    T = getattr(args, "seq_len", 50)
    B = getattr(args, "batch_size", 16)
    if args.at_step is not None and not 0 <= args.at_step < T:
        raise ConfigError(f"--at-step: expected a time step in [0, {T - 1}] (the sequence has {T} steps), got {args.at_step}")
    x = np.random.default_rng(getattr(args, "seed", 0)).standard_normal((T, B, layer.input_size))
    if layer.batch_first:
        x = x.transpose(1, 0, 2)
    g = diag.layer_grad_norms(layer, x)
    xt = x.transpose(1, 0, 2) if layer.batch_first else x
    j = diag.jacobian_norms(layer, xt)
    label = f"{type(layer).__name__} ({Path(args.checkpoint).name})"
    print(f"{label}: {layer.num_parameters()} parameters, spectral radius {diag.spectral_radius(layer):.3f}; "
          f"loss <h_T, g> on N(0, 1) input, T={T}, B={B}")
    print("  step  distance   ||dL/dh_t||   ||dh_T/ds_t||_2")
    for t in sorted({0, T // 2, max(0, T - 11), T - 1} | ({args.at_step} if args.at_step is not None else set())):
        print(f"  {t:4d}  {T - 1 - t:8d}   {g['grad_norm_h'][t]:11.4g}   {j[t]:15.4g}")
    figs = [report.plot_grad_norms({label: g["grad_norm_h"]}, out / "figures"),
            report.plot_grad_norms({label: j}, out / "figures", "jacobian_norms", "Exact Jacobian norm",
                                   r"$\|\partial h_T/\partial s_t\|_2$")]
    paths = report.write_report(out, "rnnlab gradients", [("Gradient flow", f"{label}", figs)])
    print(f"report: {paths['html']}")
    if args.json:
        report.write_json(args.json, {"layer": {"label": label, "parameters": layer.num_parameters(),
                                                "spectral_radius": diag.spectral_radius(layer), **g,
                                                "jacobian_norm": j}})
    return 0


def cmd_gradients(args) -> int:
    from rnnlab.study import diagnostics as diag
    from rnnlab.study import report
    from rnnlab.study.compare import gradient_report
    from rnnlab.training.config import TrainConfig, resolve
    from rnnlab.errors import ConfigError
    from rnnlab.model.sequence_model import SequenceModel
    from rnnlab.tasks import build_task
    from rnnlab.training.trainer import load_model, model_config_for
    from rnnlab.data.outputs import check_report_dir
    _check_json(args, [args.checkpoint, args.config] + _run_data(args.checkpoint))
    out = check_report_dir(args.report, "--report", args.force)
    results, figs = {}, {}
    if args.sweep_cells is not None and not args.sweep:
        raise ConfigError(f"--sweep-cells: the cells of a spectral-radius sweep, and no --sweep LOW:HIGH:COUNT is given; "
                          f"add --sweep or drop --sweep-cells, got --sweep-cells {args.sweep_cells}")
    if args.sweep:
        radii = _parse_range(args.sweep)
        cells = [c.strip() for c in (args.sweep_cells or ",".join(diag.SWEEP_CELLS)).split(",") if c.strip()]
        res = diag.sweep(radii, cells, T=args.sweep_len, hidden_size=args.sweep_hidden, seed=getattr(args, "seed", 0))
        figs["sweep"] = report.plot_sweep(res, out / "figures")
        results["sweep"] = res
        far = args.sweep_len - 1
        print(f"sweep: relative ||dL/dh_t|| at distance {far} (T={args.sweep_len}, H={args.sweep_hidden})")
        w = max([10] + [len(c) for c in cells])
        print("  radius  " + "  ".join(f"{c:>{w}s}" for c in cells))
        for i, rho in enumerate(radii):
            print(f"  {rho:6.3f}  " + "  ".join(f"{res[c][i, far]:{w}.3g}" for c in cells))
    model_flags = _overrides(args, ("config", "json", "checkpoint", "sweep", "sweep_cells", "sweep_len", "sweep_hidden",
                                    "at_step", "report", "force"))
    layer_file = bool(args.checkpoint) and _load_any(args.checkpoint)[0] == "layer"
    if args.checkpoint:                              # a trained model's settings are its own
        unused = sorted(k for k in model_flags if not (layer_file and k in ("seq_len", "batch_size", "seed")))
        if unused or args.config:
            given = unused[0] if unused else "config"
            raise ConfigError(f"{given}: {flag(given)} sets up a fresh model, and {args.checkpoint} is "
                              f"a trained {'layer' if layer_file else 'model'}; drop it"
                              + (" (a layer file takes --seq-len, --batch-size and --seed)" if layer_file else ""))
    if args.checkpoint or not args.sweep or model_flags or args.config:
        if layer_file:
            return _layer_gradients(args, out)
        if args.checkpoint:
            model, meta = load_model(args.checkpoint)
            cfg = TrainConfig.from_dict(meta["config"])
            task = build_task(cfg, info=meta.get("task_info", {}))
            label = f"{cfg.model} ({Path(args.checkpoint).name})"
        else:
            cfg = resolve(args.config, model_flags)
            task = build_task(cfg)
            model = SequenceModel(model_config_for(cfg, task), seed=np.random.default_rng([cfg.seed, 0]))
            label = f"{cfg.model} (fresh)"
        batch = diag.diagnostic_batch(task)
        g = gradient_report(model, batch)
        T = len(g["grad_norm_h"])
        if args.at_step is not None and not 0 <= args.at_step < T:
            raise ConfigError(f"--at-step: expected a time step in [0, {T - 1}] (the sequence has {T} steps), "
                              f"got {args.at_step}")
        results["model"] = {"label": label, "parameters": model.num_parameters(), **g}
        print(f"{label}: {model.num_parameters()} parameters; task {task.describe()}")
        print("  spectral radius of W_hh blocks: " + ("; ".join(
            f"{k}: " + ", ".join(f"{gate} {v:.3f}" for gate, v in blocks.items()) for k, blocks in g["spectral"].items())
            or "none (no recurrent weights: the carry is computed from x_t)"))
        if "carry_product" in g["gates"]:
            cp = g["gates"]["carry_product"]
            print(f"  diagonal carry |dh_t/dh_(t-1)|: mean {np.mean(g['gates']['carry_mean']):.4f}; mean product over "
                  f"{len(cp) - 1} steps {cp[-1]:.3g}")
        steps = sorted({T - 1, max(0, T - 11), T // 2, 0} | ({args.at_step} if args.at_step is not None else set()))
        print("  step  distance   ||dL/dh_t||   ||dh_T/ds_t||_2" + ("   ||dL/dc_t||" if "grad_norm_c" in g else ""))
        for t in steps:
            line = f"  {t:4d}  {T - 1 - t:8d}   {g['grad_norm_h'][t]:11.4g}   {g['jacobian_norm'][t]:15.4g}"
            if "grad_norm_c" in g:
                line += f"   {g['grad_norm_c'][t]:11.4g}"
            print(line)
        for k, v in g["gates"].get("saturation", {}).items():
            print(f"  gate {k}: {100 * v:.1f}% saturated (< 0.05 or > 0.95)")
        if len(g["layers"]) > 1:                    # every layer and direction: the Jacobian from its first step
            print("  ||dh_T/ds_0||_2 (the first step, in each direction's own order): " + "; ".join(
                f"{name} {next((v for v in lay['jacobian_norm'] if np.isfinite(v)), np.nan):.4g}"
                for name, lay in g["layers"].items()))
        series = {label: g["grad_norm_h"]}
        if "grad_norm_c" in g:
            series[label.replace("(", "(cell c, ")] = g["grad_norm_c"]
        figs["grad"] = report.plot_grad_norms(series, out / "figures")
        more = []
        for name, lay in g["layers"].items():        # every layer and direction, each figure titled with its own
            where = name if "reverse" in name else f"{name}, forward"
            stem = "jacobian_norms" if name == "layer 0" else f"jacobian_norms_{name.replace(' ', '_')}"
            fig = report.plot_grad_norms({label: lay["jacobian_norm"]}, out / "figures", stem,
                                         f"Exact Jacobian norm ||dh_T/ds_t||_2 ({where})",
                                         r"$\|\partial h_T/\partial s_t\|_2$")
            if name == "layer 0":
                figs["jac"] = fig
            else:
                more.append(fig)
            if lay["gates"]:
                gfig = report.plot_gate_stats({label: lay["gates"]}, out / "figures", "gates" if name == "layer 0"
                                              else f"gates_{name.replace(' ', '_')}", title=where)
                if name == "layer 0":
                    figs["gates"] = gfig
                else:
                    more.append(gfig)
    sections = []
    if "grad" in figs:
        sections.append(("Gradient flow", "Loss at the last step; norms against the distance from it (the gradient "
                         "norm: the top layer's forward direction; the Jacobians and gates: the layer and direction "
                         "in each title).",
                         [figs["grad"], figs["jac"]] + ([figs["gates"]] if "gates" in figs else []) + more))
    if args.checkpoint and not layer_file:         # a run folder's diagnostics.jsonl, over training
        from rnnlab.training.trainer import read_diagnostics
        p = Path(args.checkpoint)
        recs = read_diagnostics(p if p.is_dir() else p.parent)
        if recs:
            sections.append(("Over training", f"The {len(recs)} records of diagnostics.jsonl (--diagnose-every): the "
                             "ratio ||dL/dh_0|| / ||dL/dh_T|| of the top layer, the spectral norm of each W_hh and the "
                             "saturation of each gate per layer and direction, at each record's step.",
                             [report.plot_over_training({label: recs}, out / "figures")]))
            results["over_training"] = recs
    if "sweep" in figs:
        sections.append(("Spectral-radius sweep", "W_hh rescaled to each spectral radius; log10 of ||dL/dh_t|| "
                         "relative to the last step.", [figs["sweep"]]))
    paths = report.write_report(out, "rnnlab gradients", sections)
    print(f"report: {paths['html']}")
    if args.json:
        report.write_json(args.json, results)
    return 0


def _load_any(path, with_meta=False):
    """A run folder / model checkpoint -> ("model", SequenceModel); a layer file -> ("layer", layer).
    ``with_meta``: (kind, object, the model's metadata or None)."""
    from rnnlab.model.checkpoint import load_checkpoint
    from rnnlab.interop.files import load_layer
    from rnnlab.training.trainer import load_model
    p = Path(path)
    if p.is_file():
        _, meta = load_checkpoint(p)
        if meta.get("kind") == "layer":
            return ("layer", load_layer(p), None) if with_meta else ("layer", load_layer(p))
    model, meta = load_model(p)
    return ("model", model, meta) if with_meta else ("model", model)


def _save_tensors(tensors, out):
    from safetensors.numpy import save
    from rnnlab.data.outputs import write_output
    write_output(out, save({k: np.ascontiguousarray(v) for k, v in tensors.items()}))


def cmd_export(args) -> int:
    from rnnlab.errors import ConfigError
    from rnnlab.data.outputs import check_output
    out = check_output(args.out, "--out", [args.checkpoint] + _run_data(args.checkpoint), args.force,
                       (".onnx",) if args.format == "onnx" else None)
    if args.format != "onnx" and out.suffix in (".onnx", ".pt", ".pth", ".csv", ".parquet", ".json"):
        raise ConfigError(f"--out: --format {args.format} writes a safetensors file; {out.name!r} names another "
                          f"format (use .safetensors)")
    for flag_name in ("lengths", "state", "batch_first"):
        if getattr(args, flag_name) and args.format != "onnx":
            raise ConfigError(f"{flag_name}: --{flag_name.replace('_', '-')} changes the ONNX graph; --format "
                              f"{args.format} writes weights only")
    kind, obj, meta = _load_any(args.checkpoint, with_meta=True)
    if (args.state or args.batch_first) and kind != "model":
        raise ConfigError(f"{'state' if args.state else 'batch_first'}: an option of a model's export; a layer file "
                          f"exports with its own batch_first and h0/c0 inputs")
    if args.format in ("torch", "keras"):           # what the peer would compute otherwise: refused before writing
        from rnnlab.interop.torch import check_exportable
        check_exportable(obj, args.format)
    if args.format == "onnx":
        from rnnlab.interop.onnx import export
        kw, what = {}, ""
        if kind == "model":
            from rnnlab.data.encoding import Encoding
            info = meta.get("task_info", {})
            enc = Encoding.from_dict(info["encoding"]) if "encoding" in info else None
            kw = {"encoding": enc, "state": args.state, "batch_first": args.batch_first}
            if "forecast" in info:
                from rnnlab.tasks.forecast import ForecastSpec
                kw["forecast"] = ForecastSpec.from_dict(info["forecast"])
            what = ("; raw features in, standardised inside" if enc is not None else "") + (
                f"; classes in metadata_props" if enc is not None and enc.classes is not None else "")
            if "forecast" in info:
                what = ("; a window in the data's units in (NaN: no value), prediction (B, horizon, targets, "
                        "quantiles) out")
        export(obj, out, lengths=args.lengths, **kw)
        print(f"wrote {out} (ONNX opset 17; inputs {'inputs' if kind == 'model' else 'x'}"
              f"{', lengths' if args.lengths else ''}{', h0' + (', c0' if obj.rnn.cell_name == 'lstm' else '') if args.state else ''}"
              f"{what})")
    elif args.format == "torch":
        _save_tensors(obj.state_dict(), out)
        print(f"wrote {out} (a torch state_dict as safetensors: safetensors.torch.load_file('{out}'))")
    else:
        from rnnlab.interop.keras import to_keras
        layer = obj.rnn if kind == "model" else obj
        tensors = {}
        for l, ws in enumerate(to_keras(layer)):
            names = ["kernel", "recurrent_kernel", "bias"][:len(ws) // layer.num_directions]
            for d in range(layer.num_directions):
                for i, n in enumerate(names):
                    tensors[f"layer{l}{'.backward' if d else ''}.{n}"] = ws[d * len(names) + i]
        if kind == "model":                         # the output layer in Keras' Dense layout
            tensors["head.kernel"] = np.ascontiguousarray(obj.named_parameters()["head.weight"].T)
            tensors["head.bias"] = obj.named_parameters()["head.bias"].copy()
        _save_tensors(tensors, out)
        print(f"wrote {out} (Keras weights per layer: kernel, recurrent_kernel, bias"
              f"{'; the output layer as a Dense kernel and bias' if kind == 'model' else ''})")
    return 0


def cmd_import(args) -> int:
    from rnnlab.errors import ConfigError
    from rnnlab.interop.files import save_layer
    from rnnlab.data.outputs import check_output
    check_output(args.out, "--out", [args.file], args.force, (".safetensors",))
    if args.format == "onnx":
        from rnnlab.interop.onnx import import_layer
        for key in ("cell", "batch_first"):        # an ONNX graph says both itself
            if getattr(args, key):
                raise ConfigError(f"{key}: an ONNX file names its own cell and layout; drop {flag(key)}")
        layer = import_layer(args.file)
    elif args.format == "torch":
        from rnnlab.interop.torch import load_torch_state_dict
        if not args.cell:
            raise ConfigError("cell: --cell rnn|lstm|gru is needed to read a torch state_dict")
        layer = load_torch_state_dict(args.file, args.cell, batch_first=args.batch_first)
    else:
        from safetensors.numpy import load_file
        from rnnlab.interop.keras import from_keras
        if not args.cell:
            raise ConfigError("cell: --cell rnn|lstm|gru is needed to read Keras weights")
        t = {k: v for k, v in load_file(args.file).items() if k.startswith("layer")}
        if not t:
            raise ConfigError(f"file: {args.file} has no 'layer<N>.kernel' tensors (write them with rnnlab export --format keras)")
        n = 1 + max(int(k.split(".")[0][5:]) for k in t)
        bidir = any(".backward." in k for k in t)
        weights = []
        for l in range(n):
            ws = []
            for d in ([""] + ([".backward"] if bidir else [])):
                ws += [t[f"layer{l}{d}.{k}"] for k in ("kernel", "recurrent_kernel", "bias") if f"layer{l}{d}.{k}" in t]
            weights.append(ws)
        layer = from_keras(args.cell, weights, bidirectional=bidir, batch_first=args.batch_first)
    save_layer(layer, args.out)
    print(f"wrote {args.out}: {layer!r}, {layer.num_parameters()} parameters")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rnnlab", description="RNN, LSTM and GRU from first principles.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model on a task", description="Train a model. Every option can come "
                       "from a TOML file (--config) or a flag; flags win.")
    t.add_argument("--config", help="TOML file with options (keys as the flags, with underscores)")
    t.add_argument("--json", help="also write the final metrics to this JSON file")
    _add_config_flags(t)
    t.add_argument("--force", action="store_true", help="replace an existing output file (never an input)")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("resume", help="continue a run from its last checkpoint")
    r.add_argument("run_dir")
    r.add_argument("--steps", type=int, default=None, help="new total number of steps (default: the run's)")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=cmd_resume)

    sw = sub.add_parser("sweep", help="a grid or random sweep over training keys and seeds, on Ray Tune",
                        description="Run the trials of a sweep file on Ray Tune (an embedded local Ray unless "
                        "--address names a cluster) and summarise them over seeds. See rnnlab.scale.sweep for the file.")
    sw.add_argument("config", nargs="?", help="TOML file: the base training keys and a [sweep] table")
    sw.add_argument("--out", help="the sweep's folder (trials/, summary.md, report.html ...)")
    sw.add_argument("--resume", metavar="DIR", help="continue the sweep in DIR: unfinished trials only")
    sw.add_argument("--address", help="an existing Ray cluster (host:port); default: a local Ray on this machine")
    sw.add_argument("--workers", type=int, help="trials at once on the local Ray (default: the CPUs)")
    sw.set_defaults(func=cmd_sweep)

    e = sub.add_parser("evaluate", help="validation metrics of a trained model")
    e.add_argument("checkpoint", help="run folder, model.safetensors or checkpoint.safetensors")
    e.add_argument("--data", help="score a held-out file (same layout as the run's --data) instead of the "
                   "run's validation data")
    e.add_argument("--json", help="write the metrics to this JSON file")
    e.add_argument("--force", action="store_true", help="replace an existing output file (never an input)")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="predictions of a run trained on --data for a new file",
                        description="Predict for every sequence (every step when tagging) of a file in the run's "
                        "data layout; the target column may be absent. Features are standardised and labels "
                        "mapped with the run's stored statistics.")
    pr.add_argument("checkpoint", help="run folder, model.safetensors or checkpoint.safetensors")
    pr.add_argument("--data", required=True, help=".npz, .csv or .parquet file of sequences; for a forecaster, a "
                    "table of each series' recent values (and the horizon's rows of known future covariates)")
    pr.add_argument("--out", required=True, help="predictions file: .csv or .parquet (written atomically)")
    pr.add_argument("--force", action="store_true", help="replace an existing output file (never an input)")
    pr.add_argument("--each-step", action="store_true", help="a row per step: the prediction after each step, the "
                    "sequences fed to an rnnlab.Stream as a deployed model reads them (a tagger's rows already are)")
    pr.add_argument("--chunk", type=int, default=None, help="--each-step: steps fed per call (default 1)")
    pr.set_defaults(func=cmd_predict)

    inf = sub.add_parser("info", help="the model card of a run: model, data and its hash, metrics beside the "
                         "baseline, how to load it in rnnlab, onnxruntime and torch")
    inf.add_argument("run", help="run folder (or its model.safetensors)")
    inf.add_argument("--json", help="also write the card as JSON to this file")
    inf.add_argument("--force", action="store_true", help="replace an existing --json file (never an input)")
    inf.set_defaults(func=cmd_info)

    s = sub.add_parser("sample", help="generate text from a character model")
    s.add_argument("checkpoint", help="run folder, model.safetensors or checkpoint.safetensors")
    s.add_argument("--length", type=int, default=300)
    s.add_argument("--prompt", default="")
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--top-k", type=int, default=0)
    s.add_argument("--seed", type=int, default=None)
    s.set_defaults(func=cmd_sample)

    cp = sub.add_parser("compare", help="train RNN, LSTM and GRU side by side; table, figures, report.html",
                        description="Train several models on one task with the same data and seed, at matched "
                        "parameter counts (the LSTM at --hidden-size sets the count), and report metrics, speed "
                        "and gradient flow.")
    cp.add_argument("--config", help="TOML file: training keys at the top, compare's own in a [compare] table "
                    "(entries, match, params, seeds, workers, runner, threshold, forget_bias_ablation, report, "
                    "diagnostics); flags override it")
    cp.add_argument("--models", default=None, help="comma-separated entries: a cell with +key=value settings of its "
                    "own model or training, e.g. gru+reset=before,rnn+recurrent_init=orthogonal,lstm+lr=0.01 "
                    "(+label=NAME names one; default: rnn,lstm,gru)")
    cp.add_argument("--match", choices=("params", "hidden"), default=None,
                    help="match parameter counts (default) or use the same hidden size")
    cp.add_argument("--params", type=int, default=None, help="target parameter count (default: the LSTM's)")
    cp.add_argument("--forget-bias-ablation", action=argparse.BooleanOptionalAction, default=None,
                    help="also train the LSTM with forget bias 0 and 1")
    cp.add_argument("--threshold", default=None, metavar="METRIC=VALUE",
                    help="what counts as solved, e.g. mse=0.01 (a bare VALUE: of the task's default metric)")
    cp.add_argument("--report", default=None, help="folder for figures, summary.md, report.html (default: "
                    "runs/compare)")
    cp.add_argument("--seeds", type=int, default=None, help="train every entry with this many seeds and report "
                    "mean, sd and 95%% interval")
    cp.add_argument("--workers", type=int, default=None, help="--seeds: processes at once (pool) or Ray's CPUs")
    cp.add_argument("--runner", choices=("serial", "pool", "ray"), default=None, help="--seeds: one after another "
                    "(default), a local process pool (the default with --workers N > 1), or Ray Tune (the sweep "
                    "runner; needs rnnlab[sweep])")
    cp.add_argument("--json", help="also write the numbers to this JSON file")
    _add_config_flags(cp)
    cp.add_argument("--force", action="store_true", help="replace an existing output file (never an input)")
    cp.set_defaults(func=cmd_compare)

    g = sub.add_parser("gradients", help="gradient-flow diagnostics of a model (fresh or a checkpoint) and sweeps")
    g.add_argument("checkpoint", nargs="?", help="run folder or checkpoint (default: a fresh model from the flags)")
    g.add_argument("--config", help="TOML file with options for a fresh model")
    g.add_argument("--sweep", help="spectral-radius sweep LOW:HIGH:COUNT, e.g. 0.5:1.5:11")
    g.add_argument("--sweep-cells", default=None, help="the sweep's cells (default: rnn-tanh,rnn-linear,lstm,gru): any cell "
                   "with options, as compare's entries (e.g. gru+reset=before,indrnn,lru), or rnn-tanh, rnn-linear")
    g.add_argument("--sweep-len", type=int, default=100, help="sequence length of the sweep")
    g.add_argument("--sweep-hidden", type=int, default=64, help="hidden size of the sweep's layers")
    g.add_argument("--at-step", type=int, default=None, help="also print the norms at this time step")
    g.add_argument("--report", default="runs/gradients", help="folder for figures and report.html")
    g.add_argument("--json", help="write the numbers to this JSON file")
    _add_config_flags(g)
    g.add_argument("--force", action="store_true", help="replace an existing output file (never an input)")
    g.set_defaults(func=cmd_gradients)

    ex = sub.add_parser("export", help="export a trained model or a layer file to ONNX, torch or Keras weights")
    ex.add_argument("checkpoint", help="run folder, model.safetensors, or a layer file from `rnnlab import`")
    ex.add_argument("--format", choices=("onnx", "torch", "keras"), default="onnx")
    ex.add_argument("--out", required=True)
    ex.add_argument("--lengths", action="store_true", help="ONNX: add a 'lengths' input for ragged batches")
    ex.add_argument("--state", action="store_true",
                    help="ONNX, a model: state inputs h0 (c0) and outputs h_n (c_n), to run a stream chunk by chunk")
    ex.add_argument("--batch-first", action="store_true", help="ONNX, a model: inputs (B, T, F) instead of (T, B, F)")
    ex.add_argument("--force", action="store_true", help="replace an existing output file (never an input)")
    ex.set_defaults(func=cmd_export)

    im = sub.add_parser("import", help="read an ONNX file, torch state_dict or Keras weights into an rnnlab layer file")
    im.add_argument("file")
    im.add_argument("--format", choices=("onnx", "torch", "keras"), default="onnx")
    im.add_argument("--cell", choices=tuple(CELLS), help="torch and keras: which cell the weights are")
    im.add_argument("--batch-first", action="store_true")
    im.add_argument("--out", required=True, help="layer file to write (.safetensors)")
    im.add_argument("--force", action="store_true", help="replace an existing output file (never an input)")
    im.set_defaults(func=cmd_import)

    lb = sub.add_parser("lab", help="the live gradient lab: a local page where a model trains and its gradients are "
                        "measured as you watch", description="Serve the lab on 127.0.0.1 (loopback only) and open it "
                        "in the browser. Needs the lab extra: pip install 'rnnlab[lab]'.")
    lb.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: a free one)")
    lb.add_argument("--no-browser", action="store_true", help="print the address only")
    lb.add_argument("--runs", default="runs/lab", help="folder for the lab's run folders (default: runs/lab)")
    lb.set_defaults(func=cmd_lab)

    c = sub.add_parser("check", help="gradient-check every layer kind (BPTT vs finite differences)")
    c.add_argument("--seq-len", type=int, default=6)
    c.add_argument("--num-layers", type=int, default=2)
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=cmd_check)

    w = sub.add_parser("warmup", help="compile the kernels ahead (once per machine; later processes load them)")
    w.add_argument("--dtype", nargs="+", default=["float32"], choices=("float32", "float64"))
    from rnnlab.engine.warmup import CELL_CONFIGS
    w.add_argument("--cell", nargs="+", choices=tuple(CELL_CONFIGS), help="only these (default: every cell)")
    w.add_argument("--inference", action="store_true",
                   help="the inference forwards only (a serving process runs no backward)")
    w.add_argument("--quiet", action="store_true")
    w.set_defaults(func=cmd_warmup)
    return p


def _users_words(exc, dests=None) -> str:
    """One line in the command line's vocabulary: a leading config key becomes its flag (lr_gamma -> --lr-gamma)
    where the command has that flag."""
    from rnnlab.training.config import TrainConfig
    from rnnlab.errors import RnnlabError
    if isinstance(exc, OSError) and not isinstance(exc, RnnlabError) and exc.filename:
        msg = f"{exc.filename}: {exc.strerror or exc}"
    else:
        msg = str(exc)
    msg = " ".join(msg.split())                     # one line, always
    key, colon, rest = msg.partition(":")
    if colon and key in TrainConfig.fields() and (dests is None or key in dests):
        return f"{flag(key)}:{rest}"
    return msg


def _flag_dests(parser, args) -> set:
    """The option names (dests) of the command that ran: its config keys that are also its flags."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
    return {a.dest for a in sub._actions if a.option_strings}


def main(argv=None) -> int:
    parser = build_parser()
    parser.argv = argv
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    import warnings
    with warnings.catch_warnings():
        # NumPy's overflow warnings: the library checks every result for NaN/Inf and says so in one line
        warnings.simplefilter("ignore", RuntimeWarning)
        return _run(parser, args)


def _run(parser, args) -> int:
    from rnnlab.scale import distributed
    from rnnlab.errors import RnnlabError
    try:
        return args.func(args)
    except BrokenPipeError:                         # `rnnlab ... | head` closed the pipe: stop quietly, as cat does
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (RnnlabError, ValueError, TypeError, OSError) as exc:
        print(f"rnnlab {args.command}: error: {_users_words(exc, _flag_dests(parser, args))}", file=sys.stderr)
        distributed.abort(2)                        # a distributed run: end the other ranks too
        return 2
    except MemoryError as exc:
        sizes = [f"--{k.replace('_', '-')} ({getattr(args, k)})" for k in ("batch_size", "seq_len", "hidden_size",
                                                                           "num_layers") if hasattr(args, k)]
        hint = f"; lower {', '.join(sizes)}" if sizes else ""
        print(f"rnnlab {args.command}: error: out of memory ({exc or 'an allocation failed'}){hint}", file=sys.stderr)
        distributed.abort(2)
        return 2
    except KeyboardInterrupt:
        print(f"rnnlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
