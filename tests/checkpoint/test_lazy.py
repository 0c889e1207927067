"""`lazy_checkpoint` gives exactly `load_checkpoint`'s values, the same errors, and reads one layer at a time."""

from __future__ import annotations

import shutil
import struct
import tracemalloc
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from ckpt_helpers import DTYPES

from pg2edge.checkpoint import (Lazy, LazyStack, describe, lazy_checkpoint, load_checkpoint, random_params,
                                write_hf, write_npz)
from pg2edge.checkpoint import lazy_sources
from pg2edge.checkpoint.lazy import is_stacked, lazy_random_params
from pg2edge.config import get_config
from pg2edge.errors import CheckpointError

READ_DTYPES = (np.float32, None, "bfloat16")
MEMORY_SLACK = 16 * 1024  # Python objects, file handle, numpy's cast buffers
SOURCES = ["npz-float32", "npz-bfloat16", "safetensors-float32", "safetensors-bfloat16"]


def _bytes_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, (what, got.dtype, got.shape, want.dtype, want.shape)
    got, want = np.ascontiguousarray(got), np.ascontiguousarray(want)  # Fortran-ordered members stay so
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8), err_msg=what)


def _assert_lazy_equals_load(path: Path, dtype: object, cfg=None) -> None:
    want_cfg, want = load_checkpoint(path, cfg, dtype)
    got_cfg, lazy = lazy_checkpoint(path, cfg, dtype)
    assert got_cfg == want_cfg and list(lazy) == list(want)
    for key, value in want.items():
        tensor = lazy[key]
        assert isinstance(tensor, LazyStack) == is_stacked(key), key
        assert (tensor.shape, tensor.dtype) == (value.shape, value.dtype), key
        if isinstance(tensor, LazyStack):
            layers = [tensor.layer(i).materialize() for i in range(tensor.shape[0])]
            _bytes_equal(np.stack(layers), value, f"{key} (layers)")
        _bytes_equal(tensor.materialize(), value, key)


@pytest.fixture(scope="module")
def npz_variants(tmp_path_factory, params) -> dict[str, Path]:
    """The same params as big_vision `.npz` files that take the fallback and prefix paths."""
    root = tmp_path_factory.mktemp("npz-variants")
    bf16 = {k: v.astype(ml_dtypes.bfloat16) for k, v in params.items()}
    np.savez_compressed(root / "deflated-f32.npz", **params)
    np.savez_compressed(root / "deflated-bf16.npz", **bf16)
    np.savez(root / "fortran.npz", **{k: np.asfortranarray(v) for k, v in params.items()})
    np.savez(root / "prefixed-bf16.npz", **{f"params/{k}": v for k, v in bf16.items()})
    return {p.stem: p for p in root.iterdir()}


@pytest.mark.parametrize("dtype", READ_DTYPES)
@pytest.mark.parametrize("stored", sorted(DTYPES))
@pytest.mark.parametrize("fmt", ["npz", "safetensors", "safetensors-sharded"])
def test_matches_load_checkpoint(written, fmt, stored, dtype):
    _assert_lazy_equals_load(written[fmt, stored], dtype)


@pytest.mark.parametrize("dtype", READ_DTYPES)
@pytest.mark.parametrize("variant", ["deflated-f32", "deflated-bf16", "fortran", "prefixed-bf16"])
def test_matches_load_checkpoint_other_npz_layouts(npz_variants, variant, dtype):
    _assert_lazy_equals_load(npz_variants[variant], dtype)


@pytest.mark.parametrize("fmt", ["npz", "safetensors-sharded"])
def test_conversion_in_small_chunks_matches(written, npz_variants, monkeypatch, fmt):
    """Many scratch chunks (an odd byte count, so the last is partial) give the same values."""
    monkeypatch.setattr(lazy_sources, "CHUNK_BYTES", 1000)
    _assert_lazy_equals_load(written[fmt, "bfloat16"], np.float32)
    _assert_lazy_equals_load(written[fmt, "float32"], "bfloat16")


def test_layers_are_private_copies(npz_variants):
    """Writing into a returned layer never changes the next read (the compressed cache included)."""
    _, want = load_checkpoint(npz_variants["deflated-f32"], dtype=np.float32)
    _, lazy = lazy_checkpoint(npz_variants["deflated-f32"])
    key = "llm/layers/mlp/linear"
    first = lazy[key].layer(1).materialize()
    first[...] = 7.0
    _bytes_equal(lazy[key].layer(1).materialize(), want[key][1], key)


