"""rnnlab's error types and the small checks every public boundary shares.

Every error names the argument, what was expected and what was given. The classes subclass the
built-in ``ValueError`` / ``TypeError`` so ``except ValueError`` keeps working.
"""
from __future__ import annotations

import difflib

import numpy as np


class RnnlabError(Exception):
    """Base class of rnnlab's own errors."""


class ShapeError(RnnlabError, ValueError):
    """An array has the wrong rank or shape."""


class ConfigError(RnnlabError, ValueError):
    """An option or configuration value is invalid."""


class CheckpointError(RnnlabError, ValueError):
    """A checkpoint file is missing, truncated, corrupted or of an unknown format."""


class NonFiniteError(RnnlabError, ValueError):
    """A NaN or Inf was found where finite numbers are required."""


class DTypeError(RnnlabError, TypeError):
    """An array has a dtype that cannot be used (integer, complex, object...)."""


class DataError(RnnlabError, ValueError):
    """The user's data cannot be read as sequences (a bad value, column, label or file; named in the message)."""


class BackendError(RnnlabError, ValueError):
    """The backend asked for cannot serve this layer or call (it names the ones that can)."""


class ModifiedInputError(RnnlabError, RuntimeError):
    """An array the forward pass read, and backward reads again, was changed in place in between."""


def closest(name: str, choices) -> str:
    """' (did you mean 'x'?)' or '' -- for messages about unknown names."""
    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def check_choice(arg: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(
            f"{arg}: expected one of {sorted(map(str, choices))}, got {value!r}{closest(value, choices)}"
        )


def check_int(arg: str, value, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{arg}: expected an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if low is not None and value < low:
        raise ConfigError(f"{arg}: expected an integer >= {low}, got {value}")
    if high is not None and value > high:
        raise ConfigError(f"{arg}: expected an integer <= {high}, got {value}")
    return value


def check_float(arg: str, value, low=None, high=None, low_open=False, high_open=False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{arg}: expected a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value):
        raise ConfigError(f"{arg}: expected a finite number, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        rel = ">" if low_open else ">="
        raise ConfigError(f"{arg}: expected a number {rel} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        rel = "<" if high_open else "<="
        raise ConfigError(f"{arg}: expected a number {rel} {high}, got {value}")
    return value
