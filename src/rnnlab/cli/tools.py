"""The tool commands: ``rnnlab check`` (every layer kind gradient-checked), ``rnnlab lab`` (the live gradient lab's
server) and ``rnnlab warmup`` (the kernels compiled ahead)."""
from __future__ import annotations

import os


def cmd_check(args) -> int:
    from rnnlab.engine.gradcheck import check_every_kind
    T, B, I, H = args.seq_len, 3, 4, 5
    print(f"gradient check: float64 central differences vs hand-derived BPTT "
          f"(T={T}, B={B}, I={I}, H={H}, {args.num_layers} layers, bidirectional, ragged lengths)")
    worst = 0.0
    for name, layer, errors in check_every_kind(T, args.num_layers, args.seed, I, H):
        top = max(errors, key=errors.get)
        worst = max(worst, errors[top])
        print(f"  {name:20s} {layer.num_parameters():5d} params  max relative error {errors[top]:.2e} ({top})")
    ok = worst < 1e-6
    print(f"{'PASS' if ok else 'FAIL'}: worst relative error {worst:.2e} (tolerance 1e-6)")
    return 0 if ok else 1


def cmd_lab(args) -> int:
    from rnnlab.errors import ConfigError
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"lab: needs the lab extra ({exc.name} is not installed): pip install 'rnnlab[lab]'") from None
    from rnnlab.lab.app import serve

    def announce(url):
        print(f"rnnlab lab: {url}  (run folders in {args.runs}; Ctrl-C stops the server and saves its runs)",
              flush=True)
    serve(args.port, not args.no_browser, args.runs, announce)
    return 0


# ------------------------------------------------------------------------------ warm-up
def cmd_warmup(args) -> int:
    import time
    from rnnlab.engine._kernels import available, cache_dir
    from rnnlab.engine.warmup import CELL_CONFIGS, warmup
    t0 = time.perf_counter()

    def report(label, seconds):
        if not args.quiet:
            print(f"  {label:28s} {seconds:6.2f} s")
    where = cache_dir() if available() else None
    if not args.quiet:
        print(f"compiling rnnlab's {'inference ' if args.inference else ''}kernels for {', '.join(args.dtype)} "
              f"(cached on disk for later processes)")
    warmup(tuple(args.dtype), cells=tuple(args.cell or CELL_CONFIGS), report=report, inference=args.inference)
    print(f"warm-up done in {time.perf_counter() - t0:.1f} s; Numba's cache: {where}{_cache_note(where)}")
    return 0


def _cache_note(where) -> str:
    """Why the cache is where it is, when NUMBA_CACHE_DIR was set and Numba could not write there."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env and not os.path.abspath(where).startswith(os.path.abspath(env) + os.sep):
        return f" (NUMBA_CACHE_DIR={env} is not writable)"
    return ""

