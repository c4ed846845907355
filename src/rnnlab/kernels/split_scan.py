"""Batch-split scans: the rows of a batch are independent chains, so each thread runs the whole time loop
for its own block of rows (forward and backward), with no synchronisation between steps.

Per step and per thread: the step's matrix product of its rows (``rnnlab.kernels.packed_gemm``: the weights
packed once per call, a register-blocked micro-kernel per step) and the same fused gate kernels as the hybrid
path (``numba_scan.lstm_gates_fwd`` and the others). LSTM and RNN: one product per step, [x_t h] [W_ih W_hh]^T
forward and dA [W_ih W_hh] backward (dx_t and the state gradient at once); the GRU: x_t W_ih^T and h W_hh^T
apart (its reset gate multiplies the n block of the latter). The kernels release the GIL, so plain Python
threads run them in parallel; the weight gradients are one large BLAS product after the loop, split over
the same threads (``pmatmul``).

Why: on a 2-core machine the hybrid path's per-step product (B, H) x (H, 4H) is too small for two BLAS
threads to share well, and its gate kernel runs on one core; splitting the batch keeps both cores busy
with whole steps (measured in docs/performance.md).
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit, uint64

from .packed_gemm import MR_MAX, pack, pgemm
from .numba_scan import (
    _ACT, FAST, _state_after, bias_rows, gate_scales, mask_rows, gru_gates_bwd, gru_gates_fwd, lstm_gates_bwd,
    lstm_gates_fwd, rnn_act_bwd, rnn_act_fwd,
)

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
def _x_rows(X, x_t, Pih, bx, has_bx, tile):
    """X (rows, G*H) = x_t (rows, I) W_ih^T (+ b_ih): this step's input projection, computed in the loop (no
    (T, B, G*H) array written before it and read back: 2 x 52 MiB of memory traffic at (128, 50, 128, 512))."""
    if has_bx:
        for r in range(X.shape[0]):
            for j in range(X.shape[1]):
                X[r, j] = bx[j]
    pgemm(X, x_t, Pih, X.shape[1], has_bx, tile)


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _xh_rows(XH_t, x_t, h):
    """XH_t (rows, I+H[+1]) = [x_t | h (| 1)]: the operand of the step's one product [x h 1] [W_ih W_hh b]^T
    (the column of ones where the layer has a bias; unsigned offsets: see numba_scan.lstm_gates_fwd). The LSTM
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
def lstm_fwd_rows(r0, r1, x, XH, b, has_b, m2, has_mask, reverse, keep, P, h, c, A, out, Cs, Gs):
    T = x.shape[0]
    GH = A.shape[1]
    tile = _tile(P)
    S = gate_scales(GH, A)
    for s in range(T):
        t = T - 1 - s if reverse else s
        ct = t if keep else 0                               # one reused cache row under no_grad
        _xh_rows(XH[ct, r0:r1], x[t, r0:r1], h[r0:r1])
        pgemm(A[r0:r1], XH[ct, r0:r1], P, GH, False, tile)  # (rows, 4H) = [x h] [W_ih W_hh]^T
        lstm_gates_fwd(A[r0:r1], None, b, has_b, m2[t, r0:r1], has_mask, h[r0:r1], c[r0:r1],
                       out[t, r0:r1], None, Cs[ct, r0:r1], Gs[ct, r0:r1], keep, S)  # h is kept in XH


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def gru_fwd_rows(r0, r1, x, Pih, bx, has_bx, X, b, has_b, m2, has_mask, reverse, keep, P, h, A, out, Hs, Rs, Zs,
                 Ns, Es):
    T = x.shape[0]
    GH = A.shape[1]
    tile = _tile(P)
    for s in range(T):
        t = T - 1 - s if reverse else s
        ct = t if keep else 0
        _x_rows(X[r0:r1], x[t, r0:r1], Pih, bx, has_bx, tile)
        pgemm(A[r0:r1], h[r0:r1], P, GH, False, tile)      # (rows, 3H)
        gru_gates_fwd(A[r0:r1], X[r0:r1], b, has_b, m2[t, r0:r1], has_mask, h[r0:r1], out[t, r0:r1],
                      Hs[ct, r0:r1], Rs[ct, r0:r1], Zs[ct, r0:r1], Ns[ct, r0:r1], Es[ct, r0:r1])


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def rnn_fwd_rows(r0, r1, x, XH, b, has_b, m2, has_mask, reverse, keep, act, P, h, A, out, Hs):
    T = x.shape[0]
    GH = A.shape[1]
    tile = _tile(P)
    for s in range(T):
        t = T - 1 - s if reverse else s
        ct = t if keep else 0
        _xh_rows(XH[r0:r1], x[t, r0:r1], h[r0:r1])
        pgemm(A[r0:r1], XH[r0:r1], P, GH, False, tile)      # (rows, H)
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
def lstm_bwd_rows(r0, r1, d_out, m2, has_mask, reverse, P, dh, dc, Cs, Gs, cT, dXW, DX, dx):
    T = d_out.shape[0]
    N = DX.shape[1]
    tile = _tile(P)
    for s in range(T):
        t = s if reverse else T - 1 - s
        lstm_gates_bwd(dh[r0:r1], dc[r0:r1], d_out[t, r0:r1], m2[t, r0:r1], has_mask, Cs[t, r0:r1], Gs[t, r0:r1],
                       _state_after(Cs, cT, t, reverse)[r0:r1], dXW[t, r0:r1])
        pgemm(DX[r0:r1], dXW[t, r0:r1], P, N, False, tile)  # (rows, I+H) = dA [W_ih W_hh]
        _dx_carry(dx[t, r0:r1], dh[r0:r1], DX[r0:r1], m2[t, r0:r1], has_mask)


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def rnn_bwd_rows(r0, r1, d_out, m2, has_mask, reverse, act, P, dh, Hs, hT, dXW, DX, dx, db):
    T = d_out.shape[0]
    N = DX.shape[1]
    tile = _tile(P)
    for s in range(T):
        t = s if reverse else T - 1 - s
        rnn_act_bwd(dh[r0:r1], d_out[t, r0:r1], m2[t, r0:r1], has_mask, act, _state_after(Hs, hT, t, reverse)[r0:r1],
                    dXW[t, r0:r1])
        _add_rows(db[r0:r1], dXW[t, r0:r1])
        pgemm(DX[r0:r1], dXW[t, r0:r1], P, N, False, tile)  # (rows, I+H) = dA [W_ih W_hh]
        _dx_carry(dx[t, r0:r1], dh[r0:r1], DX[r0:r1], m2[t, r0:r1], has_mask)


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _add_rows(acc, src):
    """acc (rows, N) += src (rows, N): the bias gradients summed per row in the loop, while dL/dA is in cache
    (summing the (T, B, G*H) array after the loop was a pass over 20 MiB at (64, 100, 64, 256))."""
    for r in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            acc[r, j] += src[r, j]


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _copy_n_block(dst, src):
    """dst (rows, H) = the n block src[:, 2H:] (unsigned offsets: see numba_scan.lstm_gates_fwd)."""
    H = uint64(dst.shape[1])
    H2 = uint64(2) * H
    for r in range(dst.shape[0]):
        for k in range(H):
            dst[r, k] = src[r, H2 + k]


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def gru_bwd_rows(r0, r1, d_out, m2, has_mask, reverse, P, dh, Hs, Rs, Zs, Ns, Es, dXW, S, dHn, D, Pih, dx, dbx,
                 dbh):
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
        pgemm(dx[t, r0:r1], dXW[t, r0:r1], Pih, I, False, tile)    # dx_t = dA_x W_ih
        pgemm(D[r0:r1], S[r0:r1], P, H, True, tile)        # dh = dh z-part + dA W_hh (padded rows: dA = 0)
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
    calling thread. The caller runs BLAS on one thread meanwhile (``rnnlab.layers.blas_single_thread``)."""
    n = len(bounds) - 1
    futures = [_pool(n - 1).submit(work, bounds[i], bounds[i + 1]) for i in range(1, n)] if n > 1 else []
    try:
        work(bounds[0], bounds[1])
    finally:
        for f in futures:
            f.result()


_SHARE = [0.5]          # with two threads: the calling thread's share of the rows, adapted to measured speed


def _run(kernel, B, args):
    """kernel(r0, r1, *args) over the row blocks of the batch, one block per thread.

    With two threads the rows are split by the threads' measured speeds: on this shared virtual machine one
    of the two often runs 10-30 % slower than the other for seconds at a time, and an even split leaves the
    faster one waiting. Each call times both blocks and moves the split toward equal times (smoothed, and
    kept within 30-70 %). Every row's result is the same whatever block it is in."""
    n = threads_for(B)
    if n != 2:                      # more threads: which pool thread takes which block is not fixed
        _in_threads(lambda r0, r1: kernel(r0, r1, *args), [B * i // n for i in range(n + 1)])
        return
    share = _SHARE[0]
    m = min(B - MIN_ROWS, max(MIN_ROWS, round(B * share)))
    took = {}

    def work(r0, r1):
        t0 = time.perf_counter()
        kernel(r0, r1, *args)
        took[r0] = time.perf_counter() - t0
    _in_threads(work, [0, m, B])
    if min(took.values()) > 1e-4:   # rows per second of each thread -> the share that equalises the times
        rate0, rate1 = m / took[0], (B - m) / took[m]
        _SHARE[0] = min(0.7, max(0.3, 0.7 * share + 0.3 * rate0 / (rate0 + rate1)))


PMATMUL_MIN_ROWS = 64


def pmatmul(a, b, bias=None, out=None):
    """``a @ b (+ bias)`` with the output's rows split over rnnlab's threads (each a one-thread BLAS call,
    which releases the GIL). Used for the large products around the batch-split scans, so that BLAS's own
    worker threads never wake up and spin against the scan's threads. ``out``: a (M, N) array to write to."""
    M = a.shape[0]
    if out is None:
        out = np.empty((M, b.shape[1]), np.result_type(a, b))   # (M, N)
    n = max(1, min(num_threads(), M // PMATMUL_MIN_ROWS))

    def block(lo, hi):
        np.matmul(a[lo:hi], b, out=out[lo:hi])
        if bias is not None:
            out[lo:hi] += bias
    _in_threads(block, [M * i // n for i in range(n + 1)])
    return out


def split_forward(cell_name, x, W_ih, b_x, state0, W_hh, b_hh, mask=None, reverse=False, opts=None, keep=True,
                  alloc=np.empty):
    """As ``numba_scan.hybrid_forward`` (RNN, LSTM, GRU with reset='after'), but from the layer's input x
    (T, B, I) and W_ih (G*H, I): each thread computes its rows' input projection step by step, so no
    (T, B, G*H) array is written before the loop and read back (2 x 52 MiB of memory traffic at (128, 50,
    128, 512)). LSTM and RNN: one product per step, [x_t | h] [W_ih W_hh]^T. The LSTM's cache keeps [x_t | h]
    ("XH") instead of h, so that backward gets both weight gradients from one product, dL/dA^T [X H] (3-5 %
    of its training step, measured); the RNN's keeps h alone ("Hs"): its cache is small, and a copy of x in
    it was 3.1 MiB of peak memory at (128, 50, 128, 512), the one shape where rnnlab used more than torch.
    GRU: two products (``_x_rows``). b_x: the bias added to x W_ih^T (b_ih)."""
    T, B, I = x.shape
    GH, H = W_hh.shape
    dt = x.dtype
    x = np.ascontiguousarray(x)
    m2, has_mask = mask_rows(mask, T, dt)
    b, has_b, bx, has_bx = bias_rows(cell_name, b_x, b_hh, dt)
    Tc = T if keep else 1                                       # under no_grad: one reused cache row
    cache = alloc if keep else np.empty
    out = np.empty((T, B, H), dt)
    h = np.array(state0[0], dtype=dt, order="C")
    A = np.empty((B, GH), dt)                                   # (B, G*H) pre-activations of a step
    if cell_name != "gru":                                      # one product per step from [x | h | 1]
        # [W_ih W_hh b]^T (I+H+1, G*H) as column panels: the bias is the product's last row (with a column of
        # ones in XH), so the gate kernel adds none and backward gets db from the weight-gradient product
        P = pack(W_ih.T, W_hh.T, b[None, :]) if has_b else pack(W_ih.T, W_hh.T)
        K = I + H + (1 if has_b else 0)
        if cell_name == "lstm":
            XH = cache((Tc, B, K), dt)                          # [x_t | h_{t-1} | 1] of every step
            c = np.array(state0[1], dtype=dt, order="C")
            Cs, Gs = cache((Tc, B, H), dt), cache((Tc, B, GH), dt)
            _run(lstm_fwd_rows, B, (x, XH, b, False, m2, has_mask, reverse, keep, P, h, c, A, out, Cs, Gs))
            return out, (h, c), ("numba", "lstm", {"XH": XH, "Cs": Cs, "Gs": Gs, "cT": c.copy(), "split": True},
                                 mask, reverse)
        XH, Hs = np.empty((B, K), dt), cache((Tc, B, H), dt)   # [x_t | h_{t-1} | 1] of a step; h of every step
        act = _ACT[(opts or {}).get("nonlinearity", "tanh")]
        _run(rnn_fwd_rows, B, (x, XH, b, False, m2, has_mask, reverse, keep, act, P, h, A, out, Hs))
        return out, (h,), ("numba", "rnn", {"Hs": Hs, "hT": h.copy(), "act": act, "split": True}, mask, reverse)
    # GRU: x W_ih^T and h W_hh^T stay apart (the reset gate multiplies the n block of h W_hh^T only)
    P = pack(W_hh.T)                                            # W_hh^T (H, G*H) as column panels
    Pih = pack(W_ih.T)                                          # W_ih^T (I, G*H)
    Hs = cache((Tc, B, H), dt)
    X = np.empty((B, GH), dt)                                   # (B, G*H) x W_ih^T (+ b_ih) of a step
    Rs, Zs, Ns, Es = (cache((Tc, B, H), dt) for _ in range(4))
    _run(gru_fwd_rows, B, (x, Pih, bx, has_bx, X, b, has_b, m2, has_mask, reverse, keep, P, h, A, out, Hs, Rs, Zs,
                           Ns, Es))
    return out, (h,), ("numba", "gru", {"Hs": Hs, "Rs": Rs, "Zs": Zs, "Ns": Ns, "Es": Es, "after": True,
                                        "split": True}, mask, reverse)


def split_backward(d_out, d_state, cache, W_hh, W_ih, has_bias=True, alloc=np.empty):
    """Same contract as ``rnnlab.recurrent.scan_backward``. LSTM, RNN: the step's product gives dx_t and the
    state gradient at once, dA [W_ih W_hh] (dx returned); the LSTM returns dW_hh and db_hh None: the caller
    takes dW_ih, dW_hh and db from one product, dL/dA^T [X H 1], with the cached [x_t | h | 1] ("XH"). GRU: dx_t
    = dA_x W_ih in the loop too. The RNN's and the GRU's bias gradients are summed in the loop (the GRU's db_ih
    is the sixth value returned). ``alloc(shape, dtype)`` gives the returned dL/dA."""
    _, cell_name, c, mask, reverse = cache
    T, B, H = d_out.shape
    GH = W_hh.shape[0]
    dt = d_out.dtype
    m2, has_mask = mask_rows(mask, T, dt)
    d_out = np.ascontiguousarray(d_out)
    dXW = alloc((T, B, GH), dt)
    dh = np.array(d_state[0], dtype=dt, order="C")
    if cell_name in ("lstm", "rnn"):
        I = W_ih.shape[1]
        P = pack(np.concatenate((W_ih, W_hh), axis=1))          # [W_ih W_hh] (G*H, I+H) as column panels
        DX, dx = np.empty((B, I + H), dt), np.empty((T, B, I), dt)
        if cell_name == "lstm":
            dc = np.array(d_state[1], dtype=dt, order="C")
            _run(lstm_bwd_rows, B, (d_out, m2, has_mask, reverse, P, dh, dc, c["Cs"], c["Gs"], c["cT"], dXW, DX, dx))
            dstate = (dh, dc)
        else:
            db = np.zeros((B, GH), dt)                          # dL/db per row, summed over the steps
            _run(rnn_bwd_rows, B, (d_out, m2, has_mask, reverse, c["act"], P, dh, c["Hs"], c["hT"], dXW, DX, dx, db))
            dstate = (dh,)
        if cell_name == "lstm":
            return dXW, dstate, None, None, dx, None
        dW_hh = pmatmul(dXW.reshape(T * B, GH).T, c["Hs"].reshape(T * B, H))           # (G*H, H)
        return dXW, dstate, dW_hh, db.sum(axis=0) if has_bias else None, dx, None
    P = pack(W_hh)                                              # W_hh (G*H, H) as column panels
    D = np.empty((B, H), dt)                                    # the next state gradient of a step
    S, dHn = np.empty((B, GH), dt), np.empty((T, B, H), dt)
    dx, dbx, dbh = np.empty((T, B, W_ih.shape[1]), dt), np.zeros((B, GH), dt), np.zeros((B, GH), dt)
    _run(gru_bwd_rows, B, (d_out, m2, has_mask, reverse, P, dh, c["Hs"], c["Rs"], c["Zs"], c["Ns"], c["Es"], dXW, S,
                           dHn, D, pack(W_ih), dx, dbx, dbh))
    Hs2, dX2, dHn2 = c["Hs"].reshape(T * B, H), dXW.reshape(T * B, GH), dHn.reshape(T * B, H)
    dW_hh = np.concatenate([pmatmul(dX2[:, :2 * H].T, Hs2), pmatmul(dHn2.T, Hs2)])    # (3H, H)
    if not has_bias:
        return dXW, (dh,), dW_hh, None, dx, None
    return dXW, (dh,), dW_hh, dbh.sum(axis=0), dx, dbx.sum(axis=0)
