"""A benchmark's result files: `<stem>.json` and `<stem>.md` side by side, each replaced whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path

from pg2edge.checkpoint.fsutil import atomic_file


def write_report(result: dict, markdown: str, out: Path, stem: str) -> list[Path]:
    """Write `result` as JSON and `markdown` beside it under `out` (created if missing); returns both paths.

    A run interrupted while writing leaves the previous results in place, never a truncated file.
    """
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.json", out / f"{stem}.md"]
    for path, text in zip(paths, (json.dumps(result, indent=2) + "\n", markdown)):
        with atomic_file(path) as f:
            f.write(text.encode("utf-8"))
    return paths
