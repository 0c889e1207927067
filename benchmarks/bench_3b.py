"""Full-size performance of pg2edge on random-init PaliGemma 2 3B-224, in one run.

For each pg2edge artifact (ONNX int4 / int8, TFLite int4 / int8): conversion time and peak RSS,
bundle size, runtime peak RSS, vision latency, image + 12-token prompt (268
prefill positions) to first token, and decode tokens/s over 64 greedy tokens.
Also the machine's memory read bandwidth and a roofline for decode (tokens/s
as a fraction of bandwidth / bytes read per token), and an onnxruntime profile
of one decode step (which ops take the time).

Peers (HF transformers, litert-torch, onnxruntime-genai, llama.cpp) are run
by `--peers` only when their packages are installed; otherwise they are
recorded as "not run" and the ratio keys are null: ratios are only ever taken
against peers measured in the same run.

    OPENBLAS_CORETYPE= OPENBLAS_L2_SIZE= .venv/bin/python benchmarks/bench_3b.py
Writes benchmarks/results/3b_224.json, 3b_224.md and 3b_224.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from convert_memory import markdown as convert_markdown  # noqa: E402
from convert_memory import measure as measure_convert  # noqa: E402

RESULTS = Path(__file__).parent / "results"
PROMPT = "answer en what color is the circle on the left"  # 12 prompt tokens with <bos> and "\n"

_RUNTIME_PROBE = r"""
import json, resource, sys, time
import numpy as np
from PIL import Image
from pg2edge.runtime.engine import Engine
bundle, prompt, n, backend = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
t0 = time.perf_counter()
engine = Engine(bundle, backend=backend, verify=False, low_memory=sys.argv[5] == "low")
image = Image.fromarray(np.random.RandomState(0).randint(0, 255, (480, 640, 3), dtype=np.uint8))
ids = engine.prompt_ids(prompt)
runs = []
for _ in range(2):  # the first run includes session creation (weights prepacked once)
    t = time.perf_counter()
    r = engine.generate(image, prompt, max_new_tokens=n, stop_at_eos=False)
    runs.append({"wall_s": time.perf_counter() - t, **r.timings.to_dict()})
