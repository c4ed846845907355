"""The lab's web application: Starlette routes, the runs it started, and a uvicorn server on 127.0.0.1.

    GET  /                              the page (static/index.html; every asset from static/, no CDN)
    GET  /api/options                   cells, tasks, optimisers, defaults, limits and the presets
    GET  /api/runs                      the runs this server started (a second tab attaches to them)
    POST /api/runs                      {"a": settings, "b": settings | null} -> 201, or 400 with {"error": one line}
    GET  /api/runs/{id}/events          Server-Sent Events: every event of the run from ?from=N (or Last-Event-ID)
    POST /api/runs/{id}/control         {"op": "pause" | "resume" | "step" | "stop"} or {"op": "change", "lr", "clip"}
    GET  /api/runs/{id}/download        the run folder as a zip (an ordinary run folder: resume, gradients, ...)

Each run trains in its own spawned process (``worker.run``); a thread per run moves its events from the
process's queue into a list that every event stream reads from, so any number of tabs see the same run and
closing them stops nothing. Stopping the server stops its runs as the stop button does: each is saved as a
finished run is (checkpoint, model, card), so ``rnnlab resume`` continues it.
"""
from __future__ import annotations

import asyncio
import io
import json
import math
import multiprocessing as mp
import queue
import socket
import threading
import time
import zipfile
from pathlib import Path

from rnnlab.errors import ConfigError
from rnnlab.lab import settings as lab_settings

STATIC = Path(__file__).parent / "static"
HOST = "127.0.0.1"                                  # loopback only: the lab runs code on this machine for its page
MAX_RUNNING = 4                                     # runs training at once (two cores make more of them crawl)
SHARED = ("task", "seq_len", "tokens", "text", "seed", "steps", "batch_size", "measure_every")  # B takes A's


def _clean(obj):
    """JSON for the browser: non-finite floats as null (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


class Run:
    """One training process, its command queue and the events it has sent."""

    def __init__(self, run_id: str, label: str, group: str, run_dir: Path, cfg, measure_every: int):
        from rnnlab.lab import worker
        self.id, self.label, self.group, self.run_dir = run_id, label, group, run_dir
        self.cfg = cfg
        task = None
        try:
            from rnnlab.tasks import build_task
            task = build_task(cfg)
        except Exception:                            # checked before; the page only misses the baseline
            pass
        base = task.baseline() if task is not None else None
        self.info = {"id": run_id, "label": label, "group": group, "run_dir": str(run_dir),
                     "config": cfg.to_dict(), "measure_every": measure_every,
                     "baseline": None if base is None else [base[0], float(base[1])],
                     "describe": task.describe() if task is not None else cfg.task,
                     "started": time.time()}
        ctx = mp.get_context("spawn")               # a fresh interpreter: nothing of the server's loop or threads
        self.commands, self._events = ctx.Queue(), ctx.Queue()
        self.events: list = [{"type": "info", **self.info}]
        self.state = "starting"
        self.finished = False
        self.process = ctx.Process(target=worker.run, name=f"rnnlab-lab-{run_id}", daemon=False,
                                   args=(cfg.to_dict(), self.commands, self._events, measure_every))
        self.process.start()
        self._reader = threading.Thread(target=self._read, name=f"rnnlab-lab-events-{run_id}", daemon=True)
        self._reader.start()

    def _read(self):
        """Move the process's events into ``self.events`` until it says done or error, or dies."""
        while True:
            try:
                ev = self._events.get(timeout=0.25)
            except queue.Empty:
                if self.process.is_alive():
                    continue
                try:                                 # the last events may still be in the pipe
                    ev = self._events.get(timeout=0.5)
                except queue.Empty:
                    self._append({"type": "state", "state": "error", "step": None,
                                  "message": f"the training process ended (exit code {self.process.exitcode}) "
                                             f"before the run finished; {self.run_dir} keeps its last checkpoint "
                                             f"(rnnlab resume {self.run_dir})"})
                    return
            self._append(_clean(ev))
            if self.finished:
                self.process.join(timeout=10)
                return

    def _append(self, ev):
        if ev.get("type") == "state":
            self.state = ev["state"]
            self.finished = self.state in ("done", "error")
        self.events.append(ev)

    def send(self, cmd: dict):
        if self.finished:
            raise ConfigError(f"run: {self.id} has {'finished' if self.state == 'done' else 'stopped with an error'}; "
                              f"start a new run (or continue this one with `rnnlab resume {self.run_dir}`)")
        self.commands.put(cmd)

    def summary(self) -> dict:
        return {**self.info, "state": self.state, "events": len(self.events)}

    def stop(self, timeout=30.0):
        """Stop as the stop button does (the run is saved), then make sure the process is gone."""
        if self.process.is_alive():
            self.commands.put({"op": "stop"})
            self.process.join(timeout)
            if self.process.is_alive():
                self.process.terminate()             # a step that does not end: the folder keeps its checkpoint
                self.process.join(5)


