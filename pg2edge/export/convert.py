"""`pg2edge convert`: weights -> split parts -> ONNX / TFLite files -> a verified bundle.

Everything is written into a staging directory and renamed at the end
(`bundle.staging_dir`), so a failed or interrupted convert leaves nothing at
`--out`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pg2edge.config import ConfigError, ModelConfig, config_from_dict, config_to_dict, get_config
from pg2edge.export.bundle import check_out_dir, staging_dir, write_manifest
from pg2edge.export.report_calibration import CALIBRATION_SEED
from pg2edge.export.split import Part, SplitConfig, split_model, step_part
from pg2edge.export.stages import STAGE_BYTES
from pg2edge.param_layout import flatten, float32_bytes, unflatten
from pg2edge.progress import Progress
from pg2edge.tokenizer import Tokenizer, build_synthetic_tokenizer

FORMATS = ("onnx", "tflite")
QUANTS = ("f32", "int8", "int4", "mixed")
BLOCKS = (32, 64, 128)
LOC_DENOMINATOR = 1023  # <locNNNN> = round(v * 1023) of the resized image; decode with /1023


@dataclass(frozen=True)
class ConvertOptions:
    """Everything `pg2edge convert` takes on its command line."""

    size: str
    out: Path
    res: int | None = None
    checkpoint: Path | None = None
    random_init: bool = False
    seed: int = 0
    tokenizer: Path | None = None
    vae: Path | None = None
    formats: tuple[str, ...] = ("onnx",)
    quant: str = "int4"
    block: int = 32
    int4_clip: str = "mse"  # how int4 scales are chosen: "mse" (searched, what QAT trains against) or "max"
    accuracy_level: int = 4  # 4 = int8 activations in the kernels (fast), 0 = float activations (exact)
    gptq_images: int = 0  # > 0: GPTQ codes from this many suite calibration images (`quantize.gptq`)
    max_len: int = 1024
    prefill: tuple[int, ...] = (512,)
    force: bool = False
    report: bool = False
    stage_bytes: int = STAGE_BYTES  # TFLite: float32 weight bytes per staged file (bounds converter memory)

    def validate(self) -> ModelConfig:
        """Check every option before any work; returns the variant's config."""
        cfg = get_config(self.size, self.res)
        if (self.checkpoint is None) == (not self.random_init):
            raise ConfigError("give exactly one of --checkpoint PATH or --random-init")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise ConfigError(f"unknown format {','.join(bad) or '(none)'}: "
                              f"expected a comma list of {', '.join(FORMATS)}")
        if self.quant not in QUANTS:
            raise ConfigError(f"unknown quant {self.quant!r}: expected one of {', '.join(QUANTS)}")
        from pg2edge.quantize.ort_pack import ACCURACY_LEVELS

        if self.accuracy_level not in ACCURACY_LEVELS:
            raise ConfigError(f"accuracy level {self.accuracy_level}: expected one of {ACCURACY_LEVELS}")
        if self.block not in BLOCKS:
            raise ConfigError(f"block {self.block}: expected one of {', '.join(map(str, BLOCKS))}")
        from pg2edge.quantize.schemes import CLIPS

        if self.int4_clip not in CLIPS:
            raise ConfigError(f"int4 clip {self.int4_clip!r}: expected one of {', '.join(CLIPS)}")
        if self.quant in ("int4", "mixed"):
            _check_block_divides(cfg, self.block)
        if self.gptq_images:
            _check_gptq(cfg, self.quant, self.gptq_images)
        SplitConfig(self.max_len, tuple(sorted(self.prefill))).validate(cfg)
        check_out_dir(Path(self.out), self.force)
        return cfg


def _check_block_divides(cfg: ModelConfig, block: int) -> None:
    """int4 blocks run along each decoder matmul's input dim: every such width must be a multiple.

    (Vision weights whose K a block does not divide, e.g. SigLIP's 4304-wide MLP,
    fall back to int8 per channel by recipe; the decoder is where int4 is the point.)
    """
    widths = {"text width": cfg.text.width, "text mlp": cfg.text.mlp_dim,
              "heads x head_dim": cfg.text.num_heads * cfg.text.head_dim}
    for what, w in widths.items():
        if w % block:
            raise ConfigError(f"--block {block} does not divide the {what} ({w}) of {cfg.name}")


