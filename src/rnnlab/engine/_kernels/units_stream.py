"""The unit split for a stream (``rnnlab.Stream``): a step or a chunk of steps of every layer per call, the other
threads waiting inside compiled code between calls.

Why: a step fed alone to an LSTM with H = 256 computes in about 20 µs on one thread, where the unit split of a
whole call (``_kernels.units``) takes about 12 µs a step on two, each thread keeping its share of the weights in
its own core's cache. Handing every step to a Python worker (``_kernels.handoff``) would cost the worker a
wake-up and the GIL, more than the step. Here each worker thread runs a compiled loop (``serve``) that waits for
the next job (a call's steps) on an atomic counter, computes its units of every layer at every step (each layer
ending at a barrier, as the unit split's steps do) and waits again: it stays in compiled code, without the GIL,
while calls keep coming. The caller (``post_and_run``) posts the job, computes its own units and returns after
the last barrier.

A worker that sees no job for ``handoff.HOT_ROUNDS`` rounds of spinning and yielding (about a millisecond)
marks its counter asleep with a compare-and-swap (a post racing it fails the swap and is served) and sleeps in
Python; the post that finds the mark wakes it. A worker asleep IDLE_S seconds ends, and the next call starts
another; ``close()``, or the stream's garbage collection, stops them.

Per layer and thread: its units' rows of W_ih and W_hh (gate block g: rows g*H + u0 .. g*H + u1), read where
they are (``packed_gemm.dots_acc``: an update of the weights in place is seen at the next step); x_t W_ih^T of its
units each step; the cell's row kernel (``_kernels.cell.fwd_row``). The states are double-buffered per layer:
step k reads SB[k % 2] and writes SB[(k + 1) % 2], so one barrier per layer suffices.
"""
from __future__ import annotations

import os
import threading
import weakref

import numpy as np
from numba import njit

from rnnlab.engine._kernels.cell import fwd_row
from rnnlab.engine._kernels.gates import FAST
from rnnlab.engine._kernels.handoff import HOT_ROUNDS, _cas, _fetch_add, add, wait_for
from rnnlab.engine._kernels.packed_gemm import dots_acc, token
from rnnlab.engine._kernels.units import barrier, threads_for

SLEEP = 1 << 62         # added to a worker's ``posted`` count while it sleeps in Python
IDLE_S = 5.0            # seconds a worker sleeps without a step before its thread ends
POSTED, SERVED, STOP = 0, 1, 2     # a worker's control row ctl[j]: jobs posted to it, jobs it served, stop
STEPS, NSTEPS = 3, 4               # the caller's row ctl[0]: the stream's steps so far, the posted job's steps
                                   # (and its POSTED, SERVED: the jobs it posted and those it ran)
ROW = 16                # int64 per control row: 128 bytes, no two threads' counters on one cache line


# ------------------------------------------------------------------ one step of this thread's units
@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _units_step(u0, u1, n, k, cell, layers, x0, mask, y, parts, sync, tok):
    """Units u0 .. u1 of every layer at the stream's step k. layers: per layer (W_ih, W_hh, b_ih, b_hh, SB), SB
    (2, n_states, B, H) the states, an absent bias empty; x0 (B, I) the step's input; mask (B,) 1 where a stream
    has this step; y (B, H) the last layer's output (0 where no step); parts: per layer this thread's
    (A, X, C, copt); sync: the barrier's counter."""
    L = len(layers)
    for l in range(L):
        W_ih, W_hh, b_ih, b_hh, SB = layers[l]
        A, X, C, copt = parts[l]
        cur, nxt = SB[k % 2], SB[(k + 1) % 2]
        xin = x0 if l == 0 else layers[l - 1][4][(k + 1) % 2, 0]       # (B, I): the layer below's new h
        B, H = SB.shape[2], SB.shape[3]
        G = W_hh.shape[0] // H
        Hj = u1 - u0
        sums = X.shape[0] == 0
        P = A if sums else X                            # where x_t W_ih^T (+ b) goes
        hi, hh = b_ih.shape[0] > 0, b_hh.shape[0] > 0
        for j in range(SB.shape[1]):                    # these units carried over (kept where no step)
            for r in range(B):
                for u in range(u0, u1):
                    nxt[j, r, u] = cur[j, r, u]
        Sj, Nj = cur[:, :, u0:u1], nxt[:, :, u0:u1]
        for r in range(B):
            if mask[r] == 0.0:
                continue
            for g in range(G):                          # the biases: with x W_ih^T, b_hh too where they sum
                for i in range(Hj):
                    q = g * H + u0 + i
                    P[r, g * Hj + i] = (b_ih[q] if hi else 0.0) + (b_hh[q] if hh and sums else 0.0)
                    if not sums:
                        A[r, g * Hj + i] = b_hh[q] if hh else 0.0
                dots_acc(P, r, g * Hj, W_ih, g * H + u0, Hj, xin, r, tok)
            for g in range(G):
                dots_acc(A, r, g * Hj, W_hh, g * H + u0, Hj, cur[0], r, tok)
            fwd_row(cell, 1, A, X, (Sj, Sj[0], Nj), r, C, r, copt)
        if l == L - 1:
            for r in range(B):
                for u in range(u0, u1):
                    y[r, u] = nxt[0, r, u] if mask[r] != 0.0 else 0.0
        barrier(sync, n * (k * L + l + 1))


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _units_job(j, u0, u1, n, cell, layers, io, parts, sync, ctl, tok):
    """The posted job's steps (ctl[0, NSTEPS] of them from the stream's step ctl[0, STEPS]) for units u0 .. u1.
    io = (x (T, B, I), mask (T, B), out (T, B, H)): step s's input, streams and the last layer's output."""
    x, mask, out = io
    k0, T = ctl[0, STEPS], ctl[0, NSTEPS]
    for s in range(T):
        _units_step(u0, u1, n, k0 + s, cell, layers, x[s], mask[s], out[s], parts, sync, tok)


