"""Optimizers, gradient clipping and learning-rate schedules; state as plain arrays.

Update rules follow ``torch.optim`` (same defaults, same order of operations), so a step here equals a
torch step on the same gradients to round-off. ``weight_decay`` is L2 added to the gradient except in
AdamW, where it is decoupled (``p <- p - lr * wd * p``).

    SGD:      b = mu b + (1 - dampening) g  (b = g at the first step);  g = g + mu b (Nesterov) | b;  p -= lr g
    Adam:     m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps)
    RMSprop:  v = a v + (1-a) g^2;  p -= lr g / (sqrt(v) + eps)     (with momentum: b = mu b + that ratio)
    Adagrad:  s += g^2;  p -= lr / (1 + (t-1) lr_decay) g / (sqrt(s) + eps)
"""
from __future__ import annotations

import math

import numpy as np

from rnnlab.errors import ConfigError, check_choice, check_float, check_int


class Optimizer:
    slots: tuple = ()
    defaults: dict = {}

    def __init__(self, params: dict, lr: float = 1e-3, weight_decay: float = 0.0, **hyper):
        self.params = params
        self.lr = check_float("lr", lr, 0.0, low_open=True)
        self.weight_decay = check_float("weight_decay", weight_decay, 0.0)
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise ConfigError(f"{type(self).__name__}: unknown options {sorted(unknown)}; valid: {sorted(self.defaults)}")
        self.hyper = {**self.defaults, **hyper}
        self.t = 0
        self.state = {n: {s: np.zeros_like(p) for s in self.slots} for n, p in params.items()}

    def step(self, grads: dict, lr: float | None = None) -> None:
        """Update every parameter in place from ``grads`` (same keys)."""
        self.t += 1
        lr = self.lr if lr is None else lr
        for name, p in self.params.items():
            g = grads[name]
            if self.weight_decay and not self.decoupled:
                g = g + self.weight_decay * p
            self.update(p, g, self.state[name], lr)

    decoupled = False

    def update(self, p, g, state, lr):  # pragma: no cover - abstract
        raise NotImplementedError

    # plain-array state for checkpoints
    def state_arrays(self) -> dict:
        return {f"{n}/{s}": a for n, slots in self.state.items() for s, a in slots.items()}

    def load_state_arrays(self, arrays: dict, t: int) -> None:
        for key, arr in arrays.items():
            n, s = key.rsplit("/", 1)
            self.state[n][s][...] = arr
        self.t = int(t)


class SGD(Optimizer):
    slots = ("momentum_buffer",)
    defaults = {"momentum": 0.0, "dampening": 0.0, "nesterov": False}

    def update(self, p, g, state, lr):
        mu = self.hyper["momentum"]
        if mu:
            buf = state["momentum_buffer"]
            if self.t == 1:
                buf[...] = g
            else:
                buf *= mu
                buf += (1.0 - self.hyper["dampening"]) * g
            g = g + mu * buf if self.hyper["nesterov"] else buf
        p -= lr * g


class Adam(Optimizer):
    slots = ("exp_avg", "exp_avg_sq")
    defaults = {"betas": (0.9, 0.999), "eps": 1e-8}

    def update(self, p, g, state, lr):
        b1, b2 = self.hyper["betas"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        bc1, bc2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        denom = np.sqrt(v) / math.sqrt(bc2) + self.hyper["eps"]
        p -= (lr / bc1) * m / denom


class AdamW(Adam):
    decoupled = True

    def __init__(self, params, lr=1e-3, weight_decay=1e-2, **hyper):
        super().__init__(params, lr, weight_decay, **hyper)

    def update(self, p, g, state, lr):
        if self.weight_decay:
            p *= 1 - lr * self.weight_decay
        super().update(p, g, state, lr)


class RMSprop(Optimizer):
    slots = ("square_avg", "momentum_buffer")
    defaults = {"alpha": 0.99, "eps": 1e-8, "momentum": 0.0}

    def update(self, p, g, state, lr):
        a = self.hyper["alpha"]
        v = state["square_avg"]
        v *= a
        v += (1 - a) * g * g
        ratio = g / (np.sqrt(v) + self.hyper["eps"])
        mu = self.hyper["momentum"]
        if mu:
            buf = state["momentum_buffer"]
            buf *= mu
            buf += ratio
            p -= lr * buf
        else:
            p -= lr * ratio


class Adagrad(Optimizer):
    slots = ("sum",)
    defaults = {"lr_decay": 0.0, "eps": 1e-10}

    def update(self, p, g, state, lr):
        s = state["sum"]
        s += g * g
        clr = lr / (1 + (self.t - 1) * self.hyper["lr_decay"])
        p -= clr * g / (np.sqrt(s) + self.hyper["eps"])


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}


def make_optimizer(name: str, params: dict, lr: float, weight_decay: float = 0.0, momentum: float = 0.0,
                   nesterov: bool = False) -> Optimizer:
    check_choice("optimizer", name, OPTIMIZERS)
    kw = {}
    if name == "sgd":
        kw = {"momentum": momentum, "nesterov": nesterov}
        if nesterov and momentum <= 0:
            raise ConfigError(f"nesterov: needs momentum > 0, got momentum={momentum}")
    elif name == "rmsprop":
        kw = {"momentum": momentum}
    if name == "adamw":
        return AdamW(params, lr, weight_decay, **kw)
    return OPTIMIZERS[name](params, lr, weight_decay, **kw)


# ------------------------------------------------------------------- clipping
def global_norm(grads: dict) -> float:
    return float(math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values())))


def clip_grad_norm(grads: dict, max_norm: float) -> tuple[float, bool]:
    """Scale all gradients in place by min(1, max_norm / (||g|| + 1e-6)) (torch's rule).

    Returns the pre-clip global norm and whether it clipped.
    """
    total = global_norm(grads)
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads.values():
            g *= g.dtype.type(coef)
        return total, True
    return total, False


def clip_grad_value(grads: dict, clip_value: float) -> bool:
    """Clamp every gradient entry to [-clip_value, clip_value] in place; True if any entry changed."""
    changed = False
    for g in grads.values():
        if not changed and np.abs(g).max(initial=0) > clip_value:
            changed = True
        np.clip(g, -clip_value, clip_value, out=g)
    return changed


# ------------------------------------------------------------------- schedules
SCHEDULES = ("constant", "step", "cosine")


def lr_at(step: int, base_lr: float, total_steps: int, schedule: str = "constant", warmup: int = 0,
          step_size: int = 1000, gamma: float = 0.5, min_lr: float = 0.0) -> float:
    """Learning rate for update number ``step`` (0-based): linear warm-up, then the schedule."""
    check_choice("schedule", schedule, SCHEDULES)
    if warmup and step < warmup:
        return base_lr * (step + 1) / warmup
    t = step - warmup
    span = max(1, total_steps - warmup)
    if schedule == "constant":
        return base_lr
    if schedule == "step":
        return base_lr * gamma ** (t // check_int("step_size", step_size, 1))
    return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * min(t, span) / span))
