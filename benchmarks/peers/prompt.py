"""The shared decoder prompt and timing protocol every peer worker follows (stdlib only: any venv imports it).

pg2edge prefills 256 image positions + 12 prompt tokens = 268 positions, then
decodes 64 greedy tokens: 63 decode steps after the prefill's first token.
The text-only peers get 268 token ids (bos + fixed in-vocabulary ids), so
their prefill and decode do the same work as pg2edge's decoder. Each worker
runs the whole generation twice and reports the second (warm) run, as
bench_3b.py does for pg2edge; the cold first run is kept as `cold_*`.
"""

from __future__ import annotations

import json
import os
import resource
import sys

PREFILL_POSITIONS = 268
NEW_TOKENS = 64
THREADS = 2
BOS_ID = 2


def prompt_ids(n: int = PREFILL_POSITIONS) -> list[int]:
    """bos + n-1 deterministic ids among the synthetic tokenizer's normal pieces (ids 109..364 are bytes/chars)."""
    return [BOS_ID] + [109 + (37 * i) % 256 for i in range(n - 1)]


def figures(prefill_s: float, decode_s: float, steps: int, step_times: list[float] | None = None) -> dict:
    """The keys every runner reports for one generation (median/min step: robust to a preempted step)."""
    out = {"prefill_s": round(prefill_s, 3), "first_token_s": round(prefill_s, 3),
           "decode_s": round(decode_s, 3), "decode_steps": steps,
           "decode_tok_s": round(steps / decode_s, 3) if decode_s > 0 else None}
    if step_times:
        ordered = sorted(step_times)
        out.update(decode_step_ms_median=round(1000 * ordered[len(ordered) // 2], 2),
                   decode_step_ms_min=round(1000 * ordered[0], 2))
    return out


def self_peak_rss_gb() -> float:
    """This process's peak RSS so far (GB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def emit(result: dict) -> None:
    """Print the worker's one JSON result line (the orchestrator takes the last JSON line of the log)."""
    result.setdefault("self_peak_rss_gb", round(self_peak_rss_gb(), 2))
    result.setdefault("pid", os.getpid())
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
