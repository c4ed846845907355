"""A new cell from outside the package: its NumPy step, its compiled row kernels and one registration, in this
file only. It then runs on every backend (the NumPy reference, the shared compiled loop on one thread with
one-row and packed products, the batch split, the unit split for inference), passes the finite-difference
check (masks, layers, directions, recurrent dropout and zoneout), matches the reference on the compiled paths,
trains from the command line, and an edited row kernel is compiled afresh (not served stale from Numba's cache).

The cell: a leaky-integrator RNN (Jaeger et al. 2007), h_t = h_{t-1} + ALPHA (tanh(a_t) - h_{t-1}),
a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh; backward: da = dh ALPHA (1 - u^2) with u = tanh(a),
dh_{t-1} = dh (1 - ALPHA) + da W_hh.
"""
import subprocess
import sys
import textwrap
from typing import NamedTuple

import numpy as np
import pytest

import rnnlab
from rnnlab.engine.gradcheck import check_layer
from rnnlab.engine.registry import CellSpec, register
from support import HAS_NUMBA, REFERENCE, STRATEGIES, needs_numba, use_backend

ALPHA = 0.5
G, STATE, GATES = 1, ("h",), ()


class StepCache(NamedTuple):
    h_prev: np.ndarray          # the product's operand (masked under recurrent dropout)
    h_old: np.ndarray           # h_{t-1} itself
    u: np.ndarray               # tanh(a_t)


def step_forward(xw, state, W_hh, b_hh, rec_mask=None):
    (h,) = state
    hm = h if rec_mask is None else h * rec_mask
    a = xw + hm @ W_hh.T + (0.0 if b_hh is None else b_hh)
    u = np.tanh(a)
    return (h + ALPHA * (u - h),), StepCache(hm, h, u)


def step_backward(dstate, cache, W_hh, rec_mask=None):
    (dh,) = dstate
    da = dh * ALPHA * (1.0 - cache.u * cache.u)
    dh_prev = dh * (1.0 - ALPHA) + (da @ W_hh) * (1.0 if rec_mask is None else rec_mask)
    return da, da, (dh_prev,)


def grad_W_hh(dHW, caches, **_):
    H_prev = np.stack([c.h_prev for c in caches])
    return dHW.reshape(-1, dHW.shape[-1]).T @ H_prev.reshape(-1, H_prev.shape[-1])


def _kernel():
    """The compiled half: one batch row of one step, forward and backward, and its CellKernel."""
    from numba import njit

    from rnnlab.engine._kernels.cell import CellKernel

    @njit(inline="always", error_model="numpy")
    def fwd(p, A, X, st, r, C, rc, copt):
        S, N = st[0], st[2]
        for k in range(S.shape[2]):
            a = A[r, k] + X[r, k] if X.shape[0] > 0 else A[r, k]
            u = np.tanh(a)
            C[rc, k] = u
            N[0, r, k] = S[0, r, k] + ALPHA * (u - S[0, r, k])

    @njit(inline="always", error_model="numpy")
    def bwd(p, G, r, C, rc, Hp, hn, D, copt):
        DX, dD = D[0], D[2]
        for k in range(dD.shape[2]):
            u = C[rc, k]
            DX[rc, k] = G[0, r, k] * ALPHA * (1.0 - u * u)
            dD[0, r, k] = G[0, r, k] * (1.0 - ALPHA)
    return CellKernel("leaky", fwd, bwd, g1=1, cache=("u",), serves=("recurrent_dropout", "zoneout"))


@pytest.fixture(scope="module")
def leaky():
    """The registered cell's layer class, for this file's tests only: unregistered after them (the tests that
    follow see rnnlab's own cells)."""
    from rnnlab.engine import layers, registry
    kern = _kernel() if HAS_NUMBA else None
    register(CellSpec("leaky", sys.modules[__name__], (lambda opts: kern) if kern else None))
    yield layers.layer_class("leaky")
    for table in (registry.SPECS, registry.CELLS, layers.LAYERS):
        table.pop("leaky", None)


@pytest.fixture
def fixed_masks(monkeypatch):
    """Each layer and direction draws its dropout and zoneout masks once; the finite differences reuse them."""
    drawn, real = {}, rnnlab.engine.dispatch.variational_masks

    def once(layer, l, d, shape):
        return drawn.setdefault((id(layer), l, d, shape), real(layer, l, d, shape))
    monkeypatch.setattr(rnnlab.engine.dispatch, "variational_masks", once)


@pytest.mark.parametrize("backend", [REFERENCE] + STRATEGIES)
def test_every_gradient_on_every_backend(leaky, backend, fixed_masks, monkeypatch):
    backend = use_backend(backend, monkeypatch)
    rng = np.random.default_rng(0)
    layer = leaky(3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=1, backend=backend,
                  recurrent_dropout=0.3, zoneout=0.2)
    for v in layer.parameters():
        v[...] = rng.normal(0, 0.5, v.shape)
    errors = check_layer(layer, rng.standard_normal((6, 3, 3)), rng.standard_normal((4, 3, 4)),
                         lengths=np.array([6, 2, 4]))
    assert max(errors.values()) < 1e-6, errors
    assert layer.last_backend == backend


