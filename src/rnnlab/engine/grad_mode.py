"""Inference without backward caches: ``with rnnlab.no_grad(): ...``, as ``torch.no_grad()``.

Inside the context a layer's forward keeps nothing for backward: the compiled kernels write their per-step
caches (previous states, gates) into one reused row instead of T rows, which saves their memory and time, and
``backward`` raises a clear error. The flag is per thread. ``no_grad`` also works as a decorator.
"""
from __future__ import annotations

import contextlib
import threading

_state = threading.local()


def is_grad_enabled() -> bool:
    """False inside ``no_grad()``: forward passes keep no cache for backward."""
    return getattr(_state, "enabled", True)


class _GradMode(contextlib.ContextDecorator):
    """Sets whether forward passes keep their caches inside the context (per thread; nests)."""
    enabled = True

    def __enter__(self):
        self._prev = is_grad_enabled()
        _state.enabled = self.enabled
        return self

    def __exit__(self, *exc):
        _state.enabled = self._prev
        return False


class no_grad(_GradMode):
    """Context manager (and decorator) that turns off the caches a later ``backward`` would need."""
    enabled = False


class enable_grad(_GradMode):
    """The opposite of ``no_grad``: forward passes keep their caches inside it (as ``torch.enable_grad()``)."""
    enabled = True
