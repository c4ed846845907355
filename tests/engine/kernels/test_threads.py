"""The thread count from the cgroup CPU quota (rnnlab.engine._kernels.threads.cpu_quota): fake cgroup trees, v2 and
v1, the smallest limit up the tree, no quota, missing and garbage files; num_threads takes the quota, and
RNNLAB_NUM_THREADS still wins."""
import pytest

from rnnlab.engine._kernels import host, threads
from rnnlab.engine._kernels.threads import cpu_quota


def tree(root, files):
    """Write {relative path: text} under root; returns root as a string."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(root)


def proc(tmp_path, text):
    path = tmp_path / "proc_self_cgroup"
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------ cgroup v2
def test_v2_the_tightest_limit_up_the_tree(tmp_path):
    root = tree(tmp_path / "cg", {"cpu.max": "max 100000\n",                        # the root: no limit
                                   "kube/cpu.max": "150000 100000\n",               # the parent: 1.5 CPUs
                                   "kube/pod/cpu.max": "400000 100000\n",           # the child: 4, not binding
                                   "kube/pod/app/cpu.max": "max 100000\n"})
    assert cpu_quota(root, proc(tmp_path, "0::/kube/pod/app\n")) == 1.5
    assert cpu_quota(root, proc(tmp_path, "0::/kube/pod\n")) == 1.5
    # the child tighter than the parent; another period
    (tmp_path / "cg/kube/pod/app/cpu.max").write_text("25000 50000\n")
    assert cpu_quota(root, proc(tmp_path, "0::/kube/pod/app\n")) == 0.5


def test_v2_no_quota(tmp_path):
    root = tree(tmp_path / "cg", {"cpu.max": "max 100000\n", "a/cpu.max": "max 100000\n"})
    assert cpu_quota(root, proc(tmp_path, "0::/a\n")) is None
    assert cpu_quota(root, proc(tmp_path, "0::/\n")) is None


def test_v2_container_path_missing_under_the_mount(tmp_path):
    """Without a cgroup namespace the container sees the host's path; its own cgroup is the mount's root."""
    root = tree(tmp_path / "cg", {"cpu.max": "200000 100000\n"})
    assert cpu_quota(root, proc(tmp_path, "0::/system.slice/docker-0123.scope\n")) == 2.0
    assert cpu_quota(root, proc(tmp_path, "0::/../../outside\n")) == 2.0      # outside a cgroup namespace


# ------------------------------------------------------------------ cgroup v1
@pytest.mark.parametrize("mount, line", [("cpu,cpuacct", "4:cpu,cpuacct:/docker/abc"),
                                         ("cpu", "3:cpu:/docker/abc"),
                                         ("cpuacct,cpu", "3:cpuacct,cpu:/docker/abc")])
def test_v1_quota_and_parents(tmp_path, mount, line):
    root = tree(tmp_path / "cg", {f"{mount}/cpu.cfs_quota_us": "-1\n", f"{mount}/cpu.cfs_period_us": "100000\n",
                                  f"{mount}/docker/cpu.cfs_quota_us": "300000\n",
                                  f"{mount}/docker/cpu.cfs_period_us": "100000\n",
                                  f"{mount}/docker/abc/cpu.cfs_quota_us": "-1\n",
                                  f"{mount}/docker/abc/cpu.cfs_period_us": "100000\n",
                                  "cpuset/cpu.cfs_quota_us": "50000\n",            # another controller: not read
                                  "cpuset/cpu.cfs_period_us": "100000\n"})
    text = f"12:cpuset:/docker/abc\n{line}\n1:name=systemd:/docker/abc\n"
    assert cpu_quota(root, proc(tmp_path, text)) == 3.0
    (tmp_path / "cg" / mount / "docker/abc/cpu.cfs_quota_us").write_text("120000\n")
    assert cpu_quota(root, proc(tmp_path, text)) == pytest.approx(1.2)


def test_v1_no_quota_and_the_container_mount_root(tmp_path):
    root = tree(tmp_path / "cg", {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
                                  "cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    text = "4:cpu,cpuacct:/docker/abc\n"
    assert cpu_quota(root, proc(tmp_path, text)) is None
    # inside a container the host's path is not there: the mount's root is the container's cgroup
    (tmp_path / "cg/cpu,cpuacct/cpu.cfs_quota_us").write_text("50000\n")
    assert cpu_quota(root, proc(tmp_path, text)) == 0.5


@pytest.mark.parametrize("mount", ["cpu", "cpu,cpuacct"])
def test_v1_mount_named_otherwise_than_the_line(tmp_path, mount):
    """/proc names the controllers 'cpu,cpuacct' and the mount is 'cpu' alone, or the other way round."""
    root = tree(tmp_path / "cg", {f"{mount}/cpu.cfs_quota_us": "200000", f"{mount}/cpu.cfs_period_us": "100000"})
    line = "4:cpu,cpuacct:/\n" if mount == "cpu" else "4:cpu:/\n"
    assert cpu_quota(root, proc(tmp_path, line)) == 2.0


def test_hybrid_v1_and_v2_lines(tmp_path):
    root = tree(tmp_path / "cg", {"cpu/cpu.cfs_quota_us": "250000", "cpu/cpu.cfs_period_us": "100000",
                                  "unified/cgroup.procs": ""})
    assert cpu_quota(root, proc(tmp_path, "1:cpu:/\n0::/\n")) == 2.5


# ------------------------------------------------------------------ nothing to read
def test_missing_files_give_none(tmp_path):
    assert cpu_quota(str(tmp_path / "nowhere"), str(tmp_path / "no_proc_file")) is None
    assert cpu_quota(str(tmp_path / "nowhere"), proc(tmp_path, "0::/a\n")) is None
    assert cpu_quota(str(tmp_path / "nowhere"), proc(tmp_path, "4:cpu,cpuacct:/a\n")) is None
    root = tree(tmp_path / "cg", {"cpu/cpu.cfs_quota_us": "50000\n"})           # the period is missing
    assert cpu_quota(root, proc(tmp_path, "1:cpu:/\n")) is None
    root = tree(tmp_path / "cg2", {"a/cpu.max": "150000 100000\n"})              # a folder for a file
    (tmp_path / "cg2/cpu.max").mkdir()
    assert cpu_quota(root, proc(tmp_path, "0::/a\n")) == 1.5


@pytest.mark.parametrize("text", ["", "garbage", "150000", "150000 0", "0 100000", "-5 100000", "inf 100000",
                                  "nan 100000", "abc 100000", b"\xff\xfe 100000", "150000 x"])
def test_garbage_cpu_max_is_ignored(tmp_path, text):
    root = tree(tmp_path / "cg", {"cpu.max": "300000 100000\n", "a/cpu.max": text})
    assert cpu_quota(root, proc(tmp_path, "0::/a\n")) == 3.0                   # the parent's still counts
    assert cpu_quota(str(tmp_path / "cg/a"), proc(tmp_path, "0::/\n")) is None


@pytest.mark.parametrize("quota, period", [("-1", "100000"), ("x", "100000"), ("50000", "0"), ("50000", "y"),
                                           (b"\x00\xff", "100000")])
def test_garbage_v1_files_are_ignored(tmp_path, quota, period):
    root = tree(tmp_path / "cg", {"cpu/cpu.cfs_quota_us": quota, "cpu/cpu.cfs_period_us": period})
    assert cpu_quota(root, proc(tmp_path, "1:cpu:/\n")) is None


@pytest.mark.parametrize("text", ["garbage\n", "::::\n", "\n\n", "1:cpu\n", b"\xff\xfe\x00\n"])
def test_garbage_proc_cgroup(tmp_path, text):
    root = tree(tmp_path / "cg", {"cpu.max": "100000 100000\n"})
    path = tmp_path / "proc_self_cgroup"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert cpu_quota(root, str(path)) is None


# ------------------------------------------------------------------ num_threads
@pytest.fixture
def cpus(monkeypatch):
    """A host of 8 CPUs with the quota to be set: returns set_quota(q)."""
    monkeypatch.delenv("RNNLAB_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)

    def set_quota(q):
        monkeypatch.setattr(threads, "host_quota", lambda: q)
    return set_quota


@pytest.mark.parametrize("quota, n", [(None, 8), (2.0, 2), (1.5, 2), (1.0, 1), (0.5, 1), (0.01, 1), (2.2, 3),
                                      (8.0, 8), (64.0, 8)])
def test_num_threads_takes_the_quota(cpus, quota, n):
    cpus(quota)
    assert threads.num_threads() == n
    assert threads.threads_for(100) == n and threads.threads_for(1) == 1


def test_the_setting_wins_over_the_quota(cpus, monkeypatch):
    cpus(1.0)
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "4")
    assert threads.num_threads() == 4


def test_the_quota_is_read_once(monkeypatch):
    calls = []
    monkeypatch.setattr(threads, "cpu_quota", lambda: calls.append(1) or 3.0)
    threads.host_quota.cache_clear()
    try:
        assert [threads.host_quota() for _ in range(3)] == [3.0] * 3 and len(calls) == 1
    finally:
        threads.host_quota.cache_clear()


def test_describe_names_the_quota(monkeypatch):
    pytest.importorskip("llvmlite")
    pytest.importorskip("threadpoolctl")
    monkeypatch.setattr(threads, "host_quota", lambda: 1.5)
    assert ", CPU quota 1.5)" in host.describe()
    monkeypatch.setattr(threads, "host_quota", lambda: None)
    assert "CPU quota" not in host.describe()


# ------------------------------------------------------------------ the hot workers (handoff)
def _blocks_ran(bounds):
    """_in_threads over ``bounds``: -> {block: the thread that ran it}."""
    import threading
    ran, lock = {}, threading.Lock()

    def work(lo, hi):
        with lock:
            assert (lo, hi) not in ran
            ran[(lo, hi)] = threading.get_ident()
    threads._in_threads(work, bounds)
    return ran


@pytest.mark.parametrize("bounds", [[0, 3, 8], [0, 1, 2, 5]])
def test_every_block_runs_once_the_first_on_the_caller(bounds):
    """Each block runs exactly once, the first on the calling thread and every other on a worker of its own;
    twenty calls in a row (the workers stay up between them) all do."""
    import threading
    pytest.importorskip("numba")
    for _ in range(20):
        ran = _blocks_ran(bounds)
        assert sorted(ran) == list(zip(bounds[:-1], bounds[1:]))
        assert ran[(bounds[0], bounds[1])] == threading.get_ident()
        assert len(set(ran.values())) == len(bounds) - 1


def test_a_workers_error_reaches_the_caller_and_the_workers_go_on():
    pytest.importorskip("numba")

    def work(lo, hi):
        if lo > 0:
            raise ValueError(f"block {lo}")
    with pytest.raises(ValueError, match="block 4"):
        threads._in_threads(work, [0, 4, 9])
    assert len(_blocks_ran([0, 4, 9])) == 2


def test_callers_on_two_python_threads_each_get_all_their_blocks():
    """Two Python threads calling at once: one holds the workers, the other runs its blocks itself; every
    block of every call runs, once."""
    import threading
    pytest.importorskip("numba")
    import numpy as np
    counts = [np.zeros(6, np.int64) for _ in range(2)]

    def caller(c):
        def work(lo, hi):
            c[lo:hi] += 1
        for _ in range(300):
            threads._in_threads(work, [0, 2, 6])
    ts = [threading.Thread(target=caller, args=(c,)) for c in counts]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for c in counts:
        assert (c == 300).all()


def test_a_forked_child_gets_workers_of_its_own():
    """After a fork the child has none of its parent's threads: its first call makes new workers (a call on
    the parent's would wait forever)."""
    import multiprocessing
    pytest.importorskip("numba")
    _blocks_ran([0, 1, 2])                                      # the parent's workers exist
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply_async(_child_blocks).get(timeout=60) == 2


