"""Threads for the compiled loops: the setting (``RNNLAB_NUM_THREADS``), one worker pool per process, the
batch's row split between threads (``RowSplit``) and the matrix product split over them (``pmatmul``)."""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from rnnlab.errors import ConfigError

MIN_ROWS = 1            # fewest batch rows per thread (the layer also asks for enough work per thread)
_POOL: list = []
_LOCK = threading.Lock()


def num_threads() -> int:
    """Threads for the batch split: ``RNNLAB_NUM_THREADS`` if set, else the CPUs this process may run on."""
    env = os.environ.get("RNNLAB_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ConfigError(f"RNNLAB_NUM_THREADS: expected a positive integer, got {env!r}") from None
        if n < 1:
            raise ConfigError(f"RNNLAB_NUM_THREADS: expected a positive integer, got {env!r}")
        return n
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                                  # not on Linux
        return os.cpu_count() or 1


def threads_for(B: int) -> int:
    """How many threads a batch of B rows is split over (1: no split)."""
    return max(1, min(num_threads(), B // MIN_ROWS))


# ------------------------------------------------------------------ drivers
def _pool(n):
    """The worker threads (created once per process: a forked child has none of its parent's threads, and a
    pool copied into it would wait forever for them)."""
    with _LOCK:
        if _POOL and (_POOL[1] != os.getpid() or _POOL[0]._max_workers < n):
            if _POOL[1] == os.getpid():
                _POOL[0].shutdown(wait=False)
            _POOL.clear()
        if not _POOL:
            _POOL.extend([ThreadPoolExecutor(max_workers=n, thread_name_prefix="rnnlab-split"), os.getpid()])
        return _POOL[0]


def _in_threads(work, bounds):
    """work(lo, hi) for each block [bounds[i], bounds[i+1]), one block per thread; the first block runs in the
    calling thread. The caller runs BLAS on one thread meanwhile (``rnnlab.engine.dispatch.blas_single_thread``)."""
    n = len(bounds) - 1
    futures = [_pool(n - 1).submit(work, bounds[i], bounds[i + 1]) for i in range(1, n)] if n > 1 else []
    try:
        work(bounds[0], bounds[1])
    finally:
        for f in futures:
            f.result()


SHARE_MIN, SHARE_MAX = 0.3, 0.7


def rebalance(share, rows0, rows1, took0, took1):
    """The first thread's next share of the rows, from its last share and the two blocks' times: the share
    that would have equalised them (rows per second of each), smoothed (0.7 old, 0.3 new) and kept in
    [0.3, 0.7]. Times under 0.1 ms carry no signal: the share stays. One of two threads on a shared virtual
    machine is often slower for seconds at a time; an even split would leave the faster one waiting."""
    if min(took0, took1) <= 1e-4:
        return share
    rate0, rate1 = rows0 / took0, rows1 / took1
    return min(SHARE_MAX, max(SHARE_MIN, 0.7 * share + 0.3 * rate0 / (rate0 + rate1)))


class RowSplit:
    """How a layer splits its batch over two threads (``share``: the calling thread's fraction of the rows),
    updated from each call's measured times by ``rebalance``. Every row's result is the same whatever block
    it is in (tested), so the split changes speed only."""

    def __init__(self, share=0.5):
        self.share = share

    def threads(self, B):
        return threads_for(B)

    def run(self, kernel, B, args):
        """kernel(r0, r1, *args) over the row blocks of the batch, one block per thread."""
        n = threads_for(B)
        if n != 2:                  # more threads: which pool thread takes which block is not fixed
            _in_threads(lambda r0, r1: kernel(r0, r1, *args), [B * i // n for i in range(n + 1)])
            return
        m = min(B - MIN_ROWS, max(MIN_ROWS, round(B * self.share)))
        took = {}

        def work(r0, r1):
            t0 = time.perf_counter()
            kernel(r0, r1, *args)
            took[r0] = time.perf_counter() - t0
        _in_threads(work, [0, m, B])
        self.share = rebalance(self.share, m, B - m, took[0], took[m])


PMATMUL_MIN_ROWS = 64


def pmatmul(a, b, bias=None, out=None, min_rows=PMATMUL_MIN_ROWS):
    """``a @ b (+ bias)`` with the output's rows split over rnnlab's threads (each a one-thread BLAS call,
    which releases the GIL), blocks of at least ``min_rows`` rows. Used for the large products around the
    batch-split scans, so that BLAS's own worker threads never wake up and spin against the scan's threads."""
    M = a.shape[0]
    if out is None:
        out = np.empty((M, b.shape[1]), np.result_type(a, b))   # (M, N)
    n = max(1, min(num_threads(), M // max(1, min_rows)))

    def block(lo, hi):
        np.matmul(a[lo:hi], b, out=out[lo:hi])
        if bias is not None:
            out[lo:hi] += bias
    _in_threads(block, [M * i // n for i in range(n + 1)])
    return out


