"""big_vision .npz and HF safetensors (single and sharded) of the same params load to identical trees."""

from __future__ import annotations

import mmap
import tracemalloc

import ml_dtypes
import numpy as np
import pytest

from pg2edge.checkpoint import (describe, iter_checkpoint, load_checkpoint, random_params, write_hf,
                                write_npz)
from pg2edge.checkpoint.hf_mapping import hf_rules
from pg2edge.config import get_config
from pg2edge.param_layout import param_count, param_shapes

from ckpt_helpers import DTYPES, assert_trees_equal, cast

FORMATS = ("npz", "safetensors", "safetensors-sharded")


def _holds_memmap(arr: object) -> bool:
    while arr is not None:
        if isinstance(arr, (np.memmap, mmap.mmap)):
            return True
        arr = getattr(arr, "base", None)
    return False


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_loads_the_written_params_exactly(written, cfg, params, fmt, dtype_name):
    got_cfg, got = load_checkpoint(written[fmt, dtype_name])
    assert got_cfg == cfg
    assert_trees_equal(got, cast(params, DTYPES[dtype_name]))


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_formats_agree_with_each_other(written, dtype_name):
    trees = [load_checkpoint(written[fmt, dtype_name])[1] for fmt in FORMATS]
    for other in trees[1:]:
        assert_trees_equal(other, trees[0])


def test_sharded_write_really_shards(written):
    path = written["safetensors-sharded", "float32"]
    shards = sorted(p.name for p in path.glob("model-*.safetensors"))
    assert len(shards) > 2
    assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert not (path / "model.safetensors").exists()


def test_npz_stores_bfloat16_as_void_like_big_vision(written, cfg, params):
    with np.load(written["npz", "bfloat16"], allow_pickle=False) as npz:
        assert npz.files == list(param_shapes(cfg))
        raw = npz["img/embedding/kernel"]
    assert raw.dtype.kind == "V" and raw.dtype.itemsize == 2
    np.testing.assert_array_equal(raw.view(ml_dtypes.bfloat16),
                                  params["img/embedding/kernel"].astype(ml_dtypes.bfloat16))


def test_params_prefix_is_accepted(tmp_path, cfg, params):
    path = write_npz(tmp_path / "prefixed.npz", {f"params/{k}": v for k, v in params.items()})
    assert_trees_equal(load_checkpoint(path, cfg)[1], params)


def test_np_savez_output_loads(tmp_path, cfg, params):
    """A file written by plain np.savez (what big_vision does) reads the same."""
    path = tmp_path / "savez.npz"
    bf16 = cast(params, np.dtype(ml_dtypes.bfloat16))
    np.savez(path, **bf16)
    assert_trees_equal(load_checkpoint(path)[1], bf16)


