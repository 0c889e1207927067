"""PaliGemma's mask decoder: 16 `<segNNN>` codes -> a 64x64 mask in about [-1, 1].

The same network as big_vision's `evaluators/proj/paligemma/transfers/segmentation.py`
(UViM's VQ-VAE decoder, weights `vae-oid.npz`, see `pg2edge.checkpoint.vae`):
codebook lookup to a 4x4xD grid, conv1x1 -> 128 + ReLU, two residual blocks
(conv3x3-ReLU-conv3x3-ReLU-conv1x1, plus the input), four stride-2 4x4
transposed convs + ReLU to 128, 64, 32, 16 channels (8, 16, 32, 64 px), conv1x1
-> 1. No output activation: values are not clipped.

Every layer is written as padding-by-concatenation, slices and one matmul
(im2col), and the codebook lookup as a one-hot matmul, so the traced graph has
only dot_general / concatenate / slice / reshape / transpose / eq / max / add:
the ONNX lowering and TFLite need no convolution or gather op. A transposed
conv (stride 2, kernel 4, PyTorch padding 1 = Flax `padding=2,
transpose_kernel=True`) is its sub-pixel form: each of the 2x2 output phases is
a 2x2-tap conv of the input, packed into one 3x3 conv with 4x the output
channels and then interleaved (depth-to-space). Sums are the reference's up
to float reordering (~1e-6).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

NUM_CODES = 128
CODE_GRID = 4  # 16 codes = a 4x4 grid, raster order
MASK_SIZE = 64
_HIGHEST = jax.lax.Precision.HIGHEST  # f32 matmuls stay f32 on accelerators (no TF32/bf16 passes)

# Transposed conv, stride 2, kernel 4, padding 1: output row 2m + a reads input row m + t - 1
# (t = tap of a 3-row window) through kernel row `a + 3 - 2t` when that lies in [0, 4).
# _PHASE_TAP[t, a, k] = 1 selects that kernel row (column likewise).
_PHASE_TAP = np.zeros((3, 2, 4), np.float32)
for _t in range(3):
    for _a in range(2):
        if 0 <= _a + 3 - 2 * _t < 4:
            _PHASE_TAP[_t, _a, _a + 3 - 2 * _t] = 1.0


def embed_codes(codebook_kd: jax.Array, codes_b16: jax.Array) -> jax.Array:
    """Codes [B,16] -> codebook vectors on the 4x4 grid [B,4,4,D]; out-of-range codes give zeros."""
    num_codes, dim = codebook_kd.shape
    if codes_b16.ndim != 2 or codes_b16.shape[1] != CODE_GRID * CODE_GRID:
        raise ValueError(f"seg codes: expected shape [B, {CODE_GRID * CODE_GRID}], found {tuple(codes_b16.shape)}")
    one_hot = (codes_b16[..., None] == jnp.arange(num_codes, dtype=codes_b16.dtype)).astype(codebook_kd.dtype)
    x_bnd = jnp.einsum("bnk,kd->bnd", one_hot, codebook_kd, precision=_HIGHEST)
    return x_bnd.reshape(codes_b16.shape[0], CODE_GRID, CODE_GRID, dim)


def _pad_hw(x_bhwc: jax.Array, p: int) -> jax.Array:
    """Zero-pad height and width by `p` on each side (by concatenation: no `pad` primitive)."""
    b, h, w, c = x_bhwc.shape
    rows = jnp.zeros((b, p, w, c), x_bhwc.dtype)
    x = jnp.concatenate([rows, x_bhwc, rows], axis=1)
    cols = jnp.zeros((b, h + 2 * p, p, c), x_bhwc.dtype)
    return jnp.concatenate([cols, x, cols], axis=2)


def conv_same(x_bhwc: jax.Array, kernel_hwio: jax.Array, bias_o: jax.Array | None = None) -> jax.Array:
    """Stride-1 conv with an odd square kernel and 'same' zero padding, as im2col + one matmul."""
    k, _, cin, cout = kernel_hwio.shape
    b, h, w, _ = x_bhwc.shape
    if k == 1:
        patches = x_bhwc
    else:
        xp = _pad_hw(x_bhwc, k // 2)
        taps = [xp[:, dy:dy + h, dx:dx + w, :] for dy in range(k) for dx in range(k)]
        patches = jnp.concatenate(taps, axis=-1)  # [B,H,W,k*k*Cin], (dy, dx, cin) order = HWIO flattening
    y = jnp.einsum("bhwi,io->bhwo", patches, kernel_hwio.reshape(k * k * cin, cout), precision=_HIGHEST)
    return y if bias_o is None else y + bias_o


def _subpixel_kernel(kernel_hwoi: jax.Array) -> jax.Array:
    """A [4,4,Cout,Cin] stride-2 transposed-conv kernel as a [3,3,Cin,2*2*Cout] conv kernel (exact: 0/1 picks)."""
    _, _, cout, cin = kernel_hwoi.shape
    sel = jnp.asarray(_PHASE_TAP, kernel_hwoi.dtype)
    w = jnp.einsum("yak,xbl,kloi->yxiabo", sel, sel, kernel_hwoi, precision=_HIGHEST)
    return w.reshape(3, 3, cin, 4 * cout)


def conv_transpose_2x(x_bhwc: jax.Array, kernel_hwoi: jax.Array, bias_o: jax.Array) -> jax.Array:
    """PyTorch `ConvTranspose2d(k=4, stride=2, padding=1)`: [B,H,W,Cin] -> [B,2H,2W,Cout]."""
    b, h, w, _ = x_bhwc.shape
    cout = kernel_hwoi.shape[2]
    y = conv_same(x_bhwc, _subpixel_kernel(kernel_hwoi))  # [B,H,W,(a,b,Cout)]
    y = y.reshape(b, h, w, 2, 2, cout).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(b, 2 * h, 2 * w, cout) + bias_o


def _relu(x: jax.Array) -> jax.Array:
    return jnp.maximum(x, jnp.zeros((), x.dtype))


def _res_block(p: dict, x_bhwc: jax.Array) -> jax.Array:
    """conv3x3 - ReLU - conv3x3 - ReLU - conv1x1, plus the input (no ReLU after the sum)."""
    y = _relu(conv_same(x_bhwc, p["Conv_0"]["kernel"], p["Conv_0"]["bias"]))
    y = _relu(conv_same(y, p["Conv_1"]["kernel"], p["Conv_1"]["bias"]))
    return conv_same(y, p["Conv_2"]["kernel"], p["Conv_2"]["bias"]) + x_bhwc


def decode_masks(params: dict, codes_b16: jax.Array) -> jax.Array:
    """Seg codes int32 [B,16] in [0,128) -> masks float32 [B,64,64], threshold at 0 for the object."""
    codes_b16 = jnp.asarray(codes_b16, jnp.int32)
    x = embed_codes(jnp.asarray(params["_embeddings"], jnp.float32), codes_b16)
    x = _relu(conv_same(x, params["Conv_0"]["kernel"], params["Conv_0"]["bias"]))
    for i in range(2):
        x = _res_block(params[f"ResBlock_{i}"], x)
    for i in range(4):
        layer = params[f"ConvTranspose_{i}"]
        x = _relu(conv_transpose_2x(x, layer["kernel"], layer["bias"]))
    x = conv_same(x, params["Conv_1"]["kernel"], params["Conv_1"]["bias"])
    return x.reshape(x.shape[:3]).astype(jnp.float32)
