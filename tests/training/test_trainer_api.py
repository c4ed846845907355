"""The public ``rnnlab.Trainer`` (#29): its docstring's example, fit / train_step / evaluate / save / restore, the
run folder and the hooks; the data-parallel strategy it is given (``SingleProcess`` here, ``MPIDataParallel``
under ``mpiexec -n 2``); and that the trainer's module holds no MPI code."""
import ast
import doctest
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnnlab
from rnnlab.errors import CheckpointError, ConfigError
from rnnlab.model.checkpoint import load_checkpoint
from rnnlab.scale import distributed
from rnnlab.scale.distributed import SingleProcess, strategy_for
from rnnlab.training import trainer as T
from rnnlab.training.config import TrainConfig
from rnnlab.training.trainer import Trainer
from rnnlab.scale import netns
from test_distributed import MPIEXEC, _env, needs_mpi      # the mpiexec harness of the MPI tests

SMALL = {"task": "adding", "seq_len": 6, "hidden_size": 5, "batch_size": 4, "steps": 8, "eval_every": 4,
         "dropout": 0.3, "num_layers": 2, "seed": 3, "quiet": True}
TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer. " * 20


def _same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert np.asarray(a[k]).tobytes() == np.asarray(b[k]).tobytes(), k


def _config(kind, tmp_path):
    if kind == "adding":
        return dict(SMALL)
    (tmp_path / "t.txt").write_text(TEXT)       # a language model: TBPTT streams carry their state
    return {**SMALL, "task": "chars", "text": str(tmp_path / "t.txt"), "seq_len": 5, "tbptt": 0, "dropout": 0.0,
            "val_fraction": 0.2}


# ------------------------------------------------------------------------------ the public Trainer
def test_the_docstring_example_runs():
    assert rnnlab.Trainer is Trainer and "Trainer" in rnnlab.__all__ and "RunResult" in rnnlab.__all__
    tests = doctest.DocTestFinder().find(Trainer, "Trainer", globs={})
    examples = [t for t in tests if t.examples]
    assert examples and sum(len(t.examples) for t in examples) >= 8
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for t in examples:
        runner.run(t)
    assert runner.failures == 0


def test_fit_gives_the_weights_of_train_and_of_its_own_steps():
    fitted = Trainer(SMALL)
    r = fitted.fit()
    assert isinstance(r, rnnlab.RunResult) and r.steps_run == 8 and fitted.step == 8 and r.model is fitted.model
    assert [rec["step"] for rec in r.records if rec["split"] == "val"] == [4, 8]
    assert r.final == fitted.evaluate()
    _same(fitted.model.state_dict(), rnnlab.train(SMALL).model.state_dict())
    stepped = Trainer(TrainConfig(**SMALL))   # a TrainConfig as well as a dict
    recs = [stepped.train_step() for _ in range(8)]
    assert [sorted(rec) for rec in recs[:1]] == [["clipped", "grad_norm", "loss", "lr", "mse"]]
    _same(stepped.model.state_dict(), fitted.model.state_dict())   # evaluating draws nothing


@pytest.mark.parametrize("kind", ["adding", "chars"])
def test_save_and_restore_continue_bit_identically(kind, tmp_path):
    cfg = _config(kind, tmp_path)
    whole = Trainer(cfg)
    whole.fit()
    first = Trainer(cfg)
    for _ in range(3):
        first.train_step()
    if kind == "chars":
        assert first.state is not None                           # a carried state goes into the checkpoint
    first.save(tmp_path / "ck.safetensors")
    assert load_checkpoint(tmp_path / "ck.safetensors")[1]["distributed"] is None
    rest = Trainer(cfg)
    rest.restore(tmp_path / "ck.safetensors")
    assert rest.step == 3
    r = rest.fit()
    assert r.steps_run == 5
    _same(rest.model.state_dict(), whole.model.state_dict())
    _same(rest.opt.state_arrays(), whole.opt.state_arrays())


def test_a_run_folder_and_the_hooks(tmp_path):
    seen, steps = [], []

    def control(tr):
        steps.append(tr.step)
        if tr.step == 2:
            tr.change(lr=0.5)
        return tr.step < 6                                      # False: the run ends there, saved

    run = tmp_path / "run"
    run.mkdir()
    tr = Trainer({**SMALL, "checkpoint_every": 2, "log_every": 1}, run_dir=run, on_record=seen.append,
                 control=control)
    r = tr.fit()
    assert steps == list(range(7)) and tr.step == 6 and r.out == run
    assert seen == r.records and seen[-1]["step"] == 6
    assert [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] == r.records
    assert json.loads((run / "changes.jsonl").read_text()) == {"step": 2, "lr": 0.5}
    lrs = {rec["step"]: rec["lr"] for rec in r.records if rec["split"] == "train"}
    assert tr.setting("lr") == 0.5 and lrs == {1: 1e-3, 2: 1e-3, 3: 0.5, 4: 0.5, 5: 0.5, 6: 0.5}
    assert load_checkpoint(run / T.CHECKPOINT)[1]["step"] == 6
    model, meta = rnnlab.load_model(run)
    _same(model.state_dict(), tr.model.state_dict())
    with pytest.raises(ConfigError, match="a run can change lr or clip mid-run, not momentum"):
        tr.change(momentum=0.9)


