"""Loss values and gradients: finite differences and torch.nn.functional on the same numbers."""
import numpy as np
import pytest

from rnnlab.model import losses
from rnnlab.engine.gradcheck import numerical_gradient, relative_error

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _data(rng, N=7, K=5):
    o = rng.standard_normal((N, K)) * 2
    mask = np.array([1, 1, 0, 1, 0, 1, 1], float)
    return o, mask


@pytest.mark.parametrize("name", ["cross_entropy", "bce", "mse"])
@pytest.mark.parametrize("masked", [False, True])
def test_loss_gradient_by_finite_differences(name, masked):
    rng = np.random.default_rng(0)
    o, mask = _data(rng)
    y = {"cross_entropy": rng.integers(0, 5, 7), "bce": rng.integers(0, 2, (7, 5)).astype(float),
         "mse": rng.standard_normal((7, 5))}[name]
    fn = losses.LOSSES[name]
    m = mask if masked else None
    _, do = fn(o, y, m)
    num = numerical_gradient(lambda: fn(o, y, m)[0], o)
    assert relative_error(do, num) < 1e-8
    if masked:
        assert not do[mask == 0].any()


def test_losses_equal_torch():
    rng = np.random.default_rng(1)
    o, mask = _data(rng)
    keep = mask.astype(bool)
    y = rng.integers(0, 5, 7)
    ot = torch.tensor(o[keep])
    assert losses.softmax_cross_entropy(o, y, mask)[0] == pytest.approx(F.cross_entropy(ot, torch.tensor(y[keep])).item(), rel=1e-12)
    yb = rng.integers(0, 2, (7, 5)).astype(float)
    assert losses.sigmoid_binary_cross_entropy(o, yb, mask)[0] == pytest.approx(
        F.binary_cross_entropy_with_logits(ot, torch.tensor(yb[keep])).item(), rel=1e-12)
    ym = rng.standard_normal((7, 5))
    assert losses.mse(o, ym, mask)[0] == pytest.approx(F.mse_loss(ot, torch.tensor(ym[keep])).item(), rel=1e-12)


def test_extreme_logits_stay_finite():
    o = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]], dtype=np.float32)
    loss, do = losses.softmax_cross_entropy(o, np.array([0, 0]))
    assert np.isfinite(loss) and np.isfinite(do).all() and loss == pytest.approx(1000.0)
    loss, do = losses.sigmoid_binary_cross_entropy(o, np.ones((2, 2)))
    assert np.isfinite(loss) and np.isfinite(do).all()


def test_loss_errors():
    o = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"targets: expected class indices in \[0, 3\]"):
        losses.softmax_cross_entropy(o, np.array([0, 1, 4]))
    with pytest.raises(TypeError, match="targets: expected integer class indices"):
        losses.softmax_cross_entropy(o, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"targets: expected shape \(3, 4\)"):
        losses.mse(o, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="mask: expected at least one position"):
        losses.mse(o, np.zeros((3, 4)), np.zeros(3))
    with pytest.raises(ValueError, match=r"mask: expected shape \(3,\)"):
        losses.mse(o, np.zeros((3, 4)), np.ones(2))