def _child_blocks():
    return len(set(_blocks_ran([0, 5, 10]).values()))


def test_a_call_interrupted_between_a_post_and_its_notify_leaves_no_block_behind():
    """A KeyboardInterrupt landing in ``post`` after its count and before it wakes the sleeping worker: the
    interrupted call still waits for that worker's block (it wakes it itself), and the next call runs each of
    its blocks once (the worker, left asleep with a count ahead, ran the next call's block twice)."""
    import collections
    import time
    pytest.importorskip("numba")
    from rnnlab.engine._kernels import handoff
    w = handoff.Workers(2)
    wk = w.workers[0]
    deadline = time.monotonic() + 10
    while not wk.sleeping and time.monotonic() < deadline:     # the worker gives up spinning and sleeps
        time.sleep(0.01)
    assert wk.sleeping

    class Interrupted:
        """The worker's lock, whose next ``with`` (post's, after its count) raises KeyboardInterrupt."""
        def __init__(self, lock):
            self.lock, self.armed = lock, True

        def __enter__(self):
            if self.armed:
                self.armed = False
                raise KeyboardInterrupt
            return self.lock.__enter__()

        def __exit__(self, *exc):
            return self.lock.__exit__(*exc)
    wk.lock = Interrupted(wk.lock)
    first, second = collections.Counter(), collections.Counter()
    with pytest.raises(KeyboardInterrupt):
        w.run(lambda lo, hi: first.update([lo]), [0, 1, 2])
    assert first == {1: 1}                                      # the posted block ran, within the call
    assert w.run(lambda lo, hi: second.update([lo]), [0, 1, 2])
    assert second == {0: 1, 1: 1}


