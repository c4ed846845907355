"""Run the reliability tests and write docs/reliability.md from their recorded outcomes.

    python docs/make_reliability.py

Each bad input or fault that a test tries is counted by category and outcome (the ``outcome`` fixture in
tests/conftest.py); a case that got anything but the documented answer fails its test instead.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ["tests/test_reliability.py", "tests/test_checks.py", "tests/test_checkpoint.py",
         "tests/test_trainer.py", "tests/test_sequences.py", "tests/test_data_runs.py", "tests/test_silent.py",
         "tests/test_fuzz_data.py", "tests/test_layer_memory.py", "tests/test_compare_checks.py",
         "tests/test_tracking.py", "tests/test_sweep.py", "-m", "not slow",
         "-k", "not killed and not with_seeds and not existing_cluster and not asha"]     # no Ray clusters here


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "outcomes.json"
        env = {**os.environ, "RNNLAB_RELIABILITY_JSON": str(out)}
        p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:warnings", *TESTS], cwd=ROOT, env=env,
                           capture_output=True, text=True)
        summary = next((l.strip("= ") for l in reversed(p.stdout.splitlines()) if " passed" in l or " failed" in l),
                       "(no summary)")
        data = json.loads(out.read_text()) if out.is_file() else {}
    lines = ["# Reliability: bad input and faults, and what rnnlab answers", "",
             "Produced by `python docs/make_reliability.py` from the test run below; each row counts the cases a",
             "test tried (fuzzed cases included) and how rnnlab answered. A case answered any other way fails its",
             "test, so every count here is a pass.", "",
             f"Test run: `pytest {shlex.join(TESTS)}` -> {summary}", "",
             "| bad input or fault | cases | outcome |", "|---|---|---|"]
    for cat in sorted(data):
        for res, n in sorted(data[cat].items()):
            lines.append(f"| {cat} | {n} | {res} |")
    lines += ["", "'ok' in the fuzzed layer rows are the generated cases that were valid input; the test checks",
              "they ran and produced finite outputs and gradients of the right shape."]
    (ROOT / "docs" / "reliability.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return p.returncode


if __name__ == "__main__":
    sys.exit(main())
