"""pg2edge's random-init 3B-224 weights as HF checkpoints the peers load, streamed one tensor at a time.

`write_gemma2` writes the decoder half as a `Gemma2ForCausalLM` directory
(what llama.cpp's convert_hf_to_gguf.py and onnxruntime-genai's builder take),
`write_paligemma` the whole model as `PaliGemmaForConditionalGeneration` (for
HF transformers). Values come from `lazy_random_params(cfg, seed)`, the very
tensors `pg2edge convert --random-init --seed SEED` exports, mapped by
pg2edge's own `hf_mapping` rules; memory stays about one stacked layer.

    .venv/bin/python benchmarks/peers/weights.py gemma2 /tmp/peers/gemma2-3b [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import ml_dtypes
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from pg2edge.checkpoint import safetensors_io as st  # noqa: E402
from pg2edge.checkpoint.fsutil import atomic_dir  # noqa: E402
from pg2edge.checkpoint.hf_config import hf_config_dict  # noqa: E402
from pg2edge.checkpoint.hf_mapping import Rule, hf_rules, hub_name  # noqa: E402
from pg2edge.checkpoint.lazy import Lazy, LazyStack, lazy_random_params  # noqa: E402
from pg2edge.checkpoint.validate import TensorInfo  # noqa: E402
from pg2edge.config import BOS_ID, EOS_ID, PAD_ID, ModelConfig, get_config  # noqa: E402
from pg2edge.tokenizer import build_synthetic_tokenizer  # noqa: E402

DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
SHARD_BYTES = 2 << 30
_METADATA = {"format": "pt"}


class _LayerCache:
    """The last generated layer of a stacked weight: k/v and gate/up share one layer, generate it once."""

    def __init__(self, params: dict[str, Lazy]):
        self.params, self.key = params, None
        self.value: np.ndarray | None = None

    def slice(self, rule: Rule) -> np.ndarray:
        """`bv[rule.index]`, reading only the layer it needs."""
        lazy = self.params[rule.bv]
        if not rule.index:
            return lazy.materialize()
        assert isinstance(lazy, LazyStack)
        key = (rule.bv, rule.index[0])
        if key != self.key:
            self.key, self.value = None, None  # free the previous layer first
            self.value, self.key = lazy.layer(rule.index[0]).materialize(), key
        return self.value[rule.index[1:]] if len(rule.index) > 1 else self.value


def _write_shards(out: Path, rules: dict[str, Rule], fetch: Callable[[str], np.ndarray], dtype: np.dtype) -> int:
    """Safetensors shards of at most SHARD_BYTES plus the index; returns total bytes."""
    specs = {name: TensorInfo(rule.hf_shape, dtype) for name, rule in rules.items()}
    shards: list[list[str]] = [[]]
    size = 0
    for name, info in specs.items():
        nbytes = int(np.prod(info.shape)) * dtype.itemsize
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for file, names in zip(files, shards):
        st.write_safetensors(out / file, {n: specs[n] for n in names}, fetch, _METADATA)
    total = sum(int(np.prod(i.shape)) * dtype.itemsize for i in specs.values())
    index = {"metadata": {"total_size": total}, "weight_map": {n: f for f, names in zip(files, shards) for n in names}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return total


def _fetcher(rules: dict[str, Rule], params: dict[str, Lazy], dtype: np.dtype) -> Callable[[str], np.ndarray]:
    cache = _LayerCache(params)
    return lambda name: np.ascontiguousarray(rules[name].to_hf(cache.slice(rules[name]))).astype(dtype, copy=False)


def _fast_tokenizer(proto: bytes, path: Path) -> None:
    """tokenizer.json for the same pieces, so transformers never converts the SentencePiece model itself.

    Its converter treats every CONTROL piece (the ~250k `<unusedN>` fillers) as a special token and
    checks each against a list of the others: hours for this vocabulary. Here only pad/eos/bos/unk are
    special and the loc/seg pieces are added tokens, as in the real PaliGemma tokenizer.json.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    model = pb.ModelProto()
    model.ParseFromString(proto)
    pieces = [(p.piece, p.score) for p in model.pieces]
    tok = Tokenizer(models.Unigram(pieces, unk_id=model.trainer_spec.unk_id, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    specials = ("<pad>", "<eos>", "<bos>", "<unk>")
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tail = [p.piece for p in model.pieces if p.type == pb.ModelProto.SentencePiece.USER_DEFINED]
    tok.add_tokens([AddedToken(t, normalized=False) for t in tail])
    tok.save(str(path))


def _write_tokenizer(out: Path, vocab: int) -> None:
    """pg2edge's synthetic SentencePiece model (PaliGemma layout) plus the HF files that name it."""
    proto = build_synthetic_tokenizer(vocab)
    (out / "tokenizer.model").write_bytes(proto)
    _fast_tokenizer(proto, out / "tokenizer.json")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
        "model_max_length": 8192, "clean_up_tokenization_spaces": False}, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}, indent=2) + "\n")


