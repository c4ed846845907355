"""The study commands: ``rnnlab compare`` (``rnnlab.study.comparison``), ``rnnlab gradients``
(``rnnlab.study.gradients``) and ``rnnlab sweep`` (``rnnlab.scale.sweep``): the flags handed to the library, its
numbers printed."""
from __future__ import annotations

import numpy as np

from rnnlab.cli.common import check_json, inputs, loopback_only, overrides, run_data


# ------------------------------------------------------------------------------ compare
# compare's own flags (rnnlab.study.comparison.SETTINGS under their argparse names); the rest are training keys
_COMPARE_FLAGS = {"entries": "models", "match": "match", "params": "params", "seeds": "seeds", "workers": "workers",
                  "runner": "runner", "threshold": "threshold", "forget_bias_ablation": "forget_bias_ablation",
                  "report": "report"}


def cmd_compare(args) -> int:
    from rnnlab.study.compare import summary_columns, summary_rows
    from rnnlab.study.comparison import plan_comparison, run_comparison
    from rnnlab.study.report import text_table
    over = overrides(args, ("config", "json", "force") + tuple(_COMPARE_FLAGS.values()))
    c = plan_comparison(args.config, over, {k: getattr(args, f) for k, f in _COMPARE_FLAGS.items()}, force=args.force)
    check_json(args, inputs(c.cfg, args))
    if c.runner == "ray":
        code = loopback_only(args)
        if code is not None:
            return code
    cfg, seeds = c.cfg, c.settings["seeds"]
    if not cfg.quiet:
        print(f"rnnlab compare: {cfg.task}, models {', '.join(label for label, _, _ in c.entries)}, {cfg.steps} steps "
              f"each, seed {cfg.seed}" + (f", {seeds} seeds ({c.runner})" if seeds > 1 else ""), flush=True)

    def done(label, e):
        if not cfg.quiet:
            fin = "  ".join(f"{k} {v:.4g}" for k, v in e["final"].items())
            print(f"  {label}: {e['parameters']} parameters, {e['seconds']:.1f} s, validation {fin}", flush=True)

    def compared(res):
        print()
        print(text_table(summary_rows(res), summary_columns(res)))
        if res["baseline"]:
            print(f"baseline: {res['baseline'][0]} {res['baseline'][1]:.4g};  threshold: {res['threshold']['metric']} "
                  f"{res['threshold']['value']:.4g}")

    res, paths = run_comparison(c, on_model=done, on_compared=compared)
    if seeds > 1:
        where = f"trials in {c.seeds_dir}" if c.runner == "ray" else f"{c.runner} runner"
        print(f"\nover {seeds} seeds ({cfg.seed} .. {cfg.seed + seeds - 1}), {where}:")
        print(res["seeds"]["table"])
    print(f"report: {paths['html']}  (figures in {paths['figures']}, numbers in {paths['json']})")
    if args.json:
        from rnnlab.study.report import write_json
        write_json(args.json, res)
    return 0


# ------------------------------------------------------------------------------ gradients
_GRADIENTS_FLAGS = ("config", "json", "checkpoint", "sweep", "sweep_cells", "sweep_len", "sweep_hidden", "at_step",
                    "report", "force")


def cmd_gradients(args) -> int:
    from rnnlab.study.gradients import gradients
    check_json(args, [args.checkpoint, args.config] + run_data(args.checkpoint))
    s = gradients(args.report, args.checkpoint, args.config, overrides(args, _GRADIENTS_FLAGS), sweep=args.sweep,
                  sweep_cells=args.sweep_cells, sweep_len=args.sweep_len, sweep_hidden=args.sweep_hidden,
                  at_step=args.at_step, force=args.force)
    if "sweep" in s.numbers:
        _print_sweep(s.numbers["sweep"], s.sweep_cells, args.sweep_len, args.sweep_hidden)
    if "layer" in s.numbers:
        _print_layer(s.numbers["layer"], s.task, args.at_step)
    if "model" in s.numbers:
        _print_model(s.numbers["model"], s.task, args.at_step)
    print(f"report: {s.paths['html']}")
    if args.json:
        from rnnlab.study.report import write_json
        write_json(args.json, s.numbers)
    return 0