def test_nothing_is_written_without_a_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Trainer({**SMALL, "checkpoint_every": 2}).fit()
    assert list(tmp_path.iterdir()) == []


def test_a_bad_config_is_refused_before_training():
    with pytest.raises(ConfigError, match="distributed: expected one of"):
        Trainer({**SMALL, "distributed": "ray"})
    with pytest.raises(ConfigError, match="tbptt: task 'adding' has one target per sequence"):
        Trainer({**SMALL, "tbptt": 2})


# ------------------------------------------------------------------------------ the strategy
def test_single_process_strategy():
    s = strategy_for("none")
    assert type(s) is SingleProcess and type(strategy_for("auto")) is SingleProcess   # not under mpiexec here
    assert (s.rank, s.size, s.is_writer, s.describe()) == (0, 1, True, None)
    tr = Trainer(SMALL, strategy=s)
    assert tr.strategy is s and tr.rank == 0
    batch = tr.task.train_batch(np.random.default_rng(0), 4, 0)
    assert s.shard(batch, False) == (batch, 1.0)                # every row, the gradient not rescaled
    grads = {"w": np.arange(3.0)}
    metrics = {"mse": 0.5}
    assert s.allreduce(grads, 0.25, metrics, 1.0) == (0.25, metrics)
    assert grads["w"].tolist() == [0.0, 1.0, 2.0]
    states = (np.ones((1, 4, 5)),)
    assert s.gather(states, {"rng": 1}) == (states, {})
    assert s.restore({"rng_model": {"rng": 1}}, states, "ck") == ({"rng": 1}, states)
    with pytest.raises(CheckpointError, match="written by a run on 2 process"):
        s.restore({"rng_model": {}, "distributed": {"ranks": 2}}, None, "ck")
    assert s.lead(lambda: "made") == "made"
    with pytest.raises(OSError, match="disk full"):
        s.lead(lambda: (_ for _ in ()).throw(OSError("disk full")))


class _Counting(SingleProcess):
    """SingleProcess that counts the trainer's calls (the trainer needs nothing else of a strategy)."""

    def __init__(self):
        self.calls = {}

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def setup(self, cfg, model):
        self._count("setup")

    def shard(self, batch, every):
        self._count("shard")
        return super().shard(batch, every)

    def allreduce(self, grads, loss, metrics, weight):
        self._count("allreduce")
        return super().allreduce(grads, loss, metrics, weight)

    def gather(self, states, rng_state):
        self._count("gather")
        return super().gather(states, rng_state)

    def announce(self, quiet):
        self._count("announce")


def test_the_trainer_goes_through_its_strategy(tmp_path):
    s = _Counting()
    run = tmp_path / "run"
    run.mkdir()
    Trainer({**SMALL, "checkpoint_every": 4}, run_dir=run, strategy=s).fit()
    assert s.calls == {"setup": 1, "announce": 1, "shard": 8, "allreduce": 8, "gather": 3}   # 2 + the final


