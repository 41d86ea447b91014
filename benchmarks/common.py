"""Shared helpers of the benchmark suite: Ray start-up, timing, memory, rows of the table.

Every benchmark module has ``run(quick: bool) -> dict`` returning

    {"figures": {key: value, ...},          # flat numbers, merged into results.json
     "rows": [row(...), ...],                # the printed table
     "details": {...}}                       # anything else worth keeping (JSON-able)

Timings on a shared 2-core machine are noisy, so every rate is the median of repeated
measurements, and comparisons (cold vs warm, B=64 vs B=256) are measured in the same run.
"""
from __future__ import annotations

import logging
import os
import statistics
import time
from typing import Any, Callable

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# Figures measured in a --quick run carry this note in the table.
QUICK_NOTE = "quick"


def setup_torch() -> None:
    """One torch thread, as on 2-core CI (RLLIB_NOTES.md section 8)."""
    import torch
    torch.set_num_threads(1)


def quiet_logs() -> None:
    for name in ("ray", "ray.rllib", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)


def ensure_ray(num_cpus: int | None = None):
    """Start Ray once per process (2 logical CPUs at least, so 2 remote EnvRunners fit)."""
    import ray
    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus or max(2, os.cpu_count() or 2), include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    quiet_logs()
    setup_torch()
    return ray


def median(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(statistics.median(xs)) if xs else None


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def timed_cpu(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, result). On a machine shared with other
    work the CPU-time rate of in-process work is the steadier figure: it is close to what
    the same code does on an idle core, while wall time also counts waiting for a core."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def load_average() -> float:
    """1-minute load average (compare with nproc: above it, wall times stretch)."""
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return float("nan")


# ---------------------------------------------------------------- memory (Linux /proc)
def proc_status_kb(field: str, pid: int | str = "self") -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM, ...); 0 if not readable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(pid: int | str = "self") -> float:
    return proc_status_kb("VmRSS", pid) / 1024


def peak_rss_mb(pid: int | str = "self") -> float:
    return proc_status_kb("VmHWM", pid) / 1024


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children are read from /proc/*/stat)."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                parent[int(entry)] = ppid
            except (OSError, IndexError, ValueError):
                continue
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        frontier += kids
    return out


def mem_available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


# ---------------------------------------------------------------- table rows
def row(key: str, label: str, value, unit: str = "", target: str = "", met: bool | None = None,
        note: str = "", quick: bool = False) -> dict:
    """One line of the results table. ``value`` may be a number, a string (">300") or None
    (not measured). ``met``: True / False against ``target``, None when there is none."""
    if quick:
        note = f"{QUICK_NOTE}; {note}" if note else QUICK_NOTE
    return {"key": key, "label": label, "value": value, "unit": unit, "target": target,
            "met": met, "note": note}


def fmt_value(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != v:
            return "nan"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return str(v)


def judge(wall_value, cpu_value, ok) -> bool | str | None:
    """Target status from a wall-time figure and its CPU-time twin: True (met in wall
    time), "cpu" (missed in wall time but met in CPU time: the machine was busy), False."""
    if wall_value is None or ok is None:
        return None
    if ok(wall_value):
        return True
    if cpu_value is not None and ok(cpu_value):
        return "cpu"
    return False


def status(met) -> str:
    if met is None:
        return ""
    if met == "cpu":
        return "met (CPU time)"
    return "met" if met else "MISSED"
