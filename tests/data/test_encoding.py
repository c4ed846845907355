"""rnnlab.data.encoding: labels to classes and back, standardisation with training statistics, named errors."""
import numpy as np
import pytest

from rnnlab.data.encoding import Encoding, fit_encoding, infer_problem, label_kind
from rnnlab.errors import DataError
from rnnlab.data.sequences import Sequences


def seqs(targets, cases=None):
    rng = np.random.default_rng(0)
    cases = cases or [rng.normal(5.0, 2.0, (n, 2)) for n in (3, 4, 5, 2)]
    return Sequences(cases, targets)


@pytest.mark.parametrize("y,kind,classes", [
    (np.array(["b", "a", "b", "c"]), "str", ["a", "b", "c"]),
    (np.array([3, 1, 3, 1]), "int", [1, 3]),
    (np.array([True, False, False, True]), "bool", [False, True]),
    (np.array(["x", "y", "x", "y"], dtype=object), "str", ["x", "y"]),
])
def test_labels_round_trip(y, kind, classes):
    enc = fit_encoding(seqs(y), "classify")
    assert enc.label_kind == kind and enc.classes == classes
    idx = enc.encode_y(y)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(enc.decode_classes(idx), y)
    again = Encoding.from_dict(enc.to_dict())                      # stored as JSON with the model
    np.testing.assert_array_equal(again.encode_y(y), idx)
    assert again.classes_array.dtype.kind == np.asarray(y).astype(again.classes_array.dtype).dtype.kind


@pytest.mark.parametrize("y,match", [
    (np.array(["a", 1, "b", 2], dtype=object), r"labels of mixed types \['int', 'str'\]"),
    (np.array(["a", "a", "a", "a"]), r"only one class \('a'\).*at least 2 classes"),
    (np.array(["a", None, "b", "a"], dtype=object), "missing labels"),
    (np.array([{"a": 1}, 2, 3, 4], dtype=object), "got dict"),
])
def test_bad_labels(y, match):
    with pytest.raises(DataError, match=match):
        fit_encoding(seqs(y), "classify")


def test_unseen_and_mismatched_labels():
    enc = fit_encoding(seqs(np.array(["a", "b", "a", "b"])), "classify")
    with pytest.raises(DataError, match=r"labels \['z'\] were not in the training data's classes \['a', 'b'\]"):
        enc.encode_y(np.array(["a", "z"]))
    with pytest.raises(DataError, match="expected str labels as in training, got int"):
        enc.encode_y(np.array([1, 2]))
    with pytest.raises(DataError, match="predicts one label per sequence, got per-step"):
        enc.encode_y([np.array(["a"])])


def test_standardisation_uses_training_statistics():
    s = seqs(np.array([0, 1, 0, 1]))
    enc = fit_encoding(s, "classify")
    allv = np.concatenate(s.cases)
    np.testing.assert_allclose(enc.x_mean, allv.mean(0))
    np.testing.assert_allclose(enc.x_std, allv.std(0))
    z = np.concatenate(enc.encode_x(s.cases))
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-12)
    const = seqs(np.array([0, 1, 0, 1]), [np.full((3, 1), 7.0)] * 4)
    e2 = fit_encoding(const, "classify")
    assert e2.x_std == [1.0] and np.all(np.concatenate(e2.encode_x(const.cases)) == 0)
    raw = fit_encoding(s, "classify", standardize=False)
    np.testing.assert_array_equal(raw.encode_x(s.cases)[0], s.cases[0])
    with pytest.raises(DataError, match="expected 2 features per step .* got 3 in case 0"):
        enc.encode_x([np.ones((2, 3))])


def test_missing_zero_reads_nan_as_training_mean():
    s = seqs(np.array([0, 1, 0, 1]))
    s.cases[0][1, 0] = np.nan
    enc = fit_encoding(s, "classify", missing="zero")
    assert np.isfinite(enc.x_mean).all()
    z = enc.encode_x(s.cases)[0]
    assert z[1, 0] == 0.0 and np.isfinite(z).all()


def test_regression_targets_scaled_and_restored():
    y = np.array([[1.0, 100.0], [2.0, 300.0], [3.0, 200.0], [4.0, 400.0]])
    enc = fit_encoding(seqs(y), "regress")
    z = enc.encode_y(y)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(enc.decode_values(z), y)
    assert enc.output_size == 2
    with pytest.raises(DataError, match="expected 2 target value"):
        enc.encode_y(np.ones(4))
    with pytest.raises(DataError, match="NaN or Inf in the regression targets"):
        fit_encoding(seqs(np.array([1.0, np.nan, 2.0, 3.0])), "regress")
    with pytest.raises(DataError, match="expected numeric regression targets.*problem 'classify'"):
        fit_encoding(seqs(np.array(["a", "b", "a", "b"])), "regress")


def test_tagging_labels():
    cases = [np.ones((n, 1)) for n in (2, 3)]
    tags = [np.array(["N", "V"]), np.array(["V", "V", "D"])]
    enc = fit_encoding(Sequences(cases, tags), "tag")
    assert enc.classes == ["D", "N", "V"]
    assert [v.tolist() for v in enc.encode_y(tags)] == [[1, 2], [2, 2, 0]]
    with pytest.raises(DataError, match="a tagger needs one label per step"):
        fit_encoding(Sequences(cases, np.array(["N", "V"])), "tag")


def test_problem_inference():
    assert infer_problem(np.array([0.5, 1.5]))[0] == "regress"
    assert infer_problem(np.array(["a", "b"]))[0] == "classify"
    assert infer_problem(np.array([1, 2]))[0] == "classify"
    assert infer_problem([np.array([1, 2])])[0] == "tag"
    assert label_kind(np.array([True])) == "bool"
