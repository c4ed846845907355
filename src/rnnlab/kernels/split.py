"""backend="split": the batch's rows split over threads, each running the whole time loop for its rows.

The rows of a batch are independent chains, so each thread runs forward and backward for its own block of
rows with no synchronisation between steps. Per step and per thread: the step's matrix product of its rows
(``kernels.packed_gemm``: the weights packed once per call, a register-blocked micro-kernel per step) and the
cell's gate kernels (``kernels.gates``). LSTM and RNN: one product per step, [x_t h] [W_ih W_hh]^T
forward and dA [W_ih W_hh] backward (dx_t and the state gradient at once); the GRU: x_t W_ih^T and h W_hh^T
apart (its reset gate multiplies the n block of the latter). The kernels release the GIL, so plain Python
threads run them in parallel; the weight gradients are one large BLAS product after the loop, split over
the same threads (``pmatmul``). Serves the RNN, the LSTM and the GRU with reset='after'.

Why: a per-step product (B, H) x (H, 4H) is too small for two BLAS threads to share well, and a gate kernel
runs on one core; splitting the batch keeps every core busy with whole steps (docs/performance.md).
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit, uint64

from ..caches import GRUArrays, Grads, LSTMArrays, RNNArrays
from .gates import (
    ACT, FAST, bias_rows, gate_scales, gru_gates_bwd, gru_gates_fwd, lstm_gates_bwd, lstm_gates_fwd, mask_rows,
    rnn_act_bwd, rnn_act_fwd, state_after,
)
from .packed_gemm import MR_MAX, pack, pgemm, token

MIN_ROWS = 1            # fewest batch rows per thread (the layer also asks for enough work per thread)
_POOL: list = []
_LOCK = threading.Lock()


def num_threads() -> int:
    """Threads for the batch split: ``RNNLAB_NUM_THREADS`` if set, else the CPUs this process may run on."""
    env = os.environ.get("RNNLAB_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"RNNLAB_NUM_THREADS: expected a positive integer, got {env!r}") from None
        if n < 1:
            raise ValueError(f"RNNLAB_NUM_THREADS: expected a positive integer, got {env!r}")
        return n
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                                  # not on Linux
        return os.cpu_count() or 1


def threads_for(B: int) -> int:
    """How many threads a batch of B rows is split over (1: no split)."""
    return max(1, min(num_threads(), B // MIN_ROWS))


# ------------------------------------------------------------------ compiled per-thread loops
@njit(cache=True, nogil=True)
def _tile(P):
    """The packed product's scratch tile, one per thread."""
    return np.empty((MR_MAX, P.shape[2]), P.dtype)


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _carry_rows(dst, src, m_t, has_mask):
    """dst = src on the valid rows (all rows without a mask); padded rows keep dst."""
    for r in range(dst.shape[0]):
        if has_mask and m_t[r] == 0.0:
            continue
        d, s = dst[r], src[r]
        for k in range(d.shape[0]):
            d[k] = s[k]


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _x_rows(X, x_t, Pih, bx, has_bx, tile, tok):
    """X (rows, G*H) = x_t (rows, I) W_ih^T (+ b_ih): this step's input projection, computed in the loop (no
    (T, B, G*H) array written before it and read back)."""
    if has_bx:
        for r in range(X.shape[0]):
            for j in range(X.shape[1]):
                X[r, j] = bx[j]
    pgemm(X, x_t, Pih, X.shape[1], has_bx, tile, tok)


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _xh_rows(XH_t, x_t, h):
    """XH_t (rows, I+H[+1]) = [x_t | h (| 1)]: the operand of the step's one product [x h 1] [W_ih W_hh b]^T
    (the column of ones where the layer has a bias; unsigned offsets: see kernels.gates). The LSTM
    keeps it for backward (see ``split_forward``)."""
    I = uint64(x_t.shape[1])
    IH = I + uint64(h.shape[1])
    for r in range(XH_t.shape[0]):
        for k in range(I):
            XH_t[r, k] = x_t[r, k]
        for k in range(uint64(h.shape[1])):
            XH_t[r, I + k] = h[r, k]
        if XH_t.shape[1] > IH:
            XH_t[r, IH] = 1.0


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def lstm_fwd_rows(r0, r1, x, XH, b, has_b, m2, has_mask, reverse, keep, P, h, c, A, out, Cs, Gs, tok):
    T = x.shape[0]
    GH = A.shape[1]
    tile = _tile(P)
    S = gate_scales(GH, A)
    for s in range(T):
        t = T - 1 - s if reverse else s
        ct = t if keep else 0                               # one reused cache row under no_grad
        _xh_rows(XH[ct, r0:r1], x[t, r0:r1], h[r0:r1])
        pgemm(A[r0:r1], XH[ct, r0:r1], P, GH, False, tile, tok)  # (rows, 4H) = [x h] [W_ih W_hh]^T
        lstm_gates_fwd(A[r0:r1], None, b, has_b, m2[t, r0:r1], has_mask, h[r0:r1], c[r0:r1],
                       out[t, r0:r1], None, Cs[ct, r0:r1], Gs[ct, r0:r1], keep, S)  # h is kept in XH


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def gru_fwd_rows(r0, r1, x, Pih, bx, has_bx, X, b, has_b, m2, has_mask, reverse, keep, P, h, A, out, Hs, Rs, Zs,
                 Ns, Es, tok):
    T = x.shape[0]
    GH = A.shape[1]
    tile = _tile(P)
    for s in range(T):
        t = T - 1 - s if reverse else s
        ct = t if keep else 0
        _x_rows(X[r0:r1], x[t, r0:r1], Pih, bx, has_bx, tile, tok)
        pgemm(A[r0:r1], h[r0:r1], P, GH, False, tile, tok)      # (rows, 3H)
        gru_gates_fwd(A[r0:r1], X[r0:r1], b, has_b, m2[t, r0:r1], has_mask, h[r0:r1], out[t, r0:r1],
                      Hs[ct, r0:r1], Rs[ct, r0:r1], Zs[ct, r0:r1], Ns[ct, r0:r1], Es[ct, r0:r1])


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def rnn_fwd_rows(r0, r1, x, XH, b, has_b, m2, has_mask, reverse, keep, act, P, h, A, out, Hs, tok):
    T = x.shape[0]
    GH = A.shape[1]
    tile = _tile(P)
    for s in range(T):
        t = T - 1 - s if reverse else s
        ct = t if keep else 0
        _xh_rows(XH[r0:r1], x[t, r0:r1], h[r0:r1])
        pgemm(A[r0:r1], XH[r0:r1], P, GH, False, tile, tok)      # (rows, H)
        rnn_act_fwd(A[r0:r1], None, b, has_b, m2[t, r0:r1], has_mask, act, h[r0:r1], out[t, r0:r1], Hs[ct, r0:r1])


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _dx_carry(dx_t, dh, DX, m_t, has_mask):
    """DX (rows, I+H) = dA [W_ih W_hh]: dx_t = its x part; dh = its h part on the valid rows (padded rows keep
    dh; their dA is 0, so is their dx)."""
    I = uint64(dx_t.shape[1])
    for r in range(DX.shape[0]):
        for k in range(I):
            dx_t[r, k] = DX[r, k]
        if has_mask and m_t[r] == 0.0:
            continue
        for k in range(uint64(dh.shape[1])):
            dh[r, k] = DX[r, I + k]


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def lstm_bwd_rows(r0, r1, d_out, m2, has_mask, reverse, P, dh, dc, Cs, Gs, cT, dXW, DX, dx, tok):
    T = d_out.shape[0]
    N = DX.shape[1]
    tile = _tile(P)
    for s in range(T):
        t = s if reverse else T - 1 - s
        lstm_gates_bwd(dh[r0:r1], dc[r0:r1], d_out[t, r0:r1], m2[t, r0:r1], has_mask, Cs[t, r0:r1], Gs[t, r0:r1],
                       state_after(Cs, cT, t, reverse)[r0:r1], dXW[t, r0:r1])
        pgemm(DX[r0:r1], dXW[t, r0:r1], P, N, False, tile, tok)  # (rows, I+H) = dA [W_ih W_hh]
        _dx_carry(dx[t, r0:r1], dh[r0:r1], DX[r0:r1], m2[t, r0:r1], has_mask)


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def rnn_bwd_rows(r0, r1, d_out, m2, has_mask, reverse, act, P, dh, Hs, hT, dXW, DX, dx, db, tok):
    T = d_out.shape[0]
    N = DX.shape[1]
    tile = _tile(P)
    for s in range(T):
        t = s if reverse else T - 1 - s
        rnn_act_bwd(dh[r0:r1], d_out[t, r0:r1], m2[t, r0:r1], has_mask, act, state_after(Hs, hT, t, reverse)[r0:r1],
                    dXW[t, r0:r1])
        _add_rows(db[r0:r1], dXW[t, r0:r1])
        pgemm(DX[r0:r1], dXW[t, r0:r1], P, N, False, tile, tok)  # (rows, I+H) = dA [W_ih W_hh]
        _dx_carry(dx[t, r0:r1], dh[r0:r1], DX[r0:r1], m2[t, r0:r1], has_mask)


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _add_rows(acc, src):
    """acc (rows, N) += src (rows, N): the bias gradients summed per row in the loop, while dL/dA is in cache
    (no pass over the (T, B, G*H) array after the loop)."""
    for r in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            acc[r, j] += src[r, j]


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _copy_n_block(dst, src):
    """dst (rows, H) = the n block src[:, 2H:] (unsigned offsets: see kernels.gates)."""
    H = uint64(dst.shape[1])
    H2 = uint64(2) * H
    for r in range(dst.shape[0]):
        for k in range(H):
            dst[r, k] = src[r, H2 + k]


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def gru_bwd_rows(r0, r1, d_out, m2, has_mask, reverse, P, dh, Hs, Rs, Zs, Ns, Es, dXW, S, dHn, D, Pih, dx, dbx,
                 dbh, tok):
    """S (B, 3H): this step's dL/d(h W_hh^T); its r and z blocks equal dXW's, so only the n block is kept
    (dHn, (T, B, H)) for dW_hh: two (T, B, H) arrays less than keeping dL/d(h W_hh^T) whole. dx_t = dXW_t W_ih
    (Pih: W_ih's panels) and the bias gradients (per row: dbx, dbh) are taken in the loop too."""
    T, _, H = d_out.shape
    I = dx.shape[2]
    tile = _tile(P)
    for s in range(T):
        t = s if reverse else T - 1 - s
        gru_gates_bwd(dh[r0:r1], d_out[t, r0:r1], m2[t, r0:r1], has_mask, Hs[t, r0:r1], Rs[t, r0:r1],
                      Zs[t, r0:r1], Ns[t, r0:r1], Es[t, r0:r1], dXW[t, r0:r1], S[r0:r1], D[r0:r1])
        _add_rows(dbx[r0:r1], dXW[t, r0:r1])
        _add_rows(dbh[r0:r1], S[r0:r1])
        pgemm(dx[t, r0:r1], dXW[t, r0:r1], Pih, I, False, tile, tok)    # dx_t = dA_x W_ih
        pgemm(D[r0:r1], S[r0:r1], P, H, True, tile, tok)        # dh = dh z-part + dA W_hh (padded rows: dA = 0)
        _copy_n_block(dHn[t, r0:r1], S[r0:r1])
        _carry_rows(dh[r0:r1], D[r0:r1], m2[t, r0:r1], False)


