"""The compiled time loop, written once for every cell and option: backends "loop" (one thread) and "split".

``time_fwd`` and ``time_bwd`` run the whole sequence for a block of batch rows [r0, r1). Backend "loop" runs
one block of all rows on the calling thread; "split" (``_kernels.split``) runs one block per thread, with no
synchronisation between steps (the rows of a batch are independent chains). No Python runs inside the loop.
Per step:

    forward    h_{t-1} -> the cache Hs and the products' operand O = h_{t-1} * m (recurrent dropout m)
               A = O W_hh^T: one-row products (``vecmat_acc``, few rows) or packed products over the block
               (``pgemm``); cells whose x and h products enter as a sum may take [x_t | O | 1] [W_ih W_hh b]^T
               in one product; else x_t W_ih^T + b is computed for blocks of steps inside the loop (no
               (T, B, G*H) array written before it and read back), or, under layer norm, before the loop
               A <- LN_h(A) + b_hh (layer norm), the cell's row kernel (``_kernels.gates`` via ``_kernels.cell``),
               a second product and kernel for two-phase cells (the reset-before GRU), then zoneout's mix of
               the new states into the old; a padded row (mask 0) keeps its state and gets output 0
    backward   dL/d(new states) (zoneout: the kept share carried past the cell), the cell's row kernel ->
               dL/d(x W_ih^T) (DX) and dL/d(h W_hh^T) (DHW), the bias sums per row, LN_h's backward,
               dh_{t-1} = (DHW W_hh) * m + the cell's direct part

The weight gradients and dx: inside the backward loop, each step's rows accumulated while they are in the cache
(``tgemm_acc``, where the accumulators are small: ``wgrad_in_loop``), else large BLAS products over all steps
after it; the layer norm of the input projection: around the loop (``forward`` and ``backward`` below, the
engine's contract for both backends).

Contract: ``forward(...) -> (output, final state, CellArrays or None)``, ``backward(...) -> Grads``.

Length: the one compiled time loop, forward and backward, with the option paths (dropout, zoneout, layer
norm) written once for every cell; the bundles it reads are defined beside it.
"""
from __future__ import annotations

import threading
import types

import numpy as np
from numba import njit, uint64
from numba.core.errors import TypingError
from numba.extending import overload

from rnnlab.engine._caches import CellArrays, Grads
from rnnlab.engine.cells import layernorm
from rnnlab.engine.registry import kernel_for
from rnnlab.engine._kernels.cell import _JIT
from rnnlab.engine._kernels.gates import FAST, ln_row, ln_row_bwd, mask_rows
from rnnlab.engine._kernels.packed_gemm import _pack1, nr, pack, pgemm, tgemm_acc, tile_for, token, vecmat_acc
from rnnlab.engine._kernels.threads import machine_threads, pmatmul

PROJ_ROWS = 128      # rows (steps x batch rows) of x W_ih^T computed at once inside the loop
PACK_MIN_ROWS = 4    # rows of the batch from which the packed product beats one-row products
# below this many steps a call of one-row products reads the layer's W_ih^T and W_hh^T as they are (dot products,
# about 20 % slower a step) instead of copying them into row order first (the copy of an LSTM's W_hh^T at H = 256
# takes some 300 µs, a few hundred steps' worth of the difference)
SHORT_CALL = 64
# the backward accumulates dW_ih and dW_hh inside the loop, a step's rows at a time (``tgemm_acc``), where a
# group's accumulators (G*H x (I + H) entries) take at most WGRAD_MAX_BYTES and at most WGRAD_ROW_BYTES per row
# of the group: each step reads and writes them once for its rows' products, so few rows must pay for it
# (measured on znver4, 1 MB second-level cache per core: docs/performance.md); beyond, BLAS after the loop
WGRAD_MAX_BYTES = 2 << 20
WGRAD_ROW_BYTES = 48 << 10
WGRAD_GROUP_ROWS = 8
# the loops themselves run without reference counting: they allocate nothing (their callers hold every array
# for the call), and the counts of the views and bundles they pass on per step were a tenth of a small step
_LOOP_JIT = {**_JIT, "_nrt": False}


# ------------------------------------------------------------------ products over a block of rows
def _prod(C, V, W, acc, r0, r1, tile, tok):  # pragma: no cover - replaced by the overload below
    raise NotImplementedError


@overload(_prod, jit_options=_LOOP_JIT)
def _prod_impl(C, V, W, acc, r0, r1, tile, tok):
    """C[r] (+)= V[r] @ W for r in [r0, r1), W (K, N) 2-D: rows contiguous -> one-row products; columns
    contiguous (the layer's own W^T, Fortran order: a short call uses it as it is, no copy) -> one dot product
    per output, four at a time. (W packed: ``_block``.) A function the loops call once a step, compiled once
    per signature and process (not inlined: each inlined copy was typed, lowered and optimised again, the dot
    products 0.2-0.5 s each)."""
    if W.ndim != 2:
        raise TypingError(f"_prod: expected 2-D weights (packed ones: _block), got {W}")
    if W.layout != "F":
        return lambda C, V, W, acc, r0, r1, tile, tok: _rows(C, V, W, acc, r0, r1, tile, tok)

    def dots(C, V, W, acc, r0, r1, tile, tok):
        K, N = W.shape
        for r in range(r0, r1):
            if not acc:                             # (a zero from the data would carry its NaN)
                for j in range(N):
                    C[r, j] = 0.0
            j = 0
            while j + 4 <= N:
                a0, a1, a2, a3 = C[r, j], C[r, j + 1], C[r, j + 2], C[r, j + 3]
                for k in range(K):
                    v = V[r, k]
                    a0 += v * W[k, j]
                    a1 += v * W[k, j + 1]
                    a2 += v * W[k, j + 2]
                    a3 += v * W[k, j + 3]
                C[r, j], C[r, j + 1], C[r, j + 2], C[r, j + 3] = a0, a1, a2, a3
                j += 4
            for jj in range(j, N):
                a = C[r, jj]
                for k in range(K):
                    a += V[r, k] * W[k, jj]
                C[r, jj] = a
    return dots


