"""rnnlab.estimators: scikit-learn's API, its estimator checks, pipelines and searches, every input form."""
import pickle

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
from rnnlab.tasks.supervised import split_indices  # noqa: E402
from support import FIXTURES  # noqa: E402

JV = FIXTURES / "JapaneseVowels_small.ts"


# Every check of scikit-learn's suite passes but one; 2-D X is read as univariate sequences of X.shape[1] steps.
# Small, fast settings: the suite fits each estimator some 50 times. The exception: a weight of 2 is not the
# same fit as the sequence given twice, because minibatch training draws other batches from a longer array
# (sample_weight=1 equals no weights, and weights are a weighted mean of the loss: tested below).
_WEIGHT_IS_NOT_REPEAT = {"check_sample_weight_equivalence_on_dense_data":
                         "minibatch training: a repeated sequence changes the batches drawn, a weight does not"}


@parametrize_with_checks([RNNClassifier(hidden_size=16, epochs=20, lr=0.01),
                          RNNRegressor(hidden_size=32, epochs=60, lr=0.01)],
                         expected_failed_checks=lambda est: _WEIGHT_IS_NOT_REPEAT)
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
    from rnnlab.training.trainer import load_model, train
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


# ------------------------------------------------------------------ weights, per-class metrics, skops, defaults
def test_weights_are_a_weighted_mean_of_the_loss():
    """SequenceModel.loss with sequence weights: sum(w l) / sum(w), per sequence (classify) and per valid step
    (tag); its gradient is that of the weighted mean."""
    from rnnlab.model.sequence_model import ModelConfig, SequenceModel
    rng = np.random.default_rng(0)
    for target in ("last", "every"):
        m = SequenceModel(ModelConfig(input_size=3, output_size=4, hidden_size=5, target=target, dtype="float64"),
                          seed=0)
        x = rng.standard_normal((6, 5, 3))
        y = rng.integers(0, 4, (6, 5) if target == "every" else (5,))
        w = np.array([0.0, 1.0, 2.0, 0.5, 3.0])
        lengths = np.array([6, 4, 6, 2, 5]) if target == "every" else None
        logits, _ = m(x, lengths)
        loss, d = m.loss(logits, y, lengths, w)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        if target == "last":
            nll, ww = -logp[np.arange(5), y], w
        else:
            valid = np.arange(6)[:, None] < lengths[None, :]
            nll = -np.take_along_axis(logp, y[..., None], -1)[..., 0][valid]
            ww = np.broadcast_to(w, (6, 5))[valid]
        assert loss == pytest.approx(float((ww * nll).sum() / ww.sum()), rel=1e-12)
        eps = 1e-6                                      # d: the gradient of the weighted mean in logits
        i = (2, 1) if target == "last" else (3, 2, 1)
        lp, lm = logits.copy(), logits.copy()
        lp[i] += eps
        lm[i] -= eps
        fd = (m.loss(lp, y, lengths, w)[0] - m.loss(lm, y, lengths, w)[0]) / (2 * eps)
        assert d[i] == pytest.approx(fd, rel=1e-6, abs=1e-10)


def test_sample_weight_scale_and_class_weight():
    X, y = sign_data(60)
    plain = RNNClassifier(hidden_size=8, epochs=3).fit(X, y)
    twos = RNNClassifier(hidden_size=8, epochs=3).fit(X, y, sample_weight=np.full(60, 2.0))
    np.testing.assert_allclose(twos.predict_proba(X), plain.predict_proba(X), rtol=1e-5, atol=1e-6)
    up = (y == "up")
    clf = RNNClassifier(hidden_size=8, epochs=3, class_weight={"up": 3.0})
    w = clf._weights(X, clf._sequences(X, y, fitting=True)[0], np.full(60, 0.5))
    np.testing.assert_allclose(w, np.where(up, 1.5, 0.5))                # class weight times sample weight
    bal = RNNClassifier(class_weight="balanced")
    w = bal._weights(X, bal._sequences(X, y, fitting=True)[0], None)
    np.testing.assert_allclose(w, np.where(up, 60 / (2 * up.sum()), 60 / (2 * (~up).sum())))
    from sklearn.utils.class_weight import compute_sample_weight
    np.testing.assert_allclose(w, compute_sample_weight("balanced", y))
    # weights move the model: the mean probability of "down" rises with its class weight
    p_down = [RNNClassifier(hidden_size=8, epochs=3, class_weight=cw).fit(X, y).predict_proba(X)[:, 0].mean()
              for cw in ({"up": 20.0}, None, {"down": 20.0})]
    assert p_down[0] < p_down[1] < p_down[2]


