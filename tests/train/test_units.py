"""Pure pieces: text encoding, data order, loss normalization, schedule, trainable split, LoRA merge, sharding rule."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from pg2edge.checkpoint import random_params
from pg2edge.config import get_config
from pg2edge.param_layout import flatten, unflatten
from pg2edge.quantize import matmul_view
from pg2edge.tokenizer import Tokenizer, build_synthetic_tokenizer
from pg2edge.train.data import encode_text, epoch_permutation, step_indices, stream_indices
from pg2edge.train.lora import TARGETS, LoraConfig, init_lora, merge_lora
from pg2edge.train.loss import batch_loss
from pg2edge.train.optim import lr_schedule
from pg2edge.train.sharding import FSDP, param_spec
from pg2edge.train.trainable import join_params, split_params
from pg2edge.train.views import from_kn, to_kn

from .helpers import write_jsonl


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_bytes(build_synthetic_tokenizer(2048))


def test_encode_text_pads_and_truncates(tok):
    prompt = tok.encode_prompt("caption en", "a red square")
    tokens, _, loss, valid, _ = encode_text(tok, "caption en", "a red square", 16)
    n = len(prompt)
    np.testing.assert_array_equal(tokens[:n], prompt.tokens)
    assert (tokens[n:] == 0).all() and (valid[:n] == 1).all() and (valid[n:] == 0).all()
    np.testing.assert_array_equal(loss[:n], prompt.mask_loss)
    assert not encode_text(tok, "caption en", "a red square", 16).truncated
    short = encode_text(tok, "caption en", "a red square", n - 2)
    assert all(a.shape == (n - 2,) for a in short[:4]) and short.input_mask.all() and short.truncated
    np.testing.assert_array_equal(short.mask_loss, prompt.mask_loss[:n - 2])


def test_stream_is_a_permutation_per_epoch_and_deterministic():
    order = stream_indices(seed=5, n=7, start=0, count=21)
    for e in range(3):
        assert sorted(order[7 * e:7 * (e + 1)]) == list(range(7))
        np.testing.assert_array_equal(order[7 * e:7 * (e + 1)], epoch_permutation(5, e, 7))
    np.testing.assert_array_equal(stream_indices(5, 7, 9, 6), order[9:15])  # any window = the same stream
    assert not np.array_equal(epoch_permutation(5, 0, 7), epoch_permutation(6, 0, 7))


def test_accumulation_sees_the_same_examples_per_step():
    class _Five:
        pool = np.arange(5)

        def __len__(self):
            return 5

    for step in range(4):
        np.testing.assert_array_equal(step_indices(_Five(), 1, step, 2, 2).reshape(-1),
                                      step_indices(_Five(), 1, step, 4, 1).reshape(-1))


def test_each_image_header_is_read_once_and_a_bad_one_fails_every_line_that_names_it(tok, tmp_path, monkeypatch):
    """The suite names each image on five or six lines: `load_dataset` reads a header once, and an unreadable
    image still fails (or, under skip_bad, drops) each of its lines with that line's number."""
    from pg2edge.tasks import DataError
    from pg2edge.train import data

    Image.new("RGB", (56, 56), (200, 40, 40)).save(tmp_path / "a.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    rows = [{"image": name, "prefix": "caption en", "suffix": "red"} for name in ("a.png", "bad.png", "a.png",
                                                                                  "bad.png")]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    opened = []
    real = data.original_size
    monkeypatch.setattr(data, "original_size", lambda image: opened.append(image.name) or real(image))
    ds = data.load_dataset(path, tok, 16, skip_bad=True)
    assert sorted(opened) == ["a.png", "bad.png"]
    assert len(ds.images) == 2 and [p.split(": ")[0] for p in ds.skipped] == [f"{path}:2", f"{path}:4"]
    with pytest.raises(DataError, match=rf"^{path}:2: "):
        data.load_dataset(path, tok, 16)


def _lines_of_many_lengths(tok, tmp_path, count: int = 24):
    from pg2edge.train.data import load_dataset

    Image.new("RGB", (56, 56), (200, 40, 40)).save(tmp_path / "a.png")
    rows = [{"image": "a.png", "prefix": "caption en", "suffix": " ".join(["red"] * (1 + i * 7 % 13))}
            for i in range(count)]
    return load_dataset(write_jsonl(tmp_path / "lengths.jsonl", rows), tok, 24)


