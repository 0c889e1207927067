"""`Engine`: run a pg2edge bundle end to end (preprocess, tokenize, vision, prefill, decode, parse).

Imports only numpy, pillow, sentencepiece and one of onnxruntime / ai_edge_litert,
so it runs on a Raspberry Pi or in an Android Python. The KV cache is a set of
numpy buffers owned here; each graph call returns only its new entries, which
are written into the buffers in place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pg2edge.errors import Pg2EdgeError
from pg2edge.preprocess import load_image, preprocess
from pg2edge.runtime.backends import open_backend
from pg2edge.runtime.manifest import read_manifest
from pg2edge.sampling import SamplingConfig, choose, new_rng
from pg2edge.tokenizer import Tokenizer


class PromptError(Pg2EdgeError):
    """An empty prompt, or one longer than the bundle's largest prefill bucket."""


@dataclass
class Timings:
    """Wall-clock per stage of one generation."""

    vision_ms: float = 0.0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    decode_tokens: int = 0

    @property
    def decode_tok_s(self) -> float:
        return self.decode_tokens / (self.decode_ms / 1000) if self.decode_ms else 0.0

    def to_dict(self) -> dict:
        return {"vision_ms": self.vision_ms, "prefill_ms": self.prefill_ms, "decode_ms": self.decode_ms,
                "decode_tokens": self.decode_tokens, "decode_tok_s": self.decode_tok_s}


@dataclass
class Result:
    """One generation: text, ids, parsed objects, why it stopped, and timings."""

    text: str
    tokens: list[int]
    stop_reason: str  # "eos" | "max_new_tokens" | "cache_full"
    image_size: tuple[int, int]
    objects: list = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)

    def to_dict(self, image: str | None = None) -> dict:
        """JSON-ready form (`pg2edge run --json`); masks as their pixel counts, not arrays."""
        return {"image": image, "text": self.text, "tokens": self.tokens, "stop_reason": self.stop_reason,
                "objects": [{"label": o.label, "box": [round(float(v), 2) for v in o.box],
                             "seg_codes": list(o.seg_codes) if o.seg_codes else None,
                             "mask_pixels": None if o.mask is None else int(o.mask.sum())} for o in self.objects],
                "timings": self.timings.to_dict()}


