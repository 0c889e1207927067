"""Prefix -> suffix pairs for one image: one example per task type that applies to what was drawn."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from pg2edge.postprocess import format_detection
from pg2edge.tasks.ocr import TextSpec
from pg2edge.tasks.render import DrawnShape
from pg2edge.tasks.vocab import COLORS, SHAPES

TASKS = ("caption", "count_shape", "count_color", "color", "detect", "segment", "ocr")
_ABSENT_PROBABILITY = 0.25  # counting questions sometimes ask about what is not there (answer "0")
# The counting questions' prompts, formatted with a shape or a colour name (benchmarks ask them of any scene).
COUNT_SHAPE_PROMPT = "answer en how many {} are there"
COUNT_COLOR_PROMPT = "answer en how many {} shapes are there"


@dataclass(frozen=True)
class Target:
    """One training example's text: the task it belongs to, the prompt and the answer."""

    task: str
    prefix: str
    suffix: str


def _pick(rng: np.random.Generator, items: list[str] | tuple[str, ...]) -> str:
    return items[int(rng.integers(len(items)))]


def caption(shapes: tuple[DrawnShape, ...]) -> str:
    """Every shape as "a <size> <color> <shape>", left to right, joined by "and"."""
    return " and ".join(f"a {s.spec.size} {s.spec.color} {s.spec.shape}" for s in shapes)


def _count_target(rng: np.random.Generator, present: list[str], universe: tuple[str, ...]) -> str:
    """A present value most of the time, any value otherwise (absent ones teach "0")."""
    if rng.random() < _ABSENT_PROBABILITY:
        return _pick(rng, universe)
    return _pick(rng, present)


def detection(shapes: tuple[DrawnShape, ...], label: str) -> str:
    """Every instance whose shape name or "color shape" label is `label`, left to right."""
    hits = [s for s in shapes if label in (s.spec.shape, s.spec.label)]
    return format_detection([s.box_norm for s in hits], [label] * len(hits))


def segmentation(shape: DrawnShape, label: str) -> str:
    """Four loc tokens, 16 stand-in seg codes, then the label."""
    return format_detection([shape.box_norm], [label], seg_codes=[shape.seg_codes])


def _unique_label(shape: DrawnShape, by_shape: Counter, by_label: Counter) -> str | None:
    """The shortest label naming only this shape, if any."""
    if by_shape[shape.spec.shape] == 1:
        return shape.spec.shape
    if by_label[shape.spec.label] == 1:
        return shape.spec.label
    return None


def shape_targets(shapes: tuple[DrawnShape, ...], rng: np.random.Generator) -> tuple[Target, ...]:
    """Caption, two counting questions, a colour question, one detection and one segmentation (when unambiguous)."""
    by_shape = Counter(s.spec.shape for s in shapes)
    by_color = Counter(s.spec.color for s in shapes)
    by_label = Counter(s.spec.label for s in shapes)
    out = [Target("caption", "caption en", caption(shapes))]

    shape = _count_target(rng, sorted(by_shape), SHAPES)
    # The shape's name as every other prompt writes it ("how many circle are there", not "circles"): counting
    # then reuses the lookup detection, segmentation and colour questions teach, instead of learning six plural
    # tokens from its own lines (see the README).
    out.append(Target("count_shape", COUNT_SHAPE_PROMPT.format(shape), str(by_shape[shape])))
    color = _count_target(rng, sorted(by_color), tuple(COLORS))
    out.append(Target("count_color", COUNT_COLOR_PROMPT.format(color), str(by_color[color])))

    unique = sorted(name for name, n in by_shape.items() if n == 1)
    if unique:
        name = _pick(rng, unique)
        (only,) = (s for s in shapes if s.spec.shape == name)
        out.append(Target("color", f"answer en what color is the {name}", only.spec.color))

    chosen = shapes[int(rng.integers(len(shapes)))]
    label = chosen.spec.shape if rng.random() < 0.5 else chosen.spec.label
    out.append(Target("detect", f"detect {label}", detection(shapes, label)))

    segmentable = [(s, lab) for s in shapes if (lab := _unique_label(s, by_shape, by_label)) is not None]
    if segmentable:
        s, lab = segmentable[int(rng.integers(len(segmentable)))]
        out.append(Target("segment", f"segment {lab}", segmentation(s, lab)))
    return tuple(out)


def text_targets(spec: TextSpec) -> tuple[Target, ...]:
    """An OCR image has one task: read the text (lines joined by spaces)."""
    return (Target("ocr", "ocr", spec.text),)