def gemma2_config(cfg: ModelConfig, dtype: np.dtype) -> dict:
    """`Gemma2ForCausalLM` config.json: PaliGemma's text_config with pg2edge's own vocab (no <image> row)."""
    text = hf_config_dict(cfg, dtype)["text_config"]
    text.pop("num_image_tokens", None)
    text.update(vocab_size=cfg.text.vocab_size, tie_word_embeddings=True, hidden_act=text["hidden_activation"],
                bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, attention_bias=False,
                attention_dropout=0.0, initializer_range=0.02, use_cache=True)
    return text


def write_gemma2(out: str | Path, size: str = "3B", res: int = 224, seed: int = 0, dtype: str = "float32") -> dict:
    """The decoder of `pg2edge convert --random-init --seed SEED` as a Gemma 2 HF checkpoint."""
    cfg, dt, t0 = get_config(size, res), DTYPES[dtype], time.perf_counter()
    params = lazy_random_params(cfg, seed=seed)
    V = cfg.text.vocab_size
    rules: dict[str, Rule] = {}
    for key, group in hf_rules(cfg).items():
        for rule in group:
            if rule.hf.startswith("language_model."):
                name = "model." + rule.hf[len("language_model."):]
                if name == "model.embed_tokens.weight":  # pg2edge's V rows, no <image> row or padding
                    rule = Rule(rule.hf, rule.bv, rule.index, (V, cfg.text.width), lambda a: a, lambda h: h)
                rules[name] = rule
    with atomic_dir(Path(out)) as tmp:
        total = _write_shards(tmp, rules, _fetcher(rules, params, dt), dt)
        (tmp / "config.json").write_text(json.dumps(gemma2_config(cfg, dt), indent=2) + "\n")
        (tmp / "generation_config.json").write_text(json.dumps(
            {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}) + "\n")
        _write_tokenizer(tmp, V)
    return {"path": str(out), "bytes": total, "seconds": round(time.perf_counter() - t0, 1), "dtype": dtype,
            "seed": seed, "tensors": len(rules)}


def write_paligemma(out: str | Path, size: str = "3B", res: int = 224, seed: int = 0,
                    dtype: str = "float32") -> dict:
    """The whole random-init PaliGemma (hub names, padded vocab) for HF transformers."""
    cfg, dt, t0 = get_config(size, res), DTYPES[dtype], time.perf_counter()
    params = lazy_random_params(cfg, seed=seed)
    rules = {hub_name(r.hf): r for group in hf_rules(cfg).values() for r in group}
    with atomic_dir(Path(out)) as tmp:
        total = _write_shards(tmp, rules, _fetcher(rules, params, dt), dt)
        (tmp / "config.json").write_text(json.dumps(hf_config_dict(cfg, dt), indent=2) + "\n")
        _write_tokenizer(tmp, cfg.text.vocab_size)
    return {"path": str(out), "bytes": total, "seconds": round(time.perf_counter() - t0, 1), "dtype": dtype,
            "seed": seed, "tensors": len(rules)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=("gemma2", "paligemma"))
    ap.add_argument("out")
    ap.add_argument("--size", default="3B")
    ap.add_argument("--res", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    args = ap.parse_args()
    write = write_gemma2 if args.kind == "gemma2" else write_paligemma
    print(json.dumps(write(args.out, args.size, args.res, args.seed, args.dtype)))


if __name__ == "__main__":
    main()
