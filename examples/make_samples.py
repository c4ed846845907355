"""The sample data of the README's "Your own data" commands, made reproducibly (seeded):

    python examples/make_samples.py          # writes the files next to this script

visits.csv        60 patients, 4-9 visits each (ISO dates), heart rate and temperature; outcome sick/well, a
                  sick patient's heart rate drifting up over the visits
held_out.csv      20 more patients, labelled, for `rnnlab evaluate --data`
new_visits.csv    10 patients without an outcome, for `rnnlab predict`
windows.npz       x (200, 24, 3) windows of a noisy three-channel signal, y: whether its frequency is high
"""
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def visits(n, seed, first=0, labelled=True):
    import pandas as pd
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(first, first + n):
        sick = bool(rng.random() < 0.4)
        start = np.datetime64("2024-01-01") + int(rng.integers(0, 300))
        for t in range(int(rng.integers(4, 10))):
            drift = 4.0 * t if sick else 0.0
            row = {"patient": f"p{i:03d}", "visit": str(start + 7 * t),
                   "hr": round(float(72 + drift + rng.normal(0, 6)), 1),
                   "temp": round(float(36.8 + (0.15 * t if sick else 0) + rng.normal(0, 0.3)), 2)}
            if labelled:
                row["outcome"] = "sick" if sick else "well"
            rows.append(row)
    return pd.DataFrame(rows)


def windows(n=200, T=24, seed=0):
    rng = np.random.default_rng(seed)
    high = rng.random(n) < 0.5
    t = np.arange(T)
    f = np.where(high, 0.35, 0.12)[:, None]
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    x = np.stack([np.sin(f * t + phase), np.cos(f * t + phase), np.zeros((n, T))], axis=2)
    x += rng.normal(0, 0.3, x.shape)
    return x.astype(np.float32), high.astype(np.int64)


if __name__ == "__main__":
    visits(60, 0).to_csv(HERE / "visits.csv", index=False)
    visits(20, 1, first=100).to_csv(HERE / "held_out.csv", index=False)
    visits(10, 2, first=200, labelled=False).to_csv(HERE / "new_visits.csv", index=False)
    x, y = windows()
    np.savez(HERE / "windows.npz", x=x, y=y)
