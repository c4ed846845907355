"""The sequence model (input -> stack -> output layer -> loss): every gradient by finite differences."""
import numpy as np
import pytest

from rnnlab.engine.gradcheck import numerical_gradient, relative_error
from rnnlab.model.sequence_model import ModelConfig, SequenceModel

CASES = [
    dict(cell="lstm", input_mode="dense", prediction="identity", target="last"),
    dict(cell="gru", input_mode="onehot", prediction="softmax", target="every"),
    dict(cell="rnn", input_mode="embedding", prediction="softmax", target="every", num_layers=2),
    dict(cell="lstm", input_mode="dense", prediction="sigmoid", target="every", bidirectional=True),
    dict(cell="gru", input_mode="dense", prediction="softmax", target="last", bidirectional=True, num_layers=2),
]


def _batch(cfg, rng, T=5, B=3):
    if cfg.input_mode == "dense":
        x = rng.standard_normal((T, B, cfg.input_size))
    else:
        x = rng.integers(0, cfg.input_size, (T, B))
    lead = (B,) if cfg.target == "last" else (T, B)
    if cfg.prediction == "softmax":
        y = rng.integers(0, cfg.output_size, lead)
    elif cfg.prediction == "sigmoid":
        y = rng.integers(0, 2, lead + (cfg.output_size,)).astype(float)
    else:
        y = rng.standard_normal(lead + (cfg.output_size,))
    return x, y


@pytest.mark.parametrize("opts", CASES, ids=[f"{c['cell']}-{c['input_mode']}-{c['prediction']}-{c['target']}" for c in CASES])
@pytest.mark.parametrize("ragged", [False, True])
def test_model_gradients(opts, ragged):
    rng = np.random.default_rng(0)
    cfg = ModelConfig(input_size=4, output_size=3, hidden_size=5, dtype="float64", embedding_dim=2, **opts)
    model = SequenceModel(cfg, seed=1)
    x, y = _batch(cfg, rng)
    lengths = np.array([5, 2, 4]) if ragged else None

    def loss():
        logits, _ = model(x, lengths)
        return model.loss(logits, y, lengths)[0]

    model.zero_grad()
    logits, _ = model(x, lengths)
    _, d = model.loss(logits, y, lengths)
    model.backward(d)
    grads = {k: v.copy() for k, v in model.grads.items()}
    for name, p in model.named_parameters().items():
        num = numerical_gradient(loss, p)
        assert relative_error(grads[name], num) < 1e-6, name


def test_head_is_the_seeds_output_layer():
    """o_t = V h_t + c at every step: check against the recurrent stack's output directly."""
    cfg = ModelConfig(input_size=3, output_size=2, hidden_size=4, dtype="float64")
    model = SequenceModel(cfg, seed=0)
    x = np.random.default_rng(0).standard_normal((6, 2, 3))
    logits, _ = model(x)
    h, _ = model.rnn(x)
    p = model.named_parameters()
    np.testing.assert_allclose(logits, h @ p["head.weight"].T + p["head.bias"], atol=1e-14)
    probs, _ = model.predict(x)
    np.testing.assert_allclose(probs.sum(-1), 1.0)


def test_predict_is_inference_whatever_the_grad_mode():
    """A prediction keeps no caches for a backward (as under no_grad), and equals the forward's softmax."""
    model = SequenceModel(ModelConfig(input_size=3, output_size=2, hidden_size=4, dtype="float64"), seed=0)
    x = np.random.default_rng(1).standard_normal((6, 2, 3))
    logits, _ = model(x)
    probs, _ = model.predict(x)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(-1, keepdims=True), atol=1e-12)
    with pytest.raises(RuntimeError, match="call forward first"):
        model.backward(np.ones_like(logits))


def test_model_state_dict_round_trip():
    cfg = ModelConfig(input_size=5, output_size=3, cell="gru", input_mode="embedding", hidden_size=4)
    a, b = SequenceModel(cfg, seed=0), SequenceModel(cfg, seed=1)
    b.load_state_dict(a.state_dict())
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
    sd = a.state_dict()
    sd["head.weight"] = np.zeros((9, 9))
    with pytest.raises(ValueError, match=r"head.weight: expected shape \(3, 4\), got \(9, 9\)"):
        b.load_state_dict(sd)


def test_model_input_errors():
    model = SequenceModel(ModelConfig(input_size=5, output_size=3, input_mode="onehot"), seed=0)
    with pytest.raises(ValueError, match=r"inputs: expected tokens in \[0, 4\]"):
        model(np.array([[0, 5]]))
    with pytest.raises(TypeError, match="inputs: expected integer tokens"):
        model(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="cell: expected one of.*'lstn'.*did you mean 'lstm'"):
        ModelConfig(input_size=1, output_size=1, cell="lstn").validate()


def test_a_model_on_the_units_backend_predicts(monkeypatch):
    """set_backend('units') on a model's layer: predictions (inference) run on it and equal the loop's; a forward
    for training is refused with the backend's own error (the model's BLAS scope asked for a training call)."""
    pytest.importorskip("numba")
    from rnnlab.errors import BackendError
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "2")
    model = SequenceModel(ModelConfig(input_size=3, output_size=2, hidden_size=64, target="every",
                                      dtype="float64"), seed=0)
    x = np.random.default_rng(4).standard_normal((9, 1, 3))
    want, _ = model.predict(x)
    model.rnn.set_backend("units")
    got, _ = model.predict(x)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    with pytest.raises(BackendError, match="'units' runs inference only"):
        model(x)
