"""Every compiled strategy (the loop with one-row and with packed products, the batch split), selected by name,
against the NumPy reference, in every vector width: float64 within 1e-12 (every strategy, width and cell),
float32 within 1e-5 relative (every strategy and cell in the host's width; the other widths in the slow tier,
their products checked in float32 in test_packed_gemm.py); NaN propagation, cache reuse, the output never read
back."""
import numpy as np
import pytest

import rnnlab
from support import (BACKENDS, CELLS, COMPILED, SIMD, STRATEGIES, cell_id, needs_numba, serves, simd_cases,
                     use_backend)

pytestmark = needs_numba


@pytest.fixture(params=STRATEGIES)
def impl(request, monkeypatch):
    """The shared compiled loop on one thread (one-row or packed products) or split, by name, at the small test sizes."""
    return use_backend(request.param, monkeypatch)


def _dtype_cases():
    """float64 in every width; float32 in the host's, in the others in the slow tier."""
    return [pytest.param(simd, cls, kw, dtype, tol, id=f"{dtype}-{simd}-{cell_id(cls, kw)}",
                         marks=[pytest.mark.slow] if dtype == "float32" and simd != SIMD[0] else [])
            for dtype, tol in (("float64", 1e-12), ("float32", 1e-5)) for simd, cls, kw in simd_cases(CELLS)]


@pytest.mark.parametrize("simd,cls,kw,dtype,tol", _dtype_cases())
@pytest.mark.parametrize("L,bidir,ragged", [(1, False, False), (2, True, True)])
def test_compiled_equals_reference(cls, kw, dtype, tol, L, bidir, ragged, impl, simd, monkeypatch):
    monkeypatch.setenv("RNNLAB_SIMD", simd)
    rng = np.random.default_rng(0)
    ref = cls(6, 7, L, bidirectional=bidir, dtype=dtype, seed=0, backend="numpy", **kw)
    fast = cls(6, 7, L, bidirectional=bidir, dtype=dtype, seed=0, backend=impl, **kw)
    x = rng.standard_normal((9, 3, 6)).astype(dtype)          # 3 rows: "loop" takes one-row products (packed from 4)
    lengths = np.array([9, 1, 6]) if ragged else None
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


@pytest.mark.parametrize("cls", [rnnlab.RNN, rnnlab.LSTM, rnnlab.GRU])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("impl_name", COMPILED)
def test_nan_propagates_through_the_kernels(cls, dtype, impl_name, monkeypatch):
    """A NaN must reach the output (and so the training loop's guard), never be clamped away."""
    layer = cls(4, 5, dtype=dtype, seed=0, backend=use_backend(impl_name, monkeypatch))
    x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(dtype)
    x[1, 0, 2] = np.nan
    out, _ = layer(x, check_finite=False)
    assert np.isnan(out[1:, 0]).all() and np.isfinite(out[:, 1]).all()
    dx, _ = layer.backward(np.ones_like(out))
    assert np.isnan(dx[:2, 0]).any()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls,kw", [(rnnlab.RNN, {}), (rnnlab.RNN, {"nonlinearity": "relu"}), (rnnlab.LSTM, {}),
                                    (rnnlab.GRU, {})])
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
def test_backward_does_not_read_the_returned_output(cls, kw, num_layers, bidirectional, backend, monkeypatch):
    """The output array belongs to the caller: changing it in place between forward and backward leaves the
    gradients as they were (the RNN's kernels once read the activation's derivative from it)."""
    backend = use_backend(backend, monkeypatch)
    if not serves(backend, 4):
        pytest.skip("split needs two batch rows")
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


@pytest.mark.parametrize("impl_name", COMPILED)
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
