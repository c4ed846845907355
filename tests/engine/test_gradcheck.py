"""Float64 central-difference checks of the hand-derived BPTT: every parameter, the input and initial states,
on every backend (the compiled strategies in the other vector widths equal the reference to 1e-12:
kernels/test_backends.py)."""
import numpy as np
import pytest

import rnnlab
from rnnlab.engine.gradcheck import check_layer, numerical_gradient, relative_error

from support import BACKENDS, CELL_IDS, CELLS, nonzero_biases, serves, use_backend

TOL = 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls,kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("num_layers,bidirectional,batch_first,ragged", [
    (1, False, False, False),
    (2, True, True, True),
    (2, False, False, True),
    (1, True, False, False),
])
def test_every_gradient(cls, kw, num_layers, bidirectional, batch_first, ragged, backend, monkeypatch):
    backend = use_backend(backend, monkeypatch)
    if not serves(backend, 3):
        pytest.skip("split needs two batch rows")
    rng = np.random.default_rng(0)
    T, B, I, H = 5, 3, 4, 5
    layer = cls(I, H, num_layers, batch_first=batch_first, bidirectional=bidirectional,
                dtype="float64", seed=1, backend=backend, **kw)
    nonzero_biases(layer, rng)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I))
    LD = num_layers * layer.num_directions
    hx = tuple(rng.standard_normal((LD, B, H)) * 0.5 for _ in layer.cell.STATE)
    lengths = np.array([5, 2, 4]) if ragged else None
    errors = check_layer(layer, x, hx if len(hx) == 2 else hx[0], lengths, seed=2)
    expected = {"x", "h0", *layer.grads} | ({"c0"} if cls is rnnlab.LSTM else set())
    assert set(errors) == expected
    bad = {k: e for k, e in errors.items() if not e < TOL}
    assert not bad, bad


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_bias_layers(backend, monkeypatch):
    backend = use_backend(backend, monkeypatch)
    rng = np.random.default_rng(3)
    for cls in (rnnlab.RNN, rnnlab.LSTM, rnnlab.GRU):
        layer = cls(4, 5, 2, bias=False, dtype="float64", seed=0, backend=backend)
        assert not any(k.startswith("bias") for k in layer.grads)
        errors = check_layer(layer, rng.standard_normal((4, 3, 4)))
        assert max(errors.values()) < TOL, errors


def test_gradcheck_detects_a_wrong_gradient(monkeypatch):
    """The check can fail: break dW_hh and the error jumps."""
    from rnnlab.engine.cells import rnn
    layer = rnnlab.RNN(4, 5, dtype="float64", seed=0, backend="numpy")
    x = np.random.default_rng(0).standard_normal((5, 3, 4))
    orig = rnn.grad_W_hh
    monkeypatch.setattr(rnn, "grad_W_hh", lambda dHW, caches, **kw: 1.01 * orig(dHW, caches))
    errors = check_layer(layer, x)
    assert errors["weight_hh_l0"] > 1e-3
    assert errors["weight_ih_l0"] < TOL


def test_numerical_gradient_of_a_quadratic():
    a = np.array([1.0, -2.0, 3.0])
    g = numerical_gradient(lambda: float(np.sum(a ** 2)), a)
    np.testing.assert_allclose(g, 2 * a, rtol=1e-8)
    assert relative_error(g, 2 * a) < 1e-9


def test_gradcheck_requires_float64():
    with pytest.raises(TypeError, match="float64"):
        check_layer(rnnlab.LSTM(2, 3), np.zeros((2, 1, 2)))
