"""backend="split": the batch's rows split over threads, each running the whole time loop for its rows.

The rows of a batch are independent chains, so each thread runs the shared compiled loop (``_kernels.loop``'s
``time_fwd`` and ``time_bwd``, every cell and option) for its own block of rows with no synchronisation
between steps, its products packed over the block. The loops release the GIL, so plain Python threads run
them in parallel; the weight gradients are accumulated per block of rows inside the loop (small layers) or are
large BLAS products after the loop, split over the same threads (``pmatmul``).

Why: a per-step product (B, H) x (H, 4H) is too small for two BLAS threads to share well, and a gate kernel
runs on one core; splitting the batch keeps every core busy with whole steps (docs/performance.md).
"""
from __future__ import annotations

from rnnlab.engine._kernels import loop
from rnnlab.engine._kernels.threads import (
    MIN_ROWS, PMATMUL_MIN_ROWS, SHARE_MAX, SHARE_MIN, RowSplit, _in_threads, num_threads, pmatmul, rebalance,
    threads_for,
)


def forward(cell_name, x, W_ih, W_hh, b_ih, b_hh, state0, mask, reverse, opts, keep, alloc, zoneout=None,
            rows=None):
    """``_kernels.loop.forward`` with one block of rows per thread (rows: the layer's RowSplit)."""
    return loop.forward(cell_name, x, W_ih, W_hh, b_ih, b_hh, state0, mask, reverse, opts, keep, alloc, zoneout,
                        rows or RowSplit())


def backward(cell_name, d_out, d_state, cache, W_ih, W_hh, has_bias, workspace, rows=None):
    """``_kernels.loop.backward`` with one block of rows per thread; any products after the loop split over the
    same threads (``pmatmul``)."""
    return loop.backward(cell_name, d_out, d_state, cache, W_ih, W_hh, has_bias, workspace, rows or RowSplit())
