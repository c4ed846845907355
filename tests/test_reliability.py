"""Fuzzing and fault injection: random and hostile input gets a documented error, never a crash or hang.

Each case is counted by category and outcome for docs/reliability.md (python docs/make_reliability.py).
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnlab
from rnnlab.model.checkpoint import load_checkpoint, save_checkpoint
from rnnlab.errors import CheckpointError, RnnlabError

DOCUMENTED = (ValueError, TypeError)           # rnnlab's own errors subclass these
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLS = {"rnn": rnnlab.RNN, "lstm": rnnlab.LSTM, "gru": rnnlab.GRU}


def _classify(fn):
    """Run fn; return 'ok', 'clear error' (documented type with an argument name) or re-raise."""
    try:
        fn()
        return "ok"
    except DOCUMENTED as exc:
        msg = str(exc)
        assert msg and "Traceback" not in msg
        assert ":" in msg, f"error without an argument name: {msg!r}"
        return "clear error"


FAULTS = ["none"] * 6 + ["rank 4", "rank 1", "wrong feature size", "integer dtype", "complex dtype", "empty batch",
                        "zero steps", "NaN in x", "Inf in h0", "h0 wrong batch", "h0 wrong layers", "h0 tuple of one",
                        "lengths 0", "lengths > T", "lengths wrong count", "float lengths"]


@FUZZ
@given(kind=st.sampled_from(list(CLS)), T=st.integers(1, 6), B=st.integers(1, 4), I=st.integers(1, 5),
       H=st.integers(1, 5), L=st.integers(1, 3), bidir=st.booleans(), batch_first=st.booleans(),
       dtype=st.sampled_from(["float32", "float64", "float16"]), unbatched=st.booleans(), use_state=st.booleans(),
       use_lengths=st.booleans(), fault=st.sampled_from(FAULTS), seed=st.integers(0, 100))
def test_fuzz_layer_forward_backward(outcome, kind, T, B, I, H, L, bidir, batch_first, dtype, unbatched, use_state,
                                     use_lengths, fault, seed):
    """Random valid calls with at most one injected fault: ok iff no fault, else a clear named error."""
    rng = np.random.default_rng(seed)
    layer = CLS[kind](I, H, L, bidirectional=bidir, batch_first=batch_first, dtype="float64", seed=seed)
    unbatched = unbatched and fault not in ("empty batch", "h0 wrong batch", "lengths wrong count", "float lengths",
                                            "lengths 0", "lengths > T")
    if fault == "empty batch":
        B = 0
    Tx = 0 if fault == "zero steps" else T
    Ix = I + 1 if fault == "wrong feature size" else I
    shape = (Tx, Ix) if unbatched else ((B, Tx, Ix) if batch_first else (Tx, B, Ix))
    shape = {"rank 4": (Tx, B, Ix, 1), "rank 1": (Tx,)}.get(fault, shape)     # rank 4 even when unbatched
    x = rng.standard_normal(shape).astype(dtype)
    if fault == "integer dtype":
        x = x.astype(np.int64)
    elif fault == "complex dtype":
        x = x + 0j
    elif fault == "NaN in x" and x.size:
        x.flat[rng.integers(x.size)] = np.nan
    LD = L * (2 if bidir else 1)
    hx = None
    if use_state or fault.startswith("h0") or fault == "Inf in h0":
        hs = (LD + (fault == "h0 wrong layers"), B + (fault == "h0 wrong batch"), H)
        h = rng.standard_normal(hs[:1] + hs[2:] if unbatched else hs)
        if fault == "Inf in h0":
            h.flat[0] = np.inf
        hx = (h, h.copy()) if kind == "lstm" else h
        if fault == "h0 tuple of one":
            hx = (h,)
    lengths = None
    if not unbatched and (use_lengths or fault.startswith("lengths") or fault == "float lengths"):
        lengths = rng.integers(1, T + 1, size=B)
        if fault == "lengths 0" and B:
            lengths[0] = 0
        elif fault == "lengths > T" and B:
            lengths[0] = T + 1
        elif fault == "lengths wrong count":
            lengths = np.append(lengths, 1)
        elif fault == "float lengths":
            lengths = lengths.astype(float)

    def run():
        out, _ = layer(x, hx, lengths)
        assert np.isfinite(out).all()
        dx, _ = layer.backward(np.ones_like(out))
        assert dx.shape == x.shape and np.isfinite(dx).all()

    res = _classify(run)
    if fault == "none":
        assert res == "ok"
        outcome("layer forward/backward: random valid calls (shapes, dtypes, states, lengths, options)", res)
    else:
        assert res == "clear error", fault
        outcome(f"layer forward/backward: {fault}", res)


CTOR_FAULTS = {"none": {}, "input_size 0": {"input_size": 0}, "input_size float": {"input_size": 2.5},
               "input_size None": {"input_size": None}, "input_size text": {"input_size": "4"},
               "hidden_size -1": {"hidden_size": -1}, "num_layers 0": {"num_layers": 0},
               "dropout 1.0": {"dropout": 1.0}, "dropout NaN": {"dropout": float("nan")}, "dropout -0.1": {"dropout": -0.1},
               "bias 'yes'": {"bias": "yes"}, "dtype int8": {"dtype": "int8"}, "dtype bogus": {"dtype": "bogus"},
               "reset 'middle'": {"reset": "middle"}, "recurrent_init typo": {"recurrent_init": "orthogonl"},
               "bptt_segment 0": {"bptt_segment": 0}}


@FUZZ
@given(fault=st.sampled_from(list(CTOR_FAULTS) + ["none"] * 4), I=st.integers(1, 5), H=st.integers(1, 5),
       L=st.integers(1, 3), dropout=st.floats(0, 0.9), bias=st.booleans(), dtype=st.sampled_from(["float32", "float64"]))
def test_fuzz_layer_constructor(outcome, fault, I, H, L, dropout, bias, dtype):
    args = dict(input_size=I, hidden_size=H, num_layers=L, dropout=dropout, bias=bias, dtype=dtype)
    args.update(CTOR_FAULTS[fault])
    res = _classify(lambda: rnnlab.GRU(**args))
    assert (res == "ok") == (fault == "none"), fault
    outcome("layer constructor: random valid options" if fault == "none" else f"layer constructor: {fault}", res)


@FUZZ
@given(data=st.binary(max_size=400))
def test_fuzz_checkpoint_reader_random_bytes(outcome, tmp_path_factory, data):
    p = tmp_path_factory.mktemp("ck") / "x.safetensors"
    p.write_bytes(data)
    with pytest.raises(CheckpointError):
        load_checkpoint(p)
    outcome("checkpoint reader: random bytes", "clear error")


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    p = tmp_path_factory.mktemp("good") / "c.safetensors"
    rng = np.random.default_rng(0)
    save_checkpoint(p, {"model/w": rng.standard_normal((4, 3)).astype(np.float32), "model/b": rng.standard_normal(3)},
                    {"step": 5, "config": {"task": "adding"}})
    return p.read_bytes()


def _decode(data, factory):
    p = factory.mktemp("ref") / "c.safetensors"
    p.write_bytes(data)
    return load_checkpoint(p)


@FUZZ
@given(pos=st.integers(0, 10_000), val=st.integers(0, 255), cut=st.one_of(st.none(), st.integers(0, 10_000)))
def test_fuzz_checkpoint_reader_mutated(outcome, tmp_path_factory, good_checkpoint, pos, val, cut):
    data = bytearray(good_checkpoint)
    pos %= len(data)
    changed = data[pos] != val
    data[pos] = val
    if cut is not None:
        data = data[:cut % len(data)]
    p = tmp_path_factory.mktemp("mut") / "c.safetensors"
    p.write_bytes(bytes(data))
    try:
        tensors, meta = load_checkpoint(p)
        res = "loaded, content verified unchanged"
        assert cut is None
        ref_tensors, ref_meta = _decode(good_checkpoint, tmp_path_factory)
        assert meta == ref_meta and set(tensors) == set(ref_tensors)
        assert all(tensors[k].tobytes() == ref_tensors[k].tobytes() for k in tensors)
    except CheckpointError as exc:
        assert str(p) in str(exc)
        res = "clear error"
    outcome("checkpoint reader: one byte changed and/or truncated", res)


@pytest.mark.parametrize("kind", ["loss", "optimizer", "model", "task", "config"])
def test_bad_values_at_other_boundaries(outcome, kind):
    from rnnlab.model import losses
    from rnnlab.training import optim
    from rnnlab.training.config import TrainConfig
    from rnnlab.model.sequence_model import ModelConfig, SequenceModel
    from rnnlab.tasks import Adding, CharLM, Copy
    cases = {
        "loss": [lambda: losses.mse(np.zeros((2, 2)), np.zeros((3, 2))),
                 lambda: losses.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3])),
                 lambda: losses.sigmoid_binary_cross_entropy(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(2))],
        "optimizer": [lambda: optim.make_optimizer("sgdd", {}, 0.1), lambda: optim.make_optimizer("adam", {}, 0.0),
                      lambda: optim.make_optimizer("adam", {}, float("nan")),
                      lambda: optim.make_optimizer("sgd", {}, 0.1, weight_decay=-1.0)],
        "model": [lambda: SequenceModel(ModelConfig(input_size=3, output_size=2, input_mode="onehot"))(np.array([[0, 3]])),
                  lambda: SequenceModel(ModelConfig(input_size=3, output_size=2))(np.zeros((2, 1, 3), int)),
                  lambda: SequenceModel(ModelConfig(input_size=3, output_size=2))(np.full((2, 1, 3), np.inf)),
                  lambda: ModelConfig(input_size=0, output_size=2).validate(),
                  lambda: ModelConfig.from_dict({"input_size": 1, "output_size": 1, "hiden": 3})],
        "task": [lambda: Adding(1), lambda: Copy(0), lambda: CharLM("", 10), lambda: CharLM("abc" * 100, 10).encode("xyz")],
        "config": [lambda: TrainConfig.from_dict({"lr": "fast"}), lambda: TrainConfig.from_dict({"stepz": 3}),
                   lambda: TrainConfig(dropout=1.0).validate(), lambda: TrainConfig(steps=0).validate(),
                   lambda: TrainConfig(task="addition").validate(), lambda: TrainConfig(bidirectional=1).validate()
                   if False else TrainConfig.from_dict({"bidirectional": 1})],
    }[kind]
    for case in cases:
        res = _classify(case)
        assert res == "clear error"
        outcome(f"{kind}: invalid arguments", res)


def test_nonfinite_weights_are_refused_on_load(outcome):
    from rnnlab.model.sequence_model import ModelConfig, SequenceModel
    m = SequenceModel(ModelConfig(input_size=2, output_size=2), seed=0)
    sd = m.state_dict()
    sd["head.weight"][0, 0] = np.nan
    with pytest.raises(ValueError, match="head.weight: contains NaN or Inf"):
        m.load_state_dict(sd)
    outcome("model: NaN/Inf in loaded weights", "clear error")


def test_exploding_gradient_warning(outcome):
    from rnnlab.training.trainer import Trainer
    from rnnlab.training.config import TrainConfig
    tr = Trainer(TrainConfig(task="adding", seq_len=5, steps=2, hidden_size=3))
    for n in [1.0] * 10 + [1e5]:
        tr._watch_explosion(n)
    assert tr.result.warnings and "--clip" in tr.result.warnings[0]
    outcome("training: gradient norm jumps by 1e5 (exploding)", "warning naming --clip")


_SAVER = r"""
import sys, numpy as np
from rnnlab.model.checkpoint import save_checkpoint
path = sys.argv[1]
rng = np.random.default_rng(0)
w = rng.standard_normal((512, 1024)).astype(np.float32)   # 2 MiB per save
i = 0
while True:
    i += 1
    save_checkpoint(path, {"w": w + i}, {"i": i})
    print(i, flush=True)
