"""``rnnlab warmup``: compile the kernels ahead, so that a first training step or prediction does not pay for it.

Numba compiles each kernel on its first call and keeps the machine code on disk (``cache=True``): the first
process that uses a kernel pays for compiling it, later processes load it. This runs every compiled backend
once on a tiny batch (forward with gradients and backward, with and without padded rows, and an inference
forward; "units", which serves inference only, the inference forward and a stream's steps) for the requested
cells and dtypes, and
the one-thread loop on one row too, a one-step call (a stream's) and a long one. ``inference=True`` compiles
the inference forwards only, for a serving process, which never calls a backward kernel (Numba compiles, or
loads from its cache, each kernel on its first call).

Where the cache goes is Numba's choice (``_kernels.cache_dir()``): NUMBA_CACHE_DIR when set, else beside the
package when it is writable, else the user's cache folder.
"""
from __future__ import annotations

import time

import numpy as np

from rnnlab.engine.dispatch import COMPILED
from rnnlab.errors import ConfigError, check_choice
from rnnlab.engine.grad_mode import no_grad

CELL_CONFIGS = {"rnn": ("rnn", {}), "lstm": ("lstm", {}), "gru": ("gru", {}), "gru-before": ("gru", {"reset": "before"}),
            "mingru": ("mingru", {}), "minlstm": ("minlstm", {}), "indrnn": ("indrnn", {}), "lru": ("lru", {}),
            "rnn+options": ("rnn", {"recurrent_dropout": 0.1, "zoneout": 0.1}),
            "lstm+options": ("lstm", {"recurrent_dropout": 0.1, "zoneout": 0.1, "layer_norm": True}),
            "gru+options": ("gru", {"recurrent_dropout": 0.1, "zoneout": 0.1, "layer_norm": True})}
DIAGONAL = ("mingru", "minlstm", "indrnn", "lru")         # one compiled backend: their whole loop ("loop")
NOT_UNITS = ("gru-before", "rnn+options", "lstm+options", "gru+options")   # two products a step, or an option


def warmup(dtypes=("float32",), cells=tuple(CELL_CONFIGS), backends=COMPILED, report=None, inference=False) -> dict:
    """Compile the kernels of ``cells`` x ``backends`` x ``dtypes`` (``inference``: the forwards without
    gradients only). -> {"cell backend dtype": seconds}. ``report(label, seconds)`` is called after each (the
    CLI prints it)."""
    from rnnlab.engine import _kernels as kernels
    from rnnlab.engine.layers import layer_class
    if not kernels.available():
        raise ConfigError("warmup: the compiled backends need the numba package; install it with: pip install numba")
    for d in dtypes:
        check_choice("dtype", d, ("float32", "float64"))
    for c in cells:
        check_choice("cell", c, CELL_CONFIGS)
    for b in backends:
        check_choice("backend", b, COMPILED)
    from rnnlab.engine._kernels.split import num_threads
    rng = np.random.default_rng(0)
    times = {}
    for dtype in dtypes:
        for name in cells:
            cell, opts = CELL_CONFIGS[name]
            for backend in backends:
                if backend in ("split", "units") and num_threads() < 2:
                    continue                                    # the threaded paths would not serve these calls
                if (name in DIAGONAL and backend != "loop") or (name in NOT_UNITS and backend == "units"):
                    continue
                t0 = time.perf_counter()
                # the units path splits at least 8 units per thread, and runs inference only
                H = 16 if backend == "units" else 4
                layer = layer_class(cell)(3, H, dtype=dtype, seed=0, backend=backend, **opts)
                x = rng.standard_normal((5, 4, 3)).astype(dtype)
                for lengths in (None, np.array([5, 3, 4, 1])):
                    if backend != "units" and not inference:
                        out, _ = layer(x, lengths=lengths)
                        layer.backward(np.ones_like(out))
                    with no_grad():
                        layer(x, lengths=lengths)
                if backend == "units":      # a stream's steps: its units split, threads kept (one and two layers:
                    from rnnlab.engine._kernels.units_stream import UnitsStream       # its kernels take the layers)
                    for L in (1, 2):
                        deep = layer_class(cell)(3, H, num_layers=L, dtype=dtype, seed=0, **opts)
                        u = UnitsStream(cell, [deep.layer_params(l, 0) for l in range(L)], dict(deep.cell_opts), 1,
                                        np.dtype(dtype), len(deep.state_sizes), 2)
                        u.x[...] = x[:2, :1]
                        u.run(2, False)
                        u.close()
                if backend == "loop" and name not in DIAGONAL:     # one row: a short call (a stream's step) and a
                    from rnnlab.engine._kernels.loop import SHORT_CALL            # long one read the weights differently
                    for T in (1, SHORT_CALL):
                        x1 = rng.standard_normal((T, 1, 3)).astype(dtype)
                        if not inference:
                            out, _ = layer(x1)
                            layer.backward(np.ones_like(out))
                        with no_grad():
                            layer(x1)
                label = f"{name} {backend} {dtype}"
                times[label] = time.perf_counter() - t0
                if report is not None:
                    report(label, times[label])
    return times