@njit(inline="always", nogil=True)
def _block(C, V, W, acc, r0, r1, tile, tok):
    """C[r0:r1] (+)= V[r0:r1] @ W, W packed (``pack``, 3-D): the packed product of the block, its call written
    into the loop. The operands sliced to layout 'A', and acc made a plain bool (a literal is typed by its
    value): one compiled pgemm per dtype and width for every call site (see _project)."""
    pgemm(C[r0:r1, :C.shape[1]], V[r0:r1, :V.shape[1]], W, C.shape[1], bool(acc), tile, tok)


@njit(inline="always", nogil=True, fastmath=FAST, error_model="numpy")
def _rows(C, V, W, acc, r0, r1, tile, tok):
    """C[r] (+)= V[r] @ W for r in [r0, r1), W (K, N) rows contiguous: the one-row products, behind ``_prod``'s
    call (the backward) or written into the forward loop, where the call's arguments would cost a fair part of
    a small step."""
    for r in range(r0, r1):
        if not acc:
            for j in range(C.shape[1]):
                C[r, j] = 0.0
        vecmat_acc(C, r, V, r, W, tok)


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _project(XW, x, s, r0, r1, reverse, Pih, bx, tile, tok):
    """x_t W_ih^T (+ b) of the scan's steps s .. s+n-1 (n = XW rows / B) for rows r0 .. r1, into XW ((n*B,
    G*H), step t's rows at (t - ta) * B). Returns ta, the first time index of the block."""
    T, B, I = x.shape
    n = min(XW.shape[0] // B, T - s)
    ta = T - s - n if reverse else s
    GH = XW.shape[1]
    has_b = bx.shape[0] > 0
    if r1 - r0 == B:                                    # the whole batch: one product over n steps
        rows = XW[:n * B]
        if has_b:
            for r in range(n * B):
                for j in range(GH):
                    rows[r, j] = bx[j]
        # operands sliced to layout 'A' as every other caller passes them: one compiled pgemm (0.8 s a signature)
        pgemm(rows[:, :GH], x.reshape(T * B, I)[ta * B:(ta + n) * B, :I], Pih, GH, has_b, tile, tok)
        return ta
    for k in range(n):
        rows = XW[k * B + r0:k * B + r1]
        if has_b:
            for r in range(r1 - r0):
                for j in range(GH):
                    rows[r, j] = bx[j]
        pgemm(rows[:, :GH], x[ta + k, r0:r1, :I], Pih, GH, has_b, tile, tok)
    return ta


# ------------------------------------------------------------------ one compiled loop per plan
# The loops below are templates: ``_compiled`` compiles a copy of one per plan (``_kernels.cell.Plan``: a cell and
# the options of a call) and kind of weights, with that plan's constants among the copy's globals: its row kernel
# (``row_fwd``, ``row_bwd``), the cell's properties and the call's options. Numba takes a global as a constant and
# drops the branches it rules out before typing, so a plan compiles only the code it runs. The copy is itself the
# cached entry point: a cached function calling the loop, the earlier layout, re-optimised and re-emitted the
# whole loop in its own library (2.5 s of a first training step's 10, docs/performance.md). Numba's disk cache
# keys a copy by the loop's source and its signature, whose token type names the plan and the digest of the
# cell's row kernels (``_kernels.cell``): every global set here follows from the two.
_COMPILED: dict = {}
_COMPILING = threading.Lock()


def _compiled(loop, key, consts):
    """The cached, compiled copy of ``loop`` with ``consts`` among its globals, made once per ``key`` (the
    callers look ``key`` up first)."""
    with _COMPILING:                                    # one dispatcher per key, whichever thread asks first
        fn = _COMPILED.get(key)
        if fn is None:
            code = types.FunctionType(loop.__code__, {**loop.__globals__, **consts}, loop.__name__)
            code.__qualname__, code.__doc__ = loop.__qualname__, loop.__doc__
            fn = _COMPILED[key] = njit(cache=True, **_LOOP_JIT)(code)
    return fn


def compiled_loops() -> list:
    """The compiled loops this process has made, (name, dispatcher) per plan (tests, ``benchmarks.serve``)."""
    return [(key[0], fn) for key, fn in list(_COMPILED.items())]


def _product(W):
    """The loops' product for weights W: ``_block`` (packed), ``_rows`` (2-D, rows contiguous: Numba's layout
    'C', written into the loop) or ``_prod`` (the layer's own W^T, columns contiguous: a call)."""
    return _block if W.ndim == 3 else _rows if W.flags.c_contiguous else _prod


def _fwd_compiled(plan, w):
    """The forward loop of one plan and kind of weights w = (Pih, W1, W2, ...): W_ih^T as it is (a short call)
    or packed; each product's function (``_product``)."""
    key = ("_fwd_loop", plan.key, w[0].ndim == 2, _product(w[1]), _product(w[2]))
    fn = _COMPILED.get(key)
    if fn is not None:
        return fn
    kern, f = plan.kern, plan.flags
    FUSED, LN, ZO = f["fused"], f["ln"], f["zoneout"]
    PROJECT = not (FUSED or LN)
    # one-row products with rows contiguous (a long call of under PACK_MIN_ROWS rows) written into the loop: as a
    # call of _prod, passing its ~45 arguments cost 10-15 ns of an 80 ns step (B = 1, H = 32)
    consts = dict(row_fwd=kern.fwd if LN else kern.plain[0],    # (plain: without the code of layer norm)
                  PHASES=kern.phases, N1G=kern.g1, OP2=kern.op2,
                  CPREV=kern.cache.index("c_prev") if "c_prev" in kern.cache else -1,
                  FUSED=FUSED, DIRECT=f["direct"], LN=LN, ZO=ZO, PROJECT=PROJECT, ZN=ZO and kern.reads_new,
                  STEPX=PROJECT and key[2],                     # W_ih^T as it is (a short call): x_t W_ih^T per step
                  prod1=key[3], prod2=key[4])
    return _compiled(_fwd_loop, key, consts)


def _bwd_compiled(plan, w):
    """The backward loop of one plan and kind of weights w = (W1, W2): plain or packed."""
    key = ("_bwd_loop", plan.key, w[0].ndim == 3)
    fn = _COMPILED.get(key)
    if fn is not None:
        return fn
    kern, f = plan.kern, plan.flags
    LN, ZO = f["ln"], f["zoneout"]
    # the weight gradients inside the loop come only with the packed products (``wgrad_in_loop`` wants
    # PACK_MIN_ROWS rows a group): a backward of one-row products compiles none of their code
    consts = dict(row_bwd=kern.bwd if LN else kern.plain[1], PHASES=kern.phases, N1G=kern.g1,
                  READS_NEW=kern.reads_new, OP2=kern.op2, LN=LN, ZO=ZO, ZN=ZO and kern.reads_new,
                  SEP=kern.writes_dhw or LN, COPY=LN and not kern.writes_dhw,   # DHW its own array; LN: copied
                  WGL=key[2], prodw=_block if key[2] else _prod)
    return _compiled(_bwd_loop, key, consts)


# ------------------------------------------------------------------ the loop, forward
def _fwd_loop(r0, r1, cell, x, w, st, io, cache, opt, tok, tile):
    """The forward loop (a template, see above; the bundles: ``time_fwd``). Plan constants: row_fwd, PHASES,
    N1G, OP2, CPREV, FUSED, DIRECT, LN, ZO, PROJECT, ZN, STEPX, prod1, prod2 (``_fwd_compiled``)."""
    Pih, W1, W2, bx, bh = w
    S, O, N, XH = st
    XW, A, out, mask = io
    Hs, C, Vh, Ih, Zn = cache
    rm, Z, lnh, copt, reverse = opt
    T, B, I = x.shape
    nst, _, H = S.shape
    n1 = N1G * H
    RM, MASK, BH = rm.shape[0] > 0, mask.shape[0] > 0, bh.shape[0] > 0     # cheap: decided at run time
    KEEP = Hs.shape[0] == T * B
    A1 = A[:, :n1]
    V = O if RM else S[0]                           # the products' operand
    stn = (S, V, N)                                 # built once: a tuple per row costs reference counts
    X0 = XW[:0]                                     # no x W_ih^T (fused, or accumulated into X)
    ta = 0
    nxt = 0
    for s in range(T):
        t = T - 1 - s if reverse else s
        if STEPX:                                   # X = x_t W_ih^T + b, one step (XW: B rows)
            X = XW[:B]
            for r in range(r0, r1):
                for j in range(X.shape[1]):
                    X[r, j] = bx[j] if bx.shape[0] > 0 else 0.0
            _prod(X, x[t], Pih, True, r0, r1, tile, tok)
        else:
            if PROJECT and s == nxt:
                nxt += XW.shape[0] // B
                ta = _project(XW, x, s, r0, r1, reverse, Pih, bx, tile, tok)
            X = XW[(t - ta) * B:(t - ta + 1) * B]   # (B, G*H), or (0, G*H) when fused
        c0 = t * B if KEEP else 0
        if KEEP or PHASES == 2:
            for r in range(r0, r1):
                for k in range(H):
                    Hs[c0 + r, k] = S[0, r, k]
        if RM:
            for r in range(r0, r1):
                for k in range(H):
                    O[r, k] = S[0, r, k] * rm[r, k]
        if FUSED:                                   # [x_t | O | 1] [W_ih W_hh b]^T
            for r in range(r0, r1):
                for k in range(I):
                    XH[r, k] = x[t, r, k]
                for k in range(uint64(H)):          # unsigned: a signed I + k kept the copy scalar
                    XH[r, uint64(I) + k] = V[r, k]  # (Numba's check for a negative index; 6 % of an RNN step)
                if XH.shape[1] > I + H:
                    XH[r, I + H] = 1.0
            _block(A1, XH[:, :XH.shape[1]], W1, False, r0, r1, tile, tok)
            Ar, Xr = A, X0
        elif DIRECT:                                # O W_hh^T accumulates into x W_ih^T's rows
            prod1(X, V, W1, True, r0, r1, tile, tok)
            Ar, Xr = X, X0
        else:
            prod1(A1, V, W1, False, r0, r1, tile, tok)
            Ar, Xr = A, X
        if LN or BH:
            for r in range(r0, r1):
                if LN:
                    ln_row(A, r, 0, n1, lnh[0], lnh[1], Vh, c0 + r, Ih)
                if BH:
                    for j in range(n1):
                        A[r, j] += bh[j]
        for r in range(r0, r1):
            if not MASK or mask[t, r] != 0.0:
                row_fwd(1, Ar, Xr, stn, r, C, c0 + r, copt)
        if PHASES == 2:                             # the second product reads the cache's block OP2
            e0 = OP2 * H
            prod2(A[:, n1:], C[c0:c0 + B, e0:e0 + H], W2, False, r0, r1, tile, tok)
            for r in range(r0, r1):
                if not MASK or mask[t, r] != 0.0:
                    if BH:
                        for j in range(n1, A.shape[1]):
                            A[r, j] += bh[j]
                    row_fwd(2, A, X, stn, r, C, c0 + r, copt)
        for r in range(r0, r1):
            if MASK and mask[t, r] == 0.0:          # padded: state kept, output 0, no gates (zeros)
                for k in range(H):
                    out[t, r, k] = 0.0
                for j in range(C.shape[1]):
                    C[c0 + r, j] = 0.0
                if CPREV >= 0:
                    for k in range(uint64(H)):
                        C[c0 + r, uint64(CPREV * H) + k] = S[1, r, k]
                continue
            if ZO:                                  # s_t = s_{t-1} + k (s_new - s_{t-1})
                if ZN:
                    for k in range(H):
                        Zn[c0 + r, k] = N[0, r, k]
                for j in range(nst):
                    for k in range(H):
                        S[j, r, k] += Z[j, t * B + r, k] * (N[j, r, k] - S[j, r, k])
                for k in range(H):
                    out[t, r, k] = S[0, r, k]
            else:
                for k in range(H):
                    v = N[0, r, k]
                    S[0, r, k] = v
                    out[t, r, k] = v
                for j in range(1, nst):
                    for k in range(H):
                        S[j, r, k] = N[j, r, k]


def time_fwd(r0, r1, cell, x, w, st, io, cache, opt, tok):
    """Rows r0 .. r1 over the whole sequence: the plan's compiled ``_fwd_loop`` with a tile of its own (one per
    thread). cell: a ``Plan``. Bundles (an absent array is an empty one):
    w = (Pih, W1, W2, bx, bh): W_ih^T packed (projected in the loop) or empty (XW holds every step's x W_ih^T +
        b, or the product is fused); the first product's weights (O W_hh^T, or the fused [W_ih W_hh b]^T);
        the second's (two-phase cells); the bias added to x W_ih^T, and the one added to A after layer norm
    st = (S, O, N, XH): the states (n, B, H) in place; the operand (B, H); the new states (its own array: a
        kernel that wrote into the states it reads would not vectorise); the fused product's operand
        [x_t | O | 1] (B, I+H[+1])
    io = (XW, A, out, mask): x W_ih^T (a block of steps, or all); A (B, G*H); out (T, B, H); mask (T, B)
    cache = (Hs, C, Vh, Ih, Zn): h_{t-1} (rows, H); the cell's cache (rows, KC); LN_h's v_hat and 1/s; the new
        h before zoneout (cells that read it). rows = T*B, or B (inference: one reused step)
    opt = (rm, Z, lnh, copt, reverse): recurrent dropout mask (B, H); zoneout's shares (n, T*B, H); LN_h's
        gain and bias (2, n1); the cell's own bundle"""
    _fwd_compiled(cell, w)(r0, r1, cell, x, w, st, io, cache, opt, tok, tile_for(x.dtype, tok))


# ------------------------------------------------------------------ the loop, backward
def _bwd_loop(r0, r1, cell, d_out, w, gst, io, cache, opt, wg, tok, tile):
    """The backward loop (a template, see above; the bundles: ``time_bwd``). Plan constants: row_bwd, PHASES,
    N1G, READS_NEW, OP2, LN, ZO, ZN, SEP, COPY, WGL, prodw (``_bwd_compiled``)."""
    W1, W2 = w
    dS, G, dD, P, DRH, hn = gst
    DX, DHW, mask, dacc = io
    Hs, C, Vh, Ih, Zn, hT = cache
    rm, Z, lnh, copt, reverse, dln = opt
    x2, dx2, Pih, dWi, dWh, HM, gb = wg
    RM, MASK, BIAS = rm.shape[0] > 0, mask.shape[0] > 0, dacc.shape[0] > 0
    WG = dWi.shape[0] > 0
    T, B, H = d_out.shape
    nst = dS.shape[0]
    GH = DX.shape[1]
    n1 = N1G * H
    D = (DX, DHW, dD, DRH)
    for s in range(T):
        t = s if reverse else T - 1 - s
        c0 = t * B
        tn = t - 1 if reverse else t + 1            # the step after t in scan order
        for r in range(r0, r1):
            row = c0 + r
            if MASK and mask[t, r] == 0.0:          # padded: no gradient into the cell, dS passes
                for j in range(GH):
                    DX[row, j] = 0.0
                if SEP:
                    for j in range(GH):
                        DHW[row, j] = 0.0
                continue
            for k in range(H):
                G[0, r, k] = dS[0, r, k] + d_out[t, r, k]
            for j in range(1, nst):
                for k in range(H):
                    G[j, r, k] = dS[j, r, k]
            if ZO:                                  # the kept share passes the cell
                for j in range(nst):
                    for k in range(H):
                        zk = Z[j, row, k]
                        dS[j, r, k] = G[j, r, k] * (1.0 - zk)
                        G[j, r, k] *= zk
            else:
                for j in range(nst):
                    for k in range(H):
                        dS[j, r, k] = 0.0
            if READS_NEW:                           # the new h: zoneout's cache, or the state after t
                for k in range(H):
                    if ZN:
                        hn[r, k] = Zn[row, k]
                    elif 0 <= tn < T:
                        hn[r, k] = Hs[tn * B + r, k]
                    else:
                        hn[r, k] = hT[r, k]
            row_bwd(1, G, r, C, row, Hs, hn, D, copt)
        if PHASES == 2:                             # dL/d(r h m) = dn W_hn, times m
            prodw(DRH[:, :H], DX[c0:c0 + B, n1:], W2, False, r0, r1, tile, tok)
            for r in range(r0, r1):
                if not MASK or mask[t, r] != 0.0:
                    if RM:
                        for k in range(H):
                            DRH[r, k] *= rm[r, k]
                    row_bwd(2, G, r, C, c0 + r, Hs, hn, D, copt)
        for r in range(r0, r1):
            if MASK and mask[t, r] == 0.0:
                continue
            row = c0 + r
            if COPY:
                for j in range(GH):
                    DHW[row, j] = DX[row, j]
            if BIAS:
                for j in range(GH):
                    dacc[r, 0, j] += DX[row, j]
                if SEP:
                    for j in range(GH):
                        dacc[r, 1, j] += DHW[row, j]
            if LN:
                ln_row_bwd(DHW, row, 0, n1, lnh[0], Vh, row, Ih, dln, r)
        if WGL and WG:                              # this step's share of dW_ih, dW_hh and dx, rows hot
            if RM:
                for r in range(r0, r1):
                    for k in range(H):
                        HM[r, k] = Hs[c0 + r, k] * rm[r, k]
            for g in range(dWi.shape[0]):           # the groups of rows in this block, each its accumulators
                if gb[g] < r0 or gb[g] >= r1:
                    continue
                a0, a1 = c0 + gb[g], c0 + gb[g + 1]
                # Y and X sliced to layout 'A' at every call: one compiled tgemm_acc, not one per layout
                tgemm_acc(dWi[g], DX[a0:a1, :GH], x2[a0:a1, :x2.shape[1]], tok)
                if RM:
                    tgemm_acc(dWh[g, :n1], DHW[a0:a1, :n1], HM[gb[g]:gb[g + 1], :H], tok)
                else:
                    tgemm_acc(dWh[g, :n1], DHW[a0:a1, :n1], Hs[a0:a1, :H], tok)
                if PHASES == 2:
                    e0 = OP2 * H
                    tgemm_acc(dWh[g, n1:], DHW[a0:a1, n1:], C[a0:a1, e0:e0 + H], tok)
            _block(dx2[c0:c0 + B, :dx2.shape[1]], DX[c0:c0 + B, :GH], Pih, False, r0, r1, tile, tok)
        prodw(P[:, :H], DHW[c0:c0 + B, :n1], W1, False, r0, r1, tile, tok)
        for r in range(r0, r1):
            if MASK and mask[t, r] == 0.0:
                continue
            for k in range(H):
                dS[0, r, k] += (P[r, k] * rm[r, k] if RM else P[r, k]) + dD[0, r, k]
            for j in range(1, nst):
                for k in range(H):
                    dS[j, r, k] += dD[j, r, k]


def time_bwd(r0, r1, cell, d_out, w, gst, io, cache, opt, wg, tok):
    """Rows r0 .. r1 back over the sequence: the plan's compiled ``_bwd_loop``. Bundles:
    w = (W1, W2): W_hh's first-product rows (n1, H), and the second's (two-phase cells), plain or packed
    gst = (dS, G, dD, P, DRH, hn): dL/d(states) (n, B, H), in place: in dL/d(final), out dL/d(initial); scratch
        for dL/d(new states), the cell's direct part, the product dDHW W_hh, phase 2's product, the new h
    io = (DX, DHW, mask, dacc): dL/d(x W_ih^T) and dL/d(h W_hh^T) (T*B, G*H) (DHW may be DX itself); mask;
        per-row sums (B, 2, G*H) of DX and DHW (the bias gradients), or empty without bias
    cache = (Hs, C, Vh, Ih, Zn, hT): the forward's caches, and the final h
    opt = (rm, Z, lnh, copt, reverse, dln): as forward; dln (B, 2, n1) the sums of LN_h's gain and bias
        gradients per row
    wg = (x2, dx2, Pih, dWi, dWh, HM, gb): the weight gradients and dx inside the loop, each step's rows while
        they are in the cache (empty dWi: after the loop, as BLAS products): the input x (T*B, I), dx (T*B, I),
        W_ih packed, the accumulators of dW_ih (n, G*H, I) and dW_hh (n, G*H, H), one per group of rows (group g:
        rows gb[g] .. gb[g+1]; a block [r0, r1) is whole groups), and the scratch rows of h m (B, H)"""
    _bwd_compiled(cell, w)(r0, r1, cell, d_out, w, gst, io, cache, opt, wg, tok, tile_for(d_out.dtype, tok))


# ------------------------------------------------------------------ the contract
def _empty(ndim, dt):
    """The absent array of ``ndim`` dimensions: one shared per kind (it has no element to write)."""
    key = (ndim, dt)
    e = _EMPTIES.get(key)
    if e is None:
        e = _EMPTIES[key] = np.empty((0,) * ndim, dt)
    return e


_EMPTIES = {}
_NO_GROUPS = np.zeros(1, np.int64)


def _stack(states, dt):
    """The states (n, B, H) as one fresh array (``np.stack`` checks more than a call of a few steps can pay)."""
    S = np.empty((len(states),) + states[0].shape, dt)
    for j, s in enumerate(states):
        S[j] = s
    return S


def _weights(W, packed):
    """W (K, N) as the block product takes it: packed column panels, or rows contiguous."""
    return pack(W) if packed else np.ascontiguousarray(W)


def forward(cell_name, x, W_ih, W_hh, b_ih, b_hh, state0, mask, reverse, opts, keep, alloc, zoneout=None,
            rows=None):
    """x (T, B, I) -> (output (T, B, H), final state, CellArrays or None). keep=False (inference): the caches go
    to one reused step instead of T. alloc(shape, dtype) gives the cache arrays. rows: a ``split.RowSplit``
    (backend "split": one block of rows per thread), or None (one block on this thread). opts: the cell's
    options (nonlinearity, reset), rec_mask (recurrent dropout, (B, H)) and ln (layer norm's gains)."""
    kern = kernel_for(cell_name, opts)
    T, B, I = x.shape
    GH, H = W_hh.shape
    dt = x.dtype
    tok = token()
    n1 = kern.g1 * H
    ln, rm = opts.get("ln"), opts.get("rec_mask")
    # packed products from PACK_MIN_ROWS rows of the batch, whatever the threads: the products' sums, and so the
    # bits of a result, must not depend on how many threads share the rows
    packed = B >= PACK_MIN_ROWS
    x = np.ascontiguousarray(x)
    m2 = mask_rows(mask, T, dt)
    fused = kern.sums and ln is None and packed
    short = ln is None and not packed and T < SHORT_CALL    # one-row products on the layer's own W^T
    # the biases: cells whose products enter as a sum take b_ih + b_hh once, with x W_ih^T; others keep b_hh
    # apart (the GRU's n gate reads r (h W_hn^T + b_hn)) and add it after layer norm
    if kern.sums:
        bsum = b_hh if b_ih is None else (b_ih if b_hh is None else b_ih + b_hh)
        bx, bh = (_empty(1, dt) if bsum is None else bsum), _empty(1, dt)
    else:
        bx = _empty(1, dt) if b_ih is None else b_ih
        bh = _empty(1, dt) if b_hh is None else np.ascontiguousarray(b_hh)
    ln_x = None
    XH = np.empty((B, 0), dt)
    if ln is not None:                                  # LN_x(x W_ih^T) + b_ih over all steps, BLAS
        XW, ln_x = layernorm.forward((x.reshape(T * B, I) @ W_ih.T).reshape(T, B, GH), *ln["x"])
        if b_ih is not None:
            XW += b_ih
        if kern.sums and b_hh is not None:
            bh = np.ascontiguousarray(b_hh)             # after LN_h, as the reference adds it
        XW = XW.reshape(T * B, GH)
        Pih = _empty(3, dt)
        W1 = _weights(W_hh.T[:, :n1], packed)
    elif fused:
        XW, Pih = np.empty((0, GH), dt), _empty(3, dt)
        XH = np.empty((B, I + H + (0 if bx.size == 0 else 1)), dt)
        W1 = pack(W_ih.T, W_hh.T, bx[None, :]) if bx.size else pack(W_ih.T, W_hh.T)
        bx = _empty(1, dt)
    elif short:                                         # the layer's W^T as it is: no per-call copy or packing
        XW = np.empty((B, GH), dt)
        Pih = np.asfortranarray(W_ih.T)                 # (I, G*H), columns contiguous: a view of W_ih
        W1 = np.asfortranarray(W_hh.T[:, :n1])
    else:
        XW = np.empty((max(1, PROJ_ROWS // B) * B, GH), dt)
        Pih = _pack1(W_ih.T, nr(dt))                    # pack() of one block, without its checks
        W1 = _weights(W_hh.T[:, :n1], packed)
    if kern.phases == 2:
        W2 = np.asfortranarray(W_hh.T[:, n1:]) if short else _weights(W_hh.T[:, n1:], packed)
    else:
        W2 = _empty(3 if packed else 2, dt)
    S = _stack(state0, dt)                                          # (n, B, H)
    has_zo = zoneout is not None
    N = np.empty_like(S)
    Z = np.ascontiguousarray(np.stack([np.broadcast_to(z, (T, B, H)).reshape(T * B, H) for z in zoneout]),
                             dtype=dt) if has_zo else _empty(3, dt)
    Tc = T if keep else 1
    new = alloc if keep else np.empty
    rows_c = Tc * B
    Hs3, C3 = new((Tc, B, H), dt), new((Tc, B, kern.kc * H), dt)
    Vh, Ih = (np.empty((rows_c, n1), dt), np.empty(rows_c, dt)) if ln is not None else (_empty(2, dt), _empty(1, dt))
    Zn = np.empty((rows_c, H), dt) if has_zo and kern.reads_new else _empty(2, dt)
    lnh = np.ascontiguousarray(np.stack(ln["h"]), dtype=dt) if ln is not None else _empty(2, dt)
    copt = kern.copt(opts, rows_c, B, H, dt, ln)
    rmask = np.ascontiguousarray(rm, dtype=dt) if rm is not None else _empty(2, dt)
    out = np.empty((T, B, H), dt)
    A = np.empty((B, GH), dt)
    plan = kern.plan(fused=fused, direct=kern.sums and ln is None and not fused, ln=ln is not None, zoneout=has_zo)
    args = (plan, x, (Pih, W1, W2, bx, bh), (S, np.empty((B, H), dt), N, XH), (XW, A, out, m2),
            (Hs3.reshape(rows_c, H), C3.reshape(rows_c, kern.kc * H), Vh, Ih, Zn), (rmask, Z, lnh, copt, reverse),
            tok)
    if rows is None:
        time_fwd(0, B, *args)
    else:
        rows.run(time_fwd, B, args)
    final = tuple(S.copy())
    if not keep:
        return out, final, None
    return out, final, CellArrays(kern=kern, plan=plan, Hs=Hs3, C=C3, hT=final[0], Vh=Vh, Ih=Ih, Zn=Zn, Z=Z if has_zo else None, rm=rmask, lnh=lnh,
                                  copt=copt, ln_x=ln_x, bh_after=bool(bh.size))


class StepCall:
    """One direction's inference forward of up to ``max_steps`` (< SHORT_CALL) steps on B < PACK_MIN_ROWS rows (a
    stream's step or chunk, ``rnnlab.Stream``), its arrays made once: the same loop and arrays as ``forward``'s
    short call, so bit for bit its result. A call is the loop over x[:T] (T, B, I), the new state left in ``S``
    (n, B, H) and the outputs in ``out[:T]`` (T, B, H); ``x`` and ``mask`` may be given (a chain of layers: the
    layer below's ``out``, one mask for all). The weights are the layer's own (views, read as they are
    on every call); the bias sum is formed again on each call, so in-place updates of the parameters are seen."""

    def __init__(self, cell_name, W_ih, W_hh, b_ih, b_hh, opts, B, dt, n_states, x=None, max_steps=1, mask=None):
        if not 1 <= max_steps < SHORT_CALL:
            raise ValueError(f"max_steps: expected 1 to {SHORT_CALL - 1} (a short call), got {max_steps}")
        kern = kernel_for(cell_name, opts)
        GH, H = W_hh.shape
        n1 = kern.g1 * H
        self.x = np.zeros((max_steps, B, W_ih.shape[1]), dt) if x is None else x     # (T, B, I)
        self.b_ih, self.b_hh, self.sums = b_ih, b_hh, kern.sums
        if kern.sums:
            bx = _empty(1, dt) if b_ih is None and b_hh is None else np.zeros(GH, dt)
            bh = _empty(1, dt)
        else:
            bx = _empty(1, dt) if b_ih is None else b_ih
            bh = _empty(1, dt) if b_hh is None else b_hh
        self.bx = bx
        self.S = np.zeros((n_states, B, H), dt)
        self.out = np.empty((max_steps, B, H), dt)
        self.mask = np.ones((max_steps, B), dt) if mask is None else mask                  # (T, B)
        self.B, self.tok = B, token()
        Pih, W1 = np.asfortranarray(W_ih.T), np.asfortranarray(W_hh.T[:, :n1])
        W2 = np.asfortranarray(W_hh.T[:, n1:]) if kern.phases == 2 else _empty(2, dt)
        # everything but the steps' views: the same arrays on every call
        self._fixed = (kern.plan(direct=kern.sums), (Pih, W1, W2, bx, bh),
                       (self.S, np.empty((B, H), dt), np.empty_like(self.S), np.empty((B, 0), dt)),
                       (np.empty((B, GH), dt), np.empty((B, GH), dt)),
                       (np.empty((B, H), dt), np.empty((B, kern.kc * H), dt), _empty(2, dt), _empty(1, dt),
                        _empty(2, dt)),
                       (_empty(2, dt), _empty(3, dt), _empty(2, dt), kern.copt(opts, B, B, H, dt, None), False))
        self._no_mask = np.empty((0, 1), dt)
        self._args = {}
        self._loop, self._tile = _fwd_compiled(self._fixed[0], self._fixed[1]), tile_for(dt, self.tok)

    def _for(self, T, masked):
        """The loop's arguments for T steps (made once per T)."""
        plan, w, st, (XW, A), cache, opt = self._fixed
        return (plan, self.x[:T], w, st, (XW, A, self.out[:T], self.mask[:T] if masked else self._no_mask), cache,
                opt, self.tok, self._tile)

    def __call__(self, T=1, masked=False):
        """T steps: x[:T] filled (and mask[:T] when ``masked``) -> out[:T]."""
        if self.sums and self.bx.size:
            if self.b_ih is None or self.b_hh is None:
                self.bx[...] = self.b_hh if self.b_ih is None else self.b_ih
            else:
                np.add(self.b_ih, self.b_hh, out=self.bx)
        key = (T, masked)
        args = self._args.get(key)
        if args is None:
            args = self._args[key] = self._for(T, masked)
        self._loop(0, self.B, *args)            # ``time_fwd`` without its look-up and its tile per call
        return self.out[:T]


def wgrad_groups(B) -> int:
    """The groups of rows whose weight gradients the backward loop accumulates apart (their sums added in order
    after it): one per CPU of the machine's default thread count (``threads.machine_threads``), each of at least
    WGRAD_GROUP_ROWS rows. Not a function of RNNLAB_NUM_THREADS: the threads take whole groups, so the same call
    gives the same bits on any number of threads (the seed runners' one-thread trials and the serial runner)."""
    return max(1, min(machine_threads(), B // WGRAD_GROUP_ROWS))


def wgrad_in_loop(GH, I, H, itemsize, rows) -> bool:
    """Whether a backward accumulates its weight gradients inside the loop (``rows``: the rows of a group), by
    the limits WGRAD_MAX_BYTES and WGRAD_ROW_BYTES, from PACK_MIN_ROWS rows a group."""
    acc_bytes = GH * (I + H) * itemsize
    return rows >= PACK_MIN_ROWS and acc_bytes <= WGRAD_MAX_BYTES and acc_bytes <= WGRAD_ROW_BYTES * rows


def backward(cell_name, d_out, d_state, cache, W_ih, W_hh, has_bias, workspace, rows=None):
    """-> Grads from the forward's DirCache; workspace(shape, dtype) holds dL/d(x W_ih^T)."""
    a = cache.arrays
    kern = a.kern
    T, B, H = d_out.shape
    GH = W_hh.shape[0]
    I = W_ih.shape[1]
    dt = d_out.dtype
    tok = token()
    n1 = kern.g1 * H
    ln = cache.opts.get("ln")
    nthreads = 1 if rows is None else rows.threads(B)
    packed = B >= PACK_MIN_ROWS                         # as in forward
    m2 = mask_rows(cache.mask, T, dt)
    sep = kern.writes_dhw or ln is not None
    DX = workspace((T * B, GH), dt)
    DHW = np.empty((T * B, GH), dt) if sep else DX
    dS = _stack(d_state, dt)
    G, dD = np.empty_like(dS), np.empty_like(dS)
    gst = (dS, G, dD, np.empty((B, H), dt), np.empty((B, H), dt), np.empty((B, H), dt))
    dacc = np.zeros((B, 2, GH), dt) if has_bias else _empty(3, dt)
    dln = np.zeros((B, 2, n1), dt) if ln is not None else _empty(3, dt)
    copt, copt_grads = kern.copt_grads(a.copt)        # the cell's own gradient sums, fresh
    W1 = _weights(W_hh[:n1], packed)
    W2 = _weights(W_hh[n1:], packed) if kern.phases == 2 else _empty(3 if packed else 2, dt)
    Hs2, C2 = a.Hs.reshape(T * B, H), a.C.reshape(T * B, -1)
    x2 = cache.x.reshape(T * B, I)
    # the weight gradients inside the loop where a block's accumulators stay in the second-level cache
    groups = wgrad_groups(B)
    in_loop = ln is None and wgrad_in_loop(GH, I, H, dt.itemsize, B // groups)
    if in_loop:
        dx2 = np.empty((T * B, I), dt)
        gb = np.array([B * g // groups for g in range(groups + 1)], np.int64)
        wg = (np.ascontiguousarray(x2, dtype=dt), dx2, _pack1(W_ih, nr(dt)), np.zeros((groups, GH, I), dt),
              np.zeros((groups, GH, H), dt), np.empty((B, H), dt) if a.rm.size else _empty(2, dt), gb)
    else:
        wg = (_empty(2, dt), _empty(2, dt), _empty(3, dt), _empty(3, dt), _empty(3, dt), _empty(2, dt),
              _NO_GROUPS)
    args = (a.plan, np.ascontiguousarray(d_out, dtype=dt), (W1, W2), gst, (DX, DHW, m2, dacc),
            (Hs2, C2, a.Vh, a.Ih, a.Zn, a.hT), (a.rm, _empty(3, dt) if a.Z is None else a.Z, a.lnh, copt, cache.reverse, dln),
            wg, tok)
    if rows is None:
        time_bwd(0, B, *args)
        mm = np.matmul
    else:
        if in_loop:                                     # whole groups per thread, evenly
            n = min(nthreads, groups)
            rows.run(time_bwd, B, args, bounds=[int(gb[groups * i // n]) for i in range(n + 1)])
        else:
            rows.run(time_bwd, B, args)
        mm = pmatmul
    if in_loop:                                         # the groups' sums added in their order
        dWi, dWh = wg[3], wg[4]
        dW_ih, dW_hh = (dWi[0], dWh[0]) if groups == 1 else (dWi.sum(axis=0), dWh.sum(axis=0))
    else:                                               # the products over all steps
        Hop = (a.Hs * a.rm).reshape(T * B, H) if a.rm.size else Hs2       # the products' operand h m
        dW_hh = mm(DHW[:, :n1].T, Hop)
        if kern.phases == 2:
            e0 = kern.op2 * H
            dW_hh = np.concatenate([dW_hh, mm(DHW[:, n1:].T, C2[:, e0:e0 + H])], axis=0)
    db_ih = db_hh = None
    if has_bias:
        db_ih = dacc[:, 0].sum(axis=0)
        db_hh = dacc[:, 1].sum(axis=0) if sep else db_ih.copy()
    extra = {}
    if ln is not None:
        DXr, extra["ln_ih_weight"], extra["ln_ih_bias"] = layernorm.backward(DX.reshape(T, B, GH), ln["x"][0], a.ln_x)
        DX = DXr.reshape(T * B, GH)
        sums = dln.sum(axis=0)
        extra["ln_hh_weight"], extra["ln_hh_bias"] = sums[0], sums[1]
    extra.update(copt_grads(copt))                      # the cell's own parameters' gradients (LSTM: LN_c)
    if not in_loop:
        dx2, dW_ih = mm(DX, W_ih), mm(DX.T, x2)
    return Grads(dx=dx2.reshape(cache.x.shape), dstate0=tuple(dS[j] for j in range(dS.shape[0])),
                 dW_ih=dW_ih, dW_hh=dW_hh, db_ih=db_ih, db_hh=db_hh, extra=extra or None)
