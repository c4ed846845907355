"""The live gradient lab (#35): mid-run changes replayed bit-exactly, the server's API and events, the CLI, and the
page in a real browser (Chromium driven by Playwright)."""
import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from rnnlab.model.checkpoint import load_checkpoint
from rnnlab.training.config import TrainConfig, resolve
from rnnlab.errors import CheckpointError, ConfigError
from rnnlab.training.trainer import read_changes, resume, train
from support import ROOT

SMALL = dict(task="adding", seq_len=12, hidden_size=6, batch_size=8, steps=30, eval_every=10, log_every=5, quiet=True,
             checkpoint_every=10)


def _changes_at(step_changes, kill_at=None):
    def control(tr):
        if tr.step in step_changes:
            tr.change(**step_changes[tr.step])
        if kill_at is not None and tr.step == kill_at:
            raise KeyboardInterrupt                  # a kill after the last checkpoint, before the run's end
    return control


def _weights(folder):
    return load_checkpoint(Path(folder) / "model.safetensors")[0]


# ------------------------------------------------------------------ changes.jsonl: journalled and replayed
def test_mid_run_changes_are_replayed_by_resume_bit_exactly(tmp_path):
    changes = {7: {"lr": 0.02}, 22: {"clip": 0.05, "lr": 0.003}}
    train(resolve(None, {**SMALL, "out": str(tmp_path / "whole")}), control=_changes_at(changes))
    with pytest.raises(KeyboardInterrupt):          # checkpoint at 20; the change at 22 journalled, then killed
        train(resolve(None, {**SMALL, "out": str(tmp_path / "killed")}), control=_changes_at(changes, kill_at=25))
    assert read_changes(tmp_path / "killed") == [{"step": 7, "lr": 0.02}, {"step": 22, "clip": 0.05, "lr": 0.003}]
    resume(tmp_path / "killed")                     # no control: the journal alone replays the changes
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "killed")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert (tmp_path / "whole" / "metrics.jsonl").read_text() == (tmp_path / "killed" / "metrics.jsonl").read_text()
    recs = [json.loads(l) for l in (tmp_path / "whole" / "metrics.jsonl").open()]
    lrs = {r["step"]: r["lr"] for r in recs if r["split"] == "train"}
    assert lrs[5] == 1e-3 and lrs[10] == 0.02 and lrs[25] == 0.003      # the rate each step used
    train(resolve(None, {**SMALL, "out": str(tmp_path / "plain")}))
    plain = _weights(tmp_path / "plain")
    assert not all(np.array_equal(a[k], plain[k]) for k in a)           # the changes did change the run


def test_changes_are_checked(tmp_path):
    def bad(key, value):
        def control(tr):
            tr.change(**{key: value})
        return control
    for key, value, msg in (("lr", 0.0, "lr: expected a number > 0.0, got 0.0"), ("clip", -1, "clip: expected a number"),
                            ("momentum", 0.5, "momentum: a run can change lr or clip mid-run")):
        with pytest.raises(ConfigError, match=msg):
            train(resolve(None, {**SMALL, "steps": 2}), control=bad(key, value))
    folder = tmp_path / "run"
    train(resolve(None, {**SMALL, "steps": 10, "out": str(folder)}))
    (folder / "changes.jsonl").write_text('{"step": 3, "lr": 0.01}\n{"step": 1, "lr": 0.02}\n')
    with pytest.raises(ConfigError, match="step: expected an integer >= 3, got 1"):
        read_changes(folder)
    (folder / "changes.jsonl").write_text('{"step": 3, "momentum": 0.9}\n')
    with pytest.raises(CheckpointError, match="changes.jsonl, line 1: expected"):
        read_changes(folder)


