"""Optimizers against hand-computed steps and torch.optim; clipping; schedules."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab.training import optim

torch = pytest.importorskip("torch")


def _params(rng):
    return {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}


CASES = [
    ("sgd", dict(momentum=0.0), torch.optim.SGD, dict()),
    ("sgd", dict(momentum=0.9), torch.optim.SGD, dict(momentum=0.9)),
    ("sgd", dict(momentum=0.9, nesterov=True), torch.optim.SGD, dict(momentum=0.9, nesterov=True)),
    ("adam", dict(), torch.optim.Adam, dict()),
    ("adamw", dict(), torch.optim.AdamW, dict()),
    ("rmsprop", dict(), torch.optim.RMSprop, dict()),
    ("rmsprop", dict(momentum=0.5), torch.optim.RMSprop, dict(momentum=0.5)),
    ("adagrad", dict(), torch.optim.Adagrad, dict()),
]


@pytest.mark.parametrize("name,kw,tcls,tkw", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_matches_torch_optim(name, kw, tcls, tkw, wd):
    rng = np.random.default_rng(0)
    params = _params(rng)
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt = optim.make_optimizer(name, params, lr=0.05, weight_decay=wd, **kw)
    wd_kw = {"weight_decay": wd} if name != "adamw" or wd else {"weight_decay": 0.0}
    topt = tcls(list(tparams.values()), lr=0.05, **tkw, **wd_kw)
    for _ in range(5):
        grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        opt.step(grads)
        for k, p in tparams.items():
            p.grad = torch.tensor(grads[k])
        topt.step()
    for k in params:
        np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), rtol=0, atol=1e-12, err_msg=k)


def test_hand_computed_steps():
    p = {"w": np.array([1.0, -2.0])}
    g = {"w": np.array([0.5, 0.25])}
    optim.SGD(p, lr=0.1).step(g)
    np.testing.assert_allclose(p["w"], [0.95, -2.025])
    p = {"w": np.array([1.0, -2.0])}
    optim.Adam(p, lr=0.1).step(g)                # first Adam step moves each entry by lr * sign(g)
    np.testing.assert_allclose(p["w"], [0.9, -2.1], atol=1e-7)
    p = {"w": np.array([1.0])}
    optim.Adagrad(p, lr=0.1).step({"w": np.array([2.0])})
    np.testing.assert_allclose(p["w"], [0.9], atol=1e-9)
    p = {"w": np.array([1.0])}
    o = optim.SGD(p, lr=0.1, momentum=0.5)
    o.step({"w": np.array([1.0])})               # buf = 1
    o.step({"w": np.array([1.0])})               # buf = 1.5
    np.testing.assert_allclose(p["w"], [1.0 - 0.1 - 0.15])


def test_clip_grad_norm_equals_torch():
    rng = np.random.default_rng(0)
    grads = _params(rng)
    tg = [torch.tensor(v.copy(), requires_grad=True) for v in grads.values()]
    for t, v in zip(tg, grads.values()):
        t.grad = torch.tensor(v.copy())
    total_t = torch.nn.utils.clip_grad_norm_(tg, 0.5).item()
    total, clipped = optim.clip_grad_norm(grads, 0.5)
    assert clipped and total == pytest.approx(total_t, rel=1e-12)
    for t, v in zip(tg, grads.values()):
        np.testing.assert_allclose(v, t.grad.numpy(), atol=1e-14)
    assert optim.global_norm(grads) == pytest.approx(0.5, rel=1e-5)


@settings(max_examples=50, deadline=None)
@given(scale=st.floats(1e-6, 1e6), max_norm=st.floats(1e-3, 1e3), seed=st.integers(0, 1000))
def test_clipping_never_raises_a_norm(scale, max_norm, seed):
    rng = np.random.default_rng(seed)
    grads = {k: v * scale for k, v in _params(rng).items()}
    before = optim.global_norm(grads)
    total, clipped = optim.clip_grad_norm(grads, max_norm)
    after = optim.global_norm(grads)
    assert total == pytest.approx(before)
    assert after <= before * (1 + 1e-12)
    assert after <= max_norm * (1 + 1e-6) or not clipped
    assert clipped == (max_norm / (before + 1e-6) < 1)


def test_clip_by_value():
    g = {"a": np.array([-3.0, 0.5, 2.0])}
    assert optim.clip_grad_value(g, 1.0)
    np.testing.assert_array_equal(g["a"], [-1.0, 0.5, 1.0])
    assert not optim.clip_grad_value(g, 1.0)


def test_schedules_match_torch():
    base, steps = 0.1, 50
    for sched, tsched in [("step", lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5)),
                          ("cosine", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=steps, eta_min=0.01))]:
        o = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
        s = tsched(o)
        for t in range(steps):
            ours = optim.lr_at(t, base, steps, sched, step_size=7, gamma=0.5, min_lr=0.01)
            assert ours == pytest.approx(o.param_groups[0]["lr"], rel=1e-9), (sched, t)
            o.step()
            s.step()
    warm = [optim.lr_at(t, 1.0, 100, "constant", warmup=4) for t in range(6)]
    assert warm == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert math.isclose(optim.lr_at(99, 1.0, 100, "cosine", warmup=10), 0.0003, abs_tol=1e-3)


def test_optimizer_errors():
    p = {"w": np.zeros(2)}
    with pytest.raises(ValueError, match="optimizer: expected one of .*'adma'.*did you mean 'adam'"):
        optim.make_optimizer("adma", p, 0.1)
    with pytest.raises(ValueError, match="lr: expected a number > 0.0, got -1.0"):
        optim.make_optimizer("sgd", p, -1.0)
    with pytest.raises(ValueError, match="nesterov: needs momentum > 0"):
        optim.make_optimizer("sgd", p, 0.1, nesterov=True)
