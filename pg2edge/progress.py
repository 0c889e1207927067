"""The progress interface long jobs report to, and the rich bars the CLI draws for it (library callers may pass nothing)."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Stages with a known number of steps, advanced one step at a time."""

    def stage(self, name: str, total: int) -> None: ...

    def advance(self, name: str, detail: str = "") -> None: ...


class RichProgress:
    """One rich progress bar per stage (convert, eval), on stderr (silent when not a terminal)."""

    def __enter__(self) -> RichProgress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bars

        console = Console(stderr=True)
        self._bars = Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), TextColumn("{task.fields[detail]}"),
                          console=console, disable=not console.is_terminal)
        self._tasks: dict = {}
        self._bars.__enter__()
        return self

    def __exit__(self, *exc: object) -> bool | None:
        return self._bars.__exit__(*exc)

    def stage(self, name: str, total: int) -> None:
        self._tasks[name] = self._bars.add_task(name, total=total, detail="")

    def advance(self, name: str, detail: str = "") -> None:
        self._bars.update(self._tasks[name], advance=1, detail=detail)