def test_a_sort_window_regroups_the_streams_examples_by_text_length(tok, tmp_path):
    """--sort-window W: the W steps of a window draw exactly the stream's examples of those steps, each step a
    run of the window's length order, and pad to their longest line rounded up to LENGTH_STEP tokens."""
    from pg2edge.train.data import LENGTH_STEP, padded_length

    ds = _lines_of_many_lengths(tok, tmp_path)
    lengths = ds.input_mask.sum(1)
    window, batch, accum = 4, 3, 2
    for first in range(0, 12, window):
        plain = [step_indices(ds, 7, first + s, batch, accum) for s in range(window)]
        grouped = [step_indices(ds, 7, first + s, batch, accum, sort_window=window) for s in range(window)]
        assert all(g.shape == (accum, batch) for g in grouped)
        assert sorted(np.concatenate(plain).ravel()) == sorted(np.concatenate(grouped).ravel())
        spans = sorted((lengths[g].min(), lengths[g].max()) for g in grouped)
        assert all(low[1] <= high[0] for low, high in zip(spans, spans[1:]))  # steps do not interleave lengths
        for g in grouped:
            cut = padded_length(ds, g)
            assert cut >= lengths[g].max() and (cut % LENGTH_STEP == 0 or cut == ds.tokens.shape[1])
            assert cut < lengths[g].max() + LENGTH_STEP
    orders = {tuple(lengths[step_indices(ds, seed, 0, batch, accum, window)].ravel()) for seed in range(6)}
    assert len(orders) > 1  # which slice of the length order a step takes is drawn, not always the shortest
    from pg2edge.config import ConfigError
    from pg2edge.train import TrainOptions

    opts = TrainOptions(data=tmp_path / "lengths.jsonl", out=tmp_path / "run", steps=1, batch=1, size="tiny",
                        random_init=True, sort_window=window)
    assert opts.resume_key()["sort_window"] == window  # a resumed run must draw its steps the same way
    with pytest.raises(ConfigError, match="--sort-window must be >= 1, found 0"):
        dataclasses.replace(opts, sort_window=0).validate()


def test_a_batch_cut_to_its_padded_length_has_the_same_loss(tok, tmp_path, params):
    """Cutting a length-sorted step's text drops padding only: per-example losses match the full-length batch."""
    from pg2edge.model import forward
    from pg2edge.train.data import gather, padded_length

    ds = _lines_of_many_lengths(tok, tmp_path)
    cfg = get_config("tiny")
    idx = min((step_indices(ds, 3, step, 4, 1, sort_window=4) for step in range(4)),
              key=lambda i: padded_length(ds, i))  # the window's shortest step
    full, cut = gather(ds, cfg, idx), gather(ds, cfg, idx, length=padded_length(ds, idx))
    assert cut["tokens"].shape[-1] < full["tokens"].shape[-1]
    sums = []
    for b in (full, cut):
        logits = forward(params, cfg, b["pixels"][0], b["tokens"][0], b["mask_ar"][0], b["input_mask"][0])
        sums.append(batch_loss(logits, b["tokens"][0], b["mask_loss"][0], b["weight"][0])[1])
    np.testing.assert_allclose(sums[1]["loss_sum"], sums[0]["loss_sum"], rtol=1e-5)
    assert sums[1]["tokens"] == sums[0]["tokens"] > 0


