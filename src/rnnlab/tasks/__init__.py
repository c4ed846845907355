"""Tasks: generators and loaders, all offline. ``build_task(config)`` picks one by name."""
from __future__ import annotations

import contextlib
from pathlib import Path

from rnnlab.errors import check_choice
from rnnlab.tasks.base import Batch, Task
from rnnlab.tasks.classify import digits_task, read_ts, ts_task
from rnnlab.tasks.forecast import ForecastTask, forecast_task, sunspots_path
from rnnlab.tasks.supervised import SequenceTask, sequence_task
from rnnlab.tasks.synthetic import Adding, Copy, SelectiveCopy
from rnnlab.tasks.text import CharLM, read_text, shakespeare_text

TASKS = ("adding", "copy", "selective_copy", "digits", "ts", "chars", "forecast", "data")


def data_task(cfg, info: dict | None = None) -> SequenceTask:
    """The ``data`` task: the user's file (and validation file). ``info``: a trained model's stored task
    facts, whose encoding is then used instead of fitting one again."""
    from pathlib import Path

    from rnnlab.data.encoding import Encoding
    from rnnlab.errors import ConfigError
    from rnnlab.data.sequences import changed_since, file_digest, is_table, read_data
    if not cfg.data:
        raise ConfigError("data: the data task needs a file of sequences (--data FILE: .npz, .csv or .parquet), got none")
    kw = dict(id_col=cfg.id_col, time_col=cfg.time_col, target_col=cfg.target_col, channels_first=cfg.channels_first,
              missing=cfg.missing, min_length=cfg.min_length, time_format=cfg.time_format)
    if info and info.get("data_digest") and not Path(cfg.data).is_file():     # a trained run's own data
        raise ConfigError(f"checkpoint: the run's training data {cfg.data} no longer exists, so it has no "
                          f"validation data to score; score a file with --data FILE")
    if info and changed_since(cfg.data, info.get("data_digest")):
        raise ConfigError(f"data: {cfg.data} changed since this model was trained on it (sha256 "
                          f"{info['data_digest'][:12]}... then); its validation metrics would be of other data -- "
                          f"score the file with --data, or restore it")
    train = read_data(cfg.data, feature_cols=cfg.feature_cols, **kw)
    val = None
    if cfg.val_data:                    # a table's features by the training file's names, in its order
        table = is_table(cfg.val_data)
        if table != is_table(cfg.data):
            raise ConfigError(f"val_data: {Path(cfg.val_data).name} and the training data {Path(cfg.data).name} "
                              f"must have the same layout (both tables, or both .npz)")
        val = read_data(cfg.val_data, trained_features=train.feature_names if table else None, what="val_data",
                        **kw)
    facts = {"data_digest": file_digest(cfg.data)}
    if cfg.val_data:
        facts["val_data_digest"] = file_digest(cfg.val_data)
    encoding = Encoding.from_dict(info["encoding"]) if info and "encoding" in info else None
    with targets_named(cfg):
        return sequence_task(f"data:{Path(cfg.data).name}", train, val, cfg.problem, cfg.val_fraction, cfg.seed,
                             cfg.standardize, cfg.missing, encoding=encoding, info=facts)


@contextlib.contextmanager
def targets_named(cfg, path=None):
    """Errors about the targets ("y: ...", the estimators' word) in the file's words: its target column or array."""
    from rnnlab.errors import DataError
    try:
        yield
    except DataError as exc:
        msg = str(exc)
        if not msg.startswith("y:"):
            raise
        from rnnlab.data.sequences import is_table
        path = Path(path or cfg.data)
        where = (f"target_col: column {cfg.target_col!r} of {path.name}" if is_table(path)
                 else f"data: the array 'y' of {path.name}")
        raise DataError(where + ":" + msg[2:]) from None


def build_task(cfg, vocab: str | None = None, info: dict | None = None) -> Task:
    """Build the task named by ``cfg.task`` from the run config (see ``rnnlab.training.config.TrainConfig``).

    ``info``: the task facts stored with a trained model (its vocabulary, its data encoding).
    """
    check_choice("task", cfg.task, TASKS)
    if cfg.task == "data":
        return data_task(cfg, info)
    if cfg.task == "adding":
        return Adding(cfg.seq_len, seed=cfg.seed)
    if cfg.task == "copy":
        return Copy(cfg.seq_len, seed=cfg.seed)
    if cfg.task == "selective_copy":
        return SelectiveCopy(cfg.seq_len, cfg.tokens, seed=cfg.seed)
    if cfg.task == "digits":
        return digits_task(cfg.val_fraction, cfg.seed)
    if cfg.task == "ts":
        if not cfg.ts_train:
            from rnnlab.errors import ConfigError
            raise ConfigError("ts_train: the ts task needs a .ts file (--ts-train FILE), got none")
        return ts_task(cfg.ts_train, cfg.ts_test or None, cfg.val_fraction, cfg.seed)
    if cfg.task == "chars":
        vocab = vocab or (info or {}).get("vocab")
        return CharLM(read_text(cfg.text), cfg.seq_len, cfg.val_fraction, vocab=vocab, source=cfg.text)
    return forecast_task(cfg, info)


__all__ = ["Batch", "Task", "Adding", "Copy", "SelectiveCopy", "SequenceTask", "sequence_task", "data_task", "CharLM", "ForecastTask", "forecast_task", "build_task",
           "read_ts", "read_text", "shakespeare_text", "digits_task", "ts_task", "TASKS"]
