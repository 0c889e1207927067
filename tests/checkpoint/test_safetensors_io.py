"""Our numpy safetensors reader/writer agrees with the reference `safetensors` package both ways."""

from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as st_load_numpy
from safetensors.numpy import save_file as st_save_numpy
from safetensors.torch import load_file as st_load_torch
from safetensors.torch import save_file as st_save_torch

from pg2edge.checkpoint.safetensors_io import read_header, read_safetensors, save_safetensors


def _sample() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a.f32": rng.standard_normal((3, 5)).astype(np.float32),
        "b.f16": rng.standard_normal((7,)).astype(np.float16),
        "c.i64": rng.integers(-9, 9, (2, 2, 2)).astype(np.int64),
        "d.scalar": np.array(1.5, np.float64),
        "e.empty": np.zeros((0, 4), np.float32),
        "f.u8": np.arange(5, dtype=np.uint8),
    }


def test_reference_package_reads_ours(tmp_path):
    tensors = _sample()
    save_safetensors(tmp_path / "ours.safetensors", tensors, {"format": "pt", "note": "x"})
    theirs = st_load_numpy(tmp_path / "ours.safetensors")
    assert theirs.keys() == tensors.keys()
    for name, value in tensors.items():
        assert theirs[name].dtype == value.dtype and theirs[name].shape == value.shape, name
        np.testing.assert_array_equal(theirs[name], value)


def test_we_read_the_reference_packages_files(tmp_path):
    tensors = _sample()
    st_save_numpy(tensors, tmp_path / "theirs.safetensors", metadata={"format": "np"})
    ours, metadata = read_safetensors(tmp_path / "theirs.safetensors")
    assert metadata == {"format": "np"}
    assert ours.keys() == tensors.keys()
    for name, value in tensors.items():
        assert ours[name].dtype == value.dtype and ours[name].shape == value.shape, name
        np.testing.assert_array_equal(ours[name], value)


def test_bfloat16_agrees_with_torch_both_ways(tmp_path):
    values = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    bf16 = values.astype(ml_dtypes.bfloat16)
    as_torch = torch.from_numpy(values).to(torch.bfloat16)
    assert np.array_equal(as_torch.view(torch.int16).numpy(), bf16.view(np.int16))  # same rounding
    save_safetensors(tmp_path / "ours.safetensors", {"w": bf16})
    theirs = st_load_torch(tmp_path / "ours.safetensors")["w"]
    assert theirs.dtype == torch.bfloat16
    assert torch.equal(theirs, as_torch)
    st_save_torch({"w": as_torch}, tmp_path / "theirs.safetensors")
    ours, _ = read_safetensors(tmp_path / "theirs.safetensors")
    assert ours["w"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(ours["w"].view(np.int16), bf16.view(np.int16))


def test_header_is_aligned_and_offsets_contiguous(tmp_path):
    path = save_safetensors(tmp_path / "x.safetensors", _sample())
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    header = read_header(path)
    spans = sorted((t.begin, t.end) for t in header.tensors.values())
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert header.data_start + spans[-1][1] == len(raw)
    assert json.loads(raw[8:8 + n])["a.f32"]["dtype"] == "F32"


@pytest.mark.parametrize("dtype,code", [(np.float32, "F32"), (ml_dtypes.bfloat16, "BF16"), (np.float16, "F16"),
                                        (np.int64, "I64"), (np.int32, "I32"), (np.bool_, "BOOL")])
def test_dtype_codes(tmp_path, dtype, code):
    path = save_safetensors(tmp_path / "x.safetensors", {"t": np.ones((2,), dtype)})
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert json.loads(path.read_bytes()[8:8 + n])["t"]["dtype"] == code
    assert read_header(path).tensors["t"].info.dtype == np.dtype(dtype)
