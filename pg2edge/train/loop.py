"""`finetune`: options -> data, sharded state, jitted steps -> training loop -> checkpoints and exported model.

Resuming is the default: if `--out` holds a committed checkpoint, the run
checks that it is the same run (options in `RESUME_KEYS`, data sha256),
restores state and step, and continues with the batch that step would have
seen, so a killed and resumed run retraces the uninterrupted loss curve.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from pg2edge.config import ConfigError, ModelConfig, config_to_dict
from pg2edge.quantize.recipes import get_recipe
from pg2edge.train import artifacts
from pg2edge.train.checkpointing import CHECKPOINTS, Checkpoints, abstract
from pg2edge.train.data import Dataset, eval_batches, load_dataset, train_batches
from pg2edge.train.init import initial_state, state_layout
from pg2edge.train.lora import LoraConfig
from pg2edge.train.metrics import METRICS, MetricsLog, ProgressBar
from pg2edge.train.optim import lr_schedule, make_optimizer
from pg2edge.train.options import TrainOptions
from pg2edge.train.sharding import batch_shards, make_mesh, put_batch, tree_shardings
from pg2edge.train.source import load_source, resolve_config, resolve_tokenizer
from pg2edge.train.step import StepSpec, TrainState, compile_steps, merged_params

COMPUTE_DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16}
_OWN_FILES = {CHECKPOINTS, METRICS, artifacts.PARAMS, artifacts.TOKENIZER, artifacts.CONFIG}


@dataclass(frozen=True)
class FinetuneResult:
    """What a run did and where its outputs are."""

    out: Path
    params_path: Path
    cfg: ModelConfig
    start_step: int  # 0, or the checkpoint step this run resumed from
    steps: int
    last: dict  # the last logged train record
    last_eval: dict | None
    mesh_shape: dict  # {"data": D, "fsdp": F}
    examples: int
    skipped: int  # bad JSONL lines dropped under --skip-bad
    truncated: int  # examples that lost target tokens to --max-text-len
    compile_s: float  # wall time of the first step (tracing + compilation + one step)
    steps_per_s: float  # after the first step
    seconds: float

    def summary(self) -> str:
        """One line for the end of a run: where it went, its last loss, its speed."""
        last = self.last
        parts = [f"{self.out}: {self.cfg.name}, steps {self.start_step} -> {self.steps}",
                 f"loss {last['loss']:.4f}, token_acc {last['token_acc']:.3f}" if last else "nothing left to train",
                 f"{self.steps_per_s:.2f} steps/s (first step {self.compile_s:.1f} s)"]
        if self.last_eval:
            parts.append(f"eval_loss {self.last_eval['eval_loss']:.4f}")
        return ", ".join(parts)


def _check_out(out: Path) -> None:
    """Refuse to write into a directory that is not (the start of) a finetune run."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: expected a directory, found a file")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in _OWN_FILES and not p.name.startswith(".")) \
        if out.exists() else []
    if foreign:
        raise ConfigError(f"--out {out}: holds files that are not a finetune run ({', '.join(foreign[:3])}); "
                          f"refusing to write into it")
    out.mkdir(parents=True, exist_ok=True)


def _check_resume(meta: dict, opts: TrainOptions, ds: Dataset, where: Path) -> None:
    """A checkpoint continues only the same run: same options that shape state and data, same data."""
    was, now = meta.get("resume_key", {}), opts.resume_key()
    diff = [f"--{k.replace('_', '-')} was {was.get(k)!r}, now {now[k]!r}" for k in now if was.get(k) != now[k]]
    if diff:
        raise ConfigError(f"{where}: cannot resume a different run ({'; '.join(diff)}); use a new --out")
    if meta.get("data_sha256") != ds.fingerprint:
        raise ConfigError(f"{where}: was trained on a different --data file (sha256 {meta.get('data_sha256')}, "
                          f"now {ds.fingerprint} for {ds.source}); use a new --out")


def _meta(step: int, opts: TrainOptions, ds: Dataset, cfg: ModelConfig) -> dict:
    seen = step * opts.batch * opts.accum
    return {"step": step, "examples_seen": seen, "epoch": seen / len(ds), "data_sha256": ds.fingerprint,
            "resume_key": opts.resume_key(), "config": config_to_dict(cfg)}


