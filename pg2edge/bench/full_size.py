"""`pg2edge bench --full`: the random-init 3B-224 benchmark (and peers) from a source checkout.

It converts a 3B model several times and, with peers, builds llama.cpp and
onnxruntime-genai models: an hour and tens of GB of disk, so it lives in
`benchmarks/bench_3b.py` and runs in its own process, with the OpenBLAS core
overrides some machines set removed (benchmarks only; tests never touch them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pg2edge.errors import Pg2EdgeError

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_3b.py"


class BenchError(Pg2EdgeError):
    """The full-size benchmark cannot run here (no source checkout) or failed."""


def run_full_size(out: Path, peers: tuple[str, ...] = (), script: Path = SCRIPT) -> list[Path]:
    """Run benchmarks/bench_3b.py writing into `out`; the paths of its JSON, markdown and PNG."""
    if not script.is_file():
        raise BenchError(f"{script}: not found; --full runs the benchmark scripts of a source checkout of pg2edge")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    cmd = [sys.executable, str(script), "--out", str(out)] + (["--peers", ",".join(peers)] if peers else [])
    if subprocess.run(cmd, env=env).returncode != 0:
        raise BenchError(f"{script.name} failed (its output is above)")
    return [Path(out) / f"3b_224.{ext}" for ext in ("json", "md", "png")]