def test_balanced_pool_shows_every_task_equally_often_and_every_example(tok, tmp_path):
    """--balance-tasks: each task fills the same share of an epoch (its examples cycled in file order), and a
    line without a task is refused by line number."""
    from pg2edge.tasks import DataError
    from pg2edge.train.data import balanced_pool, load_dataset

    tasks = ("ocr", "detect", "detect", "caption", "detect", "caption", "detect")
    pool = balanced_pool(tasks)
    assert sorted(pool.tolist()) == [0, 0, 0, 0, 1, 2, 3, 3, 4, 5, 5, 6]
    assert {t: sum(tasks[i] == t for i in pool) for t in set(tasks)} == {"ocr": 4, "detect": 4, "caption": 4}
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    write_jsonl(tmp_path / "d.jsonl", [{"image": "a.png", "prefix": "p", "suffix": "s", "task": t} for t in tasks])
    ds = load_dataset(tmp_path / "d.jsonl", tok, 16, balance_tasks=True)
    np.testing.assert_array_equal(ds.pool, pool)
    assert set(step_indices(ds, 0, 0, len(pool), 1).reshape(-1)) == set(range(len(tasks)))  # one epoch: all
    write_jsonl(tmp_path / "u.jsonl", [{"image": "a.png", "prefix": "p", "suffix": "s"}])
    with pytest.raises(DataError, match=r"u.jsonl:1: task balancing and --repeat-rare need"):
        load_dataset(tmp_path / "u.jsonl", tok, 16, balance_tasks=True)


def test_task_weights_draw_each_task_in_proportion_to_its_weight(tok, tmp_path):
    """--task-weights: a weighted --balance-tasks (weight 1 unless named; all 1 is the plain balance), a
    task the data lacks refused by name, and the option parsed, checked and kept for resuming."""
    from pg2edge.config import ConfigError
    from pg2edge.tasks import DataError
    from pg2edge.train import TrainOptions
    from pg2edge.train.data import balanced_pool, load_dataset
    from pg2edge.train.options import parse_task_weights

    tasks = ("ocr", "detect", "detect", "caption", "detect", "caption", "detect")
    np.testing.assert_array_equal(balanced_pool(tasks, {"detect": 1.0}), balanced_pool(tasks))
    pool = balanced_pool(tasks, {"ocr": 2.0, "caption": 0.5})
    assert {t: sum(tasks[i] == t for i in pool) for t in set(tasks)} == {"ocr": 8, "detect": 4, "caption": 2}
    assert sorted(pool[np.isin(pool, (3, 5))].tolist()) == [3, 5]  # half a share: each caption line once
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    write_jsonl(tmp_path / "d.jsonl", [{"image": "a.png", "prefix": "p", "suffix": "s", "task": t} for t in tasks])
    weights = parse_task_weights(" ocr=2, caption = 0.5")
    assert weights == (("ocr", 2.0), ("caption", 0.5))
    np.testing.assert_array_equal(load_dataset(tmp_path / "d.jsonl", tok, 16, task_weights=dict(weights)).pool, pool)
    with pytest.raises(DataError, match=r"d.jsonl: --task-weights names segment, which no line has \(tasks "
                                        r"present: caption, detect, ocr\)"):
        load_dataset(tmp_path / "d.jsonl", tok, 16, task_weights={"segment": 2.0})
    for text in ("ocr", "ocr=two", "ocr=2,"):
        with pytest.raises(ConfigError, match=r"--task-weights: expected TASK=WEIGHT pairs, found"):
            parse_task_weights(text)
    base = dict(data=tmp_path, out=tmp_path, steps=1, batch=1, size="tiny", random_init=True)
    for bad, message in (((("ocr", 0.0),), "the weight of ocr must be a positive number, found 0.0"),
                         ((("ocr", 1.0), ("ocr", 2.0)), "expected distinct task names")):
        with pytest.raises(ConfigError, match=message):
            TrainOptions(**base, task_weights=bad).validate()
    key = TrainOptions(**base, task_weights=weights).resume_key()["task_weights"]
    assert key == json.loads(json.dumps(key)) == [["ocr", 2.0], ["caption", 0.5]]  # equal after the JSON trip


