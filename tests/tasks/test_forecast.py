"""Forecasting a long table: windows split in time, the pinball loss, baselines, predict, evaluate, ONNX, the card."""
import json
import subprocess
import sys

import numpy as np
import pytest

from rnnlab.model import losses
from rnnlab.training.config import TrainConfig
from rnnlab.errors import ConfigError, DataError
from rnnlab.tasks.forecast import ForecastSpec, ForecastTask, infer_season, parse_quantiles, read_panel, regular_step
from support import ROOT

pd = pytest.importorskip("pandas")
EXAMPLES = ROOT / "examples"


def _frame(n=60, ids=("a", "b"), period=6, start="2024-01-01", freq="D"):
    rows = []
    for k, i in enumerate(ids):
        t = pd.date_range(start, periods=n, freq=freq)
        y = 10 * (k + 1) + np.sin(2 * np.pi * np.arange(n) / period) + 0.01 * np.arange(n)
        rows += [{"id": i, "time": str(d.date()), "y": v, "x": float(j % 3), "promo": float(j % 5 == 0)}
                 for j, (d, v) in enumerate(zip(t, y))]
    return pd.DataFrame(rows)


def _task(frame, seq_len=8, horizon=3, quantiles=(0.1, 0.5, 0.9), future=("promo",), season=0, val=0.25):
    panel = read_panel(frame, "id", "time", "y", "x", ",".join(future))
    freq, _ = regular_step(panel)
    m = season or infer_season(freq)[0]
    spec = ForecastSpec(panel.columns["targets"], panel.columns["past"], panel.columns["future"], horizon, seq_len,
                        list(quantiles), [], [], m, "id", "time", panel.time_kind, freq)
    return ForecastTask(panel, spec, val)


# ------------------------------------------------------------------------------------------ the loss
def _torch_pinball(o, y, taus):
    import torch
    u = y.repeat_interleave(len(taus), dim=1) - o
    t = torch.tensor(taus, dtype=o.dtype).repeat(y.shape[1])
    return torch.maximum(t * u, (t - 1) * u).mean()


def test_pinball_loss_matches_torch_and_finite_differences():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    taus = [0.1, 0.5, 0.9]
    o, y = rng.normal(size=(5, 6)), rng.normal(size=(5, 2))
    loss, do = losses.pinball(o, y, taus)
    ot = torch.tensor(o, requires_grad=True)
    ref = _torch_pinball(ot, torch.tensor(y), taus)
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(do, ot.grad.numpy(), rtol=1e-12)
    eps, num = 1e-6, np.zeros_like(o)                   # central differences, away from the kinks (o != y)
    for idx in np.ndindex(*o.shape):
        p, m = o.copy(), o.copy()
        p[idx] += eps
        m[idx] -= eps
        num[idx] = (losses.pinball(p, y, taus)[0] - losses.pinball(m, y, taus)[0]) / (2 * eps)
    np.testing.assert_allclose(do, num, atol=1e-8)
    mask = np.array([1.0, 0.0, 2.0, 1.0, 0.0])           # a weight per row, as sample weights
    lm, dm = losses.pinball(o, y, taus, mask)
    keep = [0, 2, 2, 3]
    lr, dr = losses.pinball(o[keep], y[keep], taus)
    assert lm == pytest.approx(lr, rel=1e-12)
    assert not dm[[1, 4]].any()


def test_quantile_model_minimises_pinball_not_mse():
    from rnnlab.model.sequence_model import ModelConfig, SequenceModel
    m = SequenceModel(ModelConfig(input_size=2, output_size=6, cell="gru", hidden_size=4, prediction="identity",
                                  target="last", quantiles=[0.1, 0.5, 0.9], dtype="float64"), seed=0)
    x, y = np.random.default_rng(1).normal(size=(5, 3, 2)), np.random.default_rng(2).normal(size=(3, 2))
    logits, _ = m(x)
    loss, d = m.loss(logits, y)
    assert loss == pytest.approx(losses.pinball(logits, y, [0.1, 0.5, 0.9])[0])
    with pytest.raises(ConfigError, match="quantiles"):
        ModelConfig(input_size=2, output_size=5, prediction="identity", target="last", quantiles=[0.1, 0.5, 0.9]).validate()


