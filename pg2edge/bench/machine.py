"""What a benchmark ran on: CPU model and flags, cores, RAM, BLAS threading and package versions.

Timings mean little without this; every results JSON carries it.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

PACKAGES = ("pg2edge", "numpy", "jax", "onnx", "onnxruntime", "ai-edge-litert", "tensorflow-cpu", "sentencepiece",
            "pillow", "llama-cpp-python", "onnxruntime-genai", "transformers", "torch")
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16",
                     "asimd", "asimddp", "i8mm", "sve")


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, list[str]]:
    """(model name, flags we care about) from /proc/cpuinfo; empty where unavailable."""
    try:
        text = path.read_text()
    except OSError:
        return platform.processor(), []
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return model or platform.processor(), [f for f in FLAGS_OF_INTEREST if f in flags]


def _ram_gb(path: Path = Path("/proc/meminfo")) -> float | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def machine_info() -> dict:
    """JSON-ready description of this machine and its software."""
    model, flags = _cpuinfo()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"cpu": model, "arch": platform.machine(), "cpu_flags": flags, "cores_usable": cores,
            "cores_total": os.cpu_count(), "ram_gb": _ram_gb(), "os": platform.platform(),
            "python": platform.python_version(), "packages": _versions(),
            "openblas_env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}}
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [{k: p.get(k) for k in ("internal_api", "num_threads", "architecture")}
                               for p in threadpool_info()]
    except ImportError:
        pass
    return info
