"""HF transformers on CPU: the whole PaliGemma (image + 12-token prompt = 268 positions), greedy 64 tokens.

Run in .venv-peers:  python hf_worker.py PALIGEMMA_DIR float32|bfloat16
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from prompt import NEW_TOKENS, THREADS, emit, figures, prompt_ids  # noqa: E402

TEXT_TOKENS = 12  # bos + prompt + "\n", as pg2edge's benchmark prompt
NEWLINE_ID = 108


class _Clock:
    """A generate() streamer that timestamps each put (the first put is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def generate(model, inputs: dict, torch) -> dict:
    """One generate(); prefill = image + prompt to the first new token, then 63 decode steps."""
    clock = _Clock()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                             streamer=clock)
    first, last = clock.times[1], clock.times[-1]
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    steps = [b - a for a, b in zip(clock.times[1:], clock.times[2:])]
    return {**figures(first - t0, last - first, len(new) - 1, steps), "tokens": new[:8], "new_tokens": len(new)}


def main(path: str, dtype_name: str) -> None:
    """Load in `dtype_name`, two generations, the second (warm) reported."""
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    torch.set_num_threads(THREADS)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    t0 = time.perf_counter()
    model = PaliGemmaForConditionalGeneration.from_pretrained(path, dtype=dtype).eval()
    load_s = time.perf_counter() - t0
    cfg = model.config
    image_tokens = cfg.text_config.num_image_tokens if hasattr(cfg.text_config, "num_image_tokens") else 256
    text = prompt_ids(TEXT_TOKENS - 1) + [NEWLINE_ID]
    ids = torch.tensor([[cfg.image_token_index] * image_tokens + text])
    size = cfg.vision_config.image_size
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
              "pixel_values": torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(dtype)}
    cold = generate(model, inputs, torch)
    warm = generate(model, inputs, torch)
    emit({**warm, "load_s": round(load_s, 2), "cold_first_token_s": cold["first_token_s"],
          "cold_decode_tok_s": cold["decode_tok_s"], "prefill_positions": int(ids.shape[1]),
          "torch": torch.__version__, "transformers": __import__("transformers").__version__,
          "torch_threads": torch.get_num_threads()})


if __name__ == "__main__":
    main(*sys.argv[1:])
