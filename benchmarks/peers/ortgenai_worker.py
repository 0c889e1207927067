"""onnxruntime-genai: time prefill + greedy decode of a builder output, profile decode steps, inspect the graph.

Run in .venv-peers:
    python ortgenai_worker.py bench MODEL_DIR
    python ortgenai_worker.py profile MODEL_DIR PROFILE_PREFIX [STEPS]
    python ortgenai_worker.py inspect MODEL_DIR
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from prompt import NEW_TOKENS, THREADS, emit, figures, prompt_ids  # noqa: E402


def load(model_dir: str, extra_session_options: dict | None = None):
    """og.Model on CPU with 2 intra-op threads (plus any extra session options), via a config overlay."""
    import onnxruntime_genai as og

    config = og.Config(model_dir)
    config.clear_providers()
    options = {"intra_op_num_threads": THREADS, **(extra_session_options or {})}
    config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    return og, og.Model(config)


def generate(og, model, ids: list[int], new_tokens: int, capacity: int) -> dict:
    """append_tokens runs the prefill; each generate_next_token after the first runs one decode step.

    `capacity` (the KV buffer length) must be at least the sliding window: GroupQueryAttention's
    sliding_window_cache refuses a shorter cache. min_length = capacity keeps eos from ending it.
    """
    params = og.GeneratorParams(model)
    total = max(len(ids) + new_tokens, capacity)
    params.set_search_options(max_length=total, min_length=total, do_sample=False)
    gen = og.Generator(model, params)
    t0 = time.perf_counter()
    gen.append_tokens(ids)
    gen.generate_next_token()
    out = [int(gen.get_next_tokens()[0])]
    prefill = time.perf_counter() - t0
    steps = []
    t0 = time.perf_counter()
    for _ in range(new_tokens - 1):
        t = time.perf_counter()
        gen.generate_next_token()
        out.append(int(gen.get_next_tokens()[0]))
        steps.append(time.perf_counter() - t)
    return {**figures(prefill, time.perf_counter() - t0, new_tokens - 1, steps), "tokens": out[:8]}


def capacity(model_dir: str) -> int:
    """The sliding window from genai_config.json (0 when there is none)."""
    cfg = json.loads((Path(model_dir) / "genai_config.json").read_text())
    return int(cfg["model"]["decoder"].get("sliding_window", {}).get("window_size", 0))


def bench(model_dir: str) -> None:
    """Two generations in one process; the second (warm) is reported."""
    t0 = time.perf_counter()
    og, model = load(model_dir)
    load_s = time.perf_counter() - t0
    ids, cap = prompt_ids(), capacity(model_dir)
    cold = generate(og, model, ids, NEW_TOKENS, cap)
    warm = generate(og, model, ids, NEW_TOKENS, cap)
    emit({**warm, "load_s": round(load_s, 2), "cold_prefill_s": cold["prefill_s"],
          "cold_decode_tok_s": cold["decode_tok_s"], "prompt_tokens": len(ids),
          "kv_capacity": max(cap, len(ids) + NEW_TOKENS),
          "og_version": og.__version__})


def profile(model_dir: str, prefix: str, steps: str = "16") -> None:
    """ORT's profiler over a prefill + `steps` decode steps; per op type, mean kernel time of a decode step."""
    og, model = load(model_dir, {"enable_profiling": prefix})
    generate(og, model, prompt_ids(), int(steps) + 1, capacity(model_dir))
    del model  # the profile file is written when the session ends
    files = sorted(Path(prefix).parent.glob(Path(prefix).name + "*.json"), key=lambda p: p.stat().st_mtime)
    emit({"profile_file": str(files[-1]), "decode_profile": summarize(json.loads(files[-1].read_text()))})


