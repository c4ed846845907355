"""Every command of the README runs: as written where it takes seconds, with its size flags overridden to small
values where it trains for minutes. ``pip install`` steps are the install's, not run here; ``rnnlab lab`` serves
until stopped and is driven by tests/lab/test_lab.py."""
import re
import shutil
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# flags appended to a command (argparse: the last value wins) so that it trains for a few steps only
SMALL = {
    "compare": ["--steps", "4", "--seeds", "1", "--eval-every", "2"],
    "check": [],
    "gradients": ["--sweep-len", "12", "--sweep-hidden", "8"],
    "train": ["--steps", "4", "--eval-every", "2"],
}
NOT_RUN = {"lab"}


def readme_commands(text: str) -> list[str]:
    """The rnnlab commands of the README's command blocks (fenced bash, or indented by four spaces)."""
    lines = []
    fence = None
    for line in text.splitlines():
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            continue
        if (fence == "bash" or (fence is None and line.startswith("    "))) and line.strip():
            lines.append(line.strip())
    commands = []
    for line in lines:
        for part in line.split("#")[0].split("&&"):
            part = part.strip()
            if part.startswith("rnnlab "):
                commands.append(part)
    return commands


def tour_commands(text: str) -> list[str]:
    """The ``$ rnnlab ...`` lines of the tour's console blocks, continuation lines joined."""
    commands, fence, pending = [], False, None
    for line in text.splitlines():
        if line.startswith("```"):
            fence = line.strip() == "```console"
            continue
        if not fence:
            continue
        if pending is not None:
            pending += " " + line.strip().rstrip("\\").strip()
            if not line.rstrip().endswith("\\"):
                commands.append(pending); pending = None
        elif line.startswith("$ rnnlab "):
            cmd = line[2:].rstrip()
            if cmd.endswith("\\"):
                pending = cmd.rstrip("\\").strip()
            else:
                commands.append(cmd)
    return commands


COMMANDS = readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))
TOUR = list(dict.fromkeys(tour_commands((ROOT / "docs" / "guide.md").read_text(encoding="utf-8"))))


def test_the_readme_has_its_commands():
    assert any(c.startswith("rnnlab compare --config configs/compare-adding.toml") for c in COMMANDS)
    assert len(COMMANDS) >= 5


def test_the_tours_give_the_same_commands():
    zh = tour_commands((ROOT / "docs" / "guide.zh.md").read_text(encoding="utf-8"))
    assert list(dict.fromkeys(zh)) == TOUR and len(TOUR) >= 5


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_runs(command, tmp_path, monkeypatch, capsys):
    _run(command, tmp_path, monkeypatch, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("command", TOUR)
def test_a_tour_command_runs(command, tmp_path, monkeypatch, capsys):
    _run(command, tmp_path, monkeypatch, capsys)


def _run(command, tmp_path, monkeypatch, capsys):
    from rnnlab.cli.main import main
    argv = shlex.split(command)[1:]
    if argv[0] in NOT_RUN:
        pytest.skip(f"rnnlab {argv[0]} serves until stopped: tests/lab/test_lab.py drives it")
    for folder in ("configs", "examples"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    monkeypatch.chdir(tmp_path)                     # the README's relative paths, read and written here
    argv = argv + (["--epochs", "1"] if "--epochs" in argv else SMALL.get(argv[0], []))
    if argv[0] == "compare" and "--config" in argv:
        argv += ["--force"] if (tmp_path / "runs").exists() else []
    assert main(argv) == 0, capsys.readouterr().err
