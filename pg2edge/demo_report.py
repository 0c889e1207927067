"""`demo_out/report.html`: one self-contained page a person opens to see what each artifact predicts.

A metrics table (one row per artifact) and a gallery: each held-out example's image,
prompt and reference, then every artifact's prediction, with its boxes and masks drawn
for detection and segmentation. Images are inlined as base64 PNG, so the file can be
mailed or attached to a CI run on its own.
"""

from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from PIL import Image

from pg2edge.postprocess import attach_masks, parse_objects
from pg2edge.preprocess import load_image
from pg2edge.runtime.draw import render_objects
from pg2edge.tasks.segcodes import decode_codes

THUMB = 160  # px: gallery images are drawn at the original size, then shown at this width
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}.ex{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0;
padding-bottom:1em;border-bottom:1px solid #eee}.cell{width:{thumb}px;font-size:.8em;word-break:break-all}
.cell img{width:{thumb}px;image-rendering:pixelated}.ok{color:#176a2a}.bad{color:#a11}code{font-size:.9em}
""".replace("{thumb}", str(THUMB))


@dataclass(frozen=True)
class GalleryItem:
    """One held-out example and what each artifact answered."""

    image: Path
    task: str
    prefix: str
    reference: str
    predictions: Mapping[str, str]  # artifact name -> predicted text, in column order


def _png_data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def drawn(image: Path, text: str) -> Image.Image:
    """The image with the `<loc>`/`<seg>` objects in `text` drawn (masks from the suite's stand-in decoder)."""
    img = load_image(image)
    objects = parse_objects(text, img.size)
    return render_objects(img, attach_masks(objects, decode_codes, img.size))


def _metrics_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c, "")
            cells.append(f"<td>{v:.3f}</td>" if isinstance(v, float) else f"<td>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _cell(label: str, img: Image.Image, text: str, ok: bool | None) -> str:
    cls = "" if ok is None else (' class="ok"' if ok else ' class="bad"')
    return (f'<div class="cell"><img src="{_png_data_uri(img)}" alt="{html.escape(label)}">'
            f"<div><b>{html.escape(label)}</b></div><div{cls}><code>{html.escape(text)}</code></div></div>")


def _example(item: GalleryItem) -> str:
    boxes = item.task in ("detect", "segment")
    plain = load_image(item.image)
    cells = [_cell(f"{item.prefix} (reference)", drawn(item.image, item.reference) if boxes else plain,
                   item.reference, None)]
    for name, text in item.predictions.items():
        cells.append(_cell(name, drawn(item.image, text) if boxes else plain, text, text == item.reference))
    return f'<div class="ex">{"".join(cells)}</div>'


def write_report_html(path: str | Path, title: str, intro: str, metric_rows: Sequence[Mapping[str, object]],
                      metric_columns: Sequence[str], gallery: Sequence[GalleryItem]) -> Path:
    """Write the page atomically (temp file, then rename)."""
    path = Path(path)
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_STYLE}</style>",
             f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>",
             "<h2>Task metrics per artifact</h2>", _metrics_table(metric_rows, metric_columns),
             "<h2>Held-out examples</h2><p>Green: same text as the reference; red: different.</p>",
             *(_example(item) for item in gallery)]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
