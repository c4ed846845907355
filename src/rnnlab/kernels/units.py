"""backend="units": inference with the hidden units split over threads, each keeping its share of the weights.

With few batch rows a step's product is a few one-row products against the whole weight matrix: the batch
split (``kernels.split``) gives each thread a row or two, and each thread then streams every weight from the
shared cache at every step (an LSTM with H = 256 has 1.3 MB of weights per direction; one core's
second-level cache holds about 1 MB). Here thread j owns the units u0_j .. u1_j and the weight columns of
their gates (i f g o, r z n, or the RNN's one block): its share is copied out once per call and stays in its
own core's cache for the whole sequence. Per step, every thread reads the whole previous state, computes its
units' gates (one-row products, ``packed_gemm.vecmat_acc``) and writes its units of the new state; one
barrier per step (``barrier``: an atomic counter, spinning, then yielding the core) hands the new state to
every thread for the next step. The states are
double-buffered (``hbuf[s % 2]`` is read at step s, ``hbuf[(s + 1) % 2]`` written), so one barrier suffices.

Forward without caches only (``keep`` false: ``rnnlab.no_grad()``, evaluation and sampling); a forward for
training raises ``BackendError``: its backward would need a reduction over the threads' shares of dL/dh at
every step. Serves the RNN, the LSTM and the GRU with reset='after'; the gate math is ``kernels.gates``'.
"""
from __future__ import annotations

import sys

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ..errors import BackendError
from .gates import ACT, FAST, bias_rows, gate_scales, gru_gates_fwd, lstm_gates_fwd, mask_rows, rnn_act_fwd
from .packed_gemm import token, vecmat_acc
from .split import _in_threads, _xh_rows, num_threads

MIN_UNITS = 8           # fewest hidden units per thread
SUPPORTED = sys.platform != "win32"     # the barrier yields with POSIX sched_yield
INFERENCE_ONLY = ("backend: 'units' runs inference only (under rnnlab.no_grad() or evaluation), got a forward "
                  "for training; use 'split', 'loop' or 'auto'")
SPIN = 4096             # loads of the counter before a waiting thread yields its core


# ------------------------------------------------------------------ the per-step barrier
@intrinsic
def _fetch_add(typingctx, arr, val):
    """arr[0] += val atomically (sequentially consistent); -> the value before. arr: a 1-D int64 array."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None
    sig = types.int64(arr, types.int64)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.atomic_rmw("add", ary.data, args[1], "seq_cst")
    return sig, codegen


@intrinsic
def _load(typingctx, arr):
    """arr[0], an atomic load with acquire ordering (what other threads wrote before their add is seen)."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None
    sig = types.int64(arr)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.load_atomic(ary.data, "acquire", 8)
    return sig, codegen


@intrinsic
def _yield(typingctx):
    """sched_yield(): give the core to another runnable thread (more threads than cores)."""
    sig = types.int32()

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32), [])
        fn = builder.module.globals.get("sched_yield") or ir.Function(builder.module, fnty, "sched_yield")
        return builder.call(fn, [])
    return sig, codegen


@njit(cache=True, nogil=True)
def barrier(sync, target):
    """Count this thread in (sync[0] += 1) and wait until sync[0] reaches target (n threads x steps done)."""
    _fetch_add(sync, 1)
    spins = 0
    while _load(sync) < target:
        spins += 1
        if spins >= SPIN:
            _yield()
            spins = 0


# ------------------------------------------------------------------ per-thread loops
@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _product(A, V, W, acc, tok):
    """A (B, N) (+)= V (B, K) @ W (K, N) (rows of W contiguous), row by row: a one-row product keeps 8 vectors
    of accumulators in registers (``vecmat_acc``), where a packed tile of one row would keep 2."""
    for r in range(A.shape[0]):
        if not acc:
            for j in range(A.shape[1]):
                A[r, j] = 0.0
        vecmat_acc(A, r, V, r, W, tok)


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _keep_units(dst, src, u0, u1):
    """dst[:, u0:u1] = src[:, u0:u1]: this thread's units of the state carried into the next buffer."""
    for r in range(dst.shape[0]):
        for k in range(u0, u1):
            dst[r, k] = src[r, k]


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def lstm_units(u0, u1, n, x, m2, has_mask, reverse, hbuf, c, out, W, XH, A, S, Cs, Gs, sync, tok):
    """Thread of units u0 .. u1: W = [W_ih W_hh b]^T's columns of these units' four gates (K, 4 (u1 - u0));
    XH, A, Cs, Gs: this thread's scratch."""
    T = x.shape[0]
    for s in range(T):
        t = T - 1 - s if reverse else s
        cur, nxt = hbuf[s % 2], hbuf[(s + 1) % 2]
        _xh_rows(XH, x[t], cur)
        _product(A, XH, W, False, tok)                          # (B, 4 Hj) = [x h 1] [W_ih W_hh b]^T, its units
        _keep_units(nxt, cur, u0, u1)
        lstm_gates_fwd(A, None, A[0], False, m2[t], has_mask, nxt[:, u0:u1], c[:, u0:u1], out[t, :, u0:u1], None,
                       Cs, Gs, False, S)
        barrier(sync, n * (s + 1))


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def rnn_units(u0, u1, n, x, m2, has_mask, reverse, act, hbuf, out, W, XH, A, Hs, sync, tok):
    T = x.shape[0]
    for s in range(T):
        t = T - 1 - s if reverse else s
        cur, nxt = hbuf[s % 2], hbuf[(s + 1) % 2]
        _xh_rows(XH, x[t], cur)
        _product(A, XH, W, False, tok)                          # (B, Hj)
        _keep_units(nxt, cur, u0, u1)
        rnn_act_fwd(A, None, A[0], False, m2[t], has_mask, act, nxt[:, u0:u1], out[t, :, u0:u1], Hs)
        barrier(sync, n * (s + 1))


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def gru_units(u0, u1, n, x, m2, has_mask, reverse, hbuf, out, Wih, bx, has_bx, Whh, b, has_b, X, A, Hs, Rs, Zs,
              Ns, Es, sync, tok):
    """Wih, Whh: W_ih^T's and W_hh^T's columns of these units' r, z and n gates; bx, b: their biases."""
    T = x.shape[0]
    for s in range(T):
        t = T - 1 - s if reverse else s
        cur, nxt = hbuf[s % 2], hbuf[(s + 1) % 2]
        if has_bx:
            for r in range(X.shape[0]):
                for j in range(X.shape[1]):
                    X[r, j] = bx[j]
        _product(X, x[t], Wih, has_bx, tok)                     # (B, 3 Hj) x W_ih^T (+ b_ih)
        _product(A, cur, Whh, False, tok)                       # (B, 3 Hj) h W_hh^T
        _keep_units(nxt, cur, u0, u1)
        gru_gates_fwd(A, X, b, has_b, m2[t], has_mask, nxt[:, u0:u1], out[t, :, u0:u1], Hs, Rs, Zs, Ns, Es)
        barrier(sync, n * (s + 1))


