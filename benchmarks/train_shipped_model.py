"""Reproduce the trained model that ships in `pg2edge/assets/`: suite, float run, QAT run, test metrics.

    .venv/bin/python benchmarks/train_shipped_model.py [--work /tmp/pg2edge-train] [--qat-only]

Every step is a plain `pg2edge` command (recorded verbatim in each model's
training.json), so the same model can be rebuilt by hand:

1. `pg2edge tasks` writes the suite (the seed, size and resolution below);
2. `pg2edge pretrain-vision --size mini` trains the image tower alone on each image's words, on the
   label of each box's centre token, on that token's box edges and on the characters of each text image
   in reading order (PaliGemma's SigLIP stage in miniature, with LocCa-style location terms and a CTC
   glyph term), every other weight as `--random-init` draws it;
3. `pg2edge finetune --checkpoint <tower run> --tasks detect --trainable decoder` teaches the decoder to
   find the object a prompt names and write its box (lists of several boxes repeated, `--repeat-rare`;
   the tower frozen from here on, as PaliGemma protects its tower from a fresh decoder's gradients);
   `pg2edge finetune --checkpoint <detect run> --task-weights ... --trainable decoder` then trains on
   every task at once, drawn in set proportions rather than as often as the suite has lines; 300 steps
   of counting by colour on the suite's one-object images (`train_simple.jsonl`) teach it to compare a
   colour word with the image; a last mix stage with weight decay carries that to every scene;
4. `pg2edge finetune --checkpoint <float run> --qat int4 --distill 1` fine-tunes it through the int4
   fake-quant, distilled from the float model itself (the loss is the KL to the float model's
   predictions), so the int4 model stays close to the float one;
5. `pg2edge eval` scores both on the test split.
Then params.npz, tokenizer.model, config.json and training.json are copied into
pg2edge/assets/<name>/ (written to a temp dir, then renamed).

The stages share JAX's persistent compilation cache (`JAX_COMPILATION_CACHE_DIR=<work>/xla-cache`, emptied
at the start), so a decoder stage that runs an earlier one's step function loads it instead of compiling it.

Training splits a CPU host into one device per core (`pg2edge/cpu_devices.py`), as the shipped weights
were trained (2 cores); another device count, or another CPU, changes float rounding and so the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pg2edge.tasks import SuiteConfig, is_current

ASSETS = Path(__file__).resolve().parents[1] / "pg2edge" / "assets"
SUITE = {"n": 16000, "seed": 0, "res": 112, "layout": "grid"}
TOWER_RUN = ["--size", "mini", "--res", "112", "--steps", "800", "--batch", "64", "--lr", "3e-3",
             "--region-weight", "1", "--box-weight", "1", "--glyph-weight", "1"]
DETECT_RUN = ["--tasks", "detect", "--repeat-rare", "detect", "--trainable", "decoder", "--steps", "800",
              "--batch", "32", "--lr", "2e-3", "--warmup", "0.03", "--max-text-len", "34", "--log-every", "50",
              "--save-every", "800"]
COMMON = ["--trainable", "decoder", "--batch", "32", "--warmup", "0.03", "--max-text-len", "34", "--log-every", "50"]
# Every task at once: OCR drawn four times as often as captions and segmentation, colour questions twice,
# detection 1.5 times (it keeps its boxes), counting by shape as often, counting by colour half as often.
MIX_RUN = ["--task-weights", "ocr=4,count_shape=1,count_color=0.5,color=2,detect=1.5", "--repeat-rare", "detect",
           *COMMON, "--steps", "1500", "--lr", "2e-3", "--save-every", "1500"]
# Counting by colour on one-object images alone (train_simple.jsonl): the answer is "1" if the object has the
# colour asked and "0" if not, which lifts the mixed model off its counting-by-colour plateau (see the README).
ONE_OBJECT_RUN = ["--tasks", "count_color", *COMMON, "--steps", "300", "--lr", "2e-3", "--save-every", "300"]
# Every task again, counting by shape drawn four times as often, with decoupled weight decay: the one-object
# stage's counting carries over to many objects and the other tasks come back.
LAST_RUN = ["--task-weights", "ocr=3,count_shape=4,count_color=1,color=2,detect=2.5", "--repeat-rare", "detect",
            "--wd", "1.0", *COMMON, "--steps", "900", "--lr", "1e-3", "--save-every", "900"]
# Decoder stages (name, training file of the suite, options), each from the previous one's output (the first from
# the tower run); the last is the model.
DECODER_STAGES = [("detect", "train.jsonl", DETECT_RUN), ("mix", "train.jsonl", MIX_RUN),
                  ("one-object", "train_simple.jsonl", ONE_OBJECT_RUN), ("float", "train.jsonl", LAST_RUN)]
QAT_RUN = ["--qat", "int4", "--distill", "1", "--steps", "300", "--batch", "32", "--lr", "1e-4", "--warmup", "0.1",
           "--max-text-len", "34", "--log-every", "50", "--save-every", "300"]


def pg2edge(*args: str) -> tuple[str, float]:
    """Run one pg2edge command; (its command line, seconds)."""
    cmd = [str(Path(sys.executable).with_name("pg2edge")), *args]
    line = "pg2edge " + shlex.join(args)
    print(f"$ {line}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return line, time.perf_counter() - t0


def evaluate(run: Path, test: Path) -> tuple[str, dict]:
    """Metrics of a finetune output dir (the float JAX model) over the whole test split."""
    out = run / "test_metrics.json"
    line, _ = pg2edge("eval", str(run), "--data", str(test), "--batch", "64", "--max-new-tokens", "48",
                      "--json", str(out))
    return line, json.loads(out.read_text())


def install(run: Path, name: str, record: dict) -> Path:
    """Copy a run's model files and its record into pg2edge/assets/<name>/ atomically."""
    dest = ASSETS / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=ASSETS))
    for file in ("params.npz", "tokenizer.model", "config.json"):
        shutil.copy2(run / file, tmp / file)
    (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


def main() -> None:
    """Suite, float run, QAT run, evaluation, install."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pg2edge-train")
    ap.add_argument("--name", default="mini-112")
    ap.add_argument("--qat-only", action="store_true",
                    help="keep the installed float model pg2edge/assets/<name>; redo only the QAT run")
    args = ap.parse_args()
    work = args.work
    suite = work / "suite"
    # A decoder stage with an earlier stage's step function (the same shapes and optimizer) loads its
    # compiled executable from JAX's persistent cache (about 7 s each) instead of compiling it again.
    # Emptied first, so the stage times are those of a fresh machine.
    cache = work / "xla-cache"
    if not args.qat_only:
        shutil.rmtree(cache, ignore_errors=True)
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache))
    commands: list[str] = []
    tasks_args = ["tasks", "--out", str(suite), *(a for k, v in SUITE.items() for a in (f"--{k}", str(v)))]
    if not is_current(suite, SuiteConfig(**SUITE)):
        commands.append(pg2edge(*tasks_args, "--force")[0])
    else:
        commands.append("pg2edge " + shlex.join(tasks_args))
    tower_dir, float_dir, qat_dir = work / "tower", work / "float", work / "qat-int4"
    if args.qat_only:
        float_dir = ASSETS / args.name
        commands += json.loads((float_dir / "training.json").read_text())["commands"][1:2 + len(DECODER_STAGES)]
    else:
        stage_dirs = [work / name for name, _, _ in DECODER_STAGES[:-1]] + [float_dir]
        for stale in (tower_dir, *stage_dirs):  # finished runs would be refused or resumed, not retrained
            shutil.rmtree(stale, ignore_errors=True)
        train = str(suite / "train.jsonl")
        line, seconds = pg2edge("pretrain-vision", *TOWER_RUN, "--data", train, "--out", str(tower_dir))
        commands.append(line)
        stage_seconds, source = {"tower": round(seconds)}, tower_dir
        for (name, data, run), out in zip(DECODER_STAGES, stage_dirs):
            line, seconds = pg2edge("finetune", "--checkpoint", str(source), *run, "--data", str(suite / data),
                                    "--out", str(out))
            commands.append(line)
            stage_seconds[name], source = round(seconds), out
        eval_line, float_metrics = evaluate(float_dir, suite / "test.jsonl")
        record = {"suite": SUITE, "commands": commands + [eval_line], "command": line,
                  "train_seconds": sum(stage_seconds.values()), "stage_seconds": stage_seconds,
                  "test_metrics": float_metrics}
        print("float:", install(float_dir, args.name, record))
    if qat_dir.exists():  # a finished earlier run would be resumed (and not retrained)
        shutil.rmtree(qat_dir)
    qat_line, qat_s = pg2edge("finetune", "--checkpoint", str(float_dir), *QAT_RUN,
                              "--data", str(suite / "train.jsonl"), "--out", str(qat_dir))
    eval_line, qat_metrics = evaluate(qat_dir, suite / "test.jsonl")
    qat_record = {"suite": SUITE, "commands": commands + [qat_line, eval_line], "command": qat_line,
                  "train_seconds": round(qat_s), "test_metrics": qat_metrics, "from": args.name}
    print("qat:", install(qat_dir, f"{args.name}-qat-int4", qat_record))


if __name__ == "__main__":
    main()