def test_repeat_rare_repeats_each_answer_class_by_the_root_of_how_much_rarer_it_is(tok, tmp_path):
    """--repeat-rare: within a listed task, a line whose answer class (objects placed, else the answer) has
    1/k of the most common class's lines appears round(sqrt(k)) times an epoch; other tasks' lines once."""
    from pg2edge.tasks import DataError
    from pg2edge.train.data import answer_class, load_dataset, repeat_factors

    box = "<loc0001><loc0002><loc0003><loc0004> star"
    assert [answer_class(s) for s in (box, f"{box} ; {box}", " 2 ", "red")] == ["1 objects", "2 objects", "2", "red"]
    lines = [("detect", box)] * 9 + [("detect", f"{box} ; {box}")] + [("count", "1")] * 4 + [("count", "3")] \
        + [("caption", "a star")] * 2 + [("caption", "a big star")]
    tasks, suffixes = zip(*lines, strict=True)
    factors = repeat_factors(tasks, suffixes, ("detect", "count"))
    assert factors.tolist() == [1] * 9 + [3] + [1] * 4 + [2] + [1] * 3  # sqrt(9/1) = 3, sqrt(4/1) = 2
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    write_jsonl(tmp_path / "d.jsonl", [{"image": "a.png", "prefix": "p", "suffix": s, "task": t} for t, s in lines])
    ds = load_dataset(tmp_path / "d.jsonl", tok, 32, repeat_rare=("detect", "count"))
    assert np.bincount(ds.pool).tolist() == factors.tolist()
    both = load_dataset(tmp_path / "d.jsonl", tok, 32, balance_tasks=True, repeat_rare=("detect", "count"))
    assert {t: sum(tasks[i] == t for i in both.pool) for t in set(tasks)} == {"detect": 12, "count": 12,
                                                                            "caption": 12}
    with pytest.raises(DataError, match=r"d.jsonl: --repeat-rare names segment, which no line has \(tasks "
                                        r"present: caption, count, detect\)"):
        load_dataset(tmp_path / "d.jsonl", tok, 32, repeat_rare=("segment",))


def test_tasks_keeps_only_those_lines_and_names_the_file_when_none_match(tok, tmp_path):
    """--tasks (a curriculum stage): the dataset holds exactly the listed tasks' lines, in file order."""
    from pg2edge.tasks import DataError
    from pg2edge.train import TrainOptions
    from pg2edge.train.data import load_dataset

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    tasks = ("ocr", "color", "detect", "count_shape", "color")
    write_jsonl(tmp_path / "d.jsonl", [{"image": "a.png", "prefix": f"p{i}", "suffix": t, "task": t}
                                       for i, t in enumerate(tasks)])
    ds = load_dataset(tmp_path / "d.jsonl", tok, 16, tasks=("color", "count_shape"))
    expected = [encode_text(tok, f"p{i}", t, 16).tokens for i, t in enumerate(tasks) if t in ("color", "count_shape")]
    np.testing.assert_array_equal(ds.tokens, np.stack(expected))
    with pytest.raises(DataError, match=r"d.jsonl: no line has a task in caption \(tasks present: color, "):
        load_dataset(tmp_path / "d.jsonl", tok, 16, tasks=("caption",))
    write_jsonl(tmp_path / "u.jsonl", [{"image": "a.png", "prefix": "p", "suffix": "s"}])
    with pytest.raises(DataError, match=r"u.jsonl:1: --tasks needs a \"task\" field"):
        load_dataset(tmp_path / "u.jsonl", tok, 16, tasks=("color",))
    opts = TrainOptions(data=tmp_path, out=tmp_path, steps=1, batch=1, size="tiny", random_init=True, tasks=("color",))
    assert opts.resume_key()["tasks"] == ["color"]  # a resumed run must train on the same lines
    with pytest.raises(Exception, match="--tasks"):
        TrainOptions(data=tmp_path, out=tmp_path, steps=1, batch=1, size="tiny", random_init=True,
                     tasks=("color", "")).validate()


def test_loss_is_normalized_per_example_then_averaged():
    v = 5
    tokens = jnp.asarray([[0, 1, 2, 3], [0, 4, 0, 0]])
    mask = jnp.asarray([[0, 1, 1, 1], [0, 1, 0, 0]])
    logits = jax.random.normal(jax.random.PRNGKey(0), (2, 4, v))
    loss, sums = batch_loss(logits, tokens, mask, jnp.ones(2))
    logp = jax.nn.log_softmax(logits, -1)
    ex0 = -(logp[0, 0, 1] + logp[0, 1, 2] + logp[0, 2, 3]) / 3
    ex1 = -logp[1, 0, 4]
    np.testing.assert_allclose(loss, (ex0 + ex1) / 2, rtol=1e-6)
    assert float(sums["tokens"]) == 4
    padded, _ = batch_loss(logits, tokens, mask, jnp.asarray([1.0, 0.0]))  # weight-0 rows count nowhere
    np.testing.assert_allclose(padded, ex0, rtol=1e-6)


