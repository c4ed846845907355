"""Figures (PNG and SVG), a Markdown summary and a self-contained HTML report.

Only presentation lives here; the numbers come from ``rnnlab.study.diagnostics`` and the training loop.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

COLORS = {"rnn": "#d62728", "lstm": "#1f77b4", "gru": "#2ca02c", "rnn-tanh": "#d62728", "rnn-linear": "#ff7f0e"}


def _plt():
    try:
        import matplotlib
    except ImportError:
        from rnnlab.errors import ConfigError
        raise ConfigError("figures need matplotlib; install it with: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


_PALETTE = ["#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
_assigned: dict = {}


def _color(label):
    """One colour per model: the label without its ' (init)' / ' (trained)' suffix picks it."""
    stem = label.replace(" (init)", "").replace(" (trained)", "").split(":")[0]
    if stem in COLORS:
        return COLORS[stem]
    if stem not in _assigned:
        _assigned[stem] = _PALETTE[len(_assigned) % len(_PALETTE)]
    return _assigned[stem]


def save_figure(fig, out_dir: Path, stem: str) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for ext in ("png", "svg"):
        p = out_dir / f"{stem}.{ext}"
        fig.savefig(p, dpi=110 if ext == "png" else None, bbox_inches="tight")
        paths[ext] = p
    _plt().close(fig)
    return paths


def _positive(y):
    y = np.asarray(y, dtype=np.float64)
    return np.where(y > 0, y, np.nan)


def plot_learning_curves(curves: dict, metric: str, out_dir, stem="learning_curves", baseline=None):
    """curves: {label: (steps, values)}."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for label, (steps, vals) in curves.items():
        ax.plot(steps, vals, label=label, color=_color(label), marker="o", ms=3)
    if baseline is not None:
        ax.axhline(baseline[1], color="gray", ls="--", lw=1, label=baseline[0])
    ax.set_xlabel("training step")
    ax.set_ylabel(f"validation {metric}")
    if metric in ("loss", "mse", "bpc") and all(np.nanmin(v) > 0 for _, v in curves.values() if len(v)):
        ax.set_yscale("log")
    ax.set_title(f"Learning curves (validation {metric})")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, Path(out_dir), stem)


def plot_seed_curves(curves: dict, metric: str, out_dir, stem="learning_curves_seeds", baseline=None):
    """curves: {label: [[step, mean, sd, min, max, ci95], ...]} over seeds: the mean and a band of its 95 %
    Student-t interval."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for label, pts in curves.items():
        if not pts:
            continue
        a = np.array(pts, dtype=np.float64)
        step, mean, ci = a[:, 0], a[:, 1], a[:, 5]
        ax.plot(step, mean, label=label, color=_color(label), marker="o", ms=3)
        ax.fill_between(step, mean - ci, mean + ci, color=_color(label), alpha=0.2)
    if baseline is not None:
        ax.axhline(baseline[1], color="gray", ls="--", lw=1, label=baseline[0])
    ax.set_xlabel("training step")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"Validation {metric}: mean over seeds, band: 95 % interval")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, Path(out_dir), stem)


def plot_over_training(records: dict, out_dir, stem="over_training"):
    """records: {label: diagnostics.jsonl records}; the gradient ratio ||dL/dh_0|| / ||dL/dh_T||, the spectral
    norm of each W_hh and the gates' saturation at each record's step."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for label, recs in records.items():
        steps = [r["step"] for r in recs]
        c = _color(label)
        axes[0].plot(steps, _positive([r.get("grad_ratio", np.nan) for r in recs]), label=label, color=c, marker="o",
                     ms=3)
        names = sorted({k for r in recs for k in r.get("spectral_norms", {})})
        for n_i, name in enumerate(names):
            axes[1].plot(steps, [r.get("spectral_norms", {}).get(name, np.nan) for r in recs], color=c,
                         ls=("-", "--", ":", "-.")[n_i % 4], label=f"{label}: {name}")
        for n_i, (where, gates) in enumerate(sorted({(w, g) for r in recs for w, st in r.get("gates", {}).items()
                                                     for g in st.get("saturation", {})})):
            axes[2].plot(steps, [r.get("gates", {}).get(where, {}).get("saturation", {}).get(gates, np.nan)
                                 for r in recs], color=c, ls=("-", "--", ":", "-.")[n_i % 4],
                         label=f"{label}: {gates} ({where})")
    axes[0].set_yscale("log")
    axes[0].set_title(r"$\|\partial L/\partial h_0\| / \|\partial L/\partial h_T\|$ (top layer)")
    axes[1].set_title(r"spectral norm $\sigma_{max}(W_{hh})$")
    axes[2].set_title("gate saturation (< 0.05 or > 0.95)")
    axes[2].set_ylim(0, 1)
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    return save_figure(fig, Path(out_dir), stem)