def summarize(events: list[dict]) -> dict:
    """Kernel time per op type over decode runs (every model_run after the first, the prefill)."""
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    decode = runs[1:]
    per_op: Counter = Counter()
    per_node: Counter = Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            if any(r["ts"] <= e["ts"] <= r["ts"] + r["dur"] for r in decode):
                per_op[e["args"]["op_name"]] += e["dur"]
                per_node[(e["args"]["op_name"], _node_kind(e["name"][:-len("_kernel_time")]))] += e["dur"]
    total = sum(per_op.values())
    step_us = sum(r["dur"] for r in decode) / max(1, len(decode))
    rows = [{"op": op, "ms_per_step": round(us / len(decode) / 1000, 2), "share": round(us / total, 3)}
            for op, us in per_op.most_common()]
    kinds = [{"op": op, "node": kind, "ms_per_step": round(us / len(decode) / 1000, 2), "share": round(us / total, 3)}
             for (op, kind), us in per_node.most_common(12)]
    return {"decode_steps": len(decode), "step_ms": round(step_us / 1000, 2), "by_node_kind": kinds,
            "kernel_ms_per_step": round(total / len(decode) / 1000, 2), "ops": rows,
            "prefill_ms": round(runs[0]["dur"] / 1000, 1) if runs else None}


def _node_kind(name: str) -> str:
    """A node name with its layer number dropped: /model/layers.3/attn/o_proj/MatMul -> /model/layers.N/attn/..."""
    return re.sub(r"layers\.\d+", "layers.N", name)


def inspect(model_dir: str) -> None:
    """Op counts, MatMulNBits/GQA attributes, the LM head's form, session options, bytes read per decode token."""
    import onnx
    from onnx import TensorProto, helper

    cfg = json.loads((Path(model_dir) / "genai_config.json").read_text())
    model = onnx.load(str(Path(model_dir) / cfg["model"]["decoder"]["filename"]), load_external_data=False)
    sizes = {}
    for t in model.graph.initializer:
        ext = {e.key: e.value for e in t.external_data}
        sizes[t.name] = int(ext["length"]) if t.data_location == TensorProto.EXTERNAL else len(t.raw_data)
    ops = Counter(n.op_type for n in model.graph.node)
    attrs = lambda n: {a.name: helper.get_attribute_value(a) for a in n.attribute}  # noqa: E731
    mnb = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    mnb_attrs = Counter(json.dumps({k: v for k, v in attrs(n).items() if k in ("bits", "block_size", "accuracy_level")},
                                   sort_keys=True) for n in mnb)
    gqa = next((attrs(n) for n in model.graph.node if n.op_type == "GroupQueryAttention"), None)
    lm_head = next((n for n in model.graph.node if "lm_head" in n.name), None)
    producers = {o: n for n in model.graph.node for o in n.output}  # a table may come through a Reshape
    table = lambda n: producers[n.input[0]].input[0] if n.input[0] in producers else n.input[0]  # noqa: E731
    gathers = [n for n in model.graph.node if n.op_type in ("Gather", "GatherBlockQuantized") and table(n) in sizes]
    computed = {i for n in model.graph.node if n.op_type not in ("Gather", "GatherBlockQuantized", "Reshape")
                for i in n.input}
    shared = {table(n) for n in gathers if table(n) in computed}  # the tied LM head reads the whole table
    gathered_only = sum(sizes[table(n)] for n in gathers if table(n) not in shared)  # one row read per token
    emit({"ops": dict(ops.most_common()), "matmulnbits": {k: v for k, v in mnb_attrs.items()},
          "gqa_attributes": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (gqa or {}).items()},
          "lm_head": None if lm_head is None else {"op": lm_head.op_type, "name": lm_head.name,
                                                   **{k: v for k, v in attrs(lm_head).items() if k != "name"}},
          "embedding": [{"op": n.op_type, "table": table(n), "bytes": sizes[table(n)],
                         "shared_with_matmul": table(n) in shared, **attrs(n)} for n in gathers],
          "initializer_bytes": sum(sizes.values()), "embedding_gather_only_bytes": gathered_only,
          "weight_bytes_per_token": sum(sizes.values()) - gathered_only,
          "session_options": cfg["model"]["decoder"]["session_options"], "search": cfg["search"],
          "kv_cache": {i.name: [onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type),
                                [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]]
                       for i in model.graph.input[2:4]}})


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"bench": bench, "profile": profile, "inspect": inspect}[cmd](*args)
