"""Metrics where people look at them: TensorBoard event files and MLflow tracking, on request.

``rnnlab train --track tensorboard,mlflow`` (TOML ``track = "tensorboard,mlflow"``) sends what the run writes
to metrics.jsonl and diagnostics.jsonl -- the plain files stay the source of truth -- to

    tensorboard   event files in RUN/tensorboard (tensorboardX): every scalar per step as ``train/loss``,
                  ``val/bpc`` ...; the gradient-flow curve ||dL/dh_t|| as a figure per diagnostics record
                  (``tensorboard --logdir RUN/tensorboard``)
    mlflow        one MLflow run per rnnlab run: the config as parameters, the scalars per step, the figures
                  and the run's files as artifacts at the end. ``mlflow_experiment`` groups runs (a sweep's
                  trials). ``mlflow_uri`` says where they go:

        ""                      (default) a file store in RUN/mlruns (``mlflow ui --backend-store-uri RUN/mlruns``)
        PATH, file:///PATH      a file store in that folder (made if missing; shareable between runs); a
                                relative PATH is taken from the working directory. MLflow 3 keeps file stores
                                behind MLFLOW_ALLOW_FILE_STORE; rnnlab sets it to true when unset.
        http(s)://HOST:PORT     an MLflow tracking server (``mlflow server``); it must answer within
                                ``timeout`` seconds before the run folder is made
        sqlite:, postgresql:, mysql:, mssql:
                                a database store -- only with the full ``mlflow`` package (``pip install
                                mlflow``); the ``mlflow-skinny`` of the track extra has no SQL store

    Anything else (databricks:, a file in place of a folder, a server that does not answer) is refused
    with a ConfigError before the run folder is made. So that a server dying mid-run fails the run in
    seconds rather than minutes, rnnlab lowers MLflow's HTTP retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES=2,
    MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1, MLFLOW_HTTP_REQUEST_TIMEOUT=10 s) in its process unless the user
    set them.

A tracker that fails once the run has started (an MLflow server answering HTTP 500, a store or an event file
that cannot be written) stops the run with a ``TrackingError``: one line, ``track: <tracker> at <where> failed
on <what> (<the cause's first line>); ...``, naming ``rnnlab resume RUN`` -- the run folder's own files
(config.toml, metrics.jsonl, the checkpoints) are written before the tracker is called, so they are intact.

Extras: ``pip install 'rnnlab[track]'`` (tensorboardX, mlflow-skinny); a missing one gives that line.
"""
from __future__ import annotations

import contextlib
import os
import time
import urllib.parse
import urllib.request
from pathlib import Path

from rnnlab.errors import ConfigError, RnnlabError

KINDS = ("tensorboard", "mlflow")


class TrackingError(ConfigError):
    """A tracker failed once the run had started (its server, store or event files); one line starting
    ``track:`` that names the tracker, where it writes, what it was doing and the cause."""


def _backend_errors() -> tuple:
    """What a tracking backend raises when it fails: MLflow's exceptions, requests', urllib3's and the OS's
    (a connection refused, a timeout, a disk that is full) -- not a bug of rnnlab's own, which keeps its
    traceback."""
    import http.client
    errors = [OSError, http.client.HTTPException]           # OSError covers urllib.error and requests' errors
    for module, name in (("mlflow.exceptions", "MlflowException"), ("requests", "RequestException"),
                         ("urllib3.exceptions", "HTTPError")):
        try:
            errors.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _first_line(exc, limit: int = 300) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _cause(exc) -> str:
    """The first line of what went wrong: for requests that ran out of retries (MLflow wraps urllib3's
    MaxRetryError in a 300-character URL), its reason -- "too many 500 error responses", "connection refused"."""
    chain, e = [], exc
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        reason = getattr(e, "reason", None)
        if type(e).__name__ == "MaxRetryError" and reason is not None:
            why = _first_line(reason)
            if "Failed to establish a new connection" in why:       # urllib3's NewConnectionError
                why = why.rsplit("]", 1)[-1].strip().lower() or why
            url = getattr(e, "url", None)
            return f"{why} on {url}" if url else why
    return _first_line(exc)


