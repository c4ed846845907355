"""Parity with torch.nn.RNN/LSTM/GRU on copied weights: outputs, final states and every gradient. The NumPy
reference over the full grid of options (layers, directions, batch_first, ragged lengths, a given initial state)
in float64 and a float32 sample; the compiled strategies on a sample with every option on, in the host's vector
width (each strategy and width equals the reference to 1e-12 in float64: kernels/test_backends.py)."""
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import rnnlab  # noqa: E402
from support import REFERENCE, STRATEGIES, TORCH_CELL_IDS, TORCH_CELLS, torch_run, torch_twin, use_backend  # noqa: E402

GRID = list(itertools.product([1, 2, 3], [False, True], [False, True], [False, True], [False, True]))


def _case(cls, kw, num_layers, bidirectional, batch_first, ragged, user_state, dtype, seed, backend="numpy"):
    rng = np.random.default_rng(seed)
    T, B, I, H = 6, 3, 4, 5
    layer = cls(I, H, num_layers, batch_first=batch_first, bidirectional=bidirectional, dtype=dtype, seed=seed,
                backend=backend, **kw)
    # non-zero biases everywhere (numpy-ml's bug hid behind zero biases)
    layer.load_state_dict({k: v + rng.uniform(-0.3, 0.3, v.shape) if k.startswith("bias") else v
                           for k, v in layer.state_dict().items()})
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(dtype)
    lengths = np.array([T, 2, 4]) if ragged else None
    LD = num_layers * (2 if bidirectional else 1)
    n_state = 2 if cls is rnnlab.LSTM else 1
    hx = tuple(rng.standard_normal((LD, B, H)).astype(dtype) for _ in range(n_state)) if user_state else None
    out_shape = (B, T, LD // num_layers * H) if batch_first else (T, B, LD // num_layers * H)
    d_out = rng.standard_normal(out_shape).astype(dtype)
    if ragged:  # torch's padded outputs are constants, so their gradient never counts: zero them for torch
        valid = (np.arange(T)[:, None] < lengths[None, :])
        valid = valid.T if batch_first else valid
        d_out_torch = d_out * valid[..., None]
    else:
        d_out_torch = d_out
    d_hn = tuple(rng.standard_normal((LD, B, H)).astype(dtype) for _ in range(n_state))
    hx_arg = None if hx is None else (hx if n_state == 2 else hx[0])
    out, hn = layer(x, hx_arg, lengths)
    dx, dhx = layer.backward(d_out, d_hn if n_state == 2 else d_hn[0])
    ref = torch_run(torch_twin(layer), x, hx_arg, lengths, d_out_torch, d_hn)
    hn, dhx = (hn, dhx) if n_state == 2 else ((hn,), (dhx,))
    got = {"output": out, "dx": dx, **{f"hn{i}": h for i, h in enumerate(hn)}, **layer.grads}
    want = {"output": ref["output"], "dx": ref["dx"], **{f"hn{i}": h for i, h in enumerate(ref["hn"])}, **ref["grads"]}
    if user_state:
        got.update({f"dhx{i}": h for i, h in enumerate(dhx)})
        want.update({f"dhx{i}": h for i, h in enumerate(ref["dhx"])})
    return got, want


@pytest.mark.parametrize("cls,kw", TORCH_CELLS, ids=TORCH_CELL_IDS)
@pytest.mark.parametrize("num_layers,bidirectional,batch_first,ragged,user_state", GRID)
def test_reference_equals_torch_float64(cls, kw, num_layers, bidirectional, batch_first, ragged, user_state):
    got, want = _case(cls, kw, num_layers, bidirectional, batch_first, ragged, user_state, np.float64, 7, REFERENCE)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-10, err_msg=k)


@pytest.mark.parametrize("cls,kw", TORCH_CELLS, ids=TORCH_CELL_IDS)
@pytest.mark.parametrize("num_layers,bidirectional,ragged", [(1, False, False), (2, True, True), (3, True, False)])
def test_reference_equals_torch_float32(cls, kw, num_layers, bidirectional, ragged):
    got, want = _case(cls, kw, num_layers, bidirectional, False, ragged, True, np.float32, 3, REFERENCE)
    for k in want:
        scale = max(np.abs(want[k]).max(), 1e-3)
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-5 * scale, err_msg=k)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("cls,kw", TORCH_CELLS, ids=TORCH_CELL_IDS)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_compiled_equals_torch(cls, kw, strategy, dtype, tol, monkeypatch):
    """Every compiled strategy with every option on: 2 layers, both directions, batch_first, ragged lengths, a
    given initial state."""
    got, want = _case(cls, kw, 2, True, True, True, True, dtype, 7, use_backend(strategy, monkeypatch))
    assert set(got) == set(want)
    for k in want:
        scale = max(1.0, float(np.abs(want[k]).max())) if dtype == np.float32 else 1.0
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=tol * scale, err_msg=k)


@pytest.mark.parametrize("cls", [rnnlab.RNN, rnnlab.LSTM, rnnlab.GRU])
def test_torch_state_dict_loads_as_is(cls):
    mod = {rnnlab.RNN: torch.nn.RNN, rnnlab.LSTM: torch.nn.LSTM, rnnlab.GRU: torch.nn.GRU}[cls](
        4, 5, num_layers=2, bidirectional=True, dtype=torch.float64)
    layer = cls(4, 5, 2, bidirectional=True, dtype="float64")
    layer.load_state_dict({k: v.numpy() for k, v in mod.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((7, 2, 4))
    out, _ = layer(x)
    ref, _ = mod(torch.from_numpy(x))
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=0, atol=1e-12)


def test_unbatched_input_matches_torch():
    layer = rnnlab.GRU(4, 5, 2, dtype="float64", seed=1)
    x = np.random.default_rng(0).standard_normal((6, 4))
    out, hn = layer(x)
    ref = torch_run(torch_twin(layer), x)
    assert out.shape == (6, 5) and hn.shape == (2, 5)
    np.testing.assert_allclose(out, ref["output"], atol=1e-12)
    np.testing.assert_allclose(hn, ref["hn"][0], atol=1e-12)
