"""Sweeps and multi-seed comparisons on Ray Tune: ``rnnlab sweep CONFIG --out DIR``.

CONFIG is a TOML file: any ``rnnlab train`` key at the top (the base), and a ``[sweep]`` table::

    task = "adding"
    seq_len = 100
    steps = 2000
    [sweep]
    seeds = 5                       # each configuration with seeds base+0 .. base+4
    metric = "mse"                  # the validation metric summarised (default: the task's, as compare)
    threshold = 0.01                # steps-to-threshold (default: the task's, as compare)
    scheduler = "asha"              # optional: stop poor trials early (Tune's ASHA on the validation metric)
    [sweep.grid]                    # every combination
    model = ["rnn", "lstm", "gru"]
    lr = [1e-3, 3e-3]
    [sweep.random]                  # and/or: `samples` draws from Tune's distributions
    samples = 4
    hidden_size = {choice = [32, 64]}
    forget_bias = {uniform = [0.0, 2.0]}
    weight_decay = {loguniform = [1e-6, 1e-3]}

Every [sweep] key, --workers, --address's form and every trial (its config, task and model, as the trainer
builds them) are checked before DIR is made: a refused sweep leaves nothing, so the corrected command can use
the same --out. The trials (configurations x seeds) are fixed when the sweep starts and written to
DIR/sweep.json (random draws from ``sweep.random`` use Tune's samplers with a seeded generator; the settings'
defaults resolved; files named by absolute paths), so a resumed sweep runs the same ones. Each trial is an ordinary run folder, DIR/trials/<id> (config, metrics, checkpoints; ``rnnlab resume``,
``evaluate``, ``gradients`` work on it), holding the folder's lock while it trains.

Trials run on Ray Tune (``ray.tune.Tuner``), one CPU each: with no address an embedded local Ray on this
machine (no dashboard, ``workers`` CPUs; nothing to start by hand; ``rnnlab sweep`` runs it in a private network
namespace whose only interface is the loopback, where Linux allows that: ``rnnlab.scale.netns``), with ``--address`` an
existing cluster (the run folders then need storage every node sees). A trial reports every validation record
to Tune; a trial whose worker dies is started again by Tune (``FailureConfig``) and continues from its own
last checkpoint; ``rnnlab sweep --resume DIR`` after the driver died runs only the trials that have not
finished (those continue from their checkpoints). At the end: per configuration the mean, standard deviation
and 95 % interval (Student's t) over seeds of the final metric, steps-to-threshold, and the learning curves
with bands (+-1 standard deviation; the seeds' range on a log axis), in DIR/summary.md, summary.json, report.html and curves.png.

Needs the ``sweep`` extra: ``pip install 'rnnlab[sweep]'`` (ray[tune]; the intervals need no scipy: ``rnnlab.study.seeds``).

Length: a sweep file's checks (every key, every trial's configuration, before anything runs) sit beside the
runners that read them.
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import socket
from pathlib import Path

import numpy as np

from rnnlab.engine.options import LayerOptions
from rnnlab.model.checkpoint import atomic_write
from rnnlab.training.config import TrainConfig, read_toml
from rnnlab.errors import ConfigError, RnnlabError, check_choice, check_float, check_int, closest
from rnnlab.training._runlock import RunLock
from rnnlab.study.seeds import interval as _interval, table  # noqa: F401  (sweep.table: the summary's table, as before)

MANIFEST = "sweep.json"
STATUS = "status.json"
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint", "quniform", "qloguniform", "randn")
SWEEP_KEYS = ("seeds", "metric", "threshold", "scheduler", "grid", "random", "workers", "grace_steps")
SCHEDULERS = ("asha",)
# training keys that build_task never reads: trials that differ only in these share one task when checked
_NOT_TASK = frozenset((
    "model", "hidden_size", "num_layers", "dropout", "bidirectional", *LayerOptions.names(), "input_mode",
    "embedding_dim", "dtype", "batch_size", "steps", "epochs", "patience", "tbptt", "bptt_segment", "backend",
    "optimizer", "lr", "momentum", "nesterov", "weight_decay", "clip", "clip_value", "schedule", "warmup",
    "lr_step_size", "lr_gamma", "min_lr", "on_nonfinite", "seed", "distributed", "out", "checkpoint_every",
    "eval_every", "log_every", "diagnose_every", "track", "mlflow_uri", "mlflow_experiment", "quiet"))


def _tune():
    try:
        from ray import tune
    except ImportError:
        raise ConfigError("rnnlab sweep runs its trials on Ray Tune; install it with: pip install 'rnnlab[sweep]'"
                          ) from None
    return tune


# ------------------------------------------------------------------ the space
def _check_key(key, where):
    fields = TrainConfig.fields()
    if key not in fields:
        raise ConfigError(f"{where}: unknown training key {key!r}{closest(key, fields)}; the keys are those of "
                          f"rnnlab train (its flags with underscores)")
    if key in ("seed", "out"):
        raise ConfigError(f"{where}: {key!r} is set by the sweep itself (seeds: [sweep] seeds; folder: --out)")


def _domain(key, spec):
    tune = _tune()
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"sweep.random.{key}: expected one distribution as {{name = args}}, e.g. "
                          f"{{loguniform = [1e-4, 1e-2]}} or {{choice = [32, 64]}}, got {spec!r}")
    (name, args), = spec.items()
    if name not in DISTRIBUTIONS:
        raise ConfigError(f"sweep.random.{key}: unknown distribution {name!r}{closest(name, DISTRIBUTIONS)}; "
                          f"expected one of {list(DISTRIBUTIONS)}")
    if name == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"sweep.random.{key}: choice needs a non-empty list, got {args!r}")
        return tune.choice(args)
    if not isinstance(args, list):
        raise ConfigError(f"sweep.random.{key}: {name} needs a list of arguments, got {args!r}")
    try:
        return getattr(tune, name)(*args)
    except Exception as exc:                        # Tune's own check of the arguments
        raise ConfigError(f"sweep.random.{key}: {name}{tuple(args)} is not a valid distribution ({exc})") from None


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def _label(over: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in over.items()) or "base"


def check_settings(sw: dict, steps: int | None = None) -> None:
    """The [sweep] keys other than the space (seeds, metric, threshold, scheduler, grace_steps, workers), each
    named as in the file; ``steps``: the most steps a trial trains (ASHA's horizon), None to skip that bound.
    Also run on a manifest read back for --resume, so that one written before these checks cannot replay a
    bad setting."""
    check_int("sweep.seeds", sw.get("seeds", 1), 1)
    if "metric" in sw and (not isinstance(sw["metric"], str) or not sw["metric"]):
        raise ConfigError(f"sweep.metric: expected the name of a validation metric such as 'mse', got "
                          f"{sw['metric']!r}")
    if "threshold" in sw:
        check_float("sweep.threshold", sw["threshold"])
    if "scheduler" in sw:
        check_choice("sweep.scheduler", sw["scheduler"], SCHEDULERS)
    if "grace_steps" in sw:
        if "scheduler" not in sw:               # it would be ignored
            raise ConfigError(f"sweep.grace_steps: only used by scheduler = 'asha', which is not set; set it or "
                              f"leave grace_steps out, got grace_steps = {sw['grace_steps']!r}")
        g = check_int("sweep.grace_steps", sw["grace_steps"], 1)
        if steps is not None and g > steps:
            raise ConfigError(f"sweep.grace_steps: expected an integer <= steps ({steps}, the longest trial), got {g}")
    if "workers" in sw:
        check_int("sweep.workers", sw["workers"], 1)


def check_workers(workers, arg: str = "workers"):
    """``--workers``: None (the CPUs) or an integer >= 1 (0 must not silently mean 'all CPUs')."""
    return None if workers is None else check_int(arg, workers, 1)


def check_address_format(address) -> None:
    """``--address``: auto, local, HOST:PORT or ray://HOST:PORT; checked without the network."""
    if address is None or address in ("auto", "local"):
        return
    text = str(address)
    host, sep, port = text.removeprefix("ray://").rpartition(":")
    if (not isinstance(address, str) or not sep or not port.isdigit() or not 1 <= int(port) <= 65535
            or any(c.isspace() or c == "/" for c in host)):
        raise ConfigError(f"address: expected HOST:PORT, ray://HOST:PORT, auto or local, got {address!r}")


class _NamedTrialError(ConfigError):
    """A trial's error whose line already names the key and the trial (not wrapped again)."""


def _check_cell_options(cfg, over, grid, label):
    """What ``rnnlab train`` refuses (``TrainConfig.check_cell_options``: an option of another cell, e.g.
    forget_bias on a GRU), refused for this trial too, before anything runs."""
    try:
        cfg.check_cell_options()
    except ConfigError as exc:
        key, _, why = str(exc).partition(":")
        why = why.split("; drop --", 1)[0].strip()           # the train command's hint: a flag the sweep has not
        where = f"sweep.{'grid' if key in grid else 'random'}.{key}" if key in over else key
        from rnnlab.study.compare import ENTRY_KEYS
        owner = (LayerOptions.owners().get(key) or (None,))[0]
        entry = ""
        if owner and key in ENTRY_KEYS:            # compare's entries carry options of their own
            value = getattr(cfg, key)
            entry = (f", or compare the models with rnnlab compare, whose --models entries carry their own "
                     f"options ({owner}+{key}{'' if value is True else f'={value}'})")
        raise _NamedTrialError(f"{where}: {why}, in trial {label} (rnnlab train refuses it); a sweep gives each "
                               f"option to every model: sweep each model in a file of its own{entry}") from None


def _trial_error(msg, over, grid, label):
    """A trial's error named by the sweep key that set the value (``sweep.grid.lr: ...``) when one did, and by
    its trial either way."""
    key = msg.split(":", 1)[0].strip()
    if key in over:
        msg = f"sweep.{'grid' if key in grid else 'random'}.{msg}"
    return ConfigError(f"{msg} (trial {label})")


def expand(spec: dict) -> dict:
    """A sweep file's contents -> the manifest: the base config and the list of trials (id, overrides, seed,
    configuration label). Every [sweep] key, and every trial's config against its task and model, is checked
    here, before anything is written or runs."""
    from rnnlab.study.compare import check_buildable, default_threshold
    from rnnlab.tasks import build_task
    from rnnlab.scale.tracking import require
    from rnnlab.training.trainer import absolute_paths
    spec = dict(spec)
    sw = spec.pop("sweep", None)
    if not isinstance(sw, dict):
        raise ConfigError("sweep: the file needs a [sweep] table (seeds, and [sweep.grid] and/or [sweep.random])")
    for k in sw:
        if k not in SWEEP_KEYS:
            raise ConfigError(f"sweep: unknown key {k!r}{closest(k, SWEEP_KEYS)}; expected some of {list(SWEEP_KEYS)}")
    check_settings(sw)
    if "out" in spec:                               # each trial's folder would silently replace it
        raise ConfigError(f"out (in the sweep file): set by the sweep itself, each trial's folder is in "
                          f"--out DIR/trials; leave it out, got out = {spec['out']!r}")
    # checked with a folder, as each trial will have one (else `track` would be refused here)
    base = TrainConfig.from_dict({**spec, "out": "trials"}, source="sweep base").validate()
    # the files as this folder sees them: Tune starts each trial in a folder of its own
    base = absolute_paths(base)
    seeds = sw.get("seeds", 1)
    grid = sw.get("grid", {})
    rand = sw.get("random", {})
    for name, table in (("grid", grid), ("random", rand)):
        if not isinstance(table, dict):
            raise ConfigError(f"sweep.{name}: expected a table ([sweep.{name}]), got {table!r}")
    rand = dict(rand)
    for key, values in grid.items():
        _check_key(key, "sweep.grid")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep.grid.{key}: expected a non-empty list of values, got {values!r}")
    samples = rand.pop("samples", 1)
    check_int("sweep.random.samples", samples, 1)
    if "samples" in sw.get("random", {}) and not rand:      # nothing to draw: it would be ignored
        raise ConfigError(f"sweep.random.samples: {samples} draws of nothing; add distributions to [sweep.random] "
                          f"(e.g. lr = {{loguniform = [1e-4, 1e-2]}}) or leave samples out")
    domains = {}
    for key, d in rand.items():
        _check_key(key, "sweep.random")
        if key in grid:
            raise ConfigError(f"sweep.random.{key}: {key!r} is in sweep.grid too; give it in one of them")
        domains[key] = _domain(key, d)
    if not grid and not domains and seeds == 1:
        raise ConfigError("sweep: nothing to sweep -- [sweep.grid] and [sweep.random] are empty and seeds = 1")
    combos = [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())] if grid else [{}]
    configs = []
    rs = np.random.RandomState(base.seed)
    for combo in combos:
        for _ in range(samples if domains else 1):
            draw = {k: _plain(d.sample(random_state=rs)) for k, d in domains.items()}
            configs.append({**combo, **draw})

    tasks = {}                                      # one task per distinct set of the keys build_task reads

    def task_for(cfg):
        key = tuple(sorted((k, v) for k, v in cfg.to_dict().items() if k not in _NOT_TASK))
        if key not in tasks:
            tasks[key] = build_task(cfg)
        return tasks[key]
    base_task = task_for(base)
    dm, dt = default_threshold(base_task)
    metric = sw.get("metric", dm)
    if metric not in base_task.metrics:
        raise ConfigError(f"sweep.metric: expected one of {list(base_task.metrics)} (the validation metrics of task "
                          f"{base_task.name!r}), got {metric!r}")
    if "threshold" not in sw and metric != dm:      # the default threshold is a value of the default metric
        raise ConfigError(f"sweep.threshold: needed with sweep.metric = {metric!r} (the task's default threshold, {dt:g}, "
                          f"is a value of {dm!r})")
    threshold = float(sw.get("threshold", dt))
    # every trial as it will train: its config, its task and model (the trainer's checks), its trackers
    trials, tracked, longest = [], set(), 1
    for c, over in enumerate(configs):
        label = _label(over)
        for s in range(seeds):
            seed = base.seed + s
            try:
                cfg = TrainConfig.from_dict({**base.to_dict(), **over, "seed": seed}, source="sweep").validate()
                if s == 0:                          # seeds change neither the task's shapes nor the model
                    cfg, rel = absolute_paths(cfg), cfg
                    over = {k: getattr(cfg, k) if getattr(cfg, k) != getattr(rel, k) else v for k, v in over.items()}
                    task = task_for(cfg)
                    if metric not in task.metrics:
                        raise ConfigError(f"sweep.metric: expected one of {list(task.metrics)} (the validation "
                                          f"metrics of task {task.name!r}), got {metric!r}")
                    _check_cell_options(cfg, over, grid, label)     # as rnnlab train: no option of another cell
                    check_buildable(cfg, task)
                    if (cfg.track, cfg.mlflow_uri) not in tracked:
                        require(cfg.track, cfg.mlflow_uri)
                        tracked.add((cfg.track, cfg.mlflow_uri))
                    longest = max(longest, cfg.steps)
            except RnnlabError as exc:
                if (not isinstance(exc, ValueError) or str(exc).startswith("sweep.")
                        or isinstance(exc, _NamedTrialError)):
                    raise
                raise _trial_error(str(exc).removeprefix("sweep: "), over, grid, label) from None
            trials.append({"id": f"c{c:03d}-s{seed}", "config": c, "label": label, "overrides": over, "seed": seed})
    settings = {**{k: v for k, v in sw.items() if k not in ("grid", "random")}, "metric": metric,
                "threshold": threshold}             # resolved here, so a resumed sweep summarises the same way
    check_settings(settings, longest)
    return {"base": {**base.to_dict(), "out": ""}, "sweep": settings,
            "space": {"grid": grid, "random": {**rand, **({"samples": samples} if rand else {})}}, "trials": trials}


