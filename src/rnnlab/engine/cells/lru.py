"""LRU, the linear recurrent unit (Orvieto et al. 2023): a complex diagonal recurrence, exponentially
parameterised and normalised, read out by a dense complex map.

    lambda = exp(-exp(nu_log) + i exp(theta_log))          (H,) complex, |lambda| = exp(-exp(nu_log)) < 1
    gamma = exp(gamma_log)                                  (H,) normalisation, init sqrt(1 - |lambda|^2)
    h_t = lambda * h_{t-1} + gamma * (x_t B^T)              B = B_re + i B_im (H, I); h complex (B, H)
    y_t = Re(h_t C^T) + x_t D^T                             C = C_re + i C_im (H, H), D (H, I)

The state is complex; the layer carries it as two real arrays (h_re, h_im), as an LSTM carries (h, c). The
carry dh_t/dh_{t-1} = diag(lambda), constant in time: |lambda|^(T-t) is the gradient's whole story.

Init (the paper's ring): |lambda| uniform on the ring r_min <= |lambda| <= r_max (area-uniform), phase
uniform in [0, max_phase]; B and C complex Gaussian with variance 1/(2I) and 1/H per part; D as a Linear.

Backward (gradients of a real loss as dL/dRe + i dL/dIm): dh_t = dy_t conj(C) from the readout, the scan's
backward through the recurrence, then dlambda = sum_t dh_t conj(h_{t-1}), dw = conj(lambda) dlambda for
w = -exp(nu_log) + i exp(theta_log): dnu_log = -exp(nu_log) Re(dw), dtheta_log = exp(theta_log) Im(dw);
du = gamma db for u = x B^T: dB_re = Re(du)^T x, dB_im = Im(du)^T x; dgamma_log = gamma Re(conj(u) db).
"""
from __future__ import annotations

import numpy as np

from rnnlab.engine import scan
from rnnlab.engine._caches import DiagonalArrays
from rnnlab.engine.cells import linear

STATE = ("h_re", "h_im")
GATES = ()
BLOCKS = ()
SCAN = "associative"
SCANS = ("associative",)
DEFAULTS = {"r_min": 0.9, "r_max": 0.999, "max_phase": 2 * np.pi}


def param_shapes(I, H, bias):
    return {"nu_log": (H,), "theta_log": (H,), "gamma_log": (H,), "B_re": (H, I), "B_im": (H, I),
            "C_re": (H, H), "C_im": (H, H), "D": (H, I)}


def init(rng, I, H, bias, dtype, opts):
    o = {**DEFAULTS, **{k: v for k, v in opts.items() if k in DEFAULTS}}
    u1, u2 = rng.uniform(size=H), rng.uniform(size=H)
    nu_log = np.log(-0.5 * np.log(u1 * (o["r_max"] ** 2 - o["r_min"] ** 2) + o["r_min"] ** 2))
    theta_log = np.log(o["max_phase"] * u2 + 1e-12)
    mod = np.exp(-np.exp(nu_log))
    k = 1.0 / np.sqrt(I)
    p = {n: v.astype(dtype) for n, v in (("nu_log", nu_log), ("theta_log", theta_log),
                                         ("gamma_log", np.log(np.sqrt(1 - mod ** 2))))}
    # the matrices block by block in their dtype (linear.draw), in the order the stream has always drawn them
    for n, shape, scale in (("B_re", (H, I), np.sqrt(2 * I)), ("B_im", (H, I), np.sqrt(2 * I)),
                            ("C_re", (H, H), np.sqrt(H)), ("C_im", (H, H), np.sqrt(H))):
        p[n] = linear.draw(lambda m: rng.standard_normal(m) / scale, shape, dtype)
    p["D"] = linear.draw(lambda m: rng.uniform(-k, k, m), (H, I), dtype)
    return p


def eigenvalues(p):
    """lambda (H,) complex."""
    return np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))


