"""rnnlab.engine.dispatch: the automatic choice, named errors where a backend cannot serve a call, typed caches, the
batch split's share as a function of given durations, and imports that run one way through the package."""
import ast
import pathlib

import numpy as np
import pytest

import rnnlab
from rnnlab.engine import dispatch
from rnnlab.errors import BackendError, ConfigError
from support import BACKENDS, needs_numba

SRC = pathlib.Path(rnnlab.__file__).parent


@needs_numba
def test_auto_choice(monkeypatch):
    c = dispatch.choose
    monkeypatch.setenv("RNNLAB_SIMD", "avx2")
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "2")
    assert c("auto", "lstm", {}, 1, 128, 32, None) == "loop"
    assert c("auto", "lstm", {}, 128, 2048, 512, None) == "split"
    assert c("auto", "rnn", {}, 128, 512, 512, None) == "split"
    assert c("auto", "gru", {}, 128, 1536, 512, None) == "split"
    assert c("auto", "lstm", {}, 2, 256, 64, None) == "split"            # one row per thread, enough work
    assert c("auto", "lstm", {}, 2, 128, 32, None) == "loop"             # too little work per thread
    assert c("auto", "lstm", {}, 1, 2048, 512, None) == "loop"           # one row: no split
    assert c("auto", "gru", {"reset": "before"}, 128, 1536, 512, None) == "split"    # every cell on every path
    assert c("auto", "lstm", {}, 128, 2048, 512, None, options=("zoneout",)) == "split"   # and every option
    assert c("auto", "lstm", {}, 128, 2048, 512, None, reference=True) == "numpy"     # peepholes, projections
    assert c("numba", "lstm", {}, 1, 4, 1, None) == "loop"
    assert c("auto", "lstm", {}, 128, 2048, 512, 10) == "numpy"          # bptt_segment: the reference
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "1")
    assert c("auto", "lstm", {}, 128, 2048, 512, None) == "loop"
    for name in ("numpy", "loop"):                                       # a named backend is what runs
        assert c(name, "lstm", {}, 128, 2048, 512, None) == name


def test_unknown_backend_is_refused():
    with pytest.raises(ConfigError, match=r"backend: expected one of \['auto', 'loop', 'numba'"):
        rnnlab.LSTM(2, 3, backend="cuda")


@needs_numba
def test_a_backend_that_cannot_serve_says_so(monkeypatch):
    with pytest.raises(BackendError, match="'units' serves cells with one product per step .* got gru-before"):
        rnnlab.GRU(2, 3, reset="before", backend="units")
    with pytest.raises(ConfigError, match="'hybrid' .* was folded into 'loop'.*; use 'loop' or 'auto'"):
        rnnlab.GRU(2, 3, backend="hybrid")
    for name in ("loop", "split", "numba"):
        with pytest.raises(BackendError, match=f"bptt_segment: .* backend='numpy' only, got backend='{name}'"):
            rnnlab.LSTM(2, 3, bptt_segment=4, backend=name)
    layer = rnnlab.LSTM(2, 3, backend="split")
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "1")
    with pytest.raises(BackendError, match=r"'split' needs at least 2 threads and 2 batch rows, got 1 thread\(s\)"):
        layer(np.ones((4, 3, 2), np.float32))
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "2")
    with pytest.raises(BackendError, match="for B=1"):
        layer(np.ones((4, 1, 2), np.float32))
    loop = rnnlab.LSTM(2, 3, backend="loop")
    out, _ = loop(np.ones((4, 2, 2)))
    with pytest.raises(BackendError, match="record_state_grads: .* backend='numpy' only; the last forward ran on "
                                           "backend='loop'"):
        loop.backward(np.ones_like(out), record_state_grads=True)