@njit(cache=True, nogil=True)
def serve(j, u0, u1, n, cell, layers, io, parts, sync, ctl, tok):
    """Worker j's loop (its control row ctl[j]): each job posted, its steps for units u0 .. u1 of every layer.
    -> True when told to stop; False when no job came for HOT_ROUNDS rounds (``posted`` then carries SLEEP)."""
    row = ctl[j]
    while True:
        k = row[SERVED]
        if not wait_for(row, k + 1, HOT_ROUNDS):        # row[POSTED] is row[0]: what wait_for reads
            if _cas(row, k, k + SLEEP):
                return False
            continue                                    # a job was posted as it gave up
        if row[STOP] != 0:
            return True
        _units_job(j, u0, u1, n, cell, layers, io, parts, sync, ctl, tok)
        row[SERVED] = k + 1


@njit(cache=True, nogil=True)
def post(ctl):
    """Post the next job to every worker (rows 1 ..); -> the number of workers found asleep (to wake)."""
    asleep = 0
    for j in range(1, ctl.shape[0]):
        if _fetch_add(ctl[j], 1) >= SLEEP:
            asleep += 1
    return asleep


@njit(cache=True, nogil=True)
def run(j, u0, u1, n, cell, layers, io, parts, sync, ctl, tok):
    """The caller's share of a posted job; returns after every thread's last barrier."""
    _units_job(j, u0, u1, n, cell, layers, io, parts, sync, ctl, tok)
    ctl[0, STEPS] += ctl[0, NSTEPS]
    ctl[0, SERVED] += 1


@njit(cache=True, nogil=True)
def post_and_run(j, u0, u1, n, cell, layers, io, parts, sync, ctl, tok):
    """One call for the usual case: post; if every worker was awake, the caller's share at once (-> 0);
    else -> the number asleep, nothing computed (the caller wakes them, then calls ``run``)."""
    ctl[0, POSTED] += 1
    asleep = post(ctl)
    if asleep == 0:
        run(j, u0, u1, n, cell, layers, io, parts, sync, ctl, tok)
    return asleep


def _worker_loop(args, ctl, tok, cond, state):
    """Worker thread j (args[0]): serve jobs; asleep, wait for a post (or stop); end after IDLE_S idle seconds.
    tok: the stream's vector width, the caller's (the process's setting may have changed since)."""
    row = ctl[args[0]]
    while True:
        if serve(*args, ctl, tok):
            state["alive"] = False
            return
        with cond:
            while row[POSTED] < SLEEP + row[SERVED] + 1:      # no job posted since it slept
                if not cond.wait(IDLE_S) and row[POSTED] < SLEEP + row[SERVED] + 1:
                    state["alive"] = False                  # the next post starts another thread
                    return
            add(row, -SLEEP)                                # awake: ``serve`` takes the posted job


