"""Exports that are the model: a data run's ONNX graph takes the raw features (the standardisation inside),
returns a regression in the data's units and names its classes in its metadata, so onnxruntime on raw data
equals ``rnnlab predict``; a stateful export run chunk by chunk equals one whole pass; batch-first input."""
import json

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from rnnlab.cli import main as cli  # noqa: E402
from rnnlab.training.config import TrainConfig  # noqa: E402
from rnnlab.interop.onnx import export_model  # noqa: E402
from rnnlab.data.sequences import from_arrays, pad  # noqa: E402
from rnnlab.tasks.supervised import predict_outputs, sequence_task  # noqa: E402
from rnnlab.training.trainer import train  # noqa: E402


def raw_cases(n=24, seed=0, lo=4, hi=9):
    """Sequences of two features far from standard scale (mean 50 and 0.01, spread 10 and 0.003)."""
    rng = np.random.default_rng(seed)
    return [np.column_stack([rng.normal(50, 10, T), rng.normal(0.01, 0.003, T)])
            for T in rng.integers(lo, hi, n)]


def fitted(problem, cell, cases, y):
    task = sequence_task("t", from_arrays(cases, y), None, problem)
    cfg = TrainConfig(task="data", model=cell, hidden_size=6, steps=4, batch_size=8, lr=0.01, quiet=True,
                      eval_every=0)
    return train(cfg, task=task).model, task.encoding


def session(model, encoding, tmp_path, **kw):
    path = tmp_path / "m.onnx"
    export_model(model, path, encoding=encoding, **kw)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), path


@pytest.mark.parametrize("problem, cell", [("classify", "gru"), ("regress", "lstm")])
def test_onnx_on_raw_features_equals_predict(problem, cell, tmp_path):
    cases = raw_cases()
    y = (np.where([c[:, 0].mean() > 50 for c in cases], "high", "low") if problem == "classify"
         else np.array([100 + 5 * c[:, 0].mean() for c in cases]))
    model, enc = fitted(problem, cell, cases, y)
    sess, path = session(model, enc, tmp_path, lengths=True)
    new = raw_cases(7, seed=3)
    x, lengths = pad(new)                                   # raw, (T, B, F): the graph standardises
    got = sess.run(["prediction"], {"inputs": x.astype(np.float32), "lengths": lengths.astype(np.int32)})[0]
    want = np.stack(predict_outputs(model, enc, from_arrays(new)))
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
    if problem == "regress":
        assert got.mean() > 50                              # the data's units, not standardised ones
    import onnx
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["rnnlab.problem"] == problem and json.loads(props["rnnlab.features"]) == enc.feature_names
    if problem == "classify":
        assert json.loads(props["rnnlab.classes"]) == ["high", "low"]


def test_stateful_export_chunk_by_chunk_equals_one_pass(tmp_path):
    cases = raw_cases(16, lo=12, hi=13)                     # equal lengths: a stream of 12 steps per row
    tags = [np.where(c[:, 0] > 50, "hi", "lo") for c in cases]
    model, enc = fitted("tag", "lstm", cases, tags)
    sess, _ = session(model, enc, tmp_path, state=True, batch_first=True)
    x = np.stack(cases[:5]).astype(np.float32)              # (B, T, F), batch first
    L = model.rnn.num_layers * model.rnn.num_directions
    zeros = np.zeros((L, 5, model.rnn.hidden_size), np.float32)
    whole = sess.run(["prediction"], {"inputs": x, "h0": zeros, "c0": zeros})[0]
    want = np.stack(predict_outputs(model, enc, from_arrays(cases[:5])))     # (B, T, K)
    np.testing.assert_allclose(whole, want, rtol=2e-4, atol=2e-4)
    h, c, parts, t0 = zeros, zeros, [], 0
    for n in (3, 5, 1, 3):                                  # ragged chunks, the state carried between calls
        p, h, c = sess.run(["prediction", "h_n", "c_n"], {"inputs": x[:, t0:t0 + n], "h0": h, "c0": c})
        parts.append(p)
        t0 += n
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, rtol=1e-5, atol=1e-6)


def test_export_cli_flags(tmp_path, capsys):
    from support import COLS, write_long
    write_long(tmp_path / "train.csv")
    assert cli.main(["train", "--data", str(tmp_path / "train.csv"), *COLS, "--model", "gru", "--hidden-size", "6",
                     "--steps", "5", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert cli.main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "m.onnx"), "--lengths", "--state"]) == 0
    out = capsys.readouterr().out
    assert "raw features in" in out and "h0" in out and "classes in metadata_props" in out
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["inputs", "lengths", "h0"]
    code = cli.main(["export", str(tmp_path / "run"), "--format", "torch", "--out", str(tmp_path / "w.safetensors"),
                     "--state"])
    err = capsys.readouterr().err
    assert code != 0 and "--state changes the ONNX graph" in err
