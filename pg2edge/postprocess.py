"""Generated `<loc>`/`<seg>` text -> boxes and masks in original-image pixels (numpy + pillow only).

PaliGemma answers `detect a ; b` with entries `<locY0><locX0><locY1><locX1> label`
joined by ` ; `, and `segment a` with the same four locations followed by 16
`<segNNN>` codes of a VQ-VAE mask. A location is `round(v * 1023)` of the resized
square image (big_vision's `refcoco_mask2str`); this module decodes with `/1023`
(`LOC_DENOMINATOR`, stated in the manifest) and scales by the ORIGINAL image's
width/height, since the resize does not preserve aspect. Parsing is total: any
string, however malformed or truncated, yields a (possibly empty) list.
This module runs on device: no jax/torch/tf.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from pg2edge.config import NUM_LOC_TOKENS, NUM_SEG_TOKENS

LOC_DENOMINATOR = NUM_LOC_TOKENS - 1  # 1023
SEG_CODES_PER_OBJECT = 16
MASK_SIZE = 64
SEPARATOR = " ; "

# A <loc>/<seg> token, a separator, or any other tag (`<eos>`, `<pad>`, ...) that ends an entry.
_TOKEN_RE = re.compile(r"<(loc|seg)([0-9]+)>|;|<[^<>\s]*>")
_MAX_DIGITS = 6  # longer numbers are out of range anyway; never int() an unbounded digit run


@dataclass(frozen=True)
class DetectedObject:
    """One parsed entry: label, box in original-image pixels, and optional segmentation."""

    label: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in original-image pixels
    box_norm: tuple[float, float, float, float]  # y0, x0, y1, x1 in [0, 1] (the token order)
    seg_codes: tuple[int, ...] | None = None  # 16 codes in [0, 128) when the entry had a full mask
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)  # bool [H, W], filled later


@dataclass(frozen=True)
class _Lexeme:
    kind: str  # "loc", "seg", "sep", "text"
    value: int | None = None  # token number; None when out of range
    text: str = ""


def _number(digits: str, limit: int) -> int | None:
    if len(digits) > _MAX_DIGITS:
        return None
    value = int(digits)
    return value if value < limit else None


def _lex(text: str) -> Iterator[_Lexeme]:
    """Split text into loc/seg tokens, separators and the plain text between them."""
    pos = 0
    for m in _TOKEN_RE.finditer(text):
        if m.start() > pos:
            yield _Lexeme("text", text=text[pos:m.start()])
        kind = m.group(1)
        if kind == "loc":
            yield _Lexeme("loc", _number(m.group(2), NUM_LOC_TOKENS))
        elif kind == "seg":
            yield _Lexeme("seg", _number(m.group(2), NUM_SEG_TOKENS))
        else:
            yield _Lexeme("sep")
        pos = m.end()
    if pos < len(text):
        yield _Lexeme("text", text=text[pos:])


@dataclass
class _Entry:
    """Mutable builder for one entry while scanning (private)."""

    locs: list = field(default_factory=list)
    segs: list = field(default_factory=list)
    segs_ok: bool = True
    label: list = field(default_factory=list)
    label_started: bool = False  # any non-space label text seen
    label_closed: bool = False

    @property
    def has_box(self) -> bool:
        return len(self.locs) == 4

    def add_text(self, text: str) -> None:
        if self.label_closed:
            return
        cut = min((i for i in (text.find("<"), text.find(">")) if i >= 0), default=-1)
        if cut >= 0:  # a stray or truncated tag ends the label, as big_vision's `[^;<>]+` does
            text, self.label_closed = text[:cut], True
        self.label.append(text)
        self.label_started = self.label_started or bool(text.strip())

    def add_seg(self, code: int | None) -> None:
        if self.label_started:  # codes must follow the locations directly
            self.segs_ok = False
        self.segs.append(code)

    def result(self) -> tuple[tuple[int, ...], tuple[int, ...] | None, str] | None:
        if not self.has_box or None in self.locs:
            return None
        full_mask = self.segs_ok and len(self.segs) == SEG_CODES_PER_OBJECT and None not in self.segs
        return tuple(self.locs), tuple(self.segs) if full_mask else None, " ".join("".join(self.label).split())


def _entries(text: str) -> Iterator[tuple[tuple[int, ...], tuple[int, ...] | None, str]]:
    """(4 locs, 16 seg codes or None, label) for each complete entry, in order."""
    entry = _Entry()
    for lx in _lex(text):
        if lx.kind == "loc":
            if entry.has_box:  # a new loc run starts a new entry even without ` ; `
                if (r := entry.result()) is not None:
                    yield r
                entry = _Entry()
            entry.locs.append(lx.value)
        elif lx.kind == "seg":
            if entry.has_box:
                entry.add_seg(lx.value)
            else:
                entry = _Entry()  # codes inside a loc run: the run is broken
        elif lx.kind == "sep":
            if (r := entry.result()) is not None:
                yield r
            entry = _Entry()
        elif entry.has_box:
            entry.add_text(lx.text)
        elif lx.text.strip():
            entry = _Entry()  # text inside a loc run (whitespace is tolerated)
    if (r := entry.result()) is not None:
        yield r


def _check_size(image_size: tuple[int, int]) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size: expected (width, height), found {image_size!r}") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"image_size: expected positive (width, height), found {image_size!r}")
    return width, height


def _to_object(locs: tuple[int, ...], codes: tuple[int, ...] | None, label: str,
               width: int, height: int) -> DetectedObject:
    y0, x0, y1, x1 = (v / LOC_DENOMINATOR for v in locs)
    y0, y1 = min(y0, y1), max(y0, y1)
    x0, x1 = min(x0, x1), max(x0, x1)
    box = (min(max(x0 * width, 0.0), width), min(max(y0 * height, 0.0), height),
           min(max(x1 * width, 0.0), width), min(max(y1 * height, 0.0), height))
    return DetectedObject(label, box, (y0, x0, y1, x1), codes)


def parse_objects(text: str, image_size: tuple[int, int]) -> list[DetectedObject]:
    """Objects in generated text; `image_size` is the ORIGINAL image's (width, height)."""
    width, height = _check_size(image_size)
    if not isinstance(text, str):
        return []
    return [_to_object(locs, codes, label, width, height) for locs, codes, label in _entries(text)]


