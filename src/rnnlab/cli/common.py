"""What the commands share: the files a command reads (so an output may not be one of them), ``--json`` checked
before the work and written after it, a training run's summary, a forecaster's baselines, the flags that are
training keys, and the loopback-only rerun of a command that starts an embedded Ray.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def print_summary(r, file=None):
    """A finished (or resumed) training run: model, task, steps, validation beside the baseline, warnings."""
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


def inputs(cfg, args=None) -> list:
    """The files a command reads (its outputs may not be any of them)."""
    from rnnlab.tasks.forecast import DATASETS
    files = [cfg.data if not (cfg.task == "forecast" and cfg.data in DATASETS) else "", cfg.val_data, cfg.ts_train,
             cfg.ts_test]
    files += [cfg.text] if cfg.task == "chars" and cfg.text != "shakespeare" else []
    files += [getattr(args, "config", None)] if args is not None else []
    return [f for f in files if f]


def run_data(checkpoint) -> list:
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
    return inputs(cfg)


def check_json(args, files=()):
    """--json checked before the work (it is written after); ``files``: the command's inputs."""
    if getattr(args, "json", None):
        from rnnlab.data.outputs import check_output
        check_output(args.json, "--json", files, getattr(args, "force", False))


def write_json(path, obj):
    from rnnlab.data.outputs import write_output
    write_output(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode("utf-8"), "--json")


def print_baselines(task, indent="", file=None):
    """A forecaster's baselines, scored as the model is on the same windows."""
    for name, m in task.baselines().items():
        print(f"{indent}baseline {name.replace('_', ' ')}: " + "  ".join(f"{k} {v:.4f}" for k, v in m.items()),
              file=file or sys.stdout)


def overrides(args, skip):
    """The options given on the command line, as keyword arguments, less those in ``skip``."""
    return {k: v for k, v in vars(args).items() if k not in skip and k not in ("command", "func", "argv")}


def loopback_only(args):
    """The exit code of this same command rerun in a loopback-only network namespace (``rnnlab.scale.netns``), or
    None to go on here (inside one already, a cluster address given, or no namespace possible: then a warning).
    The command line's own: it reruns ``python -m rnnlab`` with the same arguments."""
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

