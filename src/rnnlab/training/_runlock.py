"""One writer per run folder: a lock on ``DIR/.lock`` that the operating system releases when its process ends.

``rnnlab train --out DIR``, ``rnnlab resume DIR``, every sweep trial and rank 0 of a distributed run hold it
while they write. A second writer is refused with an error naming the holder's pid; a process that was killed
(even with SIGKILL) holds nothing, so its run resumes at once. The lock is ``fcntl.flock`` (POSIX) or
``msvcrt.locking`` (Windows) on an open file: no stale lock files to clean up, the file itself stays.
"""
from __future__ import annotations

import os
from pathlib import Path

from rnnlab.errors import RnnlabError

LOCK = ".lock"


class RunLockedError(RnnlabError, RuntimeError):
    """The run folder is being written by another process."""


def _try_lock(fd) -> bool:
    try:
        import fcntl
    except ImportError:                                    # pragma: no cover - Windows
        import msvcrt
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class RunLock:
    """``with RunLock(run_dir):`` holds the folder's lock (or raises ``RunLockedError``); ``release()`` early."""

    def __init__(self, run_dir, what: str = "a run"):
        self.path = Path(run_dir) / LOCK
        self.what = what
        self.fd = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            try:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise RunLockedError(f"run folder {self.path.parent} is being written by process {holder} (its lock "
                                 f"{self.path} is held); wait for it to finish or stop it, then resume")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)                              # closing the file releases the lock
            self.fd = None

    def __enter__(self):
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc):
        self.release()
        return False


def holder(run_dir) -> int | None:
    """The pid written by the process holding ``run_dir``'s lock, or None when nobody holds it."""
    path = Path(run_dir) / LOCK
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDWR)
    try:
        if _try_lock(fd):
            return None
        text = os.read(fd, 64).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    finally:
        os.close(fd)
