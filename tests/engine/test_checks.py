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


# ---------------------------------------------------------------- inputs changed in place between forward and backward
from support import BACKENDS, use_backend  # noqa: E402

from rnnlab.errors import ModifiedInputError  # noqa: E402
from rnnlab.model.sequence_model import ModelConfig, SequenceModel  # noqa: E402

CLS = {"rnn": rnnlab.RNN, "lstm": rnnlab.LSTM, "gru": rnnlab.GRU}


def _layer_grads(cls, backend, x, hx, change=None, **kw):
    """Forward on x and hx, then ``change(x, hx)`` (in place), then backward: (dx, dhx, grads) or the error."""
    layer = cls(x.shape[-1], 6, seed=0, backend=backend, **kw)
    out, _ = layer(x, hx)
    if change is not None:
        change(x, hx)
    d = np.cos(np.arange(out.size, dtype=out.dtype)).reshape(out.shape)
    dx, dhx = layer.backward(d)
    return dx, dhx, {k: v.copy() for k, v in layer.grads.items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", sorted(CLS))
@pytest.mark.parametrize("size", ["small", "large"])    # NumPy fingerprint below 512 entries, compiled above
def test_backward_refuses_inputs_changed_in_place(cell, backend, size, monkeypatch, outcome):
    backend = use_backend(backend, monkeypatch)
    cls = CLS[cell]
    T, B = (3, 2) if size == "small" else (20, 8)
    rng = np.random.default_rng(0)
    fresh = lambda: rng.standard_normal((T, B, 4)).astype(np.float32)           # noqa: E731
    state = lambda: rng.standard_normal((1, B, 6)).astype(np.float32)           # noqa: E731
    pair = cell == "lstm"
    changes = {
        "x (every entry)": ("x", lambda x, hx: x.__imul__(2.0)),
        "x (the same values, moved: reversed in time)": ("x", lambda x, hx: x.__setitem__(..., x[::-1].copy())),
        "x (one entry, the last)": ("x", lambda x, hx: x.__setitem__((-1, -1, -1), x[-1, -1, -1] + 0.5)),
        "h_0": ("hx\\[0\\] \\(h_0\\)" if pair else "hx", lambda x, hx: (hx[0] if pair else hx).__iadd__(1.0)),
    }
    if pair:
        changes["c_0"] = ("hx\\[1\\] \\(c_0\\)", lambda x, hx: hx[1].__setitem__((0, 0, 0), 7.0))
    for what, (name, change) in changes.items():
        x, hx = fresh(), ((state(), state()) if pair else state())
        with pytest.raises(ModifiedInputError, match=rf"backward: {name} was modified in place after the forward"):
            _layer_grads(cls, backend, x, hx, change)
        outcome(f"layer: {what} changed in place between forward and backward", "ModifiedInputError")
    # unchanged input, or a converted private copy of it (float64 given to a float32 layer): no error, and the
    # gradients of the original values
    x, hx = fresh(), ((state(), state()) if pair else state())
    ref = _layer_grads(cls, backend, x.copy(), hx)
    x64 = x.astype(np.float64)
    got = _layer_grads(cls, backend, x64, hx, lambda x, hx: x.__imul__(3.0))
    for a, b in zip((ref[0], *ref[2].values()), (got[0], *got[2].values())):
        np.testing.assert_array_equal(a, b)
    outcome("layer: a converted copy of x changed between forward and backward", "ok (gradients unaffected)")


def test_modified_input_check_details(rng):
    layer = rnnlab.GRU(3, 4, seed=0, batch_first=True)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    out, _ = layer(x)
    x[0, 0, 0] += 1.0                                   # batch_first: the layer holds a transposed view of x
    with pytest.raises(ModifiedInputError) as info:
        layer.backward(np.ones_like(out))
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, rnnlab.RnnlabError)
    out, _ = layer(x)                                   # a new forward sees the new values: backward runs
    layer.backward(np.ones_like(out))
    # NaN with check_finite=False: an unchanged NaN is not taken for a change
    x[1, 2, 0] = np.nan
    out, _ = layer(x, check_finite=False)
    layer.backward(np.ones_like(out), check_finite=False)
    # unbatched x (T, I); a list (converted: the caller has nothing to change)
    x2 = rng.standard_normal((5, 3)).astype(np.float32)
    out, _ = layer(x2)
    x2 *= 0.5
    with pytest.raises(ModifiedInputError, match="x was modified"):
        layer.backward(np.ones_like(out))
    out, _ = layer(x2.tolist())
    layer.backward(np.ones_like(out))
    # a view of a larger array, changed through the larger array
    big = rng.standard_normal((4, 5, 2, 3)).astype(np.float32)
    out, _ = rnnlab.GRU(3, 4, seed=0)(big[1])
    lay = rnnlab.GRU(3, 4, seed=0)
    out, _ = lay(big[1])
    big[1, 4, 1, 2] = 0.25
    with pytest.raises(ModifiedInputError):
        lay.backward(np.ones_like(out))
    # under no_grad nothing is fingerprinted (and backward is refused for its own reason)
    with rnnlab.no_grad():
        out, _ = lay(big[2])
    assert lay._cache is None


@pytest.mark.parametrize("mode", ["embedding", "onehot", "dense"])
def test_model_backward_refuses_changed_inputs_before_adding_to_any_gradient(mode, rng):
    V = 5
    cfg = ModelConfig(input_size=V, output_size=3, cell="lstm", input_mode=mode, hidden_size=4,
                      embedding_dim=3)
    model = SequenceModel(cfg, seed=0)
    x = rng.integers(0, V, (6, 2)) if mode != "dense" else rng.standard_normal((6, 2, V)).astype(np.float32)
    model.zero_grad()
    logits, _ = model(x)
    # the layer fingerprints the caller's dense x, not the model's own one-hot or embedded array
    assert [name for name, *_ in model.rnn._cache.guards] == (["x"] if mode == "dense" else [])
    x[0, 0] = (x[0, 0] + 1) % V if mode != "dense" else x[0, 0] + 1.0
    with pytest.raises(ModifiedInputError, match=r"(inputs|x) was modified in place"):
        model.backward(np.ones_like(logits))
    assert all(not np.any(g) for g in model.grads.values())      # nothing half-added
    logits, _ = model(x)
    model.backward(np.ones_like(logits))
    assert any(np.any(g) for g in model.grads.values())


@pytest.mark.parametrize("n", [300, 4096])              # the NumPy route and (with Numba) the compiled one
def test_fingerprint_sees_moved_values(n, rng):
    from rnnlab.engine._checks import fingerprint as _fingerprint
    x = rng.standard_normal(n).astype(np.float32)
    fp = _fingerprint(x)
    assert _fingerprint(x.copy()) == fp
    for i, j in ((0, 1), (3, 67), (5, 5 + 256), (0, n - 1)):   # swaps 64 and 256 apart too
        y = x.copy()
        y[[i, j]] = y[[j, i]]
        assert _fingerprint(y)[0] == pytest.approx(fp[0], rel=1e-12) and _fingerprint(y) != fp, (i, j)
    y = x.copy()
    y[n // 2] = np.nextafter(y[n // 2], np.float32(np.inf))    # one entry one float32 step up
    assert _fingerprint(y) != fp
    v = x.astype(np.float64)                                    # the compiled weights are the documented ones
    h = (np.arange(1, n + 1, dtype=np.uint64) * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    assert fp[1] == pytest.approx(float((v * h.astype(np.uint32).view(np.int32)).sum()), rel=1e-9)