class Engine:
    """A loaded bundle on one backend; `generate` is safe to call repeatedly."""

    def __init__(self, bundle_dir: str | Path, backend: str | None = None, verify: bool = True,
                 low_memory: bool = False):
        """`low_memory`: hold one part's weights at a time (each part is loaded when it runs and released
        after), for devices whose RAM cannot hold vision, prefill and decode at once; every generation
        then pays the parts' load time."""
        self.bundle = Path(bundle_dir)
        self.low_memory = low_memory
        self.manifest = read_manifest(self.bundle, verify=verify)
        available = list(self.manifest["backends"])
        self.backend_name = backend or ("onnx" if "onnx" in available else available[0])
        self.backend = open_backend(self.backend_name, self.bundle, self.manifest)
        self.tokenizer = Tokenizer.from_file(self.bundle / self.manifest["tokenizer"]["file"])
        seq = self.manifest["sequence"]
        self.num_image_tokens = seq["num_image_tokens"]
        self.max_len = seq["max_len"]
        self.buckets = sorted(seq["prefill_text_lens"])
        self.preprocess_cfg = self.manifest["preprocess"]
        # one `step` graph (any chunk length) when the backend has it, else prefill buckets + decode
        self._decode_part = "step" if "step" in self.manifest["backends"][self.backend_name] else "decode"
        self._kv_specs = [s for s in self.manifest["parts"][self._decode_part]["inputs"]
                          if s["name"].startswith(("k_", "v_"))]
        self._decoder = None

    @property
    def max_prompt_tokens(self) -> int:
        """The longest prompt: the largest bucket, or (one `step` graph) what the cache holds."""
        if self._decode_part == "step":
            return self.max_len - self.num_image_tokens - 1
        return self.buckets[-1]

    # -- pieces ---------------------------------------------------------------
    def prompt_ids(self, prompt: str) -> list[int]:
        """PaliGemma layout `[bos] + prefix + [\\n]`, checked against the buckets."""
        if not prompt.strip():
            raise PromptError("empty prompt: give a task such as 'caption en' or 'detect cat'")
        ids = self.tokenizer.encode_prompt(prompt).tokens.tolist()
        if len(ids) > self.max_prompt_tokens:
            what = "cache" if self._decode_part == "step" else "largest prefill bucket"
            raise PromptError(f"prompt is {len(ids)} tokens; the {what} of {self.bundle} holds "
                              f"{self.max_prompt_tokens} (convert with a larger "
                              f"{'--max-len' if self._decode_part == 'step' else '--prefill'})")
        return ids

    def pixels(self, image) -> tuple[np.ndarray, tuple[int, int]]:
        """Any image source -> [1,R,R,3] float32 and the original (width, height)."""
        img = load_image(image)
        arr = preprocess(img, self.preprocess_cfg["resolution"], self.preprocess_cfg["resize_filter"])
        return arr[None], img.size

    def decoder(self):
        """The decode state (KV cache + decode part), built once and reused by every generation.

        Stale cache entries need no clearing: every slot a step can see was
        written by this generation's prefill or decode.
        """
        if self._decoder is None:
            vocab = self.manifest["model"]["text"]["vocab_size"]
            self._decoder = self.backend.decoder(self._decode_part, self._kv_specs, (1, vocab))
        return self._decoder

    # -- generation -----------------------------------------------------------
    def generate(self, image, prompt: str, max_new_tokens: int = 32, sampling: SamplingConfig = SamplingConfig(),
                 on_token: Callable[[int, str], None] | None = None, stop_at_eos: bool = True) -> Result:
        """Caption / answer / detect / segment one image; `on_token(id, piece)` streams tokens.

        `stop_at_eos=False` decodes exactly `max_new_tokens` (benchmarks on random weights).
        """
        timings = Timings()
        logits, decoder, valid, size = self._prefill(image, prompt, timings)
        generated, stop = self._decode(logits, decoder, valid, max_new_tokens, sampling, on_token, timings,
                                       self.tokenizer.eos_id if stop_at_eos else None)
        del decoder
        self._release_decoder()
        text = self.tokenizer.decode([t for t in generated if t != self.tokenizer.eos_id])
        return Result(text=text, tokens=generated, stop_reason=stop, image_size=size,
                      objects=self.parse(text, size), timings=timings)

    def score(self, image, prompt: str, tokens: Sequence[int]) -> np.ndarray:
        """Logits before each of `tokens` when they are fed in (teacher forcing): float32 [len(tokens), V].

        Parity checks compare these with the JAX model's logits position by
        position, so one early disagreement does not hide the rest.
        """
        logits, decoder, pos, _ = self._prefill(image, prompt, Timings())
        rows = [np.array(logits, np.float32).reshape(-1)]  # copies: decoders reuse their output buffers
        for tok in list(tokens)[:-1]:
            if pos >= self.max_len:
                raise PromptError(f"{len(tokens)} tokens after the prompt overflow the cache ({self.max_len} slots)")
            rows.append(np.array(decoder.step(int(tok), pos), np.float32).reshape(-1))
            pos += 1
        del decoder
        self._release_decoder()
        return np.stack(rows)

    def _release(self) -> None:
        """In low-memory mode, drop every loaded part (their memory goes back to the system)."""
        if self.low_memory:
            self.backend.release()

    def _release_decoder(self) -> None:
        if self.low_memory:
            self._decoder = None
            self.backend.release()

    def _prefill(self, image, prompt: str, timings: Timings):
        """Vision + prefill into the shared decoder cache: (first logits, decoder, next position, image size)."""
        ids = self.prompt_ids(prompt)
        pixels, size = self.pixels(image)
        t0 = time.perf_counter()
        image_embeds = self.backend.run("vision", {"pixels": pixels})["image_embeds"]
        self._release()
        timings.vision_ms = (time.perf_counter() - t0) * 1000

        valid = self.num_image_tokens + len(ids)
        if self._decode_part == "step":
            t0 = time.perf_counter()
            decoder = self.decoder()
            logits = decoder.prefill(image_embeds, np.array([ids], np.int32))
            timings.prefill_ms = (time.perf_counter() - t0) * 1000
            return logits, decoder, valid, size
        bucket = next(b for b in self.buckets if b >= len(ids))
        tokens = np.zeros((1, bucket), np.int32)
        tokens[0, :len(ids)] = ids
        t0 = time.perf_counter()
        out = self.backend.run(f"prefill_{bucket}", {"image_embeds": image_embeds, "tokens": tokens,
                                                     "valid_len": np.array([valid], np.int32)})
        self._release()
        decoder = self.decoder()
        decoder.write(out, 0)
        timings.prefill_ms = (time.perf_counter() - t0) * 1000
        return out["logits"], decoder, valid, size

    def _decode(self, logits, decoder, pos, max_new_tokens, sampling, on_token, timings, eos):
        """The token loop on the static cache; stops at eos, the token budget, or capacity."""
        rng = new_rng(sampling)
        generated: list[int] = []
        t0 = time.perf_counter()
        stop = "max_new_tokens"
        while True:
            tok = int(choose(logits, sampling, rng)[0])
            generated.append(tok)
            if on_token is not None:
                on_token(tok, self.tokenizer.decode([tok]))
            if tok == eos:
                stop = "eos"
                break
            if len(generated) >= max_new_tokens:
                break
            if pos >= self.max_len:
                stop = "cache_full"
                break
            logits = decoder.step(tok, pos)
            pos += 1
            timings.decode_tokens += 1
        timings.decode_ms = (time.perf_counter() - t0) * 1000
        return generated, stop

    def generate_many(self, images: Sequence, prompt: str, **kwargs) -> list[Result | Pg2EdgeError]:
        """One result per image; a failing image yields its error instead of stopping the batch."""
        results: list[Result | Pg2EdgeError] = []
        for image in images:
            try:
                results.append(self.generate(image, prompt, **kwargs))
            except Pg2EdgeError as e:
                results.append(e)
        return results

    def parse(self, text: str, size: tuple[int, int]) -> list:
        """Boxes (and masks when the bundle has a VAE decoder) from `<loc>`/`<seg>` text."""
        from pg2edge.postprocess import attach_masks, parse_objects

        objects = parse_objects(text, size)
        if "vae_decoder" not in self.manifest["backends"][self.backend_name]:
            return objects
        return attach_masks(objects, self._decode_masks, size)

    def _decode_masks(self, codes_n16: np.ndarray) -> np.ndarray:
        """The bundle's VQ-VAE decoder part, one object at a time (its batch is static 1)."""
        return np.concatenate([self.backend.run("vae_decoder", {"seg_codes": c[None].astype(np.int32)})["masks"]
                               for c in codes_n16])
