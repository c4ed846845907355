"""Tasks: generators and loaders, all offline. ``build_task(config)`` picks one by name."""
from __future__ import annotations

from ..errors import check_choice
from .base import Batch, Task
from .classify import Classification, digits_task, read_ts, ts_task
from .forecast import Forecast, read_csv_column, sunspots_path
from .synthetic import Adding, Copy
from .text import CharLM, read_text, shakespeare_text

TASKS = ("adding", "copy", "digits", "ts", "chars", "forecast")


def build_task(cfg, vocab: str | None = None) -> Task:
    """Build the task named by ``cfg.task`` from the run config (see ``rnnlab.config.TrainConfig``)."""
    check_choice("task", cfg.task, TASKS)
    if cfg.task == "adding":
        return Adding(cfg.seq_len, seed=cfg.seed)
    if cfg.task == "copy":
        return Copy(cfg.seq_len, seed=cfg.seed)
    if cfg.task == "digits":
        return digits_task(cfg.val_fraction, cfg.seed)
    if cfg.task == "ts":
        if not cfg.ts_train:
            from ..errors import ConfigError
            raise ConfigError("ts_train: the ts task needs a .ts file (--ts-train FILE), got none")
        return ts_task(cfg.ts_train, cfg.ts_test or None, cfg.val_fraction, cfg.seed)
    if cfg.task == "chars":
        return CharLM(read_text(cfg.text), cfg.seq_len, cfg.val_fraction, vocab=vocab, source=cfg.text)
    path = sunspots_path() if cfg.csv == "sunspots" else cfg.csv
    return Forecast(read_csv_column(path, cfg.column), cfg.seq_len, cfg.horizon, cfg.val_fraction,
                    name=str(cfg.csv))


__all__ = ["Batch", "Task", "Adding", "Copy", "Classification", "CharLM", "Forecast", "build_task", "read_ts",
           "read_text", "read_csv_column", "shakespeare_text", "digits_task", "ts_task", "TASKS"]
