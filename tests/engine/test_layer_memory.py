"""Layer and model sizes are checked against the memory before any weight is made, and weights are drawn in the
layer's own dtype without a float64 copy of a whole weight, with the values of the one float64 draw as before.

No test allocates much: the memory available is shrunk (``rnnlab.engine._checks.available_memory``) so that sizes of a
few hundred MiB are over it, and absurd sizes (10**30) must be refused by arithmetic alone.
"""
import time
import tracemalloc

import numpy as np
import pytest

import rnnlab
from rnnlab.engine import _checks
from rnnlab.errors import ConfigError
from rnnlab.engine.layers import LAYERS
from rnnlab.model.sequence_model import ModelConfig, SequenceModel

MiB = 2**20
AVAILABLE = 64 * MiB        # shrunk: a layer may use up to half, 32 MiB of weights and gradients

# (input_size, hidden_size) per layer kind that needs about 70 to 200 MiB of float32 weights and gradients
# (the minimal cells and the IndRNN grow as H * I, the others as H * H)
OVER = {"rnn": (3, 4096), "lstm": (3, 2048), "gru": (3, 2048), "mingru": (3, 2**21), "minlstm": (3, 2**21),
        "indrnn": (3, 2**21), "lru": (3, 2048)}


@pytest.fixture
def small_memory(monkeypatch):
    monkeypatch.setattr(_checks, "available_memory", lambda: AVAILABLE)


def refused(build, arg):
    """build() raises a ConfigError whose message starts with ``arg``, in under a second; -> the message."""
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"^{arg}: ") as info:
        build()
    assert time.perf_counter() - start < 1.0
    return str(info.value)


def test_every_layer_kind_is_covered():
    assert set(OVER) == set(LAYERS)


@pytest.mark.parametrize("cell", sorted(LAYERS))
def test_hidden_size_over_the_memory_is_refused(cell, small_memory, outcome):
    I, H = OVER[cell]
    msg = refused(lambda: LAYERS[cell](I, H), "hidden_size")
    assert f"{LAYERS[cell].__name__}({I}, {H})" in msg and "float32" in msg
    assert "over half of the 64.0 MiB of memory available" in msg and "use a smaller hidden_size" in msg
    outcome("layer constructor: a size over the memory", "clear error")


@pytest.mark.parametrize("cell", sorted(LAYERS))
@pytest.mark.parametrize("unknown_memory", [False, True])
def test_absurd_hidden_size_is_refused_without_overflow(cell, unknown_memory, monkeypatch, outcome):
    # refused whatever memory the system reports, or where it reports none
    monkeypatch.setattr(_checks, "available_memory", lambda: None if unknown_memory else 2**40)
    msg = refused(lambda: LAYERS[cell](3, 10**30), "hidden_size")
    assert "more than one process can address" in msg and "~10**30" in msg
    outcome("layer constructor: a size over the memory", "clear error")


@pytest.mark.parametrize("kwargs,arg", [
    (dict(input_size=10**7, hidden_size=3), "input_size"),
    (dict(input_size=3, hidden_size=16, num_layers=10**4), "num_layers"),
    (dict(input_size=3, hidden_size=1024, num_layers=4, bidirectional=True), "hidden_size"),
])
def test_the_argument_that_drives_the_size_is_named(kwargs, arg, small_memory, outcome):
    msg = refused(lambda: rnnlab.LSTM(**kwargs), arg)
    if kwargs.get("bidirectional"):
        assert "num_layers" in msg and "bidirectional=False" in msg and "proj_size" in msg
    outcome("layer constructor: a size over the memory", "clear error")


def test_float64_counts_twice_the_bytes(small_memory, outcome):
    rnnlab.LSTM(3, 768)                     # 2.4M parameters: 19 MB in float32 with gradients, fits in 32 MiB
    refused(lambda: rnnlab.LSTM(3, 768, dtype="float64"), "hidden_size")          # 38 MB
    outcome("layer constructor: a size over the memory", "clear error")


@pytest.mark.parametrize("cell", sorted(LAYERS))
def test_a_layer_that_fits_is_built(cell, small_memory):
    layer = LAYERS[cell](3, 64, 2, bidirectional=True)
    assert layer.num_parameters() > 0