def _evaluate(eval_fn, state: TrainState, frozen: dict, ds: Dataset, cfg: ModelConfig, batch: int, mesh) -> dict:
    """Loss (per-example normalized) and token accuracy over the whole eval set."""
    totals = None
    for host_batch in eval_batches(ds, cfg, batch, jax.process_index(), jax.process_count()):
        sums = eval_fn(state.trainable, frozen, put_batch(host_batch, mesh))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    t = {k: float(v) for k, v in jax.device_get(totals).items()}
    return {"eval_loss": t["loss_sum"] / max(t["examples"], 1.0),
            "eval_token_acc": t["correct"] / max(t["tokens"], 1.0), "eval_examples": int(t["examples"])}


def _export(out: Path, state: TrainState, frozen: dict, spec: StepSpec, mesh) -> Path:
    """Merge adapters, cast to the training dtype, write params.npz + config.json."""
    merged = functools.partial(merged_params, spec=spec)
    shapes = jax.eval_shape(merged, state.trainable, frozen)
    params = jax.jit(merged, out_shardings=tree_shardings(shapes, mesh))(state.trainable, frozen)
    return artifacts.write_model(out, params, spec.cfg)


@dataclass(frozen=True)
class _Run:
    """The fixed parts of a run the loop needs."""

    opts: TrainOptions
    cfg: ModelConfig
    mesh: Mesh
    ds: Dataset
    eval_ds: Dataset | None
    train_fn: Callable
    eval_fn: Callable
    frozen: dict
    teacher: dict  # the source weights when distilling, else {}
    ckpts: Checkpoints
    on_step: Callable[[int], None] | None

    def evaluate(self, state: TrainState, step: int) -> dict:
        return {"step": step, **_evaluate(self.eval_fn, state, self.frozen, self.eval_ds, self.cfg,
                                          self.opts.batch, self.mesh)}


def _record(window: list, n: int, lr: float, seconds: float, opts: TrainOptions, ds: Dataset) -> dict:
    """One metrics.jsonl line: means over the steps since the last line (one device->host copy)."""
    host = jax.device_get(window)
    seen = n * opts.batch * opts.accum
    return {"step": n, "loss": float(np.mean([h["loss"] for h in host])),
            "token_acc": float(np.mean([h["token_acc"] for h in host])), "lr": lr,
            "grad_norm": float(host[-1]["grad_norm"]), "steps_per_s": len(window) / seconds,
            "examples_seen": seen, "epoch": seen / len(ds)}


def _train(run: _Run, state: TrainState, start: int, metrics: MetricsLog, bar: ProgressBar
           ) -> tuple[TrainState, dict, float, float]:
    """Steps start+1 .. opts.steps: (state, last record, first-step seconds, steady steps/s)."""
    opts = run.opts
    schedule = lr_schedule(opts.lr, opts.steps, opts.warmup)
    batches = train_batches(run.ds, run.cfg, opts.seed, start, opts.batch, opts.accum, jax.process_index(),
                            jax.process_count(), opts.sort_window, end_step=opts.steps)
    last, window, compile_s = {}, [], 0.0
    t_window = t_steady = time.perf_counter()
    try:
        for step in range(start, opts.steps):
            lr, n = float(schedule(step)), step + 1
            state, m = run.train_fn(state, run.frozen, put_batch(next(batches), run.mesh), np.float32(lr),
                                    run.teacher)
            window.append(m)
            if step == start:  # the first call traces and compiles: keep it out of the steady rate
                jax.block_until_ready(m)
                t_steady = time.perf_counter()
                compile_s = t_steady - t_window
            if n % opts.log_every == 0 or n == opts.steps:
                now = time.perf_counter()
                last = _record(window, n, lr, now - t_window, opts, run.ds)
                metrics.write(last)
                bar.update(n, last)
                window, t_window = [], now
            if run.eval_ds is not None and opts.eval_every and n % opts.eval_every == 0 and n != opts.steps:
                metrics.write(run.evaluate(state, n))
            if (opts.save_every and n % opts.save_every == 0) or n == opts.steps:
                run.ckpts.save(n, state, _meta(n, opts, run.ds, run.cfg))
            if run.on_step is not None:
                run.on_step(n)
        jax.block_until_ready(state)
    finally:
        batches.close()
    steady = opts.steps - start - 1
    rate = steady / (time.perf_counter() - t_steady) if steady > 0 else 0.0
    return state, last, compile_s, rate


