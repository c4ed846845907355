"""Regenerate every figure and number of docs/guide.md.

    python docs/make_guide.py            # about 10 minutes on two cores

Writes docs/figures/*.png|svg and docs/guide-numbers.json; guide.md quotes those numbers.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from rnnlab.study import diagnostics as D
from rnnlab.study import report
from rnnlab.study.compare import compare, gradient_report, summary_columns, summary_rows, write_compare_report
from rnnlab.training.config import TrainConfig, resolve
from rnnlab.model.sequence_model import SequenceModel
from rnnlab.tasks import build_task
from rnnlab.training.trainer import model_config_for, train

DOCS = Path(__file__).parent
FIG = DOCS / "figures"


def main() -> int:
    numbers = {}
    t0 = time.time()
    # 1. the seed's eigenvalue argument: a spectral-radius sweep
    radii = np.linspace(0.5, 1.5, 11)
    sw = D.sweep(radii, T=100, hidden_size=64, seed=0)
    report.plot_sweep(sw, FIG, "sweep")
    numbers["sweep"] = {"radii": radii, "distance_99": {c: sw[c][:, 99] for c in D.SWEEP_CELLS}}
    print(f"sweep done ({time.time() - t0:.0f} s)", flush=True)

    # 2. gradient flow at initialisation, adding T = 100, same parameter budget
    cfg = TrainConfig(task="adding", seq_len=100, hidden_size=64, seed=0)
    task = build_task(cfg)
    batch = D.diagnostic_batch(task)
    init = {}
    for label, over in [("rnn", {"model": "rnn", "hidden_size": 130}), ("lstm", {"model": "lstm"}),
                        ("lstm forget bias 1", {"model": "lstm", "forget_bias": 1.0}),
                        ("gru", {"model": "gru", "hidden_size": 74})]:
        c = dataclasses.replace(cfg, **over)
        m = SequenceModel(model_config_for(c, task), seed=np.random.default_rng([c.seed, 0]))
        init[label] = gradient_report(m, batch)
        init[label]["parameters"] = m.num_parameters()
    report.plot_grad_norms({k: v["grad_norm_h"] for k, v in init.items()}, FIG, "init_grad_norms",
                           "Gradient norm at initialisation (adding, T = 100)")
    report.plot_grad_norms({k: v["jacobian_norm"] for k, v in init.items()}, FIG, "init_jacobian_norms",
                           "Exact Jacobian norm at initialisation (adding, T = 100)", r"$\|\partial h_T/\partial s_t\|_2$")
    numbers["init"] = {k: {"parameters": v["parameters"], "grad_ratio_99": float(v["grad_norm_h"][0] / v["grad_norm_h"][-1]),
                           "jacobian_99": float(v["jacobian_norm"][0]), "spectral_radius": v["spectral_radius"]}
                       for k, v in init.items()}
    print(f"init diagnostics done ({time.time() - t0:.0f} s)", flush=True)

    # 3. clipping bounds the explosion but cannot undo vanishing: a tanh RNN on adding T = 50
    clip = {}
    for c in (0.0, 1.0):
        r = train(dict(task="adding", model="rnn", seq_len=50, hidden_size=64, steps=600, lr=0.01, clip=c,
                       eval_every=100, seed=0))
        norms = [x["grad_norm"] for x in r.records if x["split"] == "train"]
        clip[str(c)] = {"final_mse": r.final["mse"], "clipped_steps": r.clipped_steps, "max_grad_norm": max(norms)}
    numbers["clipping"] = clip
    print(f"clipping done ({time.time() - t0:.0f} s)", flush=True)

    # 4-6. the main job: RNN vs LSTM vs GRU on adding T = 50, with the forget-bias ablation
    cfg = resolve(DOCS.parent / "configs" / "compare-adding.toml")
    res = compare(cfg, forget_bias_ablation=True)
    paths = write_compare_report(res, DOCS / "compare-adding")
    numbers["compare"] = {"table": summary_rows(res), "threshold": res["threshold"]}
    print(report.text_table(summary_rows(res), summary_columns(res)))
    for p in paths["figures"].iterdir():
        (FIG / f"compare_{p.name}").write_bytes(p.read_bytes())
    print(f"compare done ({time.time() - t0:.0f} s)", flush=True)
    report.write_json(DOCS / "guide-numbers.json", numbers)
    print(json.dumps(report.to_jsonable(numbers["init"]), indent=1))
    print(json.dumps(report.to_jsonable(numbers["clipping"]), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