# ------------------------------------------------------------------------------------------ the split
def test_split_in_time_has_no_leakage():
    frame = _frame()
    task = _task(frame)
    spec = task.spec
    cutoff = np.datetime64(int(task.cutoff), "ns")
    for s, o in task.train_windows:                     # every training target before the first validation time
        last_target = np.datetime64(int(task.panel.times[s][o + spec.horizon]), "ns")
        assert last_target < cutoff
    for s, o in task.val_windows:
        assert np.datetime64(int(task.panel.times[s][o + 1]), "ns") >= cutoff
    # the standardisation and every training batch ignore the validation values
    late = frame.copy()
    late.loc[pd.to_datetime(late["time"]) >= pd.Timestamp(cutoff), "y"] += 1000.0
    task2 = _task(late)
    assert task2.spec.mean == spec.mean and task2.spec.std == spec.std
    b1 = task.train_batch(np.random.default_rng(0), 16, 0)
    b2 = task2.train_batch(np.random.default_rng(0), 16, 0)
    np.testing.assert_array_equal(b1.inputs, b2.inputs)
    np.testing.assert_array_equal(b1.targets, b2.targets)
    assert not np.allclose(task.val_batches()[0].targets, task2.val_batches()[0].targets)


def test_window_layout_with_future_covariates():
    task = _task(_frame())
    spec = task.spec
    s, o = task.val_windows[0]
    b = task.val_batches()[0]
    z = task.z[s]
    x = b.inputs[:, 0]                                   # (seq_len + horizon, [y, x, promo, is_future])
    assert x.shape == (spec.seq_len + spec.horizon, 4)
    np.testing.assert_allclose(x[:spec.seq_len, :3], z[o - spec.seq_len + 1:o + 1])
    np.testing.assert_allclose(x[spec.seq_len:, 2], z[o + 1:o + 1 + spec.horizon, 2])     # the promotions ahead
    assert (x[spec.seq_len:, :2] == 0).all() and (x[spec.seq_len:, 3] == 1).all() and (x[:spec.seq_len, 3] == 0).all()
    np.testing.assert_allclose(b.targets[0], z[o + 1:o + 1 + spec.horizon, 0])


def test_baselines_and_metrics_in_the_data_units():
    frame = _frame(period=6)
    frame["y"] = np.tile(np.sin(2 * np.pi * np.arange(60) / 6) * 5 + 20, 2)      # exactly periodic
    task = _task(frame, season=6, future=())
    b = task.baselines()
    assert b["seasonal_naive_6"]["mae"] == pytest.approx(0, abs=1e-9)
    assert b["naive"]["mae"] > 1.0
    truth = task._truth()
    point = np.repeat(truth[..., None], 3, axis=-1)                             # a perfect forecast, in z-units
    z = (point - task.spec.mean[0]) / task.spec.std[0]
    m = task.extra_metrics(0.0, z.reshape(len(z), -1), task.val_batches()[0])
    assert m["mae"] == pytest.approx(0, abs=1e-9) and m["coverage"] == 1.0


def test_season_inference_and_quantile_checks():
    assert infer_season("D")[0] == 7 and infer_season("MS")[0] == 12 and infer_season("h")[0] == 24
    assert infer_season("QS-OCT")[0] == 4 and infer_season(1.0)[0] == 1
    assert parse_quantiles("0.05,0.5,0.95") == [0.05, 0.5, 0.95] and parse_quantiles("") == []
    for bad, match in (("0.1,0.9", "0.5 must be among"), ("0.5,0.1", "increasing"), ("a", "numbers")):
        with pytest.raises(ConfigError, match=match):
            parse_quantiles(bad)
    with pytest.raises(ConfigError, match="csv: the forecast task reads a table with --data"):
        TrainConfig.from_dict({"task": "forecast", "csv": "x.csv"})


def test_table_errors_name_the_column():
    frame = _frame()
    with pytest.raises(DataError, match="target_col: no column 'sales'"):
        read_panel(frame, "id", "time", "sales")
    with pytest.raises(DataError, match="appears twice in the table.*--id-col"):
        read_panel(frame, "store", "time", "y")                                  # two series, no id column named
    frame.loc[3, "y"] = np.nan
    with pytest.raises(DataError, match="empty target at series 'a'"):
        _task(frame)


def test_several_targets_and_a_point_forecast():
    frame = _frame()
    frame["y2"] = frame["y"] * 2
    panel = read_panel(frame, "id", "time", "y,y2", "x")
    spec = ForecastSpec(["y", "y2"], ["x"], [], 2, 5, [], [], [], 1, "id", "time", panel.time_kind, "D")
    task = ForecastTask(panel, spec, 0.25)
    assert task.output_size == 4 and task.input_size == 3 and task.quantiles is None
    assert task.val_batches()[0].targets.shape[1] == 4


# ------------------------------------------------------------------------------------------ the README's path
def _cli(*args, cwd=EXAMPLES):
    p = subprocess.run([sys.executable, "-m", "rnnlab", *args], capture_output=True, text=True, cwd=cwd,
                       timeout=300)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def stores_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("fc") / "stores"
    rc, out, err = _cli("train", "--task", "forecast", "--data", "stores.csv", "--id-col", "store", "--time-col",
                        "date", "--target-col", "sales", "--future-cols", "promo", "--horizon", "14", "--seq-len",
                        "28", "--steps", "40", "--eval-every", "20", "--hidden-size", "16", "--quiet", "--out",
                        str(run))
    assert rc == 0, err
    return run, out