@pytest.mark.parametrize("fmt", FORMATS)
def test_load_casts_on_request(written, params, fmt):
    _, got = load_checkpoint(written[fmt, "bfloat16"], dtype=np.float32)
    want = cast(cast(params, np.dtype(ml_dtypes.bfloat16)), np.dtype(np.float32))
    assert_trees_equal(got, want)
    _, got = load_checkpoint(written[fmt, "float32"], dtype="bfloat16")
    assert_trees_equal(got, cast(params, np.dtype(ml_dtypes.bfloat16)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_iter_streams_every_key_once_in_layout_order(written, cfg, params, fmt):
    stream = iter_checkpoint(written[fmt, "float32"], cfg)
    keys = []
    for key, arr in stream:
        keys.append(key)
        np.testing.assert_array_equal(arr, params[key])
        assert not _holds_memmap(arr), key  # safe after the file is closed or replaced
    assert keys == list(param_shapes(cfg))


@pytest.fixture(scope="module")
def wide(tmp_path_factory, cfg):
    """A non-variant config whose MLP arrays dominate, written in every format (iter takes any cfg)."""
    wide_cfg = cfg.replace(depth=8, mlp_dim=2048)
    params = random_params(wide_cfg, 0)
    root = tmp_path_factory.mktemp("wide")
    paths = {"npz": write_npz(root / "w.npz", params), "safetensors": write_hf(root / "hf", params, wide_cfg),
             "safetensors-sharded": write_hf(root / "hfs", params, wide_cfg, shard_bytes=4 << 20)}
    return wide_cfg, paths


@pytest.mark.parametrize("fmt", FORMATS)
def test_iter_holds_one_tensor_at_a_time(wide, fmt):
    """Streaming peaks at the largest array plus a small constant, not the model or a second copy."""
    wide_cfg, paths = wide
    sizes = [int(np.prod(s)) * 4 for s in param_shapes(wide_cfg).values()]
    largest, slack = max(sizes), 2 << 20
    assert sum(sizes) > largest + 2 * slack  # materialising the whole model would fail the bound
    stream = iter_checkpoint(paths[fmt], wide_cfg)
    tracemalloc.start()
    try:
        for _key, arr in stream:
            del arr
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < largest + slack, (peak, largest)


def test_streaming_conversion_hf_to_npz(tmp_path, written, cfg, params):
    """iter_checkpoint feeds write_npz directly: a bounded-memory format converter."""
    out = write_npz(tmp_path / "converted.npz", iter_checkpoint(written["safetensors-sharded", "float32"], cfg),
                    dtype="bfloat16")
    assert_trees_equal(load_checkpoint(out)[1], cast(params, np.dtype(ml_dtypes.bfloat16)))


def test_write_read_write_is_byte_stable(tmp_path, written, cfg):
    _, tree = load_checkpoint(written["safetensors", "bfloat16"])
    again = write_hf(tmp_path / "again", tree, cfg)
    assert (again / "model.safetensors").read_bytes() == (written["safetensors", "bfloat16"]
                                                          / "model.safetensors").read_bytes()
    first = write_npz(tmp_path / "a.npz", tree)
    _, tree2 = load_checkpoint(first)
    assert_trees_equal(tree2, tree)


def test_hf_embedding_is_padded_with_zero_rows_and_cropped_on_read(written, cfg, params):
    from pg2edge.checkpoint.safetensors_io import read_safetensors

    tensors, metadata = read_safetensors(written["safetensors", "float32"] / "model.safetensors")
    embed = tensors["language_model.model.embed_tokens.weight"]
    V = cfg.text.vocab_size
    assert embed.shape == (V + 64, cfg.text.width)
    assert not embed[V:].any()
    np.testing.assert_array_equal(embed[:V], params["llm/embedder/input_embedding"])
    assert metadata == {"format": "pt"}
    assert "lm_head.weight" not in tensors and "language_model.lm_head.weight" not in tensors


def test_rules_cover_every_element_exactly_once(cfg):
    """Each big_vision array is partitioned by its HF tensors (no gaps, no overlaps)."""
    for key, shape in param_shapes(cfg).items():
        hits = np.zeros(shape, np.int32)
        for rule in hf_rules(cfg)[key]:
            hits[rule.index] += 1
        assert (hits == 1).all(), key


def test_random_params_are_deterministic_and_shaped(cfg):
    a, b, c = random_params(cfg, 3), random_params(cfg, 3), random_params(cfg, 4)
    assert_trees_equal(a, b)
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    assert {k: v.shape for k, v in a.items()} == param_shapes(cfg)
    ln = a["img/Transformer/encoderblock/LayerNorm_0/scale"]
    assert abs(float(ln.mean()) - 1.0) < 0.01  # LayerNorm multiplies by scale: near 1
    rms = a["llm/layers/pre_attention_norm/scale"]
    assert abs(float(rms.mean())) < 0.01  # RMSNorm multiplies by (1 + scale): near 0
    assert random_params(cfg, 3, dtype=ml_dtypes.bfloat16)["llm/final_norm/scale"].dtype == ml_dtypes.bfloat16


def test_describe_reports_variant_count_dtypes_size(written, cfg):
    info = describe(written["safetensors-sharded", "bfloat16"])
    n_hf = sum(len(rules) for rules in hf_rules(cfg).values())
    assert info["format"] == "safetensors-sharded"
    assert info["variant"] == "tiny-56"
    assert info["parameters"] == param_count(cfg)
    assert info["dtypes"] == {"bfloat16": n_hf} and info["tensors"] == n_hf
    files = list(written["safetensors-sharded", "bfloat16"].glob("*.safetensors"))
    assert info["file_bytes"] == sum(f.stat().st_size for f in files)


def test_other_tiny_resolution_round_trips(tmp_path):
    cfg112 = get_config("tiny", 112)
    p = random_params(cfg112, 1)
    got_cfg, got = load_checkpoint(write_hf(tmp_path / "hf", p, cfg112))
    assert got_cfg == cfg112
    assert_trees_equal(got, p)