@contextlib.contextmanager
def _backend(name: str, where, doing: str, run_dir):
    """Turn a failure of the tracking backend inside the block into one ``TrackingError`` line."""
    try:
        yield
    except RnnlabError:
        raise
    except _backend_errors() as exc:
        resume = f" -- continue it with rnnlab resume {run_dir}" if run_dir is not None else ""
        raise TrackingError(f"track: {name} at {where} failed on {doing} ({_cause(exc)}); the run's own "
                            f"files are intact{resume}") from exc


def parse(track: str) -> list:
    """The tracker names of a ``track`` value ("", "tensorboard", "tensorboard,mlflow")."""
    from rnnlab.errors import closest
    names = [t.strip() for t in str(track).split(",") if t.strip()]
    for n in names:
        if n not in KINDS:
            raise ConfigError(f"track: expected a comma-separated list of {list(KINDS)}, got {n!r}{closest(n, KINDS)}")
    return names


def require(track: str, mlflow_uri: str = "", timeout: float = 5.0) -> None:
    """Refuse early (before a run folder is made) when a requested tracker's package is missing, or when
    ``mlflow_uri`` names a store the installed mlflow cannot use or a server that does not answer within
    ``timeout`` seconds."""
    for n in parse(track):
        _need("tensorboardX" if n == "tensorboard" else "mlflow", n)
        if n == "mlflow":
            mlflow_store(mlflow_uri, timeout=timeout)


DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")       # mlflow's DATABASE_ENGINES
_SUPPORTED = ("expected '' (a store in RUN/mlruns), a folder path, file:///PATH, http(s)://HOST:PORT (an MLflow "
              "server) or sqlite/postgresql/mysql/mssql URIs (full mlflow package)")
# MLflow's own defaults retry for ~4 minutes; a tracking server that is gone should fail a run quickly
_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def mlflow_store(uri: str, run_dir=None, timeout: float = 5.0) -> str:
    """The tracking URI the MLflow client gets for ``mlflow_uri`` (a plain path becomes an absolute ``file:``
    URI; "" the store in ``run_dir``/mlruns); raises ConfigError when it cannot work (see the module doc)."""
    uri = str(uri or "").strip()
    if not uri:
        return "" if run_dir is None else (Path(run_dir) / "mlruns").resolve().as_uri()
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    if uri.lower() in ("databricks", "databricks-uc", "uc"):      # MLflow reads these as schemes, not folders
        scheme = uri.lower()
    elif not scheme or (len(scheme) == 1 and os.name == "nt"):   # a path (C:\... on Windows)
        folder = Path(uri).expanduser().resolve()
        _check_folder(uri, folder)
        return folder.as_uri()
    elif scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"mlflow_uri: expected a local file:///PATH, got {uri!r} (host {parsed.netloc!r})")
        _check_folder(uri, Path(urllib.request.url2pathname(parsed.path)).expanduser())
        return uri
    elif scheme in ("http", "https"):
        try:
            ok = bool(parsed.hostname) and parsed.port != 0
        except ValueError:                                       # a port that is not a number
            ok = False
        if not ok:
            raise ConfigError(f"mlflow_uri: expected {scheme}://HOST[:PORT], got {uri!r}")
        _probe(uri.rstrip("/"), parsed, timeout)
        return uri
    elif scheme.split("+")[0] in DB_SCHEMES:                     # postgresql+psycopg2:// names a driver
        import importlib.util
        try:
            if importlib.util.find_spec("sqlalchemy") is None:    # quick; mlflow's own test for its SQL store
                raise ImportError("sqlalchemy")
            import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  (needs sqlalchemy, alembic)
        except ImportError:
            raise ConfigError(f"mlflow_uri: {uri!r} needs the full mlflow package (pip install mlflow); the "
                              f"installed mlflow-skinny serves http(s):// servers and file stores") from None
        return uri
    raise ConfigError(f"mlflow_uri: {_SUPPORTED}, got {uri!r} (scheme {scheme + ':'!r} is not supported)")


