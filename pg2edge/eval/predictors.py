"""What produces the text being scored: the float JAX model (the baseline) or a converted bundle.

Both build the prompt as the runtime does (`[bos] + encode(prefix) + [\\n]`,
`Tokenizer.encode_prompt`), preprocess images with the manifest's / config's
resolution and resize filter, decode greedily until `<eos>` (or the token
budget), and turn the ids into text with the same `Tokenizer.decode` minus eos,
so a float bundle and its checkpoint give the same strings. JAX is imported only
by `JaxPredictor`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from pg2edge.config import ConfigError, ModelConfig, config_from_dict, get_config
from pg2edge.eval.example import EvalExample
from pg2edge.preprocess import load_image, preprocess
from pg2edge.tokenizer import Tokenizer, build_synthetic_tokenizer

MANIFEST = "manifest.json"
RUN_FILES = ("params.npz", "tokenizer.model", "config.json")  # what `pg2edge finetune --out DIR` leaves
PROMPT_STEP = 16  # JAX prompt lengths are padded up to a multiple of this (one compiled prefill per step)
CACHE_STEP = 64  # and cache lengths (text slots) to a multiple of this


class Predictor(Protocol):
    """Greedy generations for a batch of examples, one string per example, in order."""

    name: str

    def predict(self, batch: list[EvalExample], max_new_tokens: int) -> list[str]: ...


def is_bundle(target: str | Path) -> bool:
    """A bundle is a directory with a `manifest.json`; anything else is a checkpoint."""
    return (Path(target) / MANIFEST).is_file()


def prompt_ids(tokenizer: Tokenizer, prefix: str) -> list[int]:
    """The runtime's prompt layout (`Engine.prompt_ids` without its bucket check)."""
    return tokenizer.encode_prompt(prefix).tokens.tolist()


def decode_text(tokenizer: Tokenizer, ids: list[int]) -> str:
    """Generated ids -> text exactly as `Engine.generate` makes `Result.text` (eos dropped)."""
    return tokenizer.decode([t for t in ids if t != tokenizer.eos_id])


class BundlePredictor:
    """A bundle on onnxruntime or LiteRT, one example at a time (its graphs have batch 1)."""

    def __init__(self, bundle_dir: str | Path, backend: str | None = None):
        from pg2edge.runtime.engine import Engine

        self.engine = Engine(bundle_dir, backend=backend)
        recipe = self.engine.manifest.get("quant", {}).get("recipe", "?")
        self.name = f"{Path(bundle_dir).name} ({self.engine.backend_name}, {recipe})"

    def predict(self, batch: list[EvalExample], max_new_tokens: int) -> list[str]:
        """Greedy text per example, stopping at eos."""
        return [self.engine.generate(ex.image, ex.prefix, max_new_tokens=max_new_tokens, stop_at_eos=True).text
                for ex in batch]


@dataclass(frozen=True)
class CheckpointFiles:
    """Where a checkpoint's weights, tokenizer and exact config come from."""

    weights: Path
    tokenizer: Path | None
    config: Path | None


def checkpoint_files(target: Path, tokenizer: Path | None = None) -> CheckpointFiles:
    """A finetune run dir (params.npz, tokenizer.model, config.json) or a weights file / HF directory."""
    target = Path(target)
    if target.is_dir() and (target / RUN_FILES[0]).is_file():
        tok = tokenizer or (target / RUN_FILES[1] if (target / RUN_FILES[1]).is_file() else None)
        cfg = target / RUN_FILES[2] if (target / RUN_FILES[2]).is_file() else None
        return CheckpointFiles(target / RUN_FILES[0], tok, cfg)
    return CheckpointFiles(target, tokenizer, None)


