"""Every bad checkpoint raises CheckpointError with one line naming the file, the key, expected vs found."""

from __future__ import annotations

import json
import pathlib
import pickle
import shutil
import struct
import zipfile

import numpy as np
import pytest
from ckpt_helpers import assert_one_line_error
from safetensors.numpy import load_file, save_file

from pg2edge.checkpoint import describe, load_checkpoint, random_params, write_hf, write_npz
from pg2edge.checkpoint.safetensors_io import read_header
from pg2edge.config import get_config
from pg2edge.errors import CheckpointError


class Boom:
    """Unpickling this creates a file: proof that nothing was unpickled if the file never appears."""

    def __init__(self, sentinel: pathlib.Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return pathlib.Path.touch, (self.sentinel,)


def _error(path, *needles, call=load_checkpoint) -> str:
    return assert_one_line_error(path, *needles, call=call)


def test_missing_file(tmp_path):
    _error(tmp_path / "nope.npz", "no such file")


def test_truncated_npz(tmp_path, written):
    data = written["npz", "float32"].read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    _error(tmp_path / "cut.npz", "truncated")


def test_corrupt_npz_member_is_caught_by_crc(tmp_path, written):
    path = shutil.copy(written["npz", "float32"], tmp_path / "flip.npz")
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("llm/embedder/input_embedding.npy")  # 512 KiB: its middle is array data
    raw = bytearray(pathlib.Path(path).read_bytes())
    raw[info.header_offset + info.file_size // 2] ^= 0xFF
    pathlib.Path(path).write_bytes(bytes(raw))
    _error(path, "'llm/embedder/input_embedding'", "CRC")


def test_pickled_object_member_is_refused_without_unpickling(tmp_path, params):
    sentinel = tmp_path / "unpickled"
    bad = dict(params, **{"img/head/bias": np.array([Boom(sentinel)], dtype=object)})
    np.savez(tmp_path / "pickled.npz", **bad)
    _error(tmp_path / "pickled.npz", "'img/head/bias'", "pickled object array")
    _error(tmp_path / "pickled.npz", "'img/head/bias'", call=describe)
    assert not sentinel.exists()


def test_plain_pickle_renamed_npz_is_refused_without_unpickling(tmp_path):
    sentinel = tmp_path / "unpickled"
    (tmp_path / "evil.npz").write_bytes(pickle.dumps(Boom(sentinel)))
    _error(tmp_path / "evil.npz", "expected a zip archive", "pickle")
    assert not sentinel.exists()


def test_missing_key(tmp_path, params):
    path = write_npz(tmp_path / "m.npz", {k: v for k, v in params.items() if k != "llm/layers/mlp/linear"})
    _error(path, "'llm/layers/mlp/linear'", "missing 1 of")


def test_extra_key(tmp_path, params):
    path = write_npz(tmp_path / "x.npz", dict(params, **{"img/surprise": np.zeros(3, np.float32)}))
    _error(path, "'img/surprise'", "unexpected")


def test_wrong_shape(tmp_path, params):
    path = write_npz(tmp_path / "s.npz", dict(params, **{"img/head/bias": np.zeros(63, np.float32)}))
    _error(path, "'img/head/bias'", "expected shape (64,), found (63,)")


def test_wrong_dtype(tmp_path, params):
    path = write_npz(tmp_path / "d.npz", dict(params, **{"img/head/bias": np.zeros(64, np.int32)}))
    _error(path, "'img/head/bias'", "found int32")


def test_unknown_variant(tmp_path, cfg):
    odd = cfg.replace(depth=3)
    path = write_npz(tmp_path / "odd.npz", random_params(odd, 0))
    _error(path, "known variant", "text width 64 depth 3")


def test_wrong_cfg_for_the_file(written):
    message = _error(written["npz", "float32"], "'img/pos_embedding'", "expected shape (1, 64, 48), found (1, 16, 48)",
                     call=lambda path: load_checkpoint(path, cfg=get_config("tiny", 112)))
    assert message.startswith(str(written["npz", "float32"]))


def test_sharded_index_pointing_to_a_missing_shard(tmp_path, written):
    path = shutil.copytree(written["safetensors-sharded", "float32"], tmp_path / "hf")
    index = json.loads((path / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[1]
    (path / shard).unlink()
    first_key = next(k for k, f in index["weight_map"].items() if f == shard)
    _error(path / "model.safetensors.index.json", repr(first_key), shard, "no such file")
    _error(path, repr(first_key), shard, call=describe)


def test_truncated_safetensors(tmp_path, written):
    data = (written["safetensors", "float32"] / "model.safetensors").read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) - 1000])
    header = read_header(written["safetensors", "float32"] / "model.safetensors")
    cut_off = {name for name, t in header.tensors.items() if header.data_start + t.end > len(data) - 1000}
    message = _error(path, "truncated")
    assert any(repr(name) in message for name in cut_off)
    path.write_bytes(data[:5])
    _error(path, "8-byte header length")


def test_safetensors_bad_json_and_impossible_header_length(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", 8) + b"{not json" + b"\0" * 16)
    _error(path, "invalid JSON")
    path.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    _error(path, "header length")


def test_safetensors_wrong_shape_and_dtype(tmp_path, written):
    src = load_file(written["safetensors", "float32"] / "model.safetensors")
    name = "language_model.model.layers.2.self_attn.k_proj.weight"
    for value, needle in ((src[name][:-1], "expected shape (32, 64), found (31, 64)"),
                          (src[name].astype(np.int32), "found int32")):
        (tmp_path / "hf").mkdir(exist_ok=True)
        save_file(dict(src, **{name: value}), tmp_path / "hf" / "model.safetensors")
        _error(tmp_path / "hf", repr(name), needle)


def test_safetensors_missing_and_extra_tensor(tmp_path, written):
    src = load_file(written["safetensors", "float32"] / "model.safetensors")
    (tmp_path / "hf").mkdir()
    gone = "vision_tower.vision_model.encoder.layers.1.mlp.fc2.bias"
    save_file({k: v for k, v in src.items() if k != gone}, tmp_path / "hf" / "model.safetensors")
    _error(tmp_path / "hf", repr(gone), "missing")
    save_file(dict(src, **{"vision_tower.vision_model.head.probe": src[gone]}), tmp_path / "hf" / "model.safetensors")
    _error(tmp_path / "hf", "'vision_tower.vision_model.head.probe'", "unexpected")


def test_writers_refuse_bad_params_and_occupied_directories(tmp_path, cfg, params):
    with pytest.raises(CheckpointError, match="'img/head/kernel'.*missing"):
        write_hf(tmp_path / "a", {k: v for k, v in params.items() if k != "img/head/kernel"}, cfg)
    assert not (tmp_path / "a").exists()  # nothing half-written
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="refusing to overwrite"):
        write_hf(tmp_path / "b", params, cfg)
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()  # an empty directory may be filled
    assert sorted(p.name for p in write_hf(tmp_path / "empty", params, cfg).iterdir()) == ["config.json",
                                                                                          "model.safetensors"]
    with pytest.raises(CheckpointError, match="dtype"):
        write_npz(tmp_path / "c.npz", params, dtype=np.int8)
    assert list(tmp_path.glob(".*")) == []  # no temp files left behind
