"""Input checks at the public boundary: every error names the argument, what was expected and what was given.

    as_float_array       anything array-like -> a float array of the layer's dtype; NaN/Inf refused
    layer_input          x (with batch_first / unbatched) -> (T, B, I), checked against the layer
    initial_states       hx -> a tuple of (L*D, B, H) arrays, one per state variable
    lengths_mask         lengths (B,) -> the (T, B, 1) mask, or None when no row is padded
    guard_inputs / check_unchanged    the fingerprints that let backward refuse inputs changed in place

The NaN/Inf check and the fingerprint run compiled (``_kernels.compiled_checks``: one pass, no temporary) for
contiguous float arrays of some size when Numba is installed, else with NumPy.
"""
from __future__ import annotations

import os

import numpy as np

from rnnlab.errors import DTypeError, ModifiedInputError, NonFiniteError, ShapeError

_CHECKS = []


def all_finite(arr: np.ndarray) -> bool:
    """No NaN or Inf in arr: compiled (one pass, ``_kernels.compiled_checks``) when Numba is installed and arr is a
    contiguous float32/float64 array of some size, else NumPy's ``isfinite``."""
    checks = compiled_checks(arr) if arr.flags.c_contiguous else None
    if checks is not None:
        return bool(checks.all_finite(arr.reshape(-1)))
    return bool(np.isfinite(arr).all())


def compiled_checks(arr: np.ndarray):
    """The compiled checks module (``_kernels.compiled_checks``) for a float32/float64 array of 512 entries or more
    (below, NumPy is as fast), or None (smaller, another dtype, or no Numba; looked up once)."""
    if arr.size < 512 or arr.dtype.kind != "f" or arr.itemsize not in (4, 8):
        return None
    if not _CHECKS:
        from rnnlab.engine._kernels import available
        if available():
            from rnnlab.engine._kernels import compiled_checks as checks
            _CHECKS.append(checks)
        else:
            _CHECKS.append(None)
    return _CHECKS[0]


def fingerprint(arr: np.ndarray) -> tuple:
    """(sum, position-weighted sum) of arr's values in float64 (the weights: see ``_kernels.compiled_checks.fingerprint``):
    compiled for float32/float64 arrays of some size when Numba is installed, else NumPy. The same array always
    takes the same route, so an unchanged array gives the same two numbers bit for bit."""
    flat = arr.reshape(-1)                                  # a copy only for a non-contiguous view
    checks = compiled_checks(flat)
    if checks is not None:
        s, w = checks.fingerprint(flat)
        return float(s), float(w)
    v = flat.astype(np.float64)
    h = (np.arange(1, v.size + 1, dtype=np.uint64) * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    return float(v.sum()), float((v * h.astype(np.uint32).view(np.int32)).sum())


def guard_inputs(pairs) -> list:
    """[(name, array, fingerprint)] for the (name, array) pairs: what ``check_unchanged`` compares with."""
    return [(name, arr, fingerprint(arr)) for name, arr in pairs]


def _same(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)                    # NaN (check_finite=False) equals NaN here


def check_unchanged(guards, where: str = "backward") -> None:
    """Raise ModifiedInputError when an array recorded by ``guard_inputs`` no longer holds the values it had
    (torch raises for the same mistake; without the check the gradients would silently use the new values)."""
    for name, arr, fp in guards:
        now = fingerprint(arr)
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
    if check_finite and arr.size and not all_finite(arr):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise NonFiniteError(f"{arg}: expected finite values, found {bad} NaN/Inf entries "
                             f"(pass check_finite=False to skip this check)")
    return arr


def users_memory(arr, given) -> bool:
    """Whether the converted array ``arr`` is the caller's ``given`` array or a view of memory the caller can
    still change (a converted copy is private)."""
    return arr is given or not arr.flags.owndata


def layer_input(x_in, input_size, batch_first, dtype, check_finite):
    """-> (x (T, B, I) as the layers compute on it, unbatched). x_in: (T, B, I), (B, T, I) with batch_first,
    or (T, I) unbatched."""
    x = as_float_array("x", x_in, dtype, check_finite)
    if x.ndim not in (2, 3):
        raise ShapeError(f"x: expected a 3-D array ({'B, T' if batch_first else 'T, B'}, input_size) "
                         f"or a 2-D unbatched (T, input_size), got shape {x.shape}")
    unbatched = x.ndim == 2
    if unbatched:
        x = x[:, None, :]
    elif batch_first:
        x = x.transpose(1, 0, 2)
    T, B, I = x.shape
    if I != input_size:
        raise ShapeError(f"x: expected input_size (last dimension) {input_size}, got {I}")
    if T < 1 or B < 1:
        raise ShapeError(f"x: expected at least one time step and one batch row, got T={T}, B={B}")
    return x, unbatched


def state_array(arg, value, LD, B, H, unbatched, dtype, check_finite, guards=None):
    """One state array (h_0, c_0, or a gradient of h_n/c_n) -> (L*D, B, H). ``guards``: a list that gets
    (name, array) when the array is the caller's memory (fingerprinted for backward)."""
    arr = as_float_array(arg, value, dtype, check_finite)
    expected = (LD, H) if unbatched else (LD, B, H)
    if tuple(arr.shape) != expected:
        raise ShapeError(f"{arg}: expected shape {expected} (num_layers * num_directions, "
                         f"{'' if unbatched else 'batch, '}hidden_size), got {tuple(arr.shape)}")
    if guards is not None and users_memory(arr, value):
        guards.append((arg, arr))
    return arr[:, None, :] if unbatched else arr


def initial_states(hx, n_state, kind, LD, B, H, unbatched, dtype, check_finite, guards=None):
    """hx -> a tuple of (L*D, B, H) arrays, one per state variable (zeros where hx is None). ``H``: the size,
    or a tuple of one size per state (an LSTM with projections: (proj_size, hidden_size))."""
    sizes = H if isinstance(H, tuple) else (H,) * n_state

    def zeros(k):
        return np.zeros((LD, B, sizes[k]), dtype)
    if n_state == 1:
        if isinstance(hx, tuple):
            raise TypeError(f"hx: expected one array for {kind}, got a tuple of {len(hx)}")
        return (zeros(0) if hx is None else state_array("hx", hx, LD, B, sizes[0], unbatched, dtype, check_finite,
                                                        guards),)
    if hx is None:
        return zeros(0), zeros(1)
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"hx: expected a pair (h_0, c_0) for {kind}, got {type(hx).__name__}")
    return (state_array("hx[0] (h_0)", hx[0], LD, B, sizes[0], unbatched, dtype, check_finite, guards),
            state_array("hx[1] (c_0)", hx[1], LD, B, sizes[1], unbatched, dtype, check_finite, guards))


