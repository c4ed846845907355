"""--track tensorboard,mlflow: the scalars of metrics.jsonl per step, the gradient-flow figures and the run's files,
read back from the event file and from the MLflow store; a resumed run continues its MLflow run; the refusals."""
import json
import os
import struct

import pytest

from rnnlab.cli import main as cli
from rnnlab.scale import tracking
from rnnlab.errors import ConfigError
from rnnlab.training.trainer import resume, train

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


# ---------------------------------------------------------------- mlflow_uri: refused in seconds, before the run folder
SHORT = {**BASE, "steps": 4, "eval_every": 2, "log_every": 2, "diagnose_every": 2, "checkpoint_every": 2}


@pytest.fixture(autouse=True)
def _mlflow_env():
    """rnnlab sets these in its process when unset; each test starts from (and leaves) the session's values."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_ALLOW_FILE_STORE", *tracking._HTTP_ENV)}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def dead_uri(monkeypatch):
    """http://127.0.0.1:PORT where nothing listens: the port stays bound (so nobody else takes it), never listened
    on. MLflow's own retries are cut so that a regression fails the test in seconds, not hangs it for minutes."""
    import socket
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def test_unreachable_server_is_refused_in_seconds_before_the_run_folder(tmp_path, dead_uri):
    import time
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as exc:
        tracking.require("mlflow", dead_uri)
    assert time.monotonic() - t0 < 10
    msg = str(exc.value)
    assert msg.startswith(f"mlflow_uri: no MLflow server answered at {dead_uri} within 5 s (connection refused)")
    assert "drop --track mlflow" in msg and "\n" not in msg
    tracking.require("tensorboard", dead_uri)                      # the URI matters only to mlflow
    with pytest.raises(ConfigError, match="within 1.5 s"):
        tracking.require("mlflow", dead_uri + "/", timeout=1.5)

    run = tmp_path / "run"
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="^mlflow_uri: no MLflow server answered"):
        train({**SHORT, "out": str(run), "track": "mlflow", "mlflow_uri": dead_uri})
    assert time.monotonic() - t0 < 10
    assert not run.exists()                                        # nothing to block the rerun


def test_unreachable_server_through_the_cli(tmp_path, dead_uri, capsys):
    run = tmp_path / "run"
    code = cli.main(["train", "--task", "adding", "--seq-len", "8", "--hidden-size", "4", "--steps", "2", "--quiet",
                     "--out", str(run), "--track", "mlflow", "--mlflow-uri", dead_uri])
    err = capsys.readouterr().err
    assert code == 2
    import re                                                      # the CLI may name the flag instead of the key
    assert re.match(r"rnnlab train: error: (mlflow_uri|--mlflow-uri): no MLflow server answered", err), err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert not run.exists()


def _read_back(store_uri, run):
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=store_uri)
    info = client.get_run((run / ".mlflow_run_id").read_text().strip())
    assert info.info.status == "FINISHED" and info.data.params["task"] == "adding"
    assert [m.step for m in client.get_metric_history(info.info.run_id, "val_loss")] == [2, 4]
    return client


def test_plain_path_and_file_uri_to_an_empty_folder_are_stores(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)   # as in a fresh process
    monkeypatch.chdir(tmp_path)
    train({**SHORT, "out": str(tmp_path / "a"), "track": "mlflow", "mlflow_uri": "store"})   # relative to the cwd
    _read_back((tmp_path / "store").as_uri(), tmp_path / "a")
    train({**SHORT, "out": str(tmp_path / "b"), "track": "mlflow", "mlflow_uri": str(tmp_path / "store")})
    client = _read_back((tmp_path / "store").as_uri(), tmp_path / "b")
    assert len(client.search_runs([client.get_experiment_by_name("rnnlab").experiment_id])) == 2   # one shared store

    empty = tmp_path / "empty"
    empty.mkdir()
    train({**SHORT, "out": str(tmp_path / "c"), "track": "mlflow", "mlflow_uri": empty.as_uri()})
    client = _read_back(empty.as_uri(), tmp_path / "c")
    assert client.get_experiment("0").name == "Default"            # a whole store: mlflow.start_run() works on it


