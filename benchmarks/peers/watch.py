"""Run one peer step in a child process under a memory watchdog: wall time, peak RSS, a JSON result line.

The child runs in its own process group. Every 0.1 s the RSS of the whole
group (the child and anything it spawned, read from /proc) is summed; past
`limit_gb` the group is killed and the step is recorded as "oom" with the peak
seen. It is also killed (as "oom") when the machine's MemAvailable falls under
MIN_AVAILABLE_GB, so a shared machine never reaches the kernel's OOM killer.
The peak reported is the larger of that polled sum and the kernel's
`ru_maxrss` for the child (`os.wait4`), so a short spike between polls still
counts. Sizes are GB = 1e9 bytes, like the rest of benchmarks/.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
DEFAULT_LIMIT_GB = 19 * 2**30 / 1e9  # 19 GiB: leaves the 24 GB machine room for the rest
MIN_AVAILABLE_GB = 0.8  # the machine is shared: stop before the kernel's OOM killer picks someone else


def _available_bytes() -> int:
    """MemAvailable from /proc/meminfo."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 1 << 62


def _group_rss(pgid: int) -> int:
    """Sum of resident bytes of every process in group `pgid`."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # field 5 (pgrp), counted after the comm
                total += int(fields[21]) * PAGE  # field 24 (rss pages)
        except (OSError, IndexError, ValueError):
            continue
    return total


def _oom_first() -> None:
    """In the child: be the kernel OOM killer's first choice, so a shared machine loses this step, not a neighbour."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass


def _last_json(text: str) -> dict | None:
    """The last stdout line that parses as a JSON object (what workers print as their result)."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def run_watched(cmd: list[str], log: Path, limit_gb: float = DEFAULT_LIMIT_GB, timeout_s: float = 3600,
                env: dict[str, str] | None = None, cwd: str | Path | None = None) -> dict:
    """Run `cmd`, stdout+stderr to `log`; {status, seconds, peak_rss_gb, result (worker JSON), reason}."""
    log.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log, "w") as out:
        out.write("$ " + " ".join(map(str, cmd)) + "\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True,
                                preexec_fn=_oom_first)
        peak, killed = 0, None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss = _group_rss(proc.pid)
            peak = max(peak, rss)
            if rss > limit_gb * 1e9:
                killed = "oom"
            elif _available_bytes() < MIN_AVAILABLE_GB * 1e9:
                killed = "oom-machine"
            elif time.perf_counter() - t0 > timeout_s:
                killed = "timeout"
            if killed:
                os.killpg(proc.pid, signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.1)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    peak = max(peak, usage.ru_maxrss * 1024)
    text = log.read_text(errors="replace")
    cpu_s = usage.ru_utime + usage.ru_stime
    row = {"status": "ok", "seconds": round(seconds, 2), "peak_rss_gb": round(peak / 1e9, 2),
           "result": _last_json(text), "log": str(log),
           # contention: CPU seconds the step got per wall second (2.0 = both cores), 1-min load around it
           "cpu_per_wall": round(cpu_s / seconds, 2) if seconds else None,
           "loadavg": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    if killed == "oom":
        row.update(status="oom", reason=f"killed by the watchdog at {peak / 1e9:.1f} GB RSS (limit {limit_gb:.1f} GB)")
    elif killed == "oom-machine":
        row.update(status="oom", reason=f"killed by the watchdog at {peak / 1e9:.1f} GB RSS: the machine had under "
                                        f"{MIN_AVAILABLE_GB} GB available (other processes held the rest)")
    elif killed:
        row.update(status="timeout", reason=f"killed after {timeout_s:.0f} s")
    elif proc.returncode != 0:
        tail = [ln for ln in text.strip().splitlines() if ln.strip()][-1:] or ["(no output)"]
        if proc.returncode == -signal.SIGKILL:
            row.update(status="oom", reason=f"SIGKILL (kernel OOM killer?) at {peak / 1e9:.1f} GB peak RSS")
        else:
            row.update(status="failed", reason=f"exit {proc.returncode}: {tail[0][:300]}")
    return row