class Lab:
    """The runs of one server, their folders under ``runs``."""

    def __init__(self, runs="runs/lab"):
        from rnnlab.data.outputs import check_folder
        self.root = check_folder(runs, "runs", "--runs names a folder for the lab's run folders")
        self.root.mkdir(parents=True, exist_ok=True)
        self.runs: dict[str, Run] = {}
        self._n = 0
        self._lock = threading.Lock()

    def _folder(self, group: str, letter: str, model: str) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return self.root / f"{stamp}-{group}{letter}-{model}"

    def start(self, body) -> list[Run]:
        """Check both models' settings (all before any process starts), then start them."""
        if not isinstance(body, dict) or not isinstance(body.get("a"), dict):
            raise ConfigError('settings: expected {"a": {settings}, "b": {settings} or null}')
        unknown = sorted(set(body) - {"a", "b"})
        if unknown:
            raise ConfigError(f"settings: unknown key {unknown[0]!r}; expected 'a' and optionally 'b'")
        a = body["a"]
        pairs = [("a", a)]
        if body.get("b") is not None:
            if not isinstance(body["b"], dict):
                raise ConfigError(f"b: expected a JSON object of settings or null, got {type(body['b']).__name__}")
            b = {k: v for k, v in body["b"].items() if k not in SHARED}     # the same data and seed as A
            pairs.append(("b", {**{k: a[k] for k in SHARED if k in a}, **b}))
        with self._lock:
            running = sum(not r.finished for r in self.runs.values())
            if running + len(pairs) > MAX_RUNNING:
                raise ConfigError(f"runs: {running} runs are training and the lab trains at most {MAX_RUNNING} at "
                                  f"once; stop one first")
            self._n += 1
            group = f"{self._n:03d}"
            checked = []
            for letter, s in pairs:
                try:
                    cfg, every = lab_settings.run_config(s, "")
                except ConfigError as exc:
                    raise ConfigError(f"{letter.upper()}: {exc}" if len(pairs) > 1 else str(exc)) from None
                out = self._folder(group, letter, cfg.model)
                import dataclasses
                checked.append((letter, dataclasses.replace(cfg, out=str(out.resolve())), every, out))
            started = []
            for letter, cfg, every, out in checked:
                run = Run(f"{group}{letter}", f"{letter.upper()}: {cfg.model}", group, out, cfg, every)
                self.runs[run.id] = run
                started.append(run)
            return started

    def get(self, run_id: str) -> Run:
        run = self.runs.get(run_id)
        if run is None:
            raise KeyError(run_id)
        return run

    def close(self):
        for run in list(self.runs.values()):
            run.stop()


def _error(exc, status=400):
    from starlette.responses import JSONResponse
    return JSONResponse({"error": " ".join(str(exc).split())}, status_code=status)


