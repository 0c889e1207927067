"""Peers for issue [5/5]: llama.cpp, onnxruntime-genai, HF transformers and litert-torch on pg2edge's 3B-224 weights.

Each step (weights, convert, quantize, build, bench, profile) runs in its own
process under a memory watchdog (watch.py); a failure or an OOM becomes that
peer's status with a one-line reason and the peak RSS, never an exception.
Peer packages live in .venv-peers (benchmarks/peers/setup.sh); this file
needs only the project venv.

    .venv/bin/python benchmarks/peers/run.py --peers llamacpp,ortgenai,hf,litert [--out PATH] [--build-only]

`run_peers(names, workdir)` is what bench_3b.py calls: {"llamacpp_q4_0": {...}, ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from peer_steps import PEERS, Context  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "peers_3b.json"


def run_peers(names: list[str] | str, workdir: str | Path = "/tmp/peers", bandwidth_gbs: float | None = None,
              keep: bool = True, reuse: bool = True, limit_gb: float | None = None, bench: bool = True) -> dict:
    """Run the named peer groups (llamacpp, ortgenai, hf, litert); one entry per measured configuration.

    `keep=False` deletes big intermediates and artifacts after use; `reuse` skips a build whose
    output and recorded stage already exist in `workdir` (its recorded time and peak stay).
    With `bandwidth_gbs`, each entry gets roofline_tok_s and roofline_fraction. `bench=False` only
    builds (status "built"), so a later call on a quiet machine times prebuilt artifacts.
    """
    names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    ctx = Context(Path(workdir), keep=keep, reuse=reuse, bench=bench, **({"limit_gb": limit_gb} if limit_gb else {}))
    results: dict = {}
    for name in names:
        if name not in PEERS:
            results[name] = {"status": "failed", "reason": f"unknown peer {name!r}: expected {', '.join(PEERS)}"}
            continue
        t0 = time.perf_counter()
        try:
            rows = PEERS[name](ctx)
        except Exception as e:  # a peer's bug must not end the run
            rows = {name: {"status": "failed", "reason": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                           if str(e) else type(e).__name__}}
        for key, row in rows.items():
            row.setdefault("group_wall_s", round(time.perf_counter() - t0, 1))
            if bandwidth_gbs and row.get("bytes_per_token") and row.get("decode_tok_s"):
                row["roofline_tok_s"] = round(bandwidth_gbs * 1e9 / row["bytes_per_token"], 2)
                row["roofline_fraction"] = round(row["decode_tok_s"] / row["roofline_tok_s"], 3)
            results[key] = row
            print(json.dumps({key: {k: v for k, v in row.items() if k != "stages"}}), flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", default="llamacpp,ortgenai,hf,litert")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--workdir", default="/tmp/peers")
    ap.add_argument("--no-keep", action="store_true", help="delete artifacts after use")
    ap.add_argument("--no-reuse", action="store_true", help="rebuild even when outputs exist")
    ap.add_argument("--build-only", action="store_true", help="build/convert, time nothing")
    ap.add_argument("--bandwidth", type=float, default=None, help="GB/s; default: measured as bench_3b.py does")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    bandwidth = args.bandwidth
    if bandwidth is None:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from bench_3b import read_bandwidth_gbs

        bandwidth = read_bandwidth_gbs()
    t0 = time.perf_counter()
    peers = run_peers(args.peers, args.workdir, bandwidth, keep=not args.no_keep, reuse=not args.no_reuse,
                      bench=not args.build_only)
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    merged = dict(previous.get("peers", {}))  # a partial run updates what it ran; a build-only run keeps timings
    for key, row in peers.items():
        if not (row["status"] == "built" and merged.get(key, {}).get("decode_tok_s")):
            merged[key] = row
    doc = {"variant": "3B-224 (decoder half for llamacpp/ortgenai; whole PaliGemma for hf/litert)",
           "weights": "pg2edge random-init, seed 0 (lazy_random_params), f32 on disk",
           "threads": 2, "prefill_positions": 268, "new_tokens": 64, "bandwidth_gbs": round(bandwidth, 2),
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
           "note": args.note or previous.get("note", ""), "last_run_s": round(time.perf_counter() - t0, 1),
           "peers": merged}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
