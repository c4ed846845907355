"""Files written before the package layout of #29 keep loading: a run folder and a skops estimator."""
import json
import shutil

import numpy as np
import pytest

from support import FIXTURES

LEGACY = FIXTURES / "legacy"


def test_an_old_run_folder_evaluates_to_its_recorded_loss(tmp_path, capsys):
    from rnnlab.cli.main import main
    run = shutil.copytree(LEGACY / "run_adding_lstm", tmp_path / "run")
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["split"] == "val"
    main(["evaluate", str(run)])
    out = capsys.readouterr().out
    assert f"loss {last['loss']:.4f}" in out


def test_an_old_run_folder_resumes(tmp_path):
    from rnnlab.cli.main import main
    run = shutil.copytree(LEGACY / "run_adding_lstm", tmp_path / "run")
    main(["resume", str(run), "--steps", "24"])
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 24


def test_an_old_estimator_file_loads_and_predicts_as_it_did():
    pytest.importorskip("skops")
    from rnnlab.estimators import load
    expected = np.load(LEGACY / "classifier_expected.npz")
    est = load(LEGACY / "classifier.skops")
    assert list(est.classes_) == list(expected["classes"])
    np.testing.assert_allclose(est.predict_proba(expected["X"]), expected["proba"], rtol=1e-6, atol=1e-7)


def test_every_layer_class_is_at_the_top_level():
    import rnnlab
    from rnnlab.engine.layers import LAYERS
    for name, cls in LAYERS.items():
        if cls.__module__ == "rnnlab.engine.layers":          # the built-in cells, not ones registered by a test
            assert getattr(rnnlab, cls.__name__) is cls, name
            assert cls.__name__ in rnnlab.__all__
