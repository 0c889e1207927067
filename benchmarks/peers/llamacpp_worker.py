"""llama.cpp through llama-cpp-python: quantize a GGUF, or time prefill + greedy decode of one (run in .venv-peers).

    python llamacpp_worker.py quantize IN.gguf OUT.gguf q4_0|q8_0
    python llamacpp_worker.py bench MODEL.gguf [--no-repack]   # --no-repack: llama.cpp's use_extra_bufts=false
    python llamacpp_worker.py info MODEL.gguf     # tensor types and bytes (for bytes read per token)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from prompt import NEW_TOKENS, THREADS, emit, figures, prompt_ids  # noqa: E402


def quantize(src: str, dst: str, kind: str) -> None:
    """llama_model_quantize with llama.cpp's default mix for the file type (as llama-quantize does)."""
    import llama_cpp

    ftype = {"q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0, "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}[kind]
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread, params.ftype = THREADS, ftype
    t0 = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params)
    if rc != 0:
        raise SystemExit(f"llama_model_quantize returned {rc}")
    emit({"seconds": time.perf_counter() - t0, "bytes": Path(dst).stat().st_size})


def info(path: str) -> dict:
    """Tensor count, bytes per ggml type, and whether the LM head is tied to token_embd."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    by_type: dict[str, int] = {}
    names = set()
    for t in reader.tensors:
        by_type[t.tensor_type.name] = by_type.get(t.tensor_type.name, 0) + int(t.n_bytes)
        names.add(t.name)
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    return {"tensors": len(reader.tensors), "tensor_bytes": sum(by_type.values()), "bytes_by_type": by_type,
            "token_embd_type": embd.tensor_type.name, "token_embd_bytes": int(embd.n_bytes),
            "lm_head_tied": "output.weight" not in names}


def next_token(llm) -> int:
    """Greedy id from the last evaluated position (the only row eval() asks llama.cpp to output)."""
    return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))))


def generate(llm, ids: list[int], new_tokens: int) -> dict:
    """Prefill `ids`, then greedy-decode; never stops at eos."""
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    tok = next_token(llm)
    prefill = time.perf_counter() - t0
    out, steps = [tok], []
    t0 = time.perf_counter()
    for _ in range(new_tokens - 1):
        t = time.perf_counter()
        llm.eval([tok])
        tok = next_token(llm)
        out.append(tok)
        steps.append(time.perf_counter() - t)
    return {**figures(prefill, time.perf_counter() - t0, new_tokens - 1, steps), "tokens": out[:8]}


def _no_extra_bufts() -> None:
    """What llama.cpp's --no-repack does: no AMX / CPU_REPACK weight buffers (Llama() has no argument for it)."""
    import llama_cpp
    import llama_cpp.llama as module

    default = llama_cpp.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    module.llama_cpp.llama_model_default_params = params


def bench(path: str, *flags: str) -> None:
    """Load with n_ctx=1024, 2 threads, n_batch=512; two generations, the second reported."""
    if "--no-repack" in flags:
        _no_extra_bufts()
    from llama_cpp import Llama

    t0 = time.perf_counter()
    llm = Llama(model_path=path, n_ctx=1024, n_threads=THREADS, n_threads_batch=THREADS, n_batch=512,
                verbose=False)
    load_s = time.perf_counter() - t0
    ids = prompt_ids()
    cold = generate(llm, ids, NEW_TOKENS)
    warm = generate(llm, ids, NEW_TOKENS)
    emit({**warm, "load_s": round(load_s, 2), "cold_prefill_s": cold["prefill_s"],
          "cold_decode_tok_s": cold["decode_tok_s"], "prompt_tokens": len(ids), "info": info(path),
          "system_info": __import__("llama_cpp").llama_print_system_info().decode(), "flags": list(flags)})


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"quantize": quantize, "bench": bench, "info": lambda p: emit(info(p))}[cmd](*args)