def manifest_for(base: TrainConfig, configs: list, seeds: int, metric: str, threshold: float) -> dict:
    """A manifest from explicit configurations, [(label, overrides)], each with ``seeds`` seeds (``rnnlab compare
    --seeds``: its entries with their matched hidden sizes)."""
    from rnnlab.training.trainer import absolute_paths
    check_int("seeds", seeds, 1)
    threshold = check_float("threshold", threshold)
    base = absolute_paths(base)                     # the files as this folder sees them (Tune moves each trial)
    trials = []
    for c, (label, over) in enumerate(configs):
        for s in range(seeds):
            seed = base.seed + s
            TrainConfig.from_dict({**base.to_dict(), **over, "seed": seed}, source=f"{label}").validate()
            trials.append({"id": f"c{c:03d}-s{seed}", "config": c, "label": label, "overrides": over, "seed": seed})
    return {"base": base.to_dict(), "sweep": {"seeds": seeds, "metric": metric, "threshold": threshold},
            "space": {"configs": [label for label, _ in configs]}, "trials": trials}


def trial_config(manifest: dict, trial: dict, sweep_dir: Path) -> TrainConfig:
    return TrainConfig.from_dict({**manifest["base"], **trial["overrides"], "seed": trial["seed"], "quiet": True,
                                  "out": str(sweep_dir / "trials" / trial["id"])})


