"""The model card of a run: what the model is, what it was trained on, how well it does against its baseline,
and how to load it in rnnlab, onnxruntime and torch. Written with every run (``card.md`` and ``card.json``);
``rnnlab info RUN`` prints it (and builds it from ``model.safetensors`` for a run made before cards existed).

    card_data(run_dir) -> dict          everything the card says, from the run's final model file
    card_markdown(card) -> str          the card as Markdown
    write_card(run_dir) -> paths        card.md and card.json in the run folder
"""
from __future__ import annotations

import json
from pathlib import Path

from rnnlab.errors import CheckpointError
from rnnlab.data.outputs import FINAL

CARD_MD, CARD_JSON = "card.md", "card.json"


def card_data(run_dir) -> dict:
    """The card's contents from the run folder's ``model.safetensors`` (its metadata: config, task, metrics)."""
    from rnnlab.model.checkpoint import load_checkpoint
    run_dir = Path(run_dir)
    if not (run_dir / FINAL).is_file():
        raise CheckpointError(f"run: {run_dir} has no {FINAL} (a finished `rnnlab train` run writes it); got a "
                              f"folder without it")
    tensors, meta = load_checkpoint(run_dir / FINAL)
    if meta.get("kind") != "model":
        raise CheckpointError(f"run: {run_dir / FINAL} is not a final model file (kind {meta.get('kind')!r})")
    cfg, info, mcfg = meta["config"], meta.get("task_info", {}), meta["model_config"]
    enc = info.get("encoding")
    data = None
    if cfg.get("data"):
        data = {"file": cfg["data"], "sha256": info.get("data_digest"),
                "validation": cfg.get("val_data") or (f"{cfg.get('val_fraction')} of the file, held out"
                                                      if cfg.get("val_fraction") else None),
                "validation_sha256": info.get("val_data_digest")}
    fc = info.get("forecast")
    if fc and cfg.get("data"):
        data = {"file": cfg["data"], "sha256": info.get("data_digest"),
                "validation": f"the last {cfg.get('val_fraction')} of the table's times (a split in time)"}
    card = {
        "run": str(run_dir.resolve()),
        "task": cfg["task"], "description": meta.get("description"),
        "model": {"cell": cfg["model"], "hidden_size": mcfg.get("hidden_size"), "num_layers": mcfg.get("num_layers"),
                  "bidirectional": mcfg.get("bidirectional"), "parameters": int(sum(v.size for v in tensors.values())),
                  "dtype": mcfg.get("dtype"), "prediction": mcfg.get("prediction"), "target": mcfg.get("target")},
        "data": data,
        "problem": enc["problem"] if enc else ("forecast" if fc else None),
        "features": enc.get("feature_names") if enc else None,
        "classes": [str(c) for c in enc["classes"]] if enc and enc.get("classes") is not None else None,
        "metrics": meta.get("metrics", {}),
        "baseline": meta.get("baseline"),
        "baselines": meta.get("baselines"),
        "forecast": None if not fc else {
            "targets": fc["targets"], "past_covariates": fc["past"], "future_covariates": fc["future"],
            "horizon": fc["horizon"], "window": fc["seq_len"], "quantiles": fc["quantiles"], "season": fc["season"],
            "inputs": fc["targets"] + fc["past"] + fc["future"] + (["is_future"] if fc["future"] else [])},
        "class_report": meta.get("class_report"),
        "training": {k: cfg.get(k) for k in ("steps", "batch_size", "optimizer", "lr", "clip", "seed", "schedule",
                                             "weight_decay", "patience", "val_fraction") if k in cfg},
    }
    return card


def _load_text(card) -> str:
    run = card["run"]
    data_run = card["data"] is not None
    cell = card["model"]["cell"]
    if card.get("forecast"):
        return "\n".join(["```bash", f"rnnlab evaluate {run}",
                          f"rnnlab predict {run} --data recent.csv --out forecasts.csv   # one row per (series, step ahead)",
                          f"rnnlab export {run} --out model.onnx", "```", "", "```python",
                          "import onnxruntime as ort",
                          "from rnnlab.tasks.forecast import recent_windows   # x: (window, series, inputs), NaN = no value",
                          "q = ort.InferenceSession('model.onnx').run(['prediction'], {'inputs': x})[0]"
                          "   # (series, horizon, targets, quantiles)",
                          "```"])
    lines = ["```bash",
             f"rnnlab evaluate {run}" + (" --data held_out.csv" if data_run else ""),
             *([f"rnnlab predict {run} --data new.csv --out predictions.csv"] if data_run else []),
             "```", "", "```python",
             "from rnnlab.training.trainer import load_model",
             f"model, meta = load_model({run!r})          # a SequenceModel and the run's metadata",
             "```", "", "onnxruntime (`pip install -e '.[onnx]'`):", "", "```bash",
             f"rnnlab export {run} --lengths --out model.onnx", "```", "", "```python",
             "import onnxruntime as ort",
             "sess = ort.InferenceSession('model.onnx')",
             "probs = sess.run(['prediction'], {'inputs': x, 'lengths': lengths})[0]   "
             + ("# x: raw features (T, B, F), standardised inside" if data_run else "# x: (T, B, F)"),
             "```"]
    if cell in ("rnn", "lstm", "gru"):
        lines += ["", "torch (`pip install torch==2.13.0`):", "", "```python",
                  "from rnnlab.interop.torch import model_to_torch",
                  "module = model_to_torch(model)                 # torch.nn.Module with the same weights", "```"]
    else:
        lines += ["", f"torch: the {cell} cell has no torch.nn counterpart; `rnnlab export --format torch` refuses it."]
    return "\n".join(lines)


