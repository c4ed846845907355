"""Threads for the compiled loops: the setting (``RNNLAB_NUM_THREADS``, else the CPUs and the cgroup CPU quota),
the hot workers of ``handoff`` (an executor where it does not run), the batch's row split between threads
(``RowSplit``) and the matrix product split over them (``pmatmul``)."""
from __future__ import annotations

import functools
import math
import os
import posixpath
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from rnnlab.engine._kernels import handoff
from rnnlab.errors import ConfigError

MIN_ROWS = 1            # fewest batch rows per thread (the layer also asks for enough work per thread)
_POOL: list = []
_LOCK = threading.Lock()


def num_threads() -> int:
    """Threads for the batch split: ``RNNLAB_NUM_THREADS`` if set, else the CPUs this process may run on, at most
    its cgroup CPU quota rounded up (``cpu_quota``): a container allowed 2 CPUs of 16 would otherwise run 16
    threads on 2 CPUs' time, and each step's barrier would wait for a thread the scheduler has put aside."""
    env = os.environ.get("RNNLAB_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ConfigError(f"RNNLAB_NUM_THREADS: expected a positive integer, got {env!r}") from None
        if n < 1:
            raise ConfigError(f"RNNLAB_NUM_THREADS: expected a positive integer, got {env!r}")
        return n
    return machine_threads()


def machine_threads() -> int:
    """The default thread count, whatever ``RNNLAB_NUM_THREADS`` says: the CPUs this process may run on, at most
    its cgroup CPU quota rounded up."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:                                  # not on Linux
        n = os.cpu_count() or 1
    quota = host_quota()
    if quota is not None:
        # rounded up, as the JVM and Go do: the fraction is CPU time one more thread can use (1.5 CPUs: 2 threads)
        n = min(n, max(1, math.ceil(quota)))
    return n


def _read(path):
    """A small file's text, stripped; None if it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            return fh.read().strip()
    except (OSError, ValueError):
        return None


def _number(text):
    """A finite number from a file's text; None for "max", garbage, inf or nan."""
    try:
        x = float(text)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _up(top, path):
    """The folders from top/path up to top itself: a parent cgroup's limit binds its children too. A path that
    leaves top (a cgroup namespace shows '/..' for a cgroup outside it) gives top alone."""
    parts = [p for p in posixpath.normpath("/" + path).split("/") if p]
    if ".." in parts:
        parts = []
    return [os.path.join(top, *parts[:i]) for i in range(len(parts), -1, -1)]


def _v2_limit(folder):
    """CPUs allowed by ``cpu.max`` ("200000 100000": quota and period in µs; "max 100000": no limit)."""
    text = _read(os.path.join(folder, "cpu.max"))
    fields = text.split() if text else []
    quota, period = (_number(f) for f in fields[:2]) if len(fields) >= 2 else (None, None)
    return quota / period if quota and period and quota > 0 and period > 0 else None


def _v1_limit(folder):
    """CPUs allowed by ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (a quota of -1: no limit)."""
    quota = _number(_read(os.path.join(folder, "cpu.cfs_quota_us")))
    period = _number(_read(os.path.join(folder, "cpu.cfs_period_us")))
    return quota / period if quota and period and quota > 0 and period > 0 else None


def cpu_quota(root="/sys/fs/cgroup", proc_cgroup="/proc/self/cgroup"):
    """The CPUs this process's cgroup quota allows (quota / period, e.g. 1.5), the smallest over its cgroup and
    the parents up to ``root``; None without a quota, off Linux or where the files cannot be read (never
    raises). cgroup v2 (line ``0::/path``: ``<root>/<path>/cpu.max``) and v1 (line ``N:cpu,cpuacct:/path``:
    ``<root>/cpu,cpuacct/<path>/cpu.cfs_quota_us``); inside a container the path may not exist under the
    mount, whose own folder (reached by walking up) is then the container's cgroup."""
    text = _read(proc_cgroup)
    limits = []
    for line in (text or "").splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        hierarchy, controllers, path = fields
        if hierarchy == "0" and controllers == "":          # v2: the unified hierarchy
            limits += [_v2_limit(folder) for folder in _up(root, path)]
        elif "cpu" in controllers.split(","):               # v1: the cpu controller's own mount
            for mount in dict.fromkeys([controllers, "cpu,cpuacct", "cpuacct,cpu", "cpu"]):
                top = os.path.join(root, mount)
                if os.path.isdir(top):
                    limits += [_v1_limit(folder) for folder in _up(top, path)]
                    break
    limits = [x for x in limits if x is not None]
    return min(limits) if limits else None


@functools.lru_cache(maxsize=1)
def host_quota():
    """``cpu_quota()`` read once per process: ``num_threads`` runs on every layer call, and the files cost µs."""
    return cpu_quota()


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
    calling thread. The caller runs BLAS on one thread meanwhile (``rnnlab.engine.dispatch.blas_single_thread``).
    The blocks go to the hot workers (``handoff``) where they run; while another Python thread's call holds
    them, this call runs its blocks in turn on its own thread."""
    n = len(bounds) - 1
    if n > 1 and handoff.SUPPORTED:
        if not handoff.workers(n).run(work, bounds):
            for i in range(n):
                work(bounds[i], bounds[i + 1])
        return
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

    def run(self, kernel, B, args, bounds=None):
        """kernel(r0, r1, *args) over the row blocks of the batch, one block per thread. ``bounds``: the blocks
        given, no rebalancing (a kernel whose sums change in their last bits with its blocks: the backward's
        weight gradients, accumulated per group of rows, takes whole groups)."""
        if bounds is not None:
            _in_threads(lambda r0, r1: kernel(r0, r1, *args), bounds)
            return
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


