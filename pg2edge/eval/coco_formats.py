"""Loaders for COCO-image datasets in their published JSON formats: COCO captions, VQAv2, RefCOCO.

Each bad entry raises one-line `DataError` "<file>: <list>[<index>]: <what was expected>".

- COCO captions (`captions_val2014.json`): `images` [{id, file_name}] and
  `annotations` [{image_id, caption}]; one example per image, prefix "caption en",
  all its captions as references. Images without captions are skipped.
- VQAv2: questions file `questions` [{question_id, image_id, question}] and
  annotations file `annotations` [{question_id, answers: [{answer}], answer_type?}];
  prefix "answer en <question>", the (ten) human answers as references. Images are
  found in IMAGE_DIR by the number ending the file name (`COCO_val2014_000000000042.jpg`
  and `000000000042.jpg` are both image 42).
- RefCOCO / RefCOCO+ / RefCOCOg, either of two JSON layouts:
  (a) refer's `instances.json` with the refs merged in: `images` [{id, file_name}],
      `annotations` [{id, image_id, bbox}], `refs` [{ann_id, split?, sentences:
      [{sent} | str]}]; (b) a list of {image, sentence | sentences, bbox}.
  `bbox` is COCO's [x, y, width, height] in pixels. One example per sentence,
  prefix "detect <sentence>"; the box is `meta["boxes"]` as (x0, y0, x1, y1).
  An optional SPLIT keeps refs whose `split` equals it.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from pg2edge.eval.example import EvalExample
from pg2edge.tasks.errors import DataError

CAPTION_PREFIX = "caption en"
VQA_PREFIX = "answer en"
REFER_PREFIX = "detect"
_TRAILING_NUMBER = re.compile(r"(\d+)$")


class _Bad(Exception):
    """Why one entry is unusable (private: becomes a DataError naming file and entry)."""


def read_json(path: Path) -> object:
    """Parsed JSON; a missing, unreadable or invalid file is one DataError line naming it."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


_KIND_NAMES = {int: "an integer", str: "a string", list: "a list", dict: "an object"}


def _get(entry: object, key: str, kind: type) -> object:
    """entry[key], checked to be of `kind` (a bool is not an integer)."""
    if not isinstance(entry, dict):
        raise _Bad(f"expected a JSON object, found {_type_name(entry)}")
    if key not in entry:
        raise _Bad(f"{key!r}: missing")
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise _Bad(f"{key!r}: expected {_KIND_NAMES[kind]}, found {_type_name(value)}")
    return value


def _list(doc: object, path: Path, key: str) -> list:
    """doc[key] as a list; the file is named when the top level or the key is wrong."""
    try:
        value = _get(doc, key, list)
    except _Bad as why:
        raise DataError(f"{path}: {why}") from None
    return value


def _fail(path: Path, key: str, index: int, why: Exception) -> DataError:
    return DataError(f"{path}: {key}[{index}]: {why}")


def _image(image_dir: Path, name: str) -> Path:
    """IMAGE_DIR/name, which must exist."""
    image = image_dir / name
    if not image.is_file():
        raise _Bad(f"image {name!r} not found in {image_dir}")
    return image


def _check_dir(image_dir: Path) -> Path:
    if not Path(image_dir).is_dir():
        raise DataError(f"{image_dir}: image directory not found")
    return Path(image_dir)


def load_coco_captions(captions_json: Path, image_dir: Path) -> list[EvalExample]:
    """One "caption en" example per captioned image, every caption a reference."""
    doc = read_json(captions_json)
    image_dir = _check_dir(image_dir)
    files: dict[int, str] = {}
    images = _list(doc, captions_json, "images")
    for i, entry in enumerate(images):
        try:
            files[_get(entry, "id", int)] = _get(entry, "file_name", str)
        except _Bad as why:
            raise _fail(captions_json, "images", i, why) from None
    captions: dict[int, list[str]] = {}
    for i, entry in enumerate(_list(doc, captions_json, "annotations")):
        try:
            image_id, caption = _get(entry, "image_id", int), _get(entry, "caption", str)
            if image_id not in files:
                raise _Bad(f"image_id {image_id} is not in 'images'")
        except _Bad as why:
            raise _fail(captions_json, "annotations", i, why) from None
        captions.setdefault(image_id, []).append(caption.strip())
    out = []
    for i, entry in enumerate(images):
        image_id = entry["id"]
        if image_id not in captions:
            continue
        try:
            image = _image(image_dir, files[image_id])
        except _Bad as why:
            raise _fail(captions_json, "images", i, why) from None
        out.append(EvalExample(image, CAPTION_PREFIX, tuple(captions.pop(image_id)), "caption",
                               {"image_id": image_id}))
    return out


def _image_index(image_dir: Path) -> dict[int, Path]:
    """Image id -> file, from the number ending each file name in IMAGE_DIR."""
    index: dict[int, Path] = {}
    for p in sorted(image_dir.iterdir()):
        m = _TRAILING_NUMBER.search(p.stem)
        if m and p.is_file():
            index.setdefault(int(m.group(1)), p)
    return index


def _answers(entry: object) -> tuple[str, ...]:
    answers = _get(entry, "answers", list)
    if not answers:
        raise _Bad("'answers': empty list")
    out = []
    for j, a in enumerate(answers):
        try:
            out.append(_get(a, "answer", str))
        except _Bad as why:
            raise _Bad(f"answers[{j}]: {why}") from None
    return tuple(out)


