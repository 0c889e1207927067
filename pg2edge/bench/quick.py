"""`pg2edge bench --quick`: parity and speed of the shipped tiny model, in a few minutes on any machine.

The full-size runs (3B conversion, peers) take an hour and tens of GB; this is the
check a user runs first on a new device: does every artifact agree with the float
JAX model here, and how fast does the runtime go.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from pg2edge.bench.machine import machine_info
from pg2edge.bench.parity import ARTIFACTS, markdown, run_parity
from pg2edge.bench.report_files import write_report

QUICK_JSON, QUICK_MD = "bench_quick.json", "bench_quick.md"
SPEED_TOKENS = 32  # fits the parity bundles' cache (48 new tokens)
QUICK_GPTQ_IMAGES = 16  # GPTQ calibration examples for the quick run's `mixed-gptq` (seconds, not minutes)


def runtime_speed(bundle: Path, backend: str, image: Path, prompt: str = "caption en", runs: int = 3) -> dict:
    """Warm vision / prefill milliseconds and decode tokens/s of one bundle (median of `runs`)."""
    from pg2edge.runtime.engine import Engine

    engine = Engine(bundle, backend=backend)
    engine.generate(image, prompt, max_new_tokens=4, stop_at_eos=False)  # sessions built, weights prepacked
    timings = [engine.generate(image, prompt, max_new_tokens=SPEED_TOKENS, stop_at_eos=False).timings
               for _ in range(runs)]
    return {"vision_ms": float(np.median([t.vision_ms for t in timings])),
            "prefill_ms": float(np.median([t.prefill_ms for t in timings])),
            "decode_tok_s": float(np.median([t.decode_tok_s for t in timings]))}


def run_quick(out: Path, images: int = 4, formats: tuple[str, ...] = ("onnx", "tflite"), log=print) -> dict:
    """Parity rows for every artifact on a few held-out images, plus runtime speed; writes JSON + markdown."""
    from pg2edge.shipped_model import shipped_model
    from pg2edge.tasks.generate import generate_image

    t0 = time.perf_counter()
    result = {"kind": "quick", "machine": machine_info()}
    model = shipped_model()
    speed = {}
    with tempfile.TemporaryDirectory(prefix="pg2edge-bench-") as tmp:
        artifacts = tuple((name, quant, src, min(gptq, QUICK_GPTQ_IMAGES)) for name, quant, src, gptq in ARTIFACTS)
        result["parity"] = run_parity(images, formats, artifacts, log=log, workdir=Path(tmp))
        image = Path(tmp) / "image.png"
        image.write_bytes(generate_image(model.suite.seed, 0, model.suite.res).png)
        for quant in ("f32", "int8", "int4"):  # the parity run's bundles of the shipped float model
            for fmt in formats:
                speed[f"{fmt}-{quant}"] = runtime_speed(Path(tmp) / quant, fmt, image)
                log(f"{fmt:>6} {quant:<5} decode {speed[f'{fmt}-{quant}']['decode_tok_s']:.0f} tok/s")
    result["speed"] = {"model": model.name, "new_tokens": SPEED_TOKENS, "artifacts": speed}
    result["seconds"] = time.perf_counter() - t0
    write_report(result, quick_markdown(result), out, Path(QUICK_JSON).stem)
    return result


def quick_markdown(result: dict) -> str:
    """The parity table, then one speed line per artifact, then the machine."""
    m = result["machine"]
    lines = [f"# pg2edge bench --quick ({result['seconds']:.0f} s)", "",
             f"Machine: {m['cpu']} ({m['arch']}), {m['cores_usable']} cores, {m['ram_gb']} GB RAM", "",
             markdown(result["parity"]), "| artifact | vision ms | prefill ms | decode tok/s |", "|---|---|---|---|"]
    for name, s in result["speed"]["artifacts"].items():
        lines.append(f"| {name} | {s['vision_ms']:.1f} | {s['prefill_ms']:.1f} | {s['decode_tok_s']:.0f} |")
    return "\n".join(lines) + "\n"
