"""rnnlab.engine.cells: each cell's step backward against float64 central differences of its step forward (every
input: xw, the states, W_hh, b_hh), and grad_W_hh against the sum of the steps' outer products."""
import numpy as np
import pytest

from rnnlab.engine.cells import CELLS
from rnnlab.engine.gradcheck import numerical_gradient

B, H = 3, 5
VARIANTS = [("rnn", {"nonlinearity": "tanh"}), ("rnn", {"nonlinearity": "relu"}), ("rnn", {"nonlinearity": "identity"}),
            ("lstm", {}), ("gru", {"reset": "after"}), ("gru", {"reset": "before"})]


def _loss(cell, xw, state, W_hh, b_hh, opts, d):
    new, _ = cell.step_forward(xw, state, W_hh, b_hh, **opts)
    return sum(float((s * g).sum()) for s, g in zip(new, d))


@pytest.mark.parametrize("name,opts", VARIANTS)
def test_step_backward_equals_finite_differences(name, opts):
    cell = CELLS[name]
    rng = np.random.default_rng(3)
    G = cell.G
    xw = rng.standard_normal((B, G * H))
    state = tuple(rng.standard_normal((B, H)) for _ in cell.STATE)
    W_hh, b_hh = rng.standard_normal((G * H, H)) * 0.5, rng.standard_normal(G * H)
    d = tuple(rng.standard_normal((B, H)) for _ in cell.STATE)           # dL/d(new state)
    _, cache = cell.step_forward(xw, state, W_hh, b_hh, **opts)
    dxw, dhw, dstate = cell.step_backward(d, cache, W_hh, **opts)
    # dL/dW_hh of one step from dhw: the recurrent operand is h_prev (the reset-before GRU's n block: r h_prev)
    dW = cell.grad_W_hh(dhw[None], [cache], **opts)
    loss = lambda: _loss(cell, xw, state, W_hh, b_hh, opts, d)  # noqa: E731
    np.testing.assert_allclose(dxw, numerical_gradient(loss, xw), rtol=1e-7, atol=1e-8)
    for s, ds in zip(state, dstate):
        np.testing.assert_allclose(ds, numerical_gradient(loss, s), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(dW, numerical_gradient(loss, W_hh), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(dhw.sum(axis=0), numerical_gradient(loss, b_hh), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("name,opts", VARIANTS)
def test_grad_W_hh_sums_the_steps(name, opts):
    cell = CELLS[name]
    rng = np.random.default_rng(4)
    T, G = 4, cell.G
    state = tuple(rng.standard_normal((B, H)) for _ in cell.STATE)
    W_hh = rng.standard_normal((G * H, H))
    caches, dhws = [], []
    for _ in range(T):
        state, c = cell.step_forward(rng.standard_normal((B, G * H)), state, W_hh, None, **opts)
        caches.append(c)
        dhws.append(rng.standard_normal((B, G * H)))
    total = sum(cell.grad_W_hh(dhw[None], [c], **opts) for dhw, c in zip(dhws, caches))
    np.testing.assert_allclose(cell.grad_W_hh(np.stack(dhws), caches, **opts), total, rtol=1e-12, atol=1e-12)


def test_every_cell_declares_its_interface():
    for name, cell in CELLS.items():
        assert cell.G == len(cell.GATES) or name == "rnn"
        assert cell.STATE[0] == "h" and "h_prev" in cell.StepCache._fields