def load_vqav2(questions_json: Path, annotations_json: Path, image_dir: Path) -> list[EvalExample]:
    """One "answer en <question>" example per question, the human answers as references."""
    qdoc, adoc = read_json(questions_json), read_json(annotations_json)
    image_dir = _check_dir(image_dir)
    annotations: dict[int, tuple[tuple[str, ...], dict]] = {}
    for i, entry in enumerate(_list(adoc, annotations_json, "annotations")):
        try:
            qid = _get(entry, "question_id", int)
            extra = {k: entry[k] for k in ("answer_type", "question_type") if isinstance(entry.get(k), str)}
            annotations[qid] = (_answers(entry), extra)
        except _Bad as why:
            raise _fail(annotations_json, "annotations", i, why) from None
    files = _image_index(image_dir)
    out = []
    for i, entry in enumerate(_list(qdoc, questions_json, "questions")):
        try:
            qid, image_id = _get(entry, "question_id", int), _get(entry, "image_id", int)
            question = " ".join(_get(entry, "question", str).split())
            if qid not in annotations:
                raise _Bad(f"question_id {qid} has no entry in {annotations_json}")
            if image_id not in files:
                raise _Bad(f"no image numbered {image_id} in {image_dir}")
        except _Bad as why:
            raise _fail(questions_json, "questions", i, why) from None
        answers, extra = annotations[qid]
        out.append(EvalExample(files[image_id], f"{VQA_PREFIX} {question}", answers, "vqa",
                               {"question_id": qid, "image_id": image_id, **extra}))
    return out


def _xywh_box(entry: object) -> tuple[float, float, float, float]:
    """COCO [x, y, w, h] pixels -> (x0, y0, x1, y1)."""
    bbox = _get(entry, "bbox", list)
    if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                 for v in bbox):
        raise _Bad(f"'bbox': expected [x, y, width, height] of 4 finite numbers, found {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if w < 0 or h < 0:
        raise _Bad(f"'bbox': negative width or height in {bbox!r}")
    return x, y, x + w, y + h


def _sentences(entry: object) -> list[str]:
    """`sentence` (a string) or `sentences` (strings or {"sent": ...} objects), whitespace collapsed."""
    if isinstance(entry, dict) and "sentence" in entry:
        raw = [_get(entry, "sentence", str)]
    else:
        raw = []
        for j, s in enumerate(_get(entry, "sentences", list)):
            try:
                raw.append(s if isinstance(s, str) else _get(s, "sent", str))
            except _Bad as why:
                raise _Bad(f"sentences[{j}]: {why}") from None
    sents = [" ".join(s.split()) for s in raw]
    if not sents or not all(sents):
        raise _Bad("expected at least one non-empty referring expression")
    return sents


def _refer_example(image: Path, sentence: str, box: tuple, meta: dict) -> EvalExample:
    return EvalExample(image, f"{REFER_PREFIX} {sentence}", (sentence,), "refcoco", {"boxes": (box,), **meta})


def load_refcoco(refs_json: Path, image_dir: Path, split: str | None = None) -> list[EvalExample]:
    """One "detect <expression>" example per referring sentence, its ground-truth box in `meta`."""
    doc = read_json(refs_json)
    image_dir = _check_dir(image_dir)
    if isinstance(doc, list):
        return _refcoco_list(doc, refs_json, image_dir, split)
    files: dict[int, str] = {}
    for i, entry in enumerate(_list(doc, refs_json, "images")):
        try:
            files[_get(entry, "id", int)] = _get(entry, "file_name", str)
        except _Bad as why:
            raise _fail(refs_json, "images", i, why) from None
    anns: dict[int, tuple[int, tuple]] = {}
    for i, entry in enumerate(_list(doc, refs_json, "annotations")):
        try:
            anns[_get(entry, "id", int)] = (_get(entry, "image_id", int), _xywh_box(entry))
        except _Bad as why:
            raise _fail(refs_json, "annotations", i, why) from None
    out = []
    for i, entry in enumerate(_list(doc, refs_json, "refs")):
        try:
            if split is not None and _get(entry, "split", str) != split:
                continue
            ann_id = _get(entry, "ann_id", int)
            if ann_id not in anns:
                raise _Bad(f"ann_id {ann_id} is not in 'annotations'")
            image_id, box = anns[ann_id]
            if image_id not in files:
                raise _Bad(f"image_id {image_id} (of ann_id {ann_id}) is not in 'images'")
            image = _image(image_dir, files[image_id])
            sents = _sentences(entry)
        except _Bad as why:
            raise _fail(refs_json, "refs", i, why) from None
        out += [_refer_example(image, s, box, {"ann_id": ann_id, "ref": i}) for s in sents]
    return out


def _refcoco_list(doc: list, refs_json: Path, image_dir: Path, split: str | None) -> list[EvalExample]:
    """Layout (b): a list of {image, sentence | sentences, bbox[, split]}."""
    out = []
    for i, entry in enumerate(doc):
        try:
            if split is not None and _get(entry, "split", str) != split:
                continue
            image = _image(image_dir, _get(entry, "image", str))
            box = _xywh_box(entry)
            sents = _sentences(entry)
        except _Bad as why:
            raise DataError(f"{refs_json}: [{i}]: {why}") from None
        out += [_refer_example(image, s, box, {"ref": i}) for s in sents]
    return out
