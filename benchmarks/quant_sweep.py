"""What each quantization choice costs the shipped tiny model: JAX fake-quant on held-out images.

int8, int4 at blocks 32 / 128 with plain (`max`) and searched (`mse`) scales,
and `mixed`, each against the float model: greedy outputs identical to float
and every task metric's change with its 95 % paired interval; see
`pg2edge.bench.quant_sweep`.

    .venv/bin/python benchmarks/quant_sweep.py [--images N]   (default: the whole test split)
Writes benchmarks/results/quant_sweep.json (a list `rows`) and quant_sweep.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pg2edge.bench.quant_sweep import markdown, run_sweep, write_results

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    """Run the sweep and write its results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=None, help="the first N test images (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = run_sweep(args.images)
    write_results(result, args.out)
    print(markdown(result))


if __name__ == "__main__":
    main()
