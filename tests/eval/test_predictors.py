"""Predictors: bundle vs checkpoint dispatch, run-dir loading, and padding that never changes a row's text."""

from __future__ import annotations

import json
import shutil

import pytest

from pg2edge.config import ConfigError, config_to_dict, get_config
from pg2edge.eval import BundlePredictor, JaxPredictor, is_bundle, load_suite, open_predictor
from pg2edge.eval.predictors import checkpoint_files, decode_text, prompt_ids
from pg2edge.tokenizer import build_synthetic_tokenizer

from .conftest import MAX_NEW_TOKENS


def test_dispatch_and_option_errors(f32_bundle, tiny_checkpoint):
    assert is_bundle(f32_bundle) and not is_bundle(tiny_checkpoint)
    predictor = open_predictor(f32_bundle, backend="onnx")
    assert isinstance(predictor, BundlePredictor) and "onnx" in predictor.name
    with pytest.raises(ConfigError, match="is a bundle; --size, --res and --tokenizer apply to checkpoints only"):
        open_predictor(f32_bundle, size="tiny")
    with pytest.raises(ConfigError, match="--backend applies to bundles only"):
        open_predictor(tiny_checkpoint, backend="onnx")
    with pytest.raises(ConfigError, match="holds variant tiny-56, but --size/--res ask for tiny-112"):
        open_predictor(tiny_checkpoint, res=112)


def test_finetune_run_dir_supplies_tokenizer_and_config(tiny_checkpoint, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_checkpoint, run / "params.npz")
    (run / "tokenizer.model").write_bytes(build_synthetic_tokenizer(2048, extra_words=("zebra",)))
    cfg = get_config("tiny", 56)
    (run / "config.json").write_text(json.dumps(config_to_dict(cfg)))
    files = checkpoint_files(run)
    assert (files.weights, files.tokenizer, files.config) == (run / "params.npz", run / "tokenizer.model",
                                                              run / "config.json")
    assert checkpoint_files(run, tokenizer=tmp_path / "t.model").tokenizer == tmp_path / "t.model"
    assert checkpoint_files(tiny_checkpoint).tokenizer is None
    predictor = JaxPredictor.from_checkpoint(run)
    assert predictor.cfg == cfg and predictor.tokenizer.serialized() == (run / "tokenizer.model").read_bytes()


def test_short_batches_and_the_shape_row_change_no_row(suite_dir, tiny_checkpoint, f32_bundle):
    examples = load_suite(suite_dir / "test.jsonl")[:4]
    jax_predictor = JaxPredictor.from_checkpoint(tiny_checkpoint)
    full = jax_predictor.predict(examples, MAX_NEW_TOKENS)
    assert jax_predictor.predict(examples[2:3], MAX_NEW_TOKENS) == full[2:3]  # padded to 4 rows + shape row
    assert BundlePredictor(f32_bundle).predict(examples, MAX_NEW_TOKENS) == full
    engine = BundlePredictor(f32_bundle).engine
    assert prompt_ids(jax_predictor.tokenizer, "detect red circle") == engine.prompt_ids("detect red circle")
    ids = jax_predictor.tokenizer.encode("a red circle") + [jax_predictor.tokenizer.eos_id]
    assert decode_text(jax_predictor.tokenizer, ids) == "a red circle"


def test_generate_stops_when_the_rows_that_count_are_done(tiny_cfg, tiny_params, tiny_pixels):
    """Padding rows (shape fillers) neither change the real rows' tokens nor keep the loop going."""
    from pg2edge.model import generate

    prompts = [[2, 300, 301, 108], [2, 400, 108]]
    alone = generate(tiny_params, tiny_cfg, tiny_pixels[:1], prompts[:1], max_new_tokens=12, max_len=64,
                     eos_id=1000)
    eos = alone.tokens[0][3]  # pretend the real row's 4th token is <eos>
    padded = generate(tiny_params, tiny_cfg, tiny_pixels, prompts, max_new_tokens=12, max_len=64, eos_id=eos,
                      rows_that_count=1)
    assert padded.tokens[0] == alone.tokens[0][:alone.tokens[0].index(eos) + 1]
    assert padded.logits.shape[1] == len(padded.tokens[0])  # stopped with the real row, not at the budget
