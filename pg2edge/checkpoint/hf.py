"""Hugging Face PaliGemma checkpoints (one `model.safetensors` or an index + shards): read and write.

Reading indexes every header first (names, shapes, dtypes, shard files) and
validates it against `hf_mapping`; then each big_vision array is preallocated
and filled layer by layer from memory-mapped tensors, so at most one extra
layer tensor is alive at a time. Writing emits the hub's legacy names, a
`config.json` transformers can load, and renames a finished temp directory
into place.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np

from pg2edge.checkpoint import safetensors_io as st
from pg2edge.checkpoint.fsutil import atomic_dir
from pg2edge.checkpoint.hf_config import CONFIG_NAME, hf_config_dict
from pg2edge.checkpoint.hf_mapping import Rule, canonical_name, hf_rules, hub_name
from pg2edge.checkpoint.validate import (TensorInfo, as_float_dtype, check_dtype, check_keys, fail,
                                         validate_params)
from pg2edge.config import ModelConfig
from pg2edge.param_layout import param_shapes

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_SAFETENSORS_METADATA = {"format": "pt"}  # transformers expects it on every file


class HFEntry(NamedTuple):
    """Where one tensor lives: its file, its stored name, and that file's header."""

    file: Path
    name: str
    header: st.Header

    @property
    def info(self) -> TensorInfo:
        return self.header.tensors[self.name].info


class HFIndex(NamedTuple):
    """Every tensor of a checkpoint by canonical name, plus the weight files read."""

    source: Path  # what errors name: the index file or the single file
    entries: dict[str, HFEntry]
    files: tuple[Path, ...]


def _add(entries: dict[str, HFEntry], source: Path, entry: HFEntry) -> None:
    canonical = canonical_name(entry.name)
    if canonical is None:  # the LM head is tied to the embedding
        return
    if canonical in entries:
        raise fail(source, f"stored twice (also as {entries[canonical].name!r})", key=entry.name)
    entries[canonical] = entry


def _sharded_index(index_path: Path) -> HFIndex:
    try:
        doc = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise fail(index_path, f"expected a JSON shard index, found {type(e).__name__} ({e})") from None
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise fail(index_path, "expected a weight_map object of tensor name -> shard file", key="weight_map")
    headers: dict[str, st.Header] = {}
    entries: dict[str, HFEntry] = {}
    for name, shard in weight_map.items():
        if shard not in headers:
            parts = PurePosixPath(shard).parts
            if not parts or PurePosixPath(shard).is_absolute() or ".." in parts:
                raise fail(index_path, f"expected a shard file name inside the directory, found {shard!r}", key=name)
            shard_path = index_path.parent / shard
            if not shard_path.is_file():
                raise fail(index_path, f"expected shard file {shard!r}, found no such file", key=name)
            headers[shard] = st.read_header(shard_path)
        if name not in headers[shard].tensors:
            raise fail(index_path.parent / shard, f"expected the tensor {INDEX_FILE} lists, found no such tensor "
                                                  "in the shard", key=name)
        _add(entries, index_path, HFEntry(index_path.parent / shard, name, headers[shard]))
    return HFIndex(index_path, entries, tuple(index_path.parent / s for s in headers))


def hf_index(path: str | os.PathLike, sharded: bool) -> HFIndex:
    """Index a `model.safetensors` / `model.safetensors.index.json` (or their directory) from headers only."""
    path = Path(path)
    target = path / (INDEX_FILE if sharded else SINGLE_FILE) if path.is_dir() else path
    if not target.is_file():
        raise fail(target, "no such file")
    if sharded:
        return _sharded_index(target)
    header = st.read_header(target)
    entries: dict[str, HFEntry] = {}
    for name in header.tensors:
        _add(entries, target, HFEntry(target, name, header))
    return HFIndex(target, entries, (target,))


