"""The progress interface long jobs report to (the CLI draws rich bars; library callers may pass nothing)."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Stages with a known number of steps, advanced one step at a time."""

    def stage(self, name: str, total: int) -> None: ...

    def advance(self, name: str, detail: str = "") -> None: ...
