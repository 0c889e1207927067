"""Run `finetune` from JSON options in a fresh process; `--kill-after N` SIGKILLs it once step N is on disk.

The kill is the real thing (no cleanup, no atexit, orbax's background thread
cut off mid-flight); the wait before it only makes the test deterministic
about *which* checkpoint survives.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from pg2edge.train import TrainOptions, finetune
from pg2edge.train.checkpointing import CHECKPOINTS

_PATHS = ("data", "out", "checkpoint", "tokenizer", "eval_data")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("options")
    parser.add_argument("--kill-after", type=int, default=None)
    args = parser.parse_args()
    raw = json.loads(args.options)
    opts = TrainOptions(**{k: Path(v) if k in _PATHS and v is not None else v for k, v in raw.items()})

    def on_step(step: int) -> None:
        if step != args.kill_after:
            return
        committed = Path(opts.out) / CHECKPOINTS / str(step)
        deadline = time.monotonic() + 120
        while not committed.is_dir() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)

    result = finetune(opts, on_step=on_step, progress=False)
    import jax

    print(json.dumps({"devices": jax.device_count(), "mesh": result.mesh_shape, "start_step": result.start_step}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
