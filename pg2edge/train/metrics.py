"""What a run reports: `DIR/metrics.jsonl` (one JSON object per logged step or eval) and a rich progress bar.

Train lines: `step`, `loss` and `token_acc` (means over the steps since the
previous line), `lr` (applied at `step`), `grad_norm` (before clipping),
`steps_per_s` (wall rate since the previous line; the first line includes
compilation), `examples_seen`, `epoch`. Eval lines: `step`, `eval_loss`,
`eval_token_acc`, `eval_examples`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import IO

import numpy as np

from pg2edge.checkpoint.fsutil import atomic_file

METRICS = "metrics.jsonl"


def _clean(value: object) -> object:
    """numpy scalars -> Python; non-finite floats -> None (JSON has no NaN)."""
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLog:
    """Append-only JSONL; on resume, lines past the restored step (written before a kill) are dropped first."""

    def __init__(self, out: Path, resume_step: int = 0, enabled: bool = True) -> None:
        self.path = Path(out) / METRICS
        self._file: IO[str] | None = None
        if not enabled:
            return
        if self.path.exists():
            self._truncate_after(resume_step)
        self._file = open(self.path, "a", encoding="utf-8")

    def _truncate_after(self, step: int) -> None:
        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and _step_of(line) <= step]
        with atomic_file(self.path) as f:
            f.write("".join(line + "\n" for line in kept).encode("utf-8"))

    def write(self, record: dict) -> None:
        """One line, flushed, so a killed run's log is complete up to its last step."""
        if self._file is None:
            return
        self._file.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _step_of(line: str) -> float:
    try:
        return float(json.loads(line).get("step", math.inf))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return math.inf  # a torn last line from a kill: drop it


def read_metrics(out: str | os.PathLike) -> list[dict]:
    """Every record of `DIR/metrics.jsonl` (for tests, plots and `pg2edge eval`)."""
    path = Path(out) / METRICS
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class ProgressBar:
    """A rich bar with loss and steps/s on stderr; silent when stderr is not a terminal (or when disabled)."""

    def __init__(self, total: int, start: int, enabled: bool = True, label: str = "finetune") -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        self._bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                             TextColumn("{task.fields[detail]}"), console=console,
                             disable=not (enabled and console.is_terminal))
        self._task = self._bar.add_task(label, total=total, completed=start, detail="")

    def __enter__(self) -> ProgressBar:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)

    def update(self, step: int, record: dict) -> None:
        acc = f"  acc {record['token_acc']:.3f}" if "token_acc" in record else ""
        detail = f"loss {record['loss']:.4f}{acc}  {record['steps_per_s']:.2f} steps/s"
        self._bar.update(self._task, completed=step, detail=detail)
