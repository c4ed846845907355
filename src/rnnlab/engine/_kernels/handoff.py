"""Handing a block of work to the other threads, and waiting for it, in a few microseconds.

Why: a ``ThreadPoolExecutor`` wakes its worker through a lock and a condition variable, and the caller waits
for the result the same way: some 70 µs per call on a 2-CPU virtual machine (docs/performance.md), a tenth
of a small layer's call. Here each worker thread stays up between calls: after its block it watches a counter
(``posted``) for the next one, spinning on an atomic load and yielding its core (``sched_yield``) between
rounds, for ``HOT_ROUNDS`` rounds (about a millisecond) before it sleeps on a condition; the caller posts by
incrementing the counter (and notifies a sleeping worker), runs its own block, and waits for the workers'
``done`` counters the same way. The spinning and waiting are compiled loops that release the GIL.

Works where POSIX ``sched_yield`` exists (``SUPPORTED``); elsewhere the caller keeps the executor. One caller
at a time: a call that finds the workers busy (another Python thread's call) runs all its blocks itself, in
order (each block's numbers are the same on any thread).
"""
from __future__ import annotations

import os
import sys
import threading

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from rnnlab.engine._kernels import cache_dir

cache_dir()     # stale kernels dropped before any of this module's loads (see ``_kernels``)

SUPPORTED = sys.platform != "win32"
SPIN = 4096             # loads of a counter between two yields of the core
HOT_ROUNDS = 64         # rounds of SPIN loads and a yield a worker waits for the next block before it sleeps


# ------------------------------------------------------------------ atomics
@intrinsic
def _fetch_add(typingctx, arr, val):
    """arr[0] += val atomically (sequentially consistent); -> the value before. arr: a 1-D int64 array."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None
    sig = types.int64(arr, types.int64)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.atomic_rmw("add", ary.data, args[1], "seq_cst")
    return sig, codegen


@intrinsic
def _load(typingctx, arr):
    """arr[0], an atomic load with acquire ordering (what other threads wrote before their add is seen)."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None
    sig = types.int64(arr)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.load_atomic(ary.data, "acquire", 8)
    return sig, codegen


@intrinsic
def _cas(typingctx, arr, expected, new):
    """arr[0] = new if arr[0] == expected, atomically (sequentially consistent); -> whether it was swapped."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None
    sig = types.boolean(arr, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        pair = builder.cmpxchg(ary.data, args[1], args[2], "seq_cst", "seq_cst")
        return builder.extract_value(pair, 1)
    return sig, codegen


@intrinsic
def _yield(typingctx):
    """sched_yield(): give the core to another runnable thread (more threads than cores)."""
    sig = types.int32()

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32), [])
        fn = builder.module.globals.get("sched_yield") or ir.Function(builder.module, fnty, "sched_yield")
        return builder.call(fn, [])
    return sig, codegen


@njit(cache=True, nogil=True)
def add(counter, n):
    """counter[0] += n, atomically."""
    _fetch_add(counter, n)


@njit(cache=True, nogil=True)
def wait_for(counter, target, rounds):
    """Spin until counter[0] >= target, yielding the core every SPIN loads; give up after ``rounds`` yields
    (rounds < 0: never). -> whether the target was reached."""
    spins = 0
    while _load(counter) < target:
        spins += 1
        if spins >= SPIN:
            if rounds == 0:
                return False
            _yield()
            rounds -= 1
            spins = 0
    return True


# ------------------------------------------------------------------ the workers
class _Worker:
    """One thread that runs the blocks posted to it, in order."""

    def __init__(self):
        self.posted = np.zeros(1, np.int64)         # blocks posted (by the caller)
        self.done = np.zeros(1, np.int64)           # blocks finished (by the worker)
        self.task = None
        self.error = None
        # the condition's lock taken directly (a C method) where a KeyboardInterrupt can land: Condition.__enter__
        # is Python, and an interrupt as it returns leaves the lock held (the worker then waits for it for good)
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.sleeping = False
        self.thread = threading.Thread(target=self._loop, name="rnnlab-handoff", daemon=True)
        self.thread.start()

    def _loop(self):
        seen = 0
        while True:
            if not wait_for(self.posted, seen + 1, HOT_ROUNDS):
                with self.lock:
                    self.sleeping = True
                    while self.posted[0] < seen + 1:
                        self.cond.wait()
                    self.sleeping = False
            seen += 1
            fn, lo, hi = self.task
            try:
                fn(lo, hi)
            except BaseException as e:              # noqa: BLE001 - handed to the caller, which raises it
                self.error = e
            finally:
                add(self.done, 1)

    def post(self, fn, lo, hi):
        self.task = (fn, lo, hi)
        self.error = None
        add(self.posted, 1)
        with self.lock:
            if self.sleeping:
                self.cond.notify()

    def wait(self):
        # spin, and between rounds wake the worker if it sleeps: a post interrupted between its add and its
        # notify (a KeyboardInterrupt) would otherwise leave the worker asleep, and this wait with it, for good
        target = self.posted[0]
        while not wait_for(self.done, target, HOT_ROUNDS):
            with self.lock:
                if self.sleeping:
                    self.cond.notify()
        if self.error is not None:
            e, self.error = self.error, None
            raise e


class Workers:
    """n - 1 hot workers for calls of up to n blocks, the first block on the calling thread."""

    def __init__(self, n):
        self.workers = [_Worker() for _ in range(n - 1)]
        self.lock = threading.Lock()
        self.pid = os.getpid()

    def run(self, work, bounds):
        """work(bounds[i], bounds[i+1]) for every block; -> False (nothing run) if another call holds them."""
        if not self.lock.acquire(blocking=False):
            return False
        try:
            n = len(bounds) - 1
            try:
                # the posts inside the try: a call interrupted among them (KeyboardInterrupt) still waits for the
                # blocks it posted, else a worker not yet started would run the next call's block twice (the
                # task is read after the count) and a block would outlive its call
                for i in range(1, n):
                    self.workers[i - 1].post(work, bounds[i], bounds[i + 1])
                work(bounds[0], bounds[1])
            finally:
                errors = []
                for i in range(1, n):                 # a worker not posted to returns at once (done == posted)
                    try:
                        self.workers[i - 1].wait()
                    except BaseException as e:      # noqa: BLE001 - the first one is raised below
                        errors.append(e)
            if errors:
                raise errors[0]
            return True
        finally:
            self.lock.release()


_WORKERS: list = []
_LOCK = threading.Lock()


def _after_fork_in_child():
    """A forked child has none of its parent's threads, and a lock another thread held at the fork stays held
    in it for good: the child starts with a fresh lock and no workers."""
    global _LOCK
    _LOCK = threading.Lock()
    _WORKERS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def workers(n) -> Workers:
    """The process's workers for n blocks (made on first use, again after a fork: a forked child has none
    of its parent's threads)."""
    with _LOCK:
        w = _WORKERS[0] if _WORKERS else None
        if w is None or w.pid != os.getpid():
            w = Workers(n)
            _WORKERS[:] = [w]
        while len(w.workers) < n - 1:                   # more blocks than before: more workers, the old kept
            w.workers.append(_Worker())
        return w
