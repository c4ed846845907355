"""JapaneseVowels read three ways -- the UCR/UEA .ts files, the same data as long-format CSV files, and lists of
arrays given to RNNClassifier -- trained with the same seed: the same weights and the same test accuracy.

    pip download aeon==1.6.0 --no-deps -d /tmp/aeon           # the .ts files ship inside aeon's wheel
    unzip -j /tmp/aeon/aeon-1.6.0-*.whl 'aeon/datasets/data/JapaneseVowels/JapaneseVowels_T*.ts' -d data/
    python examples/japanese_vowels.py data/JapaneseVowels_TRAIN.ts data/JapaneseVowels_TEST.ts --out runs/jv
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from rnnlab import RNNClassifier
from rnnlab.tasks import read_ts
from rnnlab.training.trainer import load_model, train


def to_long_csv(ts_path, csv_path):
    """One row per (case, time step): id, time, dim0..dim11, speaker."""
    cases, labels, classes = read_ts(ts_path)
    rows = [{"id": f"c{i}", "time": t, **{f"dim{j}": float(v[j]) for j in range(c.shape[1])},
             "speaker": classes[labels[i]]} for i, c in enumerate(cases) for t, v in enumerate(c)]
    pd.DataFrame(rows).to_csv(csv_path, index=False)
    return cases, np.array(classes)[labels]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("train_ts")
    p.add_argument("test_ts")
    p.add_argument("--out", default="runs/jv")
    p.add_argument("--model", default="gru")
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--lr", type=float, default=0.003)
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    xtr, ytr = to_long_csv(a.train_ts, out / "train.csv")
    xte, yte = to_long_csv(a.test_ts, out / "test.csv")
    common = {"model": a.model, "hidden_size": a.hidden_size, "epochs": a.epochs, "lr": a.lr, "eval_every": 0,
              "quiet": True}
    results = {}
    t0 = time.perf_counter()
    r = train({"task": "ts", "ts_train": a.train_ts, "ts_test": a.test_ts, "out": str(out / "ts"), **common})
    results["ts files"] = (r.final["accuracy"], time.perf_counter() - t0, load_model(out / "ts")[0])
    t0 = time.perf_counter()
    r = train({"task": "data", "data": str(out / "train.csv"), "val_data": str(out / "test.csv"),
               "target_col": "speaker", "missing": "zero", "out": str(out / "csv"), **common})
    results["long CSV"] = (r.final["accuracy"], time.perf_counter() - t0, load_model(out / "csv")[0])
    t0 = time.perf_counter()
    clf = RNNClassifier(cell=a.model, hidden_size=a.hidden_size, epochs=a.epochs, lr=a.lr, missing="zero")
    clf.fit(xtr, ytr, validation_data=(xte, yte))
    results["RNNClassifier"] = (clf.score(xte, yte), time.perf_counter() - t0, clf.model_)
    ref = results["ts files"][2].named_parameters()
    print(f"JapaneseVowels: {len(xtr)} training / {len(xte)} test sequences, {a.model} {a.hidden_size}, "
          f"{a.epochs} epochs, seed 0")
    print(f"{'read as':16s} {'test accuracy':>13s} {'seconds':>8s}  max |weight - ts files' weight|")
    for name, (acc, sec, model) in results.items():
        diff = max(float(np.abs(v - ref[k]).max()) for k, v in model.named_parameters().items())
        print(f"{name:16s} {acc:13.4f} {sec:8.1f}  {diff:.1e}")


if __name__ == "__main__":
    main()