def test_compiled_backend_without_numba_names_the_package(monkeypatch):
    monkeypatch.setattr(dispatch.kernels, "available", lambda: False)
    for name in ("loop", "split", "numba"):
        with pytest.raises(ConfigError, match="needs the numba package; install it with: pip install numba"):
            rnnlab.RNN(2, 3, backend=name)
    assert rnnlab.RNN(2, 3).last_backend is None
    layer = rnnlab.RNN(2, 3)
    layer(np.ones((3, 2, 2)))
    assert layer.last_backend == "numpy"                                 # auto without numba: the reference


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls,names", [(rnnlab.LSTM, "ifgo"), (rnnlab.GRU, "rzn")])
def test_gates_are_read_by_name_on_every_backend(cls, names, backend, monkeypatch):
    """The public ``layer.gates(l, d)`` gives the same gate activations whichever backend made the cache."""
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "2")
    x = np.random.default_rng(0).standard_normal((5, 3, 2))
    ref = cls(2, 4, 2, bidirectional=True, dtype="float64", seed=1, backend="numpy")
    layer = cls(2, 4, 2, bidirectional=True, dtype="float64", seed=1, backend=backend)
    ref(x)
    layer(x)
    for l in (0, 1):
        for d in (0, 1):
            g_ref, g = ref.gates(l, d), layer.gates(l, d)
            assert sorted(g) == sorted(names)
            for k in names:
                assert g[k].shape == (5, 3, 4)
                np.testing.assert_allclose(g[k], g_ref[k], rtol=0, atol=1e-12)
    with pytest.raises(ConfigError, match=r"l: expected an integer <= 1, got 2"):
        layer.gates(2)


def test_caches_are_typed():
    from rnnlab.engine._caches import DirCache, ForwardCache, LayerCache, StepCaches
    layer = rnnlab.LSTM(2, 3, 2, backend="numpy")
    layer(np.ones((4, 2, 2), np.float32))
    c = layer._cache
    assert isinstance(c, ForwardCache) and c.backend == "numpy" and (c.T, c.B, c.n_state) == (4, 2, 2)
    assert all(isinstance(lc, LayerCache) for lc in c.layers)
    dc = c.layers[1].dirs[0]
    assert isinstance(dc, DirCache) and isinstance(dc.arrays, StepCaches) and dc.cell == "lstm"
    assert dc.arrays.steps[0]._fields == ("h_prev", "c_prev", "i", "f", "g", "o", "tanh_c", "c", "ln")  # c, ln: options


def test_rebalance_is_a_function_of_the_durations():
    from rnnlab.engine._kernels.split import SHARE_MAX, SHARE_MIN, rebalance
    assert rebalance(0.5, 10, 10, 1.0, 1.0) == pytest.approx(0.5)                 # equal speeds: unchanged
    # thread 0 twice as fast (10 rows in 1 s against 10 rows in 2 s): the share that equalises is 2/3
    assert rebalance(0.5, 10, 10, 1.0, 2.0) == pytest.approx(0.7 * 0.5 + 0.3 * 2 / 3)
    assert rebalance(0.5, 10, 10, 2.0, 1.0) == pytest.approx(0.7 * 0.5 + 0.3 / 3)
    share = 0.5
    for _ in range(50):                                                          # converges, within the bounds
        share = rebalance(share, 10, 10, 1.0, 9.0)
    assert share == pytest.approx(SHARE_MAX)
    assert rebalance(0.4, 8, 12, 1.0, 1e-5) == 0.4                               # too short to tell
    assert rebalance(SHARE_MIN, 1, 19, 100.0, 1.0) == pytest.approx(SHARE_MIN)


# ------------------------------------------------------------------ imports run one way
def _imports(path: pathlib.Path, modname: str):
    """The rnnlab modules a module imports, anywhere in it (function bodies included)."""
    pkg = modname if path.name == "__init__.py" else modname.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("rnnlab"):
                for alias in node.names:                                         # `from . import engine`
                    sub = f"{target}.{alias.name}"
                    found.add(sub if (SRC.parent / (sub.replace(".", "/") + ".py")).exists()
                              or (SRC.parent / sub.replace(".", "/")).is_dir() else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("rnnlab"))
    return found


def test_no_import_circle_in_the_package():
    graph = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        graph[name] = _imports(path, name)
    # a package's __init__ re-exports its modules; importing a submodule imports its package first anyway
    for name in graph:
        graph[name] = {t for t in graph[name] if t != name and not name.startswith(t + ".")}
    graph["rnnlab"] = set()
    seen, stack = {}, []

    def visit(n):
        seen[n] = "active"
        stack.append(n)
        for t in sorted(graph.get(n, ())):
            if seen.get(t) == "active":
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in seen:
                visit(t)
        stack.pop()
        seen[n] = "done"
    for n in sorted(graph):
        if n not in seen:
            visit(n)
    assert "rnnlab.interop.torch" not in graph["rnnlab.engine.layers"]                 # layers -> interop: never
    assert not any(t.startswith("rnnlab.engine.dispatch") for k in graph if k.startswith("rnnlab.engine._kernels")
                   for t in graph[k])