print(json.dumps({"prompt_tokens": len(ids), "prefill_positions": engine.num_image_tokens + len(ids),
                  "runs": runs, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
"""


def runtime_figures(bundle: Path, new_tokens: int, backend: str = "onnx", low_memory: bool = False) -> dict:
    """Run the bundle in a fresh process (its peak RSS is the runtime's own)."""
    proc = subprocess.run([sys.executable, "-c", _RUNTIME_PROBE, str(bundle), PROMPT, str(new_tokens), backend,
                           "low" if low_memory else "keep"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return {"ok": False, "error": proc.stderr.strip().splitlines()[-1][:300]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    warm = out["runs"][-1]
    return {"ok": True, "prompt_tokens": out["prompt_tokens"], "prefill_positions": out["prefill_positions"],
            "vision_s": warm["vision_ms"] / 1000, "first_token_s": (warm["vision_ms"] + warm["prefill_ms"]) / 1000,
            "decode_tok_s": warm["decode_tok_s"], "cold_first_run_s": out["runs"][0]["wall_s"],
            "runtime_peak_rss_gb": out["peak_rss_gb"]}


def read_bandwidth_gbs(gigabytes: float = 1.0, threads: int = 2, repeats: int = 3) -> float:
    """Streaming read bandwidth: every thread sums its own slice of a large array (numpy releases the GIL)."""
    n = int(gigabytes * 1e9 / 4)
    data = np.ones(n, np.float32)
    chunks = np.array_split(data, threads)
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        workers = [threading.Thread(target=np.add.reduce, args=(c,)) for c in chunks]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = max(best, data.nbytes / (time.perf_counter() - t) / 1e9)
    return best


def _onnx_decoder_part(manifest: dict) -> str:
    """`step` (one graph for prompt and decode) in current ONNX bundles, `decode` in older ones."""
    return "step" if "step" in manifest["backends"]["onnx"] else "decode"


PROMPT_POSITIONS = 268  # 256 image tokens + the 12-token prompt


def mean_filled_slots(new_tokens: int) -> int:
    """Cache slots filled, on average, during the measured decode (the prompt, then one per token)."""
    return PROMPT_POSITIONS + new_tokens // 2


def decode_bytes_per_token(bundle: Path, backend: str = "onnx", filled_slots: int | None = None) -> int:
    """Bytes a decode step reads: its weights (every initializer of the ONNX decoder graph, or every file
    of the TFLite decode stages) plus the KV cache it reads: every slot for TFLite's decode, the
    `filled_slots` written so far for ONNX's `step` (GroupQueryAttention reads no more)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    part = "decode" if backend == "tflite" else _onnx_decoder_part(manifest)
    total = 0
    if backend == "tflite":
        files = {f for f, _ in manifest["backends"]["tflite"]["decode"]["stages"]}
        total += sum((bundle / f).stat().st_size for f in files)
    else:
        import onnx
        from onnx import TensorProto

        model = onnx.load(str(bundle / "onnx" / f"{part}.onnx"), load_external_data=False)
        for t in model.graph.initializer:
            if t.data_location == TensorProto.EXTERNAL:
                total += int({e.key: e.value for e in t.external_data}["length"])
            else:
                total += len(t.raw_data)
    slots = manifest["sequence"]["max_len"]
    if part == "step" and filled_slots is not None:
        slots = filled_slots
    for spec in manifest["parts"][part]["inputs"]:
        if spec["name"].startswith(("k_", "v_")):
            shape = [slots if i == 2 else d for i, d in enumerate(spec["shape"])]
            total += int(np.prod(shape)) * 4
    return total


def profile_decode(bundle: Path, steps: int = 5, pos: int = 300, warmup: int = 3) -> list[dict]:
    """Share of decode-step time per ONNX op type (onnxruntime's profiler), at cache position `pos`, with the
    cache bound in and out as the runtime binds it; the first `warmup` steps (first-run allocations: a
    GroupQueryAttention call takes ~40x longer once) are left out."""
    import onnxruntime as ort

    from pg2edge.runtime.backends import OnnxStepDecoder

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.intra_op_num_threads = len(os.sched_getaffinity(0))
    manifest = json.loads((bundle / "manifest.json").read_text())
    part = _onnx_decoder_part(manifest)
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = str(Path(tmp) / "decode")
        session = ort.InferenceSession(str(bundle / "onnx" / f"{part}.onnx"), opts, providers=["CPUExecutionProvider"])
        if part == "step":
            kv = [s for s in manifest["parts"][part]["inputs"] if s["name"].startswith(("k_", "v_"))]
            decoder = OnnxStepDecoder(ort, session, kv, (1, manifest["parts"][part]["outputs"][0]["shape"][1]))
            run = lambda: decoder.step(0, pos)  # noqa: E731
        else:
            feeds = {i.name: np.zeros(i.shape, np.int32 if "int32" in i.type else np.float32)
                     for i in session.get_inputs()}
            feeds["pos"][:] = pos
            run = lambda: session.run(None, feeds)  # noqa: E731
        for _ in range(warmup + steps):
            run()
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[warmup:]
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and any(a <= e["ts"] <= b for a, b in runs):
            per_op[e["args"]["op_name"]] = per_op.get(e["args"]["op_name"], 0.0) + e["dur"]
    total = sum(per_op.values())
    rows = [{"op": op, "ms_per_step": us / steps / 1000, "share": us / total} for op, us in per_op.items()]
    return sorted(rows, key=lambda r: -r["share"])[:10]


def plot(result: dict, path: Path) -> None:
    """Decode tokens/s and first-token seconds per artifact (and peers, when measured)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(a["name"], a.get("decode_tok_s") or 0, a.get("first_token_s") or 0) for a in result["artifacts"]]
    rows += [(name, p.get("decode_tok_s") or 0, p.get("first_token_s") or 0)
             for name, p in result["peers"].items() if p.get("decode_tok_s")]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
    a1.barh([r[0] for r in rows], [r[1] for r in rows], color="tab:blue")
    a1.set_xlabel("decode tokens/s (higher is better)")
    a2.barh([r[0] for r in rows], [r[2] for r in rows], color="tab:orange")
    a2.set_xlabel("image + prompt to first token, s (lower is better)")
    fig.suptitle("PaliGemma 2 3B-224 (random-init), 2 threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def markdown(result: dict) -> str:
    lines = ["# PaliGemma 2 3B-224 on this machine (random-init weights)", "",
             f"Memory read bandwidth: {result['bandwidth_gbs']:.1f} GB/s (numpy streaming sum; a lower bound: "
             "compiled kernels reach more, so roofline fractions can exceed 1)", "",
             "| artifact | convert s | convert peak RSS GB | bundle GB | runtime peak RSS GB | vision s | "
             "first token s | decode tok/s | roofline fraction |", "|---|---|---|---|---|---|---|---|---|"]
    for a in result["artifacts"]:
        name = a["name"] + (" (previous run)" if a.get("from_previous_run") else "")
        lines.append(f"| {name} | {a['convert_s']:.0f} | {a['convert_peak_rss_gb']:.2f} | {a['bundle_gb']:.2f} | "
                     f"{a.get('runtime_peak_rss_gb', float('nan')):.2f} | {a.get('vision_s', float('nan')):.2f} | "
                     f"{a.get('first_token_s', float('nan')):.2f} | {a.get('decode_tok_s', float('nan')):.2f} | "
                     f"{a.get('roofline_fraction', float('nan')):.2f} |")
    lines += ["", "Peers, measured in this run on the same weights (llama.cpp and onnxruntime-genai run the "
              "Gemma 2 decoder half: 268-token prefill, then decode):", "",
              "| peer | status | prefill / first token s | decode tok/s | pg2edge int4 decode ratio | run peak RSS GB | "
              "build s | build peak RSS GB |", "|---|---|---|---|---|---|---|---|"]
    best = result.get("decode_tok_s_int4")
    for name, p in result["peers"].items():
        tok_s = p.get("decode_tok_s")
        ratio = f"{best / tok_s:.2f}x" if best and tok_s else ""
        lines.append(f"| {name} | {p.get('status', '')} {p.get('reason', '')[:60]} | "
                     f"{_fmt(p.get('first_token_s') or p.get('prefill_s'))} | {_fmt(tok_s)} | {ratio} | "
                     f"{_fmt(p.get('run_peak_rss_gb'))} | {_fmt(p.get('build_s'), 0)} | "
                     f"{_fmt(p.get('build_peak_rss_gb'))} |")
    for name, rows in result.get("decode_profiles", {}).items():
        lines += ["", f"Decode step profile ({name}, onnxruntime):", "", "| op | ms/step | share |", "|---|---|---|"]
        lines += [f"| {r['op']} | {r['ms_per_step']:.1f} | {100 * r['share']:.0f}% |" for r in rows]
    return "\n".join(lines) + "\n"


def _artifact(fmt: str, quant: str, block: str, low: bool, convert_row: dict, formats: str) -> dict:
    """One artifact's row, with the figures of the conversion that wrote it (several formats: their total)."""
    name = f"pg2edge {fmt} {quant}" + (f" block {block}" if block else "") + (" low-memory" if low else "")
    bundle_gb = sum(p.stat().st_size for p in (Path(convert_row.get("out", "")) / fmt).glob("*")) / 1e9 \
        if convert_row.get("out") else convert_row["bundle_gb"]
    return {"name": name, "format": fmt, "quant": quant, "block": int(block) if block else 32, "low_memory": low,
            "converted_with": formats.split("+"), "convert_s": convert_row["seconds"],
            "convert_peak_rss_gb": convert_row["peak_rss_gb"], "bundle_gb": bundle_gb, "convert_ok": convert_row["ok"]}


def _ratio(ours: dict, peer: dict | None) -> float | None:
    """Our decode tokens/s over a peer's, only when both were measured in this run."""
    if not peer or not peer.get("decode_tok_s") or not ours.get("decode_tok_s"):
        return None
    return round(ours["decode_tok_s"] / peer["decode_tok_s"], 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quants", default="onnx:int4:128,onnx:int4:128:low,onnx:int8,tflite:int8,onnx+tflite:int4",
                    help="format[+format]:quant[:block][:low] per conversion (onnx+tflite: one convert writes "
                         "both, each is run; low: the runtime's low-memory mode)")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--extra", default="--max-len 1024 --prefill 16,512")
    ap.add_argument("--workdir", default=None, help="keep bundles here (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where 3b_224.{json,md,png} go")
    ap.add_argument("--peers", default="", help="comma list: llamacpp,ortgenai,hf,litert (benchmarks/peers)")
    ap.add_argument("--peers-workdir", default="/tmp/peers")
    ap.add_argument("--keep-previous", action="store_true",
                    help="carry over the artifact rows of --out's 3b_224.json that this run does not measure "
                         "(marked from_previous_run; ratios use this run's rows and peers only)")
    args = ap.parse_args()
    from threadpoolctl import threadpool_info

    from pg2edge.bench.machine import machine_info

    result: dict = {"variant": "3B-224", "weights": "random-init", "threads": len(os.sched_getaffinity(0)),
                    "machine": machine_info(),
                    "threadpools": [{k: p.get(k) for k in ("internal_api", "num_threads")} for p in threadpool_info()],
                    "artifacts": [], "peers": {}}
    result["bandwidth_gbs"] = read_bandwidth_gbs()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="pg2edge-3b-"))
    converted: dict = {}
    for spec in args.quants.split(","):
        formats, quant, *rest = spec.split(":")
        block = next((r for r in rest if r.isdigit()), "")
        low = "low" in rest
        if (formats, quant, block) not in converted:  # a low-memory run reuses the bundle converted before it
            extra = args.extra.split() + (["--block", block] if block else [])
            converted[formats, quant, block] = measure_convert("3B", 224, formats.replace("+", ","), quant, extra,
                                                               work, keep=True, tag=block)
        row = converted[formats, quant, block]
        bundle = work / f"3B-224-{formats.replace('+', ',')}-{quant}{'-b' + block if block else ''}"
        for fmt in formats.split("+"):  # "onnx+tflite": one convert writes both, each format is measured
            art = _artifact(fmt, quant, block, low, row, formats)
            if row["ok"]:
                art.update(runtime_figures(bundle, args.new_tokens, fmt, low))
                art["bytes_per_token"] = decode_bytes_per_token(bundle, fmt, mean_filled_slots(args.new_tokens))
                ceiling = result["bandwidth_gbs"] * 1e9 / art["bytes_per_token"]
                art["roofline_tok_s"] = ceiling
                art["roofline_fraction"] = art.get("decode_tok_s", 0) / ceiling
                if quant == "int4" and fmt == "onnx" and not low:
                    result.setdefault("decode_profiles", {})[art["name"]] = profile_decode(bundle)
            else:
                art["error"] = row.get("error")
            result["artifacts"].append(art)
            print(json.dumps(art), flush=True)
    if args.keep_previous and (args.out / "3b_224.json").exists():
        measured = {a["name"] for a in result["artifacts"]}
        previous = json.loads((args.out / "3b_224.json").read_text())["artifacts"]
        result["artifacts"] += [dict(a, from_previous_run=True) for a in previous if a["name"] not in measured]
    if args.peers:
        sys.path.insert(0, str(Path(__file__).parent / "peers"))
        from run import run_peers

        result["peers"] = run_peers(args.peers, args.peers_workdir, bandwidth_gbs=result["bandwidth_gbs"])
    int4s = [a for a in result["artifacts"] if a["quant"] == "int4" and a.get("decode_tok_s")
             and not a.get("from_previous_run")]
    int4 = max((a for a in int4s if not a["low_memory"]), key=lambda a: a["decode_tok_s"], default={})  # the best
    lean = max((a for a in int4s if a["low_memory"]), key=lambda a: a["decode_tok_s"], default={})
    result["low_memory_int4"] = {k: lean.get(k) for k in ("name", "decode_tok_s", "first_token_s",
                                                         "runtime_peak_rss_gb", "cold_first_run_s")}
    result["best_int4_artifact"] = int4.get("name")
    by_format = {fmt: [a["convert_peak_rss_gb"] for a in result["artifacts"] if a["converted_with"] == [fmt]]
                 for fmt in ("onnx", "tflite")}
    both = [a["convert_peak_rss_gb"] for a in result["artifacts"] if len(a["converted_with"]) > 1]
    result["convert_peak_rss_gb_both_formats"] = max(both, default=None)
    result.update({
        "convert_peak_rss_gb": max(a["convert_peak_rss_gb"] for a in result["artifacts"]),
        "convert_peak_rss_gb_onnx": max(by_format["onnx"], default=None),
        "convert_peak_rss_gb_tflite": max(by_format["tflite"], default=None),
        "decode_tok_s_int4": int4.get("decode_tok_s"), "first_token_s_int4": int4.get("first_token_s"),
        "runtime_peak_rss_gb_int4": int4.get("runtime_peak_rss_gb"), "artifact_gb_int4": int4.get("bundle_gb"),
        "decode_ratio_vs_ortgenai_int4": _ratio(int4, result["peers"].get("ortgenai_int4")),
        "decode_ratio_vs_llamacpp_q4_0": _ratio(int4, result["peers"].get("llamacpp_q4_0")),
    })
    args.out.mkdir(parents=True, exist_ok=True)
    rows = list(converted.values())  # the conversions, also as convert_memory.py writes them
    if args.keep_previous and (args.out / "convert_3b.json").exists():
        done = {r["command"] for r in rows}
        rows += [dict(r, from_previous_run=True) for r in json.loads((args.out / "convert_3b.json").read_text())["rows"]
                 if r["command"] not in done and r["format"] not in {x["format"] for x in rows}]
    (args.out / "convert_3b.json").write_text(json.dumps({"machine": result["machine"], "rows": rows}, indent=2) + "\n")
    (args.out / "convert_3b.md").write_text("# convert: 3B-224, random-init (bench_3b.py)\n\n" + convert_markdown(rows))
    (args.out / "3b_224.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "3b_224.md").write_text(markdown(result))
    plot(result, args.out / "3b_224.png")
    print(markdown(result))


if __name__ == "__main__":
    main()