def card_markdown(card: dict) -> str:
    """The card as Markdown: the model, the data, the metrics beside the baseline, how to load it."""
    m = card["model"]
    out = [f"# Model card: {card['task']} / {m['cell']}", "",
           f"Run folder: `{card['run']}`. " + (card.get("description") or ""), "", "## Model", "",
           f"- {m['cell']}, hidden size {m['hidden_size']}, {m['num_layers']} layer(s)"
           f"{', bidirectional' if m['bidirectional'] else ''}, {m['parameters']:,} parameters, {m['dtype']}",
           f"- prediction: {m['prediction']} at {'the last valid step' if m['target'] == 'last' else 'every step'}"]
    if card["data"]:
        d = card["data"]
        out += ["", "## Data", "", f"- training file: `{d['file']}` (sha256 `{d['sha256']}`)"]
        if d.get("validation"):
            out.append(f"- validation: {d['validation']}"
                       + (f" (sha256 `{d['validation_sha256']}`)" if d.get("validation_sha256") else ""))
        if card.get("forecast"):
            f = card["forecast"]
            out.append(f"- problem: forecast {', '.join(f'`{t}`' for t in f['targets'])}, {f['horizon']} steps ahead "
                       f"at once from a window of {f['window']}; model inputs per step (in this order): "
                       + ", ".join(f"`{c}`" for c in f["inputs"]))
            out.append(f"- quantiles: {f['quantiles'] or 'none (a point forecast, MSE)'}; season {f['season']}")
        else:
            out.append(f"- problem: {card['problem']}; features (read by name, in this order): "
                       + ", ".join(f"`{f}`" for f in card["features"] or []))
        if card["classes"]:
            out.append("- classes (the order of the probability columns): " + ", ".join(f"`{c}`" for c in card["classes"]))
    out += ["", "## Metrics (validation, at the end of training)", "", "| metric | value |", "|---|---|"]
    out += [f"| {k} | {v:.4g} |" for k, v in card["metrics"].items() if isinstance(v, (int, float))]
    if card.get("baselines"):
        out += ["", "Baselines on the same validation windows (what a model that only repeats the past scores):", "",
                "| baseline | " + " | ".join(next(iter(card["baselines"].values()))) + " |",
                "|---" * (1 + len(next(iter(card["baselines"].values())))) + "|"]
        out += [f"| {n.replace('_', ' ')} | " + " | ".join(f"{v:.4g}" for v in m.values()) + " |"
                for n, m in card["baselines"].items()]
    elif card.get("baseline"):
        name, value = card["baseline"]
        out += ["", f"Baseline: {name} {value:.4g} (what a model that ignores the sequences scores)."]
    rep = card.get("class_report")
    if rep:
        out += ["", "Per class (validation):", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        out += [f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
                for c, v in rep["per_class"].items()]
        out += ["", "Confusion matrix (rows: true, columns: predicted; " + ", ".join(rep["classes"]) + "):", "",
                "| | " + " | ".join(rep["classes"]) + " |", "|---" * (len(rep["classes"]) + 1) + "|"]
        out += [f"| {c} | " + " | ".join(str(n) for n in row) + " |" for c, row in zip(rep["classes"], rep["confusion"])]
    t = card["training"]
    out += ["", "## Training", "", ", ".join(f"{k} {v}" for k, v in t.items() if v not in (None, "")),
            "(the full configuration: `config.toml` in the run folder; every logged step: `metrics.jsonl`)",
            "", "## Load it", "", _load_text(card), ""]
    return "\n".join(out)


def write_card(run_dir) -> dict:
    """card.md and card.json in ``run_dir`` (rnnlab's own files of the run folder, replaced on every write)."""
    from rnnlab.data.outputs import write_output
    run_dir = Path(run_dir)
    card = card_data(run_dir)
    write_output(run_dir / CARD_JSON, (json.dumps(card, indent=2) + "\n").encode("utf-8"))
    write_output(run_dir / CARD_MD, card_markdown(card).encode("utf-8"))
    return {"md": run_dir / CARD_MD, "json": run_dir / CARD_JSON}
