"""`EvalExample`: the unit every loader produces and every predictor and metric consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class EvalExample:
    """One image + prompt to run, the texts to score against, the task, and loader facts (boxes, ids)."""

    image: Path
    prefix: str
    references: tuple[str, ...]
    task: str
    meta: dict = field(default_factory=dict, compare=False)