def test_stores_example_trains_predicts_evaluates(stores_run, tmp_path):
    run, out = stores_run
    assert "4 series" in out and "season 7 inferred from the daily dates" in out
    assert "baseline seasonal naive 7: mae" in out and "coverage" in out
    f = tmp_path / "forecasts.csv"
    rc, out, err = _cli("predict", str(run), "--data", "stores_recent.csv", "--out", str(f))
    assert rc == 0, err
    frame = pd.read_csv(f)
    assert list(frame.columns) == ["store", "date", "step", "forecast", "q10", "q50", "q90"]
    assert len(frame) == 4 * 14 and sorted(frame["store"].unique()) == ["east", "north", "south", "west"]
    recent = pd.read_csv(EXAMPLES / "stores_recent.csv")
    ahead = recent[recent["sales"].isna()]
    assert sorted(frame["date"].unique()) == sorted(ahead["date"].unique())     # the horizon's own dates
    assert (frame["q10"] <= frame["q50"]).all() and (frame["q50"] <= frame["q90"]).all()
    np.testing.assert_array_equal(frame["forecast"], frame["q50"])
    rc, out, err = _cli("evaluate", str(run), "--data", "stores.csv", "--json", str(tmp_path / "m.json"))
    assert rc == 0, err
    m = json.loads((tmp_path / "m.json").read_text())
    assert {"mae", "rmse", "mase", "coverage"} <= set(m) and "seasonal_naive_7" in m["baselines"]
    card = (run / "card.md").read_text()
    assert "forecast `sales`, 14 steps ahead" in card and "seasonal naive 7" in card


def test_stores_predict_refuses_missing_future_rows(stores_run, tmp_path):
    run, _ = stores_run
    recent = pd.read_csv(EXAMPLES / "stores_recent.csv")
    short = recent.drop(recent.index[(recent["store"] == "east") & recent["sales"].isna()][10:])
    short.to_csv(tmp_path / "short.csv", index=False)
    rc, _, err = _cli("predict", str(run), "--data", str(tmp_path / "short.csv"), "--out", str(tmp_path / "f.csv"))
    assert rc == 2 and "future_cols" in err and "series 'east' has 10 row(s)" in err, err
    assert not (tmp_path / "f.csv").exists()


def test_onnx_forecaster_equals_predict(stores_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    run, _ = stores_run
    rc, _, err = _cli("export", str(run), "--out", str(tmp_path / "m.onnx"))
    assert rc == 0, err
    from rnnlab.study.runs import open_run, recent_panel
    from rnnlab.tasks.forecast import forecast_frame, recent_windows
    opened = open_run(run)
    model, spec = opened.model, opened.forecast
    panel = recent_panel(opened, str(EXAMPLES / "stores_recent.csv"))
    x = recent_windows(spec, panel).astype(np.float32)               # the data's units, NaN where no value
    assert np.isnan(x[spec.seq_len:, :, 0]).all()
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"))
    got = sess.run(["prediction"], {"inputs": x})[0]                 # (series, horizon, targets, quantiles)
    frame = forecast_frame(model, spec, panel)
    want = frame[["q10", "q50", "q90"]].to_numpy().reshape(len(panel.ids), spec.horizon, 3)
    np.testing.assert_allclose(got[:, :, 0, :], want, rtol=1e-4, atol=1e-3)
    props = {p.key: p.value for p in __import__("onnx").load(str(tmp_path / "m.onnx")).metadata_props}
    assert props["rnnlab.problem"] == "forecast" and json.loads(props["rnnlab.features"])[-1] == "is_future"


def test_statsmodels_series_by_name_steps_its_dates_on(tmp_path):
    pytest.importorskip("statsmodels")
    run = tmp_path / "elec"
    rc, out, err = _cli("train", "--task", "forecast", "--data", "elec_equip", "--horizon", "12", "--seq-len", "24",
                        "--steps", "20", "--eval-every", "10", "--hidden-size", "8", "--quiet", "--out", str(run))
    assert rc == 0, err
    assert "season 12 inferred from the monthly dates" in out and "1 series" in out
    rc, out, err = _cli("predict", str(run), "--data", "elec_equip", "--out", str(tmp_path / "f.csv"))
    assert rc == 0, err
    frame = pd.read_csv(tmp_path / "f.csv")
    assert list(frame["DATE"]) == [str(d.date()) for d in pd.date_range("2016-06-01", periods=12, freq="MS")]
    assert "id" not in frame.columns and list(frame["step"]) == list(range(1, 13))
