"""The engine's typed records: what a forward keeps for backward, and what backward returns.

    DirCache   one layer and direction: which backend made it, the input, the mask, the backend's arrays
    Grads      one layer and direction: every gradient, always filled (None only for an absent bias)

The backends' own arrays: ``StepCaches`` (the NumPy reference: each step's cell cache, a NamedTuple of the
cell), ``CellArrays`` (the shared compiled loop, every cell) and ``DiagonalArrays``. Each has ``gates()``, the
gate activations (T, B, H) by name as the cells' docstrings name them, and ``states()``, the states entering
each step (``h_prev``, and ``c_prev`` for the LSTM), for the diagnostics.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CellArrays:
    """A forward of the shared compiled loop (``_kernels.loop``): rows in time order whatever the direction. The
    cell's cache ``C`` is laid out by its kernel (``CellKernel.cache`` names its blocks of H columns)."""
    kern: object                        # kernels.cell.CellKernel
    plan: object                        # kernels.cell.Plan: the kernel and the options the loop compiled for
    Hs: np.ndarray                      # (T, B, H) h_{t-1}, the state entering each step
    C: np.ndarray                       # (T, B, KC*H) the cell's cache (LSTM: c_prev i f g o tanh(c_t))
    hT: np.ndarray                      # (B, H) the final h
    Vh: np.ndarray                      # (T*B, G*H) LN_h's v_hat, (T*B,) its 1/s (empty without layer norm)
    Ih: np.ndarray
    Zn: np.ndarray                      # (T*B, H) the new h before zoneout (cells that read it), or empty
    Z: np.ndarray | None                # zoneout's shares (n, T*B, H), or None
    rm: np.ndarray                      # the recurrent dropout mask (B, H), or empty
    lnh: np.ndarray                     # LN_h's gain and bias (2, G*H), or empty
    copt: tuple                         # the cell's own bundle (CellKernel.copt)
    ln_x: tuple | None = None           # LN_x's (v_hat, 1/s) over (T, B, G*H)
    bh_after: bool = False              # b_hh added after the product (and its layer norm)
    RECYCLE = ("Hs", "C")               # the arrays the next forward's alloc may reuse (engine.Recycler)

    def block(self, name) -> np.ndarray:
        k = self.kern.cache.index(name)
        H = self.Hs.shape[-1]
        return self.C[..., k * H:(k + 1) * H]

    def gates(self) -> dict:
        return {g: self.block(g) for g in self.kern.gates}

    def states(self) -> dict:
        out = {"h_prev": self.Hs}
        if "c_prev" in self.kern.cache:
            out["c_prev"] = self.block("c_prev")
        return out


@dataclass
class StepCaches:
    """The NumPy reference's cache: ``steps[t]`` is the cell's step cache (``cells.<cell>.StepCache``), or,
    with ``bptt_segment``, the state entering each segment (``starts``) and the input projection to recompute
    the segments from in backward."""
    steps: list | None                  # T step caches, or None when segmented
    segments: list | None = None        # lists of time indices in processing order
    starts: list | None = None          # the state entering each segment
    xw: np.ndarray | None = None        # (T, B, G*H) x W_ih^T + b_ih, kept for the recomputation
    b_hh: np.ndarray | None = None
    zone: tuple | None = None           # zoneout's share of the new state per state, (T, B, H) each, or None

    def gates(self) -> dict:
        if self.steps is None:
            raise ValueError("gates: a bptt_segment forward keeps no per-step gates; run it with bptt_segment=None")
        fields = [f for f in self.steps[0]._fields if f in ("i", "f", "g", "o", "r", "z", "n")]
        return {f: np.stack([getattr(c, f) for c in self.steps]) for f in fields}

    def states(self) -> dict:
        if self.steps is None:
            raise ValueError("states: a bptt_segment forward keeps no per-step states; run it with bptt_segment=None")
        fields = [f for f in self.steps[0]._fields if f in ("h_prev", "c_prev")]
        return {f: np.stack([getattr(c, f) for c in self.steps]) for f in fields}


@dataclass
class DiagonalArrays:
    """A diagonal cell's forward (``rnnlab.engine.cells.mingru`` ...): h_t = a_t h_{t-1} + b_t (or IndRNN's step)."""
    x: np.ndarray                       # (T, B, I) in processing order
    mask: np.ndarray | None             # (T, B, 1)
    a: np.ndarray                       # (T, B, H) the carry dh_t/dh_{t-1} (1 at padding); complex for the LRU
    h: np.ndarray                       # (T, B, H) every state
    h0: np.ndarray                      # (B, H)
    extra: dict                         # the cell's own arrays (gates, pre-activations)
    how: str                            # "loop" | "associative" | "log": how the forward ran
    gate_names: tuple = ()              # the entries of ``extra`` that are gates
    reverse: bool = False               # arrays in processing order: time reversed

    def _time(self, v):
        return v[::-1] if self.reverse else v

    def gates(self) -> dict:
        return {k: self._time(self.extra[k]) for k in self.gate_names}

    def states(self) -> dict:
        prev = self._time(np.concatenate([self.h0[None], self.h[:-1]], axis=0))
        if np.iscomplexobj(prev):
            return {"h_prev_re": prev.real, "h_prev_im": prev.imag}
        return {"h_prev": prev}


@dataclass
class DirCache:
    """One layer and direction of a forward, for its backward."""
    backend: str                        # "numpy" | "loop" | "split": the backend that made it
    cell: str                           # "rnn" | "lstm" | "gru"
    x: np.ndarray                       # (T, B, I) the direction's input
    mask: np.ndarray | None             # (T, B, 1) 1 at valid steps, or None (no padding)
    reverse: bool
    opts: dict                          # the cell's options (nonlinearity, reset; rec_mask: recurrent dropout)
    arrays: object                      # StepCaches or the cell's compiled arrays
    x_mask: np.ndarray | None = None    # (B, I) variational input dropout: x holds the masked input

    def gates(self) -> dict:
        return self.arrays.gates()

    def states(self) -> dict:
        return self.arrays.states()


@dataclass
class LayerCache:
    x: np.ndarray                       # (T, B, I) the layer's input
    dirs: list                          # DirCache per direction
    drop: np.ndarray | None             # the dropout mask applied to the layer's output, or None


@dataclass
class Grads:
    """Every gradient of one layer and direction."""
    dx: np.ndarray                      # (T, B, I)
    dstate0: tuple                      # (dh_0,) or (dh_0, dc_0), each (B, H)
    dW_ih: np.ndarray                   # (G*H, I)
    dW_hh: np.ndarray                   # (G*H, H)
    db_ih: np.ndarray | None            # (G*H,), None without bias
    db_hh: np.ndarray | None
    state_grads: tuple | None = None    # (dL/dh (T, B, H)[, dL/dc]) when recorded (NumPy reference)
    extra: dict | None = None           # gradients of the options' own parameters (peepholes: weight_ph)


@dataclass
class ForwardCache:
    """A layer's whole forward, for its backward."""
    layers: list                        # LayerCache per layer
    backend: str                        # the backend every layer and direction ran on
    unbatched: bool
    T: int
    B: int
    n_state: int                        # 1 (h) or 2 (h, c)
    guards: list                        # fingerprints of the caller's arrays (checks.guard_inputs)
