"""Peak RSS and wall time of `pg2edge convert --size 3B --res 224 --random-init`, per format and quant.

Each conversion runs in its own process; its peak RSS is the larger of
`/usr/bin/time -v`'s and the sum over its process tree sampled every 0.2 s
(full-size TFLite files are converted in child processes). Writes benchmarks/results/convert_3b.json and .md.

    .venv/bin/python benchmarks/convert_memory.py [--formats onnx] [--quants int4,int8] [--int4-clips mse,max]
        [--size 3B] [--extra "--block 128 ..."] [--out benchmarks/results/convert_3b.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def tree_rss_bytes(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants, now (Linux /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {pid}, [pid]
    while frontier:
        frontier = [p for p, pp in parents.items() if pp in frontier and p not in tree]
        tree.update(frontier)
    total = 0
    for p in tree:
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * 4096
        except (OSError, IndexError, ValueError):
            continue
    return total


def measure(size: str, res: int, fmt: str, quant: str, extra: list[str], workdir: Path, keep: bool = False,
            tag: str = "") -> dict:
    """One conversion in a child process: peak RSS (GB), seconds, bundle size, exit status."""
    out = workdir / f"{size}-{res}-{fmt}-{quant}{'-b' + tag if tag else ''}"
    cmd = [sys.executable, "-m", "pg2edge.cli", "convert", "--size", size, "--res", str(res), "--random-init",
           "--format", fmt, "--quant", quant, "--out", str(out), *extra]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(["/usr/bin/time", "-v", *cmd], stdout=subprocess.DEVNULL, stderr=err, text=True)
        tree_peak = 0
        while child.poll() is None:  # the whole process tree: converters may run in child processes
            tree_peak = max(tree_peak, tree_rss_bytes(child.pid))
            time.sleep(0.2)
        err.seek(0)
        proc = subprocess.CompletedProcess(cmd, child.returncode, "", err.read())
    seconds = time.perf_counter() - t0
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    rss_kb = max(rss_kb, tree_peak // 1024)
    files = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    clip = extra[extra.index("--int4-clip") + 1] if "--int4-clip" in extra else "mse"  # convert's default
    row = {"size": size, "res": res, "format": fmt, "quant": quant, "int4_clip": clip, "ok": proc.returncode == 0,
           "out": str(out),
           "peak_rss_gb": rss_kb / 1e6, "seconds": round(seconds, 1),
           "bundle_gb": sum(p.stat().st_size for p in files) / 1e9, "command": " ".join(cmd[2:])}
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| variant | format | quant | int4 scales | ok | peak RSS (GB) | seconds | bundle (GB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        clip = r.get("int4_clip", "max") if r["quant"] in ("int4", "mixed") else ""  # rows before the search: max
        lines.append(f"| {r['size']}-{r['res']} | {r['format']} | {r['quant']} | {clip} | {'yes' if r['ok'] else 'no'} | "
                     f"{r['peak_rss_gb']:.2f} | {r['seconds']:.0f} | {r['bundle_gb']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="3B")
    ap.add_argument("--res", type=int, default=224)
    ap.add_argument("--formats", default="onnx,tflite,onnx+tflite",
                    help="comma list; onnx+tflite converts both formats in one process")
    ap.add_argument("--quants", default="int4,int8")
    ap.add_argument("--int4-clips", default="mse", help="comma list of convert --int4-clip values (int4 / mixed)")
    ap.add_argument("--extra", default="--max-len 1024 --prefill 16,512", help="more convert options")
    ap.add_argument("--out", default=str(RESULTS / "convert_3b.json"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="pg2edge-convert-bench-") as tmp:
        for fmt in args.formats.split(","):
            for quant in args.quants.split(","):
                for clip in args.int4_clips.split(",") if quant in ("int4", "mixed") else ["mse"]:
                    extra = [*args.extra.split(), "--int4-clip", clip]
                    row = measure(args.size, args.res, fmt.replace("+", ","), quant, extra, Path(tmp), tag=clip)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    result = {"machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
              "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(f"# convert: {args.size}-{args.res}, random-init\n\n" + markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
