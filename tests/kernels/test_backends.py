"""Every compiled backend (loop, hybrid, split), selected by name, against the NumPy reference: float64 within
1e-12, float32 within 1e-5 relative; NaN propagation, cache reuse, the output never read back; the float32
rational tanh's maximum error."""
import numpy as np
import pytest

import rnnlab
from rnnlab.kernels import available
from conftest import BACKENDS, NUMBA_BACKENDS, serves, use_backend

pytestmark = pytest.mark.skipif(not available(), reason="numba is not installed (extra 'fast')")

CELLS = [(rnnlab.RNN, {}), (rnnlab.RNN, {"nonlinearity": "relu"}), (rnnlab.RNN, {"nonlinearity": "identity"}),
         (rnnlab.LSTM, {}), (rnnlab.GRU, {}), (rnnlab.GRU, {"reset": "before"})]


@pytest.fixture(params=NUMBA_BACKENDS)
def impl(request, monkeypatch):
    """The whole-loop, hybrid or batch-split kernels, by name, at the small test sizes."""
    return use_backend(request.param, monkeypatch)


@pytest.mark.parametrize("cls,kw", CELLS)
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("L,bidir,ragged", [(1, False, False), (2, True, True)])
def test_compiled_equals_reference(cls, kw, dtype, tol, L, bidir, ragged, impl):
    if not serves(impl, cls, kw):
        pytest.skip("split does not serve the reset-before GRU (tested in test_engine)")
    rng = np.random.default_rng(0)
    ref = cls(6, 7, L, bidirectional=bidir, dtype=dtype, seed=0, backend="numpy", **kw)
    fast = cls(6, 7, L, bidirectional=bidir, dtype=dtype, seed=0, backend=impl, **kw)
    x = rng.standard_normal((9, 4, 6)).astype(dtype)
    lengths = np.array([9, 3, 6, 1]) if ragged else None
    o1, h1 = ref(x, lengths=lengths)
    o2, h2 = fast(x, lengths=lengths)
    d = rng.standard_normal(o1.shape).astype(dtype)
    dx1, dh1 = ref.backward(d)
    dx2, dh2 = fast.backward(d)
    assert fast.last_backend == impl
    pairs = [(o1, o2), (dx1, dx2)] + list(zip(np.atleast_1d(h1) if not isinstance(h1, tuple) else h1,
                                              np.atleast_1d(h2) if not isinstance(h2, tuple) else h2))
    pairs += [(ref.grads[k], fast.grads[k]) for k in ref.grads]
    for a, b in pairs:
        scale = max(np.abs(a).max(), 1.0) if dtype == "float32" else 1.0
        np.testing.assert_allclose(b, a, rtol=0, atol=tol * scale)


def test_rational_tanh_max_error():
    from rnnlab.kernels.gates import _tanh32
    from numba import njit

    @njit
    def apply(x):
        out = np.empty_like(x)
        for i in range(x.size):
            out[i] = _tanh32(x[i])
        return out
    x = np.linspace(-20, 20, 2_000_001).astype(np.float32)
    err = np.abs(apply(x).astype(np.float64) - np.tanh(x.astype(np.float64)))
    assert err.max() < 5e-7                           # documented in docs/performance.md
    assert np.all(np.abs(apply(x)) <= 1.0)


@pytest.mark.parametrize("cls", [rnnlab.RNN, rnnlab.LSTM, rnnlab.GRU])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("impl_name", NUMBA_BACKENDS)
def test_nan_propagates_through_the_kernels(cls, dtype, impl_name, monkeypatch):
    """A NaN must reach the output (and so the training loop's guard), never be clamped away."""
    layer = cls(4, 5, dtype=dtype, seed=0, backend=use_backend(impl_name, monkeypatch))
    x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(dtype)
    x[1, 0, 2] = np.nan
    out, _ = layer(x, check_finite=False)
    assert np.isnan(out[1:, 0]).all() and np.isfinite(out[:, 1]).all()
    dx, _ = layer.backward(np.ones_like(out))
    assert np.isnan(dx[:2, 0]).any()