"""


@pytest.mark.slow
def test_sigkill_during_saves_never_leaves_a_torn_checkpoint(outcome, tmp_path):
    path = tmp_path / "c.safetensors"
    rng = np.random.default_rng(1)
    w0 = np.random.default_rng(0).standard_normal((512, 1024)).astype(np.float32)   # the saver's w
    for trial in range(8):
        p = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE, text=True)
        p.stdout.readline()                                    # at least one save finished
        time.sleep(float(rng.uniform(0, 0.05)))                # then kill at a random moment
        p.send_signal(signal.SIGKILL)
        p.wait()
        tensors, meta = load_checkpoint(path)                  # always the old or the new file, never torn
        assert meta["i"] >= 1 and np.array_equal(tensors["w"], w0 + meta["i"])   # tensors and metadata of one save
        leftovers = [f for f in os.listdir(tmp_path) if f != "c.safetensors"]
        for f in leftovers:                                    # a killed save may leave its temporary file
            assert f.startswith(".c.safetensors.") and f.endswith(".tmp")
            os.unlink(tmp_path / f)
        outcome("checkpoint: SIGKILL at a random moment during repeated saves", "previous or new checkpoint loads")


def test_errors_are_rnnlab_subclasses():
    assert issubclass(rnnlab.ShapeError, ValueError) and issubclass(rnnlab.DTypeError, TypeError)
    assert issubclass(CheckpointError, RnnlabError)
