"""A cell as the shared compiled loops see it: a token whose Numba type names the cell's row kernels.

The loops of ``_kernels.loop`` and the unit split of ``_kernels.units`` are written once, and take a token (a
``Plan``: the cell and a call's options) whose Numba *type* names the cell. ``_kernels.loop`` compiles a copy of
its loop per plan with the plan's row kernel among the copy's globals (``loop._compiled``); ``_kernels.units``
calls a stub (``fwd_row``, ``bwd_row``) with the token as first argument, an ``@overload`` that picks the
cell's row kernel by the token's type at typing time. Either way a loop compiles once per cell it meets (only
the cells a process uses compile), and Numba's disk cache keeps working: a closure over the kernels, or a
kernel passed as an argument, would miss it in every process (Numba hashes a closure's cells, and a compiled
function pickles with an identifier new in each process).

Numba keys a cached loop to the loop's own source file and its signature. A cell's row kernels live in another
file, so the token's type name carries a digest of the kernels' source files (and of the helpers they inline):
editing a row kernel gives a new type, and the loop compiles afresh instead of running a stale copy.

A cell's compiled half, ``CellKernel``:

    fwd(p, A, X, st, r, C, rc, copt)      phase p of one batch row r forward: A (B, G*H) the recurrent product
                                          (+ b_hh), X (B, G*H) x_t W_ih^T (+ b) or an empty array (then A holds
                                          the sum), st = (S, O, N): the states (n, B, H) entering the step, the
                                          products' operand h_{t-1} (* mask) (B, H), the new states (n, B, H);
                                          C (rows, KC) the cell's cache, row rc; copt: the cell's own bundle
    bwd(p, G, r, C, rc, Hp, hn, D, copt)  phase p back: G (n, B, H) dL/d(new states), Hp (rows, H) the h_{t-1}
                                          cache, hn (B, H) the new h (cells that read it), D = (DX, DHW, dD,
                                          DRH): dL/d(x W_ih^T) and dL/d(h W_hh^T) rows rc, the direct part of
                                          dL/d(states entering) (n, B, H), and (two-phase cells) the product of
                                          phase 2's gradient
    phases, g1, op2                       1 or 2 products per step; gate blocks of the first; phase 2's operand:
                                          the block op2 of the cache (the reset-before GRU's r * h)
    reads_new, writes_dhw, sums, kc       bwd reads the new h; DHW differs from DX; X and A enter as a sum (the
                                          [x h 1] product may fuse them); cache width in blocks of H
    cache, gates                          the names of the cache's blocks, and which are gate activations; a
                                          block "c_prev" is the second state entering the step (the loop
                                          writes it at padded rows too, for the diagnostics)
    plain                                 (fwd, bwd) for the shared loops' plans without layer norm (default:
                                          fwd and bwd): kernels with the code those plans never run left out
                                          (the LSTM's LN_c; X, always empty there for a cell that ``sums``),
                                          each a few hundred ms less to compile
"""
from __future__ import annotations

import hashlib
import inspect
import os
import warnings

from numba import types
from numba.core import cgutils
from numba.core.errors import NumbaIRAssumptionWarning
from numba.extending import NativeValue, models, overload, register_model, typeof_impl, unbox

from rnnlab.engine._kernels import cache_dir

cache_dir()     # a one-line error where Numba has nowhere to cache, and stale kernels dropped, before the first kernel

# The row kernels are inlined into the loops at Numba's IR level (a call per row costs the reference counts of
# a dozen arrays); Numba's SSA pass then warns, from a pedantic self-check, about the inlined loops' variables.
# The compiled code is right (every backend is tested against the NumPy reference); the warning is noise.
# (Raised from numba.core.ssa, or re-raised by Numba's compiler at the loop's file: filtered by category.)
warnings.filterwarnings("ignore", category=NumbaIRAssumptionWarning)

_KERNELS: dict = {}                         # type key -> CellKernel


class CellType(types.Type):
    """The Numba type of a cell token: its name is the cell's name and the digest of its kernels' sources."""

    def __init__(self, key):
        self.cell_key = key
        super().__init__(name=f"Cell({key})")


@register_model(CellType)
class _CellModel(models.StructModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, [])      # no data: the type is the whole message


