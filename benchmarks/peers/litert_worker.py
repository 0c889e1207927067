"""litert-torch's own PaliGemma 2 converter (its example script, default flags) on an HF PaliGemma checkpoint.

Run in .venv-peers-litert:  python litert_worker.py PALIGEMMA_DIR OUT_DIR
Defaults of the script: dynamic_int8, prefill lengths 8..1024, KV cache 1280.
On success writes OUT_DIR/done.json with the .tflite files and sizes.
"""

from __future__ import annotations

import json
import runpy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from prompt import emit  # noqa: E402

SCRIPT = "litert_torch.generative.examples.paligemma.convert_to_tflite"


def main(checkpoint: str, out: str) -> None:
    """Run the converter in this process (so its peak RSS is this process's)."""
    Path(out).mkdir(parents=True, exist_ok=True)
    sys.argv = [SCRIPT, f"--checkpoint_path={checkpoint}", f"--output_path={out}/"]
    t0 = time.perf_counter()
    try:
        runpy.run_module(SCRIPT, run_name="__main__")
    except SystemExit as e:  # absl's app.run exits
        if e.code not in (None, 0):
            raise
    files = {p.name: p.stat().st_size for p in Path(out).glob("*.tflite")}
    result = {"seconds": round(time.perf_counter() - t0, 1), "files": files}
    (Path(out) / "done.json").write_text(json.dumps(result, indent=2) + "\n")
    emit(result)


if __name__ == "__main__":
    main(*sys.argv[1:])