def test_the_trainer_module_holds_no_mpi_code():
    src = Path(T.__file__).read_text(encoding="utf-8")
    tree = ast.parse(src)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    mpi = {"comm", "Comm", "MPI", "allreduce_", "gather_bytes", "gather_json", "bcast_int", "rows_for",
           "slice_batch", "loss_terms", "flatten", "unflatten", "check_batch", "connect"}
    assert not (names | attrs) & mpi, (names | attrs) & mpi
    assert "distributed" not in names                           # cfg.distributed is read, the module never
    imported = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    imported |= {(a.name, None) for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any("mpi" in (m or "").lower() for m, _ in imported)
    assert {a for m, a in imported if m == "rnnlab.scale.distributed"} == {"strategy_for"}   # the default's pick
    for name in ("trainer", "passes", "runs"):                  # no module over 500 lines (#29)
        path = Path(T.__file__).with_name(f"{name}.py")
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 500, path


def test_the_estimators_use_the_public_trainer():
    src = Path(sys.modules["rnnlab"].__file__).parent / "estimators.py"
    text = src.read_text(encoding="utf-8")
    assert "_Trainer" not in text and "import Trainer" in text


# ------------------------------------------------------------------------------ MPIDataParallel, two ranks
_CONTRACT = r"""
import numpy as np
from types import SimpleNamespace
from rnnlab.errors import CheckpointError, ConfigError
from rnnlab.scale.distributed import MPIDataParallel, strategy_for
from rnnlab.tasks.base import Batch

s = strategy_for("mpi")
assert type(s) is MPIDataParallel and (s.size, s.is_writer) == (2, s.rank == 0), (s.size, s.rank)
rank = s.rank
model = SimpleNamespace(rng=np.random.default_rng(0))
s.setup(SimpleNamespace(batch_size=5, seed=7), model)
theirs = np.random.default_rng([7, 2, 1]).bit_generator.state
assert (model.rng.bit_generator.state == theirs) == (rank == 1)        # each rank its own dropout masks
T, B = 3, 5
x = np.arange(T * B * 2, dtype=np.float64).reshape(T, B, 2)
batch = Batch(inputs=x, targets=np.arange(B), lengths=np.array([3, 1, 2, 3, 2]), reset=False, weights=None)
local, w = s.shard(batch, False)                  # rows 0-2 on rank 0, 3-4 on rank 1; one term per sequence
assert local.inputs.shape[1] == (3, 2)[rank] and w == (0.6, 0.4)[rank], (local.inputs.shape, w)
steps = Batch(inputs=x, targets=np.zeros((T, B)), lengths=batch.lengths, reset=False, weights=None)
every, w2 = s.shard(steps, True)                  # per-step targets: the valid steps are the terms
assert w2 == (6 / 11, 5 / 11)[rank], w2
grads = {"a": np.full((2, 2), rank + 1.0), "b": np.array([rank * 10.0])}
loss, metrics = s.allreduce(grads, 1.0 + rank, {"mse": 2.0 + rank, "perplexity": 9.0}, w)
assert abs(loss - (0.6 * 1 + 0.4 * 2)) < 1e-12, loss
assert abs(metrics["mse"] - (0.6 * 2 + 0.4 * 3)) < 1e-12 and metrics["perplexity"] == np.exp(loss)
assert grads["a"].tolist() == [[3.0, 3.0], [3.0, 3.0]] and grads["b"].tolist() == [10.0]
mine = (np.full((2, (3, 2)[rank], 4), float(rank)),)
got = s.gather(mine, {"rank": rank})
if rank:
    assert got is None
else:
    (full,), extra = got
    assert full.shape == (2, 5, 4) and full[:, :3].max() == 0 and full[:, 3:].min() == 1
    assert extra == {"rng_model_ranks": [{"rank": 0}, {"rank": 1}]}
assert s.describe() == {"ranks": 2}
meta = {"rng_model": "?", "rng_model_ranks": ["r0", "r1"], "distributed": {"ranks": 2}}
full = np.arange(2 * 5 * 4, dtype=np.float64).reshape(2, 5, 4)
rng, (back,) = s.restore(meta, (full,), "ck")
assert rng == ("r0", "r1")[rank] and np.array_equal(back, full[:, (slice(0, 3), slice(3, 5))[rank]])
try:
    s.restore({"rng_model": "?"}, None, "ck")
    raise SystemExit("a one-process checkpoint resumed on two ranks")
except CheckpointError as exc:
    assert "written by a run on 1 process(es), resumed on 2" in str(exc)
assert s.lead(lambda: "folder") == ("folder" if rank == 0 else None)
def fails():
    raise OSError("disk full")
try:
    s.lead(fails)
    raise SystemExit("a failed prepare went unnoticed")
except OSError as exc:
    assert rank == 0 and "disk full" in str(exc)
except ConfigError as exc:
    assert rank == 1 and "rank 0 could not prepare the run folder" in str(exc)
try:
    s.setup(SimpleNamespace(batch_size=1, seed=0), model)
    raise SystemExit("a batch of one row split over two ranks")
except ConfigError as exc:
    assert "2 ranks need at least 2 rows per batch" in str(exc)
open(f"kept-{rank}", "w").close()                 # a file, not stdout: the launcher interleaves the ranks' lines
"""


@needs_mpi
def test_mpi_strategy_contract_on_two_ranks(tmp_path):
    (tmp_path / "contract.py").write_text(_CONTRACT)
    cmd = [MPIEXEC, "-n", "2", sys.executable, str(tmp_path / "contract.py")]
    p = subprocess.run(netns.command(cmd) if netns.available() else cmd, cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (tmp_path / "kept-0").exists() and (tmp_path / "kept-1").exists(), p.stdout + p.stderr


def test_the_default_strategy_follows_the_config():
    assert type(Trainer(SMALL).strategy) is SingleProcess
    with pytest.raises(ConfigError, match="distributed: 'mpi' needs several processes"):
        Trainer({**SMALL, "distributed": "mpi"})
    assert distributed.connect("none") is None
