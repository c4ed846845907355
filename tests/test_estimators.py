"""rnnlab.estimators: scikit-learn's API, its estimator checks, pipelines and searches, every input form."""
import pickle
from pathlib import Path

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
pd = pytest.importorskip("pandas")

from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import rnnlab  # noqa: E402
from rnnlab.errors import DataError  # noqa: E402
from rnnlab.estimators import RNNClassifier, RNNRegressor, RNNTagger  # noqa: E402
from rnnlab.tasks import read_ts  # noqa: E402
from rnnlab.tasks.sequences import split_indices  # noqa: E402

JV = Path(__file__).parent / "data" / "JapaneseVowels_small.ts"


# Every check of scikit-learn's suite passes; 2-D X is read as univariate sequences of X.shape[1] steps.
# Small, fast settings: the suite fits each estimator some 50 times.
@parametrize_with_checks([RNNClassifier(hidden_size=16, epochs=20, lr=0.01),
                          RNNRegressor(hidden_size=32, epochs=60, lr=0.01)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def sign_data(n=120, T=6, F=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, F))
    return X, np.where(X[:, :, 0].sum(1) > 0, "up", "down")


def test_top_level_names():
    assert rnnlab.RNNClassifier is RNNClassifier and rnnlab.RNNTagger is RNNTagger


def test_classifier_fit_predict_score():
    X, y = sign_data()
    clf = RNNClassifier(cell="gru", hidden_size=12, epochs=15).fit(X, y)
    assert clf.classes_.tolist() == ["down", "up"] and clf.n_features_in_ == 2
    assert clf.score(X, y) > 0.85
    proba = clf.predict_proba(X[:7])
    assert proba.shape == (7, 2) and np.allclose(proba.sum(1), 1)
    assert clf.predict(X[:7]).tolist() == clf.classes_[proba.argmax(1)].tolist()
    assert len(clf.history_) > 0 and clf.n_iter_ == 15


def test_predict_equals_the_models_own_forward():
    X, y = sign_data(40)
    clf = RNNClassifier(hidden_size=6, epochs=2).fit(X, y)
    enc = clf.encoding_
    x = ((X - np.array(enc.x_mean)) / np.array(enc.x_std)).transpose(1, 0, 2)     # (T, N, F), standardised
    with rnnlab.no_grad():
        want = clf.model_.predict(x.astype(np.float32))[0]
    np.testing.assert_allclose(clf.predict_proba(X), want, rtol=1e-6, atol=1e-7)


def test_variable_length_lists_and_channels_first():
    rng = np.random.default_rng(1)
    cases = [rng.standard_normal((int(n), 3)) for n in rng.integers(2, 12, 60)]
    y = np.array([c[:, 1].sum() > 0 for c in cases])                            # boolean labels
    a = RNNClassifier(hidden_size=8, epochs=3).fit(cases, y)
    b = RNNClassifier(hidden_size=8, epochs=3, channels_first=True).fit([c.T for c in cases], y)
    for k, v in a.model_.named_parameters().items():
        np.testing.assert_array_equal(v, b.model_.named_parameters()[k])
    assert a.predict(cases[:3]).dtype == bool


def test_long_dataframe_input():
    rng = np.random.default_rng(2)
    rows = []
    for i in range(30):
        label = ["cat", "dog"][i % 2]
        for t in range(int(rng.integers(3, 8))):
            rows.append({"sid": 100 + i, "t": t, "a": rng.normal(i % 2), "b": rng.normal(), "label": label})
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=0)                    # unsorted rows
    clf = RNNClassifier(hidden_size=8, epochs=4, id_col="sid", time_col="t", target_col="label").fit(df)
    assert clf.classes_.tolist() == ["cat", "dog"] and clf.n_features_in_ == 2
    by_id = pd.Series(["cat", "dog"] * 15, index=range(100, 130))
    clf2 = RNNClassifier(hidden_size=8, epochs=4, id_col="sid", time_col="t",
                         feature_cols=["a", "b"]).fit(df.drop(columns="label"), by_id)
    for k, v in clf.model_.named_parameters().items():
        np.testing.assert_array_equal(v, clf2.model_.named_parameters()[k])
    assert len(clf.predict(df.drop(columns="label"))) == 30


def test_pipeline_grid_search_cross_val_and_clone():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((80, 8)) * 10 + 50                                   # 2-D: univariate sequences
    y = (X[:, -3:].mean(1) > 50).astype(int)
    pipe = Pipeline([("scale", StandardScaler()), ("rnn", RNNClassifier(hidden_size=8, epochs=5, lr=0.01,
                                                                         standardize=False))])
    assert pipe.fit(X, y).score(X, y) > 0.7
    search = GridSearchCV(RNNClassifier(epochs=3), {"hidden_size": [4, 8]}, cv=2).fit(X, y)
    assert search.best_params_["hidden_size"] in (4, 8) and len(search.cv_results_["mean_test_score"]) == 2
    scores = cross_val_score(RNNClassifier(hidden_size=4, epochs=2), X, y, cv=2)
    assert scores.shape == (2,)
    fitted = RNNClassifier(hidden_size=4, epochs=1).fit(X, y)
    c = clone(fitted)
    assert c.get_params() == fitted.get_params() and not hasattr(c, "model_")
    with pytest.raises(DataError, match="X has 7 features, but RNNClassifier is expecting 8"):
        fitted.predict(X[:, :7])