def test_correct_counts_the_target_positions_where_the_target_is_the_argmax():
    """Token accuracy from the maximum the loss takes equals counting argmax hits (no ties in random logits)."""
    from pg2edge.train.loss import token_stats

    logits = jax.random.normal(jax.random.PRNGKey(2), (3, 9, 7))
    tokens = jax.random.randint(jax.random.PRNGKey(3), (3, 9), 0, 7)
    tokens = tokens.at[:, 1:].set(jnp.where(jnp.arange(8) % 2 == 0, jnp.argmax(logits[:, :-1], -1), tokens[:, 1:]))
    mask = jnp.ones((3, 9), jnp.int32).at[:, :3].set(0)
    _, correct, count = token_stats(logits, tokens, mask)
    hits = (np.argmax(np.asarray(logits)[:, :-1], -1) == np.asarray(tokens)[:, 1:]) & (np.asarray(mask)[:, 1:] == 1)
    np.testing.assert_array_equal(correct, hits.sum(1))
    np.testing.assert_array_equal(count, 6)
    assert 3 <= int(hits.sum(1).min())  # the targets set to the argmax, at least


def test_distillation_mixes_nll_and_kl_per_target_position():
    v = 6
    tokens = jnp.asarray([[0, 1, 2, 3]])
    mask = jnp.asarray([[0, 0, 1, 1]])
    student, teacher = jax.random.normal(jax.random.PRNGKey(1), (2, 1, 4, v))
    p = jax.nn.softmax(teacher[0, 1:3], -1)
    kl = np.sum(np.asarray(p) * (np.log(np.asarray(p)) - np.asarray(jax.nn.log_softmax(student[0, 1:3], -1))), -1)
    logp = jax.nn.log_softmax(student[0], -1)
    nll = -(logp[1, 2] + logp[2, 3])
    loss, _ = batch_loss(student, tokens, mask, jnp.ones(1), teacher, 0.25)
    np.testing.assert_allclose(loss, (0.75 * nll + 0.25 * kl.sum()) / 2, rtol=1e-5)
    same, _ = batch_loss(student, tokens, mask, jnp.ones(1), student, 1.0)
    assert abs(float(same)) < 1e-6  # a student equal to its teacher has nothing to learn


def test_schedule_warms_up_then_decays_to_zero():
    s = lr_schedule(1e-3, 100, 0.1)
    assert float(s(0)) == 0.0 and float(s(10)) == pytest.approx(1e-3)
    assert float(s(5)) == pytest.approx(5e-4) and float(s(100)) == pytest.approx(0.0, abs=1e-12)
    assert float(lr_schedule(1e-3, 10, 0.0)(0)) == pytest.approx(1e-3)


@pytest.fixture(scope="module")
def params():
    return unflatten({k: jnp.asarray(v) for k, v in random_params(get_config("tiny"), seed=1).items()})


def test_trainable_split(params):
    train, frozen = split_params(params, "attn")
    names = set(flatten(train))
    assert names == {n for n in flatten(params) if n.startswith("llm/layers/attn/")} and len(names) == 3
    assert flatten(join_params(train, frozen)).keys() == flatten(params).keys()
    assert split_params(params, "lora")[0] == {} and split_params(params, "all")[1] == {}
    decoder = set(flatten(split_params(params, "decoder")[0]))  # the tower frozen, its projector trains
    assert decoder == {n for n in flatten(params) if n.startswith(("llm/", "img/head/"))}


def test_views_round_trip_matches_numpy(params):
    for name, w in flatten(params).items():
        view = matmul_view(name, w.shape)
        if view is None:
            continue
        np.testing.assert_array_equal(to_kn(view, w), view.to_kn(np.asarray(w)), err_msg=name)
        np.testing.assert_array_equal(from_kn(view, to_kn(view, w)), w, err_msg=name)


