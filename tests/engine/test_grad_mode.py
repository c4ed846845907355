"""rnnlab.no_grad(): the same outputs without backward caches, on every backend; backward then refuses."""
import threading

import numpy as np
import pytest

import rnnlab
from rnnlab.tasks import build_task
from support import BACKENDS, serves, use_backend


@pytest.mark.parametrize("backend", BACKENDS + (["numba"] if "loop" in BACKENDS else []))
@pytest.mark.parametrize("cls,opts", [(rnnlab.RNN, {}), (rnnlab.LSTM, {}), (rnnlab.GRU, {}),
                                      (rnnlab.GRU, {"reset": "before"})])
@pytest.mark.parametrize("B,H", [(3, 5), (40, 64)])
def test_outputs_equal_and_no_cache(backend, cls, opts, B, H, monkeypatch):
    if not serves(backend, B):
        pytest.skip("split needs two batch rows")
    layer = cls(4, H, num_layers=2, bidirectional=True, seed=1, backend=use_backend(backend, monkeypatch), **opts)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, B, 4))
    lengths = rng.integers(1, 8, B)
    out, state = layer(x, lengths=lengths)
    with rnnlab.no_grad():
        assert not rnnlab.is_grad_enabled()
        out2, state2 = layer(x, lengths=lengths)
    assert rnnlab.is_grad_enabled()
    np.testing.assert_array_equal(out, out2)
    for a, b in zip(state if isinstance(state, tuple) else (state,), state2 if isinstance(state2, tuple) else (state2,)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(RuntimeError, match="no_grad"):
        layer.backward(np.ones_like(out2))


def test_backward_after_a_normal_forward_still_works():
    layer = rnnlab.LSTM(3, 4, seed=0)
    x = np.ones((5, 2, 3))
    out, _ = layer(x)
    with rnnlab.no_grad():
        layer(x)
    out, _ = layer(x)                                              # a normal forward again
    dx, _ = layer.backward(np.ones_like(out))
    assert dx.shape == x.shape and np.isfinite(dx).all()


def test_decorator_nesting_and_exceptions_restore_the_flag():
    @rnnlab.no_grad()
    def f():
        with rnnlab.no_grad():
            pass
        return rnnlab.is_grad_enabled()
    assert f() is False
    assert rnnlab.is_grad_enabled()
    with pytest.raises(ValueError):
        with rnnlab.no_grad():
            raise ValueError("boom")
    assert rnnlab.is_grad_enabled()


def test_flag_is_per_thread():
    seen = []
    with rnnlab.no_grad():
        t = threading.Thread(target=lambda: seen.append(rnnlab.is_grad_enabled()))
        t.start()
        t.join()
    assert seen == [True]


def test_model_backward_refuses_after_no_grad_and_evaluate_trains_on():
    from rnnlab.training.config import TrainConfig
    from rnnlab.training.trainer import model_config_for
    cfg = TrainConfig(task="adding", model="gru", hidden_size=5, seq_len=6, batch_size=4)
    task = build_task(cfg)
    model = rnnlab.SequenceModel(model_config_for(cfg, task), seed=0)
    b = task.train_batch(np.random.default_rng(0), 4, 0)
    with rnnlab.no_grad():
        logits, _ = model(b.inputs, b.lengths)
    with pytest.raises(RuntimeError, match="no_grad"):
        model.backward(np.ones_like(logits))
    rnnlab.evaluate(model, task)                                   # runs under no_grad
    assert rnnlab.is_grad_enabled()
    logits, _ = model(b.inputs, b.lengths)
    model.backward(np.ones_like(logits))
