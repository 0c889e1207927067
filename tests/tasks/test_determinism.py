"""Same seed -> byte-identical suite; another seed -> different files; images independent of N."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pg2edge.tasks import SuiteConfig, generate_image, is_current, write_suite
from pg2edge.tasks.errors import DataError
from pg2edge.tasks.suite import assign_splits


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path):
    cfg = SuiteConfig(n=12, seed=3, res=112)
    write_suite(tmp_path / "a", cfg)
    write_suite(tmp_path / "b", cfg)
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert sorted(a) == sorted(b)
    assert {"train.jsonl", "val.jsonl", "test.jsonl", "meta.json", "images/000000.png"} <= set(a)
    assert len([k for k in a if k.startswith("images/")]) == 12
    for name in a:
        assert a[name] == b[name], name


def test_another_process_with_another_hash_seed_writes_the_same_bytes(tmp_path):
    cfg = SuiteConfig(n=6, seed=3, res=56)
    write_suite(tmp_path / "here", cfg)
    code = ("from pg2edge.tasks import SuiteConfig, write_suite; "
            f"write_suite({str(tmp_path / 'there')!r}, SuiteConfig(n=6, seed=3, res=56))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert _tree(tmp_path / "here") == _tree(tmp_path / "there")


def test_other_seed_gives_different_files(tmp_path):
    write_suite(tmp_path / "a", SuiteConfig(n=12, seed=3, res=112))
    write_suite(tmp_path / "b", SuiteConfig(n=12, seed=4, res=112))
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a["train.jsonl"] != b["train.jsonl"]
    assert sum(a[k] != b[k] for k in a if k.startswith("images/")) == 12


def test_an_image_does_not_depend_on_n_or_other_images():
    first = generate_image(5, 9, 112)
    again = generate_image(5, 9, 112)
    assert first.png == again.png and first.targets == again.targets


def test_content_is_the_same_at_every_resolution():
    """Only pixels scale: the same seed asks and answers the same things at 112 and 224 px."""
    for i in range(40):
        small, big = generate_image(1, i, 112), generate_image(1, i, 224)
        assert [t.prefix for t in small.targets] == [t.prefix for t in big.targets]
        for s, b in zip(small.targets, big.targets):
            if s.task not in ("detect", "segment"):
                assert s.suffix == b.suffix


def test_unknown_layout_is_a_data_error_naming_the_choices():
    with pytest.raises(DataError, match="layout: expected one of grid, free, found 'spiral'"):
        SuiteConfig(n=3, layout="spiral")


def test_is_current_accepts_only_the_same_whole_suite_from_this_generator(suite_dir, tmp_path):
    out, _ = suite_dir
    cfg = SuiteConfig(n=30, seed=7, res=112)
    assert is_current(out, cfg)
    for other in (SuiteConfig(n=31, seed=7, res=112), SuiteConfig(n=30, seed=8, res=112),
                  SuiteConfig(n=30, seed=7, res=56), SuiteConfig(n=30, seed=7, res=112, layout="free")):
        assert not is_current(out, other), other
    stale = tmp_path / "stale"
    stale.mkdir()
    meta = json.loads((out / "meta.json").read_text())
    (stale / "meta.json").write_text(json.dumps({**meta, "generator_version": meta["generator_version"] - 1}))
    assert not is_current(stale, cfg) and not is_current(tmp_path / "missing", cfg)


def test_splits_are_80_10_10_by_image_and_seeded():
    names = assign_splits(50, 0)
    assert (names.count("train"), names.count("val"), names.count("test")) == (40, 5, 5)
    assert assign_splits(50, 0) == names and assign_splits(50, 1) != names


def test_meta_records_seed_res_counts_and_version(suite_dir):
    out, summary = suite_dir
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["seed"], meta["res"], meta["n_images"], meta["generator_version"]) == (7, 112, 30, 4)
    assert meta["images"] == summary.images and sum(meta["images"].values()) == 30
    assert meta["examples"] == summary.examples and meta["tasks"] == summary.tasks
    for split, count in summary.examples.items():
        assert len((out / f"{split}.jsonl").read_text().splitlines()) == count


def test_simple_train_holds_exactly_the_train_lines_of_one_object_images(suite_dir):
    out, summary = suite_dir
    meta = json.loads((out / "meta.json").read_text())
    lines = (out / "train.jsonl").read_text().splitlines()
    objects = {}  # image index -> shapes drawn, or lines of text written
    for index in {int(Path(json.loads(line)["image"]).stem) for line in lines}:
        content = generate_image(7, index, 112).content
        objects[index] = len(content.lines) if hasattr(content, "lines") else len(content)
    expected = [line for line in lines if objects[int(Path(json.loads(line)["image"]).stem)] == 1]
    simple = (out / "train_simple.jsonl").read_text().splitlines()
    assert simple == expected and len(simple) == meta["simple_train_examples"] == summary.simple_train > 0


def test_jsonl_lines_have_sorted_keys_and_relative_existing_images(suite_dir):
    out, _ = suite_dir
    seen_images = set()
    for split in ("train", "val", "test"):
        for line in (out / f"{split}.jsonl").read_text().splitlines():
            row = json.loads(line)
            assert list(row) == sorted(row) == ["image", "prefix", "suffix", "task"]
            assert not Path(row["image"]).is_absolute() and (out / row["image"]).is_file()
            seen_images.add((split, row["image"]))
    by_image = {}
    for split, image in seen_images:
        by_image.setdefault(image, set()).add(split)
    assert len(by_image) == 30 and all(len(s) == 1 for s in by_image.values())  # a split is a set of images


def test_staging_leaves_no_temp_dirs(suite_dir):
    out, _ = suite_dir
    assert [p.name for p in out.parent.iterdir()] == ["suite"]


def test_tasks_package_imports_no_heavy_frameworks():
    code = ("import sys; import pg2edge.tasks; "
            "heavy = {'jax', 'torch', 'tensorflow', 'flax', 'onnx', 'onnxruntime'} & set(sys.modules); "
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_a_subset_is_byte_identical_to_the_full_runs_files(tmp_path):
    """The demo regenerates only held-out test images; they must be the very images the full suite holds."""
    from pg2edge.tasks import split_indices

    cfg = SuiteConfig(n=30, seed=3, res=56)
    write_suite(tmp_path / "full", cfg)
    test_ids = split_indices(cfg, "test", limit=2)
    assert len(test_ids) == 2 and all(assign_splits(30, 3)[i] == "test" for i in test_ids)
    write_suite(tmp_path / "part", cfg, only=test_ids)
    full, part = _tree(tmp_path / "full"), _tree(tmp_path / "part")
    assert sorted(k for k in part if k.startswith("images/")) == [f"images/{i:06d}.png" for i in test_ids]
    for k in part:
        if k.startswith("images/"):
            assert part[k] == full[k]
    wanted = {f"images/{i:06d}.png" for i in test_ids}
    full_lines = [line for line in full["test.jsonl"].decode().splitlines() if json.loads(line)["image"] in wanted]
    assert part["test.jsonl"].decode().splitlines() == full_lines
    assert part["train.jsonl"] == b"" and json.loads(part["meta.json"])["only_indices"] == list(test_ids)
