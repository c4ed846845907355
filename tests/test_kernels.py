"""The compiled backend against the NumPy reference: float64 within 1e-12, float32 within 1e-5 relative;
the float32 rational tanh's maximum error."""
import numpy as np
import pytest

import rnnlab
from rnnlab.kernels import available

pytestmark = pytest.mark.skipif(not available(), reason="numba is not installed (extra 'fast')")

CELLS = [(rnnlab.RNN, {}), (rnnlab.RNN, {"nonlinearity": "relu"}), (rnnlab.RNN, {"nonlinearity": "identity"}),
         (rnnlab.LSTM, {}), (rnnlab.GRU, {}), (rnnlab.GRU, {"reset": "before"})]


@pytest.fixture(params=["loop", "hybrid"])
def impl(request, monkeypatch):
    """Force the whole-loop or the hybrid kernels at the small test sizes."""
    from rnnlab import layers
    if request.param == "hybrid":
        monkeypatch.setattr(layers, "NUMBA_MAX_WORK", 0)
    return request.param


@pytest.mark.parametrize("cls,kw", CELLS)
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("L,bidir,ragged", [(1, False, False), (2, True, True)])
def test_numba_equals_reference(cls, kw, dtype, tol, L, bidir, ragged, impl):
    rng = np.random.default_rng(0)
    ref = cls(6, 7, L, bidirectional=bidir, dtype=dtype, seed=0, backend="numpy", **kw)
    fast = cls(6, 7, L, bidirectional=bidir, dtype=dtype, seed=0, backend="numba", **kw)
    x = rng.standard_normal((9, 4, 6)).astype(dtype)
    lengths = np.array([9, 3, 6, 1]) if ragged else None
    o1, h1 = ref(x, lengths=lengths)
    o2, h2 = fast(x, lengths=lengths)
    d = rng.standard_normal(o1.shape).astype(dtype)
    dx1, dh1 = ref.backward(d)
    dx2, dh2 = fast.backward(d)
    pairs = [(o1, o2), (dx1, dx2)] + list(zip(np.atleast_1d(h1) if not isinstance(h1, tuple) else h1,
                                              np.atleast_1d(h2) if not isinstance(h2, tuple) else h2))
    pairs += [(ref.grads[k], fast.grads[k]) for k in ref.grads]
    for a, b in pairs:
        scale = max(np.abs(a).max(), 1.0) if dtype == "float32" else 1.0
        np.testing.assert_allclose(b, a, rtol=0, atol=tol * scale)


def test_rational_tanh_max_error():
    from rnnlab.kernels.numba_scan import _tanh32
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


def test_auto_backend_and_errors():
    from rnnlab.layers import choose_backend
    assert choose_backend("auto", 1, 128, 32, None) == "loop"
    assert choose_backend("auto", 128, 2048, 512, None, "lstm") == "hybrid"
    assert choose_backend("auto", 128, 512, 512, None, "rnn") == "hybrid"
    assert choose_backend("auto", 128, 1536, 512, None, "gru", {"reset": "before"}) == "numpy"
    assert choose_backend("numba", 1, 4, 1, 10) == "numpy"            # bptt_segment runs on the reference
    with pytest.raises(ValueError, match="backend: expected one of"):
        rnnlab.LSTM(2, 3, backend="cuda")


@pytest.mark.parametrize("cls", [rnnlab.RNN, rnnlab.LSTM, rnnlab.GRU])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("impl_name", ["loop", "hybrid"])
def test_nan_propagates_through_the_kernels(cls, dtype, impl_name, monkeypatch):
    """A NaN must reach the output (and so the training loop's guard), never be clamped away."""
    from rnnlab import layers
    if impl_name == "hybrid":
        monkeypatch.setattr(layers, "NUMBA_MAX_WORK", 0)
    layer = cls(4, 5, dtype=dtype, seed=0, backend="numba")
    x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(dtype)
    x[1, 0, 2] = np.nan
    out, _ = layer(x, check_finite=False)
    assert np.isnan(out[1:, 0]).all() and np.isfinite(out[:, 1]).all()
    dx, _ = layer.backward(np.ones_like(out))
    assert np.isnan(dx[:2, 0]).any()