def finished(run_dir: Path) -> bool:
    return (run_dir / "model.safetensors").is_file()


# ------------------------------------------------------------------ one trial, inside a Ray worker
def run_trial(config: dict) -> None:
    """Tune's function trainable: train the trial's run folder, or continue it from its checkpoint."""
    from threadpoolctl import threadpool_limits
    from ray import tune
    from rnnlab.training.trainer import resume, train
    os.environ.setdefault("RNNLAB_NUM_THREADS", "1")              # one CPU per trial
    threadpool_limits(1, user_api="blas")
    sweep_dir = Path(config["sweep_dir"])
    manifest = json.loads((sweep_dir / MANIFEST).read_text(encoding="utf-8"))
    trial = next(t for t in manifest["trials"] if t["id"] == config["trial"])
    cfg = trial_config(manifest, trial, sweep_dir)
    run_dir = Path(cfg.out)

    def report(record):
        if record.get("split") == "val":
            tune.report({k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if (run_dir / "config.toml").is_file():
        resume(run_dir, on_record=report)
    else:
        train(cfg, on_record=report)


# ------------------------------------------------------------------ the driver
def _check_address(address: str) -> None:
    """An address that does not answer gives a clear error at once (Ray itself would retry for a long time)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.replace("ray://", "").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"address: no Ray cluster answers at {address!r} ({exc}); start one with `ray start "
                          f"--head` there, or leave --address out to run on this machine") from None


def _start_ray(address, workers):
    import ray
    if ray.is_initialized():
        return False
    kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if address:
        _check_address(address)
        try:
            ray.init(address=address, **kw)
        except (ConnectionError, RuntimeError) as exc:
            raise ConfigError(f"address: could not join the Ray cluster at {address!r} ({str(exc).splitlines()[0]}); "
                              f"a cluster with token authentication needs RAY_AUTH_MODE=token and its token in "
                              f"RAY_AUTH_TOKEN or ~/.ray/auth_token (`ray get-auth-token` on the head prints it); "
                              f"on the cluster's own machines `--address auto` finds it") from None
    else:                                           # embedded, this machine only
        ray.init(num_cpus=workers, _node_ip_address="127.0.0.1", **kw)
    return True


def _longest(manifest) -> int:
    """The most steps any trial trains (ASHA's horizon: a trial past it would be stopped as if by the scheduler)."""
    base = manifest["base"]
    return max([int({**base, **t["overrides"]}.get("steps", 1)) for t in manifest["trials"]] or [1])


def check(config_file=None, out=None, resume_dir=None, address=None, workers=None, spec=None,
          manifest=None) -> dict:
    """Every setting of ``run``'s call checked, nothing written or started: -> the manifest to run (for
    ``resume_dir``, the folder's own). A refused sweep leaves no folder behind, so the corrected command can
    be run again into the same --out."""
    if resume_dir is not None and out is not None:
        raise ConfigError(f"out: not with --resume (a resumed sweep continues in its own folder, {resume_dir}); "
                          f"give one of them, got --out {out}")
    if resume_dir is None and out is None:
        raise ConfigError("sweep: give --out DIR (the sweep's folder)")
    check_workers(workers)
    check_address_format(address)
    if resume_dir is not None:
        f = Path(resume_dir) / MANIFEST
        if not f.is_file():
            raise ConfigError(f"--resume: {resume_dir} holds no {MANIFEST}; is it a folder made by rnnlab sweep?")
        try:
            manifest = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--resume: {f} is not valid JSON ({exc}); is it a folder made by rnnlab sweep?") from None
    else:
        sweep_dir = Path(out)
        if sweep_dir.exists() and not sweep_dir.is_dir():
            raise ConfigError(f"out: expected a folder for the sweep, got the file {sweep_dir}")
        if (sweep_dir / MANIFEST).exists():
            raise ConfigError(f"out: {sweep_dir} already holds a sweep; continue it with `rnnlab sweep --resume "
                              f"{sweep_dir}` or choose another --out")
        if manifest is None:
            manifest = expand(spec if spec is not None else read_toml(config_file))
    check_settings(manifest["sweep"], _longest(manifest))     # a manifest written before these checks, too
    return manifest


def run(config_file=None, out=None, resume_dir=None, address=None, workers=None, spec=None, manifest=None) -> dict:
    """Run (or, with ``resume_dir``, continue) a sweep; returns the summary. ``spec``: the parsed TOML
    instead of ``config_file``; ``manifest``: the trials themselves (``manifest_for``). Everything is checked
    (``check``) before the sweep's folder is made."""
    manifest = check(config_file, out, resume_dir, address, workers, spec, manifest)
    tune = _tune()                                  # after the checks: a bad setting is told first
    if address:
        _check_address(address)                     # a cluster that does not answer, also before writing
    with RunLock(resume_dir if resume_dir is not None else out):       # one driver per sweep folder
        return _run(manifest, out, resume_dir, address, workers, tune)


def _run(manifest, out, resume_dir, address, workers, tune):
    if resume_dir is not None:
        sweep_dir = Path(resume_dir)
    else:
        sweep_dir = Path(out)
        if (sweep_dir / MANIFEST).exists():         # again under the lock: another driver may have been first
            raise ConfigError(f"out: {sweep_dir} already holds a sweep; continue it with `rnnlab sweep --resume "
                              f"{sweep_dir}` or choose another --out")
        (sweep_dir / "trials").mkdir(parents=True, exist_ok=True)
        atomic_write(sweep_dir / MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"))
    sw = manifest["sweep"]
    workers = workers if workers is not None else sw.get("workers") or os.cpu_count() or 1
    status = _read_status(sweep_dir)
    pending = [t["id"] for t in manifest["trials"]
               if not finished(sweep_dir / "trials" / t["id"]) and t["id"] not in status.get("stopped", [])]
    metric, mode, threshold = _metric(manifest, sw)
    if pending:
        started = _start_ray(address, workers)
        try:
            status = _fit(tune, manifest, sweep_dir, pending, workers, metric, mode, sw, status)
        finally:
            if started:
                import ray
                ray.shutdown()
    summary = summarize(sweep_dir, manifest, metric, mode, threshold, status)
    return summary


def _fit(tune, manifest, sweep_dir, pending, workers, metric, mode, sw, status):
    """The pending trials on Ray Tune; -> the new status (trials stopped by the scheduler, errors)."""
    scheduler = None
    if sw.get("scheduler"):                         # "asha", checked with the other settings
        from ray.tune.schedulers import ASHAScheduler
        steps = _longest(manifest)
        scheduler = ASHAScheduler(time_attr="step", max_t=steps,
                                  grace_period=int(sw.get("grace_steps", max(1, steps // 4))))
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")     # the reporter that honours verbose=0
    tuner = tune.Tuner(
        tune.with_resources(run_trial, {"cpu": 1}),
        param_space={"trial": tune.grid_search(pending), "sweep_dir": str(sweep_dir.resolve())},
        tune_config=tune.TuneConfig(metric=metric, mode=mode, scheduler=scheduler, reuse_actors=True,
                                    max_concurrent_trials=workers),
        run_config=tune.RunConfig(name="tune", storage_path=str((sweep_dir / "tune").resolve()), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=3)))
    results = tuner.fit()
    stopped = set(status.get("stopped", []))
    errors = []
    for r in results:
        tid = r.config["trial"]
        if r.error is not None:
            errors.append(f"{tid}: {type(r.error).__name__}: {str(r.error).splitlines()[-1][:300]}")
        elif not finished(sweep_dir / "trials" / tid):
            stopped.add(tid)                    # ended by the scheduler: not run again on --resume
    status = {"stopped": sorted(stopped), "errors": errors}
    atomic_write(sweep_dir / STATUS, json.dumps(status, indent=1).encode("utf-8"))
    if errors:
        raise ConfigError("sweep: trial(s) failed after Tune's retries: " + "; ".join(errors) +
                          f"; their run folders are in {sweep_dir / 'trials'}; fix and `rnnlab sweep --resume "
                          f"{sweep_dir}`")
    return status


def _read_status(sweep_dir):
    f = sweep_dir / STATUS
    return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}


def _metric(manifest, sw):
    from rnnlab.study.compare import LOWER_IS_BETTER, default_threshold
    metric, threshold = sw.get("metric"), sw.get("threshold")
    if metric is None or threshold is None:
        from rnnlab.tasks import build_task
        dm, dt = default_threshold(build_task(TrainConfig.from_dict(manifest["base"])))
        metric = metric or dm
        threshold = dt if threshold is None else threshold
    return metric, ("min" if metric in LOWER_IS_BETTER else "max"), float(threshold)


# ------------------------------------------------------------------ the summary
def summarize(sweep_dir, manifest, metric, mode, threshold, status=None) -> dict:
    status = status or {}
    groups = {}
    for t in manifest["trials"]:
        groups.setdefault(t["config"], {"label": t["label"], "trials": []})["trials"].append(t)
    rows, curves = [], {}
    for c, g in sorted(groups.items()):
        finals, reach, done, curve = [], [], 0, {}
        for t in g["trials"]:
            f = sweep_dir / "trials" / t["id"] / "metrics.jsonl"
            vals = []
            if f.is_file():
                for line in f.read_text(encoding="utf-8").splitlines():
                    try:
                        r = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if r.get("split") == "val" and metric in r:
                        vals.append((r["step"], r[metric]))
            if not vals:
                continue
            done += finished(sweep_dir / "trials" / t["id"])
            finals.append(vals[-1][1])
            hit = next((s for s, v in vals if (v <= threshold if mode == "min" else v >= threshold)), None)
            reach.append(hit)
            for s, v in vals:
                curve.setdefault(s, []).append(v)
        if not finals:
            continue
        mean, sd, ci = _interval(finals)
        hits = [h for h in reach if h is not None]
        rows.append({"config": c, "label": g["label"], "seeds": len(finals), "finished": done, "mean": mean, "sd": sd,
                     "ci95": ci, "reached": len(hits), "steps_to_threshold": float(np.median(hits)) if hits else None,
                     "values": finals})
        curves[g["label"]] = {s: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                                  float(np.min(v)), float(np.max(v))) for s, v in sorted(curve.items())}
    summary = {"metric": metric, "mode": mode, "threshold": threshold, "rows": rows,
               "stopped_by_scheduler": status.get("stopped", []),
               "curves": {k: [[s, *stats] for s, stats in v.items()] for k, v in curves.items()}}   # step mean sd min max
    _write_reports(Path(sweep_dir), summary)
    return summary


def _write_reports(sweep_dir: Path, summary):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    log = summary["mode"] == "min" and all(p[3] > 0 for pts in summary["curves"].values() for p in pts)
    for label, pts in summary["curves"].items():
        s, m, sd, lo, hi = (np.array(v, float) for v in zip(*pts))
        ax.plot(s, m, label=label)
        ax.fill_between(s, lo if log else m - sd, hi if log else m + sd, alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel(f"validation {summary['metric']}")
    if log:
        ax.set_yscale("log")                        # a +-sd band has no lower edge there: the seeds' range
    ax.legend(fontsize=7)
    ax.set_title("mean over seeds, band: " + ("lowest to highest seed" if log else "+-1 sd"))
    fig.tight_layout()
    fig.savefig(sweep_dir / "curves.png", dpi=110)
    plt.close(fig)
    md = f"# Sweep summary\n\n{table(summary)}\n\n![curves](curves.png)\n"
    if summary["stopped_by_scheduler"]:
        md += f"\nStopped early by the scheduler: {', '.join(summary['stopped_by_scheduler'])}\n"
    atomic_write(sweep_dir / "summary.md", md.encode("utf-8"))
    atomic_write(sweep_dir / "summary.json", json.dumps(summary, indent=1).encode("utf-8"))
    png = base64.b64encode((sweep_dir / "curves.png").read_bytes()).decode("ascii")
    rows = "".join("<tr>" + "".join(f"<td>{c.strip()}</td>" for c in line.strip("|").split("|")) + "</tr>"
                   for line in table(summary).splitlines()[2:])
    head = "".join(f"<th>{c.strip()}</th>" for c in table(summary).splitlines()[0].strip("|").split("|"))
    html = (f"<!doctype html><meta charset='utf-8'><title>rnnlab sweep</title><h1>Sweep summary</h1>"
            f"<table border='1' cellpadding='4'><tr>{head}</tr>{rows}</table>"
            f"<p><img src='data:image/png;base64,{png}'></p>")
    atomic_write(sweep_dir / "report.html", html.encode("utf-8"))
