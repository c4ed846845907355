"""The engine's typed records: what a forward keeps for backward, and what backward returns.

    DirCache   one layer and direction: which backend made it, the input, the mask, the backend's arrays
    Grads      one layer and direction: every gradient, always filled (None only for an absent bias)

The backends' own arrays: ``StepCaches`` (the NumPy reference: each step's cell cache, a NamedTuple of the
cell) and one dataclass per cell for the compiled strategies (``RNNArrays``, ``LSTMArrays``, ``GRUArrays``:
(T, B, ...) in time order whatever the direction, written by ``kernels.gates``). Each has ``gates()``, the
gate activations (T, B, H) by name as the cells' docstrings name them, and ``states()``, the states entering
each step (``h_prev``, and ``c_prev`` for the LSTM), for the diagnostics.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RNNArrays:
    Hs: np.ndarray          # (T, B, H) h_{t-1}, the state entering each step
    hT: np.ndarray          # (B, H) the final state (the state after the last step in scan order)
    act: int                # kernels.gates.ACT of the nonlinearity

    def gates(self) -> dict:
        return {}

    def states(self) -> dict:
        return {"h_prev": self.Hs}


@dataclass
class LSTMArrays:
    Cs: np.ndarray          # (T, B, H) c_{t-1}
    Gs: np.ndarray          # (T, B, 4H) i f g o (after their activations)
    cT: np.ndarray          # (B, H) the final cell state
    Hs: np.ndarray | None = None    # (T, B, H) h_{t-1}; None where XH holds it
    XH: np.ndarray | None = None    # (T, B, I+H[+1]) [x_t | h_{t-1} | 1]: the split path's product operand
    x_cols: int = 0                 # I, the columns of x in XH

    def gates(self) -> dict:
        H = self.Cs.shape[-1]
        return {name: self.Gs[..., k * H:(k + 1) * H] for k, name in enumerate("ifgo")}

    def states(self) -> dict:
        H, I = self.Cs.shape[-1], self.x_cols
        return {"h_prev": self.Hs if self.Hs is not None else self.XH[..., I:I + H], "c_prev": self.Cs}


@dataclass
class GRUArrays:
    Hs: np.ndarray          # (T, B, H) h_{t-1}
    Rs: np.ndarray          # (T, B, H) r
    Zs: np.ndarray          # (T, B, H) z
    Ns: np.ndarray          # (T, B, H) n
    Es: np.ndarray          # (T, B, H) h W_hn^T + b_hn (reset='after') or r h (reset='before')
    after: bool             # reset='after'

    def gates(self) -> dict:
        return {"r": self.Rs, "z": self.Zs, "n": self.Ns}

    def states(self) -> dict:
        return {"h_prev": self.Hs}


@dataclass
class VariantArrays:
    """A cell with recurrent dropout, zoneout or layer norm on the compiled loop (``kernels.variants``): rows
    are t * B + r, in time order whatever the direction."""
    cell: str                           # "rnn" | "lstm" | "gru"
    T: int
    B: int
    H: int
    Hs: np.ndarray                      # (T*B, H) the recurrent product's operand h_{t-1} (times m)
    XW_ln: tuple | None                 # LN_x's (v_hat, 1/s) over (T, B, G*H), or None without layer norm
    rm: np.ndarray | None               # (B, H) the recurrent dropout mask, or None
    keep: list | None                   # zoneout's shares of the new state, (T*B, H) per state, or None
    Vh: np.ndarray                      # (T*B, G*H) LN_h's v_hat (a placeholder row without layer norm)
    Ih: np.ndarray                      # (T*B,) LN_h's 1/s
    Cs: np.ndarray | None = None        # lstm: (T*B, H) c_{t-1}
    Gs: np.ndarray | None = None        # lstm: (T*B, 4H) i f g o
    TC: np.ndarray | None = None        # lstm: (T*B, H) tanh(LN_c(c_t)) or tanh(c_t)
    Vc: np.ndarray | None = None        # lstm: LN_c's v_hat and 1/s
    Ic: np.ndarray | None = None
    Hp: np.ndarray | None = None        # gru: (T*B, H) h_{t-1} unmasked (the interpolation's)
    Rs: np.ndarray | None = None        # gru: r, z, n and h W_hn^T + b_hn (after) or r h m (before)
    Zs: np.ndarray | None = None
    Ns: np.ndarray | None = None        # gru: n; rnn: the new state before zoneout
    Es: np.ndarray | None = None
    after: bool = True
    act: int = 0                        # rnn: kernels.gates.ACT of the nonlinearity

    def _t(self, v):
        return v.reshape(self.T, self.B, -1)

    def gates(self) -> dict:
        H = self.H
        if self.cell == "lstm":
            return {name: self._t(self.Gs)[..., k * H:(k + 1) * H] for k, name in enumerate("ifgo")}
        if self.cell == "gru":
            return {"r": self._t(self.Rs), "z": self._t(self.Zs), "n": self._t(self.Ns)}
        return {}

    def states(self) -> dict:
        h = self._t(self.Hp if self.Hp is not None else self.Hs)
        return {"h_prev": h, "c_prev": self._t(self.Cs)} if self.cell == "lstm" else {"h_prev": h}


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
    keep: tuple | None = None           # zoneout's share of the new state per state, (T, B, H) each, or None

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
    """A diagonal cell's forward (``rnnlab.cells.mingru`` ...): h_t = a_t h_{t-1} + b_t (or IndRNN's step)."""
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
    backend: str                        # "numpy" | "loop" | "hybrid" | "split": the backend that made it
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
