"""Fidelity check on the tiny config: llama.cpp (f32 GGUF) and onnxruntime-genai (fp32) see the decoder HF sees.

Writes pg2edge's tiny random-init decoder as a Gemma 2 checkpoint, converts it
with each peer's own tool, and compares last-position logits of an 8-token
prompt with HF transformers' Gemma2ForCausalLM (eager attention, soft-caps on).
Run in .venv-peers (seconds):  .venv-peers/bin/python benchmarks/peers/check_tiny.py [WORKDIR]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from weights import write_gemma2  # noqa: E402

IDS = [2, 120, 130, 140, 150, 160, 170, 108]  # shorter than tiny's 16-token sliding window


def hf_logits(path: Path) -> np.ndarray:
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(torch.tensor([IDS])).logits[0, -1].numpy()


def llamacpp_logits(path: Path, llama_dir: Path) -> np.ndarray:
    from llama_cpp import Llama

    gguf = path.with_suffix(".gguf")
    subprocess.run([sys.executable, llama_dir / "convert_hf_to_gguf.py", path, "--outtype", "f32", "--outfile", gguf],
                   check=True, capture_output=True)
    llm = Llama(model_path=str(gguf), n_ctx=64, n_threads=2, verbose=False)
    llm.eval(IDS)
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()


def ortgenai_logits(path: Path) -> np.ndarray:
    import onnxruntime_genai as og

    out = path.parent / "ortgenai-fp32"
    subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", path, "-o", out, "-p", "fp32",
                    "-e", "cpu", "-c", path.parent / "cache"], check=True, capture_output=True)
    model = og.Model(str(out))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=16)
    gen = og.Generator(model, params)
    gen.append_tokens(IDS)
    return np.asarray(gen.get_logits())[0, -1]


def main(work: str = "/tmp/peers/check-tiny") -> None:
    work_dir = Path(work)
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    ckpt = work_dir / "gemma2-tiny"
    write_gemma2(ckpt, "tiny", 56)
    ref = hf_logits(ckpt)
    llama_dir = Path(os.environ.get("PEERS_WORK", "/tmp/peers")) / "llama.cpp"
    report = {"hf_argmax": int(ref.argmax()), "logit_scale": float(np.abs(ref).max())}
    for name, logits in (("llamacpp_f32", llamacpp_logits(ckpt, llama_dir)), ("ortgenai_fp32", ortgenai_logits(ckpt))):
        report[name] = {"max_abs_diff": float(np.abs(logits - ref).max()), "argmax": int(logits.argmax())}
    print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