@needs_numba
@pytest.mark.parametrize("backend", STRATEGIES)
def test_compiled_equals_the_reference(leaky, backend, monkeypatch):
    backend = use_backend(backend, monkeypatch)
    rng = np.random.default_rng(1)
    x, lengths, w = rng.standard_normal((7, 4, 3)), np.array([7, 5, 2, 6]), rng.standard_normal((7, 4, 10))
    got = {}
    for be in ("numpy", backend):
        layer = leaky(3, 5, num_layers=2, bidirectional=True, dtype="float64", seed=3, backend=be)
        out, h = layer(x, lengths=lengths)
        dx, dh = layer.backward(w * (np.arange(7)[:, None] < lengths)[..., None])
        assert layer.last_backend == be
        got[be] = [out, h, dx, dh] + [layer.grads[k] for k in sorted(layer.grads)]
        assert sorted(layer.states()) == ["h_prev"]
    for a, b in zip(got["numpy"], got[backend]):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)


@needs_numba
def test_unit_split_inference(leaky, monkeypatch):
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "2")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((9, 1, 3)).astype(np.float32)
    ref = leaky(3, 16, seed=0, backend="numpy")
    fast = leaky(3, 16, seed=0, backend="units")
    with rnnlab.no_grad():
        a, b = ref(x)[0], fast(x)[0]
    assert fast._choose(1, keep=False, T=9) == "units"
    np.testing.assert_allclose(b, a, rtol=0, atol=2e-6)


def test_trains_from_the_command_line(leaky, tmp_path):
    from rnnlab.cli import main as cli
    assert cli.main(["train", "--task", "copy", "--seq-len", "4", "--model", "leaky", "--hidden-size", "8",
                     "--steps", "20", "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert cli.main(["evaluate", str(tmp_path / "r")]) == 0


CELL_FILE = '''
import sys
import numpy as np
from numba import njit
import rnnlab
from rnnlab.engine._kernels.cell import CellKernel
from rnnlab.engine.registry import CellSpec, register
from rnnlab.engine.cells import rnn
SCALE = {scale}


@njit(inline="always", error_model="numpy")
def fwd(p, A, X, st, r, C, rc, copt):
    for k in range(st[0].shape[2]):
        st[2][0, r, k] = {expr}


@njit(inline="always", error_model="numpy")
def bwd(p, G, r, C, rc, Hp, hn, D, copt):
    for k in range(hn.shape[1]):
        D[0][rc, k] = G[0, r, k]
        D[2][0, r, k] = 0.0


kern = CellKernel("edited", fwd, bwd, g1=1)
register(CellSpec("edited", rnn, lambda opts: kern))
layer = rnnlab.engine.layers.layer_class("edited")(2, 3, seed=0, backend="loop")
out, _ = layer(np.ones((1, 1, 2), np.float32))
print(repr(float(out[-1, 0, 0])))
'''


@needs_numba
def test_an_edited_row_kernel_is_compiled_afresh(tmp_path):
    """Numba caches the shared loop by its own file; the cell token's type carries a digest of the row kernels'
    file, so a second process after an edit runs the new kernel, not the cached loop with the old one."""
    path = tmp_path / "edited_cell.py"

    def run(expr):
        path.write_text(textwrap.dedent(CELL_FILE.format(scale=2.0, expr=expr)))
        res = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        return float(res.stdout.strip().splitlines()[-1])
    first = run("A[r, k] + X[r, k]")
    assert run("A[r, k] + X[r, k]") == first                       # the same kernel, from the cache
    assert run("SCALE * (A[r, k] + X[r, k])") == pytest.approx(2 * first, rel=1e-6)


@needs_numba
def test_a_cells_properties_name_its_compiled_loops():
    """The loops compile a cell's properties in as constants (gate blocks, phases, the backward's reading of
    the new h, ...), and Numba's cache keys a loop by its signature: kernels of the same source with other
    properties (a registration edited in a file the digest does not read) get other token types, so a loop
    cached for the old properties is never served for the new ones."""
    from rnnlab.engine._kernels.cell import CellKernel
    k = _kernel()
    base = dict(g1=1, cache=("u",))
    changes = [{}, dict(g1=2), dict(phases=2, op2=0), dict(reads_new=True), dict(writes_dhw=True),
               dict(sums=False), dict(cache=("u", "v"))]
    names = {CellKernel("props", k.fwd, k.bwd, **{**base, **c}).plan(direct=True).nbtype.name for c in changes}
    assert len(names) == len(changes)