# ------------------------------------------------------------------ driver
def threads_for(H: int) -> int:
    """How many threads H units are split over (at least MIN_UNITS each; 1: no split, or no POSIX
    sched_yield on this platform)."""
    return max(1, min(num_threads(), H // MIN_UNITS)) if SUPPORTED else 1


def _columns(G, H, u0, u1):
    """The gate columns of units u0 .. u1 in a (., G*H) matrix: [g*H + u for each gate block g]."""
    return np.concatenate([np.arange(g * H + u0, g * H + u1) for g in range(G)])


def forward(cell_name, x, W_ih, W_hh, b_ih, b_hh, state0, mask, reverse, opts, keep, alloc):
    """The backend contract's forward, for inference (keep false) only."""
    if keep:
        raise BackendError(INFERENCE_ONLY)
    tok = token()
    T, B, I = x.shape
    GH, H = W_hh.shape
    G = GH // H
    n = threads_for(H)
    bounds = [H * i // n for i in range(n + 1)]
    dt = x.dtype
    x = np.ascontiguousarray(x)
    m2, has_mask = mask_rows(mask, T, dt)
    b, has_b, bx, has_bx = bias_rows(cell_name, b_ih, b_hh, dt)
    out = np.empty((T, B, H), dt)
    hbuf = np.empty((2, B, H), dt)
    hbuf[0] = state0[0]
    sync = np.zeros(1, np.int64)
    # each thread's weights and scratch, made here: nothing is allocated once the threads wait on each other
    parts = {}
    for u0, u1 in zip(bounds[:-1], bounds[1:]):
        cols, Hj = _columns(G, H, u0, u1), u1 - u0
        if cell_name == "gru":
            parts[u0] = (np.ascontiguousarray(W_ih[cols].T), bx[cols] if has_bx else bx,
                         np.ascontiguousarray(W_hh[cols].T), b[cols] if has_b else b,
                         np.empty((B, G * Hj), dt), np.empty((B, G * Hj), dt), *(np.empty((B, Hj), dt) for _ in range(5)))
            continue
        blocks = (W_ih[cols].T, W_hh[cols].T) + ((b[cols][None, :],) if has_b else ())
        XH = np.empty((B, I + H + (1 if has_b else 0)), dt)
        A = np.empty((B, G * Hj), dt)
        if cell_name == "lstm":
            parts[u0] = (np.ascontiguousarray(np.concatenate(blocks)), XH, A, gate_scales(G * Hj, A), np.empty((B, Hj), dt),
                         np.empty((B, G * Hj), dt))
        else:
            parts[u0] = (np.ascontiguousarray(np.concatenate(blocks)), XH, A, np.empty((B, Hj), dt))
    if cell_name == "lstm":
        c = np.array(state0[1], dtype=dt, order="C")

        def work(u0, u1):
            lstm_units(u0, u1, n, x, m2, has_mask, reverse, hbuf, c, out, *parts[u0], sync, tok)
    elif cell_name == "rnn":
        act = ACT[opts.get("nonlinearity", "tanh")]

        def work(u0, u1):
            rnn_units(u0, u1, n, x, m2, has_mask, reverse, act, hbuf, out, *parts[u0], sync, tok)
    else:
        def work(u0, u1):
            Pih, bxj, Phh, bj, X, A, Hs, Rs, Zs, Ns, Es = parts[u0]
            gru_units(u0, u1, n, x, m2, has_mask, reverse, hbuf, out, Pih, bxj, has_bx, Phh, bj, has_b, X, A, Hs, Rs,
                      Zs, Ns, Es, sync, tok)
    _in_threads(work, bounds)
    h = hbuf[T % 2].copy()
    return out, ((h, c) if cell_name == "lstm" else (h,)), None


def backward(cell_name, d_out, d_state, cache, W_ih, W_hh, has_bias, workspace):
    raise BackendError("backend: 'units' runs inference only; its forwards keep no cache for backward")