def test_calls_never_enter_the_workers_condition_in_python():
    """``threading.Condition.__enter__`` is Python: a KeyboardInterrupt as it returns leaves the lock held by
    the caller, and the worker, going to sleep, then waits for it for good (and the next call for the worker).
    post and wait take the lock itself (a C method). Here the condition's __enter__ takes the lock and raises
    on the calling thread, as that interrupt would; calls to a sleeping worker must still all run (the calls
    run on a thread of their own, so that workers stuck fail the test instead of hanging it)."""
    import threading
    import time
    pytest.importorskip("numba")
    from rnnlab.engine._kernels import handoff
    w = handoff.Workers(2)
    wk = w.workers[0]
    ran = []

    def caller():
        me = threading.get_ident()

        class Interrupted(type(wk.cond)):
            def __enter__(self):
                taken = super().__enter__()
                if threading.get_ident() == me:
                    raise KeyboardInterrupt
                return taken
        wk.cond.__class__ = Interrupted
        for _ in range(3):
            deadline = time.monotonic() + 10
            while not wk.sleeping and time.monotonic() < deadline:
                time.sleep(0.01)
            try:
                w.run(lambda lo, hi: ran.append(lo), [0, 1, 2])
            except KeyboardInterrupt:
                ran.append("interrupted")
    thread = threading.Thread(target=caller, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "a call to the sleeping worker never returned"
    assert sorted(ran) == [0, 0, 0, 1, 1, 1]


def test_more_blocks_add_workers_and_keep_the_old_ones():
    """Calls of 2, 4, 6 and 3 blocks: each block runs once, and the workers are the ones the widest call needed
    (no thread left behind asleep when a wider call came)."""
    import threading
    pytest.importorskip("numba")
    from rnnlab.engine._kernels import handoff

    def alive():
        return sum(t.name == "rnnlab-handoff" for t in threading.enumerate())
    _blocks_ran([0, 1, 2])
    before, had = alive(), len(handoff.workers(2).workers)
    for n in (2, 4, 6, 3):
        bounds = list(range(0, 2 * n + 1, 2))
        assert sorted(_blocks_ran(bounds)) == list(zip(bounds[:-1], bounds[1:]))
    now = len(handoff.workers(2).workers)
    assert now == max(had, 5) and alive() - before == now - had


def test_a_child_forked_while_the_lock_was_held_still_runs():
    """A fork while another thread holds the workers' lock: the child starts with a fresh lock and makes its own
    workers (it would otherwise wait for a lock nobody in it will release)."""
    import multiprocessing
    pytest.importorskip("numba")
    from rnnlab.engine._kernels import handoff
    _blocks_ran([0, 1, 2])
    lock = handoff._LOCK
    with lock:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(1) as pool:
            assert pool.apply_async(_child_blocks).get(timeout=60) == 2