def test_lora_starts_at_the_base_model_and_merges_as_w_plus_scaled_ab(params):
    cfg = LoraConfig(rank=2, alpha=6.0)
    lora = init_lora(params, cfg, jax.random.PRNGKey(0))
    assert set(flatten(lora)) == {f"{t}/{x}" for t in TARGETS for x in "ab"}
    merged = merge_lora(params, lora, cfg)
    for name, w in flatten(merged).items():
        np.testing.assert_array_equal(w, flatten(params)[name])  # B = 0
    flat = flatten(lora)
    flat = {k: (jnp.ones_like(v) if k.endswith("/b") else v) for k, v in flat.items()}
    merged = flatten(merge_lora(params, unflatten(flat), cfg))
    name = "llm/layers/attn/kv_einsum/w"
    view = matmul_view(name, flatten(params)[name].shape)
    want = view.to_kn(np.asarray(flatten(params)[name])) + 3.0 * np.asarray(flat[f"{name}/a"] @ flat[f"{name}/b"])
    np.testing.assert_allclose(view.to_kn(np.asarray(merged[name])), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,fsdp,want", [
    ((26, 8, 2304, 256), 8, (None, None, FSDP, None)),
    ((257152, 2304), 16, (FSDP, None)),
    ((512,), 8, ()),  # small: replicated
    ((2304,), 8, (FSDP,)),
    ((7, 1151, 3), 2, ()),  # nothing divisible: replicated
    ((4, 64, 128), 2, (None, None, FSDP)),
    ((4, 64, 128), 1, ()),
])
def test_fsdp_rule_shards_the_largest_divisible_axis(shape, fsdp, want):
    assert tuple(param_spec(shape, fsdp)) == want


def test_cpu_devices_default_to_a_data_parallel_mesh():
    """A host's CPU devices share its memory, so by default they split batches only (no FSDP gathers);
    an explicit --fsdp still groups them."""
    code = ("import json; from pg2edge.train.sharding import make_mesh;"
            "print(json.dumps([dict(make_mesh().shape), dict(make_mesh(2).shape)]))")
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [{"data": 4, "fsdp": 1}, {"data": 2, "fsdp": 2}]


def test_from_scratch_init_has_ordinal_loc_rows_and_sincos_positions():
    """Close <loc> bins start close (cosine falls with distance); patch positions are the 2-D sin-cos table."""
    import jax
    import numpy as np

    from pg2edge.config import NUM_LOC_TOKENS, get_config
    from pg2edge.model import init_params
    from pg2edge.train.init import from_scratch_params, ordinal_loc_rows, sincos_positions

    cfg = get_config("tiny", 56)
    params = from_scratch_params(cfg, jax.random.PRNGKey(0))
    plain = init_params(cfg, jax.random.PRNGKey(0))
    table = np.asarray(params["llm"]["embedder"]["input_embedding"])
    start = cfg.text.loc_start
    rows = table[start:start + NUM_LOC_TOKENS]
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
    sims = [float(rows[500] @ rows[500 + d]) for d in (1, 4, 16, 256)]
    assert sims == sorted(sims, reverse=True) and sims[0] > 0.8 and abs(sims[-1]) < 0.2
    np.testing.assert_array_equal(rows, np.asarray(ordinal_loc_rows(cfg.text)))
    np.testing.assert_array_equal(table[:start], np.asarray(plain["llm"]["embedder"]["input_embedding"])[:start])
    pos = np.asarray(params["img"]["pos_embedding"])
    assert pos.shape == (1, cfg.vision.num_patches, cfg.vision.width)
    np.testing.assert_array_equal(pos, np.asarray(sincos_positions(cfg.vision.grid, cfg.vision.width)))
    grid = cfg.vision.grid
    assert np.allclose(pos[0, 0, :cfg.vision.width // 4], 0.0)  # sin(0) for the first row's y features
    assert len({tuple(np.round(p, 5)) for p in pos[0]}) == grid * grid  # every patch is told apart


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread priorities are Linux's")
def test_the_loader_thread_runs_at_a_lower_priority_than_the_caller():
    """The batch loader yields the cores to the devices' threads; the caller's own priority is unchanged."""
    import threading

    from pg2edge.train.data import LOADER_NICENESS, prefetched

    def nice(_: int) -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    mine = nice(0)
    batches = prefetched(nice, 0)
    assert next(batches) == min(mine + LOADER_NICENESS, 19) and nice(0) == mine
    batches.close()
