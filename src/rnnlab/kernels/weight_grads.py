"""The weight and input gradients after a compiled loop, shared by the loop and hybrid strategies: large
products over all steps at once (dL/dA is in memory, (T, B, G*H)), so BLAS runs them near its peak."""
from __future__ import annotations

import numpy as np

from ..caches import Grads


def weight_grads(cell_name, dXW, dHW, x, Hs, c, W_ih, has_bias, dstate0, mm):
    """The products after the loop: dW_ih = dXW^T x, dW_hh = dHW^T h_{t-1} (the reset-before GRU's n block:
    against r h), dx = dXW W_ih, and the bias sums. The LSTM and the RNN fold b_ih into b_hh: both get the
    same sum."""
    T, B, GH = dXW.shape
    H = Hs.shape[-1]
    dX2, dH2, Hs2 = dXW.reshape(T * B, GH), dHW.reshape(T * B, GH), Hs.reshape(T * B, H)
    if cell_name == "gru" and not c.after:
        dW_hh = np.concatenate([mm(dH2[:, :2 * H].T, Hs2), mm(dH2[:, 2 * H:].T, c.Es.reshape(T * B, H))], axis=0)
    else:
        dW_hh = mm(dH2.T, Hs2)
    dW_ih = mm(dX2.T, x.reshape(T * B, -1))
    dx = mm(dX2, W_ih).reshape(x.shape)
    db_ih = db_hh = None
    if has_bias:
        db_hh = dH2.sum(axis=0)
        db_ih = db_hh.copy() if dHW is dXW else dX2.sum(axis=0)
    return Grads(dx, dstate0, dW_ih, dW_hh, db_ih, db_hh)