def _check_folder(uri, folder: Path):
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"mlflow_uri: expected a folder for an MLflow file store, got {uri!r}, which is a file "
                          f"(a database file needs sqlite:///PATH and the full mlflow package)")
    for parent in folder.parents:                    # MLflow makes the folder, not a file's subfolder
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"mlflow_uri: expected a folder path for an MLflow file store, got {uri!r}, "
                                  f"inside the file {str(parent)!r}")
            break


def _probe(uri, parsed, timeout):
    """An MLflow server answers its REST API (401/403: it is there, and asks for credentials)."""
    import http.client
    import socket
    import ssl
    import urllib.error
    url = uri + "/api/2.0/mlflow/experiments/search?max_results=1"
    context = None
    if parsed.scheme.lower() == "https":            # the TLS settings the MLflow client itself honours
        if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("true", "1"):
            context = ssl._create_unverified_context()
        elif os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
            context = ssl.create_default_context(cafile=os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"])
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": "application/json"}),
                                    timeout=timeout, context=context):
            return
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return
        why = f"HTTP {exc.code} on /api/2.0/mlflow/experiments/search; is it an MLflow server's root URL?"
        raise ConfigError(f"mlflow_uri: expected an MLflow server at {uri}, got {why}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(reason, (TimeoutError, socket.timeout)):
            why = "timed out"
        elif isinstance(reason, socket.gaierror):
            why = f"host {parsed.hostname!r} not found"
        else:
            why = " ".join(str(reason).split()) or type(reason).__name__
    port = parsed.port or (443 if parsed.scheme.lower() == "https" else 80)
    raise ConfigError(f"mlflow_uri: no MLflow server answered at {uri} within {timeout:g} s ({why}); start it "
                      f"(mlflow server --host {parsed.hostname} --port {port}) or drop --track mlflow")


def _need(module, extra_name):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"track={extra_name!r} needs the {module} package; install it with: "
                          f"pip install 'rnnlab[track]'") from None


def _scalars(record: dict) -> dict:
    return {k: float(v) for k, v in record.items() if k not in ("step", "split") and isinstance(v, (int, float))
            and not isinstance(v, bool)}


def _flow_figure(record: dict):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3))
    for key in ("grad_norm_h", "grad_norm_c"):
        if key in record:
            ax.semilogy(record[key], label=key.replace("grad_norm_", "||dL/d") + "_t||")
    ax.set_xlabel("t")
    ax.set_title(f"gradient flow, step {record['step']}")
    ax.legend()
    fig.tight_layout()
    return fig


class TensorBoard:
    name = "TensorBoard"

    def __init__(self, run_dir: Path, cfg):
        tbx = _need("tensorboardX", "tensorboard")
        self.run_dir, self.where = run_dir, run_dir / "tensorboard"
        with self._backend("opening its event file"):
            self.writer = tbx.SummaryWriter(logdir=str(self.where), flush_secs=10)
            self.writer.add_text("config", "\n".join(f"    {k} = {v!r}" for k, v in cfg.to_dict().items()), 0)

    def _backend(self, doing):
        return _backend(self.name, self.where, doing, self.run_dir)

    def record(self, record):
        with self._backend("writing scalars"):
            for k, v in _scalars(record).items():
                self.writer.add_scalar(f"{record.get('split', 'train')}/{k}", v, record["step"])

    def diagnostics(self, record):
        import matplotlib.pyplot as plt
        fig = _flow_figure(record)
        try:
            with self._backend("writing the gradient-flow figure"):
                self.writer.add_figure("gradient_flow", fig, record["step"])
        finally:
            plt.close(fig)

    def close(self, run_dir):
        with self._backend("closing its event file"):
            self.writer.close()