@pytest.mark.parametrize("kwargs,arg", [
    (dict(input_size=10**6, input_mode="embedding", embedding_dim=32, hidden_size=8), "input_size"),
    (dict(input_size=50, input_mode="embedding", embedding_dim=10**6, hidden_size=8), "embedding_dim"),
    (dict(input_size=4, hidden_size=8, output_size=10**7), "output_size"),
    (dict(input_size=4, hidden_size=4096), "hidden_size"),                 # the layer's own check
    (dict(input_size=10**30, input_mode="embedding", hidden_size=8), "input_size"),
])
def test_model_sizes_over_the_memory_are_refused(kwargs, arg, small_memory, outcome):
    cfg = ModelConfig(**{"output_size": 3, **kwargs})
    refused(lambda: SequenceModel(cfg, seed=0), arg)
    outcome("model constructor: a size over the memory", "clear error")


# ---------------------------------------------------------------- no float64 copy of a whole weight
def construction_peak(build):
    """(the object, the peak bytes NumPy and Python allocated while building it)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        obj = build()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return obj, peak


@pytest.mark.parametrize("cell,I,H", [("lstm", 64, 1024), ("rnn", 64, 2048), ("gru", 64, 1024),
                                      ("mingru", 1024, 2048), ("minlstm", 1024, 2048), ("indrnn", 1024, 4096),
                                      ("lru", 64, 2048)])
def test_float32_init_makes_no_float64_copy_of_a_weight(cell, I, H):
    layer, peak = construction_peak(lambda: LAYERS[cell](I, H, dtype="float32", seed=0))
    kept = 2 * 4 * layer.num_parameters()                                  # float32 weights and gradients
    largest64 = 8 * max(v.size for v in layer.parameters())
    # a float64 draw of the largest weight alone would be 4x this slack (the old init drew it whole, then cast)
    assert peak < kept + largest64 / 4, (peak, kept, largest64)


def test_model_embedding_makes_no_float64_copy():
    cfg = ModelConfig(input_size=50_000, output_size=3, input_mode="embedding", embedding_dim=64, hidden_size=8)
    model, peak = construction_peak(lambda: SequenceModel(cfg, seed=0))
    kept = 2 * 4 * model.num_parameters()
    assert peak < kept + 8 * 50_000 * 64 / 4, (peak, kept)


# ---------------------------------------------------------------- the values are those of before
def uniform_reference(layer, seed):
    """The documented init: every parameter U(-1/sqrt(H), 1/sqrt(H)), drawn whole in float64 in the order of
    the state dict (torch's), from default_rng(seed)."""
    rng, k = np.random.default_rng(seed), 1.0 / np.sqrt(layer.hidden_size)
    return {n: rng.uniform(-k, k, size=v.shape) for n, v in layer.named_parameters()}


def indrnn_reference(layer, seed):
    """The IndRNN's init (rnnlab.engine.cells.indrnn): per direction W_ih, u and b_ih U(-1/sqrt(I), 1/sqrt(I)) in the
    order of param_shapes, then u redrawn U(0, 1)."""
    rng, H, ref = np.random.default_rng(seed), layer.hidden_size, {}
    for n in [n for n, _ in layer.named_parameters() if n.startswith("weight_ih")]:
        s = n[len("weight_ih"):]
        I = layer.input_size if s.startswith("_l0") else H * layer.num_directions
        k = 1.0 / np.sqrt(I)
        ref["weight_ih" + s] = rng.uniform(-k, k, (H, I))
        rng.uniform(-k, k, (H,))                                           # the first u, replaced below
        ref["bias_ih" + s] = rng.uniform(-k, k, (H,))
        ref["weight_hh" + s] = rng.uniform(0.0, 1.0, H)
    return ref


def lru_reference(layer, seed):
    """The LRU's documented init (rnnlab.engine.cells.lru), drawn whole in float64."""
    rng, H, ref = np.random.default_rng(seed), layer.hidden_size, {}
    for n in [n for n, _ in layer.named_parameters() if n.startswith("nu_log")]:
        s = n[len("nu_log"):]
        I = layer.input_size if s.startswith("_l0") else H * layer.num_directions
        u1, u2 = rng.uniform(size=H), rng.uniform(size=H)
        nu_log = np.log(-0.5 * np.log(u1 * (0.999 ** 2 - 0.9 ** 2) + 0.9 ** 2))
        mod = np.exp(-np.exp(nu_log))
        k = 1.0 / np.sqrt(I)
        ref.update({"nu_log" + s: nu_log, "theta_log" + s: np.log(2 * np.pi * u2 + 1e-12),
                    "gamma_log" + s: np.log(np.sqrt(1 - mod ** 2))})
        for m, shape, scale in (("B_re", (H, I), np.sqrt(2 * I)), ("B_im", (H, I), np.sqrt(2 * I)),
                                ("C_re", (H, H), np.sqrt(H)), ("C_im", (H, H), np.sqrt(H))):
            ref[m + s] = rng.standard_normal(shape) / scale
        ref["D" + s] = rng.uniform(-k, k, (H, I))
    return ref


REFERENCE = {"rnn": uniform_reference, "lstm": uniform_reference, "gru": uniform_reference,
             "mingru": uniform_reference, "minlstm": uniform_reference, "indrnn": indrnn_reference,
             "lru": lru_reference}


@pytest.mark.parametrize("cell", sorted(LAYERS))
@pytest.mark.parametrize("I,H,L,bi", [(5, 7, 2, True), (600, 600, 1, False)])     # the second: several blocks
def test_float64_init_is_the_one_whole_draw(cell, I, H, L, bi):
    layer = LAYERS[cell](I, H, L, bidirectional=bi, dtype="float64", seed=11)
    want = REFERENCE[cell](layer, 11)
    got = dict(layer.named_parameters())
    assert set(got) == set(want)
    for n, v in got.items():
        assert v.dtype == np.float64
        np.testing.assert_array_equal(v, want[n], err_msg=n)


@pytest.mark.parametrize("cell", sorted(LAYERS))
def test_float32_init_is_the_float64_init_cast(cell):
    kw = dict(bidirectional=True, seed=5)
    w32 = LAYERS[cell](600, 600, 2, dtype="float32", **kw).state_dict()
    w64 = LAYERS[cell](600, 600, 2, dtype="float64", **kw).state_dict()
    for n in w64:
        assert w32[n].dtype == np.float32
        np.testing.assert_array_equal(w32[n], w64[n].astype(np.float32), err_msg=n)


@pytest.mark.parametrize("proj_size", [0, 3])
def test_orthogonal_init_is_unchanged(proj_size):
    layer = rnnlab.LSTM(4, 9, proj_size=proj_size, recurrent_init="orthogonal", dtype="float64", seed=2)
    rng, k = np.random.default_rng(2), 1.0 / np.sqrt(9)
    P = proj_size or 9
    rng.uniform(-k, k, (36, 4))                                            # weight_ih_l0, drawn first
    blocks = []
    for _ in range(4):
        q, r = np.linalg.qr(rng.standard_normal((9, P)))
        blocks.append(q * np.sign(np.diag(r)))
    np.testing.assert_array_equal(layer.state_dict()["weight_hh_l0"], np.concatenate(blocks))
    w32 = rnnlab.LSTM(4, 9, proj_size=proj_size, recurrent_init="orthogonal", dtype="float32", seed=2).state_dict()
    for n, v in layer.state_dict().items():
        np.testing.assert_array_equal(w32[n], v.astype(np.float32), err_msg=n)


@pytest.mark.parametrize("mode", ["dense", "embedding"])
def test_model_init_is_unchanged(mode):
    cfg = dict(input_size=300, output_size=5, cell="gru", hidden_size=9, input_mode=mode, embedding_dim=1000)
    model = SequenceModel(ModelConfig(**cfg, dtype="float64"), seed=3)
    rng, k = np.random.default_rng(3), 1.0 / np.sqrt(9)                  # the layer draws first, then the model
    for n, v in model.rnn.named_parameters():
        np.testing.assert_array_equal(v, rng.uniform(-k, k, v.shape), err_msg=n)
    sd = model.state_dict()
    if mode == "embedding":
        np.testing.assert_array_equal(sd["embedding.weight"], rng.standard_normal((300, 1000)))
    np.testing.assert_array_equal(sd["head.weight"], rng.uniform(-k, k, (5, 9)))
    np.testing.assert_array_equal(sd["head.bias"], rng.uniform(-k, k, (5,)))
    sd32 = SequenceModel(ModelConfig(**cfg, dtype="float32"), seed=3).state_dict()
    for n, v in sd.items():
        np.testing.assert_array_equal(sd32[n], v.astype(np.float32), err_msg=n)
