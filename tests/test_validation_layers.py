"""Bad input to the layers gives a clear error naming the argument, the expected and the actual value."""
import numpy as np
import pytest

import rnnlab


@pytest.fixture
def lstm():
    return rnnlab.LSTM(4, 5, 2, seed=0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(input_size=0, hidden_size=3), r"input_size: expected an integer >= 1, got 0"),
    (dict(input_size=2, hidden_size=0), r"hidden_size: expected an integer >= 1, got 0"),
    (dict(input_size=2, hidden_size=3, num_layers=0), r"num_layers"),
    (dict(input_size=2, hidden_size=3, dropout=1.0), r"dropout: expected a number < 1.0, got 1.0"),
    (dict(input_size=2, hidden_size=3, dropout=-0.1), r"dropout"),
    (dict(input_size=2.5, hidden_size=3), r"input_size: expected an integer"),
    (dict(input_size=2, hidden_size=3, dtype="float16"), r"dtype: expected float32 or float64"),
    (dict(input_size=2, hidden_size=3, recurrent_init="orthogonl"), r"did you mean 'orthogonal'"),
])
def test_constructor_errors(kwargs, match, outcome):
    with pytest.raises((ValueError, TypeError), match=match):
        rnnlab.LSTM(**kwargs)
    outcome("layer constructor: sizes < 1, dropout outside [0, 1), bad dtype", "clear error")


def test_option_errors():
    with pytest.raises(ValueError, match="nonlinearity.*'sigmoid'"):
        rnnlab.RNN(2, 3, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="reset.*'middle'"):
        rnnlab.GRU(2, 3, reset="middle")


@pytest.mark.parametrize("x,match,exc", [
    (np.zeros((5, 3)), r"input_size \(last dimension\) 4, got 3", ValueError),
    (np.zeros((5, 2, 3)), r"x: expected input_size \(last dimension\) 4, got 3", ValueError),
    (np.zeros((5, 2, 4, 1)), r"x: expected a 3-D array", ValueError),
    (np.zeros((5, 2, 4), dtype=int), r"x: expected a floating-point array, got dtype int", TypeError),
    (np.zeros((5, 2, 4), dtype=complex), r"x: expected a floating-point array, got dtype complex", TypeError),
    (np.zeros((5, 0, 4)), r"at least one time step and one batch row", ValueError),
    (np.full((5, 2, 4), np.nan), r"x: expected finite values", ValueError),
])
def test_bad_x(lstm, x, match, exc, outcome):
    with pytest.raises(exc, match=match):
        lstm(x)
    outcome("layer: wrong rank, feature size, dtype, empty batch, NaN input", "clear error")


def test_check_finite_false_skips(lstm):
    out, _ = lstm(np.full((2, 1, 4), np.nan), check_finite=False)
    assert np.isnan(out).all()


def test_bad_hx(lstm):
    x = np.zeros((3, 2, 4))
    with pytest.raises(TypeError, match="hx: expected a pair"):
        lstm(x, np.zeros((2, 2, 5)))
    with pytest.raises(ValueError, match=r"hx\[1\] \(c_0\): expected shape \(2, 2, 5\).*got \(2, 3, 5\)"):
        lstm(x, (np.zeros((2, 2, 5)), np.zeros((2, 3, 5))))
    with pytest.raises(ValueError, match=r"hx: expected shape \(1, 2, 5\)"):
        rnnlab.GRU(4, 5)(x, np.zeros((2, 2, 5)))
    with pytest.raises(TypeError, match="hx: expected one array"):
        rnnlab.GRU(4, 5)(x, (np.zeros((1, 2, 5)),))


@pytest.mark.parametrize("lengths,match", [
    ([3, 0], r"lengths: expected values in \[1, 3\].*\[0\]"),
    ([4, 1], r"lengths: expected values in \[1, 3\].*\[4\]"),
    ([3], r"lengths: expected shape \(2,\)"),
    ([1.5, 2.0], r"lengths: expected integers"),
])
def test_bad_lengths(lstm, lengths, match, outcome):
    with pytest.raises((ValueError, TypeError), match=match):
        lstm(np.zeros((3, 2, 4)), lengths=np.array(lengths))
    outcome("layer: lengths outside [1, T], wrong count or dtype", "clear error")


def test_backward_errors(lstm):
    with pytest.raises(RuntimeError, match="call forward first"):
        lstm.backward(np.zeros((3, 2, 5)))
    out, _ = lstm(np.zeros((3, 2, 4)))
    with pytest.raises(ValueError, match=r"d_output: expected the output's shape \(3, 2, 5\), got \(3, 2, 4\)"):
        lstm.backward(np.zeros((3, 2, 4)))
    with pytest.raises(ValueError, match=r"d_hn\[1\] \(dc_n\)"):
        lstm.backward(np.zeros((3, 2, 5)), (None, np.zeros((1, 2, 5))))


def test_load_state_dict_lists_every_mismatch(lstm):
    sd = lstm.state_dict()
    del sd["weight_ih_l0"]
    sd["bias_hh_l1"] = np.zeros(7)
    sd["weight_hh_l9"] = np.zeros((20, 5))
    sd["bias_ih_l1"] = np.zeros(20, dtype=int)
    with pytest.raises(ValueError) as err:
        lstm.load_state_dict(sd)
    msg = str(err.value)
    for part in ["missing keys ['weight_ih_l0']", "unexpected keys ['weight_hh_l9']",
                 "bias_hh_l1: expected shape (20,), got (7,)", "bias_ih_l1: expected a floating-point array"]:
        assert part in msg
    before = lstm.state_dict()["weight_hh_l0"].copy()
    np.testing.assert_array_equal(lstm.state_dict()["weight_hh_l0"], before)   # nothing half-loaded


def test_load_state_dict_rejects_nan(lstm):
    sd = lstm.state_dict()
    sd["weight_hh_l1"][0, 0] = np.inf
    with pytest.raises(ValueError, match="weight_hh_l1: contains NaN or Inf"):
        lstm.load_state_dict(sd)
