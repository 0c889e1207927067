"""The mask decoder against two independent references: PyTorch modules loaded from the written
`vae-oid.npz` state dict, and Flax `nn.ConvTranspose(padding=2, transpose_kernel=True)` as big_vision runs it."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from pg2edge.checkpoint.vae import load_vae, random_vae, write_vae
from pg2edge.model import vqvae
from pg2edge.model.vqvae import conv_transpose_2x

EMBED_DIM = 32  # small codebook width keeps the references fast; the real file has 512


@functools.cache
def _jitted():
    import jax

    return jax.jit(vqvae.decode_masks)


def decode_masks(params, codes):
    """The model function, compiled once: every test below uses the same shapes."""
    return _jitted()(params, codes)


@pytest.fixture(scope="module")
def vae_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vae") / "vae-oid.npz"
    return write_vae(path, random_vae(seed=3, embed_dim=EMBED_DIM))


@pytest.fixture(scope="module")
def codes() -> np.ndarray:
    rs = np.random.RandomState(0)
    return np.concatenate([rs.randint(0, 128, (3, 16)), [[0] * 16], [[127] * 16]]).astype(np.int32)


def _torch_decoder(npz_path):
    """nn.Sequential with the exact `decoder.N` / `net.N` names, loaded strictly from the file."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class ResBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 128, 1))

        def forward(self, x):
            return x + self.net(x)

    class VQVAE(nn.Module):
        def __init__(self):
            super().__init__()
            self._vq_vae = nn.Module()
            self._vq_vae._embedding = nn.Parameter(torch.zeros(128, EMBED_DIM))
            self.decoder = nn.Sequential(
                nn.Conv2d(EMBED_DIM, 128, 1), nn.ReLU(), ResBlock(), ResBlock(),
                nn.ConvTranspose2d(128, 128, 4, stride=2, padding=1), nn.ReLU(),
                nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1), nn.ReLU(),
                nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),
                nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(16, 1, 1))

        def forward(self, codes):
            x = self._vq_vae._embedding[codes].reshape(codes.shape[0], 4, 4, -1).permute(0, 3, 1, 2)
            return self.decoder(x)[:, 0]

    model = VQVAE()
    with np.load(npz_path, allow_pickle=False) as f:
        model.load_state_dict({k: torch.from_numpy(f[k]) for k in f.files}, strict=True)
    return model, torch


def test_shapes_dtype_and_range(codes):
    masks = np.asarray(decode_masks(random_vae(seed=0, embed_dim=EMBED_DIM), codes))
    assert masks.shape == (len(codes), 64, 64) and masks.dtype == np.float32
    assert np.isfinite(masks).all() and np.abs(masks).max() < 10
    assert not np.allclose(masks[0], masks[1])  # codes matter


def test_matches_pytorch_state_dict_reference(vae_file, codes):
    model, torch = _torch_decoder(vae_file)
    with torch.no_grad():
        expected = model(torch.from_numpy(codes).long()).numpy()
    got = np.asarray(decode_masks(load_vae(vae_file), codes))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert np.abs(expected).max() > 0.1  # not a vacuous comparison


def test_matches_flax_conv_transpose_as_big_vision_runs_it(vae_file, codes):
    """big_vision's decoder: nn.Conv / nn.ConvTranspose(padding=2, transpose_kernel=True), its param names."""
    nn = pytest.importorskip("flax.linen")
    import jax
    import jax.numpy as jnp

    class ResBlock(nn.Module):
        @nn.compact
        def __call__(self, x):
            y = nn.relu(nn.Conv(128, (3, 3), padding=1)(x))
            y = nn.relu(nn.Conv(128, (3, 3), padding=1)(y))
            return nn.Conv(128, (1, 1), padding=0)(y) + x

    class Decoder(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(128, (1, 1), padding=0)(x))
            for _ in range(2):  # a loop, as big_vision: creation order names ResBlock_0 then ResBlock_1
                x = ResBlock()(x)
            for features in (128, 64, 32, 16):
                x = nn.relu(nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding=2, transpose_kernel=True)(x))
            return nn.Conv(1, (1, 1), padding=0)(x)

    params = load_vae(vae_file)
    tree = {k: v for k, v in params.items() if k != "_embeddings"}
    with jax.default_matmul_precision("highest"):
        grid = jnp.take(params["_embeddings"], codes.reshape(-1), axis=0).reshape(len(codes), 4, 4, -1)
        expected = np.asarray(Decoder().apply({"params": tree}, grid))[..., 0]
    np.testing.assert_allclose(np.asarray(decode_masks(params, codes)), expected, atol=1e-4, rtol=0)


def test_conv_transpose_matches_lax_on_odd_sizes():
    import jax

    rs = np.random.RandomState(1)
    x = rs.randn(2, 3, 5, 7).astype(np.float32)
    k = rs.randn(4, 4, 6, 7).astype(np.float32)  # [kh, kw, out, in]
    b = rs.randn(6).astype(np.float32)
    expected = jax.lax.conv_transpose(x, k, (2, 2), ((2, 2), (2, 2)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      transpose_kernel=True, precision=jax.lax.Precision.HIGHEST) + b
    np.testing.assert_allclose(np.asarray(conv_transpose_2x(x, k, b)), np.asarray(expected), atol=1e-5)


def test_vae_part_traces_and_runs_in_onnxruntime(codes):
    """The exported graph needs no conv/gather lowering and matches the model."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from pg2edge.export.onnx_export import build_model, op_histogram
    from pg2edge.export.vae_part import vae_part

    params = random_vae(seed=0, embed_dim=EMBED_DIM)
    part = vae_part(batch=len(codes))
    assert part.name == "vae_decoder"
    assert [(s.name, s.shape, s.dtype) for s in part.inputs] == [("seg_codes", (len(codes), 16), "int32")]
    assert [(s.name, s.shape, s.dtype) for s in part.outputs] == [("masks", (len(codes), 64, 64), "float32")]
    model = build_model(part, params)
    assert not {"Conv", "ConvTranspose", "Gather"} & set(op_histogram(model))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(["masks"], {"seg_codes": codes})
    np.testing.assert_allclose(got, np.asarray(decode_masks(params, codes)), atol=1e-5)