def validate_hf(index: HFIndex, cfg: ModelConfig) -> None:
    """Every HF tensor `cfg` needs is present, with its shape and a float dtype; nothing extra."""
    rules = {r.hf: r for group in hf_rules(cfg).values() for r in group}
    found = [e.name for e in index.entries.values()]
    expected = [index.entries[c].name if c in index.entries else hub_name(c) for c in rules]
    check_keys(index.source, found, expected)
    for canonical, rule in rules.items():
        entry = index.entries[canonical]
        if not rule.accepts(entry.info.shape):
            rows = f" (at least {rule.min_rows} rows)" if rule.min_rows is not None else ""
            raise fail(entry.file, f"expected shape {rule.hf_shape}{rows}, found {entry.info.shape}", key=entry.name)
        check_dtype(entry.file, entry.name, entry.info.dtype)


def iter_hf(index: HFIndex, cfg: ModelConfig, dtype: np.dtype | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """Yield each big_vision array (in `param_shapes` order), filled one HF tensor at a time."""
    shapes = param_shapes(cfg)
    maps: dict[Path, np.memmap] = {}
    try:
        for key, rules in hf_rules(cfg).items():
            first = index.entries[rules[0].hf]
            out = np.empty(shapes[key], dtype=first.info.dtype if dtype is None else dtype)
            for rule in rules:
                entry = index.entries[rule.hf]
                if entry.file not in maps:
                    maps[entry.file] = st.open_memmap(entry.file)
                out[rule.index] = rule.from_hf(st.tensor_view(maps[entry.file], entry.header, entry.name))
            yield key, out
            del out  # let the caller's drop free it before the next array is allocated
    finally:
        maps.clear()


def _plan_shards(specs: dict[str, TensorInfo], shard_bytes: int | None) -> list[list[str]]:
    """Greedy split of tensor names into shards of at most `shard_bytes` (a bigger tensor goes alone)."""
    if shard_bytes is None:
        return [list(specs)]
    shards: list[list[str]] = [[]]
    size = 0
    for name, info in specs.items():
        nbytes = int(np.prod(info.shape, dtype=np.int64)) * info.dtype.itemsize
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def write_hf(path: str | os.PathLike, flat_params: Mapping[str, np.ndarray], cfg: ModelConfig,
             dtype: object = None, shard_bytes: int | None = None) -> Path:
    """Write a transformers-loadable PaliGemma directory (weights + config.json) atomically."""
    path, target = Path(path), as_float_dtype(dtype)
    if shard_bytes is not None and shard_bytes <= 0:
        raise fail(path, f"expected a positive shard_bytes, found {shard_bytes}")
    validate_params(flat_params, param_shapes(cfg), source=f"{path} (params to write)")
    by_name: dict[str, Rule] = {hub_name(r.hf): r for group in hf_rules(cfg).values() for r in group}
    specs = {name: TensorInfo(r.hf_shape, np.asarray(flat_params[r.bv]).dtype if target is None else target)
             for name, r in by_name.items()}

    def fetch(name: str) -> np.ndarray:
        rule = by_name[name]
        hf_tensor = rule.to_hf(np.asarray(flat_params[rule.bv])[rule.index])
        return np.asarray(hf_tensor).astype(specs[name].dtype, copy=False)

    shards = _plan_shards(specs, shard_bytes)
    embed_dtype = specs[hub_name("language_model.embed_tokens.weight")].dtype
    with atomic_dir(path) as tmp:
        files = ([SINGLE_FILE] if shard_bytes is None else
                 [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
        for file, names in zip(files, shards):
            st.write_safetensors(tmp / file, {n: specs[n] for n in names}, fetch, _SAFETENSORS_METADATA)
        if shard_bytes is not None:
            total = sum(int(np.prod(i.shape, dtype=np.int64)) * i.dtype.itemsize for i in specs.values())
            index = {"metadata": {"total_size": total},
                     "weight_map": {n: f for f, names in zip(files, shards) for n in names}}
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        (tmp / CONFIG_NAME).write_text(json.dumps(hf_config_dict(cfg, embed_dtype), indent=2) + "\n",
                                       encoding="utf-8")
    return path
