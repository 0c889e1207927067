"""`pg2edge pretrain-vision`: per-image word bags, a falling SigLIP-style loss, and a model finetune can start from."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from click.testing import CliRunner

from pg2edge.cli import main
from pg2edge.config import get_config
from pg2edge.param_layout import flatten
from pg2edge.tasks import DataError, SuiteConfig, read_examples, write_suite
from pg2edge.train import TrainOptions
from pg2edge.train.glyph_ctc import FRAMES_PER_TOKEN, read_head
from pg2edge.train.init import from_scratch_params, ordinal_loc_rows
from pg2edge.train.source import load_source, resolve_tokenizer
from pg2edge.train.vision_pretrain import (VisionPretrainOptions, box_head, box_loss, centre_cell,
                                           image_words, pretrain_vision, region_loss, word_head)

from .helpers import write_jsonl

CFG = get_config("tiny", 56)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("vp") / "suite"
    write_suite(out, SuiteConfig(n=24, seed=1, res=56))
    return out


@pytest.fixture(scope="module")
def tok(suite):
    return resolve_tokenizer(TrainOptions(data=suite / "train.jsonl", out=suite, steps=1, batch=1, size="tiny",
                                          res=56, random_init=True), CFG)


@pytest.fixture(scope="module")
def pretrained(suite, tmp_path_factory):
    out = tmp_path_factory.mktemp("vp-run") / "tower"
    opts = VisionPretrainOptions(data=suite / "train.jsonl", out=out, size="tiny", res=56, steps=40, batch=8,
                                 lr=3e-3, log_every=10, glyph_weight=1.0)
    return out, pretrain_vision(opts, progress=False)


def test_each_image_gets_the_word_tokens_of_all_its_suffixes_and_no_location_codes(suite, tok):
    words = image_words(suite / "train.jsonl", tok, CFG)
    examples = read_examples(suite / "train.jsonl").examples
    assert len(words.images) == len({ex.image for ex in examples}) == words.positives.shape[0]
    assert words.vocab.max() < CFG.text.loc_start
    for ex in examples:
        row = words.positives[words.images.index(ex.image)]
        said = {int(t) for t, on in zip(words.vocab, row) if on}
        assert {i for i in tok.encode(ex.suffix) if i < CFG.text.loc_start} <= said
    union = {int(t) for ex in examples for t in tok.encode(ex.suffix) if t < CFG.text.loc_start}
    assert set(words.vocab.tolist()) == union
    texts = {ex.image: ex.suffix for ex in examples if ex.prefix == "ocr"}
    assert texts and words.texts == tuple(texts.get(image) for image in words.images)  # the glyph term's labels


def test_each_labelled_box_gives_the_token_under_its_centre_its_label_words(suite, tok, tmp_path):
    image = str(suite / "images" / "000000.png")
    # tiny-56 has a 4 x 4 grid of 14 px patches; loc = round(v * 1023) of the 56 px input
    rows = [{"image": image, "prefix": "detect star", "suffix": "<loc0000><loc0512><loc0256><loc1023> red star"},
            {"image": image, "prefix": "segment circle",
             "suffix": "<loc0700><loc0000><loc1023><loc0300>" + "<seg001>" * 16 + " circle"},
            {"image": image, "prefix": "detect star", "suffix": "<loc0000><loc0512><loc0256><loc1023> star"},
            {"image": image, "prefix": "caption en", "suffix": "a red star and a circle"}]
    words = image_words(write_jsonl(tmp_path / "boxes.jsonl", rows), tok, CFG)
    column = {int(t): j for j, t in enumerate(words.vocab)}
    # star: centre (y 7, x 42) -> row 0, column 3; circle: centre (y 47.2, x 8.2) -> row 3, column 0
    assert words.region_cells.tolist() == [[3, 12]]  # one region per cell: "red star" and "star" merge
    for r, label in enumerate(("red star", "circle")):
        expected = np.zeros(words.vocab.size, np.uint8)
        expected[[column[t] for t in tok.encode(" " + label)]] = 1
        np.testing.assert_array_equal(words.region_words[0, r], expected)
    assert words.region_bins.tolist() == [[[0, 512, 256, 1023], [700, 0, 1023, 300]]]  # y0 x0 y1 x1, exact
    assert centre_cell((0.0, 0.0, 56.0, 56.0), CFG) == 10 and centre_cell((50.0, 50.0, 99.0, 99.0), CFG) == 15


def test_the_region_term_scores_each_label_word_against_the_other_words_and_is_zero_without_regions():
    tokens = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 8)), jnp.float32)
    theta = {"words": jnp.asarray(np.random.default_rng(1).normal(size=(5, 8)), jnp.float32),
             "bias": jnp.asarray([0.5, -1.0, 0.0, 2.0, -2.0], jnp.float32)}
    cells = jnp.asarray([[3, -1], [-1, -1]], jnp.int32)
    label = jnp.zeros((2, 2, 5)).at[0, 0, jnp.asarray([1, 4])].set(1.0)
    scores = np.asarray(tokens[0, 3] @ theta["words"].T + theta["bias"], np.float64)
    negatives = np.exp(scores[[0, 2, 3]]).sum()  # each label word competes with the non-label words only
    expected = np.mean([np.log(np.exp(scores[w]) + negatives) - scores[w] for w in (1, 4)])
    np.testing.assert_allclose(region_loss(tokens, theta, cells, label), expected, rtol=1e-5)
    assert float(region_loss(tokens, theta, jnp.full((2, 2), -1, jnp.int32), label)) == 0.0


def test_the_box_term_is_the_cross_entropy_to_a_gaussian_around_each_edge_and_zero_without_boxes():
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.normal(size=(2, 16, CFG.text.width)), jnp.float32)
    box = jnp.asarray(rng.normal(size=(4, CFG.text.width, CFG.text.width)) / 8, jnp.float32)
    rows = ordinal_loc_rows(CFG.text)
    cells = jnp.asarray([[5, -1], [-1, -1]], jnp.int32)
    bins = jnp.asarray([[[10, 500, 300, 1023], [-1] * 4], [[-1] * 4] * 2], jnp.int32)
    logits = np.einsum("d,kde,ve->kv", np.asarray(tokens[0, 5], np.float64), np.asarray(box, np.float64),
                       np.asarray(rows, np.float64))
    top = logits.max(-1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    grid = np.arange(1024)
    target = np.exp(-0.5 * ((grid - np.asarray([10, 500, 300, 1023])[:, None]) / 8.0) ** 2)
    target /= target.sum(-1, keepdims=True)
    expected = -(target * logp).sum(-1).mean()
    np.testing.assert_allclose(box_loss(tokens, box, rows, cells, bins, 8.0), expected, rtol=1e-4)
    assert float(box_loss(tokens, box, rows, jnp.full((2, 2), -1, jnp.int32), bins, 8.0)) == 0.0


def test_the_heads_start_strongly_typed_so_the_step_compiles_once():
    """A weakly typed leaf turns strong after the first update, which would compile the step a second time."""
    heads = {"words": word_head(jax.random.PRNGKey(0), 5, 8), "box": box_head(jax.random.PRNGKey(1), 8)}
    assert [leaf.weak_type for leaf in jax.tree.leaves(heads)] == [False] * 3


def test_a_file_without_word_tokens_is_a_data_error_naming_it(suite, tok, tmp_path):
    image = str(suite / "images" / "000000.png")
    path = write_jsonl(tmp_path / "locs.jsonl", [{"image": image, "prefix": "detect x", "suffix": "<loc0001>"}])
    with pytest.raises(DataError, match=r"locs\.jsonl: no suffix has a word token"):
        image_words(path, tok, CFG)


def test_bad_lines_stop_with_the_line_named_or_are_skipped_and_counted(suite, tok, tmp_path):
    image = str(suite / "images" / "000000.png")
    rows = [{"image": image, "prefix": "caption en", "suffix": "a big red circle"},
            {"image": str(tmp_path / "gone.png"), "prefix": "caption en", "suffix": "a star"}]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        image_words(path, tok, CFG)
    words = image_words(path, tok, CFG, skip_bad=True)
    assert words.skipped == 1 and words.images == (suite / "images" / "000000.png",)


def test_loss_falls_and_only_the_tower_moves(pretrained):
    out, record = pretrained
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 10, 20, 30, 40]
    assert record["final_loss"] < 0.7 * record["first_loss"]
    assert record["regions"] > 0 and log[-1]["region_loss"] < log[0]["region_loss"]
    assert log[-1]["box_loss"] < log[0]["box_loss"] and log[-1]["glyph_loss"] < log[0]["glyph_loss"]
    loaded = flatten(load_source(TrainOptions(data=out, out=out, steps=1, batch=1, checkpoint=out), CFG))
    init = {k: np.asarray(v) for k, v in flatten(from_scratch_params(CFG, jax.random.PRNGKey(0))).items()}
    assert loaded.keys() == init.keys()
    for key, value in loaded.items():
        if key.startswith("llm/"):
            np.testing.assert_array_equal(value, init[key], err_msg=key)  # exactly finetune --random-init's draw
    assert not np.allclose(loaded["img/embedding/kernel"], init["img/embedding/kernel"])
    assert {p.name for p in out.iterdir()} == {"params.npz", "config.json", "tokenizer.model", "metrics.jsonl",
                                              "vision_pretrain.json", "glyph_head.npz"}
    head, charset = read_head(out)  # kept so the tower's own reading can be scored
    assert head.shape == (CFG.text.width, FRAMES_PER_TOKEN * (len(charset) + 1))
    assert charset == "".join(sorted(set(charset)))


def test_cli_refuses_an_existing_out_in_one_line_and_leaves_nothing(pretrained, suite):
    out, _ = pretrained
    before = sorted(p.name for p in out.parent.iterdir())
    result = CliRunner().invoke(main, ["pretrain-vision", "--size", "tiny", "--res", "56", "--data",
                                       str(suite / "train.jsonl"), "--steps", "1", "--batch", "2", "--out", str(out)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert str(out) in result.stderr and "refusing to overwrite" in result.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == before


def test_two_devices_split_each_batch_and_follow_the_one_device_run(pretrained, suite, tmp_path):
    """The tower stage is data parallel: on 2 CPU devices (each taking half of every batch) the losses and the
    trained tower match the one-device run's to float rounding."""
    out, _ = pretrained
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    args = ["pretrain-vision", "--size", "tiny", "--res", "56", "--data", str(suite / "train.jsonl"), "--steps", "40",
            "--batch", "8", "--lr", "3e-3", "--log-every", "10", "--glyph-weight", "1", "--out", str(tmp_path / "t2")]
    subprocess.run([sys.executable, "-m", "pg2edge.cli", *args], env=env, check=True, capture_output=True)
    one, two = ([json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
                for d in (out, tmp_path / "t2"))
    for key in ("loss", "region_loss", "box_loss", "glyph_loss"):
        np.testing.assert_allclose([r[key] for r in two], [r[key] for r in one], rtol=2e-3, err_msg=key)
    weights = [flatten(load_source(TrainOptions(data=d, out=d, steps=1, batch=1, checkpoint=d), CFG))
               for d in (out, tmp_path / "t2")]
    for key, value in weights[0].items():
        np.testing.assert_allclose(weights[1][key], value, atol=2e-3, err_msg=key)
