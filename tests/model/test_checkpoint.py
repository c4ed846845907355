"""Checkpoints: bit-identical round trip, atomic replacement, clear errors for bad files, no pickle."""
import json
import os
import struct

import numpy as np
import pytest

from rnnlab.model.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from rnnlab.errors import CheckpointError


def _tensors(rng):
    return {"model/w": rng.standard_normal((3, 4)).astype(np.float32), "model/b": rng.standard_normal(4),
            "state/0": np.arange(6, dtype=np.int64).reshape(2, 3)}


def test_round_trip_is_bit_identical(tmp_path, rng):
    t = _tensors(rng)
    meta = {"step": 7, "rng": {"state": 2 ** 100 + 3}, "metrics": {"loss": 0.25}}
    save_checkpoint(tmp_path / "c.safetensors", t, meta)
    t2, meta2 = load_checkpoint(tmp_path / "c.safetensors")
    assert meta2 == meta
    assert set(t2) == set(t)
    for k in t:
        assert t2[k].dtype == t[k].dtype and t2[k].tobytes() == t[k].tobytes()


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path, rng):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, _tensors(rng), {"step": 1})
    save_checkpoint(path, _tensors(rng), {"step": 2})
    assert load_checkpoint(path)[1]["step"] == 2
    assert os.listdir(tmp_path) == ["c.safetensors"]


def test_failed_save_keeps_the_previous_file(tmp_path, rng, monkeypatch):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, _tensors(rng), {"step": 1})

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(CheckpointError, match="could not save .*disk full.*the previous file is intact"):
        save_checkpoint(path, _tensors(rng), {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)[1]["step"] == 1
    assert os.listdir(tmp_path) == ["c.safetensors"]


def test_truncated_file(tmp_path, rng, outcome):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, _tensors(rng), {})
    data = path.read_bytes()
    for cut in (0, 5, 8, 40, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=str(path.name)):
            load_checkpoint(path)
        outcome("checkpoint: truncated file", "clear error")


def test_corrupted_tensor_bytes_fail_the_checksum(tmp_path, rng, outcome):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, _tensors(rng), {})
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path)
    outcome("checkpoint: flipped tensor byte", "clear error")


def test_other_files(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_text("hello, this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(p)
    from safetensors.numpy import save_file
    save_file({"a": np.zeros(2)}, str(p))                   # a valid safetensors file, but not ours
    with pytest.raises(CheckpointError, match="not an rnnlab checkpoint"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_newer_format_version(tmp_path, rng, outcome):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"a": np.zeros(2)}, {})
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header["__metadata__"]["format_version"] = str(FORMAT_VERSION + 1)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + data[8 + n:])
    with pytest.raises(CheckpointError, match="newer rnnlab"):
        load_checkpoint(path)
    outcome("checkpoint: newer format version", "clear error")