class UnitsStream:
    """B streams through the layers ``params`` (per layer (W_ih, W_hh, b_ih, b_hh) as the layer holds them, rows
    contiguous; the biases may be None) of one cell, units split over ``threads_for(H)`` threads, in jobs of up
    to ``max_steps`` steps. ``run(T)`` runs the steps whose inputs are in ``x[:T]`` (T, B, I), ``mask[:T]``
    (T, B) saying which streams have each step -> the last layer's outputs ``out[:T]`` (T, B, H), views."""

    def __init__(self, cell_name, params, opts, B, dt, n_states, max_steps=1):
        from rnnlab.engine.registry import kernel_for
        kern = kernel_for(cell_name, opts)
        GH, H = params[0][1].shape
        self.n = n = threads_for(H)
        self.bounds = [H * i // n for i in range(n + 1)]
        self.x = np.zeros((max_steps, B, params[0][0].shape[1]), dt)
        self.mask = np.ones((max_steps, B), dt)
        self.y = np.zeros((max_steps, B, H), dt)
        self._ones = True                                   # mask is all ones
        none = np.empty(0, dt)
        self.layers = tuple((W_ih, W_hh, none if b_ih is None else b_ih, none if b_hh is None else b_hh,
                             np.zeros((2, n_states, B, H), dt)) for W_ih, W_hh, b_ih, b_hh in params)
        self.parts = []
        for u0, u1 in zip(self.bounds[:-1], self.bounds[1:]):
            Hj = u1 - u0
            GHj = GH // H * Hj                              # the cell's gate blocks of these units
            self.parts.append(tuple((np.empty((B, GHj), dt), np.empty((0 if kern.sums else B, GHj), dt),
                                     np.empty((B, kern.kc * Hj), dt), kern.copt(opts, B, B, Hj, dt, None))
                                    for _ in self.layers))
        self.kern = kern
        self.tok = token()                                  # the vector width when the stream was made
        self.sync = np.zeros(1, np.int64)
        self.ctl = np.zeros((n, ROW), np.int64)
        self.ctl[1:, POSTED] = SLEEP                        # no worker thread yet: the first post starts them
        # the condition's lock taken directly (a C method) where a KeyboardInterrupt can land: Condition.__enter__ is
        # Python, and an interrupt as it returns leaves the lock held (the woken worker then waits for it for good)
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.workers = [{"alive": False, "thread": None} for _ in range(n)]
        self.pid = os.getpid()
        self._args = [(j, self.bounds[j], self.bounds[j + 1], n, kern, self.layers, (self.x, self.mask, self.y),
                       self.parts[j], self.sync) for j in range(n)]
        self._finalizer = weakref.finalize(self, _stop, self.ctl, self.__dict__.get)

    @property
    def state(self):
        """Per layer the states (n_states, B, H) the next step reads (views)."""
        k = int(self.ctl[0, STEPS])
        return [SB[k % 2] for *_, SB in self.layers]

    def run(self, T, masked=True):
        """The steps in x[:T] (and mask[:T] when ``masked``; else every stream has them) -> out[:T]."""
        if masked:
            self._ones = False
        elif not self._ones:
            self.mask[...] = 1.0
            self._ones = True
        self.ctl[0, NSTEPS] = T
        if self.pid != os.getpid():
            self._forked()
        try:
            if post_and_run(*self._args[0], self.ctl, self.tok):
                self._wake()
                run(*self._args[0], self.ctl, self.tok)
        except BaseException:
            # a job posted and not run (a KeyboardInterrupt between the two): the awake workers are in it, so it
            # runs now (the wake done again), else they would finish it with the next call's inputs
            if self.ctl[0, POSTED] != self.ctl[0, SERVED]:
                self._wake()
                run(*self._args[0], self.ctl, self.tok)
            raise
        return self.y[:T]

    def _forked(self):
        """A forked child has none of its parent's threads (and maybe a lock held at the fork): start afresh."""
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        for w in self.workers:
            w["alive"], w["thread"] = False, None
        self.ctl[1:, POSTED] = SLEEP + self.ctl[1:, SERVED]

    def _wake(self):
        """Wake the sleeping workers (a job is posted to them), starting a thread where one has ended."""
        with self.lock:
            for j in range(1, self.n):
                w = self.workers[j]
                if not w["alive"]:
                    thread = threading.Thread(target=_worker_loop, name="rnnlab-stream-units", daemon=True,
                                              args=(self._args[j], self.ctl, self.tok, self.cond, w))
                    # (not guarded: a KeyboardInterrupt from here into Thread.start, itself not guarded in CPython,
                    # can leave the worker marked alive without its thread, and the job's barriers waiting for it)
                    w["alive"], w["thread"] = True, thread
                    add(self.ctl[j], -SLEEP)                # a new thread starts awake; its ``serve`` takes the job
                    thread.start()
            self.cond.notify_all()

    def close(self):
        """Stop the worker threads (also done when the stream is garbage-collected)."""
        self._finalizer()


def _stop(ctl, get):
    """Stop the workers (get: the stream's attributes, read when it stops: a fork replaces its condition)."""
    with get("lock"):
        ctl[1:, STOP] = 1
        if any(w["alive"] for w in get("workers")):
            post(ctl)
        get("cond").notify_all()
