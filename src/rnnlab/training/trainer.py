"""The training loop: ``Trainer``, the one place that knows tasks, the model, losses, optimizers and checkpoints.

``train(config)`` runs a whole training job and returns a ``RunResult``; ``resume(run_dir)`` continues
one from its last checkpoint with bit-identical results (the data and dropout RNG states, the optimizer
state and, for truncated BPTT, the carried hidden state are all in the checkpoint). Both are built on
``Trainer``, as are the scikit-learn estimators and the lab. Data parallelism is a strategy the trainer is
given (``rnnlab.scale.distributed``: ``SingleProcess``, ``MPIDataParallel``); nothing here knows MPI.

The run folder's reading and writing is in ``rnnlab.training.runs``, the training and validation passes in
``rnnlab.training.passes``; their names are imported here too, where callers have always found them.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from rnnlab.model.checkpoint import load_checkpoint, save_checkpoint
from rnnlab.training.config import MAX_STEPS, TrainConfig, read_toml, write_toml
from rnnlab.errors import CheckpointError, ConfigError, NonFiniteError
from rnnlab.model.sequence_model import ModelConfig, SequenceModel
from rnnlab.training._runlock import RunLock
from rnnlab.training.optim import clip_grad_norm, clip_grad_value, global_norm, lr_at, make_optimizer
from rnnlab.tasks import build_task
from rnnlab.training.passes import evaluate, first_nonfinite, gradient_flow, strict, tbptt_backward
from rnnlab.training.runs import (  # noqa: F401  (load_model, read_diagnostics: callers import them from here)
    CHANGEABLE, CHANGES, CHECKPOINT, FINAL, RunResult, absolute_paths, check_run_dir, drop_records_after,
    load_model, prepare_run_dir, read_changes, read_diagnostics, same_run, save_model,
)

def model_config_for(cfg: TrainConfig, task) -> ModelConfig:
    options = cfg.options()
    if cfg.model == "indrnn" and not cfg.recurrent_max:      # Li et al.'s bound from the run's sequence length
        options["recurrent_max"] = 2.0 ** (1.0 / cfg.seq_len)
    return ModelConfig(
        input_size=task.input_size, output_size=task.output_size, cell=cfg.model, hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers, input_mode=task.input_mode if cfg.input_mode == "auto" else cfg.input_mode,
        embedding_dim=cfg.embedding_dim, prediction=task.prediction, target=task.target, dropout=cfg.dropout,
        bidirectional=cfg.bidirectional, dtype=cfg.dtype, quantiles=getattr(task, "quantiles", None), **options)


def _check_mode(cfg, task, mcfg):
    if (mcfg.input_mode == "dense") != (task.input_mode == "dense"):
        raise ConfigError(f"input_mode: task {task.name!r} gives {'features' if task.input_mode == 'dense' else 'tokens'}, "
                          f"so input_mode={cfg.input_mode!r} does not fit; use 'auto'")
    if cfg.tbptt and task.target != "every":
        raise ConfigError(f"tbptt: task {task.name!r} has one target per sequence; truncated BPTT needs targets "
                          f"at every step (use tbptt=0)")
    if cfg.bidirectional and task.stateful:
        raise ConfigError("bidirectional: a language model cannot look ahead; use bidirectional=false for task 'chars'")


def _epochs_to_steps(cfg: TrainConfig, task) -> None:
    if not cfg.epochs:
        return
    if not hasattr(task, "steps_per_epoch"):
        raise ConfigError(f"epochs: task {cfg.task!r} has no fixed set of sequences to pass over; give steps instead")
    cfg.steps = cfg.epochs * task.steps_per_epoch(cfg.batch_size)
    if cfg.steps > MAX_STEPS:
        raise ConfigError(f"epochs: {cfg.epochs} epochs of {task.steps_per_epoch(cfg.batch_size)} steps make "
                          f"{cfg.steps} steps, over {MAX_STEPS}")


class Trainer:
    """Trains one model on one task: the loop, its logs and checkpoints, the settings changed mid-run.

    ``config``: a ``TrainConfig`` or a dict of its options (checked with ``TrainConfig.validate``). ``task``: a
    task built by the caller (e.g. ``tasks.sequence_task`` over in-memory arrays) instead of the one ``config``
    names. ``run_dir``: a run folder to write (metrics.jsonl, checkpoints, the final model and its card), as
    ``train`` prepares one and ``resume`` continues one; None writes nothing. ``progress``: a progress bar.
    ``on_record(record)``: called with every record logged (a sweep reports them to Ray Tune).
    ``control(trainer)``: called before every step (the lab pauses there and changes settings with
    ``change``); returning False ends the run there, saved as a finished run is. ``strategy``: the data
    parallelism (``rnnlab.scale.distributed.SingleProcess`` or ``MPIDataParallel``); by default the one
    ``config.distributed`` asks for (``strategy_for``). Under MPI every rank builds a Trainer and calls the
    same methods; the writer (rank 0) alone writes the folder and reports.

    The model, its task and optimizer are built (and checked) here, before anything is written. ``fit()`` trains
    to ``config.steps`` (or ``epochs``) and returns a ``RunResult``; ``train_step()`` runs one step,
    ``evaluate()`` the validation metrics, ``save(path)`` and ``restore(path)`` a checkpoint. ``step`` is the
    number of steps trained, ``model`` the ``SequenceModel``.

    >>> import tempfile, pathlib
    >>> from rnnlab import Trainer
    >>> cfg = {"task": "adding", "seq_len": 5, "hidden_size": 4, "steps": 6, "eval_every": 3, "quiet": True}
    >>> trainer = Trainer(cfg)
    >>> result = trainer.fit()
    >>> result.steps_run, trainer.step, sorted(trainer.evaluate())
    (6, 6, ['loss', 'mse'])
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "checkpoint.safetensors"
    >>> trainer.save(path)
    >>> again = Trainer(cfg)
    >>> again.restore(path)
    >>> again.step, again.evaluate() == trainer.evaluate()
    (6, True)
    """

    def __init__(self, config, task=None, *, run_dir=None, progress: bool = False, on_record=None, control=None,
                 strategy=None):
        cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config))
        cfg.validate()
        self.cfg = cfg
        if strategy is None:
            from rnnlab.scale.distributed import strategy_for
            strategy = strategy_for(cfg.distributed)
        self.strategy = strategy
        self.progress = progress and not cfg.quiet and strategy.is_writer
        self.trackers = None                                     # tracking.Trackers once the folder is there
        self.on_record = on_record                               # a caller's hook on every record (sweeps)
        self.control = control                                   # a caller's hook before every step (the lab)
        self.changes = []                                        # settings changed mid-run (changes.jsonl)
        self.task = build_task(cfg) if task is None else task
        _epochs_to_steps(cfg, self.task)
        self.mcfg = model_config_for(cfg, self.task)
        _check_mode(cfg, self.task, self.mcfg)
        self.model = SequenceModel(self.mcfg, seed=np.random.default_rng([cfg.seed, 0]))
        strategy.setup(cfg, self.model)              # e.g. the rows of each rank, each rank's dropout generator
        self.model.rnn.set_backend(cfg.backend, cfg.bptt_segment or None)
        self.params = self.model.named_parameters()
        self.opt = make_optimizer(cfg.optimizer, self.params, cfg.lr, cfg.weight_decay, cfg.momentum, cfg.nesterov)
        self.data_rng = np.random.default_rng([cfg.seed, 1])
        self.step = 0
        self.state = None
        self.last_val = {}
        self.result = RunResult(cfg, model=self.model, task=self.task, baseline=self.task.baseline(),
                                rank=strategy.rank)
        self._norm_ema = None
        self.best = None               # early stopping: (val loss, step, weights) of the best evaluation
        self.bad_evals = 0
        self.attach(run_dir)

    @property
    def rank(self) -> int:
        """This process's rank in a distributed run (0 otherwise)."""
        return self.strategy.rank

    def attach(self, run_dir) -> None:
        """Write to the run folder ``run_dir`` from here on (None: nowhere). The writer alone writes; under MPI every
        rank still takes part in the checkpoints, which gather from every rank."""
        run_dir = None if run_dir is None else Path(run_dir)
        self.result.out = run_dir
        self._has_out = run_dir is not None
        self.run_dir = run_dir if self.strategy.is_writer else None

    # --------------------------------------------------------------- checkpoints
    def meta(self) -> dict:
        """The checkpoint's metadata: the config, the step, the generators' states, the counters."""
        return {"kind": "training", "config": self.cfg.to_dict(), "model_config": self.mcfg.to_dict(),
                "task_info": self.task.info(), "step": self.step, "optimizer_t": self.opt.t,
                "rng_data": self.data_rng.bit_generator.state, "rng_model": self.model.rng.bit_generator.state,
                "metrics": self.last_val, "clipped_steps": self.result.clipped_steps,
                "skipped_steps": self.result.skipped_steps, "n_state": 0 if self.state is None else len(self._state_tuple()),
                "best": None if self.best is None else {"loss": self.best[0], "step": self.best[1]},
                "bad_evals": self.bad_evals, "stopped_early": self.result.stopped_early,
                "distributed": self.strategy.describe()}

    # --------------------------------------------------------------- mid-run changes
    def setting(self, key: str):
        """The value of a changeable setting (``CHANGEABLE``) at this step: the last change made at or before it,
        else the config's."""
        value = getattr(self.cfg, key)
        for c in self.changes:                      # in the order made: the steps never go down
            if c["step"] <= self.step and key in c:
                value = c[key]
        return value

    def change(self, **settings) -> dict:
        """Change ``lr`` (the schedule's base rate) or ``clip`` from this step on, journalled with the step in the
        run folder's changes.jsonl, so ``resume`` replays it and a resumed run stays bit-identical."""
        from rnnlab.errors import check_float
        for key, value in settings.items():
            if key not in CHANGEABLE:
                raise ConfigError(f"{key}: a run can change {' or '.join(CHANGEABLE)} mid-run, not {key}")
        rec = {"step": self.step, **{k: check_float(k, v, 0.0, low_open=(k == "lr"))
                                     for k, v in settings.items()}}
        if "lr" in rec and self.cfg.schedule == "cosine" and rec["lr"] < self.cfg.min_lr:
            raise ConfigError(f"lr: expected a number >= min_lr ({self.cfg.min_lr}), the rate the cosine schedule "
                              f"decays to, got {rec['lr']}")
        self.changes.append(rec)
        if self.run_dir is not None:
            with (self.run_dir / CHANGES).open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")
        return rec

    def _state_tuple(self):
        return self.state if isinstance(self.state, tuple) else (self.state,)

    def save(self, path):
        """Write the checkpoint ``path``: the weights, the optimizer, the generators, the carried state, the best
        weights of early stopping. Under MPI every rank calls this (the strategy gathers the carried states' rows
        and the ranks' dropout generators) and the writer alone writes."""
        states = None if self.state is None else self._state_tuple()
        gathered = self.strategy.gather(states, self.model.rng.bit_generator.state)
        if gathered is None:                        # another rank writes
            return
        states, meta_extra = gathered
        tensors = {f"model/{k}": v for k, v in self.params.items()}
        tensors.update({f"optim/{k}": v for k, v in self.opt.state_arrays().items()})
        if states is not None:
            tensors.update({f"state/{i}": s for i, s in enumerate(states)})
        if self.best is not None:
            tensors.update({f"best/{k}": v for k, v in self.best[2].items()})
        save_checkpoint(path, tensors, {**self.meta(), **meta_extra})

    def restore(self, path, loaded=None) -> None:
        """Continue from checkpoint ``path`` (``loaded``: its (tensors, meta), already read and checked against
        the run's config and data by ``runs.same_run``). A checkpoint of K ranks resumes on K ranks only."""
        tensors, meta = loaded if loaded is not None else load_checkpoint(path)
        if meta.get("kind") != "training":
            raise CheckpointError(f"{path}: not a training checkpoint (kind={meta.get('kind')!r})")
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
        self.opt.load_state_arrays({k[6:]: v for k, v in tensors.items() if k.startswith("optim/")}, meta["optimizer_t"])
        self.data_rng.bit_generator.state = meta["rng_data"]
        self.step = int(meta["step"])
        self.last_val = meta.get("metrics", {})
        self.result.clipped_steps = meta.get("clipped_steps", 0)
        self.result.skipped_steps = meta.get("skipped_steps", 0)
        if meta.get("best"):
            self.best = (meta["best"]["loss"], meta["best"]["step"],
                         {k[5:]: v for k, v in tensors.items() if k.startswith("best/")})
        self.bad_evals = meta.get("bad_evals", 0)
        self.result.stopped_early = meta.get("stopped_early", False)
        n_state = meta.get("n_state", 0)
        st = tuple(tensors[f"state/{i}"] for i in range(n_state)) if n_state else None
        rng, st = self.strategy.restore(meta, st, path)
        self.model.rng.bit_generator.state = rng
        if n_state:
            self.state = st if n_state > 1 else st[0]

    # --------------------------------------------------------------- logging
    def log(self, record: dict):
        """Keep ``record`` (RunResult.records), append it to metrics.jsonl and the trackers, hand it to
        ``on_record``."""
        record = strict(record, self.step)
        self.result.records.append(record)
        if self.run_dir is not None:
            with (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, allow_nan=False) + "\n")
        if self.trackers:
            self.trackers.record(record)
        if self.on_record is not None and self.strategy.is_writer:
            self.on_record(record)

    def _watch_explosion(self, norm):
        if not np.isfinite(norm) or norm <= 0:
            return
        if self._norm_ema is not None and norm > 1e3 * self._norm_ema and not self.result.warnings:
            msg = (f"step {self.step}: gradient norm {norm:.3g} is over 1000x its running average "
                   f"{self._norm_ema:.3g} (exploding gradients); consider --clip 1.0")
            if self.cfg.clip > 0:
                msg += f" (clipping at {self.cfg.clip} is on)"
            self.result.warnings.append(msg)
        self._norm_ema = norm if self._norm_ema is None else 0.9 * self._norm_ema + 0.1 * norm

    def diagnose(self):
        """Gradient-flow curves at this step (``passes.gradient_flow``), kept and written to diagnostics.jsonl."""
        rec = gradient_flow(self.model, self.task, self.step, self.result.clipped_steps)
        self.result.diagnostics.append(rec)
        if self.run_dir is not None:
            with (self.run_dir / "diagnostics.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")
        if self.trackers:
            self.trackers.diagnostics(rec)

    # --------------------------------------------------------------- the loop
    def train_step(self) -> dict:
        """One training step on the next batch; its record (loss, metrics, gradient norm, lr)."""
        batch = self.task.train_batch(self.data_rng, self.cfg.batch_size, self.step)
        scope, _ = self.model.rnn.blas_scope(batch.inputs.shape[1])
        with scope:                 # the whole step on the recurrent layer's BLAS setting: see blas_scope
            return self._train_step(batch)

    def _train_step(self, batch):
        cfg, task, model = self.cfg, self.task, self.model
        if batch.reset:
            self.state = None
        model.zero_grad()
        batch, weight = self.strategy.shard(batch, task.target == "every")   # this rank's rows, their loss's share
        if batch.inputs.shape[1] == 0:              # a short last batch left this rank no rows: it adds zeros
            loss, metrics, new_state = 0.0, dict.fromkeys(self._metric_names, 0.0), self.state
        else:
            loss, logits, new_state = tbptt_backward(model, batch.inputs, batch.targets, batch.lengths,
                                                     self.state if task.stateful else None, cfg.tbptt, weight,
                                                     batch.weights)
            metrics = task.extra_metrics(loss, logits, batch)
            self._metric_names = sorted(metrics)    # the first batch is full on every rank (check_batch)
        grads = model.grads
        loss, metrics = self.strategy.allreduce(grads, loss, metrics, weight)   # the whole batch's
        bad = None if math.isfinite(loss) else "loss"
        bad = bad or first_nonfinite(grads)
        if bad is not None:
            where = "the loss" if bad == "loss" else f"the gradient of {bad}"
            if cfg.on_nonfinite == "stop":
                kept = f"; the last good checkpoint is {self.run_dir / CHECKPOINT}" if (
                    self.run_dir is not None and (self.run_dir / CHECKPOINT).exists()) else ""
                raise NonFiniteError(f"step {self.step + 1}: NaN/Inf in {where} (loss={loss}); training stopped"
                                     f"{kept}. Try a lower --lr or --clip 1.0, or --on-nonfinite skip")
            self.result.skipped_steps += 1
            self.step += 1
            self.state = None if task.stateful else self.state
            return {"loss": loss, "skipped": True}
        norm = global_norm(grads)
        clipped = False
        clip = self.setting("clip")
        if clip > 0:
            norm, clipped = clip_grad_norm(grads, clip)
        if cfg.clip_value > 0:
            clipped = clip_grad_value(grads, cfg.clip_value) or clipped
        self._watch_explosion(norm)
        self.result.clipped_steps += int(clipped)
        lr = lr_at(self.step, self.setting("lr"), cfg.steps, cfg.schedule, cfg.warmup, cfg.lr_step_size, cfg.lr_gamma, cfg.min_lr)
        self.opt.step(grads, lr)
        constrain = getattr(model.rnn, "constrain", None)
        if constrain is not None:                  # IndRNN: |u| bounded after every update (Li et al. 2018)
            constrain()
        if task.stateful:
            self.state = new_state
        self.step += 1
        return {"loss": loss, **metrics, "grad_norm": norm, "clipped": bool(clipped), "lr": lr}

    def _patience_ran_out(self) -> bool:
        """Keep the best weights; True after ``patience`` evaluations in a row without a lower val loss."""
        loss = self.last_val["loss"]
        if self.best is None or loss < self.best[0]:
            self.best = (loss, self.step, {k: v.copy() for k, v in self.params.items()})
            self.bad_evals = 0
            return False
        self.bad_evals += 1
        return self.bad_evals >= self.cfg.patience

    def evaluate(self) -> dict:
        """The task's validation metrics of the model as it is now."""
        return evaluate(self.model, self.task)

    def fit(self) -> RunResult:
        """Train to the run's last step (from ``step``: 0, or a restored checkpoint's), evaluating, logging and
        checkpointing as the config says; then the final weights (under early stopping, the best evaluation's) in
        the run folder with its card. Returns this process's ``RunResult``."""
        self.strategy.announce(self.cfg.quiet)      # under MPI: which pid is which rank
        if self.run_dir is not None and self.cfg.track:
            from rnnlab.scale.tracking import Trackers
            self.trackers = Trackers(self.run_dir, self.cfg)
        cfg = self.cfg
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=cfg.steps, initial=self.step, desc=f"{cfg.task}/{cfg.model}", unit="step",
                       dynamic_ncols=True, leave=True)
        key = next((m for m in self.task.metrics if m != "loss"), None)
        t0 = time.perf_counter()
        start = self.step
        try:
            while self.step < cfg.steps and not self.result.stopped_early:
                if self.control is not None and self.control(self) is False:
                    break                           # the caller stopped the run here: saved as at its end
                ts = time.perf_counter()
                m = self.train_step()
                self.result.step_seconds.append(time.perf_counter() - ts)
                self.result.train_seconds += self.result.step_seconds[-1]
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self.log({"step": self.step, "split": "train", **m})
                if cfg.diagnose_every and (self.step % cfg.diagnose_every == 0 or self.step == 1):
                    self.diagnose()
                if (cfg.eval_every and self.step % cfg.eval_every == 0) or self.step == cfg.steps:
                    self.last_val = self.evaluate()
                    self.log({"step": self.step, "split": "val", **self.last_val})
                    if cfg.patience and self._patience_ran_out():
                        self.result.stopped_early = True
                if self._has_out and cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save(self.run_dir / CHECKPOINT if self.run_dir is not None else None)
                if bar is not None:
                    post = {"loss": f"{m['loss']:.4f}"}
                    if key and key in m:
                        post[key] = f"{m[key]:.4f}"
                    if self.last_val and key in self.last_val:
                        post[f"val_{key}"] = f"{self.last_val[key]:.4f}"
                    bar.set_postfix(post, refresh=False)
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        r = self.result
        r.seconds = time.perf_counter() - t0
        r.steps_run = self.step - start
        if cfg.patience and self.best is not None:
            for k, v in self.best[2].items():          # the best evaluation's weights, as Keras' restore_best_weights
                self.params[k][...] = v
            r.best_step = self.best[1]
            self.last_val = self.evaluate()
        r.final = self.last_val or self.evaluate()
        if self._has_out:
            self.save(self.run_dir / CHECKPOINT if self.run_dir is not None else None)
        if self.run_dir is not None:
            save_model(self.run_dir / FINAL, self.model, self.task, cfg, r.final)
            from rnnlab.model.card import write_card
            write_card(self.run_dir)                    # card.md and card.json: the model, its data, how to load it
        if self.trackers:
            self.trackers.close()
        return r