def test_mlflow_client_gives_up_in_seconds(tmp_path, monkeypatch):
    """A server that dies mid-run: MLflow's ~4 minutes of retries are cut unless the user set their own."""
    import socket
    import time
    for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    train({**SHORT, "out": str(tmp_path / "a"), "track": "mlflow"})
    from mlflow.environment_variables import (MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT,
                                              MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR)
    assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 2 and MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get() == 1
    assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 7                  # the user's value wins
    from mlflow.tracking import MlflowClient
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        client = MlflowClient(tracking_uri=f"http://127.0.0.1:{s.getsockname()[1]}")
        t0 = time.monotonic()
        with pytest.raises(Exception):
            client.get_experiment_by_name("rnnlab")
        assert time.monotonic() - t0 < 20


def _has_sql_store():
    try:
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
        return True
    except ImportError:
        return False


def test_sqlite_uri_needs_the_full_mlflow(tmp_path):
    uri = (tmp_path / "m.db").as_uri().replace("file:", "sqlite:", 1)
    run = tmp_path / "run"
    if _has_sql_store():
        train({**SHORT, "out": str(run), "track": "mlflow", "mlflow_uri": uri})
        _read_back(uri, run)
        return
    with pytest.raises(ConfigError) as exc:
        train({**SHORT, "out": str(run), "track": "mlflow", "mlflow_uri": uri})
    assert str(exc.value) == (f"mlflow_uri: {uri!r} needs the full mlflow package (pip install mlflow); the installed "
                              f"mlflow-skinny serves http(s):// servers and file stores")
    assert not run.exists()
    with pytest.raises(ConfigError, match="needs the full mlflow package"):
        tracking.require("mlflow", "postgresql+psycopg2://u@localhost/db")


def test_a_file_or_an_unknown_scheme_is_refused(tmp_path):
    f = tmp_path / "m.db"
    f.write_text("")
    for uri in (str(f), f.as_uri(), str(f / "sub")):
        with pytest.raises(ConfigError, match="^mlflow_uri: expected a folder"):
            tracking.require("mlflow", uri)
    for uri in ("databricks", "databricks://profile", "s3://bucket/x"):
        with pytest.raises(ConfigError, match="^mlflow_uri: expected .* http\\(s\\)://HOST:PORT .* is not supported"):
            tracking.require("mlflow", uri)
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="^mlflow_uri: expected a folder"):
        train({**SHORT, "out": str(run), "track": "mlflow", "mlflow_uri": str(f)})
    assert not run.exists()
    assert not (tmp_path / "databricks").exists()


def test_a_server_that_answers_is_accepted(tmp_path):
    """A stand-in for ``mlflow server`` on loopback: its REST API answers; a wrong base path is named."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path.startswith("/api/2.0/mlflow/experiments/search")
            self.send_response(200 if ok else 404)
            self.end_headers()
            self.wfile.write(b'{"experiments": []}' if ok else b"")

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_port}"
        tracking.require("mlflow", uri)
        tracking.require("mlflow", uri + "/")
        with pytest.raises(ConfigError, match="^mlflow_uri: expected an MLflow server at .*/mlflow, got HTTP 404"):
            tracking.require("mlflow", uri + "/mlflow")
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- a tracker failing mid-run: one line, not a traceback
class _StubMlflow:
    """A stand-in MLflow tracking server on 127.0.0.1: it answers the REST calls rnnlab's client makes (experiment,
    run, log-batch, update, proxied artifact uploads) and records them; ``fail(path, body)`` -> True answers 500."""

    def __init__(self, fail=lambda path, body: False):
        import http.server
        import threading
        import uuid
        self.fail, self.calls, self.run_id = fail, [], uuid.uuid4().hex     # a new artifact URI per server
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                path = self.path.split("?")[0]
                stub.calls.append((self.command, path))
                info = {"run_id": stub.run_id, "run_uuid": stub.run_id, "experiment_id": "1", "status": "RUNNING",
                        "artifact_uri": f"mlflow-artifacts:/1/{stub.run_id}/artifacts", "lifecycle_stage": "active"}
                if stub.fail(path, body):
                    return self.send(500, {"error_code": "INTERNAL_ERROR", "message": "database is locked\nat line 2"})
                if path.endswith("/experiments/get-by-name"):
                    return self.send(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no experiment"})
                if path.endswith("/experiments/search"):
                    return self.send(200, {"experiments": []})
                if path.endswith("/experiments/create"):
                    return self.send(200, {"experiment_id": "1"})
                if path.endswith(("/runs/create", "/runs/get")):
                    return self.send(200, {"run": {"info": info, "data": {}}})
                if path.endswith("/runs/update"):
                    return self.send(200, {"run_info": info})
                return self.send(200, {})
            do_GET = do_POST = do_PUT = do_PATCH = answer

            def send(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub_mlflow(monkeypatch):
    """_StubMlflow(fail) servers, shut down after the test; MLflow's retries off so a 500 fails at once."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    servers = []

    def make(fail=lambda path, body: False):
        servers.append(_StubMlflow(fail))
        return servers[-1]
    yield make
    for s in servers:
        s.close()


