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

from .. import scan
from ..caches import DiagonalArrays

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
    p = {"nu_log": nu_log, "theta_log": theta_log, "gamma_log": np.log(np.sqrt(1 - mod ** 2)),
         "B_re": rng.standard_normal((H, I)) / np.sqrt(2 * I), "B_im": rng.standard_normal((H, I)) / np.sqrt(2 * I),
         "C_re": rng.standard_normal((H, H)) / np.sqrt(H), "C_im": rng.standard_normal((H, H)) / np.sqrt(H),
         "D": rng.uniform(-k, k, (H, I))}
    return {n: v.astype(dtype) for n, v in p.items()}


def eigenvalues(p):
    """lambda (H,) complex."""
    return np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))


def forward(x, p, state0, mask, how):
    T, B, I = x.shape
    x2 = x.reshape(T * B, I)
    cdt = np.complex64 if x.dtype == np.float32 else np.complex128
    u = ((x2 @ p["B_re"].T) + 1j * (x2 @ p["B_im"].T)).reshape(T, B, -1).astype(cdt)      # (T, B, H)
    lam = eigenvalues(p).astype(cdt)
    b = np.exp(p["gamma_log"]) * u
    a = np.broadcast_to(lam, b.shape)
    if mask is not None:
        a = np.where(mask > 0, a, 1.0).astype(cdt)
        b = b * mask
    h0 = (state0[0] + 1j * state0[1]).astype(cdt)
    h = scan.run(np.ascontiguousarray(a), b, h0, how)
    y = ((h.real.reshape(T * B, -1) @ p["C_re"].T - h.imag.reshape(T * B, -1) @ p["C_im"].T)
         + x2 @ p["D"].T).reshape(T, B, -1).astype(x.dtype)
    out = y if mask is None else y * mask
    hT = h[-1]
    return out, (hT.real.astype(x.dtype), hT.imag.astype(x.dtype)), DiagonalArrays(
        x, mask, np.asarray(a), h, h0, {"u": u, "lambda": lam}, how)


def backward(d_out, d_state, cache, p):
    x, m, h = cache.x, cache.mask, cache.h
    T, B, I = x.shape
    H = h.shape[-1]
    gy = d_out if m is None else d_out * m
    gy2, x2 = gy.reshape(T * B, H), x.reshape(T * B, I)
    hr, hi = h.real.reshape(T * B, H), h.imag.reshape(T * B, H)
    grads = {"C_re": gy2.T @ hr, "C_im": -(gy2.T @ hi), "D": gy2.T @ x2}
    gh = (gy2 @ p["C_re"] - 1j * (gy2 @ p["C_im"])).reshape(T, B, H)
    dhT = d_state[0] + 1j * d_state[1]
    da, G, dh0 = scan.backward(gh, cache.a, h, cache.h0, dhT, "loop" if cache.how == "loop" else "associative")
    db = G
    if m is not None:
        da, db = da * m, G * m
    lam, u = cache.extra["lambda"], cache.extra["u"]
    dw = np.conj(lam) * da.sum(axis=(0, 1))
    grads["nu_log"] = -np.exp(p["nu_log"]) * dw.real
    grads["theta_log"] = np.exp(p["theta_log"]) * dw.imag
    gamma = np.exp(p["gamma_log"])
    grads["gamma_log"] = gamma * (np.conj(u) * db).real.sum(axis=(0, 1))
    du = (gamma * db).reshape(T * B, H)
    grads["B_re"], grads["B_im"] = du.real.T @ x2, du.imag.T @ x2
    dx = gy2 @ p["D"] + du.real @ p["B_re"] + du.imag @ p["B_im"]
    grads = {k: np.asarray(v, dtype=x.dtype) for k, v in grads.items()}
    return dx.reshape(x.shape).astype(x.dtype), (dh0.real.astype(x.dtype), dh0.imag.astype(x.dtype)), grads, G


def carry(cache):
    """|dh_t/dh_{t-1}| per unit: |lambda| (1 at padding)."""
    return np.abs(cache.a)