def test_blas_single_thread_context_restores_and_nests():
    from threadpoolctl import threadpool_info
    from rnnlab.engine.dispatch import blas_single_thread

    def blas_threads():                                     # NumPy's BLAS: the one rnnlab's products use
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas" and "numpy" in i["filepath"]]
    before = blas_threads()
    assert before
    with blas_single_thread():
        assert all(n == 1 for n in blas_threads())
        with blas_single_thread():
            assert all(n == 1 for n in blas_threads())
        assert all(n == 1 for n in blas_threads())          # the inner exit keeps the outer setting
    assert blas_threads() == before


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls,names", [(rnnlab.RNN, ["h_prev"]), (rnnlab.LSTM, ["c_prev", "h_prev"]),
                                       (rnnlab.GRU, ["h_prev"])])
def test_states_are_read_by_name_on_every_backend(cls, names, backend, monkeypatch):
    """``layer.states(l, d)``: the state entering each step, the same on every backend, padded steps
    included (they carry the state), and h_prev[t + 1] is the output at t on valid steps."""
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "2")
    x = np.random.default_rng(1).standard_normal((6, 3, 2))
    lengths = np.array([6, 2, 4])
    ref = cls(2, 4, 2, bidirectional=True, dtype="float64", seed=3, backend="numpy")
    layer = cls(2, 4, 2, bidirectional=True, dtype="float64", seed=3, backend=backend)
    ref(x, lengths=lengths)
    out, _ = layer(x, lengths=lengths)
    for l in (0, 1):
        for d in (0, 1):
            s_ref, s = ref.states(l, d), layer.states(l, d)
            assert sorted(s) == names
            for k in names:
                np.testing.assert_allclose(s[k], s_ref[k], rtol=0, atol=1e-12)
    h = layer.states(1, 0)["h_prev"]
    np.testing.assert_allclose(h[1:, 0], out[:-1, 0, :4], rtol=0, atol=1e-12)   # row 0 is never padded
    assert not np.isnan(h).any()
    with pytest.raises(RuntimeError, match="states: no forward with gradients"):
        cls(2, 4).states()
    kept = layer.states(0, 0)["h_prev"]
    copy = kept.copy()
    layer(x[::-1].copy(), lengths=lengths)                               # the next forward reuses the caches
    np.testing.assert_array_equal(kept, copy)                           # what the caller holds is a copy


@pytest.mark.parametrize("cls,kw", [(rnnlab.LSTM, {"layer_norm": True, "zoneout": 0.2, "zoneout_cell": 0.1}),
                                    (rnnlab.GRU, {"layer_norm": True}), (rnnlab.engine.layers.MinGRU, {})])
def test_the_diagnostics_prefix_is_the_stacks_layer(cls, kw):
    """diagnostics.layer_inputs runs earlier layers as the one stack does (layer norm, zoneout's expected mix at
    evaluation, both directions): the input it gives layer 1 is the stack's own. On the reference (the compiled
    loop's evaluation equals it with these options: test_variants.py)."""
    from rnnlab.study import diagnostics
    rng = np.random.default_rng(0)
    layer = cls(3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=1, backend="numpy", **kw).eval()
    for v in layer.parameters():
        v[...] = rng.normal(0, 0.5, v.shape)
    x = rng.standard_normal((6, 2, 3))
    out, _ = layer(x)
    layer.backward(np.ones_like(out))                       # keeps the forward's caches
    np.testing.assert_allclose(diagnostics._run_prefix(layer, x, 0), layer._cache.layers[1].x, rtol=0, atol=1e-12)


def test_the_class_hierarchy_tells_the_truth():
    """Every layer is a RecurrentLayer; the classic cells are DenseLayers with the W_ih/W_hh quadruple, the
    diagonal ones are not and have no such method to refuse; the shared base cannot be built on its own."""
    from rnnlab.engine.layers import LAYERS, DenseLayer, DiagonalLayer, RecurrentLayer
    for name, cls in LAYERS.items():
        layer = cls(3, 4, seed=0)
        assert isinstance(layer, RecurrentLayer)
        dense = isinstance(layer, DenseLayer)
        assert dense != isinstance(layer, DiagonalLayer), name
        assert layer.family == ("dense" if dense else "diagonal")
        assert hasattr(layer, "layer_params") == dense
        assert hasattr(layer, "direction_params") != dense
        if dense:
            W_ih, W_hh, b_ih, b_hh = layer.layer_params(0, 0)
            assert W_ih.shape == (layer.gate_size, 3) and W_hh.shape == (layer.gate_size, layer.output_size)
    with pytest.raises(NotImplementedError, match="a layer family defines"):
        RecurrentLayer(3, 4)
