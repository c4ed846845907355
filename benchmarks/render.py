"""Render the JSON of ``python -m benchmarks --json FILE`` as the Markdown table of docs/performance.md.

    python -m benchmarks.render FILE

Bold marks a ratio that meets the speed issue's target: <= 0.8x torch for the GRU and the RNN, <= 0.9x for
the LSTM, <= 1.0x onnxruntime and JAX.
"""
from __future__ import annotations

import json
import math
import sys

TORCH_TARGET = {"lstm": 0.9, "gru": 0.8, "rnn": 0.8}
NAMES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


def _ms(v):
    return "" if v is None or math.isnan(v) else f"{v * 1e3:.2f}"


def _ratio(a, b, target):
    if b is None or math.isnan(b) or math.isnan(a):
        return ""
    r = a / b
    return f"**{r:.2f}**" if r <= target else f"{r:.2f}"


def table(data: dict) -> str:
    head = ("| cell | B, T, I, H | be | inference ms | torch | ratio | onnxruntime | ratio | JAX | ratio | "
            "training ms | torch | ratio | JAX | ratio | peak% | memory MiB rnnlab / torch |")
    lines = [head, "|" + "---|" * 17]
    for r in data["rows"]:
        cell, t = r["cell"], TORCH_TARGET[r["cell"]]
        mem = (f"{r['rnnlab_peak_mib']:.1f} / {r['torch_peak_mib']:.1f}" if "rnnlab_peak_mib" in r else "")
        frac = r["peak_fraction"]
        lines.append("| " + " | ".join([
            NAMES[cell], ", ".join(map(str, r["shape"])), r["backend"],
            _ms(r["rnnlab_fwd"]), _ms(r["torch_fwd"]), _ratio(r["rnnlab_fwd"], r["torch_fwd"], t),
            _ms(r["ort_fwd"]), _ratio(r["rnnlab_fwd"], r["ort_fwd"], 1.0),
            _ms(r["jax_fwd"]), _ratio(r["rnnlab_fwd"], r["jax_fwd"], 1.0),
            _ms(r["rnnlab_train"]), _ms(r["torch_train"]), _ratio(r["rnnlab_train"], r["torch_train"], t),
            _ms(r["jax_train"]), _ratio(r["rnnlab_train"], r["jax_train"], 1.0),
            "" if math.isnan(frac) else f"{100 * frac:.1f}", mem]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m benchmarks.render FILE (the JSON of python -m benchmarks --json FILE)",
              file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as fh:
        data = json.load(fh)
    if "machine" in data:
        print(data["machine"])
    print(f"sgemm peak {data['sgemm_peak_flops'] / 1e9:.1f} GFLOP/s")
    print(table(data))
    if "compile" in data:
        c = data["compile"]
        print(f"\ncompile: first process {c['first_process_s']:.1f} s, cached second process "
              f"{c['cached_second_process_s']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