def plot_grad_norms(series: dict, out_dir, stem="grad_norms", title="Gradient norm vs distance from the loss",
                    ylabel=r"$\|\partial L/\partial h_t\|$ (relative to the last step)"):
    """series: {label: norms indexed by time step t (loss at the last step)}; plotted against T-1-t, relative to
    the last step; or {label: {"mean", "lo", "hi"}} already by distance and relative (``compare._band``, over
    seeds): the geometric mean and a band of its 95 % interval."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for label, g in series.items():
        ls = "--" if "init" in label else "-"
        if isinstance(g, dict):
            mean, lo, hi = (np.asarray(g[k], dtype=np.float64) for k in ("mean", "lo", "hi"))
            x = np.arange(len(mean))
            ax.plot(x, _positive(mean), label=label, color=_color(label), ls=ls)
            ax.fill_between(x, _positive(lo), _positive(hi), color=_color(label), alpha=0.15)
            continue
        g = np.asarray(g, dtype=np.float64)
        ref = g[-1] if g[-1] > 0 else 1.0
        ax.plot(np.arange(len(g)), _positive(g[::-1] / ref), label=label, color=_color(label), ls=ls)
    ax.set_yscale("log")
    ax.set_xlabel("distance from the loss (T - 1 - t)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, Path(out_dir), stem)


def plot_gate_stats(stats: dict, out_dir, stem="gates", title=None):
    """stats: {label: gate_stats dict}; LSTM forget product over spans and GRU carry fraction. ``title``: the
    layer and direction they are of."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    if title:
        fig.suptitle(title, y=1.03)                 # above the panels' own titles
    for label, s in stats.items():
        if "forget_product" in s:
            axes[0].plot(_positive(s["forget_product"]), label=f"{label}: prod f", color=_color(label),
                         ls="--" if "init" in label else "-")
        if "forget_mean" in s:
            axes[1].plot(s["forget_mean"], label=f"{label}: mean f", color=_color(label),
                         ls="--" if "init" in label else "-")
        if "update_carry" in s:
            axes[1].plot(s["update_carry"], label=f"{label}: mean z (carry)", color=_color(label),
                         ls="--" if "init" in label else "-")
        if "carry_product" in s:                    # diagonal cells: the exact carry |dh_t/dh_{t-1}|
            axes[0].plot(_positive(s["carry_product"]), label=f"{label}: prod carry", color=_color(label),
                         ls="--" if "init" in label else "-")
        if "carry_mean" in s:
            axes[1].plot(s["carry_mean"], label=f"{label}: mean carry", color=_color(label),
                         ls="--" if "init" in label else "-")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("span k (steps)")
    axes[0].set_title("Mean product over k steps: LSTM forget gates; diagonal cells' carry")
    axes[1].set_xlabel("time step t")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("Gate means over time")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:      # a GRU alone draws nothing in the forget-gate panel
            ax.legend(fontsize=8)
    return save_figure(fig, Path(out_dir), stem)


def plot_sweep(res: dict, out_dir, stem="sweep"):
    """Heat maps: log10 gradient norm vs (spectral radius, distance), one panel per cell."""
    plt = _plt()
    cells = [k for k in res if k not in ("radii", "distance")]
    fig, axes = plt.subplots(1, len(cells), figsize=(4.2 * len(cells), 3.6), squeeze=False)
    radii, dist = res["radii"], res["distance"]
    for n_ax, (ax, name) in enumerate(zip(axes[0], cells)):
        with np.errstate(divide="ignore"):
            z = np.log10(np.maximum(res[name], 1e-30))
        z = np.clip(z, -12, 12)
        im = ax.imshow(z, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-12, vmax=12,
                       extent=[dist[0], dist[-1], radii[0], radii[-1]])
        ax.set_title(name)
        ax.set_xlabel("distance from the loss")
        if n_ax == 0:
            ax.set_ylabel("spectral radius of W_hh")
    fig.colorbar(im, ax=axes[0].tolist(), label="log10 relative gradient norm")
    return save_figure(fig, Path(out_dir), stem)


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """columns: (key, header)."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def text_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)
    cells = [[h for _, h in columns]] + [[fmt(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["  ".join(c[i].rjust(widths[i]) if i else c[i].ljust(widths[i]) for i in range(len(columns)))
             for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_report(out_dir, title: str, sections: list[tuple[str, str, list]]) -> dict:
    """sections: (heading, markdown text, [figure paths dicts]). Writes summary.md and report.html."""
    out_dir = Path(out_dir)
    md = [f"# {title}", ""]
    body = [f"<h1>{html.escape(title)}</h1>"]
    for heading, text, figs in sections:
        md += [f"## {heading}", "", text, ""]
        body.append(f"<h2>{html.escape(heading)}</h2>")
        body.append(_md_to_html(text))
        for f in figs:
            md.append(f"![{f['png'].stem}]({f['png'].relative_to(out_dir).as_posix()})")
            data = base64.b64encode(f["png"].read_bytes()).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(f["png"].stem)}" src="data:image/png;base64,{data}"/>'
                        f"<figcaption>{html.escape(f['png'].stem)}</figcaption></figure>")
        md.append("")
    (out_dir / "summary.md").write_text("\n".join(md), encoding="utf-8")
    page = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"/>"
            f"<title>{html.escape(title)}</title>\n<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;}}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
            "img{max-width:100%}pre{background:#f6f6f6;padding:8px}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
    (out_dir / "report.html").write_text(page, encoding="utf-8")
    from rnnlab.data.outputs import REPORT_MARK
    (out_dir / REPORT_MARK).write_text("written by rnnlab: its reports may replace the files here\n", encoding="utf-8")
    return {"summary": out_dir / "summary.md", "html": out_dir / "report.html"}


def _md_to_html(text: str) -> str:
    """Just enough Markdown for our summaries: pipe tables, code lines and paragraphs."""
    out, table = [], []

    def flush():
        if table:
            rows = [r.strip().strip("|").split("|") for r in table if not set(r.strip()) <= set("|-: ")]
            out.append("<table>" + "".join(
                "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(c.strip())}</{'th' if i == 0 else 'td'}>"
                                 for c in row) + "</tr>" for i, row in enumerate(rows)) + "</table>")
            table.clear()
    for line in text.splitlines():
        if line.strip().startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("    ") or line.startswith("`"):
            out.append(f"<pre>{html.escape(line.strip().strip('`'))}</pre>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(out)


def to_jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path, data) -> None:
    Path(path).write_text(json.dumps(to_jsonable(data), indent=2), encoding="utf-8")
