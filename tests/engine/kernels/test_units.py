"""backend="units" (inference with the hidden units split over threads): the reference's outputs and final
states for every cell, with padded rows, both directions, several layers, uneven unit shares and more threads
than cores; torch parity on copied weights; what auto picks; and its clear refusals."""
import numpy as np
import pytest

import rnnlab
from rnnlab.errors import BackendError
from support import TORCH_CELL_IDS, TORCH_CELLS, needs_numba

pytestmark = needs_numba


def _layer(cls, kw, I, H, backend, dtype="float64", **more):
    layer = cls(I, H, dtype=dtype, seed=3, backend=backend, **kw, **more)
    rng = np.random.default_rng(1)          # non-zero biases everywhere
    layer.load_state_dict({k: v + rng.uniform(-0.3, 0.3, v.shape) if k.startswith("bias") else v
                           for k, v in layer.state_dict().items()})
    return layer


def _infer(layer, x, hx=None, lengths=None):
    with rnnlab.no_grad():
        out, state = layer(x, hx, lengths)
    return [out] + (list(state) if isinstance(state, tuple) else [state])


@pytest.fixture
def calls(monkeypatch):
    """How many forwards the units path ran (its forwards keep no cache to say so)."""
    from rnnlab.engine._kernels import units
    n = {"units": 0}
    real = units.forward

    def counted(*args, **kwargs):
        n["units"] += 1
        return real(*args, **kwargs)
    monkeypatch.setattr(units, "forward", counted)
    return n


@pytest.mark.parametrize("cls,kw", TORCH_CELLS, ids=TORCH_CELL_IDS)
@pytest.mark.parametrize("threads,H", [(2, 16), (2, 17), (3, 29)])
@pytest.mark.parametrize("B", [1, 3])
def test_units_match_the_reference(cls, kw, threads, H, B, monkeypatch, calls):
    """float64: 2 layers, both directions, padded rows, a given initial state; H split unevenly (17 = 8 + 9,
    29 over 3 threads) and 3 threads on a 2-core machine (the barrier yields the core)."""
    monkeypatch.setenv("RNNLAB_NUM_THREADS", str(threads))
    rng = np.random.default_rng(B * 100 + H)
    T, I = 7, 5
    x = rng.standard_normal((T, B, I))
    lengths = rng.integers(1, T + 1, B) if B > 1 else None
    n_state = 2 if cls is rnnlab.LSTM else 1
    hx = tuple(rng.standard_normal((4, B, H)) for _ in range(n_state))
    hx = hx if n_state == 2 else hx[0]
    want = _infer(_layer(cls, kw, I, H, "numpy", num_layers=2, bidirectional=True), x, hx, lengths)
    got = _infer(_layer(cls, kw, I, H, "units", num_layers=2, bidirectional=True), x, hx, lengths)
    assert calls["units"] == 4                              # 2 layers x 2 directions
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls,kw", TORCH_CELLS, ids=TORCH_CELL_IDS)
def test_units_float32_and_no_bias(cls, kw, monkeypatch):
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "2")
    x = np.random.default_rng(0).standard_normal((9, 2, 6)).astype(np.float32)
    for bias in (True, False):
        want = _infer(_layer(cls, kw, 6, 24, "numpy", dtype="float32", bias=bias), x)
        got = _infer(_layer(cls, kw, 6, 24, "units", dtype="float32", bias=bias), x)
        for g, w in zip(got, want):
            assert g.dtype == np.float32
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls,kw", TORCH_CELLS, ids=TORCH_CELL_IDS)
def test_units_match_torch(cls, kw, monkeypatch):
    torch = pytest.importorskip("torch")
    from support import torch_twin
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "2")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 1, 4))
    layer = _layer(cls, kw, 4, 20, "units")
    got = _infer(layer, x)
    with torch.no_grad():
        out, hn = torch_twin(layer)(torch.from_numpy(x))
    want = [out.numpy()] + [h.numpy() for h in (hn if isinstance(hn, tuple) else (hn,))]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-10)


def test_auto_takes_units_for_long_one_row_inference_only(monkeypatch, calls):
    """One row, H = 256, 100 steps: the weights are split over the threads for inference; a training forward
    of the same layer, inference on 2 rows and a one-step call (sampling) take another path."""
    from rnnlab.engine import dispatch
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "2")
    layer = rnnlab.LSTM(32, 256, seed=0)
    x1 = np.zeros((100, 1, 32), np.float32)
    _infer(layer, x1)
    assert calls["units"] == 1
    layer(x1)
    assert layer.last_backend != "units" and calls["units"] == 1
    _infer(layer, np.zeros((100, 2, 32), np.float32))
    _infer(layer, x1[:1])
    assert calls["units"] == 1
    # the rule, in the host's vector multiply-adds per thread and step
    assert dispatch.choose("auto", "lstm", {}, 1, 1024, 256, None, keep=False, K=289, T=100) == "units"
    assert dispatch.choose("auto", "lstm", {}, 1, 1024, 256, None, keep=False, K=289, T=8) != "units"
    assert dispatch.choose("auto", "lstm", {}, 1, 128, 32, None, keep=False, K=41, T=100) != "units"
    assert dispatch.choose("auto", "gru", {"reset": "before"}, 1, 768, 256, None, keep=False, K=289, T=100) != "units"
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "1")
    assert dispatch.choose("auto", "lstm", {}, 1, 1024, 256, None, keep=False, K=289, T=100) != "units"


def test_units_refuses_what_it_cannot_serve(monkeypatch):
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "2")
    layer = rnnlab.LSTM(3, 16, seed=0, backend="units")
    x = np.zeros((2, 1, 3), np.float32)
    with pytest.raises(BackendError, match=r"'units' runs inference only .* use 'split', 'loop' or 'auto'"):
        layer(x)
    small = rnnlab.GRU(3, 8, seed=0, backend="units")
    with pytest.raises(BackendError, match=r"'units' needs at least 2 threads and 16 hidden units, got 1 thread"):
        _infer(small, x)
    with pytest.raises(BackendError, match=r"'units' serves cells with one product per step .* got gru-before"):
        rnnlab.GRU(3, 16, reset="before", backend="units")
    with pytest.raises(BackendError, match=r"'units' serves cells .* got lstm with recurrent_dropout; use 'loop' or 'split'"):
        rnnlab.LSTM(3, 16, recurrent_dropout=0.1, backend="units")


def test_barrier_counts_every_thread():
    """Two threads meet at each of 200 barriers; the counter ends at threads x steps."""
    import threading
    from rnnlab.engine._kernels.units import barrier
    sync = np.zeros(1, np.int64)
    barrier(np.zeros(1, np.int64), 1)                       # compile before the threads start

    def run():
        for s in range(200):
            barrier(sync, 2 * (s + 1))
    ts = [threading.Thread(target=run) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in ts) and sync[0] == 400
