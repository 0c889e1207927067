"""Loaders on tiny hand-written COCO captions / VQAv2 / RefCOCO files; malformed files are one line naming file+entry."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from pg2edge.eval.datasets import infer_task, load_dataset, load_suite, parse_spec, select
from pg2edge.eval.example import EvalExample
from pg2edge.tasks.errors import DataError


@pytest.fixture()
def images(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    for i in (42, 7):
        Image.new("RGB", (40, 30), (i, 0, 0)).save(d / f"COCO_val2014_{i:012d}.jpg")
    return d


def _write(path, doc):
    path.write_text(json.dumps(doc))
    return path


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_coco_captions(tmp_path, images):
    f = _write(tmp_path / "captions_val2014.json", {
        "images": [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg"},
                   {"id": 7, "file_name": "COCO_val2014_000000000007.jpg"},
                   {"id": 9, "file_name": "missing-but-uncaptioned.jpg"}],
        "annotations": [{"image_id": 7, "id": 1, "caption": "A red square. "},
                        {"image_id": 42, "id": 2, "caption": "a dark image"},
                        {"image_id": 7, "id": 3, "caption": "something red"}]})
    examples = load_dataset(f"coco:{f}:{images}")
    assert [(e.image.name, e.prefix, e.references, e.task) for e in examples] == [
        ("COCO_val2014_000000000042.jpg", "caption en", ("a dark image",), "caption"),
        ("COCO_val2014_000000000007.jpg", "caption en", ("A red square.", "something red"), "caption")]


def test_vqav2(tmp_path, images):
    q = _write(tmp_path / "questions.json", {"data_subtype": "val2014", "questions": [
        {"image_id": 42, "question": "How many  dogs?", "question_id": 420},
        {"image_id": 7, "question": "What color?", "question_id": 70}]})
    a = _write(tmp_path / "annotations.json", {"annotations": [
        {"question_id": 70, "image_id": 7, "answer_type": "other",
         "answers": [{"answer": "red", "answer_id": k} for k in range(1, 11)]},
        {"question_id": 420, "image_id": 42, "answer_type": "number",
         "answers": [{"answer": "2", "answer_id": 1}, {"answer": "two", "answer_id": 2}]}]})
    examples = load_dataset(f"vqav2:{q}:{a}:{images}")
    assert [(e.image.name, e.prefix, e.references, e.task) for e in examples] == [
        ("COCO_val2014_000000000042.jpg", "answer en How many dogs?", ("2", "two"), "vqa"),
        ("COCO_val2014_000000000007.jpg", "answer en What color?", ("red",) * 10, "vqa")]
    assert examples[0].meta == {"question_id": 420, "image_id": 42, "answer_type": "number"}


def test_refcoco_both_layouts(tmp_path, images):
    merged = _write(tmp_path / "refcoco.json", {
        "images": [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "width": 40, "height": 30}],
        "annotations": [{"id": 5, "image_id": 42, "bbox": [2, 3, 10.5, 20]}],
        "refs": [{"ann_id": 5, "split": "val", "sentences": [{"sent": "left  thing"}, {"sent": "the box"}]},
                 {"ann_id": 5, "split": "testA", "sentences": ["other split"]}]})
    examples = load_dataset(f"refcoco:{merged}:{images}:val")
    assert [(e.prefix, e.references, e.task) for e in examples] == [
        ("detect left thing", ("left thing",), "refcoco"), ("detect the box", ("the box",), "refcoco")]
    assert examples[0].meta["boxes"] == ((2.0, 3.0, 12.5, 23.0),)
    assert len(load_dataset(f"refcoco:{merged}:{images}")) == 3
    flat = _write(tmp_path / "refs.json", [
        {"image": "COCO_val2014_000000000007.jpg", "sentence": "red thing", "bbox": [0, 0, 40, 30]},
        {"image": "COCO_val2014_000000000042.jpg", "sentences": ["a", "b"], "bbox": [1, 1, 2, 2]}])
    examples = load_dataset(f"refcoco:{flat}:{images}")
    assert [e.prefix for e in examples] == ["detect red thing", "detect a", "detect b"]
    assert examples[0].meta["boxes"] == ((0.0, 0.0, 40.0, 30.0),)


@pytest.mark.parametrize("kind, doc, expected", [
    ("coco", {"images": [{"id": 1, "file_name": "x.jpg"}], "annotations": [{"image_id": 1, "caption": 5}]},
     "annotations[0]: 'caption': expected a string, found int"),
    ("coco", {"images": [{"id": "1", "file_name": "x.jpg"}], "annotations": []},
     "images[0]: 'id': expected an integer, found str"),
    ("coco", {"images": [{"id": 1, "file_name": "x.jpg"}], "annotations": [{"image_id": 1, "caption": "c"}]},
     "images[0]: image 'x.jpg' not found in"),
    ("coco", {"images": []}, "'annotations': missing"),
    ("coco", [1, 2], "expected a JSON object, found list"),
    ("refcoco", [{"image": "COCO_val2014_000000000007.jpg", "sentence": "s", "bbox": [0, 0, 1]}],
     "[0]: 'bbox': expected [x, y, width, height] of 4 finite numbers, found [0, 0, 1]"),
    ("refcoco", {"images": [], "annotations": [], "refs": [{"ann_id": 3, "sentences": ["s"]}]},
     "refs[0]: ann_id 3 is not in 'annotations'"),
    ("refcoco", [{"image": "COCO_val2014_000000000007.jpg", "sentences": [], "bbox": [0, 0, 1, 1]}],
     "[0]: expected at least one non-empty referring expression"),
])
def test_malformed_files_name_file_and_entry(tmp_path, images, kind, doc, expected):
    f = _write(tmp_path / "bad.json", doc)
    with pytest.raises(DataError) as excinfo:
        load_dataset(f"{kind}:{f}:{images}")
    message = _one_line(excinfo)
    assert message.startswith(f"{f}: ") and expected in message


def test_malformed_vqav2_names_the_entry(tmp_path, images):
    q = _write(tmp_path / "q.json", {"questions": [{"image_id": 42, "question": "q?", "question_id": 1},
                                                   {"image_id": 42, "question": "q?", "question_id": 2}]})
    a = _write(tmp_path / "a.json", {"annotations": [{"question_id": 1, "answers": [{"answer": "x"}]},
                                                     {"question_id": 2, "answers": [{"answer": None}]}]})
    with pytest.raises(DataError) as excinfo:
        load_dataset(f"vqav2:{q}:{a}:{images}")
    assert _one_line(excinfo) == f"{a}: annotations[1]: answers[0]: 'answer': expected a string, found null"
    a = _write(tmp_path / "a.json", {"annotations": [{"question_id": 1, "answers": [{"answer": "x"}]}]})
    with pytest.raises(DataError) as excinfo:
        load_dataset(f"vqav2:{q}:{a}:{images}")
    assert _one_line(excinfo) == f"{q}: questions[1]: question_id 2 has no entry in {a}"


def test_unreadable_files_and_bad_specs(tmp_path, images):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [}')
    with pytest.raises(DataError, match=r"bad.json: invalid JSON \(Expecting value at line 1 column 13\)"):
        load_dataset(f"coco:{bad}:{images}")
    with pytest.raises(DataError, match="missing.json: no such file"):
        load_dataset(f"coco:{tmp_path / 'missing.json'}:{images}")
    with pytest.raises(DataError, match="image directory not found"):
        load_dataset(f"coco:{_write(tmp_path / 'c.json', {'images': [], 'annotations': []})}:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match="unknown kind 'kitti'; expected one of suite:JSONL, coco:"):
        parse_spec("kitti:x")
    with pytest.raises(DataError, match="expected vqav2:QUESTIONS_JSON:ANNOTATIONS_JSON:IMAGE_DIR"):
        parse_spec("vqav2:q.json:images")
    assert parse_spec("refcoco:r.json:img:val")[2] == "val" and parse_spec("suite:a.jsonl")[1][0].name == "a.jsonl"


def test_suite_jsonl_and_selection(tmp_path, suite_dir):
    examples = load_suite(suite_dir / "train.jsonl")
    assert examples == load_dataset(f"suite:{suite_dir / 'train.jsonl'}")
    assert {e.task for e in examples} >= {"caption", "detect", "count_shape"}
    assert all(e.image.is_file() and len(e.references) == 1 for e in examples)
    detect = select(examples, ("detect",), limit=2)
    assert len(detect) == 2 and {e.task for e in detect} == {"detect"}
    with pytest.raises(DataError, match="--tasks nope: not in this dataset"):
        select(examples, ("nope",))
    line = tmp_path / "x.jsonl"
    line.write_text('{"image": "i.png", "prefix": "p", "suffix": 3}\n')
    with pytest.raises(DataError, match=r"x.jsonl:1: 'suffix': expected a string, found int"):
        load_suite(line)
    assert infer_task("detect cat ; dog") == "detect" and infer_task("answer en why") == "vqa"
    assert infer_task("") == infer_task("translate this") == "other"
    assert EvalExample(examples[0].image, "p", (), "t", {"a": 1}) == EvalExample(examples[0].image, "p", (), "t")
