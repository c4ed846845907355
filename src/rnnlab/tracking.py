"""Metrics where people look at them: TensorBoard event files and MLflow tracking, on request.

``rnnlab train --track tensorboard,mlflow`` (TOML ``track = "tensorboard,mlflow"``) sends what the run writes
to metrics.jsonl and diagnostics.jsonl -- the plain files stay the source of truth -- to

    tensorboard   event files in RUN/tensorboard (tensorboardX): every scalar per step as ``train/loss``,
                  ``val/bpc`` ...; the gradient-flow curve ||dL/dh_t|| as a figure per diagnostics record
                  (``tensorboard --logdir RUN/tensorboard``)
    mlflow        one MLflow run per rnnlab run: the config as parameters, the scalars per step, the figures
                  and the run's files as artifacts at the end. ``mlflow_uri`` names the tracking server or
                  store (``http://...``, ``sqlite:///...``); empty: a local file store in RUN/mlruns (``mlflow ui
                  --backend-store-uri RUN/mlruns``). ``mlflow_experiment`` groups runs (a sweep's trials).

Extras: ``pip install 'rnnlab[track]'`` (tensorboardX, mlflow-skinny); a missing one gives that line.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from .errors import ConfigError

KINDS = ("tensorboard", "mlflow")


def parse(track: str) -> list:
    """The tracker names of a ``track`` value ("", "tensorboard", "tensorboard,mlflow")."""
    from .errors import closest
    names = [t.strip() for t in str(track).split(",") if t.strip()]
    for n in names:
        if n not in KINDS:
            raise ConfigError(f"track: expected a comma-separated list of {list(KINDS)}, got {n!r}{closest(n, KINDS)}")
    return names


def require(track: str) -> None:
    """Refuse early (before a run folder is made) when a requested tracker's package is missing."""
    for n in parse(track):
        _need("tensorboardX" if n == "tensorboard" else "mlflow", n)


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
    def __init__(self, run_dir: Path, cfg):
        tbx = _need("tensorboardX", "tensorboard")
        self.writer = tbx.SummaryWriter(logdir=str(run_dir / "tensorboard"), flush_secs=10)
        self.writer.add_text("config", "\n".join(f"    {k} = {v!r}" for k, v in cfg.to_dict().items()), 0)

    def record(self, record):
        for k, v in _scalars(record).items():
            self.writer.add_scalar(f"{record.get('split', 'train')}/{k}", v, record["step"])

    def diagnostics(self, record):
        import matplotlib.pyplot as plt
        fig = _flow_figure(record)
        self.writer.add_figure("gradient_flow", fig, record["step"])
        plt.close(fig)

    def close(self, run_dir):
        self.writer.close()


class MLflow:
    def __init__(self, run_dir: Path, cfg):
        _need("mlflow", "mlflow")
        from mlflow.tracking import MlflowClient
        uri = cfg.mlflow_uri or (run_dir / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")    # the local default; servers take any store
        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri
        known = run_dir / ".mlflow_run_id"                 # a resumed run continues its MLflow run
        if known.is_file():
            self.run_id = known.read_text(encoding="ascii").strip()
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = cfg.mlflow_experiment or "rnnlab"
        exp = self.client.get_experiment_by_name(name)
        eid = exp.experiment_id if exp is not None else self.client.create_experiment(name)
        self.run_id = self.client.create_run(eid, run_name=run_dir.name, tags={"rnnlab.run_dir": str(run_dir)}
                                             ).info.run_id
        known.write_text(self.run_id + "\n", encoding="ascii")
        from mlflow.entities import Param
        params = [Param(k, str(v)[:500]) for k, v in sorted(cfg.to_dict().items())]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def record(self, record):
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        split = record.get("split", "train")
        self.client.log_batch(self.run_id, metrics=[Metric(f"{split}_{k}", v, now, int(record["step"]))
                                                    for k, v in _scalars(record).items()])

    def diagnostics(self, record):
        import matplotlib.pyplot as plt
        fig = _flow_figure(record)
        self.client.log_figure(self.run_id, fig, f"gradient_flow/step_{record['step']:07d}.png")
        plt.close(fig)

    def close(self, run_dir):
        for name in ("config.toml", "metrics.jsonl", "diagnostics.jsonl", "model.safetensors"):
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        self.client.set_terminated(self.run_id)


class Trackers:
    """The trackers a run asked for; each call goes to every one of them."""

    def __init__(self, run_dir, cfg):
        names = parse(cfg.track)
        if names and run_dir is None:
            raise ConfigError(f"track={cfg.track!r}: tracking writes beside a run folder; give --out DIR")
        self.items = [(TensorBoard if n == "tensorboard" else MLflow)(Path(run_dir), cfg) for n in names]
        self.run_dir = None if run_dir is None else Path(run_dir)

    def __bool__(self):
        return bool(self.items)

    def record(self, record):
        for t in self.items:
            t.record(record)

    def diagnostics(self, record):
        for t in self.items:
            t.diagnostics(record)

    def close(self):
        for t in self.items:
            t.close(self.run_dir)
        self.items = []
