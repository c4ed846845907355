"""rnnlab.engine._reference, the NumPy reference's time loop: the scan against the cell's steps run by hand, padded steps
carry the state, the reverse scan on a flipped sequence, segments recomputed in backward equal the whole."""
import numpy as np
import pytest

from rnnlab.engine import _reference as reference
from rnnlab.engine.cells import CELLS

T, B, H = 6, 3, 4


def _setup(name, seed=0):
    cell = CELLS[name]
    rng = np.random.default_rng(seed)
    xw = rng.standard_normal((T, B, cell.G * H))
    state0 = tuple(rng.standard_normal((B, H)) for _ in cell.STATE)
    W_hh, b_hh = rng.standard_normal((cell.G * H, H)) * 0.5, rng.standard_normal(cell.G * H)
    return cell, rng, xw, state0, W_hh, b_hh


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_scan_is_the_steps_in_order_and_padding_carries_the_state(name):
    cell, rng, xw, state0, W_hh, b_hh = _setup(name)
    lengths = np.array([6, 2, 4])
    mask = (np.arange(T)[:, None] < lengths[None, :])[..., None].astype(float)
    out, stateT, cache = reference.time_forward(cell, xw, state0, W_hh, b_hh, mask)
    for b in range(B):
        state = tuple(s[b:b + 1] for s in state0)
        for t in range(lengths[b]):
            state, _ = cell.step_forward(xw[t, b:b + 1], state, W_hh, b_hh)
            np.testing.assert_allclose(out[t, b], state[0][0], rtol=0, atol=1e-14)
        np.testing.assert_array_equal(out[lengths[b]:, b], 0.0)            # no output at padded steps
        for s, sT in zip(state, stateT):
            np.testing.assert_allclose(sT[b], s[0], rtol=0, atol=1e-14)    # each row's last valid state
    assert len(cache.steps) == T


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_reverse_scan_is_the_forward_scan_of_the_flipped_sequence(name):
    cell, rng, xw, state0, W_hh, b_hh = _setup(name, 1)
    out_r, state_r, _ = reference.time_forward(cell, xw, state0, W_hh, b_hh, reverse=True)
    out_f, state_f, _ = reference.time_forward(cell, xw[::-1], state0, W_hh, b_hh)
    np.testing.assert_allclose(out_r, out_f[::-1], rtol=0, atol=1e-14)
    for a, b in zip(state_r, state_f):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-14)


@pytest.mark.parametrize("name,opts", [("rnn", {}), ("lstm", {}), ("gru", {"reset": "before"})])
@pytest.mark.parametrize("segment", [1, 2, 4])
@pytest.mark.parametrize("reverse", [False, True])
def test_segments_recomputed_in_backward_equal_the_whole(name, opts, segment, reverse):
    cell, rng, xw, state0, W_hh, b_hh = _setup(name, 2)
    mask = (np.arange(T)[:, None] < np.array([6, 3, 5])[None, :])[..., None].astype(float)
    d_out = rng.standard_normal((T, B, H))
    d_state = tuple(rng.standard_normal((B, H)) for _ in cell.STATE)
    res = []
    for seg in (None, segment):
        out, stateT, cache = reference.time_forward(cell, xw, state0, W_hh, b_hh, mask, reverse, opts, seg)
        assert (cache.steps is None) == (seg is not None and seg < T)
        res.append((out, stateT) + reference.time_backward(cell, d_out, d_state, cache, W_hh, mask, reverse,
                                                           True, opts))
    whole, seg = res
    for a, b in zip(whole, seg):
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            np.testing.assert_allclose(y, x, rtol=0, atol=1e-12)