def test_recurrent_radius_sets_the_spectral_radius():
    from rnnlab.study.diagnostics import spectral_radius
    from rnnlab.training.trainer import Trainer
    tr = Trainer(resolve(None, {**SMALL, "model": "rnn", "recurrent_radius": 1.3}))
    assert spectral_radius(tr.model.rnn) == pytest.approx(1.3, rel=1e-5)
    with pytest.raises(ConfigError, match="recurrent_radius: the mingru layer has no recurrent weights"):
        Trainer(resolve(None, {**SMALL, "model": "mingru", "recurrent_radius": 1.3}))


# ------------------------------------------------------------------ the server
starlette = pytest.importorskip("starlette")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from rnnlab.lab.app import LabServer
    with LabServer(tmp_path_factory.mktemp("lab")) as srv:
        yield srv


def _request(url, body=None, headers=None, method=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    h = {"Content-Type": "application/json"} if body is not None else {}
    req = urllib.request.Request(url, data, {**h, **(headers or {})}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _post(server, path, body, **kw):
    status, raw = _request(server.url + path.lstrip("/"), body, **kw)
    return status, json.loads(raw)


def _events(server, run_id, start=0):
    """The run's events as they come: (arrival time, event)."""
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    c.request("GET", f"/api/runs/{run_id}/events?from={start}")
    r = c.getresponse()
    assert r.status == 200 and r.getheader("content-type").startswith("text/event-stream")
    for line in r:
        line = line.decode()
        if line.startswith("event: end"):
            return
        if line.startswith("data: "):
            yield time.time(), json.loads(line[6:])


BAD = [({"hidden_size": -3}, "hidden_size: expected an integer >= 1, got -3"),
       ({"seq_len": 100000}, "seq_len: the lab trains with seq_len <= 400"),
       ({"model": "lsmt"}, "model: expected one of"),
       ({"model": "gru", "forget_bias": 1}, "forget_bias: an option of the LSTM only"),
       ({"lr": "fast"}, "lr: expected a number, got 'fast'"),
       ({"task": "digits"}, "task: the lab trains on adding, copy, selective_copy, chars"),
       ({"model": "lru", "recurrent_init": "orthogonal"}, "recurrent_init"),
       ({"epochs": 3}, "settings: unknown setting 'epochs'")]


@pytest.mark.parametrize("settings,msg", BAD)
def test_bad_settings_get_a_4xx_with_one_line(server, settings, msg):
    status, body = _post(server, "/api/runs", {"a": settings})
    assert status == 400 and msg in body["error"] and "\n" not in body["error"]


def test_bad_requests_and_loopback_only(server):
    assert _post(server, "/api/runs", {"a": {}, "b": {"hidden_size": 0}})[1]["error"].startswith("B: hidden_size")
    status, raw = _request(server.url + "api/runs", b"a=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and b"Content-Type application/json" in raw          # no form posts from other sites
    assert _post(server, "/api/runs/nope/control", {"op": "pause"})[0] == 404
    assert _request(server.url + "api/options", headers={"Host": "evil.example"})[0] == 400   # DNS rebinding
    assert server.sock.getsockname()[0] == "127.0.0.1"
    others = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)} - {"127.0.0.1"}
    for addr in sorted(a for a in others if not a.startswith("127.")):
        with pytest.raises(OSError):                # nothing listens beyond loopback
            socket.create_connection((addr, server.port), timeout=2).close()
    opts = json.loads(_request(server.url + "api/options")[1])
    assert [p["chapter"] for p in opts["presets"]] == [1, 2, 3, 4, 5, 6]
    assert all(p["say"]["en"] and p["say"]["zh"] for p in opts["presets"])


def test_a_run_live_paused_changed_stepped_downloaded(server, tmp_path):
    settings = {"model": "lstm", "seq_len": 12, "hidden_size": 6, "batch_size": 8, "steps": 120, "lr": 0.01,
                "measure_every": 10}
    status, body = _post(server, "/api/runs", {"a": settings})
    assert status == 201
    run = body["runs"][0]
    rid, folder = run["id"], Path(run["run_dir"])
    seen, lat, paused_at, stepped = [], [], None, False
    for arrived, ev in _events(server, rid):
        seen.append(ev)
        if "time" in ev:
            lat.append(arrived - ev["time"])
        if ev["type"] == "measure" and ev["step"] >= 30 and paused_at is None:
            paused_at = -1
            assert _post(server, f"/api/runs/{rid}/control", {"op": "pause"})[0] == 200
        if ev["type"] == "state" and ev["state"] == "paused" and paused_at == -1:
            paused_at = ev["step"]
            assert _post(server, f"/api/runs/{rid}/control", {"op": "change", "lr": "0.002"})[0] == 200
            assert _post(server, f"/api/runs/{rid}/control", {"op": "change", "clip": -1})[1]["error"].startswith("clip:")
            assert _post(server, f"/api/runs/{rid}/control", {"op": "step"})[0] == 200
        if ev["type"] == "state" and ev["state"] == "paused" and paused_at not in (None, -1) and ev["step"] == paused_at + 1:
            stepped = True
            assert _post(server, f"/api/runs/{rid}/control", {"op": "resume"})[0] == 200
    kinds = {e["type"] for e in seen}
    assert {"info", "record", "measure", "change", "state"} <= kinds
    assert stepped and seen[-1]["state"] == "done" and seen[-1]["step"] == 120
    change = next(e for e in seen if e["type"] == "change")
    assert change["step"] == paused_at and change["lr"] == 0.002
    m = next(e for e in seen if e["type"] == "measure")
    assert len(m["grad_norm_h"]) == 12 and len(m["jacobian_norm"]) == 12 and m["gate"]["name"] == "f"
    assert len(m["gate"]["p50"]) == 6 and set(m["singular_values"]) == {"i", "f", "g", "o"} and m["carry_product"]
    print(f"\nevent latency: median {1e3 * np.median(lat):.1f} ms, max {1e3 * max(lat):.1f} ms")
    # measured and printed, not asserted: a timing check fails on a loaded machine (docs: the lab's numbers)
    again = [ev for _, ev in _events(server, rid)]  # a second tab sees the same run, from its start
    assert again == seen
    assert _post(server, f"/api/runs/{rid}/control", {"op": "pause"})[0] == 409     # finished: said, not sent
    assert read_changes(folder) == [{"step": paused_at, "lr": 0.002}]

    status, raw = _request(server.url + f"api/runs/{rid}/download")
    assert status == 200
    zipfile.ZipFile(io.BytesIO(raw)).extractall(tmp_path)
    got = tmp_path / folder.name
    assert {"config.toml", "metrics.jsonl", "changes.jsonl", "checkpoint.safetensors", "model.safetensors",
            "card.md"} <= {p.name for p in got.iterdir()}
    # the lab's run, replayed in this process from its config and journal, is the same run bit for bit
    replay = tmp_path / "replay"
    train(TrainConfig.from_dict({**run["config"], "out": str(replay)}), control=_changes_at({paused_at: {"lr": 0.002}}))
    a, b = _weights(got), _weights(replay)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    r = resume(got, steps=130)                      # an ordinary run folder: it continues
    assert r.steps_run == 10


# ------------------------------------------------------------------ the command
def _rnnlab(*args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, "-m", "rnnlab", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, **kw)


def test_cli_prints_its_loopback_address_and_refuses_a_busy_port(tmp_path):
    p = _rnnlab("lab", "--no-browser", "--runs", str(tmp_path / "runs"))
    try:
        line = p.stdout.readline()
        assert line.startswith("rnnlab lab: http://127.0.0.1:"), line + p.stderr.read()
        url = line.split()[2]
        port = int(url.rsplit(":", 1)[1].strip("/"))
        status, html = _request(url)
        assert status == 200 and b"live gradient lab" in html
        assert _request(url + "static/plot.js")[0] == 200
        busy = _rnnlab("lab", "--no-browser", "--port", str(port), "--runs", str(tmp_path / "runs"))
        out, err = busy.communicate(timeout=60)
        assert busy.returncode == 2 and err.count("\n") == 1
        assert err.startswith(f"rnnlab lab: error: port: {port} on 127.0.0.1 is not free")
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(timeout=30)


# ------------------------------------------------------------------ the page, in Chromium
CHROMIUM = os.environ.get("RNNLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _browser_or_skip():
    required = os.environ.get("RNNLAB_REQUIRE_BROWSER")       # set by .ci/run: CI never skips the browser test
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            raise
        pytest.skip("the browser test needs playwright (pip install playwright); set RNNLAB_REQUIRE_BROWSER=1 to fail")
    if CHROMIUM is None:
        if required:
            pytest.fail("RNNLAB_REQUIRE_BROWSER is set but there is no chromium (apt-get install chromium)")
        pytest.skip("the browser test needs Chromium (apt-get install chromium, or RNNLAB_CHROMIUM=path)")
    return sync_playwright


def test_the_page_in_chromium(server, tmp_path):
    sync_playwright = _browser_or_skip()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page.set_default_timeout(120_000)          # two training processes start: slow on a loaded machine
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            t0 = time.perf_counter()
            page.goto(server.url)
            page.wait_for_selector("body[data-ready='1']")
            opened = time.perf_counter() - t0
            print(f"\npage open: {1e3 * opened:.0f} ms")

            page.fill("fieldset[data-which=a] [name=hidden_size]", "-4")        # bad input: a message, no crash
            page.click("#start")
            page.wait_for_function("document.querySelector('#error').textContent.includes('hidden_size')")

            page.select_option("#preset", "lstm-gru")                           # chapter 6: LSTM and GRU
            assert "parameter count" in page.text_content("#say")
            page.click("#lang-zh")
            assert "参数量" in page.text_content("#say")
            page.click("#lang-en")
            page.fill("[name=seq_len]", "20")
            page.fill("fieldset[data-which=a] [name=hidden_size]", "8")
            page.fill("fieldset[data-which=b] [name=hidden_size]", "9")
            page.fill("[name=steps]", "3000")
            page.click("#start")
            page.wait_for_function("document.querySelectorAll('.run').length === 2 && "
                                   "[...document.querySelectorAll('.run .heat')].every(c => +c.dataset.rows >= 3) && "
                                   "[...document.querySelectorAll('.run .curve')].every(c => +c.dataset.points >= 2)",
                                   timeout=30000)
            page.click("#pause")
            page.wait_for_function("[...document.querySelectorAll('.run .status')].every(s => s.dataset.state === 'paused')")
            rows = page.eval_on_selector(".run .heat", "c => +c.dataset.rows")
            page.fill("#new-lr", "0.003")
            page.click("#apply")
            page.wait_for_function("document.querySelectorAll('.run .changes li').length === 2")
            assert "lr = 0.003" in page.text_content(".run .changes li")
            page.click("#step")
            page.wait_for_timeout(300)
            assert page.eval_on_selector(".run .heat", "c => +c.dataset.rows") >= rows
            shot = os.environ.get("RNNLAB_LAB_SCREENSHOT")                      # docs/figures/lab.png is made so
            if shot:
                page.screenshot(path=shot, full_page=True)
            with page.expect_download() as dl:
                page.click(".run .download")
            path = tmp_path / "run.zip"
            dl.value.save_as(path)
            names = zipfile.ZipFile(path).namelist()
            assert any(n.endswith("/config.toml") for n in names) and any(n.endswith("/changes.jsonl") for n in names)
            page.click("#stop")
            page.wait_for_function("[...document.querySelectorAll('.run .status')].every(s => s.dataset.state === 'done')",
                                   timeout=30000)
            assert not errors, errors
        finally:
            browser.close()
