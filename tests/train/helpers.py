"""Helpers shared by the trainer tests: run in-process or in a subprocess, read the loss curve.

Importing this module points JAX's persistent compilation cache at one
directory that the subprocesses share: every run here uses the tiny variant
with the same batch shapes, so after the first compilation later runs of
the same step (in this process or another) are cache hits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import jax

from pg2edge.train import FinetuneResult, TrainOptions, finetune, read_metrics

OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
CACHE = os.environ.get("JAX_COMPILATION_CACHE_DIR") or tempfile.mkdtemp(prefix="pg2edge-train-jax-cache-")
jax.config.update("jax_compilation_cache_dir", CACHE)  # imported at collection, before anything compiles

DRIVER = Path(__file__).with_name("driver.py")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def losses(out: Path) -> dict[int, float]:
    """step -> train loss from DIR/metrics.jsonl."""
    return {r["step"]: r["loss"] for r in read_metrics(out) if "loss" in r}


def run(opts: TrainOptions, **kwargs) -> FinetuneResult:
    return finetune(opts, progress=False, **kwargs)


def run_subprocess(opts: TrainOptions, *, devices: int = 1, kill_after: int | None = None,
                   timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `driver.py` in a fresh interpreter with `devices` CPU devices (optionally SIGKILLed after a step)."""
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=CACHE, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    args = [sys.executable, str(DRIVER), json.dumps(opts.to_dict())]
    if kill_after is not None:
        args += ["--kill-after", str(kill_after)]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


__all__ = ["CACHE", "OWN_CACHE", "losses", "replace", "run", "run_subprocess", "write_jsonl"]
