"""What a model's counting answers rest on: its answer probabilities by the true count, every word asked.

    .venv/bin/python benchmarks/count_probe.py --model pg2edge/assets/mini-112 --suite /tmp/pg2edge-train/suite \
        [--images 200] [--name shipped]

Why: the test split's counting accuracy mixes what a model knows with the
answers' prior ("1" is right 72 % of the time when counting by colour), so a
model that never looks at the image can score well. Here every colour and
every shape is asked of each held-out scene (the suite's own prompts), present
or not, and the float JAX model's probability of each digit at the answer
position is averaged by the true count. A model that reads the image gives
"0" when the asked word is absent and moves its mass up with the count; one
on the prior gives the same row whatever the count. The scenes are redrawn
from the suite's meta.json (seed, resolution, layout), so the true counts are
what was drawn, not read from any text. Writes
benchmarks/results/count_probe_<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from pg2edge.bench.report_files import write_report
from pg2edge.eval.parity import log_softmax
from pg2edge.eval.predictors import JaxPredictor, prompt_ids
from pg2edge.model import generate
from pg2edge.preprocess import preprocess_batch
from pg2edge.tasks import read_examples
from pg2edge.tasks.generate import generate_image
from pg2edge.tasks.scene import MAX_SHAPES
from pg2edge.tasks.suite import GENERATOR_VERSION
from pg2edge.tasks.targets import COUNT_COLOR_PROMPT, COUNT_SHAPE_PROMPT
from pg2edge.tasks.vocab import COLORS, SHAPES

RESULTS = Path(__file__).parent / "results"
DIGITS = MAX_SHAPES + 1  # every answer a count can have, "0" included
KINDS = {"colour": (COUNT_COLOR_PROMPT, tuple(COLORS)), "shape": (COUNT_SHAPE_PROMPT, SHAPES)}
IMAGES_PER_CALL = 8


def scenes(suite: Path, limit: int) -> list[tuple[Path, dict[str, Counter]]]:
    """The first `limit` shape images of the test split, each with its true counts by colour and by shape."""
    meta = json.loads((suite / "meta.json").read_text())
    if meta.get("generator_version") != GENERATOR_VERSION:  # its scenes would not redraw as its images show
        raise SystemExit(f"{suite / 'meta.json'}: generator_version {meta.get('generator_version')!r}, expected "
                         f"{GENERATOR_VERSION}: regenerate the suite with `pg2edge tasks`")
    images = dict.fromkeys(ex.image for ex in read_examples(suite / "test.jsonl").examples)  # resolved paths
    out = []
    for image in images:
        drawn = generate_image(meta["seed"], int(Path(image).stem), meta["res"], meta["layout"]).content
        if isinstance(drawn, tuple):  # shapes, not text
            specs = [s.spec for s in drawn]
            out.append((image, {"colour": Counter(s.color for s in specs), "shape": Counter(s.shape for s in specs)}))
        if len(out) == limit:
            break
    return out


def answer_probabilities(model: JaxPredictor, images: list[Path], prompts: list[str]) -> np.ndarray:
    """P(digit) [len(images), len(prompts), DIGITS] at the answer position of every prompt about every image:
    the distribution `generate` picks its first token from."""
    tok, cfg = model.tokenizer, model.cfg
    ids = [prompt_ids(tok, p) for p in prompts]
    max_len = cfg.num_image_tokens + max(len(i) for i in ids) + 1
    digit_ids = [tok.encode(str(d))[-1] for d in range(DIGITS)]
    out = []
    for start in range(0, len(images), IMAGES_PER_CALL):
        chunk = images[start:start + IMAGES_PER_CALL]
        chunk = chunk + [chunk[-1]] * (IMAGES_PER_CALL - len(chunk))  # one compiled shape
        pixels = np.repeat(preprocess_batch(chunk, cfg.resolution, cfg.resize_filter), len(ids), axis=0)
        logits = generate(model.params, cfg, pixels, ids * len(chunk), max_new_tokens=1, max_len=max_len).logits
        p = np.exp(log_softmax(logits[:, 0]))[:, digit_ids].reshape(len(chunk), len(ids), DIGITS)
        out.append(p[:len(images) - start])
    return np.concatenate(out)


def summarize(p: np.ndarray, counts: np.ndarray) -> dict:
    """Mean P(digit) by true count, accuracy (argmax = count) and presence accuracy (says "0" iff absent)."""
    best = p.argmax(-1)
    rows = {int(c): {"n": int((counts == c).sum()), "p": [round(float(v), 4) for v in p[counts == c].mean(0)]}
            for c in np.unique(counts)}
    return {"by_true_count": rows, "accuracy": float((best == counts).mean()),
            "presence_accuracy": float(((best == 0) == (counts == 0)).mean()),
            "p0_absent_minus_present": float(p[counts == 0, 0].mean() - p[counts > 0, 0].mean())}


def markdown(result: dict) -> str:
    """One table per kind of counting question."""
    lines = [f"Counting answers of `{result['model']}` by the true count: {result['images']} held-out scenes of "
             f"`{result['suite']}`, every colour and every shape asked of each (float JAX model).", ""]
    for kind, r in result["kinds"].items():
        lines += [f"**By {kind}** (prompt `{r['prompt']}`): accuracy {r['accuracy']:.3f}, presence accuracy "
                  f"{r['presence_accuracy']:.3f}, P(\"0\") absent minus present {r['p0_absent_minus_present']:+.2f}",
                  "", "| true count | n | " + " | ".join(f'P("{d}")' for d in range(DIGITS)) + " |",
                  "|---|---|" + "---|" * DIGITS]
        lines += [f"| {c} | {row['n']} | " + " | ".join(f"{v:.2f}" for v in row["p"]) + " |"
                  for c, row in r["by_true_count"].items()]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Ask, tabulate, write."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="a finetune output or a pg2edge/assets model dir")
    ap.add_argument("--suite", type=Path, required=True, help="the suite directory (meta.json, test.jsonl)")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--name", default=None, help="results file suffix (default: the model dir's name)")
    args = ap.parse_args()
    model = JaxPredictor.from_checkpoint(args.model)
    drawn = scenes(args.suite, args.images)
    images = [image for image, _ in drawn]
    result = {"model": str(args.model), "suite": str(args.suite), "images": len(drawn), "kinds": {}}
    for kind, (template, words) in KINDS.items():
        p = answer_probabilities(model, images, [template.format(w) for w in words])
        counts = np.array([[c[kind][w] for w in words] for _, c in drawn])
        result["kinds"][kind] = {"prompt": template.format("…"), **summarize(p.reshape(-1, DIGITS), counts.reshape(-1))}
    name = args.name or args.model.name
    for path in write_report(result, markdown(result), RESULTS, f"count_probe_{name}"):
        print(path)
    print(markdown(result))


if __name__ == "__main__":
    main()
