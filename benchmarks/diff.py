"""Compare benchmark runs of two versions: rnnlab's times after / before, beside torch's after / before.

    python -m benchmarks.diff BEFORE.json [BEFORE2.json ...] -- AFTER.json [AFTER2.json ...]

Each side's rows are the best (lowest) time over its files (several ``python -m benchmarks --json`` runs).
torch runs the same code on both sides, so its column shows how much the machine itself moved between the
runs: a change of rnnlab's time within that spread is no change.
"""
from __future__ import annotations

import json
import math
import sys

KEYS = (("rnnlab_fwd", "inference"), ("rnnlab_train", "training"))


def best(paths) -> dict:
    rows = {}
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for r in json.load(fh)["rows"]:
                key = (r["cell"], tuple(r["shape"]))
                old = rows.setdefault(key, {})
                for k in ("rnnlab_fwd", "rnnlab_train", "torch_fwd", "torch_train"):
                    v = r.get(k, float("nan"))
                    if not math.isnan(v):
                        old[k] = min(old.get(k, math.inf), v)
    return rows


def table(before: dict, after: dict) -> str:
    lines = ["| cell | B, T, I, H | inference ms before | after | after / before | torch after / before | "
             "training ms before | after | after / before | torch after / before |", "|" + "---|" * 10]
    for key in before:
        if key not in after:
            continue
        b, a = before[key], after[key]
        cells = [key[0].upper(), ", ".join(map(str, key[1]))]
        for ours, theirs in (("rnnlab_fwd", "torch_fwd"), ("rnnlab_train", "torch_train")):
            cells += [f"{1e3 * b[ours]:.2f}", f"{1e3 * a[ours]:.2f}", f"{a[ours] / b[ours]:.2f}",
                      f"{a[theirs] / b[theirs]:.2f}" if theirs in a and theirs in b else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv or argv.index("--") == 0 or argv[-1] == "--":
        print("usage: python -m benchmarks.diff BEFORE.json [...] -- AFTER.json [...]", file=sys.stderr)
        return 2
    i = argv.index("--")
    print(table(best(argv[:i]), best(argv[i + 1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
