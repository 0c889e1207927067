"""Staged TFLite bundles (one file per layer group, as at full size) run exactly like the single-graph parts."""

from __future__ import annotations

import json

import numpy as np

from pg2edge.checkpoint import load_checkpoint
from pg2edge.config import get_config
from pg2edge.export.tflite_flatbuffer import Flatbuffer, signature_keys, weight_ops
from pg2edge.model import generate
from pg2edge.param_layout import unflatten
from pg2edge.runtime.engine import Engine

from .conftest import MAX_LEN, PREFILL

PROMPT = "caption en"
ONE_LAYER = 1  # stage bytes: every group holds a single layer (or block)


def _reference(tiny_checkpoint, engine, image_file, n, params=None):
    cfg, flat = load_checkpoint(tiny_checkpoint)
    pixels, _ = engine.pixels(image_file)
    params = unflatten(flat) if params is None else params
    return generate(params, cfg, pixels, [engine.prompt_ids(PROMPT)], max_new_tokens=n, max_len=MAX_LEN)


def test_one_file_per_layer_with_shared_weights(make_bundle):
    bundle = make_bundle("int8", ("tflite",), stage_bytes=ONE_LAYER)
    cfg = get_config("tiny")
    manifest = json.loads((bundle / "manifest.json").read_text())
    stages = manifest["backends"]["tflite"]
    layer_files = [f"tflite/layers_{i}.tflite" for i in range(cfg.text.depth)]
    assert stages["decode"]["stages"] == [["tflite/table.tflite", "embed_decode"],
                                          *([f, "decode"] for f in layer_files),
                                          ["tflite/table.tflite", "head_decode"]]
    assert [f for f, _ in stages["vision"]["stages"]] == [f"tflite/vision_{i}.tflite" for i in range(cfg.vision.depth)]
    assert sorted(signature_keys(bundle / layer_files[0])) == sorted(["decode", *(f"prefill_{n}" for n in PREFILL)])
    # every signature of a layer file reads the same weight buffers: one copy of the layer per file
    per_signature: dict = {}
    for w in weight_ops(bundle / layer_files[0]):
        per_signature.setdefault(w.subgraph, set()).add(w.buffer)
    assert len(per_signature) == len(PREFILL) + 1 and len({frozenset(b) for b in per_signature.values()}) == 1
    table_ops = {(w.op, w.buffer) for w in weight_ops(bundle / "tflite/table.tflite")}
    assert {op for op, _ in table_ops} == {"EMBEDDING_LOOKUP", "FULLY_CONNECTED"}
    assert len({b for _, b in table_ops}) == 1  # the tied table: lookup and LM head share one int8 buffer
    # the table was converted at a stand-in vocabulary and widened: its rows live after the flatbuffer
    view = Flatbuffer(bundle / "tflite/table.tflite")
    table = next(view.weight_source(op)[0] for op in view.ops() if view.op_name(op) == "EMBEDDING_LOOKUP")
    assert list(view.tensor(table).ShapeAsNumpy()) == [cfg.text.vocab_size, cfg.text.width]
    assert view.model.Buffers(view.tensor(table).Buffer()).Offset() > 1


def test_staged_float_bundle_matches_jax(make_bundle, tiny_checkpoint, image_file):
    engine = Engine(make_bundle("f32", ("tflite",), stage_bytes=ONE_LAYER), backend="tflite")
    result = engine.generate(image_file, PROMPT, max_new_tokens=24)
    ref = _reference(tiny_checkpoint, engine, image_file, 24)
    assert result.tokens == ref.tokens[0]
    logits = engine.score(image_file, PROMPT, ref.tokens[0])
    np.testing.assert_allclose(logits, ref.logits[0, :len(ref.tokens[0])], atol=1e-3, rtol=1e-3)


def test_staged_int8_bundle_matches_its_fake_quant_reference(make_bundle, tiny_checkpoint, image_file):
    from pg2edge.quantize.recipes import fake_quant_params, get_recipe

    # accuracy level 0: per-channel int8 through DEQUANTIZE + float ops, equal to the reference
    engine = Engine(make_bundle("int8", ("tflite",), accuracy_level=0, stage_bytes=ONE_LAYER), backend="tflite")
    result = engine.generate(image_file, PROMPT, max_new_tokens=24)
    _, flat = load_checkpoint(tiny_checkpoint)
    ref = _reference(tiny_checkpoint, engine, image_file, 24, unflatten(fake_quant_params(flat, get_recipe("int8"))))
    assert result.tokens == ref.tokens[0]
