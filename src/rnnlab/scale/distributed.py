"""Data-parallel training over MPI: ``mpiexec -n K rnnlab train ... --distributed mpi``.

Every rank builds the same task, model and optimizer from the same seed and draws the same global batch; rank
r takes its contiguous share of the batch's rows (``rows_for``; a language model's TBPTT streams are such rows,
each rank carrying its streams' state). Each rank's loss gradient is weighted by its share of the batch's loss
terms, n_r / N, so the sum over ranks is the gradient of the global mean loss; one in-place ``Allreduce`` of a
flat float buffer (every gradient, then the weighted loss and metrics) per step sums them. The update (clipping,
the optimizer) is then the same on every rank. Rank 0 alone writes the run folder (logs, checkpoints; it
holds the folder's lock); a checkpoint gathers the ranks' carried states and dropout generators so that
``mpiexec -n K rnnlab resume DIR`` continues exactly. Only buffers travel between ranks (nothing is pickled).

With float64 the result equals one process with the same global batch to round-off (the per-rank partial
sums of each weight gradient are added in a fixed order). If a rank dies, the MPI launcher (MPICH's hydra,
Open MPI's mpirun) ends the others at once and names the dead process's pid; the first log line of rank 0
maps pids to ranks. Needs the ``mpi`` extra: ``pip install 'rnnlab[mpi]'`` (mpi4py and an MPI from wheels).

The trainer (``rnnlab.Trainer``) knows none of this: it is given a data-parallel *strategy* and calls its
methods at the few points where the ranks meet. ``SingleProcess`` is the default (every row, no communication);
``MPIDataParallel(comm)`` is the above; ``strategy_for(mode)`` picks one for a config's ``distributed``.
"""
from __future__ import annotations

import json
import math
import os
import sys

import numpy as np

from rnnlab.errors import CheckpointError, ConfigError

MODES = ("auto", "none", "mpi")
_ENV = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE")


def launched_by_mpi() -> bool:
    """True when this process was started by an MPI launcher with more than one process."""
    for k in _ENV:
        v = os.environ.get(k, "")
        if v.isdigit() and int(v) > 1:
            return True
    return False


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise ConfigError("distributed='mpi' needs mpi4py and an MPI library; install them with: "
                          "pip install 'rnnlab[mpi]' (mpi4py and MPICH from wheels), then run "
                          "mpiexec -n K rnnlab train ...") from None
    return MPI


class Comm:
    """The ranks of a data-parallel run (an mpi4py communicator), with the few collectives training needs."""

    def __init__(self, comm=None):
        MPI = _mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()

    def allreduce_(self, buf: np.ndarray) -> np.ndarray:
        """Sum ``buf`` over the ranks in place (one collective)."""
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    def gather_bytes(self, data: bytes) -> list | None:
        """Every rank's bytes at rank 0 (a list in rank order), None elsewhere."""
        n = np.array([len(data)], np.int64)
        sizes = np.empty(self.size, np.int64) if self.rank == 0 else None
        self.comm.Gather(n, sizes, root=0)
        send = np.frombuffer(data, np.uint8) if data else np.empty(0, np.uint8)
        if self.rank != 0:
            self.comm.Gatherv(send, None, root=0)
            return None
        recv = np.empty(int(sizes.sum()), np.uint8)
        self.comm.Gatherv(send, (recv, sizes), root=0)
        offs = np.concatenate([[0], np.cumsum(sizes)])
        return [recv[offs[i]:offs[i + 1]].tobytes() for i in range(self.size)]

    def gather_json(self, obj) -> list | None:
        got = self.gather_bytes(json.dumps(obj).encode("utf-8"))
        return None if got is None else [json.loads(b.decode("utf-8")) for b in got]

    def bcast_int(self, value: int) -> int:
        v = np.array([value], np.int64)
        self.comm.Bcast(v, root=0)
        return int(v[0])

    def barrier(self):
        self.comm.Barrier()


_ACTIVE = []                         # the communicator of this process's distributed run, once connected