def test_layer_index_is_checked(written):
    _, lazy = lazy_checkpoint(written["npz", "float32"])
    stack = lazy["llm/layers/mlp/linear"]
    np.testing.assert_array_equal(stack.layer(np.int64(3)).materialize(), stack.materialize()[3])
    for bad in (-1, stack.shape[0]):
        with pytest.raises(IndexError):
            stack.layer(bad)
        with pytest.raises(IndexError):
            stack.read_layer(bad)


def test_describe_agrees(written):
    cfg, lazy = lazy_checkpoint(written["safetensors", "bfloat16"], dtype=None)
    info = describe(written["safetensors", "bfloat16"])
    assert cfg.name == info["variant"] and set(info["dtypes"]) == {"bfloat16"}
    assert sum(int(np.prod(t.shape)) for t in lazy.values()) == info["parameters"]


# --- errors: the same CheckpointError as load_checkpoint, raised before any data is read --------------------


def _truncated_npz(tmp, written, params, cfg):
    data = written["npz", "float32"].read_bytes()
    (tmp / "cut.npz").write_bytes(data[: len(data) // 2])
    return tmp / "cut.npz"


def _pickled_member(tmp, written, params, cfg):
    np.savez(tmp / "pickled.npz", **dict(params, **{"img/head/bias": np.array([None], dtype=object)}))
    return tmp / "pickled.npz"


def _missing_key(tmp, written, params, cfg):
    return write_npz(tmp / "m.npz", {k: v for k, v in params.items() if k != "llm/layers/mlp/linear"})


def _extra_key(tmp, written, params, cfg):
    return write_npz(tmp / "x.npz", dict(params, **{"img/surprise": np.zeros(3, np.float32)}))


def _wrong_shape(tmp, written, params, cfg):
    return write_npz(tmp / "s.npz", dict(params, **{"img/head/bias": np.zeros(63, np.float32)}))


def _wrong_dtype(tmp, written, params, cfg):
    return write_npz(tmp / "d.npz", dict(params, **{"llm/layers/mlp/linear": np.zeros((4, 128, 64), np.int32)}))


def _unknown_variant(tmp, written, params, cfg):
    return write_npz(tmp / "odd.npz", random_params(cfg.replace(depth=3), 0))


def _missing_shard(tmp, written, params, cfg):
    path = shutil.copytree(written["safetensors-sharded", "float32"], tmp / "hf")
    sorted(path.glob("model-*.safetensors"))[1].unlink()
    return path


def _truncated_safetensors(tmp, written, params, cfg):
    data = (written["safetensors", "float32"] / "model.safetensors").read_bytes()
    (tmp / "cut.safetensors").write_bytes(data[:-1000])
    return tmp / "cut.safetensors"


def _hf_wrong_shape(tmp, written, params, cfg):
    bad = dict(params, **{"llm/layers/attn/kv_einsum/w": np.zeros((4, 2, 2, 64, 16), np.float32)})
    path = write_hf(tmp / "hf", bad, cfg)
    raw = (path / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    name = b'"language_model.model.layers.2.self_attn.k_proj.weight":{"dtype":"F32","shape":[32,64]'
    assert name in raw[8:8 + n]
    (path / "model.safetensors").write_bytes(raw.replace(name, name.replace(b"[32,64]", b"[64,32]")))
    return path


BAD_INPUTS = [_truncated_npz, _pickled_member, _missing_key, _extra_key, _wrong_shape, _wrong_dtype, _unknown_variant,
              _missing_shard, _truncated_safetensors, _hf_wrong_shape]


@pytest.mark.parametrize("make", BAD_INPUTS, ids=lambda f: f.__name__.strip("_"))
def test_bad_input_same_error_as_load_checkpoint(tmp_path, written, params, cfg, make):
    path = make(tmp_path, written, params, cfg)
    with pytest.raises(CheckpointError) as want:
        load_checkpoint(path)
    with pytest.raises(CheckpointError) as got:
        lazy_checkpoint(path)
    assert str(got.value) == str(want.value)


def test_wrong_cfg_same_error(written):
    other = get_config("tiny", 112)
    for fmt in ("npz", "safetensors-sharded"):
        with pytest.raises(CheckpointError) as want:
            load_checkpoint(written[fmt, "float32"], other)
        with pytest.raises(CheckpointError) as got:
            lazy_checkpoint(written[fmt, "float32"], other)
        assert str(got.value) == str(want.value)


def test_bad_dtype_request():
    with pytest.raises(CheckpointError, match="float32, bfloat16, float16"):
        lazy_checkpoint("unused.npz", dtype=np.int8)


def test_member_shorter_than_its_header_fails_at_open(tmp_path):
    """load_checkpoint finds this only when it reads the member; lazy_checkpoint, from the sizes, up front."""
    params = random_params(get_config("tiny"), 0)
    path = write_npz(tmp_path / "short.npz", params)
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    members["llm/final_norm/scale.npy"] = members["llm/final_norm/scale.npy"][:-4]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    prefix = f"{path}: key 'llm/final_norm/scale': expected a readable array, found corrupt data"
    with pytest.raises(CheckpointError) as want:
        load_checkpoint(path)
    with pytest.raises(CheckpointError) as got:
        lazy_checkpoint(path)
    assert str(want.value).startswith(prefix) and str(got.value).startswith(prefix)


def test_corrupt_deflated_member_fails_on_read(tmp_path, npz_variants):
    """Compressed members are decoded whole, so their CRC is still checked (stored ones: see load_checkpoint)."""
    path = Path(shutil.copy(npz_variants["deflated-f32"], tmp_path / "flip.npz"))
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("llm/embedder/input_embedding.npy")
    raw = bytearray(path.read_bytes())
    raw[info.header_offset + 100 + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    _, lazy = lazy_checkpoint(path)
    with pytest.raises(CheckpointError, match="'llm/embedder/input_embedding'"):
        lazy["llm/embedder/input_embedding"].materialize()


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_file_changed_after_validation(tmp_path, written, fmt):
    src = written[fmt, "float32"]
    path = Path(shutil.copy(src, tmp_path / "m.npz") if fmt == "npz" else shutil.copytree(src, tmp_path / "hf"))
    _, lazy = lazy_checkpoint(path)
    target = path if fmt == "npz" else path / "model.safetensors"
    target.write_bytes(target.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match="changed on disk since it was validated"):
        lazy["llm/layers/mlp/linear"].layer(0).materialize()


# --- memory: one layer costs about one layer --------------------------------------------------------------------


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """tiny with a wider MLP, so one layer (256-512 KiB) dwarfs Python's own allocations."""
    cfg = get_config("tiny").replace(mlp_dim=1024)
    params = random_params(cfg, 1)
    root = tmp_path_factory.mktemp("wide")
    paths = {"npz-float32": write_npz(root / "f32.npz", params),
             "npz-bfloat16": write_npz(root / "bf16.npz", params, dtype="bfloat16"),
             "safetensors-float32": write_hf(root / "hf-f32", params, cfg),
             "safetensors-bfloat16": write_hf(root / "hf-bf16", params, cfg, dtype="bfloat16",
                                              shard_bytes=256 * 1024)}
    return cfg, paths


def _peak(fn) -> tuple[np.ndarray, int]:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("key", ["llm/layers/mlp/gating_einsum", "llm/layers/mlp/linear",
                                 "llm/layers/attn/q_einsum/w", "llm/layers/attn/kv_einsum/w"])
def test_one_layer_allocates_about_one_layer(wide, source, key):
    cfg, paths = wide
    _, lazy = lazy_checkpoint(paths[source], cfg, np.float32)
    stack = lazy[key]
    layer = stack.layer(2)
    got, peak = _peak(layer.materialize)
    assert got.shape == stack.shape[1:] and peak >= got.nbytes
    assert peak < 2 * got.nbytes + MEMORY_SLACK, (peak, got.nbytes)
    assert got.nbytes * stack.shape[0] > 2 * got.nbytes + MEMORY_SLACK  # so reading it all would fail the bound


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("key", ["llm/layers/mlp/gating_einsum", "llm/layers/mlp/linear",
                                 "llm/embedder/input_embedding"])
def test_streamed_reads_cost_the_output_plus_one_chunk(wide, monkeypatch, source, key):
    """npz slices, HF transposes and the cropped HF embedding are read chunk by chunk straight into place."""
    cfg, paths = wide
    chunk = 16 * 1024
    monkeypatch.setattr(lazy_sources, "CHUNK_BYTES", chunk)
    _, lazy = lazy_checkpoint(paths[source], cfg, np.float32)
    tensor = lazy[key].layer(1) if is_stacked(key) else lazy[key]
    got, peak = _peak(tensor.materialize)
    assert got.nbytes >= 16 * chunk
    assert peak < got.nbytes + chunk + MEMORY_SLACK, (peak, got.nbytes)


# --- random init ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_lazy_random_params_agree_with_random_params(cfg, dtype):
    want = random_params(cfg, seed=3, dtype=dtype)
    lazy = lazy_random_params(cfg, seed=3, dtype=dtype)
    assert list(lazy) == list(want)
    for key, value in want.items():
        tensor = lazy[key]
        assert isinstance(tensor, Lazy) and (tensor.shape, tensor.dtype) == (value.shape, value.dtype)
        _bytes_equal(tensor.materialize(), value, key)
        if is_stacked(key):
            for i in range(tensor.shape[0]):
                _bytes_equal(tensor.layer(i).materialize(), value[i], f"{key}[{i}]")