def ids_to_text(ids: Iterable[int], loc_start: int, seg_start: int,
                decode_fn: Callable[[list[int]], str]) -> str:
    """Render token ids as text: loc/seg ids as `<locNNNN>`/`<segNNN>`, other runs through `decode_fn`."""
    parts: list[str] = []
    run: list[int] = []
    for i in (int(v) for v in ids):
        if loc_start <= i < loc_start + NUM_LOC_TOKENS:
            piece = f"<loc{i - loc_start:04d}>"
        elif seg_start <= i < seg_start + NUM_SEG_TOKENS:
            piece = f"<seg{i - seg_start:03d}>"
        else:
            run.append(i)
            continue
        if run:
            parts.append(decode_fn(run))
            run = []
        parts.append(piece)
    if run:
        parts.append(decode_fn(run))
    return "".join(parts)


def parse_token_ids(ids: Iterable[int], loc_start: int, seg_start: int,
                    decode_fn: Callable[[list[int]], str], image_size: tuple[int, int]) -> list[DetectedObject]:
    """`parse_objects` on generated ids, for callers that hold ids rather than text."""
    return parse_objects(ids_to_text(ids, loc_start, seg_start, decode_fn), image_size)


def _loc_tokens(box_norm: Sequence[float]) -> str:
    values = np.asarray(box_norm, np.float64)
    if values.shape != (4,) or not np.isfinite(values).all():
        raise ValueError(f"box: expected 4 finite values (y0, x0, y1, x1) in [0, 1], found {box_norm!r}")
    bins = np.clip(np.round(values * LOC_DENOMINATOR), 0, LOC_DENOMINATOR).astype(int)
    return "".join(f"<loc{b:04d}>" for b in bins)