def connect(mode: str) -> Comm | None:
    """The communicator for ``distributed`` = mode, or None for a single process. "auto": MPI when this
    process was launched by mpiexec with more than one process. From here on an uncaught error on this rank
    aborts the whole job (``abort``) instead of leaving the other ranks waiting in a collective."""
    if mode == "none" or (mode == "auto" and not launched_by_mpi()):
        return None
    if mode == "mpi" and not launched_by_mpi():       # asked for ranks, got one process: say so, not train alone
        raise ConfigError("distributed: 'mpi' needs several processes started by an MPI launcher, got 1 process; "
                          "run it as `mpiexec -n 2 rnnlab train ...` (or use --distributed auto)")
    comm = Comm()
    if comm.size < 2:
        if mode == "mpi":
            raise ConfigError("distributed: 'mpi' needs several processes, but the MPI world has 1; start it as "
                              "`mpiexec -n 2 rnnlab train ...`")
        return None
    if not _ACTIVE:
        _ACTIVE.append(comm)
        hook = sys.excepthook

        def abort_on_uncaught(*exc):
            hook(*exc)
            abort(1)
        sys.excepthook = abort_on_uncaught
    threads = max(1, (os.cpu_count() or 1) // comm.size)    # the ranks share the machine's cores
    os.environ.setdefault("RNNLAB_NUM_THREADS", str(threads))
    from threadpoolctl import threadpool_limits
    threadpool_limits(threads, user_api="blas")
    return comm


def abort(code: int) -> None:
    """End every rank of a running distributed job (after this rank printed its error); nothing otherwise."""
    if _ACTIVE:
        sys.stdout.flush()
        sys.stderr.flush()
        _ACTIVE[0].comm.Abort(code)


def check_batch(B: int, size: int) -> None:
    if size > B:
        raise ConfigError(f"batch_size: {size} ranks need at least {size} rows per batch, got batch_size={B}; "
                          f"use fewer processes (mpiexec -n) or a larger --batch-size")


def rows_for(B: int, size: int, rank: int) -> slice:
    """Rank ``rank``'s contiguous share of B rows (the first B % size ranks take one more; a short last batch
    of an epoch may leave a rank none)."""
    base, extra = divmod(B, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def slice_batch(batch, rows: slice, every: bool):
    """The rows of a task's Batch (time-major inputs; targets per step or per sequence)."""
    from rnnlab.tasks.base import Batch
    return Batch(inputs=batch.inputs[:, rows], targets=batch.targets[:, rows] if every else batch.targets[rows],
                 lengths=None if batch.lengths is None else batch.lengths[rows], reset=batch.reset,
                 weights=None if batch.weights is None else batch.weights[rows])


def loss_terms(batch, every: bool) -> int:
    """How many terms the batch's mean loss averages: valid steps (per-step targets) or sequences."""
    B = batch.inputs.shape[1]
    if batch.weights is not None:               # a weighted mean: its terms are the weights
        w = batch.weights if not every else batch.weights * (batch.lengths if batch.lengths is not None
                                                              else batch.inputs.shape[0])
        return float(np.sum(w))
    if not every:
        return B
    return int(np.sum(batch.lengths)) if batch.lengths is not None else B * batch.inputs.shape[0]


def flatten(grads: dict, extra: list) -> tuple[np.ndarray, list]:
    """One float64 buffer of every gradient (in key order) and then ``extra`` values; the layout to undo it."""
    keys = sorted(grads)
    parts = [grads[k].ravel() for k in keys]
    buf = np.concatenate(parts + [np.asarray(extra, np.float64)]).astype(np.float64, copy=False) if parts else \
        np.asarray(extra, np.float64)
    return buf, keys


def unflatten(buf: np.ndarray, grads: dict, keys: list) -> np.ndarray:
    """Write the summed gradients back into ``grads``; returns the extra values after them."""
    o = 0
    for k in keys:
        g = grads[k]
        g[...] = buf[o:o + g.size].reshape(g.shape)
        o += g.size
    return buf[o:]


# ------------------------------------------------------------------------------ strategies for the trainer
class SingleProcess:
    """The trainer's data-parallel strategy for one process: every row of every batch, nothing to exchange.

    The contract a strategy keeps (``MPIDataParallel`` is the other one), in the order the trainer calls it:
    ``rank``, ``size``, ``is_writer`` (this process writes the run folder and reports); ``setup(cfg, model)``
    once the model is built; ``lead(prepare)`` around preparing the run folder; ``announce(quiet)`` when
    training starts; per step ``shard(batch, every)`` -> (this rank's rows, the weight of their loss) and
    ``allreduce(grads, loss, metrics, weight)`` -> (loss, metrics) of the whole batch; for a checkpoint
    ``describe()`` (its metadata), ``gather(states, rng_state)`` -> (states, extra metadata), or None where this
    process does not write, and ``restore(meta, states, path)`` -> (this rank's dropout generator state, states).
    """

    rank = 0
    size = 1
    is_writer = True

    def setup(self, cfg, model) -> None:
        """Nothing to check or seed: the model's own generator draws the dropout masks."""

    def lead(self, prepare):
        """``prepare()``'s result (its error raised as it is)."""
        return prepare()

    def announce(self, quiet: bool) -> None:
        """Nothing to say about one process."""

    def shard(self, batch, every: bool):
        """The whole batch, weight 1 (the gradient is not rescaled)."""
        return batch, 1.0

    def allreduce(self, grads: dict, loss: float, metrics: dict, weight: float):
        """The loss and metrics as they are; the gradients are already the batch's."""
        return loss, metrics

    def describe(self):
        """The checkpoint's ``distributed`` metadata: None, one process."""
        return None

    def gather(self, states, rng_state):
        """The carried states as they are and no extra metadata (this process writes)."""
        return states, {}

    def restore(self, meta: dict, states, path):
        """The dropout generator's state and the carried states of checkpoint ``path``; refused when it was
        written by several ranks."""
        _check_ranks(meta, path, 1)
        return meta["rng_model"], states


class MPIDataParallel:
    """Data parallelism over MPI (the module's docstring): rank r trains on its contiguous share of each batch's
    rows, one ``Allreduce`` a step sums the weighted gradients, loss and metrics, and rank 0 alone writes;
    a checkpoint gathers the ranks' carried states and dropout generators. ``comm``: a ``Comm``."""

    def __init__(self, comm: Comm):
        self.comm = comm
        self.rank, self.size = comm.rank, comm.size
        self._batch_size, self._rows = None, None      # the config's batch and this rank's rows of it (``setup``)

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes the run folder and reports."""
        return self.rank == 0

    def setup(self, cfg, model) -> None:
        """The batch checked against the ranks; the same weights everywhere, each rank its own dropout masks."""
        check_batch(cfg.batch_size, self.size)
        self._batch_size = cfg.batch_size
        self._rows = rows_for(cfg.batch_size, self.size, self.rank)
        if self.rank:
            model.rng.bit_generator.state = np.random.default_rng([cfg.seed, 2, self.rank]).bit_generator.state

    def lead(self, prepare):
        """``prepare()`` on rank 0, then every rank learns whether it worked: a failure there stops the others with
        an error instead of leaving them waiting in the first collective. Rank 0's result (None elsewhere)."""
        err, out = None, None
        if self.rank == 0:
            try:
                out = prepare()
            except Exception as exc:                   # re-raised below, after the other ranks are told
                err = exc
        if self.comm.bcast_int(0 if err is None else 1) and self.rank:
            raise ConfigError("rank 0 could not prepare the run folder (its error is printed by rank 0); stopping")
        if err is not None:
            raise err
        return out

    def announce(self, quiet: bool) -> None:
        """Rank 0 prints which pid is which rank (the launcher names a dead rank by its pid)."""
        pids = self.comm.gather_json(os.getpid())
        if self.rank == 0 and not quiet:
            print(f"distributed: {self.size} ranks over MPI, pids " +
                  ", ".join(f"rank {r}={p}" for r, p in enumerate(pids)), flush=True)

    def shard(self, batch, every: bool):
        """This rank's rows, weighted by their share of the batch's loss terms."""
        B = batch.inputs.shape[1]
        rows = self._rows if B == self._batch_size else rows_for(B, self.size, self.rank)
        local = slice_batch(batch, rows, every)
        return local, loss_terms(local, every) / loss_terms(batch, every)

    def allreduce(self, grads: dict, loss: float, metrics: dict, weight: float):
        """One Allreduce: the gradients (summed in place), the loss and the metrics, each weighted by this rank's
        share. A perplexity is no mean of the ranks' ones: it is the exponential of the summed loss."""
        names = sorted(metrics)
        buf, keys = flatten(grads, [loss * weight] + [metrics[k] * weight for k in names])
        rest = unflatten(self.comm.allreduce_(buf), grads, keys)
        loss = float(rest[0])
        metrics = {k: float(v) for k, v in zip(names, rest[1:])}
        if "perplexity" in metrics:
            metrics["perplexity"] = math.exp(min(loss, 50.0))
        return loss, metrics

    def describe(self):
        """The checkpoint's ``distributed`` metadata: how many ranks wrote it."""
        return {"ranks": self.size}

    def gather(self, states, rng_state):
        """Every rank's dropout generator and carried-state rows at rank 0 (all ranks call this): there
        (states of the whole batch, {"rng_model_ranks": [...]}), None elsewhere."""
        rngs = self.comm.gather_json(rng_state)
        if states is not None:
            parts = [self.comm.gather_bytes(np.ascontiguousarray(st).tobytes()) for st in states]
            if self.rank == 0:
                states = tuple(np.concatenate([np.frombuffer(b, st.dtype).reshape(st.shape[0], -1, st.shape[2])
                                               for b in part], axis=1) for part, st in zip(parts, states))
        if self.rank != 0:
            return None
        return states, {"rng_model_ranks": rngs}

    def restore(self, meta: dict, states, path):
        """This rank's dropout generator and rows of the carried states; refused unless the checkpoint was written
        by as many ranks."""
        _check_ranks(meta, path, self.size)
        if states is not None:
            states = tuple(np.ascontiguousarray(s[:, self._rows]) for s in states)
        return meta["rng_model_ranks"][self.rank], states


def _check_ranks(meta: dict, path, size: int) -> None:
    ranks = (meta.get("distributed") or {}).get("ranks", 1)
    if ranks != size:
        raise CheckpointError(f"{path}: written by a run on {ranks} process(es), resumed on {size}; resume it "
                              f"with the same number (mpiexec -n {ranks} rnnlab resume ...)")


def strategy_for(mode: str):
    """The trainer's strategy for ``distributed`` = mode: ``MPIDataParallel`` over the communicator ``connect``
    gives, else ``SingleProcess``."""
    comm = connect(mode)
    return SingleProcess() if comm is None else MPIDataParallel(comm)