def _digest(*funcs) -> str:
    """A short hash of the source files of the row kernels and of the helpers they inline."""
    here = os.path.dirname(os.path.abspath(__file__))
    files = {inspect.getsourcefile(f.py_func if hasattr(f, "py_func") else f) for f in funcs}
    files |= {os.path.join(here, "gates.py"), os.path.join(here, "packed_gemm.py")}
    h = hashlib.sha1()
    for path in sorted(files):
        with open(path, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()[:12]


class CellKernel:
    """The compiled half of one cell (see the module docstring). Instances are the tokens the loops take."""

    def __init__(self, name, fwd, bwd, *, phases=1, g1, op2=0, reads_new=False, writes_dhw=False, sums=True,
                 cache=(), gates=(), serves=(), copt=None, copt_grads=None, plain=None):
        self.name, self.fwd, self.bwd = name, fwd, bwd
        self.plain = tuple(plain) if plain is not None else (fwd, bwd)
        self.phases, self.g1, self.op2 = phases, g1, op2
        self.reads_new, self.writes_dhw, self.sums = reads_new, writes_dhw, sums
        self.cache = tuple(cache)           # the names of the cache's blocks of H columns
        self.kc = len(self.cache)
        self.gates = tuple(gates)           # the cache blocks that are gate activations (the diagnostics read them)
        if not set(self.gates) <= set(self.cache):
            raise ValueError(f"CellKernel {name!r}: gates {self.gates} must be blocks of the cache {self.cache}")
        self.serves = frozenset(serves)     # options on the shared loops: recurrent_dropout, zoneout, layer_norm
        # copt(opts, rows, B, H, dtype, ln) -> the cell's own bundle for one call (default: a placeholder);
        # copt_grads(copt) -> (the bundle with fresh gradient sums for a backward, {name: gradient} getter)
        self.copt = copt or (lambda opts, rows, B, H, dt, ln: (0,))
        self.copt_grads = copt_grads or (lambda copt: (copt, lambda c: {}))
        # the properties the loops compile in as constants, beside the kernels' digest: a cell registered from a
        # file other than its kernels' would otherwise meet a cached loop built for its old properties
        props = (f"g{g1}p{phases}o{op2}r{int(reads_new)}w{int(writes_dhw)}s{int(sums)}"
                 f"c{'.'.join(self.cache)}")
        self.key = f"{name}:{_digest(fwd, bwd, *self.plain)}:{props}"
        self.kern, self.flags = self, {}
        self.nbtype = self._numba_type_ = CellType(self.key)     # read by Numba's dispatcher: 1 µs less a call
        _KERNELS[self.key] = self
        self._plans = {}

    def plan(self, fused=False, direct=False, ln=False, zoneout=False) -> "Plan":
        """The token of one call: this cell and the options it runs with (``_kernels.loop`` compiles one loop
        per plan, with only the code its options need)."""
        key = (bool(fused), bool(direct), bool(ln), bool(zoneout))
        p = self._plans.get(key)
        if p is None:
            if self.sums and not (ln or fused or direct):       # the kernels of ``plain`` take X as empty
                raise ValueError(f"CellKernel {self.name!r}: a plan without layer norm for a cell whose products "
                                 f"enter as a sum is fused or direct")
            p = self._plans[key] = Plan(self, dict(zip(("direct", "fused", "ln", "zoneout"),
                                                        (key[1], key[0], key[2], key[3]))))
        return p

    def __repr__(self):
        return f"CellKernel({self.key})"


class Plan:
    """A cell's kernels and the options of one call, as one token: its type names both."""

    def __init__(self, kern, flags):
        self.kern, self.flags = kern, flags
        self.key = kern.key + "|" + ",".join(f"{k}={int(v)}" for k, v in sorted(flags.items()))
        self.nbtype = self._numba_type_ = CellType(self.key)
        _KERNELS[self.key] = self


@typeof_impl.register(CellKernel)
@typeof_impl.register(Plan)
def _typeof_cell(val, c):
    return val.nbtype


@unbox(CellType)
def _unbox_cell(typ, obj, c):
    return NativeValue(cgutils.create_struct_proxy(typ)(c.context, c.builder)._getvalue())


def _kernel(cell) -> CellKernel:
    return _KERNELS[cell.cell_key].kern


# ------------------------------------------------------------------ the stubs (``_kernels.units``, the tests)
# compiled with the loops' flags: fast math without nnan/ninf, NumPy's error model (a division check would stop
# vectorisation)
_JIT = {"fastmath": {"contract", "reassoc", "arcp", "nsz", "afn"}, "error_model": "numpy", "nogil": True}


def fwd_row(cell, p, A, X, st, r, C, rc, copt):  # pragma: no cover - replaced by the overload below
    raise NotImplementedError


@overload(fwd_row, jit_options=_JIT)
def _fwd_row(cell, p, A, X, st, r, C, rc, copt):
    f = _kernel(cell).fwd
    return lambda cell, p, A, X, st, r, C, rc, copt: f(p, A, X, st, r, C, rc, copt)


def bwd_row(cell, p, G, r, C, rc, Hp, hn, D, copt):  # pragma: no cover - replaced by the overload below
    raise NotImplementedError


@overload(bwd_row, jit_options=_JIT)
def _bwd_row(cell, p, G, r, C, rc, Hp, hn, D, copt):
    f = _kernel(cell).bwd
    return lambda cell, p, G, r, C, rc, Hp, hn, D, copt: f(p, G, r, C, rc, Hp, hn, D, copt)
