"""Safe checkpoints: safetensors files, written atomically, read without executing code.

A checkpoint is a safetensors file whose header metadata holds

    format          "rnnlab-checkpoint"
    format_version  "1"
    checksum        sha256 over the meta string and every tensor's name, dtype, shape and bytes
    meta            JSON: config, step, RNG states, metrics ... (whatever the caller stores)

Saving writes a temporary file in the same folder, fsyncs it, renames it over the target and fsyncs the
folder, so a process killed at any moment leaves either the old file or the new one, never a torn one.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from rnnlab.errors import CheckpointError

FORMAT = "rnnlab-checkpoint"
FORMAT_VERSION = 1
_MAX_HEADER = 100 * 1024 * 1024


def tensors_checksum(tensors: dict, meta: str = "") -> str:
    h = hashlib.sha256(meta.encode("utf-8"))
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_checkpoint(path, tensors: dict, meta: dict) -> Path:
    """Atomically write ``tensors`` (name -> array) and ``meta`` (JSON-able) to ``path``."""
    from safetensors.numpy import save
    path = Path(path)
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    meta_str = json.dumps(meta, sort_keys=True)
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
              "checksum": tensors_checksum(tensors, meta_str), "meta": meta_str}
    data = save(tensors, metadata=header)
    try:
        return atomic_write(path, data)
    except OSError as exc:
        raise CheckpointError(f"{path}: could not save ({exc.strerror or exc}); "
                              f"{getattr(exc, 'rnnlab_kept', 'nothing was written')}") from None


def atomic_write(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that a kill at any moment leaves the old file or the new one.

    A temporary file in the same folder is fsynced and renamed over the target, then the folder is fsynced.
    An ``OSError`` carries ``rnnlab_kept``: whether the previous file is intact or nothing was written.
    """
    path = Path(path)
    existed = path.is_file()
    mode = (path.stat().st_mode & 0o7777) if existed else (0o666 & ~_umask())    # a replaced file keeps its mode
    kept = "the previous file is intact" if existed else "nothing was written"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        exc.rnnlab_kept = kept
        raise
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)                         # mkstemp makes 0600; new files follow the umask as others do
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            exc.rnnlab_kept = kept
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # some file systems do not fsync folders
        pass
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_checkpoint(path) -> tuple[dict, dict]:
    """Read a checkpoint -> (tensors, meta). Any problem raises ``CheckpointError`` naming the file."""
    from safetensors.numpy import load
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a checkpoint file (.safetensors)")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    data = path.read_bytes()
    if len(data) < 8:
        raise CheckpointError(f"{path}: truncated or not a safetensors file ({len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        raise CheckpointError(f"{path}: not a safetensors file, or truncated (header length {n}, file {len(data)} bytes)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
        meta_raw = header.get("__metadata__", {}) if isinstance(header, dict) else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: not a safetensors file (unreadable header)") from None
    if not isinstance(meta_raw, dict) or meta_raw.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an rnnlab checkpoint (no '{FORMAT}' format tag in the header)")
    try:
        version = int(meta_raw.get("format_version", "?"))
    except ValueError:
        raise CheckpointError(f"{path}: unreadable format_version {meta_raw.get('format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer rnnlab (checkpoint format {version}; this version reads "
                              f"up to {FORMAT_VERSION}); upgrade rnnlab to load it")
    try:
        tensors = load(data)
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise CheckpointError(f"{path}: corrupted tensor data ({type(exc).__name__}: {exc})") from None
    if tensors_checksum(tensors, str(meta_raw.get("meta", ""))) != meta_raw.get("checksum"):
        raise CheckpointError(f"{path}: checksum mismatch: the tensor data or metadata is corrupted")
    try:
        meta = json.loads(meta_raw.get("meta", "{}"))
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: unreadable metadata") from None
    return tensors, meta
