"""A bundle's TFLite files: the staged layout (`stages.py`), one file at a time in bounded memory.

Each file holds only its own weights (read lazily from the checkpoint); at
full size each is converted in a freshly spawned process, because the
converter's state and memory otherwise accumulate from file to file. The
tied table of a large vocabulary is converted at a stand-in size and widened
(`tflite_vocab.py`).
"""

from __future__ import annotations

from pathlib import Path

from pg2edge.config import ModelConfig
from pg2edge.export.convert import ConvertOptions, load_weights
from pg2edge.export.split import SplitConfig
from pg2edge.export.stages import StageFile, plan_stages
from pg2edge.param_layout import float32_bytes
from pg2edge.progress import Progress

ISOLATE_ABOVE_BYTES = 4 << 30  # TFLite files of bigger models are converted one process each


def export_tflite_stages(cfg: ModelConfig, opts: ConvertOptions, params: dict, recipe, extra: list,
                         out: Path, progress: Progress) -> dict:
    """The staged TFLite files (`stages.py`), one at a time with only its own weights in memory."""
    from pg2edge.export.tflite import export_tflite

    plan = plan_stages(cfg, SplitConfig(opts.max_len, tuple(sorted(opts.prefill))), opts.stage_bytes)
    out.mkdir()
    stage = "tflite: trace, convert, quantize"
    progress.stage(stage, len(plan.files) + len(extra))
    isolate = float32_bytes(cfg) > ISOLATE_ABOVE_BYTES
    for file in plan.files:
        if isolate:  # a fresh process per file: the converter's memory goes back to the system each time
            _in_child(_export_named_file, opts, cfg, recipe, file.name, out)
        else:
            _export_file(opts, cfg, recipe, file, params, out)
        progress.advance(stage, file.name)
    entries: dict = {part: {"stages": [[f"tflite/{name}.tflite", signature] for name, signature in stages]}
                     for part, stages in plan.pipelines.items()}
    for part, part_params in extra:
        export_tflite(part, part_params, out / f"{part.name}.tflite", None)
        entries[part.name] = f"tflite/{part.name}.tflite"
        progress.advance(stage, part.name)
    return entries


def _export_named_file(opts: ConvertOptions, cfg: ModelConfig, recipe, name: str, out: Path) -> None:
    """In a child process: open the weights again (lazily), plan, and write the file called `name`."""
    cfg, params, _ = load_weights(opts, cfg)
    plan = plan_stages(cfg, SplitConfig(opts.max_len, tuple(sorted(opts.prefill))), opts.stage_bytes)
    _export_file(opts, cfg, recipe, next(f for f in plan.files if f.name == name), params, out)


def _export_file(opts: ConvertOptions, cfg: ModelConfig, recipe, file: StageFile, params: dict, out: Path) -> None:
    """One staged TFLite file, holding only its own weights."""
    from pg2edge.export.tflite import export_tflite

    exact = opts.accuracy_level == 0  # as for ONNX: float activations, equal to the reference
    if file.widen:
        _export_wide_table(cfg, opts, file, params, recipe, out, exact)
    else:
        export_tflite(file.parts, file.params(params), out / f"{file.name}.tflite", recipe, exact=exact)


def _in_child(fn, *args) -> None:
    """Run `fn(*args)` in a fresh spawned process; its exception is raised here; it dies with this process."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:  # exit terminates it
        pool.apply(_child_call, (fn, *args))


def _child_call(fn, *args) -> None:
    """In the child: SIGTERM (the parent stopping) unwinds, so temp directories are removed."""
    from pg2edge.stop import stop_on_sigterm

    stop_on_sigterm()
    fn(*args)


def _export_wide_table(cfg: ModelConfig, opts: ConvertOptions, file: StageFile, params: dict, recipe, out: Path,
                       exact: bool) -> None:
    """The table file converted at a stand-in vocabulary and widened (`tflite_vocab`): the converter never
    holds the full table."""
    from pg2edge.export.tflite import export_tflite, export_wide_table
    from pg2edge.export.tflite_vocab import small_config, small_vocab, table_parts_dims

    split = SplitConfig(opts.max_len, tuple(sorted(opts.prefill)))
    small = small_vocab(cfg, table_parts_dims(file.parts))
    if small >= cfg.text.vocab_size:  # a small vocabulary converts as it is
        export_tflite(file.parts, file.params(params), out / f"{file.name}.tflite", recipe, exact=exact)
        return
    small_file = next(f for f in plan_stages(small_config(cfg, small), split, opts.stage_bytes).files
                      if f.name == file.name)
    export_wide_table(file.parts, small_file.parts, small, file.params(params), out / f"{file.name}.tflite", recipe,
                      exact)
