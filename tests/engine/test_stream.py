"""rnnlab.Stream: chunks of any sizes equal one pass, for every cell; streams that begin and end on their own
keep their states while they have no step; models stream their per-step predictions; refusals."""
import numpy as np
import pytest

import rnnlab
from rnnlab.errors import ConfigError, ShapeError
from rnnlab.engine.layers import LAYERS
from support import ROOT

CHUNKS = (1, 3, 2, 5, 1)                    # ragged chunk sizes, 12 steps


def one_pass(layer, x):
    with rnnlab.no_grad():
        return layer(x)


@pytest.mark.parametrize("cell", sorted(LAYERS))
def test_chunks_equal_one_pass(cell):
    layer = LAYERS[cell](3, 5, num_layers=2, seed=0, dtype="float64")
    x = np.random.default_rng(0).standard_normal((sum(CHUNKS), 4, 3))
    want, want_state = one_pass(layer, x)
    s = rnnlab.Stream(layer, batch_size=4)
    got, t = [], 0
    for n in CHUNKS:
        got.append(s.feed(x[t:t + n]) if n > 1 else s.feed(x[t])[None])     # a one-step call too
        t += n
    np.testing.assert_allclose(np.concatenate(got), want, rtol=1e-12, atol=1e-12)
    for a, b in zip(states(s.state), states(want_state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def states(hx):
    return hx if isinstance(hx, tuple) else (hx,)


@pytest.mark.parametrize("cell", ["lstm", "gru", "mingru"])
def test_streams_begin_and_end_on_their_own(cell):
    """Stream r has steps [start_r, end_r) of the 12; its outputs there and its final state equal one pass over
    its own steps, and its state is untouched outside them (reset when a new stream starts in its slot)."""
    layer = LAYERS[cell](3, 5, seed=1, dtype="float64")
    rng = np.random.default_rng(1)
    T, B = 12, 3
    x = rng.standard_normal((T, B, 3))
    span = [(0, 12), (4, 9), (2, 6)]
    active = np.zeros((T, B), bool)
    for r, (a, b) in enumerate(span):
        active[a:b, r] = True
    s = rnnlab.Stream(layer, batch_size=B)
    outs, t = [], 0
    for n in CHUNKS:
        outs.append(s.feed(x[t:t + n], active=active[t:t + n]))
        t += n
    out = np.concatenate(outs)
    final = s.state[0] if isinstance(s.state, tuple) else s.state
    for r, (a, b) in enumerate(span):
        want, st = one_pass(layer, x[a:b, r:r + 1])
        np.testing.assert_allclose(out[a:b, r:r + 1], want, rtol=1e-12, atol=1e-12)
        assert not out[~active[:, r], r].any()              # no step: output 0, as padding
        h = st[0] if isinstance(st, tuple) else st
        np.testing.assert_allclose(final[:, r:r + 1], h, rtol=1e-12, atol=1e-12)
    s.reset([1])
    assert not (s.state[0] if isinstance(s.state, tuple) else s.state)[:, 1].any()


def test_a_model_streams_its_predictions():
    m = rnnlab.SequenceModel(rnnlab.ModelConfig(input_size=2, output_size=3, hidden_size=6, target="every",
                                                dtype="float64"), seed=0)
    x = np.random.default_rng(2).standard_normal((7, 2, 2))
    with rnnlab.no_grad():
        want = m.predict(x)[0]
    s = rnnlab.Stream(m, batch_size=2)
    got = np.concatenate([s.feed(x[:4]), s.feed(x[4:6]), s.feed(x[6])[None]])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    y = s.feed(x[:2], active=np.array([[True, False], [True, True]]))
    assert np.isnan(y[0, 1]).all() and np.isfinite(y[1]).all()


@pytest.mark.parametrize("mode", ["embedding", "onehot"])
def test_a_token_model_streams_on_the_fast_path(mode):
    """Tokens are embedded, then take the fast path: steps and chunks equal the model's prediction."""
    m = rnnlab.SequenceModel(rnnlab.ModelConfig(input_size=7, output_size=7, hidden_size=6, target="every",
                                                input_mode=mode, embedding_dim=4, cell="gru", dtype="float64"),
                             seed=0)
    tokens = np.random.default_rng(3).integers(0, 7, (6, 2))
    with rnnlab.no_grad():
        want = m.predict(tokens)[0]
    s = rnnlab.Stream(m, batch_size=2)
    assert s._steps is not None
    got = np.concatenate([s.feed(tokens[0])[None], s.feed(tokens[1:4]), s.feed(tokens[4])[None], s.feed(tokens[5:])])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    with pytest.raises(ValueError, match="tokens in"):
        s.feed(np.array([7, 0]))


def test_the_fast_path_refuses_what_the_layer_refuses():
    from rnnlab.errors import DTypeError, NonFiniteError
    s = rnnlab.Stream(rnnlab.GRU(3, 4), batch_size=1)
    assert s._steps is not None
    for x in (np.zeros((1, 3), int), np.zeros((2, 1, 3), int)):
        with pytest.raises(DTypeError, match="floating-point"):
            s.feed(x)
    with pytest.raises(NonFiniteError, match="NaN or Inf"):
        s.feed(np.full((2, 1, 3), np.inf, np.float32))


def test_refusals():
    with pytest.raises(ConfigError, match="bidirectional"):
        rnnlab.Stream(rnnlab.GRU(2, 3, bidirectional=True))
    with pytest.raises(ConfigError, match="batch_first"):
        rnnlab.Stream(rnnlab.GRU(2, 3, batch_first=True))
    s = rnnlab.Stream(rnnlab.GRU(2, 3), batch_size=2)
    with pytest.raises(ShapeError, match="for 2 stream"):
        s.feed(np.zeros((5, 3, 2)))
    with pytest.raises(ShapeError, match="active"):
        s.feed(np.zeros((5, 2, 2)), active=np.ones((4, 2), bool))
    for rows in ([5], np.ones(3, bool), [0.5], [[0, 1]]):
        with pytest.raises(ShapeError, match="rows"):
            s.reset(rows)
    s.feed(np.ones((1, 2, 2)))
    s.reset(np.array([False, True]))                    # a mask: only the second stream's state
    assert s.state[:, 0].any() and not s.state[:, 1].any()
    s.reset([])                                         # no stream: nothing reset
    assert s.state[:, 0].any()
    s.reset([-2])                                       # an index from the end, as NumPy's
    assert not s.state.any()
    with pytest.raises(ShapeError, match=r"in \[-2, 1\]"):
        s.reset([-3])


def test_predict_each_step_streams_a_run(tmp_path):
    """`rnnlab predict --each-step --chunk N`: a row per step, its last row per id equal to predict's."""
    pd = pytest.importorskip("pandas")
    import subprocess
    import sys
    examples = ROOT / "examples"

    def cli(*args):
        p = subprocess.run([sys.executable, "-m", "rnnlab", *args], capture_output=True, text=True, cwd=examples,
                           timeout=300)
        assert p.returncode == 0, p.stderr
        return p

    run = tmp_path / "run"
    cli("train", "--data", "visits.csv", "--id-col", "patient", "--time-col", "visit", "--target-col", "outcome",
        "--model", "gru", "--steps", "10", "--hidden-size", "8", "--quiet", "--out", str(run))
    cli("predict", str(run), "--data", "new_visits.csv", "--out", str(tmp_path / "last.csv"))
    cli("predict", str(run), "--data", "new_visits.csv", "--out", str(tmp_path / "steps.csv"), "--each-step",
        "--chunk", "3")
    last, steps = pd.read_csv(tmp_path / "last.csv"), pd.read_csv(tmp_path / "steps.csv")
    visits = pd.read_csv(examples / "new_visits.csv")
    assert len(steps) == len(visits) and list(steps.columns[:2]) == ["patient", "visit"]
    end = steps.groupby("patient").tail(1).set_index("patient").loc[last["patient"]]
    np.testing.assert_allclose(end["p_sick"].to_numpy(), last["p_sick"].to_numpy(), rtol=1e-6)
    assert (end["prediction"].to_numpy() == last["prediction"].to_numpy()).all()
    p = subprocess.run([sys.executable, "-m", "rnnlab", "predict", str(run), "--data", "new_visits.csv", "--out",
                        str(tmp_path / "x.csv"), "--chunk", "2"], capture_output=True, text=True, cwd=examples)
    assert p.returncode == 2 and "--chunk" in p.stderr and "--each-step" in p.stderr


@pytest.mark.parametrize("cell,kw", [("rnn", {}), ("rnn", {"nonlinearity": "relu"}), ("lstm", {}),
                                     ("lstm", {"peephole": True}), ("gru", {}), ("gru", {"reset": "before"}),
                                     ("lstm", {"bias": False}), ("gru", {"layer_norm": True}), ("lstm", {"proj_size": 3})])
@pytest.mark.parametrize("B", [1, 3])
def test_one_step_fast_path_equals_the_layers_forward(cell, kw, B):
    """A step fed alone runs the StepCalls (arrays made once); the same steps through the layer's forward (the
    fast path switched off) give bit-identical outputs and states, streams masked on and off included."""
    dt = "float32"
    layer = LAYERS[cell](4, 6, num_layers=2, seed=3, dtype=dt, **kw)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((9, B, 4)).astype(dt)
    active = rng.random((9, B)) < 0.7
    fast, slow = rnnlab.Stream(layer, batch_size=B), rnnlab.Stream(layer, batch_size=B)
    slow._steps = None
    uses = fast._steps is not None
    if not kw or kw in ({"nonlinearity": "relu"}, {"reset": "before"}, {"bias": False}):
        assert uses                                       # the short call's cells and options
    if kw.get("layer_norm") or kw.get("proj_size"):
        assert not uses                                   # what the fast path leaves to the layer's forward
    for t in range(9):
        a = fast.feed(x[t], active=active[t] if t % 2 else None)
        b = slow.feed(x[t], active=active[t] if t % 2 else None)
        np.testing.assert_array_equal(a, b)
        if t == 4:                                        # a chunk in between goes through the layer's forward
            np.testing.assert_array_equal(fast.feed(x[:3]), slow.feed(x[:3]))
    for u, v in zip(states(fast.state), states(slow.state), strict=True):
        np.testing.assert_array_equal(u, v)
    with pytest.raises(ValueError, match="NaN"):
        fast.feed(np.full((B, 4), np.nan, dt))
    with pytest.raises(ShapeError):
        fast.feed(np.zeros((B, 5), dt))


# ------------------------------------------------------------------ the units split of a stream
@pytest.mark.parametrize("cell,kw", [("lstm", {}), ("gru", {}), ("rnn", {"nonlinearity": "relu"}),
                                     ("lstm", {"bias": False})])
def test_the_units_split_streams_like_one_pass(cell, kw, monkeypatch):
    """Where the layer's inference splits its units over threads, a stream does too, its worker threads kept
    waiting between calls (``_kernels.units_stream``): steps and ragged chunks, streams masked on and off, two
    layers, equal one pass over the sequence (float64); a weight changed in place is seen at the next step."""
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "2")
    from rnnlab.engine._kernels.units_stream import UnitsStream
    layer = LAYERS[cell](5, 16, num_layers=2, seed=2, dtype="float64", backend="units", **kw)
    T = sum(CHUNKS) + 2
    x = np.random.default_rng(5).standard_normal((T, 1, 5))
    s = rnnlab.Stream(layer, batch_size=1)
    assert isinstance(s._steps, UnitsStream) and s._steps.n == 2
    got, t = [], 0
    for n in CHUNKS + (1, 1):
        got.append(s.feed(x[t:t + n]) if n > 1 else s.feed(x[t])[None])
        t += n
    want, want_state = one_pass(layer, x)
    np.testing.assert_allclose(np.concatenate(got), want, rtol=1e-12, atol=1e-12)
    for a, b in zip(states(s.state), states(want_state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    # a stream without the step keeps its state and gives 0
    before = states(s.state)
    assert not s.feed(x[0], active=np.array([False])).any()
    for a, b in zip(states(s.state), before, strict=True):
        np.testing.assert_array_equal(a, b)
    # weights changed in place: the next step reads them
    s.reset()
    layer.layer_params(1, 0)[1][...] *= 0.5
    want2, _ = one_pass(layer, x[:2])
    np.testing.assert_allclose(np.concatenate([s.feed(x[0])[None], s.feed(x[1])[None]]), want2, rtol=1e-12,
                               atol=1e-12)
    thread = s._steps.workers[1]["thread"]
    h = states(s.state)
    s.close()                                           # the workers stop; the stream goes on without them
    thread.join(10)
    assert not thread.is_alive() and s._steps is None
    for a, b in zip(states(s.state), h, strict=True):
        np.testing.assert_array_equal(a, b)
    want3, _ = one_pass(layer, x[:3])
    np.testing.assert_allclose(s.feed(x[2]), want3[2], rtol=1e-12, atol=1e-12)


def test_the_units_streams_workers_sleep_end_and_stop(monkeypatch):
    """A worker with no step for a while sleeps (and is woken by the next), one asleep IDLE_S ends its thread
    (the next step starts another), and the stream's collection stops them: the results stay equal."""
    import gc
    import time
    from rnnlab.engine._kernels import units_stream
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "2")
    monkeypatch.setattr(units_stream, "IDLE_S", 0.2)
    layer = rnnlab.GRU(3, 16, num_layers=2, seed=0, dtype="float64", backend="units")    # the kernels compiled above
    x = np.random.default_rng(6).standard_normal((4, 1, 3))
    want, _ = one_pass(layer, x)
    s = rnnlab.Stream(layer, batch_size=1)
    w = s._steps.workers[1]
    got = [s.feed(x[0])]
    thread = w["thread"]
    assert thread.is_alive()
    time.sleep(0.05)                                    # past the spinning: the worker sleeps
    got.append(s.feed(x[1]))
    assert w["thread"] is thread
    deadline = time.time() + 10
    while thread.is_alive() and time.time() < deadline:  # asleep past IDLE_S: the thread ends
        time.sleep(0.05)
    assert not thread.is_alive() and not w["thread"].is_alive()
    got.append(s.feed(x[2]))                            # a new thread serves the next step
    got.append(s.feed(x[3]))
    assert w["thread"] is not thread and w["thread"].is_alive()
    np.testing.assert_allclose(np.array(got), want, rtol=1e-12, atol=1e-12)
    last = w["thread"]
    del s
    gc.collect()
    last.join(10)
    assert not last.is_alive()


def test_a_forked_child_streams_with_its_own_workers(monkeypatch):
    """A child forked after the stream's workers started makes its own (else its first step would wait for ever
    for threads it does not have)."""
    import os
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "2")
    layer = rnnlab.LSTM(3, 16, num_layers=2, seed=0, dtype="float64", backend="units")
    x = np.random.default_rng(7).standard_normal((2, 1, 3))
    want, _ = one_pass(layer, x)
    s = rnnlab.Stream(layer, batch_size=1)
    s.feed(x[0])
    pid = os.fork()
    if pid == 0:                                        # the child: exit 0 when its step is right
        import signal
        signal.alarm(60)
        ok = np.allclose(s.feed(x[1]), want[1], rtol=1e-12, atol=1e-12)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    np.testing.assert_allclose(s.feed(x[1]), want[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("where", ["post", "wake"])
def test_a_units_stream_call_interrupted_between_post_and_run_still_runs_its_step(where, monkeypatch):
    """A KeyboardInterrupt between the post of a job and its run (as the post returns, or in the wake of a
    sleeping worker) raises after the step is taken; the stream goes on right (the workers had served the posted
    job with the next call's inputs, one step behind for good)."""
    import time
    from rnnlab.engine._kernels import units_stream
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "2")
    layer = rnnlab.GRU(3, 16, num_layers=2, seed=0, dtype="float64", backend="units")    # the kernels compiled above
    x = np.random.default_rng(8).standard_normal((5, 1, 3))
    want, _ = one_pass(layer, x)
    s = rnnlab.Stream(layer, batch_size=1)
    got = [s.feed(x[0])]
    deadline = time.time() + 10
    while s._steps.ctl[1, units_stream.POSTED] < units_stream.SLEEP and time.time() < deadline:
        time.sleep(0.01)                                # past the spinning: the worker sleeps
    name = {"post": "post_and_run", "wake": "_wake"}[where]
    owner = units_stream if where == "post" else units_stream.UnitsStream
    real = getattr(owner, name)

    def interrupted(*args):
        monkeypatch.setattr(owner, name, real)
        if where == "post":
            real(*args)                                 # posted: the interrupt lands as the call returns
        raise KeyboardInterrupt
    monkeypatch.setattr(owner, name, interrupted)
    with pytest.raises(KeyboardInterrupt):
        s.feed(x[1])
    np.testing.assert_allclose(s.state, one_pass(layer, x[:2])[1], rtol=1e-12, atol=1e-12)    # the step taken
    got.append(want[1])
    for t in range(2, 5):
        time.sleep(0.01 * (t % 2))
        got.append(s.feed(x[t]))
    np.testing.assert_allclose(np.array(got), want, rtol=1e-12, atol=1e-12)
    s.close()


@pytest.mark.parametrize("where", ["between the layers", "as the last layer returns"])
@pytest.mark.parametrize("chunk", [1, 3])
def test_a_one_thread_stream_interrupted_between_its_layers_keeps_them_at_one_step(where, chunk):
    """A KeyboardInterrupt after the first layer's call and before the second's (or after the second's, as its
    call returns) raises with the step taken by every layer: the stream goes on equal to one pass (the second
    layer had stayed a step behind the first for good)."""
    layer = rnnlab.LSTM(3, 5, num_layers=2, seed=0, dtype="float64")
    x = np.random.default_rng(9).standard_normal((4 * chunk, 1, 3))
    want, _ = one_pass(layer, x)
    s = rnnlab.Stream(layer, batch_size=1)
    chain = s._steps
    assert type(chain).__name__ == "_Chain"
    got = [s.feed(x[:chunk])]
    second = chain.calls[1]
    real = type(second).__call__

    class Interrupted(type(second)):
        def __call__(self, *args):
            self.__class__ = type(second).__mro__[1]    # once
            if where == "as the last layer returns":
                real(self, *args)
            raise KeyboardInterrupt
    second.__class__ = Interrupted
    with pytest.raises(KeyboardInterrupt):
        s.feed(x[chunk:2 * chunk])
    np.testing.assert_allclose(s.state[0], one_pass(layer, x[:2 * chunk])[1][0], rtol=1e-12, atol=1e-12)
    got.append(want[chunk:2 * chunk])
    got.extend(s.feed(x[t * chunk:(t + 1) * chunk]) for t in (2, 3))
    np.testing.assert_allclose(np.concatenate(got), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw", [{"dropout": 0.5, "num_layers": 2}, {"input_dropout": 0.5}, {"recurrent_dropout": 0.5}])
def test_a_layer_training_with_dropout_streams_through_its_forward(kw):
    """In training the layer draws its dropout, which the fast path does not: steps and chunks take the layer's
    forward (the same draws as a stream without the fast path); in evaluation, the fast path again."""
    import copy
    layer = rnnlab.GRU(3, 6, seed=0, dtype="float64", **kw)
    x = np.random.default_rng(9).standard_normal((5, 2, 3))
    fast, slow = rnnlab.Stream(layer, batch_size=2), rnnlab.Stream(layer, batch_size=2)
    assert fast._steps is not None
    slow._steps = None
    for chunk in (x[0], x[1:4], x[4]):
        rng = copy.deepcopy(layer.rng)
        a = fast.feed(chunk)
        layer.rng = rng
        np.testing.assert_array_equal(a, slow.feed(chunk))
    layer.eval()
    ya = np.concatenate([fast.feed(x[:2]), fast.feed(x[2])[None]])
    np.testing.assert_array_equal(ya, slow.feed(x[:3]))


def test_a_units_streams_workers_compute_with_its_vector_width(monkeypatch):
    """A worker thread started after the process's RNNLAB_SIMD changed takes the stream's variant, as the caller
    does (it read the setting again: a wrong one ended the thread, and the caller waited for it for good)."""
    import threading
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "2")
    layer = rnnlab.GRU(3, 16, num_layers=2, seed=0, dtype="float64", backend="units")    # the kernels compiled above
    x = np.random.default_rng(10).standard_normal((1, 1, 3))
    want, _ = one_pass(layer, x)
    s = rnnlab.Stream(layer, batch_size=1)              # no worker thread yet: the first step starts it
    monkeypatch.setenv("RNNLAB_SIMD", "none")
    got = []
    caller = threading.Thread(target=lambda: got.append(s.feed(x[0])), daemon=True)
    caller.start()
    caller.join(60)
    assert got, "the step never returned"
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=1e-12)
    s.close()


def test_a_units_stream_interrupted_as_it_takes_its_lock_goes_on(monkeypatch):
    """A KeyboardInterrupt as ``threading.Condition.__enter__`` returns (Python code: the lock taken, and no
    ``with`` yet to give it back) must not leave the stream's lock held by the caller: the worker it wakes would
    wait for the lock for good, and the caller, in compiled code, for the worker. (The caller here is a thread of
    its own, so that a stream stuck fails the test instead of hanging it.)"""
    import threading
    import time
    from rnnlab.engine._kernels import units_stream
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "2")
    layer = rnnlab.GRU(3, 16, num_layers=2, seed=0, dtype="float64", backend="units")    # the kernels compiled above
    x = np.random.default_rng(11).standard_normal((4, 1, 3))
    want, _ = one_pass(layer, x)
    s = rnnlab.Stream(layer, batch_size=1)
    got = []

    def caller():
        got.append(s.feed(x[0]))
        deadline = time.time() + 10
        while s._steps.ctl[1, units_stream.POSTED] < units_stream.SLEEP and time.time() < deadline:
            time.sleep(0.01)                            # past the spinning: the worker sleeps
        cond, me = s._steps.cond, threading.get_ident()

        class Interrupted(type(cond)):
            def __enter__(self):
                taken = super().__enter__()
                if threading.get_ident() == me:         # the caller's thread (where a signal lands)
                    self.__class__ = Interrupted.__bases__[0]
                    raise KeyboardInterrupt
                return taken
        cond.__class__ = Interrupted
        try:
            got.append(s.feed(x[1]))
        except KeyboardInterrupt:
            got.append(want[1])                         # the step taken all the same
        cond.__class__ = Interrupted.__bases__[0]
        got.extend(s.feed(x[t]) for t in (2, 3))
    thread = threading.Thread(target=caller, daemon=True)
    thread.start()
    thread.join(60)
    assert len(got) == 4, "the stream's steps never returned"
    np.testing.assert_allclose(np.array(got), want, rtol=1e-12, atol=1e-12)
    s.close()