class MLflow:
    name = "MLflow"

    def __init__(self, run_dir: Path, cfg):
        _need("mlflow", "mlflow")
        from mlflow.tracking import MlflowClient
        uri = mlflow_store(cfg.mlflow_uri, run_dir)           # again here: resume() comes this way
        self.run_dir, self.uri = run_dir, uri
        for k, v in _HTTP_ENV.items():
            os.environ.setdefault(k, v)                       # the user's own settings win
        with self._backend("opening its store"):
            if uri.startswith("file:"):
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")    # MLflow 3 refuses file stores without it
                _make_file_store(Path(urllib.request.url2pathname(urllib.parse.urlparse(uri).path)))
            self.client = MlflowClient(tracking_uri=uri)
        known = run_dir / ".mlflow_run_id"                 # a resumed run continues its MLflow run
        if known.is_file():
            self.run_id = known.read_text(encoding="ascii").strip()
            with self._backend(f"reopening its run {self.run_id}"):
                self.client.update_run(self.run_id, status="RUNNING")
            return
        name = cfg.mlflow_experiment or "rnnlab"
        with self._backend(f"finding or creating the experiment {name!r}"):
            exp = self.client.get_experiment_by_name(name)
            eid = exp.experiment_id if exp is not None else self.client.create_experiment(name)
        with self._backend("creating its run"):
            self.run_id = self.client.create_run(eid, run_name=run_dir.name, tags={"rnnlab.run_dir": str(run_dir)}
                                                 ).info.run_id
        from mlflow.entities import Param
        params = [Param(k, str(v)[:500]) for k, v in sorted(cfg.to_dict().items())]
        with self._backend("logging the parameters"):
            for i in range(0, len(params), 100):
                self.client.log_batch(self.run_id, params=params[i:i + 100])
        # written once the parameters are there: a run resumed after a failure above starts a whole MLflow run
        known.write_text(self.run_id + "\n", encoding="ascii")

    def _backend(self, doing):
        return _backend(self.name, self.uri, doing, self.run_dir)

    def record(self, record):
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        split = record.get("split", "train")
        with self._backend(f"logging the metrics of step {record['step']}"):
            self.client.log_batch(self.run_id, metrics=[Metric(f"{split}_{k}", v, now, int(record["step"]))
                                                        for k, v in _scalars(record).items()])

    def diagnostics(self, record):
        import matplotlib.pyplot as plt
        fig = _flow_figure(record)
        try:
            with self._backend(f"uploading the gradient-flow figure of step {record['step']}"):
                self.client.log_figure(self.run_id, fig, f"gradient_flow/step_{record['step']:07d}.png")
        finally:
            plt.close(fig)

    def close(self, run_dir):
        for name in ("config.toml", "metrics.jsonl", "diagnostics.jsonl", "model.safetensors"):
            if (run_dir / name).is_file():
                with self._backend(f"uploading {name}"):
                    self.client.log_artifact(self.run_id, str(run_dir / name))
        with self._backend("ending its run"):
            self.client.set_terminated(self.run_id)


def _make_file_store(folder: Path):
    """MLflow's FileStore writes its Default experiment (id 0) only when it creates the folder itself; in an
    existing empty folder it never does, and mlflow.start_run() (no experiment named) on that store then fails
    with "Could not find experiment with ID 0". An empty folder is removed so that MLflow makes it whole."""
    try:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    except OSError:
        pass                                           # not ours to remove: MLflow writes into it as it is


class Trackers:
    """The trackers a run asked for; each call goes to every one of them. A tracker that fails raises one
    ``TrackingError`` line (see the module doc); the others' event files are closed first."""

    def __init__(self, run_dir, cfg):
        names = parse(cfg.track)
        if names and run_dir is None:
            raise ConfigError(f"track={cfg.track!r}: tracking writes beside a run folder; give --out DIR")
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.items = []
        with self._failing():
            for n in names:
                self.items.append((TensorBoard if n == "tensorboard" else MLflow)(Path(run_dir), cfg))

    def __bool__(self):
        return bool(self.items)

    @contextlib.contextmanager
    def _failing(self):
        try:
            yield
        except TrackingError:
            self._abandon()
            raise

    def _abandon(self):
        """After a failure: flush what the other trackers hold locally (TensorBoard's event files), quietly."""
        for t in self.items:
            if isinstance(t, TensorBoard):
                try:
                    t.writer.close()
                except Exception:  # noqa: BLE001 -- the failure being reported is the one that matters
                    pass
        self.items = []

    def record(self, record):
        with self._failing():
            for t in self.items:
                t.record(record)

    def diagnostics(self, record):
        with self._failing():
            for t in self.items:
                t.diagnostics(record)

    def close(self):
        with self._failing():
            for t in self.items:
                t.close(self.run_dir)
        self.items = []