# ------------------------------------------------------------------ drivers
def _pool(n):
    """The worker threads (created once per process: a forked child has none of its parent's threads, and a
    pool copied into it would wait forever for them)."""
    with _LOCK:
        if _POOL and (_POOL[1] != os.getpid() or _POOL[0]._max_workers < n):
            if _POOL[1] == os.getpid():
                _POOL[0].shutdown(wait=False)
            _POOL.clear()
        if not _POOL:
            _POOL.extend([ThreadPoolExecutor(max_workers=n, thread_name_prefix="rnnlab-split"), os.getpid()])
        return _POOL[0]


def _in_threads(work, bounds):
    """work(lo, hi) for each block [bounds[i], bounds[i+1]), one block per thread; the first block runs in the
    calling thread. The caller runs BLAS on one thread meanwhile (``rnnlab.engine.blas_single_thread``)."""
    n = len(bounds) - 1
    futures = [_pool(n - 1).submit(work, bounds[i], bounds[i + 1]) for i in range(1, n)] if n > 1 else []
    try:
        work(bounds[0], bounds[1])
    finally:
        for f in futures:
            f.result()


SHARE_MIN, SHARE_MAX = 0.3, 0.7


def rebalance(share, rows0, rows1, took0, took1):
    """The first thread's next share of the rows, from its last share and the two blocks' times: the share
    that would have equalised them (rows per second of each), smoothed (0.7 old, 0.3 new) and kept in
    [0.3, 0.7]. Times under 0.1 ms carry no signal: the share stays. One of two threads on a shared virtual
    machine is often slower for seconds at a time; an even split would leave the faster one waiting."""
    if min(took0, took1) <= 1e-4:
        return share
    rate0, rate1 = rows0 / took0, rows1 / took1
    return min(SHARE_MAX, max(SHARE_MIN, 0.7 * share + 0.3 * rate0 / (rate0 + rate1)))


