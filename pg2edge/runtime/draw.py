"""`pg2edge run --draw`: the original image with boxes, labels and masks (pillow only)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from pg2edge.preprocess import load_image

_COLORS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


def draw_objects(image, objects: Sequence, out: str | Path) -> Path:
    """Overlay each object's mask (translucent) and box with its label; write atomically."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    render_objects(image, objects).save(tmp, format=(out.suffix.lstrip(".") or "png").upper().replace("JPG", "JPEG"))
    tmp.replace(out)
    return out


def render_objects(image, objects: Sequence) -> Image.Image:
    """The image (RGB) with each object's translucent mask, box and label drawn over it."""
    img = load_image(image).convert("RGBA")
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    pen = ImageDraw.Draw(overlay)
    for i, obj in enumerate(objects):
        color = _COLORS[i % len(_COLORS)]
        if obj.mask is not None:
            alpha = (np.asarray(obj.mask, bool) * 110).astype(np.uint8)
            tint = Image.new("RGBA", img.size, color + (0,))
            tint.putalpha(Image.fromarray(alpha))
            overlay = Image.alpha_composite(overlay, tint)
            pen = ImageDraw.Draw(overlay)
        x0, y0, x1, y1 = obj.box
        pen.rectangle((x0, y0, x1, y1), outline=color + (255,), width=max(1, img.size[0] // 200))
        pen.text((x0 + 2, y0 + 1), obj.label or "?", fill=color + (255,))
    return Image.alpha_composite(img, overlay).convert("RGB")
