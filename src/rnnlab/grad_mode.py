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


class no_grad(contextlib.ContextDecorator):
    """Context manager (and decorator) that turns off the caches a later ``backward`` would need."""

    def __enter__(self):
        self._prev = is_grad_enabled()
        _state.enabled = False
        return self

    def __exit__(self, *exc):
        _state.enabled = self._prev
        return False


class enable_grad(contextlib.ContextDecorator):
    """The opposite of ``no_grad``: forward passes keep their caches inside it (as ``torch.enable_grad()``)."""

    def __enter__(self):
        self._prev = is_grad_enabled()
        _state.enabled = True
        return self

    def __exit__(self, *exc):
        _state.enabled = self._prev
        return False