def _log_data_warnings(log: Callable[[str], None], max_len: int, *datasets: Dataset | None) -> None:
    for d in filter(None, datasets):
        if d.skipped:
            log(f"warning: {d.source}: skipped {len(d.skipped)} bad lines (first: {d.skipped[0]})")
        if d.truncated:
            log(f"warning: {d.source}: {d.truncated} examples lose target tokens to --max-text-len {max_len}")


def _teacher(opts: TrainOptions, cfg: ModelConfig, dtype: jnp.dtype, mesh: Mesh) -> dict:
    """The --checkpoint weights as loaded (also on resume), sharded like the state: the distillation teacher."""
    if not opts.distill:
        return {}
    tree = jax.tree.map(lambda a: np.asarray(a, dtype), load_source(opts, cfg))
    return jax.device_put(tree, tree_shardings(tree, mesh))


def finetune(opts: TrainOptions, *, on_step: Callable[[int], None] | None = None,
             log: Callable[[str], None] = lambda message: None, progress: bool = True) -> FinetuneResult:
    """Train (or resume) as `opts` says; `on_step(n)` runs after step n (and its checkpoint save) completes."""
    opts.validate()
    started = time.perf_counter()
    cfg = resolve_config(opts)
    tok = resolve_tokenizer(opts, cfg)
    mesh = make_mesh(opts.fsdp)
    if opts.batch % batch_shards(mesh):
        raise ConfigError(f"--batch {opts.batch} must be a multiple of the {batch_shards(mesh)} devices it is "
                          f"split over")
    ds = load_dataset(opts.data, tok, opts.max_text_len, opts.skip_bad, opts.balance_tasks, opts.tasks,
                      opts.repeat_rare, dict(opts.task_weights or ()))
    eval_ds = load_dataset(opts.eval_data, tok, opts.max_text_len, opts.skip_bad) if opts.eval_data else None
    _log_data_warnings(log, opts.max_text_len, ds, eval_ds)
    out = Path(opts.out)
    _check_out(out)
    spec = StepSpec(cfg, COMPUTE_DTYPES[opts.dtype],
                    LoraConfig(opts.lora_rank, opts.lora_alpha) if opts.trainable == "lora" else None,
                    get_recipe(opts.qat, opts.qat_block) if opts.qat else None, opts.distill)
    optimizer = make_optimizer(opts.weight_decay)
    writer = jax.process_index() == 0
    with Checkpoints(out) as ckpts:
        start = ckpts.latest_step() or 0
        if start:
            _check_resume(ckpts.read_meta(start), opts, ds, ckpts.directory / str(start))
            log(f"resuming {out} from step {start}")
        artifacts.write_tokenizer(out, tok)
        abstract_state, abstract_frozen, state_sh, frozen_sh = state_layout(
            cfg, opts.trainable, spec.compute_dtype, spec.lora, optimizer, mesh)
        if start and not jax.tree.leaves(abstract_frozen):
            state, frozen = None, {}  # everything trains: the checkpoint alone is the state
        else:
            state, frozen = initial_state(cfg, opts.trainable, spec.compute_dtype, spec.lora, optimizer, mesh,
                                          load_source(opts, cfg), opts.seed)
        if start:
            state, _ = ckpts.restore(start, abstract(abstract_state, state_sh))
        teacher = _teacher(opts, cfg, spec.compute_dtype, mesh)
        train_fn, eval_fn = compile_steps(spec, optimizer, mesh, state_sh, frozen_sh,
                                          tree_shardings(teacher, mesh) if teacher else None)
        run = _Run(opts, cfg, mesh, ds, eval_ds, train_fn, eval_fn, frozen, teacher, ckpts, on_step)
        last_eval = None
        with MetricsLog(out, start, enabled=writer) as metrics, \
                ProgressBar(opts.steps, start, enabled=progress and writer) as bar:
            state, last, compile_s, rate = _train(run, state, start, metrics, bar)
            if eval_ds is not None:
                last_eval = run.evaluate(state, opts.steps)
                metrics.write(last_eval)
    params_path = _export(out, state, frozen, spec, mesh)
    return FinetuneResult(out=out, params_path=params_path, cfg=cfg, start_step=start, steps=opts.steps,
                          last=last, last_eval=last_eval, mesh_shape=dict(mesh.shape), examples=len(ds),
                          skipped=len(ds.skipped), truncated=ds.truncated, compile_s=compile_s, steps_per_s=rate,
                          seconds=time.perf_counter() - started)