@dataclass
class ConvertResult:
    """What the summary table shows."""

    out: Path
    rows: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def resolve_finetune_dir(opts: ConvertOptions, cfg: ModelConfig) -> tuple[ConvertOptions, ModelConfig]:
    """`--checkpoint DIR` from `pg2edge finetune`: its params.npz, tokenizer and exact config."""
    ckpt = opts.checkpoint
    if ckpt is None or not Path(ckpt).is_dir() or not (Path(ckpt) / "params.npz").is_file():
        return opts, cfg
    ckpt = Path(ckpt)
    tokenizer = opts.tokenizer
    if tokenizer is None and (ckpt / "tokenizer.model").is_file():
        tokenizer = ckpt / "tokenizer.model"
    if (ckpt / "config.json").is_file():
        trained = config_from_dict(json.loads((ckpt / "config.json").read_text()))
        if trained.name != cfg.name:
            raise ConfigError(f"{ckpt}: trained as {trained.name}, but --size/--res ask for {cfg.name}")
        cfg = trained
    return dataclasses.replace(opts, checkpoint=ckpt / "params.npz", tokenizer=tokenizer), cfg


def _check_gptq(cfg: ModelConfig, quant: str, images: int) -> None:
    """GPTQ runs the float model on its calibration images: only a quantized recipe, only a model that fits."""
    from pg2edge.export.report_calibration import MAX_FLOAT_BYTES

    if images < 0:
        raise ConfigError(f"--gptq {images}: expected a number of calibration images >= 1 (0 = off)")
    if quant == "f32":
        raise ConfigError("--gptq chooses quantized codes: give --quant int8, int4 or mixed")
    size = float32_bytes(cfg)
    if size > MAX_FLOAT_BYTES:
        raise ConfigError(f"--gptq runs the float model: {cfg.name} holds {size / 2**30:.1f} GiB of float32 weights, "
                          f"over the {MAX_FLOAT_BYTES / 2**30:.0f} GiB calibration limit; convert without --gptq")


def load_weights(opts: ConvertOptions, cfg: ModelConfig) -> tuple[ModelConfig, dict, dict]:
    """The param tree of lazy tensors (read per layer on demand) and where it came from."""
    from pg2edge.checkpoint.lazy import lazy_random_params

    if opts.random_init:
        flat = lazy_random_params(cfg, seed=opts.seed)
        return cfg, unflatten(flat), {"source": "random-init", "random_init": True, "seed": opts.seed}
    loaded_cfg, flat = _checkpoint_params(opts.checkpoint, cfg)
    return loaded_cfg, unflatten(flat), {"source": str(opts.checkpoint), "random_init": False}


def _checkpoint_params(path: Path, cfg: ModelConfig) -> tuple[ModelConfig, dict]:
    """Every header validated now; tensor bytes read per layer when an exporter needs them."""
    from pg2edge.checkpoint import lazy_checkpoint

    return lazy_checkpoint(path, cfg, dtype=np.float32)


def _materialized(params: dict) -> dict:
    """Plain numpy arrays, for exporters that trace with the values (TFLite)."""
    from pg2edge.checkpoint.lazy import Lazy

    flat = flatten(params)
    return unflatten({k: v.materialize() if isinstance(v, Lazy) else v for k, v in flat.items()})


def load_tokenizer(opts: ConvertOptions, cfg: ModelConfig) -> Tokenizer:
    """The given tokenizer (checked against the config) or the project's synthetic one."""
    if opts.tokenizer is not None:
        tok = Tokenizer.from_file(opts.tokenizer)
    else:
        tok = Tokenizer.from_bytes(build_synthetic_tokenizer(cfg.text.vocab_size), name="synthetic")
    tok.check_config(cfg.text)
    return tok


def _io(part: Part) -> dict:
    return {"inputs": [s.to_dict() for s in part.inputs], "outputs": [s.to_dict() for s in part.outputs]}