def train(config, progress: bool = False, task=None, on_record=None, control=None) -> RunResult:
    """Run a training job. ``config``: a ``TrainConfig`` or a dict of its options.

    ``task``: a task built by the caller (e.g. ``tasks.sequence_task`` over in-memory arrays) instead of the
    one ``config`` names; such a run cannot be resumed from its folder, which does not know the data.
    Under ``mpiexec -n K`` (``distributed``: "auto" or "mpi") the K processes train one model data-parallel
    (``rnnlab.scale.distributed``); each returns the same result. ``on_record(record)``: called with every record
    written to metrics.jsonl (a sweep reports them to Ray Tune). ``control(trainer)``: called before every
    step (the lab pauses there and changes settings with ``trainer.change``); returning False ends the run
    there, saved as a finished run is. The run folder (``config.out``) is made and locked once the
    ``Trainer`` is built, so a config that cannot train leaves nothing behind.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config))
    cfg.validate()
    cfg = absolute_paths(cfg) if task is None else cfg
    check_run_dir(cfg.out)                                 # before the data is read: a bad --out fails at once
    trainer = Trainer(cfg, task, progress=progress, on_record=on_record, control=control)
    if cfg.track:
        from rnnlab.scale.tracking import require
        require(cfg.track, cfg.mlflow_uri)
    locks = []

    def prepare():
        if not cfg.out:
            return None
        locks.append(RunLock(cfg.out).acquire())
        return prepare_run_dir(cfg.out, cfg)
    try:
        trainer.strategy.lead(prepare)                     # the writer makes the folder; a failure stops every rank
        trainer.attach(cfg.out or None)
        return trainer.fit()
    finally:
        for lock in locks:
            lock.release()


def resume(run_dir, progress: bool = False, steps: int | None = None, on_record=None, control=None) -> RunResult:
    """Continue the run in ``run_dir`` from its checkpoint (or from scratch if it was killed before one).
    A distributed run resumes under ``mpiexec`` with the same number of processes. The settings changed
    mid-run (changes.jsonl) are replayed, each from its step, including those after the checkpoint."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise ConfigError(f"run folder: {run_dir} has no config.toml; is it a folder made by `rnnlab train --out`?")
    cfg = TrainConfig.from_dict(read_toml(run_dir / "config.toml"), source=str(run_dir / "config.toml")).validate()
    if steps is not None:
        from rnnlab.errors import check_int
        cfg.steps = check_int("steps", steps, 1, MAX_STEPS)
        cfg.epochs = 0                                   # the steps given now are the run's length
    loaded = same_run(run_dir, cfg)
    trainer = Trainer(cfg, run_dir=run_dir, progress=progress, on_record=on_record, control=control)
    trainer.changes = read_changes(run_dir)
    writer = trainer.strategy.is_writer
    locks = []
    try:
        trainer.strategy.lead(lambda: locks.append(RunLock(run_dir).acquire()))
        if loaded is not None:
            trainer.restore(run_dir / CHECKPOINT, loaded)
        if steps is not None and steps < trainer.step:
            raise ConfigError(f"steps: the run is at step {trainer.step} already; give --steps above it to train "
                              f"more, got {steps}")
        if steps is not None and writer:                 # the new length is the run's from now on
            write_toml(run_dir / "config.toml", cfg.to_dict())
        if writer:
            drop_records_after(run_dir, trainer.step)
        return trainer.fit()
    finally:
        for lock in locks:
            lock.release()