@pytest.mark.parametrize("kw, fit_kw, match", [
    ({}, {"sample_weight": np.ones(5)}, "expected 60 weights"),
    ({}, {"sample_weight": -np.ones(60)}, "finite weights >= 0"),
    ({}, {"sample_weight": np.zeros(60)}, "all weights zero"),
    ({"class_weight": "balance"}, {}, "'balanced' or a dict"),
    ({"class_weight": {"sideways": 2.0}}, {}, "not a class of y"),
])
def test_weight_refusals(kw, fit_kw, match):
    X, y = sign_data(60)
    with pytest.raises(DataError, match=match):
        RNNClassifier(hidden_size=4, epochs=1, **kw).fit(X, y, **fit_kw)


def test_class_weight_is_refused_by_the_regressor():
    X, y = sign_data(30)
    with pytest.raises(DataError, match="class_weight: an option of RNNClassifier"):
        RNNRegressor(hidden_size=4, epochs=1, class_weight="balanced").fit(X, (y == "up").astype(float))


def test_classification_report_matches_scikit_learn():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
    from rnnlab.training.metrics import classification_report
    rng = np.random.default_rng(1)
    classes = np.array(["a", "b", "c", "d"])                  # "d" is never predicted nor present
    t, p = rng.choice(classes[:3], 50), rng.choice(classes[:3], 50)
    rep = classification_report(t, p, classes)
    pr, rc, f1, sup = precision_recall_fscore_support(t, p, labels=classes, zero_division=0)
    for i, c in enumerate(classes):
        got = rep["per_class"][c]
        assert (got["precision"], got["recall"], got["f1"], got["support"]) == pytest.approx((pr[i], rc[i], f1[i], sup[i]))
    assert rep["confusion"] == confusion_matrix(t, p, labels=classes).tolist()
    assert rep["accuracy"] == pytest.approx((t == p).mean())
    X, y = sign_data(40)
    clf = RNNClassifier(hidden_size=4, epochs=1).fit(X, y)
    r = clf.classification_report(X, y)
    assert sum(r["per_class"][c]["support"] for c in r["classes"]) == 40
    with pytest.raises(DataError, match="not one of the model's classes"):
        clf.classification_report(X, np.where(y == "up", "left", y))


class Foreign:                                          # a type skops would have to import and build
    pass


def test_skops_round_trip_and_refusals(tmp_path):
    pytest.importorskip("skops")
    from rnnlab.estimators import load, save
    X, y = sign_data(40)
    for est, target in ((RNNClassifier(hidden_size=6, epochs=2, class_weight="balanced"), y),
                        (RNNRegressor(cell="gru", hidden_size=6, epochs=2), X[:, :, 1].sum(1)),
                        (RNNTagger(cell="mingru", hidden_size=6, epochs=2), np.where(X[:, :, 0] > 0, "p", "n"))):
        est.fit(X, target)
        path = tmp_path / f"{type(est).__name__}.skops"
        save(est, path)
        back = load(path)
        assert type(back) is type(est) and back.get_params() == est.get_params()
        np.testing.assert_array_equal(np.asarray(back.predict(X)), np.asarray(est.predict(X)))
        with pytest.raises(rnnlab.errors.ConfigError, match="exists"):
            save(est, path)
    est.evil_ = Foreign()                               # a file holding a type that is not rnnlab's is refused
    save(est, tmp_path / "evil.skops")
    with pytest.raises(DataError, match="not rnnlab's own: .*Foreign"):
        load(tmp_path / "evil.skops")
    (tmp_path / "junk.skops").write_text("not a zip")
    with pytest.raises(DataError, match="not a file written by"):
        load(tmp_path / "junk.skops")


def test_defaults_match_the_cli_or_say_why():
    """Every argument an estimator shares with `rnnlab train` has the CLI's default, except those in
    DEFAULTS_VS_CLI, whose two columns are the code's."""
    import inspect
    from rnnlab.training.config import TrainConfig
    from rnnlab.estimators import DEFAULTS_VS_CLI
    cli = TrainConfig()
    names = {"cell": "model", "validation_fraction": "val_fraction"}
    for est in (RNNClassifier, RNNRegressor, RNNTagger):
        for k, p in inspect.signature(est.__init__).parameters.items():
            field = names.get(k, k)
            if k == "self" or not hasattr(cli, field):
                continue
            if k in DEFAULTS_VS_CLI:
                mine, theirs, why = DEFAULTS_VS_CLI[k]
                assert p.default == mine and why
                assert theirs == getattr(cli, field) or k == "epochs", k
            else:
                assert p.default == getattr(cli, field) or (p.default is None and getattr(cli, field) == ""), k
    assert DEFAULTS_VS_CLI["epochs"][1] == f"--steps {cli.steps}"
