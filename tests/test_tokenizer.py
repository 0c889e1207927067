"""Tokenizer: PaliGemma special-token layout, prompt masks, round-trips, error messages."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pg2edge.config import BOS_ID, EOS_ID, NEWLINE_ID, PAD_ID, TextConfig, get_config
from pg2edge.errors import TokenizerError
from pg2edge.tokenizer import Tokenizer, build_synthetic_tokenizer, loc_piece, seg_piece

FULL_VOCAB = 257152
TINY_VOCAB = 2048


@pytest.fixture(scope="module")
def tiny_bytes() -> bytes:
    return build_synthetic_tokenizer(TINY_VOCAB)


@pytest.fixture(scope="module")
def tiny(tiny_bytes) -> Tokenizer:
    return Tokenizer.from_bytes(tiny_bytes)


@pytest.fixture(scope="module")
def full_and_seconds() -> tuple[Tokenizer, float]:
    start = time.perf_counter()
    tok = Tokenizer.from_bytes(build_synthetic_tokenizer(FULL_VOCAB))
    return tok, time.perf_counter() - start


@pytest.fixture(params=["tiny", "full"])
def tok(request, tiny, full_and_seconds) -> Tokenizer:
    return tiny if request.param == "tiny" else full_and_seconds[0]


def _proto(data: bytes):
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = pb.ModelProto()
    model.ParseFromString(data)
    return model


def test_special_token_layout(tok):
    text_cfg = TextConfig(vocab_size=tok.vocab_size)
    assert tok.vocab_size in (TINY_VOCAB, FULL_VOCAB)
    assert (tok.loc_start, tok.seg_start) == (text_cfg.loc_start, text_cfg.seg_start)
    assert tok.seg_start - tok.loc_start == 1024 and tok.vocab_size - tok.seg_start == 128
    assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.newline_id) == (PAD_ID, EOS_ID, BOS_ID, NEWLINE_ID) == (0, 1, 2, 108)
    assert [tok.id_to_piece(i) for i in (0, 1, 2, 3, 108)] == ["<pad>", "<eos>", "<bos>", "<unk>", "\n"]
    assert tok.id_to_piece(tok.loc_start) == "<loc0000>"
    assert tok.id_to_piece(tok.seg_start - 1) == "<loc1023>"
    assert tok.id_to_piece(tok.seg_start) == "<seg000>"
    assert tok.id_to_piece(tok.vocab_size - 1) == "<seg127>"
    assert tok.encode("\n") == [NEWLINE_ID]


def test_tiny_matches_tiny_config(tiny):
    tiny.check_config(get_config("tiny").text)
    with pytest.raises(TokenizerError, match="2048.*257152"):
        tiny.check_config(get_config("3B").text)


def test_full_vocab_builds_fast(full_and_seconds):
    tok, seconds = full_and_seconds
    assert tok.vocab_size == FULL_VOCAB == get_config("3B").text.vocab_size
    assert seconds < 5.0


def test_every_loc_and_seg_piece_is_one_id_both_ways(tok):
    for i in range(1024):
        assert tok.encode(loc_piece(i)) == [tok.loc_start + i]
    for i in range(128):
        assert tok.encode(seg_piece(i)) == [tok.seg_start + i]
    ids = list(range(tok.loc_start, tok.vocab_size))
    assert tok.decode(ids) == "".join(loc_piece(i) for i in range(1024)) + "".join(seg_piece(i) for i in range(128))


def test_detection_string_round_trips_with_single_loc_ids(tiny):
    text = "<loc0012><loc0034><loc0567><loc1023> red circle ; <loc0000><loc0001><loc0002><loc0003> star"
    ids = tiny.encode(text)
    assert ids[:4] == [tiny.loc_start + 12, tiny.loc_start + 34, tiny.loc_start + 567, tiny.loc_start + 1023]
    assert sum(tiny.loc_start <= i < tiny.seg_start for i in ids) == 8
    assert tiny.decode(ids) == text
    seg_text = "<loc0100><loc0200><loc0300><loc0400>" + "".join(seg_piece(i) for i in range(0, 128, 8))
    seg_ids = tiny.encode(seg_text)
    assert seg_ids[4:] == [tiny.seg_start + i for i in range(0, 128, 8)]
    assert tiny.decode(seg_ids) == seg_text


def test_task_words_are_single_pieces(tiny):
    for word in ["caption", "detect", "segment", "answer", "circle", "hexagon", "purple", "picture"]:
        assert len(tiny.encode(word)) == 1, word
        assert len(tiny.encode(" " + word)) == 1, word
    assert len(tiny.encode("how many red circles are there")) == 6


def test_encode_prompt_layout_and_masks(tiny):
    prefix, suffix = "answer en what color is the star?", "red"
    p = tiny.encode_prompt(prefix, suffix)
    pre, suf = tiny.encode(prefix), tiny.encode(suffix)
    expected = [BOS_ID, *pre, NEWLINE_ID, *suf, EOS_ID]
    n_pre = len(pre) + 2
    assert p.tokens.dtype == p.mask_ar.dtype == p.mask_loss.dtype == np.int32
    np.testing.assert_array_equal(p.tokens, expected)
    np.testing.assert_array_equal(p.mask_ar, [0] * n_pre + [1] * (len(suf) + 1))
    np.testing.assert_array_equal(p.mask_loss, [0] * n_pre + [1] * (len(suf) + 1))
    assert len(p) == len(expected) and p.prefix_len == n_pre
    assert tiny.decode(p.tokens) == prefix + "\n" + suffix


def test_encode_prompt_without_suffix_has_no_eos_and_no_loss(tiny):
    p = tiny.encode_prompt("caption en")
    np.testing.assert_array_equal(p.tokens, [BOS_ID, *tiny.encode("caption en"), NEWLINE_ID])
    assert not p.mask_ar.any() and not p.mask_loss.any()
    empty = tiny.encode_prompt("caption en", "")
    assert empty.tokens[-1] == EOS_ID and empty.mask_ar[-1] == 1 and empty.mask_loss.sum() == 1


def test_decode_skips_pad_bos_eos_but_does_not_stop(tiny):
    a, b = tiny.encode("red star"), tiny.encode(" blue circle")
    assert tiny.decode([BOS_ID, *a, EOS_ID, *b, EOS_ID, PAD_ID, PAD_ID]) == "red star blue circle"
    assert tiny.decode(np.asarray([BOS_ID, *a], np.int32)) == "red star"


def test_decode_out_of_range_id_names_it(tiny):
    with pytest.raises(TokenizerError, match="id 2048"):
        tiny.decode([5, 2048])
    with pytest.raises(TokenizerError, match="id -1"):
        tiny.decode([-1])


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\u2581"), max_size=40)
       | st.lists(st.sampled_from(["red", " circle", "<loc0042>", "<seg017>", " ;", "\n", "  ", "é", "\t", "🙂",
                                   "caption", "<eos>", "<unused3>"]), max_size=12).map("".join))
def test_round_trip(tiny, text):
    ids = tiny.encode(text)
    assert all(0 <= i < tiny.vocab_size for i in ids)
    assert BOS_ID not in ids and EOS_ID not in ids and PAD_ID not in ids  # control text stays text
    assert tiny.decode(ids) == text


def test_synthetic_model_is_deterministic_and_takes_extra_words(tiny_bytes):
    assert build_synthetic_tokenizer(TINY_VOCAB) == tiny_bytes
    extra = build_synthetic_tokenizer(TINY_VOCAB, extra_words=["zebra", "red"])
    assert extra == build_synthetic_tokenizer(TINY_VOCAB, extra_words=["zebra", "red"]) != tiny_bytes
    tok = Tokenizer.from_bytes(extra)
    assert len(tok.encode("zebra")) == 1 and len(tok.encode(" zebra")) == 1
    assert tok.vocab_size == TINY_VOCAB


def test_synthetic_model_proto_settings(tiny_bytes):
    model = _proto(tiny_bytes)
    assert model.trainer_spec.model_type == model.trainer_spec.UNIGRAM and model.trainer_spec.byte_fallback
    assert model.normalizer_spec.name == "identity" and not model.normalizer_spec.add_dummy_prefix
    types = model.pieces[0].__class__
    assert sum(p.type == types.BYTE for p in model.pieces) == 256
    assert all(p.type == types.USER_DEFINED for p in model.pieces[TINY_VOCAB - 1152:])
    assert sum(p.type == types.NORMAL for p in model.pieces) <= 896


def test_too_small_vocab_and_bad_extra_words_raise():
    with pytest.raises(TokenizerError, match="vocab_size 1500 is too small"):
        build_synthetic_tokenizer(1500)
    with pytest.raises(TokenizerError, match="too small"):
        build_synthetic_tokenizer(TINY_VOCAB, extra_words=[f"w{i}" for i in range(200)])
    with pytest.raises(TokenizerError, match="whitespace"):
        build_synthetic_tokenizer(TINY_VOCAB, extra_words=["two words"])


def test_from_file_round_trips_bytes_and_pickles(tmp_path, tiny_bytes):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(tiny_bytes)
    tok = Tokenizer.from_file(path)
    assert tok.serialized() == tiny_bytes and tok.name == str(path)
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.encode("detect red star") == tok.encode("detect red star")


@pytest.mark.parametrize("content", [None, b"", b"this is not a sentencepiece model"])
def test_missing_or_corrupt_file_names_the_file(tmp_path, content):
    path = tmp_path / "broken_tokenizer.model"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TokenizerError, match="broken_tokenizer.model") as info:
        Tokenizer.from_file(path)
    assert "\n" not in str(info.value)


def test_proto_without_loc_tokens_is_refused(tiny_bytes):
    model = _proto(tiny_bytes)
    loc_start = TINY_VOCAB - 1152
    for k in range(1024):  # same vocab size, but the loc pieces are gone
        model.pieces[loc_start + k].piece = f"<unusedX{k}>"
        model.pieces[loc_start + k].type = model.pieces[0].CONTROL
    with pytest.raises(TokenizerError, match=f"'<loc0000>' at id {loc_start}"):
        Tokenizer.from_bytes(model.SerializeToString(), name="noloc.model")


def test_loc_tokens_that_are_not_user_defined_are_refused(tiny_bytes):
    model = _proto(tiny_bytes)
    for piece in model.pieces[TINY_VOCAB - 1152:]:
        piece.type = piece.NORMAL
        piece.score = -100.0
    with pytest.raises(TokenizerError, match="USER_DEFINED"):
        Tokenizer.from_bytes(model.SerializeToString())


def test_shifted_special_ids_are_refused(tiny_bytes):
    model = _proto(tiny_bytes)
    model.pieces[1].piece, model.pieces[2].piece = "<bos>", "<eos>"
    model.trainer_spec.bos_id, model.trainer_spec.eos_id = 1, 2
    with pytest.raises(TokenizerError, match="'<eos>' at id 1, found '<bos>'"):
        Tokenizer.from_bytes(model.SerializeToString(), name="swapped.model")
    del model.pieces[-1]  # vocab no longer ends with <seg127>
    model.pieces[1].piece, model.pieces[2].piece = "<eos>", "<bos>"
    model.trainer_spec.bos_id, model.trainer_spec.eos_id = 2, 1
    with pytest.raises(TokenizerError, match="at id"):
        Tokenizer.from_bytes(model.SerializeToString(), name="short.model")
