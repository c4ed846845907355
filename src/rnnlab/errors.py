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


_CHECKS = []


def _all_finite(arr: np.ndarray) -> bool:
    """No NaN or Inf in arr: compiled (one pass, ``kernels.checks``) when Numba is installed and arr is a
    contiguous float32/float64 array of some size, else NumPy's ``isfinite``."""
    checks = _compiled_checks(arr) if arr.flags.c_contiguous else None
    if checks is not None:
        return bool(checks.all_finite(arr.reshape(-1)))
    return bool(np.isfinite(arr).all())


def _compiled_checks(arr: np.ndarray):
    """The compiled checks module (``kernels.checks``) for a float32/float64 array of 512 entries or more
    (below, NumPy is as fast), or None (smaller, another dtype, or no Numba; looked up once)."""
    if arr.size < 512 or arr.dtype.kind != "f" or arr.itemsize not in (4, 8):
        return None
    if not _CHECKS:
        from .kernels import available
        if available():
            from .kernels import checks
            _CHECKS.append(checks)
        else:
            _CHECKS.append(None)
    return _CHECKS[0]


def _fingerprint(arr: np.ndarray) -> tuple:
    """(sum, position-weighted sum) of arr's values in float64 (the weights: see ``kernels.checks.fingerprint``):
    compiled for float32/float64 arrays of some size when Numba is installed, else NumPy. The same array always
    takes the same route, so an unchanged array gives the same two numbers bit for bit."""
    flat = arr.reshape(-1)                                  # a copy only for a non-contiguous view
    checks = _compiled_checks(flat)
    if checks is not None:
        s, w = checks.fingerprint(flat)
        return float(s), float(w)
    v = flat.astype(np.float64)
    h = (np.arange(1, v.size + 1, dtype=np.uint64) * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    return float(v.sum()), float((v * h.astype(np.uint32).view(np.int32)).sum())


def guard_inputs(pairs) -> list:
    """[(name, array, fingerprint)] for the (name, array) pairs: what ``check_unchanged`` compares with."""
    return [(name, arr, _fingerprint(arr)) for name, arr in pairs]


def _same(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)                    # NaN (check_finite=False) equals NaN here


def check_unchanged(guards, where: str = "backward") -> None:
    """Raise ModifiedInputError when an array recorded by ``guard_inputs`` no longer holds the values it had
    (torch raises for the same mistake; without the check the gradients would silently use the new values)."""
    for name, arr, fp in guards:
        now = _fingerprint(arr)
        if not (_same(now[0], fp[0]) and _same(now[1], fp[1])):
            raise ModifiedInputError(
                f"{where}: {name} was modified in place after the forward pass (expected the values the forward "
                f"read, found different ones); backward needs them unchanged: change a copy, or run forward again")


def as_float_array(arg: str, value, dtype, check_finite: bool = True) -> np.ndarray:
    """Convert ``value`` to a float array of ``dtype``; reject non-float kinds and NaN/Inf."""
    try:
        arr = np.asarray(value)
    except Exception as exc:  # e.g. ragged nested lists
        raise DTypeError(f"{arg}: expected a float array, could not convert {type(value).__name__}: {exc}") from None
    if arr.dtype.kind != "f":
        raise DTypeError(f"{arg}: expected a floating-point array, got dtype {arr.dtype}")
    arr = arr.astype(dtype, copy=False)
    if check_finite and arr.size and not _all_finite(arr):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise NonFiniteError(f"{arg}: expected finite values, found {bad} NaN/Inf entries "
                             f"(pass check_finite=False to skip this check)")
    return arr


def check_shape(arg: str, arr: np.ndarray, expected: tuple) -> None:
    """``expected`` may hold None for 'any size'."""
    ok = arr.ndim == len(expected) and all(e is None or e == a for e, a in zip(expected, arr.shape))
    if not ok:
        exp = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ShapeError(f"{arg}: expected shape {exp}, got {tuple(arr.shape)}")
