"""`vae-oid.npz`: the real key layout, round trips in both layouts, and one-line errors for bad files."""

from __future__ import annotations

import pathlib
import pickle

import numpy as np
import pytest
from ckpt_helpers import assert_one_line_error

from pg2edge.checkpoint.vae import (CODEBOOK_KEY, load_vae, random_vae, state_dict_shapes, to_params,
                                    to_state_dict, write_vae)

EMBED_DIM = 16


def _trees_equal(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_trees_equal(a[k], b[k]) for k in a)
    return np.array_equal(a, b) and np.asarray(a).dtype == np.asarray(b).dtype


def _error(path, *needles, call=load_vae) -> str:
    return assert_one_line_error(path, *needles, call=call)


@pytest.fixture()
def state() -> dict[str, np.ndarray]:
    return to_state_dict(random_vae(seed=0, embed_dim=EMBED_DIM))


def test_real_key_layout():
    shapes = state_dict_shapes(512)
    assert shapes[CODEBOOK_KEY] == (128, 512)
    assert shapes["decoder.0.weight"] == (128, 512, 1, 1)
    assert shapes["decoder.2.net.0.weight"] == (128, 128, 3, 3) and shapes["decoder.3.net.4.weight"] == (128, 128, 1, 1)
    assert [shapes[f"decoder.{i}.weight"] for i in (4, 6, 8, 10)] == [
        (128, 128, 4, 4), (128, 64, 4, 4), (64, 32, 4, 4), (32, 16, 4, 4)]  # ConvTranspose2d: [in, out, kh, kw]
    assert shapes["decoder.12.weight"] == (1, 16, 1, 1) and shapes["decoder.12.bias"] == (1,)
    assert len(shapes) == 1 + 2 * 12


def test_random_vae_has_big_vision_tree_and_kernel_layouts():
    p = random_vae(seed=1)
    assert sorted(p) == sorted(["_embeddings", "Conv_0", "ResBlock_0", "ResBlock_1", "ConvTranspose_0",
                                "ConvTranspose_1", "ConvTranspose_2", "ConvTranspose_3", "Conv_1"])
    assert p["_embeddings"].shape == (128, 512) and p["Conv_0"]["kernel"].shape == (1, 1, 512, 128)
    assert p["ConvTranspose_1"]["kernel"].shape == (4, 4, 64, 128)  # [kh, kw, out, in]
    assert sorted(p["ResBlock_1"]) == ["Conv_0", "Conv_1", "Conv_2"]
    assert _trees_equal(random_vae(seed=1), p) and not _trees_equal(random_vae(seed=2), p)


def test_layouts_transpose_like_big_vision(state):
    params = to_params(state)
    w = state["decoder.6.weight"]  # [in, out, kh, kw]
    np.testing.assert_array_equal(params["ConvTranspose_1"]["kernel"], np.transpose(w, (2, 3, 1, 0)))
    assert _trees_equal(to_state_dict(params), state)


def test_write_load_round_trip_from_either_layout(tmp_path, state):
    params = to_params(state)
    a = write_vae(tmp_path / "a.npz", params)
    b = write_vae(tmp_path / "b.npz", state)
    assert _trees_equal(load_vae(a), params) and _trees_equal(load_vae(b), params)
    with np.load(a, allow_pickle=False) as f:
        assert sorted(f.files) == sorted(state_dict_shapes(EMBED_DIM))
        assert all(f[k].dtype == np.float32 for k in f.files)


def test_encoder_keys_pass_through_and_are_ignored_on_load(tmp_path, state):
    state["encoder.0.weight"] = np.ones((64, 1, 4, 4), np.float32)
    path = write_vae(tmp_path / "with-encoder.npz", state)
    with np.load(path, allow_pickle=False) as f:
        assert "encoder.0.weight" in f.files
    assert _trees_equal(load_vae(path), to_params(state))


