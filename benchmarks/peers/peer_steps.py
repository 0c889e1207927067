"""The steps of each peer group: which commands run, in what order, and how their results become one entry each."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from watch import DEFAULT_LIMIT_GB, run_watched

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
KV_POSITIONS = 268 + 64 // 2  # mean attended positions over the 63 decode steps (~300)


@dataclass
class Context:
    """Where artifacts go, which venvs run the peers, and the memory limit of every step."""

    work: Path
    keep: bool = True
    reuse: bool = True
    bench: bool = True  # False: build/convert only (benchmark later, on a quiet machine)
    limit_gb: float = DEFAULT_LIMIT_GB
    venv: Path = ROOT / ".venv-peers"
    litert_venv: Path = ROOT / ".venv-peers-litert"

    @property
    def llama_dir(self) -> Path:
        """convert_hf_to_gguf.py and its gguf-py, from the llama-cpp-python sdist (setup.sh puts them here)."""
        return Path(os.environ.get("PEERS_WORK", "/tmp/peers")) / "llama.cpp"

    @property
    def py(self) -> str:
        """The peers venv's python."""
        return str(self.venv / "bin" / "python")

    def env(self) -> dict[str, str]:
        """2 threads everywhere, no hub access, caches inside the work dir."""
        return {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2",
                "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "HF_HOME": str(self.work / "hf_home"), "TOKENIZERS_PARALLELISM": "false"}

    def stage(self, name: str, cmd: list, output: Path | None = None, timeout_s: float = 3600) -> dict:
        """Run one watched step; with `reuse`, a build whose `output` exists, or that ran out of memory
        under the same limit before, is not run again (its record is returned)."""
        record, failed = self.work / "stages" / f"{name}.json", self.work / "stages" / f"{name}.failed.json"
        if self.reuse and output is not None and output.exists():
            return self.recorded(name)
        if self.reuse and output is not None and failed.is_file():  # a build that ran out of memory under this limit
            previous = json.loads(failed.read_text())
            if previous.get("limit_gb") == self.limit_gb:
                return {**previous, "reused": True}
        record.parent.mkdir(parents=True, exist_ok=True)
        row = run_watched([str(c) for c in cmd], self.work / "logs" / f"{name}.log", self.limit_gb, timeout_s,
                          self.env())
        if output is not None and row["status"] == "ok":
            record.write_text(json.dumps(row, indent=2) + "\n")
        elif output is not None and row["status"] == "oom":
            failed.write_text(json.dumps({**row, "limit_gb": self.limit_gb}, indent=2) + "\n")
        print(json.dumps({"stage": name, **{k: row.get(k) for k in ("status", "seconds", "peak_rss_gb", "reason")}}),
              flush=True)
        return row

    def recorded(self, name: str) -> dict:
        """A finished build step's record (its output already exists), marked reused."""
        record = self.work / "stages" / f"{name}.json"
        row = json.loads(record.read_text()) if record.is_file() else {"status": "ok", "seconds": None,
                                                                         "peak_rss_gb": None}
        return {**row, "reused": True}

    def timed(self, name: str, cmd: list, timeout_s: float = 3600) -> dict | None:
        """A benchmark step: None when this run only builds."""
        return self.stage(name, cmd, timeout_s=timeout_s) if self.bench else None

    def gemma2(self) -> tuple[Path, dict]:
        """The decoder half as a Gemma 2 HF checkpoint (pg2edge's random-init weights, f32)."""
        out = self.work / "gemma2-3b-f32"
        return out, self.stage("weights_gemma2", [sys.executable, HERE / "weights.py", "gemma2", out], out)

    def paligemma(self) -> tuple[Path, dict]:
        """The whole PaliGemma as an HF checkpoint (f32)."""
        out = self.work / "paligemma-3b-224-f32"
        return out, self.stage("weights_paligemma", [sys.executable, HERE / "weights.py", "paligemma", out], out)


def _brief(row: dict) -> dict:
    """A step's record without its worker output."""
    return {k: row.get(k) for k in ("status", "seconds", "peak_rss_gb", "reason", "reused", "cpu_per_wall",
                                    "loadavg", "log") if k in row}


def entry(build: dict[str, dict], bench: dict | None, bytes_per_token: int | None = None, **extra) -> dict:
    """One peer configuration: the first failing step sets the status; build figures sum/max over build steps."""
    steps = {**build, **({"bench": bench} if bench else {})}
    bad = next((r for r in steps.values() if r.get("status") != "ok"), None)
    result = (bench or {}).get("result") or {}
    row = {"status": "ok" if bench is not None else "built", **({} if bad is None else {"status": bad["status"]})}
    if bad is not None:
        row["reason"] = bad.get("reason", "")
        row["peak_rss_gb"] = bad.get("peak_rss_gb")
    for key in ("prefill_s", "first_token_s", "decode_tok_s", "decode_s", "decode_steps", "decode_step_ms_median",
                "decode_step_ms_min", "load_s", "cold_prefill_s", "cold_first_token_s", "cold_decode_tok_s", "tokens"):
        if key in result:
            row[key] = result[key]
    if bench and bench.get("status") == "ok":
        row["run_peak_rss_gb"] = bench["peak_rss_gb"]
        row["bench_cpu_per_wall"] = bench.get("cpu_per_wall")  # 2.0 = both cores for the whole run
        row["bench_loadavg"] = bench.get("loadavg")
    timed = [r for r in build.values() if r.get("seconds") is not None]
    row["build_s"] = round(sum(r["seconds"] for r in timed), 1) if timed else None
    row["build_peak_rss_gb"] = max((r["peak_rss_gb"] for r in timed), default=None)
    row["bytes_per_token"] = bytes_per_token
    row.update(extra)
    row["stages"] = {name: _brief(r) for name, r in steps.items()}
    return row


def kv_bytes(itemsize: int, positions: int = KV_POSITIONS) -> int:
    """K and V of every layer for `positions` tokens (3B: 26 layers x 4 kv heads x 256)."""
    return 2 * 26 * 4 * 256 * positions * itemsize


def _skipped(why: str) -> dict:
    """A step not run because an earlier one failed."""
    return {"status": "failed", "reason": why, "seconds": None, "peak_rss_gb": None}


def llamacpp(ctx: Context) -> dict:
    """convert_hf_to_gguf.py to an f32 GGUF, llama_model_quantize to Q4_0 and Q8_0, then bench each."""
    hf, weights = ctx.gemma2()
    worker = HERE / "llamacpp_worker.py"
    gguf = ctx.work / "gguf"
    f32, outs = gguf / "gemma2-3b-f32.gguf", {q: gguf / f"gemma2-3b-{q}.gguf" for q in ("q4_0", "q8_0")}
    gguf.mkdir(parents=True, exist_ok=True)
    need_convert = not (ctx.reuse and all(p.exists() for p in outs.values()))
    convert = (ctx.stage("llamacpp_convert", [ctx.py, ctx.llama_dir / "convert_hf_to_gguf.py", hf,
                                              "--outtype", "f32", "--outfile", f32], f32)
               if weights["status"] == "ok" and need_convert else weights if need_convert else
               ctx.recorded("llamacpp_convert"))
    rows = {}
    for q, out in outs.items():
        quant = (ctx.stage(f"llamacpp_quantize_{q}", [ctx.py, worker, "quantize", f32, out, q], out)
                 if convert["status"] == "ok" else _skipped("convert failed"))
        bench = ctx.timed(f"llamacpp_bench_{q}", [ctx.py, worker, "bench", out]) if quant["status"] == "ok" else None
        info = (ctx.stage(f"llamacpp_info_{q}", [ctx.py, worker, "info", out]).get("result") or {}
                if out.exists() else {})
        per_token = info["tensor_bytes"] + kv_bytes(2) if "tensor_bytes" in info else None
        rows[f"llamacpp_{q}"] = entry({"convert": convert, "quantize": quant}, bench, per_token,
                                      model_bytes=out.stat().st_size if out.exists() else None, gguf_info=info,
                                      weights_stage=_brief(weights))
    if all(p.exists() for p in outs.values()):
        f32.unlink(missing_ok=True)  # a 10 GB intermediate
    if not ctx.keep:
        shutil.rmtree(gguf, ignore_errors=True)
    return rows


def _ortgenai_build(ctx: Context, q: str, extra: list[str], out: Path, hf: Path, weights: dict) -> dict:
    """The model builder on the f32 checkpoint; its record is kept in OUT/peers_build.json for `reuse`.

    The builder loads the torch model in f32 (a bf16 checkpoint is upcast: no lower peak) and then
    holds an f32 ONNX copy beside it while MatMulNBitsQuantizer runs: ~20 GB for this model.
    """
    marker, failed = out / "peers_build.json", ctx.work / "stages" / f"ortgenai_build_{q}.failed.json"
    if ctx.reuse and marker.is_file() and (out / "genai_config.json").is_file():
        return {**json.loads(marker.read_text()), "reused": True}
    if ctx.reuse and failed.is_file():  # ran out of memory under this same limit before: not again
        previous = json.loads(failed.read_text())
        if previous.get("limit_gb") == ctx.limit_gb:
            return {**previous, "reused": True}
    if weights["status"] != "ok":
        return weights
    shutil.rmtree(out, ignore_errors=True)
    build = ctx.stage(f"ortgenai_build_{q}", [ctx.py, "-m", "onnxruntime_genai.models.builder", "-i", hf, "-o", out,
                                              "-p", q, "-e", "cpu", "-c", ctx.work / "ortgenai-cache", *extra])
    shutil.rmtree(ctx.work / "ortgenai-cache", ignore_errors=True)
    record = {k: v for k, v in build.items() if k != "result"}
    if build["status"] == "ok":
        marker.write_text(json.dumps(record, indent=2) + "\n")
        failed.unlink(missing_ok=True)
    else:
        shutil.rmtree(out, ignore_errors=True)
        if build["status"] == "oom":
            failed.parent.mkdir(parents=True, exist_ok=True)
            failed.write_text(json.dumps({**record, "limit_gb": ctx.limit_gb}, indent=2) + "\n")
    return build


def ortgenai(ctx: Context) -> dict:
    """The model builder (int4 block 32 accuracy 4, and int8), then bench, graph inspection and a decode profile."""
    hf, weights = ctx.gemma2()
    worker = HERE / "ortgenai_worker.py"
    rows = {}
    for q, extra in (("int4", ["--extra_options", "block_size=32", "accuracy_level=4"]), ("int8", [])):
        out = ctx.work / f"ortgenai-{q}"
        build = _ortgenai_build(ctx, q, extra, out, hf, weights)
        if build["status"] != "ok":
            rows[f"ortgenai_{q}"] = entry({"build": build}, None, weights_stage=_brief(weights))
            continue
        inspect = ctx.stage(f"ortgenai_inspect_{q}", [ctx.py, worker, "inspect", out])
        bench = ctx.timed(f"ortgenai_bench_{q}", [ctx.py, worker, "bench", out])
        prof_dir = ctx.work / "profiles"
        prof_dir.mkdir(parents=True, exist_ok=True)
        profile = ctx.timed(f"ortgenai_profile_{q}", [ctx.py, worker, "profile", out, prof_dir / f"ortgenai_{q}"]) or {}
        graph = inspect.get("result") or {}
        per_token = graph["weight_bytes_per_token"] + kv_bytes(4) if graph else None
        model_bytes = sum(p.stat().st_size for p in out.iterdir() if p.suffix in (".onnx", ".data"))
        rows[f"ortgenai_{q}"] = entry({"build": build}, bench, per_token, model_bytes=model_bytes, graph=graph,
                                      decode_profile=(profile.get("result") or {}).get("decode_profile"),
                                      profile_status=_brief(profile), weights_stage=_brief(weights))
        if not ctx.keep:
            shutil.rmtree(out, ignore_errors=True)
    return rows


def _text_param_bytes(itemsize: int) -> int:
    """Decoder weights HF reads per decode step (tied embedding = LM head, read whole)."""
    sys.path.insert(0, str(ROOT))
    from pg2edge.checkpoint.hf_mapping import padded_vocab
    from pg2edge.config import get_config
    from pg2edge.param_layout import param_shapes

    cfg = get_config("3B", 224)
    n = sum(math.prod(s) for k, s in param_shapes(cfg).items() if k.startswith("llm/"))
    n += (padded_vocab(cfg.text.vocab_size) - cfg.text.vocab_size) * cfg.text.width
    return n * itemsize


def hf(ctx: Context) -> dict:
    """HF transformers on the whole PaliGemma, f32 and bf16 (image + prompt prefill, greedy decode)."""
    pali, weights = ctx.paligemma()
    rows = {}
    for dtype, key, itemsize in (("float32", "hf_f32", 4), ("bfloat16", "hf_bf16", 2)):
        bench = (ctx.timed(f"hf_bench_{dtype}", [ctx.py, HERE / "hf_worker.py", pali, dtype], timeout_s=5400)
                 if weights["status"] == "ok" else None)
        rows[key] = entry({"weights": weights} if bench is None else {}, bench,
                          _text_param_bytes(itemsize) + kv_bytes(itemsize), weights_stage=_brief(weights))
    return rows


def litert(ctx: Context) -> dict:
    """litert-torch's own PaliGemma 2 converter on the same HF checkpoint (expected to run out of memory)."""
    pali, weights = ctx.paligemma()
    py = ctx.litert_venv / "bin" / "python"
    if not py.exists():
        return {"litert": entry({"convert": _skipped(f"{py} missing: run PEERS_LITERT=1 setup.sh")}, None)}
    out = ctx.work / "litert-out"
    convert = (ctx.stage("litert_convert", [py, HERE / "litert_worker.py", pali, out], out / "done.json",
                         timeout_s=5400) if weights["status"] == "ok" else weights)
    row = entry({"convert": convert}, None, weights_stage=_brief(weights), converter=(convert.get("result") or {}))
    if row["status"] == "ok":
        row.update(status="converted", reason="the .tflite was written; running it is not measured here")
    if not ctx.keep:
        shutil.rmtree(out, ignore_errors=True)
    return {"litert": row}


PEERS = {"llamacpp": llamacpp, "ortgenai": ortgenai, "hf": hf, "litert": litert}
