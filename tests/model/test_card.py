"""Model cards: written with every run, `rnnlab info` prints them; the data's hash, features, classes, metrics
beside the baseline, and load instructions that run as written."""
import json

import pytest

pd = pytest.importorskip("pandas")

from rnnlab.cli import main as cli  # noqa: E402
from rnnlab.data.sequences import file_digest  # noqa: E402
from rnnlab.training.trainer import load_model  # noqa: E402
from support import COLS, ROOT, write_long  # noqa: E402


def test_a_data_run_has_a_card_and_info_prints_it(tmp_path, capsys):
    write_long(tmp_path / "train.csv")
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(tmp_path / "train.csv"), *COLS, "--model", "lstm", "--hidden-size", "6",
                     "--steps", "6", "--out", str(run), "--quiet"]) == 0
    card = json.loads((run / "card.json").read_text())
    _, meta = load_model(run)
    assert card["data"]["sha256"] == file_digest(tmp_path / "train.csv")
    assert card["features"] == ["hr", "temp"] and card["classes"] == ["sick", "well"]
    assert card["metrics"] == meta["metrics"] and card["baseline"][0] == "majority-class accuracy"
    assert card["model"]["parameters"] == sum(v.size for v in load_model(run)[0].named_parameters().values())
    rep = card["class_report"]                              # per class on the validation data, as evaluate
    assert rep["classes"] == ["sick", "well"] and sum(map(sum, rep["confusion"])) == 8
    assert rep["accuracy"] == pytest.approx(card["metrics"]["accuracy"])
    md = (run / "card.md").read_text()
    assert "sha256" in md and "`hr`, `temp`" in md and "Baseline: majority-class accuracy" in md
    capsys.readouterr()
    assert cli.main(["info", str(run), "--json", str(tmp_path / "card.json")]) == 0
    out = capsys.readouterr().out
    assert out.strip() == md.strip()
    assert json.loads((tmp_path / "card.json").read_text()) == card
    # the card's own load instructions run as written
    assert f"rnnlab export {run.resolve()} --lengths --out model.onnx" in md
    pytest.importorskip("onnx")
    assert cli.main(["export", str(run.resolve()), "--lengths", "--out", str(tmp_path / "model.onnx")]) == 0


def test_a_task_run_has_a_card_without_data(tmp_path, capsys):
    run = tmp_path / "adding"
    assert cli.main(["train", "--task", "adding", "--seq-len", "10", "--model", "gru", "--hidden-size", "4",
                     "--steps", "3", "--out", str(run), "--quiet"]) == 0
    card = json.loads((run / "card.json").read_text())
    assert card["data"] is None and card["task"] == "adding" and "mse" in card["metrics"]
    assert card["class_report"] is None
    assert "## Data" not in (run / "card.md").read_text()


def test_info_refuses_a_folder_without_a_model(tmp_path, capsys):
    code = cli.main(["info", str(tmp_path)])
    err = capsys.readouterr().err
    assert code != 0 and "has no model.safetensors" in err and "Traceback" not in err


def test_the_data_page_commands_run_as_written(tmp_path, monkeypatch, capsys):
    """docs/data.md's first block, line by line, on the sample files shipped in examples/."""
    import shlex
    root = ROOT
    readme = (root / "docs" / "data.md").read_text()
    block = readme.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert len(commands) == 4 and all(c.startswith("rnnlab ") for c in commands)
    (tmp_path / "examples").symlink_to(root / "examples")
    monkeypatch.chdir(tmp_path)
    for c in commands:
        assert cli.main(shlex.split(c)[1:]) == 0, c
    out = capsys.readouterr().out
    preds = pd.read_csv(tmp_path / "preds.csv")
    assert len(preds) == 10 and list(preds.columns) == ["patient", "prediction", "p_sick", "p_well"]
    assert "confusion" in out and (tmp_path / "runs" / "visits" / "card.md").is_file()
