"""The one registry of cells: what the engine, the caches, the layers and the diagnostics read about a cell.

A ``CellSpec`` names a cell's two halves:

    module      its ``rnnlab.engine.cells`` module: G, STATE, GATES, the NumPy step forward and backward (the
                reference, ``rnnlab.engine._reference``) and grad_W_hh
    kernel      opts -> its compiled row kernels, a ``_kernels.cell.CellKernel`` (imported on first use: the
                reference runs without Numba); None: the cell runs on the NumPy reference only
    family      "dense": a recurrence through a full W_hh, the time loops of ``rnnlab.engine._reference`` and
                ``_kernels.loop``; "diagonal": an element-wise recurrence (``rnnlab.engine._diagonal``)

Adding a cell: its ``cells`` module, its row kernels (``_kernels.gates`` shows three) and ``register``, from any
package: ``tests/engine/test_new_cell.py`` registers one from outside rnnlab and runs it through every backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from rnnlab.engine.cells import CELLS, DIAGONAL
from rnnlab.errors import ConfigError


@dataclass(frozen=True)
class CellSpec:
    name: str
    module: object                          # the cells module (G, STATE, GATES, step_forward, step_backward)
    kernel: Callable | None = None          # opts -> CellKernel, or None (the NumPy reference only)
    family: str = "dense"

    @property
    def G(self) -> int:
        return self.module.G

    @property
    def state(self) -> tuple:
        return tuple(self.module.STATE)

    @property
    def gates(self) -> tuple:
        return tuple(self.module.GATES)


SPECS: dict = {}
_LISTENERS: list = []       # called with each registered spec (rnnlab.engine.layers adds its layer class)


def on_register(listener) -> None:
    """Call ``listener(spec)`` for every cell registered from now on."""
    _LISTENERS.append(listener)


def register(spec: CellSpec) -> CellSpec:
    """Add a cell. ``rnnlab.engine.layers.layer_class(name)`` then builds its layer (a ``layers.DenseLayer`` named after
    the cell), and so do configs with ``cell = name``."""
    if not isinstance(spec, CellSpec):
        raise ConfigError(f"register: expected a CellSpec, got {type(spec).__name__}")
    if spec.family not in ("dense", "diagonal"):
        raise ConfigError(f"register: family expected 'dense' or 'diagonal', got {spec.family!r}")
    for attr in ("G", "STATE", "GATES", "step_forward", "step_backward", "grad_W_hh"):
        if spec.family == "dense" and not hasattr(spec.module, attr):
            raise ConfigError(f"register: cell {spec.name!r}: its module has no {attr}")
    if spec.family != "dense":
        raise ConfigError(f"register: cell {spec.name!r}: only dense cells register here for now (the diagonal "
                          "ones have their own stack, rnnlab.engine._diagonal)")
    SPECS[spec.name] = spec
    CELLS[spec.name] = spec.module
    for listener in _LISTENERS:
        listener(spec)
    return spec


def spec(name: str) -> CellSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ConfigError(f"cell: expected one of {sorted(SPECS)}, got {name!r}") from None


def kernel_for(name: str, opts: dict):
    """The compiled row kernels that serve this cell with these options (``_kernels.cell.CellKernel``)."""
    s = spec(name)
    if s.kernel is None:
        raise ConfigError(f"cell {name!r}: has no compiled kernels; use backend='numpy'")
    return s.kernel(opts)


def _gates():
    """kernels.gates, imported on first use (it needs Numba); the per-call path asks often."""
    if not _GATES:
        from rnnlab.engine._kernels import gates
        _GATES.append(gates)
    return _GATES[0]


_GATES = []


def _rnn(opts):
    return _gates().RNN


def _lstm(opts):
    return _gates().LSTM


def _gru(opts):
    g = _gates()
    return g.GRU if opts.get("reset", "after") == "after" else g.GRU_BEFORE


def _builtin():
    from rnnlab.engine.cells import gru
    from rnnlab.engine.cells import lstm
    from rnnlab.engine.cells import rnn
    for name, module, kernel in (("rnn", rnn, _rnn), ("lstm", lstm, _lstm), ("gru", gru, _gru)):
        SPECS[name] = CellSpec(name, module, kernel)
    for name, module in DIAGONAL.items():
        SPECS[name] = CellSpec(name, module, None, family="diagonal")


_builtin()