def build_manifest(cfg: ModelConfig, opts: ConvertOptions, weights: dict, tok: Tokenizer,
                   parts: list[Part], backends: dict) -> dict:
    """Everything a runtime (Python, Android, ...) needs to drive the parts, in order."""
    t = cfg.text
    return {
        "variant": cfg.name,
        "model": config_to_dict(cfg),
        "weights": weights,
        "preprocess": {"resolution": cfg.resolution, "resize_filter": cfg.resize_filter, "layout": "NHWC",
                       "dtype": "float32", "scale": "x / 127.5 - 1", "drop_alpha": True},
        "tokenizer": {"file": "tokenizer.model", "bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id,
                      "newline_id": tok.newline_id, "loc_start": t.loc_start, "seg_start": t.seg_start,
                      "prompt": "[bos] + encode(prefix) + [newline]; generated suffix ends at eos"},
        "sequence": {"num_image_tokens": cfg.num_image_tokens, "max_len": opts.max_len,
                     "prefill_text_lens": sorted(opts.prefill),
                     "steps": ["vision(pixels) -> image_embeds",
                               "prefill_<n>(image_embeds, tokens padded to n, valid_len = num_image_tokens + "
                               "prompt length) -> logits, new_k_i/new_v_i for slots [0, num_image_tokens + n)",
                               "decode(token, pos, k_i, v_i) -> logits, new_k_i/new_v_i for slot pos; "
                               "pos starts at valid_len and grows by one per token",
                               "or, where a backend has `step` (ONNX): step(image_embeds [1,m,D], tokens [1,t], "
                               "pos, k_i, v_i) -> logits, present_k_i/present_v_i = the cache with slots "
                               "[pos, pos + m + t) written; bind present_k_i to k_i's own buffer (written in "
                               "place); the prompt is m = num_image_tokens, t = prompt length, pos 0; each decode "
                               "step is m = 0, t = 1"]},
        "kv_cache": {"layout": "per layer i: k_i, v_i [batch, num_kv_heads, max_len, head_dim] float32",
                     "num_layers": t.depth, "num_kv_heads": t.num_kv_heads, "head_dim": t.head_dim,
                     "update": "prefill/decode return only new entries, which the runtime writes in place; "
                               "step writes them itself into the buffer bound as both k_i and present_k_i"},
        "postprocess": {"loc_tokens": 1024, "seg_tokens": 128, "loc_denominator": LOC_DENOMINATOR,
                        "box_order": "y0 x0 y1 x1"},
        "quant": {"recipe": opts.quant, "block": opts.block, "int4_clip": opts.int4_clip,
                  "onnx_accuracy_level": opts.accuracy_level,
                  "gptq": ({"calibration_images": opts.gptq_images, "calibration_seed": CALIBRATION_SEED}
                           if opts.gptq_images else None)},
        "parts": {p.name: _io(p) for p in parts},
        "backends": backends,
    }


class _Silent:
    def stage(self, name: str, total: int) -> None:
        pass

    def advance(self, name: str, detail: str = "") -> None:
        pass