def test_pickle_round_trip():
    X, y = sign_data(30)
    clf = RNNClassifier(hidden_size=4, epochs=1).fit(X, y)
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))


def test_regressor_multi_output_and_early_stopping():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((100, 5, 2))
    Y = np.stack([X[:, :, 0].sum(1) * 3 + 10, X[:, -1, 1]], axis=1)
    reg = RNNRegressor(hidden_size=16, epochs=25, lr=0.01).fit(X, Y)
    assert reg.predict(X).shape == (100, 2) and reg.score(X, Y) > 0.5
    es = RNNRegressor(hidden_size=8, epochs=40, lr=0.05, early_stopping=True, patience=2,
                      validation_fraction=0.3).fit(X, Y[:, 0])
    val_losses = [r["loss"] for r in es.history_ if r["split"] == "val"]
    assert es.best_step_ is not None and es.validation_score_["loss"] == pytest.approx(min(val_losses), rel=1e-6)
    if es.stopped_early_:
        assert es.n_iter_ < 40
    vd = RNNRegressor(hidden_size=8, epochs=3).fit(X[:80], Y[:80, 0], validation_data=(X[80:], Y[80:, 0]))
    assert sum(r["split"] == "val" for r in vd.history_) == 3                   # once per epoch


def test_warm_start_continues_from_the_fitted_weights():
    X, y = sign_data(40)
    clf = RNNClassifier(hidden_size=4, epochs=2, warm_start=True).fit(X, y)
    before = {k: v.copy() for k, v in clf.model_.named_parameters().items()}
    clf.set_params(lr=1e-12).fit(X, y)
    for k, v in clf.model_.named_parameters().items():
        np.testing.assert_allclose(v, before[k], atol=1e-6)
    fresh = RNNClassifier(hidden_size=4, epochs=2, lr=1e-12).fit(X, y)
    assert not np.allclose(fresh.model_.named_parameters()["head.weight"], before["head.weight"])


def test_tagger():
    rng = np.random.default_rng(5)
    cases = [rng.standard_normal((int(n), 2)) for n in rng.integers(3, 10, 80)]
    tags = [np.where(c[:, 0] > 0, "P", "N") for c in cases]
    tagger = RNNTagger(cell="gru", hidden_size=12, epochs=15, lr=0.01).fit(cases, tags)
    assert tagger.classes_.tolist() == ["N", "P"]
    assert tagger.score(cases, tags) > 0.85
    pred = tagger.predict(cases[:3])
    assert [len(p) for p in pred] == [len(c) for c in cases[:3]]
    proba = tagger.predict_proba(cases[:2])
    assert proba[0].shape == (len(cases[0]), 2)
    equal = tagger.predict(np.stack([c[:3] for c in cases[:4]]))
    assert isinstance(equal, np.ndarray) and equal.shape == (4, 3)


def test_errors():
    X, y = sign_data(20)
    with pytest.raises(NotFittedError):
        RNNClassifier().predict(X)
    with pytest.raises(DataError, match="expected 20 targets"):
        RNNClassifier(epochs=1).fit(X, y[:-1])
    with pytest.raises(ValueError, match="requires y to be passed"):
        RNNClassifier().fit(X)
    with pytest.raises(ValueError, match="Unknown label type"):
        RNNClassifier().fit(X, np.linspace(0, 1, 20))
    with pytest.raises(DataError, match="RNNTagger"):
        RNNClassifier().fit(list(X), [np.zeros(6, int)] * 20)
    clf = RNNClassifier(hidden_size=4, epochs=1).fit(X, y)
    with pytest.raises(DataError, match="expected 2 features per step"):
        clf.predict(np.ones((2, 6, 3)))
    with pytest.raises(rnnlab.ConfigError, match="cell: expected one of"):
        RNNClassifier(cell="transformer").fit(X, y)
    with pytest.raises(DataError, match="only one class"):
        RNNClassifier().fit(X, ["a"] * 20)


def test_japanese_vowels_three_ways_train_to_the_same_weights(tmp_path):
    """The .ts file, the same data as a long CSV, and a list of arrays to the estimator: equal weights."""
    from rnnlab.trainer import load_model, train
    cases, labels, classes = read_ts(JV)
    y = np.array(classes)[labels]
    rows = [{"id": f"c{i}", "time": t, **{f"dim{j}": float(v[j]) for j in range(12)}, "speaker": y[i]}
            for i, c in enumerate(cases) for t, v in enumerate(c)]
    pd.DataFrame(rows).to_csv(tmp_path / "jv.csv", index=False)
    common = {"hidden_size": 8, "steps": 12, "eval_every": 6, "quiet": True}
    train({"task": "ts", "ts_train": str(JV), "out": str(tmp_path / "ts"), **common})
    train({"task": "data", "data": str(tmp_path / "jv.csv"), "target_col": "speaker", "out": str(tmp_path / "csv"),
           **common})
    tr, va = split_indices(len(cases), 0.2, 0)                                  # the runs' split
    clf = RNNClassifier(hidden_size=8, epochs=12, lr=1e-3, missing="zero").fit(
        [cases[i] for i in tr], y[tr], validation_data=([cases[i] for i in va], y[va]))
    ts_w = load_model(tmp_path / "ts")[0].named_parameters()
    csv_w = load_model(tmp_path / "csv")[0].named_parameters()
    for k, v in ts_w.items():
        np.testing.assert_array_equal(v, csv_w[k], err_msg=k)
        np.testing.assert_array_equal(v, clf.model_.named_parameters()[k], err_msg=k)
