"""A deterministic stand-in for big_vision's VQ-VAE mask encoder: mask in its box -> 16 `<seg>` codes.

big_vision makes segmentation targets with the VQ-VAE *encoder*, whose weights pg2edge
does not model. This stand-in keeps the target's shape (16 codes in [0, 128)) and makes
it learnable and invertible: the box is cut into 4x4 cells (row-major), each cell's
covered fraction f is quantized to level round(7 f) in 0..7, and cell k gets code
`16 * level + k`. The 128 codes are thus 8 levels x 16 cells, each code used by one cell
only. `decode_codes` inverts it to a 64x64 map in [-1, 1] (positive where the coverage,
interpolated between cell centres, exceeds one half), the output contract of the real
VAE decoder, so `postprocess.attach_masks` accepts it. 16 cells bound the mask IoU of
perfect codes: ~0.6 for a star, ~0.8-0.9 for triangles, diamonds, circles, 1.0 for
squares. The published `vae-oid.npz` decoder does NOT understand these codes.
"""

from __future__ import annotations

import numpy as np

from pg2edge.postprocess import MASK_SIZE, SEG_CODES_PER_OBJECT

GRID = 4  # 4 x 4 cells = SEG_CODES_PER_OBJECT
LEVELS = 8  # coverage levels; LEVELS * SEG_CODES_PER_OBJECT = 128 codes


def coverage_grid(mask_hw: np.ndarray) -> np.ndarray:
    """Exact covered fraction of each of 4x4 equal cells of a box-cropped mask: float64 [4, 4]."""
    m = np.asarray(mask_hw, dtype=np.float64)
    if m.ndim != 2 or 0 in m.shape:
        raise ValueError(f"mask: expected a non-empty 2-D array, found shape {m.shape}")
    h, w = m.shape
    # Repeating every pixel 4x makes the cell borders fall on pixel borders: plain block means are exact.
    fine = np.repeat(np.repeat(m, GRID, axis=0), GRID, axis=1)
    return fine.reshape(GRID, h, GRID, w).mean(axis=(1, 3))


def encode_mask(mask_hw: np.ndarray) -> tuple[int, ...]:
    """16 codes for a mask already cropped to its box (row-major cells)."""
    levels = np.rint(coverage_grid(mask_hw) * (LEVELS - 1)).astype(int).reshape(-1)
    return tuple(int(16 * level + cell) for cell, level in enumerate(levels))


def code_levels(codes_n16: np.ndarray) -> np.ndarray:
    """Coverage level (0..7) each code stands for, ignoring which cell it was emitted in: int [N, 16]."""
    codes = np.asarray(codes_n16, dtype=np.int64)
    if codes.ndim != 2 or codes.shape[1] != SEG_CODES_PER_OBJECT:
        raise ValueError(f"codes: expected [N, {SEG_CODES_PER_OBJECT}], found shape {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= LEVELS * SEG_CODES_PER_OBJECT):
        raise ValueError(f"codes: expected values in [0, {LEVELS * SEG_CODES_PER_OBJECT})")
    return codes // SEG_CODES_PER_OBJECT


def _upsample_weights(size: int) -> np.ndarray:
    """Linear interpolation between cell centres (edges clamped): float64 [size, 4]."""
    centres = (np.arange(size) + 0.5) * GRID / size - 0.5
    return np.stack([np.interp(centres, np.arange(GRID), np.eye(GRID)[k]) for k in range(GRID)], axis=1)


def decode_codes(codes_n16: np.ndarray) -> np.ndarray:
    """Stand-in decoder, a drop-in `decode_fn` for `attach_masks`: int [N, 16] -> float32 [N, 64, 64] in [-1, 1].

    Coverage is interpolated bilinearly between cell centres, so after the threshold at 0
    the mask is where interpolated coverage exceeds one half: smoother than blocky cells.
    """
    coverage = code_levels(codes_n16).reshape(-1, GRID, GRID) / (LEVELS - 1)
    w = _upsample_weights(MASK_SIZE)
    up = np.einsum("ij,njk,lk->nil", w, coverage, w)
    return (2.0 * up - 1.0).astype(np.float32)