def _seg_tokens(codes: Sequence[int]) -> str:
    codes = [int(c) for c in codes]
    if len(codes) != SEG_CODES_PER_OBJECT or not all(0 <= c < NUM_SEG_TOKENS for c in codes):
        raise ValueError(f"seg codes: expected {SEG_CODES_PER_OBJECT} ints in [0, {NUM_SEG_TOKENS}), found {codes!r}")
    return "".join(f"<seg{c:03d}>" for c in codes)


def format_detection(objects_norm: Sequence[Sequence[float]], labels: Sequence[str],
                     seg_codes: Sequence[Sequence[int] | None] | None = None) -> str:
    """The target text PaliGemma is trained to emit for these boxes (y0, x0, y1, x1 in [0, 1])."""
    if len(objects_norm) != len(labels):
        raise ValueError(f"format_detection: {len(objects_norm)} boxes but {len(labels)} labels")
    codes = [None] * len(labels) if seg_codes is None else list(seg_codes)
    if len(codes) != len(labels):
        raise ValueError(f"format_detection: {len(codes)} seg code lists but {len(labels)} labels")
    entries = []
    for box, label, obj_codes in zip(objects_norm, labels, codes):
        label = " ".join(str(label).split())
        if any(c in label for c in ";<>"):
            raise ValueError(f"label {label!r}: ';', '<' and '>' would not parse back")
        head = _loc_tokens(box) + ("" if obj_codes is None else _seg_tokens(obj_codes))
        entries.append(f"{head} {label}" if label else head)
    return SEPARATOR.join(entries)


def pixel_box(box_xyxy: Sequence[float], image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Integer box clipped to the image, truncated like big_vision's segmentation evaluator; NaN/inf -> empty."""
    width, height = _check_size(image_size)
    vals = [float(v) for v in box_xyxy]
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        return 0, 0, 0, 0
    x0, y0, x1, y1 = (int(min(max(v, 0.0), lim)) for v, lim in zip(vals, (width, height, width, height)))
    return x0, y0, x1, y1


def paste_mask(mask64: np.ndarray, box_xyxy: Sequence[float], image_size: tuple[int, int]) -> np.ndarray:
    """A decoded mask (values in [-1, 1]) resized into its box, thresholded at 0: bool [H, W]."""
    width, height = _check_size(image_size)
    out = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = pixel_box(box_xyxy, image_size)
    if x1 <= x0 or y1 <= y0:
        return out
    m = np.asarray(mask64, dtype=np.float32)
    if m.ndim != 2 or 0 in m.shape:
        raise ValueError(f"mask: expected a 2-D array, found shape {m.shape}")
    resized = Image.fromarray(np.ascontiguousarray(m)).resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR)
    out[y0:y1, x0:x1] = np.asarray(resized) > 0.0
    return out


def attach_masks(objects: Sequence[DetectedObject], decode_fn: Callable[[np.ndarray], np.ndarray],
                 image_size: tuple[int, int]) -> list[DetectedObject]:
    """Decode every object's seg codes in one batch (`decode_fn`: int32 [N,16] -> [N,64,64]) and paste."""
    with_codes = [i for i, o in enumerate(objects) if o.seg_codes is not None]
    if not with_codes:
        return list(objects)
    codes = np.asarray([objects[i].seg_codes for i in with_codes], np.int32)
    masks = np.asarray(decode_fn(codes))
    if masks.shape[:1] != (len(with_codes),) or masks.ndim != 3:
        raise ValueError(f"decode_fn: expected masks [{len(with_codes)}, H, W], found shape {masks.shape}")
    out = list(objects)
    for i, m in zip(with_codes, masks):
        out[i] = dataclasses.replace(objects[i], mask=paste_mask(m, objects[i].box, image_size))
    return out