class RowSplit:
    """How a layer splits its batch over two threads (``share``: the calling thread's fraction of the rows),
    updated from each call's measured times by ``rebalance``. Every row's result is the same whatever block
    it is in (tested), so the split changes speed only."""

    def __init__(self, share=0.5):
        self.share = share

    def run(self, kernel, B, args):
        """kernel(r0, r1, *args) over the row blocks of the batch, one block per thread."""
        n = threads_for(B)
        if n != 2:                  # more threads: which pool thread takes which block is not fixed
            _in_threads(lambda r0, r1: kernel(r0, r1, *args), [B * i // n for i in range(n + 1)])
            return
        m = min(B - MIN_ROWS, max(MIN_ROWS, round(B * self.share)))
        took = {}

        def work(r0, r1):
            t0 = time.perf_counter()
            kernel(r0, r1, *args)
            took[r0] = time.perf_counter() - t0
        _in_threads(work, [0, m, B])
        self.share = rebalance(self.share, m, B - m, took[0], took[m])


PMATMUL_MIN_ROWS = 64


def pmatmul(a, b, bias=None, out=None, min_rows=PMATMUL_MIN_ROWS):
    """``a @ b (+ bias)`` with the output's rows split over rnnlab's threads (each a one-thread BLAS call,
    which releases the GIL), blocks of at least ``min_rows`` rows. Used for the large products around the
    batch-split scans, so that BLAS's own worker threads never wake up and spin against the scan's threads."""
    M = a.shape[0]
    if out is None:
        out = np.empty((M, b.shape[1]), np.result_type(a, b))   # (M, N)
    n = max(1, min(num_threads(), M // max(1, min_rows)))

    def block(lo, hi):
        np.matmul(a[lo:hi], b, out=out[lo:hi])
        if bias is not None:
            out[lo:hi] += bias
    _in_threads(block, [M * i // n for i in range(n + 1)])
    return out


def forward(cell_name, x, W_ih, W_hh, b_ih, b_hh, state0, mask, reverse, opts, keep, alloc, rows=None):
    """Each thread computes its rows' input projection step by step (no (T, B, G*H) array written before the
    loop and read back). LSTM and RNN: one product per step, [x_t | h | 1] [W_ih W_hh b]^T (the bias is the
    product's last row). The LSTM keeps [x_t | h | 1] ("XH") instead of h, so that backward gets dW_ih, dW_hh
    and db from one product, dL/dA^T [X H 1]; the RNN keeps h alone (its cache is small, and a copy of x in it
    would raise peak memory above torch's). GRU: x W_ih^T and h W_hh^T apart (the reset gate multiplies the n
    block of the latter). rows: the layer's RowSplit."""
    rows = rows or RowSplit()
    tok = token()
    T, B, I = x.shape
    GH, H = W_hh.shape
    dt = x.dtype
    x = np.ascontiguousarray(x)
    m2, has_mask = mask_rows(mask, T, dt)
    b, has_b, bx, has_bx = bias_rows(cell_name, b_ih, b_hh, dt)
    Tc = T if keep else 1                                       # under no_grad: one reused cache row
    cache = alloc if keep else np.empty
    out = np.empty((T, B, H), dt)
    h = np.array(state0[0], dtype=dt, order="C")
    A = np.empty((B, GH), dt)                                   # (B, G*H) pre-activations of a step
    if cell_name != "gru":
        P = pack(W_ih.T, W_hh.T, b[None, :]) if has_b else pack(W_ih.T, W_hh.T)   # (I+H[+1], G*H) panels
        K = I + H + (1 if has_b else 0)
        if cell_name == "lstm":
            XH = cache((Tc, B, K), dt)                          # [x_t | h_{t-1} | 1] of every step
            c = np.array(state0[1], dtype=dt, order="C")
            Cs, Gs = cache((Tc, B, H), dt), cache((Tc, B, GH), dt)
            rows.run(lstm_fwd_rows, B, (x, XH, b, False, m2, has_mask, reverse, keep, P, h, c, A, out, Cs, Gs, tok))
            return out, (h, c), LSTMArrays(Cs, Gs, c.copy(), XH=XH, x_cols=I) if keep else None
        XH, Hs = np.empty((B, K), dt), cache((Tc, B, H), dt)   # [x_t | h_{t-1} | 1] of a step; h of every step
        act = ACT[opts.get("nonlinearity", "tanh")]
        rows.run(rnn_fwd_rows, B, (x, XH, b, False, m2, has_mask, reverse, keep, act, P, h, A, out, Hs, tok))
        return out, (h,), RNNArrays(Hs, h.copy(), act) if keep else None
    P = pack(W_hh.T)                                            # W_hh^T (H, G*H) as column panels
    Pih = pack(W_ih.T)                                          # W_ih^T (I, G*H)
    Hs = cache((Tc, B, H), dt)
    X = np.empty((B, GH), dt)                                   # (B, G*H) x W_ih^T (+ b_ih) of a step
    Rs, Zs, Ns, Es = (cache((Tc, B, H), dt) for _ in range(4))
    rows.run(gru_fwd_rows, B, (x, Pih, bx, has_bx, X, b, has_b, m2, has_mask, reverse, keep, P, h, A, out, Hs, Rs,
                               Zs, Ns, Es, tok))
    return out, (h,), GRUArrays(Hs, Rs, Zs, Ns, Es, True) if keep else None


def backward(cell_name, d_out, d_state, cache, W_ih, W_hh, has_bias, workspace, rows=None):
    """LSTM, RNN: the step's product gives dx_t and the state gradient at once, dA [W_ih W_hh]; the LSTM's
    dW_ih, dW_hh and db come from one product, dL/dA^T [X H 1]. GRU: dx_t = dA_x W_ih in the loop too. The
    RNN's and the GRU's bias gradients are summed per row in the loop, while dL/dA is in cache."""
    rows = rows or RowSplit()
    tok = token()
    c, reverse = cache.arrays, cache.reverse
    T, B, H = d_out.shape
    GH = W_hh.shape[0]
    I = W_ih.shape[1]
    dt = d_out.dtype
    m2, has_mask = mask_rows(cache.mask, T, dt)
    d_out = np.ascontiguousarray(d_out)
    dXW = workspace((T, B, GH), dt)
    dh = np.array(d_state[0], dtype=dt, order="C")
    if cell_name in ("lstm", "rnn"):
        P = pack(np.concatenate((W_ih, W_hh), axis=1))          # [W_ih W_hh] (G*H, I+H) as column panels
        DX, dx = np.empty((B, I + H), dt), np.empty((T, B, I), dt)
        dX2 = dXW.reshape(T * B, GH)
        if cell_name == "lstm":
            dc = np.array(d_state[1], dtype=dt, order="C")
            rows.run(lstm_bwd_rows, B, (d_out, m2, has_mask, reverse, P, dh, dc, c.Cs, c.Gs, c.cT, dXW, DX, dx, tok))
            dW = pmatmul(dX2.T, c.XH.reshape(T * B, -1))        # (G*H, I+H[+1]) = dL/dA^T [X H 1]
            db = dW[:, I + H] if has_bias else None
            return Grads(dx, (dh, dc), dW[:, :I], dW[:, I:I + H], db, None if db is None else db.copy())
        db = np.zeros((B, GH), dt)                              # dL/db per row, summed over the steps
        rows.run(rnn_bwd_rows, B, (d_out, m2, has_mask, reverse, c.act, P, dh, c.Hs, c.hT, dXW, DX, dx, db, tok))
        dW_hh = pmatmul(dX2.T, c.Hs.reshape(T * B, H))                                   # (G*H, H)
        dW_ih = pmatmul(dX2.T, cache.x.reshape(T * B, -1))                               # (G*H, I)
        db = db.sum(axis=0) if has_bias else None
        return Grads(dx, (dh,), dW_ih, dW_hh, db, None if db is None else db.copy())
    P = pack(W_hh)                                              # W_hh (G*H, H) as column panels
    D = np.empty((B, H), dt)                                    # the next state gradient of a step
    S, dHn = np.empty((B, GH), dt), np.empty((T, B, H), dt)
    dx, dbx, dbh = np.empty((T, B, I), dt), np.zeros((B, GH), dt), np.zeros((B, GH), dt)
    rows.run(gru_bwd_rows, B, (d_out, m2, has_mask, reverse, P, dh, c.Hs, c.Rs, c.Zs, c.Ns, c.Es, dXW, S, dHn, D,
                               pack(W_ih), dx, dbx, dbh, tok))
    Hs2, dX2, dHn2 = c.Hs.reshape(T * B, H), dXW.reshape(T * B, GH), dHn.reshape(T * B, H)
    dW_hh = np.concatenate([pmatmul(dX2[:, :2 * H].T, Hs2), pmatmul(dHn2.T, Hs2)])    # (3H, H)
    dW_ih = pmatmul(dX2.T, cache.x.reshape(T * B, -1))
    if not has_bias:
        return Grads(dx, (dh,), dW_ih, dW_hh, None, None)
    return Grads(dx, (dh,), dW_ih, dW_hh, dbx.sum(axis=0), dbh.sum(axis=0))
