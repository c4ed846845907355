"""The sample data of the README's "Your own data" commands, made reproducibly (seeded):

    python examples/make_samples.py          # writes the files next to this script

visits.csv        60 patients, 4-9 visits each (ISO dates), heart rate and temperature; outcome sick/well, a
                  sick patient's heart rate drifting up over the visits
held_out.csv      20 more patients, labelled, for `rnnlab evaluate --data`
new_visits.csv    10 patients without an outcome, for `rnnlab predict`
windows.npz       x (200, 24, 3) windows of a noisy three-channel signal, y: whether its frequency is high
stores.csv        daily sales of 4 stores over 400 days (ISO dates): a weekly cycle, a trend, the temperature
                  (a past covariate) and promotions planned ahead (a known future covariate)
stores_recent.csv the last 8 weeks of each store and the 14 days to forecast: their promotions, no sales
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


def stores(days=400, seed=3):
    """(history, recent): the whole table, and each store's last 56 days plus 14 future rows (promo only)."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    dates = np.datetime64("2024-01-01") + np.arange(days + 14)
    rows = []
    for k, store in enumerate(["north", "south", "east", "west"]):
        level = 100 + 40 * k
        week = np.array([0.8, 0.9, 1.0, 1.0, 1.1, 1.4, 1.3])
        promo = (rng.random(len(dates)) < 0.12).astype(int)
        temp = 12 + 10 * np.sin(2 * np.pi * (np.arange(len(dates)) - 100) / 365) + rng.normal(0, 2, len(dates))
        for t, d in enumerate(dates):
            sales = (level + 0.05 * t) * week[t % 7] * (1.3 if promo[t] else 1.0) + 0.8 * temp[t]
            rows.append({"store": store, "date": str(d), "sales": round(float(sales + rng.normal(0, 6)), 1),
                         "temperature": round(float(temp[t]), 1), "promo": int(promo[t])})
    frame = pd.DataFrame(rows)
    future = frame["date"] >= str(dates[days])
    history = frame[~future].reset_index(drop=True)
    recent = frame[frame["date"] >= str(dates[days - 56])].copy()
    recent.loc[future, ["sales", "temperature"]] = np.nan          # the horizon: only the planned promotions
    return history, recent.reset_index(drop=True)


if __name__ == "__main__":
    visits(60, 0).to_csv(HERE / "visits.csv", index=False)
    visits(20, 1, first=100).to_csv(HERE / "held_out.csv", index=False)
    visits(10, 2, first=200, labelled=False).to_csv(HERE / "new_visits.csv", index=False)
    x, y = windows()
    np.savez(HERE / "windows.npz", x=x, y=y)
    history, recent = stores()
    history.to_csv(HERE / "stores.csv", index=False)
    recent.to_csv(HERE / "stores_recent.csv", index=False)
