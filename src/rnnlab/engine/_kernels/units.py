"""backend="units": inference with the hidden units split over threads, each keeping its share of the weights.

With few batch rows a step's product is a few one-row products against the whole weight matrix: the batch
split (``_kernels.split``) gives each thread a row or two, and each thread then streams every weight from the
shared cache at every step (an LSTM with H = 256 has 1 MB of W_hh per direction; one core's second-level
cache holds about 1 MB). Here thread j owns the units u0_j .. u1_j: the rows of W_hh of their gates (i f g o,
r z n, or the RNN's one block), G blocks of contiguous rows of the layer's own W_hh, read where they are (dot
products, ``packed_gemm.dots_acc``: no copy per call, so an update of the parameters in place is always seen),
and they stay in its own core's cache for the whole sequence. Before the loop each thread computes x W_ih^T
of its units for every step (``pgemm``: its rows of W_ih, in place, times x^T packed once per call). Per step, every
thread reads the whole previous state, computes its units' gates and writes its units of the new state; one
barrier per step (``barrier``: an atomic counter, spinning, then yielding the core) hands the new state to
every thread for the next step. The states are double-buffered (``hbuf[s % 2]`` is read at step s,
``hbuf[(s + 1) % 2]`` written), so one barrier suffices.

Forward without caches only (``keep`` false: ``rnnlab.no_grad()``, evaluation and sampling); a forward for
training raises ``BackendError``: its backward would need a reduction over the threads' shares of dL/dh at
every step. Serves every cell with one product per step (``serves``); the gate math is the cell's row kernel
(``_kernels.gates``, called through ``_kernels.cell``), the loop is written once for every cell.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from rnnlab.errors import BackendError
from rnnlab.engine._kernels.cell import fwd_row
from rnnlab.engine._kernels.gates import FAST, mask_rows
from rnnlab.engine._kernels.handoff import SUPPORTED, _fetch_add, wait_for
from rnnlab.engine._kernels.packed_gemm import MR_MAX, _pack1, dots_acc, nr, pgemm, token
from rnnlab.engine._kernels.threads import _in_threads, num_threads

MIN_UNITS = 8           # fewest hidden units per thread
INFERENCE_ONLY = ("backend: 'units' runs inference only (under rnnlab.no_grad() or evaluation), got a forward "
                  "for training; use 'split', 'loop' or 'auto'")


# ------------------------------------------------------------------ the per-step barrier
@njit(cache=True, nogil=True)
def barrier(sync, target):
    """Count this thread in (sync[0] += 1) and wait until sync[0] reaches target (n threads x steps done)."""
    _fetch_add(sync, 1)
    wait_for(sync, target, -1)


# ------------------------------------------------------------------ the per-thread loop
@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def units_fwd(u0, u1, n, cell, SB, w, scratch, io, copt, tok):
    """Thread of units u0 .. u1 over the sequence. SB (2, n, B, H): the states, double-buffered (step s reads
    SB[s % 2], writes its units of SB[(s + 1) % 2]). w = (W_ih, W_hh, Px, bx, bh): the layer's W_ih (G*H, I)
    and W_hh (G*H, H), read in place (gate block g of these units: rows g*H + u0 .. g*H + u1); x^T (I, T*B)
    packed (``packed_gemm.pack``); the bias added with x W_ih^T (G*H) and b_hh where it is added apart (the
    GRU), or empty. scratch = (XP, A, X, C, tile) this thread's, XP (G, Hj, T*B) for x W_ih^T of these units
    at every step; io = (out, mask, reverse, sync)."""
    W_ih, W_hh, Px, bx, bh = w
    XP, A, X, C, tile = scratch
    out, mask, reverse, sync = io
    T = out.shape[0]
    B, H = SB.shape[2], SB.shape[3]
    G = XP.shape[0]
    Hj = u1 - u0
    has_mask, sums = mask.shape[0] > 0, X.shape[0] == 0
    no_acc = T < 0                                      # False, as a run-time bool: a literal False and the
    for g in range(G):                                  # operands' layout 'C' compiled a pgemm of their own
        # W_ih's rows of these units x^T, every step at once; operands in layout 'A', as the loops pass them
        pgemm(XP[g][:, :T * B], W_ih[g * H + u0:g * H + u1, :W_ih.shape[1]], Px, T * B, no_acc, tile, tok)
    P = A if sums else X                                # where x_t W_ih^T (+ b) goes
    for s in range(T):
        t = T - 1 - s if reverse else s
        cur, nxt = SB[s % 2], SB[(s + 1) % 2]
        for j in range(SB.shape[1]):                    # these units of the state carried to the next buffer
            for r in range(B):
                for k in range(u0, u1):
                    nxt[j, r, k] = cur[j, r, k]
        Sj, Nj = cur[:, :, u0:u1], nxt[:, :, u0:u1]
        for r in range(B):
            if has_mask and mask[t, r] == 0.0:
                for k in range(u0, u1):
                    out[t, r, k] = 0.0
                continue
            for g in range(G):
                for i in range(Hj):
                    P[r, g * Hj + i] = XP[g, i, t * B + r] + (bx[g * H + u0 + i] if bx.shape[0] > 0 else 0.0)
            if not sums:
                for g in range(G):
                    for i in range(Hj):
                        A[r, g * Hj + i] = bh[g * H + u0 + i] if bh.shape[0] > 0 else 0.0
            for g in range(G):                          # A[r, gate g] += W_hh[gate g's rows] h_r
                dots_acc(A, r, g * Hj, W_hh, g * H + u0, Hj, cur[0], r, tok)
            fwd_row(cell, 1, A, X, (Sj, Sj[0], Nj), r, C, r, copt)
            for k in range(u0, u1):
                out[t, r, k] = nxt[0, r, k]
        barrier(sync, n * (s + 1))


# ------------------------------------------------------------------ driver
def threads_for(H: int) -> int:
    """How many threads H units are split over (at least MIN_UNITS each; 1: no split, or no POSIX
    sched_yield on this platform)."""
    return max(1, min(num_threads(), H // MIN_UNITS)) if SUPPORTED else 1


def serves(kern, opts, zoneout=None) -> bool:
    """One product per step, and no option that needs every unit of a row (layer norm) or of a step."""
    return kern.phases == 1 and zoneout is None and opts.get("ln") is None and opts.get("rec_mask") is None


def forward(cell_name, x, W_ih, W_hh, b_ih, b_hh, state0, mask, reverse, opts, keep, alloc, zoneout=None):
    """The backend contract's forward, for inference (keep false) only."""
    from rnnlab.engine.registry import kernel_for
    if keep:
        raise BackendError(INFERENCE_ONLY)
    kern = kernel_for(cell_name, opts)
    if not serves(kern, opts, zoneout):
        raise BackendError("backend: 'units' serves one product per step without zoneout or layer norm; use "
                           "'loop' or 'split'")
    tok = token()
    T, B, I = x.shape
    GH, H = W_hh.shape
    G = GH // H
    n = threads_for(H)
    bounds = [H * i // n for i in range(n + 1)]
    dt = x.dtype
    Px = _pack1(np.ascontiguousarray(x).reshape(T * B, I).T, nr(dt))      # x^T (I, T*B) packed: small
    W_ih = W_ih if W_ih.strides[1] == dt.itemsize else np.ascontiguousarray(W_ih)   # rows contiguous: read in place
    W_hh = W_hh if W_hh.strides[1] == dt.itemsize else np.ascontiguousarray(W_hh)
    m2 = mask_rows(mask, T, dt)
    out = np.empty((T, B, H), dt)
    SB = np.empty((2, len(state0), B, H), dt)
    SB[0] = np.stack(state0)
    sync = np.zeros(1, np.int64)
    none = np.empty(0, dt)
    # cells whose products enter as a sum take b_ih + b_hh with x W_ih^T; the GRU adds b_hh apart (its n gate
    # reads r (h W_hn^T + b_hn))
    if kern.sums:
        bx = b_hh if b_ih is None else (b_ih if b_hh is None else b_ih + b_hh)
        bh = none
    else:
        bx, bh = b_ih, none if b_hh is None else b_hh
    w = (W_ih, W_hh, Px, none if bx is None else bx, bh)
    # each thread's scratch, made here: nothing is allocated once the threads wait on each other
    parts = {}
    for u0, u1 in zip(bounds[:-1], bounds[1:]):
        Hj = u1 - u0
        XP = np.empty((G, Hj, T * B), dt)
        A = np.empty((B, G * Hj), dt)
        X = np.empty((0 if kern.sums else B, G * Hj), dt)
        scratch = (XP, A, X, np.empty((B, kern.kc * Hj), dt), np.empty((MR_MAX, Px.shape[2]), dt))
        parts[u0] = (scratch, kern.copt(opts, B, B, Hj, dt, None))
    io = (out, m2, reverse, sync)

    def work(u0, u1):
        scratch, copt = parts[u0]
        units_fwd(u0, u1, n, kern, SB, w, scratch, io, copt, tok)
    _in_threads(work, bounds)
    final = SB[T % 2]
    return out, tuple(final[j].copy() for j in range(final.shape[0])), None


def backward(cell_name, d_out, d_state, cache, W_ih, W_hh, has_bias, workspace):
    raise BackendError("backend: 'units' runs inference only; its forwards keep no cache for backward")
