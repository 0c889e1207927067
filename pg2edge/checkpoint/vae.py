"""big_vision's mask VQ-VAE (`vae-oid.npz`): read, write and convert, numpy only.

The published file is a PyTorch state dict saved with `np.savez`: the codebook
`_vq_vae._embedding` [128, D] (D = 512 in the published file; read from the
file here), the decoder `decoder.{0,2.net.{0,2,4},3.net.{0,2,4},4,6,8,10,12}`
and an `encoder.*` that only training-data preparation uses (ignored on load,
passed through on write). Conv weights are [out, in, kh, kw]; ConvTranspose
weights [in, out, kh, kw]; both become the JAX tree by `transpose(2, 3, 1, 0)`
exactly as big_vision's `segmentation._get_params` does, giving its Flax names
(`Conv_0`, `ResBlock_{0,1}/Conv_{0,1,2}`, `ConvTranspose_{0..3}`, `Conv_1`,
`_embeddings`) and kernels [kh, kw, in, out] (ConvTranspose: [kh, kw, out, in],
Flax's `transpose_kernel=True` layout).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pg2edge.checkpoint.npz import iter_npz, npz_index, write_npz
from pg2edge.checkpoint.validate import FLOAT_DTYPES, check_tensor, fail

NUM_CODES = 128
DEFAULT_EMBED_DIM = 512
CODEBOOK_KEY = "_vq_vae._embedding"
CODEBOOK_PARAM = "_embeddings"
_TORCH_TO_JAX = (2, 3, 1, 0)  # [o,i,h,w] -> [h,w,i,o]; [i,o,h,w] -> [h,w,o,i]
_JAX_TO_TORCH = (3, 2, 0, 1)
_STATE_DICT_PREFIXES = ("decoder.", "encoder.")

Shape = tuple[int, ...]

# (state-dict prefix, param-tree path, transposed?, in channels (None = D), out channels, kernel size)
_LAYERS: tuple[tuple[str, tuple[str, ...], bool, int | None, int, int], ...] = (
    ("decoder.0", ("Conv_0",), False, None, 128, 1),
    ("decoder.2.net.0", ("ResBlock_0", "Conv_0"), False, 128, 128, 3),
    ("decoder.2.net.2", ("ResBlock_0", "Conv_1"), False, 128, 128, 3),
    ("decoder.2.net.4", ("ResBlock_0", "Conv_2"), False, 128, 128, 1),
    ("decoder.3.net.0", ("ResBlock_1", "Conv_0"), False, 128, 128, 3),
    ("decoder.3.net.2", ("ResBlock_1", "Conv_1"), False, 128, 128, 3),
    ("decoder.3.net.4", ("ResBlock_1", "Conv_2"), False, 128, 128, 1),
    ("decoder.4", ("ConvTranspose_0",), True, 128, 128, 4),
    ("decoder.6", ("ConvTranspose_1",), True, 128, 64, 4),
    ("decoder.8", ("ConvTranspose_2",), True, 64, 32, 4),
    ("decoder.10", ("ConvTranspose_3",), True, 32, 16, 4),
    ("decoder.12", ("Conv_1",), False, 16, 1, 1),
)


def state_dict_shapes(embed_dim: int = DEFAULT_EMBED_DIM) -> dict[str, Shape]:
    """Every decoder key of `vae-oid.npz` and its PyTorch shape."""
    shapes: dict[str, Shape] = {CODEBOOK_KEY: (NUM_CODES, embed_dim)}
    for prefix, _, transposed, cin, cout, k in _LAYERS:
        cin = embed_dim if cin is None else cin
        shapes[f"{prefix}.weight"] = (cin, cout, k, k) if transposed else (cout, cin, k, k)
        shapes[f"{prefix}.bias"] = (cout,)
    return shapes


def _get(tree: Mapping, path: tuple[str, ...], source: object) -> Mapping:
    node = tree
    for name in path:
        if not isinstance(node, Mapping) or name not in node:
            raise fail(source, "missing from the VAE param tree", key="/".join(path))
        node = node[name]
    return node


def to_params(state_dict: Mapping[str, np.ndarray]) -> dict:
    """PyTorch state dict -> the nested JAX tree `pg2edge.model.vqvae` takes (float32)."""
    params: dict = {CODEBOOK_PARAM: np.asarray(state_dict[CODEBOOK_KEY], np.float32)}
    for prefix, path, _, _, _, _ in _LAYERS:
        node = params
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = {"kernel": np.asarray(state_dict[f"{prefix}.weight"], np.float32).transpose(_TORCH_TO_JAX),
                          "bias": np.asarray(state_dict[f"{prefix}.bias"], np.float32)}
    return params


def to_state_dict(params: Mapping, source: object = "<vae params>") -> dict[str, np.ndarray]:
    """The JAX tree -> PyTorch state-dict keys and layouts (inverse of `to_params`)."""
    out = {CODEBOOK_KEY: np.asarray(_get(params, (CODEBOOK_PARAM,), source), np.float32)}
    for prefix, path, _, _, _, _ in _LAYERS:
        layer = _get(params, path, source)
        for name in ("kernel", "bias"):
            if name not in layer:
                raise fail(source, "missing from the VAE param tree", key="/".join(path + (name,)))
        kernel = np.asarray(layer["kernel"], np.float32)
        if kernel.ndim != 4:
            raise fail(source, f"expected a 4-D kernel, found shape {kernel.shape}", key="/".join(path + ("kernel",)))
        out[f"{prefix}.weight"] = kernel.transpose(_JAX_TO_TORCH)
        out[f"{prefix}.bias"] = np.asarray(layer["bias"], np.float32)
    return out


def _embed_dim(source: object, shape: Shape) -> int:
    if len(shape) != 2 or shape[0] != NUM_CODES or shape[1] < 1:
        raise fail(source, f"expected shape ({NUM_CODES}, D), found {tuple(shape)}", key=CODEBOOK_KEY)
    return int(shape[1])


def load_vae(path: str | os.PathLike) -> dict:
    """Read `vae-oid.npz` (never unpickling) into the JAX param tree, float32."""
    path = Path(path)
    index = npz_index(path)
    if CODEBOOK_KEY not in index:
        raise fail(path, f"missing (expected the codebook, shape ({NUM_CODES}, D))", key=CODEBOOK_KEY)
    expected = state_dict_shapes(_embed_dim(path, index[CODEBOOK_KEY].shape))
    for key, shape in expected.items():
        if key not in index:
            raise fail(path, f"missing (expected shape {shape})", key=key)
        check_tensor(path, key, index[key], shape)
    return to_params(dict(iter_npz(path, expected)))


def _as_state_dict(params_or_state_dict: Mapping, source: object) -> dict[str, np.ndarray]:
    """Accept either layout; validate every decoder tensor against the real shapes."""
    if not isinstance(params_or_state_dict, Mapping):
        raise fail(source, f"expected a VAE param tree or state dict, found {type(params_or_state_dict).__name__}")
    if any(str(k) == CODEBOOK_KEY or str(k).startswith(_STATE_DICT_PREFIXES) for k in params_or_state_dict):
        state = {str(k): np.asarray(v) for k, v in params_or_state_dict.items()}
    else:
        state = to_state_dict(params_or_state_dict, source)
    if CODEBOOK_KEY not in state:
        raise fail(source, f"missing (expected shape ({NUM_CODES}, D))", key=CODEBOOK_KEY)
    expected = state_dict_shapes(_embed_dim(source, state[CODEBOOK_KEY].shape))
    for key, arr in state.items():
        if key in expected:
            if tuple(arr.shape) != expected[key]:
                raise fail(source, f"expected shape {expected[key]}, found {tuple(arr.shape)}", key=key)
        elif not key.startswith("encoder."):
            raise fail(source, "unexpected key (expected decoder, codebook or encoder.* keys)", key=key)
        if arr.dtype.kind != "f" and arr.dtype not in FLOAT_DTYPES:
            raise fail(source, f"expected a float array, found {arr.dtype}", key=key)
    missing = [k for k in expected if k not in state]
    if missing:
        raise fail(source, f"missing (expected shape {expected[missing[0]]})", key=missing[0])
    return {k: v.astype(np.float32) for k, v in state.items()}


def write_vae(path: str | os.PathLike, params_or_state_dict: Mapping) -> Path:
    """Write a real-format `vae-oid.npz` (PyTorch keys and layouts, float32) atomically."""
    path = Path(path)
    return write_npz(path, _as_state_dict(params_or_state_dict, path))


def random_vae(seed: int = 0, embed_dim: int = DEFAULT_EMBED_DIM) -> dict:
    """Random weights in the JAX tree with the real shapes, scaled so activations stay O(1)."""
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {CODEBOOK_KEY: rng.normal(0.0, 1.0, (NUM_CODES, embed_dim))}
    for prefix, _, transposed, cin, cout, k in _LAYERS:
        cin = embed_dim if cin is None else cin
        fan_in = cin * (k * k // 4 if transposed else k * k)  # a stride-2 4x4 deconv sees 2x2 taps per output
        shape = (cin, cout, k, k) if transposed else (cout, cin, k, k)
        state[f"{prefix}.weight"] = rng.normal(0.0, np.sqrt(1.0 / fan_in), shape)
        state[f"{prefix}.bias"] = rng.normal(0.0, 0.05, (cout,))
    return to_params({k: v.astype(np.float32) for k, v in state.items()})