split_only = pytest.mark.skipif("split" not in NUMBA_BACKENDS, reason="numba is not installed")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls,kw", [(rnnlab.RNN, {}), (rnnlab.RNN, {"nonlinearity": "relu"}), (rnnlab.LSTM, {}),
                                    (rnnlab.GRU, {})])
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
def test_backward_does_not_read_the_returned_output(cls, kw, num_layers, bidirectional, backend, monkeypatch):
    """The output array belongs to the caller: changing it in place between forward and backward leaves the
    gradients as they were (the RNN's kernels once read the activation's derivative from it)."""
    backend = use_backend(backend, monkeypatch)
    if not serves(backend, cls, kw):
        pytest.skip("split does not serve the reset-before GRU")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 4, 3))
    lengths = np.array([6, 2, 5, 4])
    layer = cls(3, 5, num_layers, bidirectional=bidirectional, dtype="float64", seed=2, backend=backend, **kw)
    grads = []
    for scale in (1.0, 0.0):
        layer.zero_grad()
        out, _ = layer(x, lengths=lengths)
        d = np.cos(out)
        out *= scale                                    # the caller reuses its output array
        dx, _ = layer.backward(d)
        grads.append([dx] + [layer.grads[k].copy() for k in sorted(layer.grads)])
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)


@split_only
@pytest.mark.parametrize("cls", [rnnlab.LSTM, rnnlab.RNN, rnnlab.GRU])
def test_any_row_split_gives_the_same_numbers(cls, monkeypatch):
    """The two threads' row split (the layer's RowSplit share) changes speed only: 30 %, 50 % and 70 % give
    bit-identical outputs and gradients, and the share stays within 30-70 % after each call."""
    from rnnlab.kernels.split import RowSplit
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 20, 3)).astype(np.float32)
    layer = cls(3, 8, dtype="float32", seed=1, backend=use_backend("split", monkeypatch))
    results = []
    for share in (0.3, 0.5, 0.7):
        layer._rows = RowSplit(share)
        layer.zero_grad()
        out, _ = layer(x)
        dx, _ = layer.backward(np.cos(out))
        assert layer.last_backend == "split"
        assert 0.3 <= layer._rows.share <= 0.7
        results.append([out, dx] + [layer.grads[k].copy() for k in sorted(layer.grads)])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@split_only
@pytest.mark.parametrize("B", [2, 5, 16])
def test_split_runs_every_row_block_and_matches_one_thread(B, monkeypatch):
    """The batch split over two threads gives the one-thread hybrid's numbers on every row, and it is
    really the split path that ran (its cache says so)."""
    from rnnlab.kernels import split
    rng = np.random.default_rng(B)
    x = rng.standard_normal((11, B, 3))
    lengths = rng.integers(1, 12, B)
    results = {}
    for name in ("hybrid", "split"):
        with monkeypatch.context() as m:
            layer = rnnlab.LSTM(3, 6, 2, bidirectional=True, dtype="float64", seed=4, backend=use_backend(name, m))
            out, (h, c) = layer(x, lengths=lengths)
            dx, (dh, dc) = layer.backward(np.cos(out))
            assert layer.last_backend == name
            if name == "split":
                assert split.threads_for(B) == 2
            results[name] = [out, h, c, dx, dh, dc] + [layer.grads[k].copy() for k in sorted(layer.grads)]
    for a, b in zip(*results.values()):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)


@split_only
def test_pmatmul():
    from rnnlab.kernels.split import pmatmul
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
    from rnnlab.kernels import split as split_scan
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "3")
    assert split_scan.num_threads() == 3
    assert split_scan.threads_for(2) == 2 and split_scan.threads_for(1) == 1 and split_scan.threads_for(100) == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("RNNLAB_NUM_THREADS", bad)
        with pytest.raises(ValueError, match="RNNLAB_NUM_THREADS: expected a positive integer, got"):
            split_scan.num_threads()
    monkeypatch.delenv("RNNLAB_NUM_THREADS")
    assert split_scan.num_threads() >= 1


