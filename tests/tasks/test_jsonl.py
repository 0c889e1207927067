"""The training-side reader: good files load; each kind of bad line is one DataError line, or skipped and counted."""

from __future__ import annotations

import json

import pytest

from pg2edge.errors import Pg2EdgeError
from pg2edge.tasks import DataError, Example, read_examples


@pytest.fixture
def data_dir(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"png")
    return tmp_path


GOOD = json.dumps({"image": "images/a.png", "prefix": "caption en", "suffix": "a red circle", "task": "caption"})

BAD_LINES = {
    "invalid JSON": (b'{"image": "images/a.png", "prefix": ', "invalid JSON"),
    "not UTF-8": (b'{"image": "images/a.png", "prefix": "x", "suffix": "caf\xe9"}', "not valid UTF-8 (byte 0xe9"),
    "not an object": (b'["images/a.png", "x", "y"]', "expected a JSON object, found list"),
    "missing image file": (b'{"image": "images/b.png", "prefix": "x", "suffix": "y"}',
                           "image 'images/b.png' not found"),
    "image is a directory": (b'{"image": "images", "prefix": "x", "suffix": "y"}', "image 'images' not found"),
    "missing suffix": (b'{"image": "images/a.png", "prefix": "x"}', "'suffix': missing"),
    "empty suffix": (b'{"image": "images/a.png", "prefix": "x", "suffix": ""}', "'suffix': empty target"),
    "suffix not a string": (b'{"image": "images/a.png", "prefix": "x", "suffix": 3}',
                            "'suffix': expected a string, found int"),
    "missing prefix": (b'{"image": "images/a.png", "suffix": "y"}', "'prefix': missing"),
    "over-long suffix": (json.dumps({"image": "images/a.png", "prefix": "x", "suffix": "y" * 41}).encode(),
                         "'suffix': 41 characters, more than max_chars=40"),
    "over-long prefix": (json.dumps({"image": "images/a.png", "prefix": "x" * 41, "suffix": "y"}).encode(),
                         "'prefix': 41 characters, more than max_chars=40"),
}


def _write(data_dir, *lines: bytes):
    path = data_dir / "train.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_good_file_loads_with_paths_resolved_against_its_directory(data_dir):
    path = _write(data_dir, GOOD.encode(), b"", b"   ", GOOD.replace("caption", "ocr").encode() + b"\r")
    result = read_examples(path)
    assert result.skipped == 0 and result.problems == ()
    assert result.examples[0] == Example(data_dir / "images" / "a.png", "caption en", "a red circle", "caption", 1)
    assert [(e.task, e.line) for e in result.examples] == [("caption", 1), ("ocr", 4)]


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_line_raises_one_line_naming_file_and_line(data_dir, case):
    line, why = BAD_LINES[case]
    path = _write(data_dir, GOOD.encode(), b"", line)
    with pytest.raises(DataError) as info:
        read_examples(path, max_chars=40)
    message = str(info.value)
    assert message.startswith(f"{path}:3: ") and why in message, message
    assert "\n" not in message
    assert isinstance(info.value, Pg2EdgeError)


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_line_is_skipped_and_counted(data_dir, case):
    line, why = BAD_LINES[case]
    path = _write(data_dir, GOOD.encode(), line, GOOD.encode())
    result = read_examples(path, skip_bad=True, max_chars=40)
    assert len(result.examples) == 2 and result.skipped == 1
    assert result.problems[0].startswith(f"{path}:2: ") and why in result.problems[0]


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(DataError, match=r"absent\.jsonl: no such file$"):
        read_examples(tmp_path / "absent.jsonl")


def test_utf8_bom_and_non_ascii_text_are_fine(data_dir):
    row = json.dumps({"image": "images/a.png", "prefix": "ocr", "suffix": "café"}, ensure_ascii=False)
    path = _write(data_dir, "\ufeff".encode() + row.encode("utf-8"))
    assert read_examples(path).examples[0].suffix == "café"


def test_generated_suite_reads_back_completely(suite_dir):
    out, summary = suite_dir
    for split, count in summary.examples.items():
        result = read_examples(out / f"{split}.jsonl")
        assert len(result.examples) == count and result.skipped == 0
        assert all(e.image.is_file() and e.suffix for e in result.examples)
