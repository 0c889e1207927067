"""Accuracy parity of every artifact of the shipped tiny model against the float JAX model.

f32 / int8 / int4 / mixed (from the shipped float model) and QAT-int4 (from the
shipped QAT fine-tune), ONNX and TFLite; see `pg2edge.bench.parity`.

    .venv/bin/python benchmarks/parity.py [--images 300] [--formats onnx,tflite]
Writes benchmarks/results/parity.json (a list `rows`), parity.md and parity.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pg2edge.bench.parity import markdown, run_parity, write_results

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    """Run the parity benchmark and write its results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--formats", default="onnx,tflite")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = run_parity(args.images, tuple(f for f in args.formats.split(",") if f))
    write_results(result, args.out)
    print(markdown(result))


if __name__ == "__main__":
    main()
