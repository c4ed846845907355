"""backend="loop": the whole-loop kernels across the blocks of their in-loop input projection."""
import numpy as np
import pytest

import rnnlab
from support import CELL_IDS, CELLS, needs_numba, use_backend

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



WGRAD_CASES = [(rnnlab.RNN, {}), (rnnlab.LSTM, {"recurrent_dropout": 0.3, "zoneout": 0.2, "zoneout_cell": 0.3}),
               (rnnlab.GRU, {"zoneout": 0.25}), (rnnlab.GRU, {"reset": "before", "recurrent_dropout": 0.3})]


@pytest.mark.parametrize("cls,kw", WGRAD_CASES, ids=["rnn", "lstm-rd-zoneout", "gru-zoneout", "gru_before-rd"])
@pytest.mark.parametrize("backend", ["loop", "split"])
def test_weight_gradients_inside_and_after_the_loop(cls, kw, backend, monkeypatch):
    """The packed backward accumulates dW_ih, dW_hh and dx inside the loop (small accumulators) or leaves them to
    BLAS after it: both, with padding, both directions, two layers, recurrent dropout, zoneout and the
    reset-before GRU's second product, equal the reference in training (one thread, and two blocks of rows)."""
    from rnnlab.engine._kernels import loop
    backend = use_backend(backend, monkeypatch)
    rng = np.random.default_rng(4)
    x, lengths = rng.standard_normal((6, 9, 5)), np.array([6, 2, 5, 6, 1, 3, 6, 4, 6])
    runs, real = {}, loop.wgrad_in_loop
    for mode, limit in (("numpy", None), ("in", 1 << 30), ("after", 0)):
        monkeypatch.setattr(loop, "WGRAD_MAX_BYTES", limit or 0)
        monkeypatch.setattr(loop, "WGRAD_ROW_BYTES", limit or 0)
        chosen = []
        monkeypatch.setattr(loop, "wgrad_in_loop", lambda *a: chosen.append(real(*a)) or chosen[-1])
        layer = cls(5, 6, num_layers=2, bidirectional=True, dtype="float64", seed=2,
                    backend="numpy" if mode == "numpy" else backend, **kw)
        for v in layer.parameters():
            v[...] = np.random.default_rng(9).normal(0, 0.5, v.shape)     # the same weights, non-zero biases
        layer.train()                                   # the masks: the same seed draws the same ones
        out, _ = layer(x, lengths=lengths)
        dx, dh = layer.backward(np.random.default_rng(5).standard_normal(out.shape))
        if mode != "numpy":
            assert chosen and all(c == (mode == "in") for c in chosen), chosen
        runs[mode] = (out, dx, dh, dict(layer.grads))
    ref = runs["numpy"]
    for mode in ("in", "after"):
        got = runs[mode]
        for a, b in zip(ref[:2], got[:2]):
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)
        for a, b in zip(ref[2], got[2]):
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)
        for k in ref[3]:
            np.testing.assert_allclose(got[3][k], ref[3][k], rtol=0, atol=1e-11, err_msg=f"{mode}: {k}")


@pytest.mark.parametrize("B", [8, 32, 50])
def test_weight_gradients_do_not_depend_on_the_threads(B, monkeypatch):
    """The backward accumulates its weight gradients per group of rows fixed by the batch and the machine
    (``wgrad_groups``), the threads taking whole groups: one, two and three threads give the same bits (float32,
    recurrent dropout), so a run gives the same weights whatever RNNLAB_NUM_THREADS is (the seed runners' trials
    use one thread)."""
    from rnnlab.engine._kernels import loop
    rng = np.random.default_rng(B)
    x = rng.standard_normal((7, B, 6)).astype(np.float32)
    d = rng.standard_normal((7, B, 16)).astype(np.float32)
    results = []
    for threads, backend in ((1, "loop"), (2, "split"), (3, "split")):
        monkeypatch.setenv("RNNLAB_NUM_THREADS", str(threads))
        layer = rnnlab.LSTM(6, 16, dtype="float32", seed=1, backend=backend, recurrent_dropout=0.2)
        layer.train()
        out, _ = layer(x)
        dx, _ = layer.backward(d)
        assert layer.last_backend == backend
        results.append([out, dx] + [layer.grads[k].copy() for k in sorted(layer.grads)])
    from rnnlab.engine._kernels.threads import machine_threads
    assert loop.wgrad_groups(B) == max(1, min(machine_threads(), B // 8))
    assert loop.wgrad_in_loop(64, 6, 16, 4, B // loop.wgrad_groups(B))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