def _resolve_config(files: CheckpointFiles, size: str | None, res: int | None) -> ModelConfig:
    """The variant the headers show, refined by a run's config.json, checked against --size/--res."""
    from pg2edge.checkpoint import detect_variant

    cfg = detect_variant(files.weights)
    if files.config is not None:
        try:
            saved = config_from_dict(json.loads(files.config.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{files.config}: not a pg2edge model config ({e})") from None
        if saved.name != cfg.name:
            raise ConfigError(f"{files.config}: says {saved.name}, but {files.weights} holds {cfg.name}")
        cfg = saved
    if size is not None or res is not None:
        asked = get_config(size or cfg.size, res or cfg.resolution)
        if asked.name != cfg.name:
            raise ConfigError(f"{files.weights}: holds variant {cfg.name}, but --size/--res ask for {asked.name}")
    return cfg


def load_tokenizer(path: Path | None, cfg: ModelConfig) -> Tokenizer:
    """The given tokenizer, else the synthetic one `pg2edge convert` puts in a bundle; checked against cfg."""
    tok = (Tokenizer.from_file(path) if path is not None
           else Tokenizer.from_bytes(build_synthetic_tokenizer(cfg.text.vocab_size), name="synthetic"))
    tok.check_config(cfg.text)
    return tok


class JaxPredictor:
    """The float JAX model, batched: the baseline every bundle is compared against."""

    def __init__(self, params: dict, cfg: ModelConfig, tokenizer: Tokenizer, name: str = "jax f32"):
        self.params, self.cfg, self.tokenizer, self.name = params, cfg, tokenizer, name
        self._rows = 0  # the largest batch so far: smaller ones are padded to it (one compiled shape)

    @classmethod
    def from_checkpoint(cls, target: str | Path, size: str | None = None, res: int | None = None,
                        tokenizer: str | Path | None = None) -> "JaxPredictor":
        """Load a finetune output dir, a big_vision .npz or HF safetensors (+ tokenizer) as float32."""
        import jax

        from pg2edge.checkpoint import load_checkpoint
        from pg2edge.param_layout import unflatten

        files = checkpoint_files(Path(target), Path(tokenizer) if tokenizer is not None else None)
        cfg = _resolve_config(files, size, res)
        _, flat = load_checkpoint(files.weights, cfg, dtype=np.float32)
        params = jax.tree.map(jax.numpy.asarray, unflatten(flat))
        return cls(params, cfg, load_tokenizer(files.tokenizer, cfg), name=f"{Path(target).name} (jax, f32)")

    def predict(self, batch: list[EvalExample], max_new_tokens: int) -> list[str]:
        """One greedy `generate` call per batch, on padded shapes so few programs get compiled.

        `generate` pads prompts to the longest in the batch, so one extra "shape row"
        (the last prompt padded with <pad> to a multiple of `PROMPT_STEP`, output
        discarded) fixes that length; short batches are filled to the largest batch
        seen by repeating their last example, and the cache length is rounded up to a
        multiple of `CACHE_STEP`. Rows are independent and spare cache slots masked,
        so no real row's tokens change; `generate` stops once the real rows are done.
        """
        from pg2edge.model import generate

        if not batch:
            return []
        self._rows = max(self._rows, len(batch))
        rows = list(batch) + [batch[-1]] * (self._rows - len(batch))
        prompts = [prompt_ids(self.tokenizer, ex.prefix) for ex in rows]
        text_len = -(-max(len(p) for p in prompts) // PROMPT_STEP) * PROMPT_STEP
        prompts.append(prompts[-1] + [self.tokenizer.pad_id] * (text_len - len(prompts[-1])))
        pixels = np.stack([preprocess(load_image(ex.image), self.cfg.resolution, self.cfg.resize_filter)
                           for ex in rows])
        pixels = np.concatenate([pixels, pixels[-1:]])
        max_len = self.cfg.num_image_tokens + -(-(text_len + max_new_tokens) // CACHE_STEP) * CACHE_STEP
        out = generate(self.params, self.cfg, pixels, prompts, max_new_tokens=max_new_tokens, max_len=max_len,
                       eos_id=self.tokenizer.eos_id, rows_that_count=len(batch))
        return [decode_text(self.tokenizer, ids) for ids in out.tokens[:len(batch)]]


def open_predictor(target: str | Path, backend: str | None = None, size: str | None = None,
                   res: int | None = None, tokenizer: str | Path | None = None) -> Predictor:
    """A bundle directory -> `BundlePredictor`; anything else is a checkpoint -> `JaxPredictor`."""
    if is_bundle(target):
        if size is not None or res is not None or tokenizer is not None:
            raise ConfigError(f"{target}: is a bundle; --size, --res and --tokenizer apply to checkpoints only")
        return BundlePredictor(target, backend=backend)
    if backend is not None:
        raise ConfigError(f"{target}: --backend applies to bundles only (no {MANIFEST} here)")
    return JaxPredictor.from_checkpoint(target, size=size, res=res, tokenizer=tokenizer)