def test_bfloat16_file_loads_as_float32(tmp_path, state):
    import ml_dtypes

    from pg2edge.checkpoint.npz import write_npz

    path = write_npz(tmp_path / "bf16.npz", state, dtype=ml_dtypes.bfloat16)
    loaded = load_vae(path)
    assert loaded["Conv_1"]["kernel"].dtype == np.float32
    np.testing.assert_allclose(loaded["_embeddings"], state[CODEBOOK_KEY], rtol=1e-2)


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path, state):
    path = tmp_path / "vae.npz"
    write_vae(path, state)
    bad = dict(state)
    bad["decoder.4.bias"] = np.zeros(3, np.float32)
    _error(path, "decoder.4.bias", call=lambda p: write_vae(p, bad))
    assert _trees_equal(load_vae(path), to_params(state))
    assert [p.name for p in tmp_path.iterdir()] == ["vae.npz"]


# -- bad inputs -------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    _error(tmp_path / "nope.npz", "no such file")


def test_pickle_is_refused_without_unpickling(tmp_path):
    sentinel = tmp_path / "unpickled"
    path = tmp_path / "vae.npz"
    path.write_bytes(pickle.dumps(_Boom(sentinel)))
    _error(path, "pickle")
    assert not sentinel.exists()


def test_object_array_member_is_refused(tmp_path, state):
    path = tmp_path / "objects.npz"
    members = dict(state)
    members["decoder.0.bias"] = np.array([object()] * 128, dtype=object)
    np.savez(path, **members)
    _error(path, "decoder.0.bias", "pickled")


def test_missing_key(tmp_path, state):
    path = tmp_path / "missing.npz"
    np.savez(path, **{k: v for k, v in state.items() if k != "decoder.8.weight"})
    _error(path, "'decoder.8.weight'", "missing", "(64, 32, 4, 4)")


def test_missing_codebook(tmp_path, state):
    path = tmp_path / "no-codebook.npz"
    np.savez(path, **{k: v for k, v in state.items() if k != CODEBOOK_KEY})
    _error(path, CODEBOOK_KEY, "missing")


@pytest.mark.parametrize("key, shape, expected", [
    ("decoder.10.weight", (16, 32, 4, 4), "expected shape (32, 16, 4, 4), found (16, 32, 4, 4)"),
    ("decoder.0.weight", (128, EMBED_DIM + 1, 1, 1), f"expected shape (128, {EMBED_DIM}, 1, 1)"),
    (CODEBOOK_KEY, (64, EMBED_DIM), "expected shape (128, D), found (64, 16)"),
])
def test_wrong_shape(tmp_path, state, key, shape, expected):
    path = tmp_path / "shape.npz"
    state[key] = np.zeros(shape, np.float32)
    np.savez(path, **state)
    _error(path, repr(key), expected)


def test_wrong_dtype(tmp_path, state):
    path = tmp_path / "dtype.npz"
    state["decoder.12.bias"] = np.zeros(1, np.int32)
    np.savez(path, **state)
    _error(path, "decoder.12.bias", "int32")


def test_truncated_file(tmp_path, state):
    good = write_vae(tmp_path / "good.npz", state)
    path = tmp_path / "truncated.npz"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _error(path)


def test_write_rejects_unknown_keys_and_bad_trees(tmp_path, state):
    _error(tmp_path / "x.npz", "'decoder.99.weight'", "unexpected",
           call=lambda p: write_vae(p, {**state, "decoder.99.weight": np.zeros(1, np.float32)}))
    params = to_params(state)
    del params["ResBlock_1"]["Conv_2"]
    _error(tmp_path / "y.npz", "ResBlock_1/Conv_2", call=lambda p: write_vae(p, params))


class _Boom:
    """Unpickling this creates a file: proof that nothing was unpickled if the file never appears."""

    def __init__(self, sentinel: pathlib.Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return pathlib.Path.touch, (self.sentinel,)