def _cli_train(run, uri, *extra):
    return cli.main(["train", "--task", "adding", "--seq-len", "6", "--hidden-size", "4", "--steps", "4", "--quiet",
                     "--eval-every", "2", "--checkpoint-every", "2", "--out", str(run), "--track", "mlflow",
                     "--mlflow-uri", uri, *extra])


def _one_track_line(err, uri, doing, cause, run):
    import re
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert re.match(r"rnnlab train: error: (track|--track): MLflow at ", err), err   # the CLI may name the flag
    line = err.strip()
    assert f"MLflow at {uri} failed on {doing}" in line and f"({cause}" in line, line
    assert line.endswith(f"the run's own files are intact -- continue it with rnnlab resume {run}"), line


@pytest.mark.parametrize("fails,doing,cause", [
    (lambda p, b: p.endswith("/runs/log-batch"), "logging the parameters", "INTERNAL_ERROR: database is locked)"),
    (lambda p, b: p.endswith("/runs/log-batch") and b"metrics" in b, "logging the metrics of step 2",
     "INTERNAL_ERROR: database is locked)"),
    (lambda p, b: "/mlflow-artifacts/" in p, "uploading config.toml", "too many 500 error responses on /api/2.0/"),
    (lambda p, b: p.endswith("/runs/update"), "ending its run", "INTERNAL_ERROR: database is locked)"),
])
def test_a_server_failing_mid_run_gives_one_track_line(tmp_path, stub_mlflow, capsys, outcome, fails, doing, cause):
    """HTTP 500 from the tracking server on log-batch, on an artifact upload or on ending the run: rc 2 and one
    line naming the tracker, the URI, what it was doing and the cause; the run folder is left to resume."""
    server = stub_mlflow(fails)
    run = tmp_path / "run"
    code = _cli_train(run, server.uri)
    err = capsys.readouterr().err
    assert code == 2, err
    outcome("train --track mlflow: the server answers HTTP 500 mid-run", "one-line track: error, run folder kept")
    _one_track_line(err, server.uri, doing, cause, run)
    assert (run / "config.toml").is_file() and (run / "metrics.jsonl").is_file()
    server.fail, server.calls = (lambda path, body: False), []     # the server is back: the hint works
    assert cli.main(["resume", str(run), "--quiet"]) == 0, capsys.readouterr().err
    assert ("POST", "/api/2.0/mlflow/runs/update") in server.calls            # the MLflow run was ended


def test_tracking_failure_in_python_is_a_config_error(tmp_path, stub_mlflow, outcome):
    server = stub_mlflow(lambda p, b: p.endswith("/runs/create"))
    with pytest.raises(tracking.TrackingError) as exc:
        train({**SHORT, "out": str(tmp_path / "run"), "track": "mlflow", "mlflow_uri": server.uri})
    outcome("train(track='mlflow'): the server answers HTTP 500 on creating the run", "TrackingError, one line")
    assert isinstance(exc.value, ConfigError)
    msg = str(exc.value)
    assert msg.startswith(f"track: MLflow at {server.uri} failed on creating its run (INTERNAL_ERROR: database "
                          f"is locked); ") and "\n" not in msg
    assert not (tmp_path / "run" / ".mlflow_run_id").exists()       # a resume starts a whole MLflow run


def test_tensorboard_failure_is_one_track_line(tmp_path, monkeypatch, outcome):
    """An event file that cannot be written (tensorboardX raising OSError) is named the same way."""
    import tensorboardX

    def full(self, *a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(tensorboardX.SummaryWriter, "add_scalar", full)
    run = tmp_path / "run"
    with pytest.raises(tracking.TrackingError) as exc:
        train({**SHORT, "out": str(run), "track": "tensorboard"})
    outcome("train --track tensorboard: the event file cannot be written", "one-line track: error, run folder kept")
    assert str(exc.value).startswith(f"track: TensorBoard at {run / 'tensorboard'} failed on writing scalars "
                                     f"([Errno 28] No space left on device); the run's own files are intact")
    assert (run / "metrics.jsonl").is_file()