def final_state_grads(d_hn, n_state, kind, LD, B, H, unbatched, dtype, check_finite):
    """backward's d_hn -> a list of (L*D, B, H) arrays (zeros where None); ``H`` as in ``initial_states``."""
    sizes = H if isinstance(H, tuple) else (H,) * n_state
    if n_state == 1:
        d_hn = (d_hn,)
    elif d_hn is None:
        d_hn = (None, None)
    elif not isinstance(d_hn, (tuple, list)) or len(d_hn) != 2:
        raise TypeError(f"d_hn: expected a pair (dh_n, dc_n) for {kind} (entries may be None), "
                        f"got {type(d_hn).__name__}")
    names = ("d_hn",) if n_state == 1 else ("d_hn[0] (dh_n)", "d_hn[1] (dc_n)")
    return [np.zeros((LD, B, Hk), dtype) if g is None
            else state_array(n, g, LD, B, Hk, unbatched, dtype, check_finite) for n, g, Hk in zip(names, d_hn, sizes)]


def lengths_mask(lengths, T, B, dtype):
    """lengths (B,) integers in [1, T] -> the (T, B, 1) mask (1 at valid steps), or None when all are T."""
    arr = np.asarray(lengths.detach().cpu().numpy() if hasattr(lengths, "detach") else lengths)
    if arr.dtype.kind not in "iu":
        raise DTypeError(f"lengths: expected integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ShapeError(f"lengths: expected shape ({B},) (one length per batch row), got {arr.shape}")
    if arr.min() < 1 or arr.max() > T:
        bad = arr[(arr < 1) | (arr > T)]
        raise ValueError(f"lengths: expected values in [1, {T}] (the sequence length), got {bad.tolist()}")
    if (arr == T).all():
        return None
    return (np.arange(T)[:, None] < arr[None, :])[..., None].astype(dtype)   # (T, B, 1)


def state_dict_entries(state_dict, expected: dict, strict=True, prefix=""):
    """(problems, arrays): each entry of ``state_dict`` checked against ``expected`` (name -> shape) -- present,
    floating point, the expected shape, finite; unexpected names are problems when ``strict``. Torch tensors
    are converted. ``prefix`` is prepended to the names in the messages."""
    if not hasattr(state_dict, "items"):
        raise TypeError(f"state_dict: expected a mapping of names to arrays, got {type(state_dict).__name__}")
    problems, arrays = [], {}
    missing = [prefix + k for k in expected if k not in state_dict]
    unexpected = [prefix + k for k in state_dict if k not in expected]
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected and strict:
        problems.append(f"unexpected keys {unexpected}")
    for k in expected:
        if k not in state_dict:
            continue
        v = state_dict[k]
        v = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
        if v.dtype.kind != "f":
            problems.append(f"{prefix}{k}: expected a floating-point array, got dtype {v.dtype}")
        elif tuple(v.shape) != tuple(expected[k]):
            problems.append(f"{prefix}{k}: expected shape {tuple(expected[k])}, got {tuple(v.shape)}")
        elif not np.isfinite(v).all():
            problems.append(f"{prefix}{k}: contains NaN or Inf")
        else:
            arrays[k] = v
    return problems, arrays


def available_memory() -> int | None:
    """Bytes of memory the system reports available (Linux MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
