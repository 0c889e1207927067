"""Evaluation examples from the synthetic suite's JSONL or from `--dataset KIND:PATH[:PATH...]` specs.

Every loader returns `EvalExample`s: an image file, the prompt prefix, the
reference texts, the task (which picks the metric) and extra facts in `meta`
(e.g. ground-truth boxes in pixels). A malformed file raises `DataError` with one
line naming the file and the entry ("captions.json: annotations[3]: 'caption':
expected a string, found int"). Spec kinds:

    suite:JSONL                                   the synthetic suite (same as --data JSONL)
    coco:CAPTIONS_JSON:IMAGE_DIR                  COCO captions_*.json
    vqav2:QUESTIONS_JSON:ANNOTATIONS_JSON:IMAGE_DIR
    refcoco:REFS_JSON:IMAGE_DIR[:SPLIT]           see `coco_formats.load_refcoco`
"""

from __future__ import annotations

from pathlib import Path

from pg2edge.eval import coco_formats
from pg2edge.eval.example import EvalExample
from pg2edge.tasks.errors import DataError
from pg2edge.tasks.jsonl import read_examples

# task -> the prefix word that asks for it, for JSONL lines without a "task" field.
_TASK_OF_PREFIX = {"caption": "caption", "answer": "vqa", "question": "vqa", "detect": "detect",
                   "segment": "segment", "ocr": "ocr"}

SPEC_FORMS = {
    "suite": ("JSONL",),
    "coco": ("CAPTIONS_JSON", "IMAGE_DIR"),
    "vqav2": ("QUESTIONS_JSON", "ANNOTATIONS_JSON", "IMAGE_DIR"),
    "refcoco": ("REFS_JSON", "IMAGE_DIR", "[SPLIT]"),
}


def infer_task(prefix: str) -> str:
    """The task a prompt asks for, from its first word ("detect cat" -> "detect"); "other" if unknown."""
    words = prefix.split()
    return _TASK_OF_PREFIX.get(words[0].lower(), "other") if words else "other"


def load_suite(path: str | Path) -> list[EvalExample]:
    """The synthetic suite's (or any training-format) JSONL: one example per line, its suffix the reference."""
    result = read_examples(path)
    return [EvalExample(ex.image, ex.prefix, (ex.suffix,), ex.task or infer_task(ex.prefix),
                        {"source": f"{path}:{ex.line}"})
            for ex in result.examples]


def _usage(kind: str) -> str:
    """`vqav2:QUESTIONS_JSON:...`, optional parts written `[:SPLIT]`."""
    return kind + "".join(f"[:{p[1:-1]}]" if p.startswith("[") else f":{p}" for p in SPEC_FORMS[kind])


def parse_spec(spec: str) -> tuple[str, tuple[Path, ...], str | None]:
    """`KIND:PATH[:PATH...][:SPLIT]` -> (kind, paths, split); a bad spec names the accepted forms."""
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in SPEC_FORMS:
        forms = ", ".join(_usage(k) for k in SPEC_FORMS)
        raise DataError(f"--dataset {spec!r}: unknown kind {kind!r}; expected one of {forms}")
    parts = rest.split(":") if rest else []
    required = [p for p in SPEC_FORMS[kind] if not p.startswith("[")]
    optional = len(SPEC_FORMS[kind]) - len(required)
    if not len(required) <= len(parts) <= len(required) + optional or "" in parts:
        raise DataError(f"--dataset {spec!r}: expected {_usage(kind)}")
    split = parts[len(required)] if len(parts) > len(required) else None
    return kind, tuple(Path(p) for p in parts[:len(required)]), split


def load_dataset(spec: str) -> list[EvalExample]:
    """The examples a `--dataset` spec names."""
    kind, paths, split = parse_spec(spec)
    if kind == "suite":
        return load_suite(paths[0])
    if kind == "coco":
        return coco_formats.load_coco_captions(*paths)
    if kind == "vqav2":
        return coco_formats.load_vqav2(*paths)
    return coco_formats.load_refcoco(*paths, split=split)


def select(examples: list[EvalExample], tasks: tuple[str, ...] = (), limit: int | None = None) -> list[EvalExample]:
    """Keep the named tasks (all when empty), then the first `limit`; unknown task names are an error."""
    if tasks:
        present = sorted({ex.task for ex in examples})
        unknown = [t for t in tasks if t not in present]
        if unknown:
            raise DataError(f"--tasks {','.join(unknown)}: not in this dataset (it has {', '.join(present)})")
        examples = [ex for ex in examples if ex.task in tasks]
    return examples if limit is None else examples[:limit]