def _steps(T, at_step) -> list:
    """The steps whose norms are printed: the first, the middle, 10 before the last, the last, and --at-step."""
    return sorted({0, T // 2, max(0, T - 11), T - 1} | ({at_step} if at_step is not None else set()))


def _print_sweep(res, cells, T, H):
    far = T - 1
    print(f"sweep: relative ||dL/dh_t|| at distance {far} (T={T}, H={H})")
    w = max([10] + [len(c) for c in cells])
    print("  radius  " + "  ".join(f"{c:>{w}s}" for c in cells))
    for i, rho in enumerate(res["radii"]):
        print(f"  {rho:6.3f}  " + "  ".join(f"{res[c][i, far]:{w}.3g}" for c in cells))


def _print_layer(m, task, at_step):
    g, j = m["grad_norm_h"], m["jacobian_norm"]
    T = len(g)
    print(f"{m['label']}: {m['parameters']} parameters, spectral radius {m['spectral_radius']:.3f}; {task}")
    print("  step  distance   ||dL/dh_t||   ||dh_T/ds_t||_2")
    for t in _steps(T, at_step):
        print(f"  {t:4d}  {T - 1 - t:8d}   {g[t]:11.4g}   {j[t]:15.4g}")


def _print_model(g, task, at_step):
    T = len(g["grad_norm_h"])
    print(f"{g['label']}: {g['parameters']} parameters; task {task}")
    print("  spectral radius of W_hh blocks: " + ("; ".join(
        f"{k}: " + ", ".join(f"{gate} {v:.3f}" for gate, v in blocks.items()) for k, blocks in g["spectral"].items())
        or "none (no recurrent weights: the carry is computed from x_t)"))
    if "carry_product" in g["gates"]:
        cp = g["gates"]["carry_product"]
        print(f"  diagonal carry |dh_t/dh_(t-1)|: mean {np.mean(g['gates']['carry_mean']):.4f}; mean product over "
              f"{len(cp) - 1} steps {cp[-1]:.3g}")
    print("  step  distance   ||dL/dh_t||   ||dh_T/ds_t||_2" + ("   ||dL/dc_t||" if "grad_norm_c" in g else ""))
    for t in _steps(T, at_step):
        line = f"  {t:4d}  {T - 1 - t:8d}   {g['grad_norm_h'][t]:11.4g}   {g['jacobian_norm'][t]:15.4g}"
        if "grad_norm_c" in g:
            line += f"   {g['grad_norm_c'][t]:11.4g}"
        print(line)
    for k, v in g["gates"].get("saturation", {}).items():
        print(f"  gate {k}: {100 * v:.1f}% saturated (< 0.05 or > 0.95)")
    if len(g["layers"]) > 1:                        # every layer and direction: the Jacobian from its first step
        print("  ||dh_T/ds_0||_2 (the first step, in each direction's own order): " + "; ".join(
            f"{name} {next((v for v in lay['jacobian_norm'] if np.isfinite(v)), np.nan):.4g}"
            for name, lay in g["layers"].items()))


# ------------------------------------------------------------------------------ sweep
def cmd_sweep(args) -> int:
    from rnnlab.errors import ConfigError
    from rnnlab.scale import sweep
    if (args.config is None) == (args.resume is None):
        raise ConfigError("sweep: give a sweep file (rnnlab sweep CONFIG --out DIR) or --resume DIR, not both")
    code = loopback_only(args)
    if code is not None:
        return code
    s = sweep.run(args.config, args.out, args.resume, args.address, args.workers)
    folder = args.resume or args.out
    print(sweep.table(s))
    print(f"\nsweep folder: {folder}  (summary.md, summary.json, report.html, curves.png, trials/)")
    return 0