async def _json_body(request):
    """The request's JSON object; a form post (what another site could send without asking) is refused."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise ConfigError("request: expected Content-Type application/json")
    try:
        return json.loads(await request.body() or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"request: the body is not JSON ({exc})") from None


def options() -> dict:
    from rnnlab.engine.layers import LAYERS
    from rnnlab.training.optim import OPTIMIZERS
    return {"cells": list(LAYERS), "tasks": list(lab_settings.TASKS), "optimizers": list(OPTIMIZERS),
            "inits": list(lab_settings.INITS), "defaults": lab_settings.DEFAULTS, "limits": lab_settings.LIMITS,
            "shared": list(SHARED), "presets": lab_settings.PRESETS}


def create_app(lab: Lab):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    async def index(request):
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def get_options(request):
        return JSONResponse(options())

    async def list_runs(request):
        return JSONResponse([r.summary() for r in lab.runs.values()])

    async def start(request):
        try:
            body = await _json_body(request)
            runs = await run_in_threadpool(lab.start, body)
        except (ConfigError, ValueError, TypeError, OSError) as exc:   # rnnlab's own one-line errors
            return _error(exc)
        except Exception as exc:                    # a fault of the lab's, still one line on the page
            return _error(f"lab: could not start the run ({type(exc).__name__}: {exc})", 500)
        return JSONResponse({"runs": [r.summary() for r in runs]}, status_code=201)

    def _run(request):
        return lab.get(request.path_params["run_id"])

    async def events(request):
        try:
            run = _run(request)
        except KeyError as exc:
            return _error(f"run: no run {exc.args[0]!r} on this server", 404)
        frm, last = request.query_params.get("from"), request.headers.get("last-event-id")
        try:                                         # a reconnecting browser says the last event it has
            i = int(frm) if frm else (int(last) + 1 if last else 0)
        except ValueError:
            return _error(f"from: expected an event number, got {frm or last!r}")

        async def stream():
            nonlocal i
            quiet = 0.0
            while True:
                n = len(run.events)
                if i < n:
                    chunk = "".join(f"id: {k}\ndata: {json.dumps(run.events[k], allow_nan=False)}\n\n"
                                    for k in range(i, n))
                    i = n
                    quiet = 0.0
                    yield chunk
                    continue
                if run.finished:
                    yield "event: end\ndata: {}\n\n"     # the page closes its stream (else the browser reconnects)
                    return
                await asyncio.sleep(0.05)           # 50 ms: a step's measurements reach the page well within a second
                quiet += 0.05
                if quiet >= 15:                      # a comment keeps proxies and the browser from timing out
                    quiet = 0.0
                    yield ": keep-alive\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def control(request):
        try:
            run = _run(request)
        except KeyError as exc:
            return _error(f"run: no run {exc.args[0]!r} on this server", 404)
        try:
            body = await _json_body(request)
            if not isinstance(body, dict):
                raise ConfigError(f"control: expected a JSON object with op, got {type(body).__name__}")
            op = body.get("op")
            if op == "change":
                cmd = {"op": "change", **lab_settings.change_settings(body)}
            elif op in ("pause", "resume", "step", "stop"):
                cmd = {"op": op}
            else:
                raise ConfigError(f"op: expected one of pause, resume, step, stop, change, got {op!r}")
            run.send(cmd)
        except ConfigError as exc:
            return _error(exc, 409 if "has finished" in str(exc) or "stopped with" in str(exc) else 400)
        return JSONResponse({"ok": True, "sent": cmd})

    async def download(request):
        try:
            run = _run(request)
        except KeyError as exc:
            return _error(f"run: no run {exc.args[0]!r} on this server", 404)
        data = await run_in_threadpool(zip_folder, run.run_dir)
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{run.run_dir.name}.zip"'})

    async def favicon(request):
        return Response(status_code=204)

    routes = [Route("/", index), Route("/favicon.ico", favicon), Route("/api/options", get_options), Route("/api/runs", list_runs),
              Route("/api/runs", start, methods=["POST"]),
              Route("/api/runs/{run_id}/events", events), Route("/api/runs/{run_id}/control", control, methods=["POST"]),
              Route("/api/runs/{run_id}/download", download),
              Mount("/static", StaticFiles(directory=STATIC), name="static")]
    # a page on another site that resolves its own name to 127.0.0.1 (DNS rebinding) is refused by Host
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=[HOST, "localhost"])]
    return Starlette(routes=routes, middleware=middleware)


def zip_folder(folder: Path) -> bytes:
    """The run folder as a zip, its files under the folder's name (the lock of a training run left out)."""
    folder = Path(folder)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and p.name != ".lock":
                zf.write(p, Path(folder.name) / p.relative_to(folder))
    return buf.getvalue()


def bind(port: int = 0) -> socket.socket:
    """A listening socket on 127.0.0.1 (port 0: a free one the system picks)."""
    from rnnlab.errors import check_int
    check_int("port", port, 0, 65535)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"port: {port} on {HOST} is not free ({exc.strerror}); give another --port, or 0 for a "
                          f"free one") from None
    sock.listen(128)
    return sock


class LabServer:
    """The lab served by uvicorn on a thread (the CLI runs ``serve`` instead; tests and notebooks use this)."""

    def __init__(self, runs="runs/lab", port: int = 0):
        import uvicorn
        self.lab = Lab(runs)
        self.sock = bind(port)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}/"
        config = uvicorn.Config(create_app(self.lab), log_level="warning", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self._thread = None

    def start(self) -> "LabServer":
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self._thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() - t0 > 30:
                raise RuntimeError("lab: the server did not start")
            time.sleep(0.02)
        return self

    def stop(self):
        self.lab.close()
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def serve(port: int = 0, open_browser: bool = True, runs="runs/lab", announce=print) -> None:
    """Serve the lab until interrupted; ``announce(url)`` once it listens."""
    import uvicorn
    lab = Lab(runs)
    sock = bind(port)
    url = f"http://{HOST}:{sock.getsockname()[1]}/"
    server = uvicorn.Server(uvicorn.Config(create_app(lab), log_level="warning", timeout_graceful_shutdown=2))
    announce(url)
    if open_browser:
        import webbrowser
        threading.Timer(0.3, webbrowser.open, [url]).start()
    try:
        server.run(sockets=[sock])
    finally:
        lab.close()
        sock.close()