def convert(opts: ConvertOptions, progress: Progress = _Silent()) -> ConvertResult:
    """Run the whole conversion into a staging dir; rename to `opts.out` at the end."""
    from pg2edge.export.onnx_export import export_parts
    from pg2edge.quantize.recipes import get_recipe

    start = time.perf_counter()
    cfg = opts.validate()
    opts, cfg = resolve_finetune_dir(opts, cfg)
    recipe = get_recipe(opts.quant, opts.block, clip=opts.int4_clip)
    progress.stage("load weights", 1)
    cfg, params, weights = load_weights(opts, cfg)
    progress.advance("load weights")
    tok = load_tokenizer(opts, cfg)
    if opts.gptq_images:
        from pg2edge.export.report_calibration import gptq_hessians

        progress.stage("gptq calibration", 1)
        params = _materialized(params)
        recipe = dataclasses.replace(recipe, hessians=gptq_hessians(cfg, tok, params, opts.gptq_images))
        progress.advance("gptq calibration")
    split = SplitConfig(opts.max_len, tuple(sorted(opts.prefill)))
    parts = split_model(cfg, split)
    # ONNX: vision + one `step` graph of symbolic length (one session holds the decoder weights once);
    # TFLite (static shapes only): vision, a prefill graph per bucket, decode
    onnx_parts = [parts[0], step_part(cfg, split)]
    extra = _vae_parts(opts)  # (part, params) kept in float: ~5 MB, and masks are thresholded
    result = ConvertResult(Path(opts.out))
    backends: dict = {}
    with staging_dir(Path(opts.out), opts.force) as tmp:
        (tmp / "tokenizer.model").write_bytes(tok.serialized())
        if "onnx" in opts.formats:
            from pg2edge.export.onnx_quant import QuantizedWeights

            t0 = time.perf_counter()
            (tmp / "onnx").mkdir()
            progress.stage("onnx: quantize, trace, write", len(onnx_parts))
            infos = export_parts(onnx_parts, params, tmp / "onnx", QuantizedWeights(recipe, opts.accuracy_level),
                                 on_part=lambda name: progress.advance("onnx: quantize, trace, write", name))
            for part, part_params in extra:
                infos.update(export_parts([part], part_params, tmp / "onnx", weights_name=f"{part.name}.onnx.data"))
            backends["onnx"] = {name: f"onnx/{info.path.name}" for name, info in infos.items()}
            result.rows.append(_row("onnx", opts.quant, tmp / "onnx", time.perf_counter() - t0))
        if "tflite" in opts.formats:
            t0 = time.perf_counter()
            from pg2edge.export.tflite_bundle import export_tflite_stages

            backends["tflite"] = export_tflite_stages(cfg, opts, params, recipe, extra, tmp / "tflite", progress)
            result.rows.append(_row("tflite", opts.quant, tmp / "tflite", time.perf_counter() - t0))
        if opts.report:
            progress.stage("quant report", 1)
            result.notes += _write_quant_report(cfg, opts, tok, params, recipe, tmp)
            progress.advance("quant report")
        listed = list({p.name: p for fmt, ps in (("tflite", parts), ("onnx", onnx_parts)) if fmt in opts.formats
                       for p in ps}.values())
        write_manifest(tmp, build_manifest(cfg, opts, weights, tok, listed + [p for p, _ in extra], backends))
    result.seconds = time.perf_counter() - start
    return result


def _write_quant_report(cfg: ModelConfig, opts: ConvertOptions, tok: Tokenizer, params: dict, recipe,
                        out: Path) -> list[str]:
    """quant_report.{json,md}: weight error per tensor, plus output error on the calibration batch if it fits."""
    from pg2edge.export.report_calibration import MAX_FLOAT_BYTES, calibration_output_errors
    from pg2edge.quantize.calibration import annotate_output_errors
    from pg2edge.quantize.report import error_report, write_report

    rows = error_report(flatten(params), recipe)
    if float32_bytes(cfg) > MAX_FLOAT_BYTES:
        write_report(rows, out)
        return [f"quant report: output errors skipped ({float32_bytes(cfg) / 2**30:.1f} GB of float weights "
                f"> {MAX_FLOAT_BYTES / 2**30:.0f} GB for the calibration pass); weight errors written"]
    split = SplitConfig(opts.max_len, tuple(sorted(opts.prefill)))
    errors = calibration_output_errors(cfg, split, tok, _materialized(params), recipe)
    write_report(annotate_output_errors(rows, errors), out)
    return []


def _vae_parts(opts: ConvertOptions) -> list[tuple[Part, dict]]:
    """The VQ-VAE mask decoder as an extra part when `--vae` is given."""
    if opts.vae is None:
        return []
    from pg2edge.checkpoint.vae import load_vae
    from pg2edge.export.vae_part import vae_part

    return [(vae_part(), load_vae(opts.vae))]


def _row(fmt: str, quant: str, folder: Path, seconds: float) -> dict:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return {"format": fmt, "quant": quant, "files": [f.name for f in files],
            "bytes": sum(f.stat().st_size for f in files), "seconds": seconds}

