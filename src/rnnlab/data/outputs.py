"""Files rnnlab writes for the user (predictions, exports, layer files, JSON summaries): checked before any work.

The rules, the same for every ``--out`` and ``--json``:

    an input of the same command       never written over, even with --force (the paths are resolved)
    an existing file                   refused unless --force; then replaced atomically, keeping its mode
    a symbolic link                    refused: rnnlab writes files, not through links (give the target's path)
    a folder, or an unwritable place   refused, naming the path

``check_output`` runs before the work; ``write_output`` writes the bytes atomically (``checkpoint.atomic_write``).
"""
from __future__ import annotations

import os
from pathlib import Path

from rnnlab.errors import ConfigError


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


FINAL = "model.safetensors"             # a finished run's model (trainer writes it, card and load_model read it)
# what a run folder holds; a folder with any of them but no config.toml was not made by `rnnlab train`
RUN_FILES = ("config.toml", "metrics.jsonl", "diagnostics.jsonl", "changes.jsonl", "checkpoint.safetensors", "model.safetensors",
             "card.md", "card.json", ".mlflow_run_id", "tensorboard", "mlruns")
REPORT_MARK = ".rnnlab-report"          # written with every report: the folder's files are rnnlab's to replace


def _files(inputs):
    """The input files; a run folder (or a file in one) stands for every file of the run."""
    for src in inputs:
        if not src:
            continue
        src = Path(src)
        folder = src if src.is_dir() else src.parent
        if src.is_dir() or (folder / "config.toml").is_file():
            yield from (folder / n for n in RUN_FILES + (".lock",))
        if not src.is_dir():
            yield src


def check_output(path, what: str, inputs=(), force: bool = False, suffixes=None) -> Path:
    """Refuse ``path`` as an output named by ``what`` (a flag, e.g. "--out") before anything is computed."""
    if path is None or str(path) == "":
        raise ConfigError(f"{what}: expected a file path, got an empty one")
    p = Path(path)
    if suffixes and p.suffix not in suffixes:
        raise ConfigError(f"{what}: expected a file ending in {' or '.join(suffixes)}, got {p.name!r}")
    for src in _files(inputs):
        if _same(p, src):
            raise ConfigError(f"{what}: {str(p)!r} is also an input of this command ({src}); write the output to "
                              f"another file")
    if p.is_symlink():
        raise ConfigError(f"{what}: {str(p)!r} is a symbolic link; rnnlab does not write through links -- give the "
                          f"path of the file itself")
    if p.is_dir():
        raise ConfigError(f"{what}: {str(p)!r} is a folder; expected a file path")
    if p.exists() and not force:
        raise ConfigError(f"{what}: {str(p)!r} already exists; pass --force to replace it, or choose another path")
    check_can_make(p.parent, what)
    return p


def check_can_make(folder, what: str) -> None:
    """``folder`` exists or can be made: its nearest existing ancestor is a folder this process may write in."""
    folder = Path(folder)
    top = folder
    while not top.exists() and top != top.parent:
        top = top.parent
    if not top.is_dir():
        raise ConfigError(f"{what}: cannot make the folder {str(folder)!r}: {str(top)!r} is a file")
    if not os.access(top, os.W_OK | os.X_OK):
        raise ConfigError(f"{what}: cannot write in {str(top)!r} (permission denied)")


def write_output(path, data: bytes, what: str = "--out") -> Path:
    """``data`` to ``path`` atomically (the old file stays whole if anything fails); one-line error otherwise."""
    from rnnlab.model.checkpoint import atomic_write
    try:
        return atomic_write(Path(path), data)
    except OSError as exc:
        raise ConfigError(f"{what}: could not write {path} ({exc.strerror or exc}); "
                          f"{getattr(exc, 'rnnlab_kept', 'nothing was written')}") from None


def check_report_dir(path, what: str = "--report", force: bool = False) -> Path:
    """A folder for a report (figures, summary.md, report.html): new, empty, or one rnnlab wrote before."""
    p = check_folder(path, what, "expected a folder for the report")
    if p.is_dir() and any(p.iterdir()) and not (p / REPORT_MARK).is_file() and not force:
        raise ConfigError(f"{what}: {str(p)!r} holds files that rnnlab's reports did not write; pass --force to "
                          f"write the report among them, or choose another folder")
    return p


def check_folder(path, what: str, role: str) -> Path:
    """A folder rnnlab will write in: not a link, not a file, and one it can make. ``role`` says what it is for."""
    p = Path(path)
    if p.is_symlink():
        raise ConfigError(f"{what}: {str(p)!r} is a symbolic link; rnnlab does not write through links -- give the "
                          f"folder itself")
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{what}: {str(p)!r} is a file; {role}")
    check_can_make(p, what)
    return p
