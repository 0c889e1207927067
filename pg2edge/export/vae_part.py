"""The mask decoder as one more exported graph part, so the runtime turns `<seg>` codes into masks.

Its weights are the VQ-VAE tree (`pg2edge.checkpoint.vae.load_vae`), not the
PaliGemma params; exporters trace `fn` with them bound like any other part. The
traced graph uses only dot_general, concatenate, slice, reshape, transpose,
broadcast_in_dim, eq, convert_element_type, add and max (see
`pg2edge.model.vqvae`): no convolution or gather op.
"""

from __future__ import annotations

from pg2edge.export.split import Part, TensorSpec
from pg2edge.model import vqvae

SEG_CODES_PER_OBJECT = vqvae.CODE_GRID * vqvae.CODE_GRID


def vae_part(batch: int = 1) -> Part:
    """seg_codes int32 [B,16] -> masks float32 [B,64,64] (threshold at 0)."""
    if batch < 1:
        raise ValueError(f"vae_part: batch must be >= 1, found {batch}")

    def fn(params, seg_codes):
        return (vqvae.decode_masks(params, seg_codes),)

    size = vqvae.MASK_SIZE
    return Part("vae_decoder", fn, (TensorSpec("seg_codes", (batch, SEG_CODES_PER_OBJECT), "int32"),),
                (TensorSpec("masks", (batch, size, size), "float32"),))
