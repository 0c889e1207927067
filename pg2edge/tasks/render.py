"""Pixels of a shape image: a varied background, then each shape painted from its raster."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pg2edge.tasks.geometry import Raster, rasterize, tight_box
from pg2edge.tasks.scene import ShapeSpec
from pg2edge.tasks.segcodes import encode_mask
from pg2edge.tasks.vocab import BACKGROUNDS, COLORS

BACKGROUND_STYLES = ("solid", "gradient", "noise")


@dataclass(frozen=True)
class DrawnShape:
    """A painted shape with what the targets need: its tight box and its stand-in seg codes."""

    spec: ShapeSpec
    box_px: tuple[int, int, int, int]  # top, left, bottom, right (exclusive ends), pixels
    box_norm: tuple[float, float, float, float]  # y0, x0, y1, x1 in [0, 1]: PaliGemma's order
    seg_codes: tuple[int, ...]


def background(rng: np.random.Generator, res: int, noise_rng: np.random.Generator) -> np.ndarray:
    """A solid, gradient or lightly noisy background far (in RGB) from every shape colour: uint8 [R, R, 3].

    Pixel noise comes from its own stream, so `rng` makes the same draws at every resolution.
    """
    base = np.asarray(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], np.float32)
    base = base + rng.integers(-8, 9, size=3)
    style = BACKGROUND_STYLES[int(rng.integers(len(BACKGROUND_STYLES)))]
    img = np.broadcast_to(base, (res, res, 3)).astype(np.float32)
    if style == "gradient":  # +-20 brightness along a random direction
        angle = float(rng.uniform(0, 2 * np.pi))
        ramp = np.linspace(-1.0, 1.0, res, dtype=np.float32)
        along = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
        img = img + 20.0 * (along / np.sqrt(2.0))[..., None]
    elif style == "noise":
        img = img + noise_rng.normal(0.0, 4.0, size=(res, res, 1)).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def paint(canvas: np.ndarray, raster: Raster, rgb: tuple[int, int, int]) -> None:
    """Fill the raster's pixels with one colour, clipped to the canvas (in place)."""
    h, w = raster.mask.shape
    top, left = max(raster.top, 0), max(raster.left, 0)
    bottom, right = min(raster.top + h, canvas.shape[0]), min(raster.left + w, canvas.shape[1])
    mask = raster.mask[top - raster.top:bottom - raster.top, left - raster.left:right - raster.left]
    canvas[top:bottom, left:right][mask] = rgb


def draw_shapes(canvas: np.ndarray, specs: tuple[ShapeSpec, ...]) -> tuple[DrawnShape, ...]:
    """Paint every shape onto `canvas` (in place) and describe each as drawn."""
    res = canvas.shape[0]
    drawn = []
    for spec in specs:
        raster = rasterize(spec.shape, spec.cx, spec.cy, spec.radius)
        paint(canvas, raster, COLORS[spec.color])
        top, left, bottom, right = tight_box(raster)
        crop = raster.mask[top - raster.top:bottom - raster.top, left - raster.left:right - raster.left]
        box_norm = (top / res, left / res, bottom / res, right / res)
        drawn.append(DrawnShape(spec, (top, left, bottom, right), box_norm, encode_mask(crop)))
    return tuple(drawn)
