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
TESTS = ["tests/test_reliability.py", "tests/engine/test_checks.py", "tests/model/test_checkpoint.py",
         "tests/training/test_trainer.py", "tests/data/test_sequences.py", "tests/cli/test_data_runs.py",
         "tests/cli/test_silent.py", "tests/cli/test_fuzz_data.py", "tests/engine/test_layer_memory.py",
         "tests/study/test_compare_checks.py", "tests/scale/test_tracking.py", "tests/scale/test_sweep.py",
         "tests/interop/test_interop.py", "-m", "not slow"]     # the fast tier: no Ray clusters or MPI jobs here


RULES = """## The rules

- **Outputs.** `predict --out`, `export --out`, `import --out` and every `--json` refuse an existing file unless
  `--force` (then it is replaced atomically and keeps its mode), never write over an input of the command (the
  run's own files and its training data count as inputs; even with `--force`), and refuse symbolic links.
  `train --out` refuses a link, a file, or a folder that holds files with rnnlab's output names but no
  `config.toml`; a `--report` folder must be new, empty or one rnnlab's reports wrote (`.rnnlab-report`), unless
  `--force`.
- **Settings.** Every setting is checked before anything is written, and a setting the run would not use is
  refused rather than ignored: another cell's option (`--forget-bias` on a GRU, `--reset` on an RNN), `--epochs`
  with `--steps`, data options without `--data`, table options on `.npz`, another task's options,
  `--val-fraction` with `--val-data`, `--lr-gamma`/`--lr-step-size` off the step schedule, `--min-lr` off the
  cosine one, MLflow settings without `--track mlflow`, sweep keys.
- **Runs.** Data paths are stored absolute, so `resume`, `evaluate` and `gradients` work from any folder; `resume`
  refuses an edited `config.toml` or changed data, and keeps a new `--steps`; `evaluate` and `gradients` on a run
  refuse its data file when it changed since training (score new data with `--data`).
- **Values.** Labels a model never saw (0.2 for a 0/1 classifier) are refused, never truncated to a class; values
  that overflow are refused by column; `metrics.jsonl` is strict JSON (a skipped step's non-finite loss is
  `null`).""".splitlines()

SILENT = [
    ("evaluate/predict/--val-data/estimators read features in the new file's column order",
     "read by the stored names; a missing column named", "tests/cli/test_silent.py::test_evaluate_predict_and_val_data_read_features_by_name"),
    ("text times sorted as text (dd/mm/yyyy, one stray cell)", "numbers, ISO 8601 or --time-format; else refused",
     "tests/cli/test_silent.py::test_text_times_are_parsed_never_sorted_as_text"),
    ("overflowing targets or features trained to NaN with exit 0", "refused naming the column",
     "tests/cli/test_silent.py::test_overflow_is_refused_not_trained_on"),
    ("negative or climbing learning rates (--min-lr, --lr-gamma)", "refused before the run folder",
     "tests/cli/test_silent.py::test_settings_are_refused_before_the_run_folder"),
    ("predict/export/import/train --out replaced users' files", "refused unless --force; inputs never",
     "tests/cli/test_silent.py::test_predict_never_writes_over_its_input_or_an_unforced_file"),
    ("an unreachable MLflow server hung the run for minutes", "refused within seconds, no run folder",
     "tests/scale/test_tracking.py"),
    ("--json --force wrote over the run's own model or training data", "those files are inputs: refused",
     "tests/cli/test_silent.py::test_a_runs_own_files_and_data_are_inputs_of_commands_on_it"),
    ("--report wrote over a folder of the user's files", "new, empty or rnnlab's folders only",
     "tests/cli/test_silent.py::test_report_folders_hold_only_rnnlabs_reports"),
    ("categorical ids mislabelled; CSV ids 007 and 7 merged", "ids by value, CSV ids as text",
     "tests/cli/test_silent.py::test_ids_are_values_not_positions_or_numbers"),
    ("shuffled rows or permuted columns trained another model", "canonical order: bit-identical weights",
     "tests/cli/test_silent.py::test_rows_shuffled_or_columns_permuted_train_the_same_model"),
    ("settings the run would not use were ignored", "refused by name",
     "tests/cli/test_silent.py::test_settings_are_refused_before_the_run_folder"),
    ("torch/Keras export of models the peer computes differently", "refused by name",
     "tests/interop/test_interop.py"),
    ("resume ran on an edited config.toml", "refused naming the key", "tests/cli/test_silent.py::test_resume_continues_the_same_run_only"),
]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "outcomes.json"
        env = {**os.environ, "RNNLAB_RELIABILITY_JSON": str(out)}
        p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:warnings", "-n", "0", *TESTS], cwd=ROOT, env=env,
                           capture_output=True, text=True)
        summary = next((l.strip("= ") for l in reversed(p.stdout.splitlines()) if " passed" in l or " failed" in l),
                       "(no summary)")
        data = json.loads(out.read_text()) if out.is_file() else {}
    lines = ["# Reliability: bad input and faults, and what rnnlab answers", "",
             "Produced by `python docs/make_reliability.py` from the test run below; each row counts the cases a",
             "test tried (fuzzed cases included) and how rnnlab answered. A case answered any other way fails its",
             "test, so every count here is a pass.", "",
             f"Test run: `pytest {shlex.join(TESTS)}` -> {summary}", "", *RULES, "", "## What was tried", "",
             "| bad input or fault | cases | outcome |", "|---|---|---|"]
    for cat in sorted(data):
        for res, n in sorted(data[cat].items()):
            lines.append(f"| {cat} | {n} | {res} |")
    lines += ["", "'ok' in the fuzzed layer rows are the generated cases that were valid input; the test checks",
              "they ran and produced finite outputs and gradients of the right shape.", "",
              "## The silent failures of the adversarial probes, and the tests that hold them", "",
              "| failure (before) | now | test |", "|---|---|---|"]
    lines += [f"| {a} | {b} | `{c}` |" for a, b, c in SILENT]
    (ROOT / "docs" / "reliability.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return p.returncode


if __name__ == "__main__":
    sys.exit(main())