@pytest.mark.parametrize("impl_name", NUMBA_BACKENDS)
@pytest.mark.parametrize("cls", [rnnlab.RNN, rnnlab.LSTM, rnnlab.GRU])
def test_next_forward_reuses_the_cache_arrays_but_never_an_output(cls, impl_name, monkeypatch):
    """A forward hands the last forward's cache arrays to its own caches (one set alive, no page faults); the
    outputs the user holds stay untouched, and gradients equal those of a fresh layer."""
    import dataclasses
    backend = use_backend(impl_name, monkeypatch)
    rng = np.random.default_rng(1)
    x1, x2 = rng.standard_normal((2, 6, 4, 3))
    layer = cls(3, 5, 2, bidirectional=True, dtype="float64", seed=0, backend=backend)
    out1, _ = layer(x1)
    kept = out1.copy()
    arrays = lambda: {id(v) for lc in layer._cache.layers for dc in lc.dirs  # noqa: E731
                      for v in (getattr(dc.arrays, f.name) for f in dataclasses.fields(dc.arrays))
                      if isinstance(v, np.ndarray) and v.ndim == 3}
    first = arrays()
    out2, _ = layer(x2)
    np.testing.assert_array_equal(out1, kept)
    assert arrays() == first                                  # the same arrays, refilled
    fresh = cls(3, 5, 2, bidirectional=True, dtype="float64", seed=0, backend=backend)
    out3, _ = fresh(x2)
    np.testing.assert_array_equal(out2, out3)
    d = np.cos(out2)
    np.testing.assert_allclose(layer.backward(d)[0], fresh.backward(d)[0], rtol=0, atol=1e-13)
    np.testing.assert_allclose(layer.backward(d)[0], fresh.backward(d)[0], rtol=0, atol=1e-13)   # twice: kept


def _split_forward_in_child(queue):
    layer = rnnlab.LSTM(3, 16, seed=0, backend="split")
    out, _ = layer(np.ones((4, 32, 3), np.float32))
    queue.put(float(out.sum()))


@split_only
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


@split_only
@pytest.mark.parametrize("target", ["every", "last"])
def test_model_on_the_split_path_equals_the_reference(target, monkeypatch):
    """A whole model (its head's products split over the threads inside the layer's BLAS scope) gives the
    NumPy reference's logits and gradients."""
    from rnnlab.model import ModelConfig, SequenceModel
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


def test_blas_single_thread_context_restores_and_nests():
    from threadpoolctl import threadpool_info
    from rnnlab.engine import blas_single_thread

    def blas_threads():                                     # NumPy's BLAS: the one rnnlab's products use
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas" and "numpy" in i["filepath"]]
    before = blas_threads()
    assert before
    with blas_single_thread():
        assert all(n == 1 for n in blas_threads())
        with blas_single_thread():
            assert all(n == 1 for n in blas_threads())
        assert all(n == 1 for n in blas_threads())          # the inner exit keeps the outer setting
    assert blas_threads() == before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_finiteness_check(dtype):
    """The compiled NaN/Inf check behind every input check of large arrays: any position, any of NaN, +Inf,
    -Inf; huge finite values pass (a - a, not a sum of the values, so no overflow)."""
    from rnnlab.checks import all_finite as checked, as_float_array
    from rnnlab.errors import NonFiniteError
    from rnnlab.kernels.checks import all_finite
    x = np.random.default_rng(0).standard_normal(5000).astype(dtype)
    assert all_finite(x) and checked(x.reshape(50, 10, 10))
    assert all_finite(np.full(5000, np.finfo(dtype).max, dtype))
    for bad in (np.nan, np.inf, -np.inf):
        for pos in (0, 17, 2500, 4999):
            y = x.copy()
            y[pos] = bad
            assert not all_finite(y)
            with pytest.raises(NonFiniteError, match="found 1 NaN/Inf"):
                as_float_array("x", y.reshape(50, 100), dtype)


@pytest.mark.parametrize("cls,kw", CELLS)
@pytest.mark.parametrize("proj_rows", [1, 8])
def test_loop_kernels_across_input_projection_blocks(cls, kw, proj_rows, monkeypatch):
    """The whole-loop kernels compute x_t W_ih^T block by block of steps: with blocks of 1 and 2 steps (a
    partial last block, both directions, ragged rows) every output and gradient equals the reference."""
    from rnnlab.kernels import loop
    monkeypatch.setattr(loop, "PROJ_ROWS", proj_rows)
    rng = np.random.default_rng(proj_rows)
    ref = cls(5, 6, 2, bidirectional=True, dtype="float64", seed=0, backend="numpy", **kw)
    fast = cls(5, 6, 2, bidirectional=True, dtype="float64", seed=0, backend="loop", **kw)
    x = rng.standard_normal((9, 3, 5))
    lengths = np.array([9, 4, 7])
    o1, _ = ref(x, lengths=lengths)
    o2, _ = fast(x, lengths=lengths)
    d = rng.standard_normal(o1.shape)
    dx1, _ = ref.backward(d)
    dx2, _ = fast.backward(d)
    for a, b in [(o1, o2), (dx1, dx2)] + [(ref.grads[k], fast.grads[k]) for k in ref.grads]:
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)
