"""kernels/checks.py: the compiled NaN/Inf check behind the input checks of large arrays."""
import numpy as np
import pytest

from support import needs_numba

pytestmark = needs_numba


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_finiteness_check(dtype):
    """The compiled NaN/Inf check behind every input check of large arrays: any position, any of NaN, +Inf,
    -Inf; huge finite values pass (a - a, not a sum of the values, so no overflow)."""
    from rnnlab.engine._checks import all_finite as checked, as_float_array
    from rnnlab.errors import NonFiniteError
    from rnnlab.engine._kernels.compiled_checks import all_finite
    x = np.random.default_rng(0).standard_normal(5000).astype(dtype)
    assert all_finite(x) and checked(x.reshape(50, 10, 10))
    assert all_finite(np.full(5000, np.finfo(dtype).max, dtype))
    for bad in (np.nan, np.inf, -np.inf):
        for pos in (0, 17, 2500, 4999):
            y = x.copy()
            y[pos] = bad
            assert not all_finite(y)
            with pytest.raises(NonFiniteError, match="found 1 NaN/Inf"):
                as_float_array("x", y.reshape(50, 100), dtype)
