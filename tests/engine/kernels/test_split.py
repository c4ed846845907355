"""backend="split": any row split gives the same numbers, the rows match the one-thread path, the thread pool
survives a fork, a whole model on the split path, the threaded product and the thread setting."""
import numpy as np
import pytest

import rnnlab
from support import needs_numba, use_backend

pytestmark = needs_numba


@pytest.mark.parametrize("cls", [rnnlab.LSTM, rnnlab.RNN, rnnlab.GRU])
def test_any_row_split_gives_the_same_numbers(cls, monkeypatch):
    """The two threads' row split (the layer's RowSplit share) changes speed only: 30 %, 50 % and 70 % give
    bit-identical outputs and gradients, and the share stays within 30-70 % after each call."""
    from rnnlab.engine._kernels.split import RowSplit
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 20, 3)).astype(np.float32)
    layer = cls(3, 8, dtype="float32", seed=1, backend=use_backend("split", monkeypatch))
    results = []
    for share in (0.3, 0.5, 0.7):
        layer.row_split = RowSplit(share)
        layer.zero_grad()
        out, _ = layer(x)
        dx, _ = layer.backward(np.cos(out))
        assert layer.last_backend == "split"
        assert 0.3 <= layer.row_split.share <= 0.7
        results.append([out, dx] + [layer.grads[k].copy() for k in sorted(layer.grads)])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("B", [2, 5, 16])
def test_split_runs_every_row_block_and_matches_one_thread(B, monkeypatch):
    """The batch split over two threads gives the one-thread loop's numbers on every row (its packed products
    and the fused [x h 1] product), and it is really the split path that ran."""
    from rnnlab.engine._kernels import split
    rng = np.random.default_rng(B)
    x = rng.standard_normal((11, B, 3))
    lengths = rng.integers(1, 12, B)
    results = {}
    for name in ("loop-packed", "split"):
        with monkeypatch.context() as m:
            layer = rnnlab.LSTM(3, 6, 2, bidirectional=True, dtype="float64", seed=4, backend=use_backend(name, m))
            out, (h, c) = layer(x, lengths=lengths)
            dx, (dh, dc) = layer.backward(np.cos(out))
            assert layer.last_backend == use_backend(name, m)
            if name == "split":
                assert split.threads_for(B) == 2
            results[name] = [out, h, c, dx, dh, dc] + [layer.grads[k].copy() for k in sorted(layer.grads)]
    for a, b in zip(*results.values()):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)


def test_pmatmul():
    from rnnlab.engine._kernels.split import pmatmul
    rng = np.random.default_rng(0)
    for dt in (np.float32, np.float64):
        a, b, bias = (rng.standard_normal(s).astype(dt) for s in ((300, 7), (7, 9), (9,)))
        tol = 1e-5 if dt == np.float32 else 1e-12
        for min_rows in (1, 64):                           # blocks of one row and of the default size
            np.testing.assert_allclose(pmatmul(a, b, min_rows=min_rows), a @ b, rtol=tol, atol=tol)
            np.testing.assert_allclose(pmatmul(a, b, bias, min_rows=min_rows), a @ b + bias, rtol=tol, atol=tol)
            np.testing.assert_allclose(pmatmul(a[::2].T, a[1::2], min_rows=min_rows), a[::2].T @ a[1::2], rtol=tol,
                                       atol=10 * tol)


def test_num_threads_setting(monkeypatch):
    from rnnlab.engine._kernels import split as split_scan
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "3")
    assert split_scan.num_threads() == 3
    assert split_scan.threads_for(2) == 2 and split_scan.threads_for(1) == 1 and split_scan.threads_for(100) == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("RNNLAB_NUM_THREADS", bad)
        with pytest.raises(ValueError, match="RNNLAB_NUM_THREADS: expected a positive integer, got"):
            split_scan.num_threads()
    monkeypatch.delenv("RNNLAB_NUM_THREADS")
    assert split_scan.num_threads() >= 1


def _split_forward_in_child(queue):
    layer = rnnlab.LSTM(3, 16, seed=0, backend="split")
    out, _ = layer(np.ones((4, 32, 3), np.float32))
    queue.put(float(out.sum()))


@pytest.mark.filterwarnings("ignore:os.fork")       # JAX, imported by another test, warns about any fork
def test_split_works_in_a_forked_child(monkeypatch):
    """The thread pool is per process: a child forked after the parent used it must not wait for the
    parent's threads (they do not exist in the child)."""
    import multiprocessing as mp
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "2")
    layer = rnnlab.LSTM(3, 16, seed=0, backend="split")
    out, _ = layer(np.ones((4, 32, 3), np.float32))
    assert layer.last_backend == "split"
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_split_forward_in_child, args=(q,))
    p.start()
    p.join(60)
    if p.is_alive():
        p.kill()
    assert p.exitcode == 0, "the forked child hung or failed"
    assert q.get(timeout=5) == pytest.approx(float(out.sum()), rel=1e-6)


@pytest.mark.parametrize("target", ["every", "last"])
def test_model_on_the_split_path_equals_the_reference(target, monkeypatch):
    """A whole model (its head's products split over the threads inside the layer's BLAS scope) gives the
    NumPy reference's logits and gradients."""
    from rnnlab.model.sequence_model import ModelConfig, SequenceModel
    cfg = ModelConfig(cell="lstm", input_size=3, output_size=4, hidden_size=6, dtype="float64", target=target,
                      input_mode="dense")
    x = np.random.default_rng(0).standard_normal((7, 5, 3))
    got = {}
    for name in ("numpy", "split"):
        with monkeypatch.context() as m:
            model = SequenceModel(cfg, seed=3)
            model.rnn.set_backend(use_backend(name, m))
            logits, _ = model(x)
            model.backward(np.sin(logits))
            assert model.rnn.last_backend == name
            got[name] = [logits] + [g.copy() for _, g in sorted(model.grads.items())]
    for a, b in zip(got["numpy"], got["split"]):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)