def project_input(x, p):
    """-> (u = x B^T (T, B, H) complex, lambda (H,), b = gamma u): what the recurrence reads."""
    T, B, I = x.shape
    x2 = x.reshape(T * B, I)
    cdt = np.complex64 if x.dtype == np.float32 else np.complex128
    u = ((x2 @ p["B_re"].T) + 1j * (x2 @ p["B_im"].T)).reshape(T, B, -1).astype(cdt)      # (T, B, H)
    return u, eigenvalues(p).astype(cdt), (np.exp(p["gamma_log"]) * u).astype(cdt)


def readout(h, x, p, mask):
    """y = Re(h C^T) + x D^T, zero at padded steps. -> (T, B, H) real."""
    T, B, I = x.shape
    y = ((h.real.reshape(T * B, -1) @ p["C_re"].T - h.imag.reshape(T * B, -1) @ p["C_im"].T)
         + x.reshape(T * B, I) @ p["D"].T).reshape(T, B, -1).astype(x.dtype)
    return y if mask is None else y * mask


def readout_backward(d_out, h, x, p, mask):
    """-> (dL/dh (T, B, H) complex, {C_re, C_im, D} gradients, dx through the skip D)."""
    T, B, I = x.shape
    H = h.shape[-1]
    gy = (d_out if mask is None else d_out * mask).reshape(T * B, H)
    x2 = x.reshape(T * B, I)
    grads = {"C_re": gy.T @ h.real.reshape(T * B, H), "C_im": -(gy.T @ h.imag.reshape(T * B, H)), "D": gy.T @ x2}
    gh = (gy @ p["C_re"] - 1j * (gy @ p["C_im"])).reshape(T, B, H).astype(h.dtype)
    return gh, grads, (gy @ p["D"]).reshape(x.shape)


def input_backward(dlam, db, u, lam, x, p, grads):
    """From dL/dlambda (H,) and dL/db (T, B, H): the eigenvalue, normalisation and B gradients into ``grads``;
    -> dx through B."""
    T, B, I = x.shape
    H = db.shape[-1]
    dw = np.conj(lam) * dlam
    grads["nu_log"] = -np.exp(p["nu_log"]) * dw.real
    grads["theta_log"] = np.exp(p["theta_log"]) * dw.imag
    gamma = np.exp(p["gamma_log"])
    grads["gamma_log"] = gamma * (np.conj(u) * db).real.sum(axis=(0, 1))
    du = (gamma * db).reshape(T * B, H)
    x2 = x.reshape(T * B, I)
    grads["B_re"], grads["B_im"] = du.real.T @ x2, du.imag.T @ x2
    return (du.real @ p["B_re"] + du.imag @ p["B_im"]).reshape(x.shape)


def forward(x, p, state0, mask, how):
    u, lam, b = project_input(x, p)
    a = np.broadcast_to(lam, b.shape)
    if mask is not None:
        a = np.where(mask > 0, a, 1.0).astype(b.dtype)
        b = b * mask
    h0 = (state0[0] + 1j * state0[1]).astype(b.dtype)
    h = scan.run(np.ascontiguousarray(a), b, h0, how)
    hT = h[-1]
    return readout(h, x, p, mask), (hT.real.astype(x.dtype), hT.imag.astype(x.dtype)), DiagonalArrays(
        x, mask, np.asarray(a), h, h0, {"u": u, "lambda": lam}, how)


def backward(d_out, d_state, cache, p):
    x, m, h = cache.x, cache.mask, cache.h
    gh, grads, dx = readout_backward(d_out, h, x, p, m)
    dhT = d_state[0] + 1j * d_state[1]
    da, G, dh0 = scan.backward(gh, cache.a, h, cache.h0, dhT, "loop" if cache.how == "loop" else "associative")
    db = G
    if m is not None:
        da, db = da * m, G * m
    dx = dx + input_backward(da.sum(axis=(0, 1)), db, cache.extra["u"], cache.extra["lambda"], x, p, grads)
    grads = {k: np.asarray(v, dtype=x.dtype) for k, v in grads.items()}
    return dx.astype(x.dtype), (dh0.real.astype(x.dtype), dh0.imag.astype(x.dtype)), grads, G


def carry(cache):
    """|dh_t/dh_{t-1}| per unit: |lambda| (1 at padding)."""
    return np.abs(cache.a)
