"""--track tensorboard,mlflow: the scalars of metrics.jsonl per step, the gradient-flow figures and the run's files,
read back from the event file and from the MLflow store; a resumed run continues its MLflow run; the refusals."""
import json
import struct

import pytest

from rnnlab import cli, tracking
from rnnlab.errors import ConfigError
from rnnlab.trainer import resume, train

pytest.importorskip("tensorboardX")
pytest.importorskip("mlflow")

BASE = {"task": "adding", "seq_len": 8, "hidden_size": 6, "steps": 20, "eval_every": 10, "log_every": 5,
        "diagnose_every": 10, "checkpoint_every": 10, "quiet": True}


def _events(folder):
    """(tag, step, kind) of every summary value in a TensorBoard event file (TFRecord framing)."""
    from tensorboardX.proto import event_pb2
    out = []
    for f in sorted(folder.glob("events.out.tfevents.*")):
        data = f.read_bytes()
        o = 0
        while o < len(data):
            (n,) = struct.unpack("<Q", data[o:o + 8])
            ev = event_pb2.Event.FromString(data[o + 12:o + 12 + n])
            o += 12 + n + 4
            for v in ev.summary.value:
                out.append((v.tag, ev.step, v.WhichOneof("value")))
    return out


def test_tensorboard_and_mlflow_get_what_metrics_jsonl_has(tmp_path):
    run = tmp_path / "run"
    train({**BASE, "out": str(run), "track": "tensorboard,mlflow"})
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    events = _events(run / "tensorboard")
    got = {(tag, step) for tag, step, kind in events if kind == "simple_value"}
    for r in records:
        for k in ("loss", "mse"):
            assert (f"{r['split']}/{k}", r["step"]) in got
    assert {step for tag, step, kind in events if tag == "gradient_flow" and kind == "image"} == {1, 10, 20}

    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    run_id = (run / ".mlflow_run_id").read_text().strip()
    info = client.get_run(run_id)
    assert info.data.params["lr"] == "0.001" and info.data.params["task"] == "adding"
    val = [(m.step, m.value) for m in client.get_metric_history(run_id, "val_loss")]
    assert val == [(r["step"], pytest.approx(r["loss"])) for r in records if r["split"] == "val"]
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"metrics.jsonl", "config.toml", "model.safetensors", "gradient_flow"} <= names
    assert info.info.status == "FINISHED"

    r = resume(run, steps=30)                                      # continues the same MLflow run
    assert r.steps_run == 10
    steps = [m.step for m in client.get_metric_history(run_id, "val_loss")]
    assert steps == [10, 20, 30]


def test_tracking_refusals(tmp_path, monkeypatch, capsys):
    with pytest.raises(ConfigError, match="track: expected a comma-separated list .* got 'tensorbord' \\(did you mean"):
        train({**BASE, "out": str(tmp_path / "a"), "track": "tensorbord"})
    with pytest.raises(ConfigError, match="tracking writes beside a run folder; give --out DIR"):
        train({**BASE, "track": "mlflow"})
    import importlib
    real = importlib.import_module

    def missing(name, *a, **k):
        if name == "tensorboardX":
            raise ImportError(name)
        return real(name, *a, **k)
    monkeypatch.setattr(importlib, "import_module", missing)
    code = cli.main(["train", "--task", "adding", "--steps", "2", "--out", str(tmp_path / "b"), "--track",
                     "tensorboard", "--quiet"])
    assert code == 2
    assert "pip install 'rnnlab[track]'" in capsys.readouterr().err
    assert not (tmp_path / "b" / "config.toml").exists()           # refused before the run folder was made
    assert tracking.parse(" mlflow, tensorboard ") == ["mlflow", "tensorboard"]
