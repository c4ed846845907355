"""backend="loop": the whole-loop kernels across the blocks of their in-loop input projection."""
import numpy as np
import pytest

from support import CELL_IDS, CELLS, needs_numba

pytestmark = needs_numba


@pytest.mark.parametrize("cls,kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("proj_rows", [1, 8])
def test_loop_kernels_across_input_projection_blocks(cls, kw, proj_rows, monkeypatch):
    """The whole-loop kernels compute x_t W_ih^T block by block of steps: with blocks of 1 and 2 steps (a
    partial last block, both directions, ragged rows) every output and gradient equals the reference."""
    from rnnlab.engine._kernels import loop
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

