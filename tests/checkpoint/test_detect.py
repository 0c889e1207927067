"""Format and variant detection for every format, and the final soft-cap read from HF's config.json."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pg2edge.checkpoint import detect_format, detect_variant, load_checkpoint, random_params, write_npz
from pg2edge.checkpoint.detect import match_variant, npz_signature
from pg2edge.checkpoint.hf_mapping import padded_vocab
from pg2edge.checkpoint.validate import TensorInfo
from pg2edge.config import VARIANTS, get_config
from pg2edge.errors import CheckpointError
from pg2edge.param_layout import param_shapes


@pytest.mark.parametrize("fmt", ["npz", "safetensors", "safetensors-sharded"])
def test_detect_format_and_variant_of_each_written_format(written, cfg, fmt):
    path = written[fmt, "float32"]
    assert detect_format(path) == fmt
    assert detect_variant(path) == cfg


def test_detect_format_of_files_inside_hf_directories(written):
    assert detect_format(written["safetensors", "float32"] / "model.safetensors") == "safetensors"
    index = written["safetensors-sharded", "float32"] / "model.safetensors.index.json"
    assert detect_format(index) == "safetensors-sharded"
    assert detect_variant(index).name == "tiny-56"


def test_detect_format_sniffs_content_without_a_known_extension(tmp_path, written):
    shutil.copy(written["npz", "float32"], tmp_path / "weights.bin")
    shutil.copy(written["safetensors", "float32"] / "model.safetensors", tmp_path / "weights.st")
    assert detect_format(tmp_path / "weights.bin") == "npz"
    assert detect_format(tmp_path / "weights.st") == "safetensors"
    assert load_checkpoint(tmp_path / "weights.st")[0].name == "tiny-56"
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="unrecognised content"):
        detect_format(tmp_path / "notes.txt")


def test_directory_without_weights_is_rejected(tmp_path):
    with pytest.raises(CheckpointError, match="model.safetensors") as e:
        detect_format(tmp_path)
    assert str(tmp_path) in str(e.value)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_is_recognised_from_its_shapes(name):
    """Signatures are unique across all variants, for both vocab layouts (no data needed)."""
    cfg = VARIANTS[name]
    index = {k: TensorInfo(s, np.dtype(np.float32)) for k, s in param_shapes(cfg).items()}
    sig = npz_signature(index, "x.npz")
    assert match_variant(sig, "x.npz", padded=False) == cfg
    assert match_variant(sig._replace(vocab_rows=padded_vocab(cfg.text.vocab_size)), "x", padded=True) == cfg


@pytest.mark.parametrize("res", [112, 224])
def test_tiny_resolutions_are_told_apart(tmp_path, res):
    cfg = get_config("tiny", res)
    path = write_npz(tmp_path / f"tiny{res}.npz", random_params(cfg, 0))
    assert detect_variant(path) == cfg


def _set_softcap(path, value, remove=False):
    config = path / "config.json"
    doc = json.loads(config.read_text())
    if remove:
        del doc["text_config"]["final_logit_softcapping"]
    else:
        doc["text_config"]["final_logit_softcapping"] = value
    config.write_text(json.dumps(doc))


@pytest.mark.parametrize("value,remove,expected", [(30.0, False, 30.0), (None, False, 0.0), (12.5, False, 12.5),
                                                   (None, True, 30.0)])
def test_final_softcap_comes_from_config_json(tmp_path, written, value, remove, expected):
    path = tmp_path / "hf"
    shutil.copytree(written["safetensors", "float32"], path)
    _set_softcap(path, value, remove)
    assert detect_variant(path).text.final_logit_softcap == expected
    assert detect_variant(path / "model.safetensors").text.final_logit_softcap == expected  # file path too
    assert load_checkpoint(path)[0].text.final_logit_softcap == expected


def test_npz_keeps_the_config_default_softcap(written, cfg):
    assert detect_variant(written["npz", "float32"]).text.final_logit_softcap == cfg.text.final_logit_softcap


def test_explicit_cfg_wins_over_detection(written, cfg):
    mine = cfg.replace(final_logit_softcap=0.0)
    got_cfg, _ = load_checkpoint(written["safetensors", "float32"], cfg=mine)
    assert got_cfg is mine
