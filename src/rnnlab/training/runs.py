"""A run's outcome: the ``RunResult`` that ``train`` returns, and the run folder, what ``train`` writes there and
``resume``, ``evaluate`` and ``load_model`` read back.

``check_run_dir`` and ``prepare_run_dir`` make a new one (config.toml, an empty metrics.jsonl); ``save_model``
writes the final weights and ``load_model`` reads them (or a checkpoint); ``same_run`` checks that a folder's
checkpoint still belongs to its config and data before a resume, ``read_changes`` replays the settings changed
mid-run, ``drop_records_after`` removes the records a killed run wrote after its last checkpoint, and
``read_diagnostics`` reads the gradient-flow records.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rnnlab.data.outputs import FINAL, RUN_FILES
from rnnlab.errors import CheckpointError, ConfigError
from rnnlab.model.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from rnnlab.model.sequence_model import ModelConfig, SequenceModel
from rnnlab.training.config import TrainConfig, write_toml

CHECKPOINT = "checkpoint.safetensors"
CHANGES = "changes.jsonl"            # settings changed mid-run (the lab's lr and clip), each with its step
CHANGEABLE = ("lr", "clip")


@dataclass
class RunResult:
    """What a training run gives back (``train``, ``resume``, ``Trainer.fit``): this process's records, the final
    validation metrics, the timings and counters, the model and its task."""
    config: TrainConfig
    records: list = field(default_factory=list)     # every metrics.jsonl record of this process
    final: dict = field(default_factory=dict)       # last validation metrics
    baseline: tuple | None = None
    seconds: float = 0.0
    train_seconds: float = 0.0                      # time inside training steps only (no evaluation, no I/O)
    step_seconds: list = field(default_factory=list)  # each training step's time (the first includes compiling)
    steps_run: int = 0
    stopped_early: bool = False                     # patience ran out; the weights are the best evaluation's
    best_step: int | None = None                    # early stopping: the step of the best validation loss
    clipped_steps: int = 0
    skipped_steps: int = 0
    warnings: list = field(default_factory=list)
    diagnostics: list = field(default_factory=list)  # gradient-flow records (config diagnose_every)
    model: SequenceModel | None = None
    task: object = None
    out: Path | None = None
    rank: int = 0                                   # distributed: this process's rank (0 writes and reports)


def save_model(path, model: SequenceModel, task, cfg: TrainConfig, metrics: dict):
    """Final weights with what `evaluate` and `sample` need to rebuild the model and the task's view of data."""
    base = task.baseline()
    report = getattr(task, "class_report", None)        # a classifier or tagger of data: per class, for the card
    save_checkpoint(path, {k: v for k, v in model.named_parameters().items()},
                    {"kind": "model", "config": cfg.to_dict(), "model_config": model.config.to_dict(),
                     "task_info": task.info(), "metrics": metrics, "description": task.describe(),
                     "baseline": None if base is None else [base[0], float(base[1])],
                     "baselines": task.baselines() if hasattr(task, "baselines") else None,
                     "class_report": report(model) if report is not None else None})


def load_model(path) -> tuple[SequenceModel, dict]:
    """Load ``model.safetensors`` (or a training checkpoint, or a run folder) -> (model, meta)."""
    path = Path(path)
    if path.is_dir():
        for name in (FINAL, CHECKPOINT):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise CheckpointError(f"{path}: no {FINAL} or {CHECKPOINT} in this folder")
    tensors, meta = load_checkpoint(path)
    if "model_config" not in meta:
        raise CheckpointError(f"{path}: no model configuration in the checkpoint metadata")
    model = SequenceModel(ModelConfig.from_dict(meta["model_config"]))
    prefix = "model/" if meta.get("kind") == "training" else ""
    model.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
                          if prefix else tensors)
    return model, meta


def check_run_dir(out: str) -> None:
    """Refuse an --out that would lose something: a file, a run already there, or a folder holding files with
    the names rnnlab writes that rnnlab did not write."""
    if not out:
        return
    from rnnlab.data.outputs import check_folder
    run_dir = check_folder(out, "out", "--out names a folder for the run")
    if (run_dir / "config.toml").exists():
        raise ConfigError(f"out: {run_dir} already holds a run; continue it with `rnnlab resume {run_dir}` "
                          f"or choose another --out")
    foreign = [n for n in RUN_FILES if (run_dir / n).exists()]
    if foreign:
        raise ConfigError(f"out: {run_dir} holds {', '.join(foreign)} but no config.toml, so not a run of rnnlab's; "
                          f"rnnlab would write over them -- choose another --out")


def absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """The data files as absolute paths, so the run's config works from any folder (resume, evaluate, gradients)."""
    import dataclasses
    from rnnlab.tasks.forecast import DATASETS
    shipped = cfg.task == "forecast" and cfg.data in DATASETS        # a statsmodels series, named, not a path
    named = {"data": "" if shipped else cfg.data, "val_data": cfg.val_data, "ts_train": cfg.ts_train,
             "ts_test": cfg.ts_test}
    import urllib.parse
    uri = cfg.mlflow_uri.strip()
    if uri and not urllib.parse.urlparse(uri).scheme and uri.lower() not in ("databricks", "databricks-uc", "uc"):
        named["mlflow_uri"] = uri                           # a plain folder path names the same store from anywhere
    if cfg.text != "shakespeare":
        named["text"] = cfg.text
    return dataclasses.replace(cfg, **{k: str(Path(v).expanduser().resolve()) for k, v in named.items() if v})


def prepare_run_dir(out: str, cfg: TrainConfig) -> Path | None:
    """A new run folder ``out`` (checked by ``check_run_dir``) with the run's config.toml and an empty
    metrics.jsonl; None without ``out``."""
    if not out:
        return None
    check_run_dir(out)
    run_dir = Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_toml(run_dir / "config.toml", cfg.to_dict())
    atomic_write(run_dir / "metrics.jsonl", b"")
    return run_dir


# what a resumed run may change: its length and how it reports; anything else would make it another run
RESUMABLE = ("steps", "epochs", "quiet")


def same_run(run_dir: Path, cfg: TrainConfig):
    """The run's checkpoint as (tensors, meta), or None before the first one; refused when config.toml was edited
    since it was written or the data changed (checked before the data is read again)."""
    ckpt = run_dir / CHECKPOINT
    if not ckpt.is_file():
        return None
    tensors, meta = load_checkpoint(ckpt)
    then, now = meta.get("config", {}), cfg.to_dict()
    changed = [k for k in sorted(set(then) | set(now)) if k not in RESUMABLE and then.get(k) != now.get(k)]
    if changed:
        k = changed[0]
        raise ConfigError(f"{k}: {run_dir / 'config.toml'} says {now.get(k)!r} but the run's checkpoint was made with "
                          f"{then.get(k)!r}; a resumed run continues the same run -- restore config.toml, or start a "
                          f"new run with the new setting")
    from rnnlab.data.sequences import changed_since
    for key, path in (("data_digest", cfg.data), ("val_data_digest", cfg.val_data)):
        stored = meta.get("task_info", {}).get(key)
        if changed_since(path, stored):
            raise CheckpointError(f"{ckpt}: the data file {path} changed since this run started (sha256 "
                                  f"{stored[:12]}... then); a resumed run needs the same data -- restore the file or "
                                  f"start a new run")
    return tensors, meta


def read_changes(run_dir) -> list:
    """The settings changed mid-run, from a run folder's changes.jsonl ([] without one), each checked as
    ``change`` checks it; a line torn by a kill is skipped (it was never applied: the step did not run)."""
    from rnnlab.errors import check_float, check_int
    f = Path(run_dir) / CHANGES
    out = []
    if not f.is_file():
        return out
    for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        where = f"{f}, line {n}"
        if not isinstance(rec, dict) or "step" not in rec or not set(rec) - {"step"} <= set(CHANGEABLE):
            raise CheckpointError(f"{where}: expected {{\"step\": N, \"lr\" or \"clip\": value}}, got {line.strip()[:80]}")
        check_int(f"{where}: step", rec["step"], 0 if not out else out[-1]["step"])
        for k in set(rec) - {"step"}:
            check_float(f"{where}: {k}", rec[k], 0.0, low_open=(k == "lr"))
        out.append(rec)
    return out


def read_diagnostics(run_dir) -> list:
    """The records of a run folder's diagnostics.jsonl (schema: docs/guide.md), [] without one; a line torn by a
    kill is skipped, and a record written before the ratio was recorded gets it from its grad_norm_h."""
    f = Path(run_dir) / "diagnostics.jsonl"
    recs = []
    if f.is_file():
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(rec, dict) or "step" not in rec:
                continue
            g = rec.get("grad_norm_h")
            if "grad_ratio" not in rec and g and g[-1]:
                rec["grad_ratio"] = g[0] / g[-1]
            recs.append(rec)
    return recs


def drop_records_after(run_dir, step):
    """Drop records written after the checkpoint (the run was killed before the next one)."""
    for metrics in (run_dir / "metrics.jsonl", run_dir / "diagnostics.jsonl"):
        if not metrics.is_file():
            continue
        keep = []
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue                          # a line torn by the kill
        atomic_write(metrics, "".join(l + "\n" for l in keep).encode("utf-8"))
