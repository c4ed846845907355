"""Invariants of the recurrent layers, over random shapes (hypothesis): on the reference in the fast tier, on the
automatic choice (the compiled loop at these sizes) in the slow tier, where odd shapes (one unit, one feature)
compile loops of their own."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnlab

KINDS = st.sampled_from([("rnn", {}), ("lstm", {}), ("gru", {}), ("gru", {"reset": "before"}),
                         ("rnn", {"nonlinearity": "relu"})])
CLS = {"rnn": rnnlab.RNN, "lstm": rnnlab.LSTM, "gru": rnnlab.GRU}
COMMON = settings(max_examples=25, deadline=None)


ON = pytest.mark.parametrize("backend", ["numpy", pytest.param("auto", marks=pytest.mark.slow)])


def _layer(kind, kw, I, H, L, bidir, seed, backend):
    return CLS[kind](I, H, L, bidirectional=bidir, dtype="float64", seed=seed, backend=backend, **kw)


@ON
@COMMON
@given(kind=KINDS, T=st.integers(2, 7), B=st.integers(1, 4), I=st.integers(1, 5), H=st.integers(1, 6),
       L=st.integers(1, 2), seed=st.integers(0, 10_000), data=st.data())
def test_causality(backend, kind, T, B, I, H, L, seed, data):
    """Changing x[t:] leaves output[:t] unchanged (unidirectional layers)."""
    layer = _layer(*kind, I, H, L, False, seed, backend)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, I))
    t = data.draw(st.integers(1, T - 1))
    y = x.copy()
    y[t:] = rng.standard_normal(y[t:].shape)
    out_x, _ = layer(x)
    out_y, _ = layer(y)
    np.testing.assert_array_equal(out_x[:t], out_y[:t])


@ON
@COMMON
@given(kind=KINDS, T=st.integers(2, 8), B=st.integers(1, 4), I=st.integers(1, 5), H=st.integers(1, 6),
       L=st.integers(1, 3), seed=st.integers(0, 10_000), data=st.data())
def test_two_chunks_equal_one_run(backend, kind, T, B, I, H, L, seed, data):
    """Forward in two chunks with the carried state equals one run; so does backward with dhx chained."""
    rng = np.random.default_rng(seed)
    layer = _layer(*kind, I, H, L, False, seed, backend)
    x = rng.standard_normal((T, B, I))
    d_out = rng.standard_normal((T, B, H))
    cut = data.draw(st.integers(1, T - 1))
    out, hn = layer(x)
    dx, _ = layer.backward(d_out)
    whole = {k: v.copy() for k, v in layer.grads.items()}

    two = _layer(*kind, I, H, L, False, seed, backend)
    out1, h1 = two(x[:cut])
    out2, h2 = two(x[cut:], h1)
    np.testing.assert_allclose(np.concatenate([out1, out2]), out, rtol=0, atol=1e-12)
    for a, b in zip(h2 if isinstance(h2, tuple) else (h2,), hn if isinstance(hn, tuple) else (hn,)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    dx2, dh1 = two.backward(d_out[cut:])            # gradients of the second chunk; dh1 flows into the first
    two(x[:cut])                                    # re-run chunk 1 to restore its cache
    dx1, _ = two.backward(d_out[:cut], dh1)
    np.testing.assert_allclose(np.concatenate([dx1, dx2]), dx, rtol=0, atol=1e-11)
    for k in whole:
        np.testing.assert_allclose(two.grads[k], whole[k], rtol=0, atol=1e-10, err_msg=k)


@ON
@COMMON
@given(kind=KINDS, T=st.integers(1, 6), B=st.integers(2, 5), I=st.integers(1, 4), H=st.integers(1, 5),
       bidir=st.booleans(), seed=st.integers(0, 10_000), ragged=st.booleans())
def test_batch_rows_independent(backend, kind, T, B, I, H, bidir, seed, ragged):
    """Each batch row's output equals the output of running that row alone."""
    rng = np.random.default_rng(seed)
    layer = _layer(*kind, I, H, 1, bidir, seed, backend)
    x = rng.standard_normal((T, B, I))
    lengths = rng.integers(1, T + 1, size=B) if ragged else None
    out, _ = layer(x, lengths=lengths)
    for b in range(B):
        Tb = T if lengths is None else int(lengths[b])
        alone, _ = layer(x[:Tb, b:b + 1])
        np.testing.assert_allclose(out[:Tb, b:b + 1], alone, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(out[Tb:, b], 0.0)


def test_padded_gradients_are_ignored():
    rng = np.random.default_rng(0)
    layer = rnnlab.LSTM(3, 4, bidirectional=True, dtype="float64", seed=0)
    x = rng.standard_normal((5, 2, 3))
    lengths = np.array([5, 3])
    layer(x, lengths=lengths)
    d_out = rng.standard_normal((5, 2, 8))
    dx, _ = layer.backward(d_out)
    g = {k: v.copy() for k, v in layer.grads.items()}
    d_out2 = d_out.copy()
    d_out2[3:, 1] = 1e6                              # garbage at padded positions
    layer.zero_grad()
    layer(x, lengths=lengths)
    dx2, _ = layer.backward(d_out2)
    np.testing.assert_array_equal(dx, dx2)
    np.testing.assert_array_equal(dx[3:, 1], 0.0)
    for k in g:
        np.testing.assert_array_equal(g[k], layer.grads[k])


def test_grads_accumulate_until_zero_grad():
    layer = rnnlab.GRU(3, 4, dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    out, _ = layer(x)
    layer.backward(np.ones_like(out))
    once = {k: v.copy() for k, v in layer.grads.items()}
    layer(x)
    layer.backward(np.ones_like(out))
    for k in once:
        np.testing.assert_allclose(layer.grads[k], 2 * once[k])
    layer.zero_grad()
    assert all(not v.any() for v in layer.grads.values())


def test_dropout_only_in_training_and_seeded():
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    a = rnnlab.LSTM(3, 4, 2, dropout=0.5, seed=3, dtype="float64")
    b = rnnlab.LSTM(3, 4, 2, dropout=0.5, seed=3, dtype="float64")
    np.testing.assert_array_equal(a(x)[0], b(x)[0])      # same seed, same masks
    train_out = a(x)[0]
    a.eval()
    e1, e2 = a(x)[0], a(x)[0]
    np.testing.assert_array_equal(e1, e2)
    assert not np.allclose(train_out, e1)


def test_init_options():
    H = 6
    lstm = rnnlab.LSTM(3, H, seed=0, forget_bias=1.0, recurrent_init="orthogonal", dtype="float64")
    sd = lstm.state_dict()
    np.testing.assert_array_equal(sd["bias_ih_l0"][H:2 * H], 1.0)
    np.testing.assert_array_equal(sd["bias_hh_l0"][H:2 * H], 0.0)
    for blk in np.split(sd["weight_hh_l0"], 4):
        np.testing.assert_allclose(blk @ blk.T, np.eye(H), atol=1e-12)
    k = 1 / np.sqrt(H)
    assert np.abs(sd["weight_ih_l0"]).max() <= k
    assert lstm.num_parameters() == 4 * (H * 3 + H * H + 2 * H)
    assert rnnlab.LSTM(3, H, seed=0).state_dict()["weight_ih_l0"].dtype == np.float32


def test_gru_update_bias_starts_the_units_keeping_their_state():
    """update_bias sets the z block (the second of r, z, n) of bias_ih and zeroes it in bias_hh; with a large
    value z is near 1 from the start, so h_t stays near h_(t-1): the GRU's counterpart of forget_bias."""
    H = 5
    gru = rnnlab.GRU(3, H, num_layers=2, bidirectional=True, seed=0, update_bias=4.0, dtype="float64")
    for k, v in gru.state_dict().items():
        if k.startswith("bias_ih"):
            np.testing.assert_array_equal(v[H:2 * H], 4.0)
            assert not np.allclose(v[:H], 4.0)
        elif k.startswith("bias_hh"):
            np.testing.assert_array_equal(v[H:2 * H], 0.0)
    plain = rnnlab.GRU(3, H, seed=0, dtype="float64")
    kept = rnnlab.GRU(3, H, seed=0, update_bias=6.0, dtype="float64")
    x = np.random.default_rng(0).standard_normal((20, 2, 3))
    h0 = np.ones((1, 2, H))
    drift = {name: np.abs(g(x, h0)[1] - h0).mean() for name, g in (("plain", plain), ("kept", kept))}
    assert drift["kept"] < 0.1 * drift["plain"]
    import pytest
    from rnnlab.training.config import resolve
    from rnnlab.errors import ConfigError
    with pytest.raises(ConfigError, match="update_bias: needs bias=True"):
        rnnlab.GRU(3, H, bias=False, update_bias=1.0)
    with pytest.raises(ConfigError, match="update_bias: an option of the GRU only"):
        resolve(None, {"model": "lstm", "update_bias": 1.0})
    cfg = resolve(None, {"model": "gru", "update_bias": 1.0, "task": "adding", "seq_len": 5})
    from rnnlab.tasks import build_task
    from rnnlab.training.trainer import model_config_for
    from rnnlab.model.sequence_model import SequenceModel
    m = SequenceModel(model_config_for(cfg, build_task(cfg)), seed=0)
    np.testing.assert_array_equal(m.rnn.state_dict()["bias_ih_l0"][m.rnn.hidden_size:2 * m.rnn.hidden_size], 1.0)


@COMMON
@given(kind=KINDS, T=st.integers(2, 12), B=st.integers(1, 4), segment=st.integers(1, 6), bidir=st.booleans(),
       L=st.integers(1, 2), ragged=st.booleans(), seed=st.integers(0, 10_000))
def test_memory_bounded_bptt_equals_full(kind, T, B, segment, bidir, L, ragged, seed):
    """bptt_segment keeps states at segment boundaries and recomputes: same outputs and gradients."""
    rng = np.random.default_rng(seed)
    full = CLS[kind[0]](3, 4, L, bidirectional=bidir, dtype="float64", seed=seed, backend="numpy", **kind[1])
    seg = CLS[kind[0]](3, 4, L, bidirectional=bidir, dtype="float64", seed=seed, bptt_segment=segment, **kind[1])
    x = rng.standard_normal((T, B, 3))
    lengths = rng.integers(1, T + 1, size=B) if ragged else None
    o1, _ = full(x, lengths=lengths)
    o2, _ = seg(x, lengths=lengths)
    np.testing.assert_array_equal(o1, o2)
    d = rng.standard_normal(o1.shape)
    dx1, _ = full.backward(d)
    dx2, _ = seg.backward(d)
    np.testing.assert_allclose(dx2, dx1, rtol=0, atol=1e-12)
    for k in full.grads:
        np.testing.assert_allclose(seg.grads[k], full.grads[k], rtol=0, atol=1e-12, err_msg=k)
