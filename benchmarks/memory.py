"""Figure 4: memory.

- Bytes per buffered transition (``algo.buffer.bytes_per_row`` after sampling into the
  algorithm's own buffer) on rock_gate and crowd, and what the default ``replay_capacity``
  (100,000 rows) would hold.
- RSS growth of a 100,000-row rock_gate ``TransitionBuffer`` filled with real rows (rows from
  a bare EmpoEnv with the algorithm's default settings, cycled), measured in a fresh
  subprocess without Ray so that nothing else moves the RSS. Target: <= 1 GiB.
- Peak RSS of a default run: ``python examples/quickstart.py`` in a subprocess under
  ``/usr/bin/time -v``. The figure is the driver's own peak (its VmHWM, read from /proc while
  it runs); also reported: /usr/bin/time's "Maximum resident set size" (the largest single
  process among the driver and every process it started, Ray's included) and, sampled every
  0.5 s, the summed RSS of the whole process tree (shared pages count once per process, so
  this sum is an upper bound). The full run without --quick; with --quick the
  ``RLLIB_EMPO_FAST=1`` run, attached to this process's Ray so as not to start another, with
  torch on one thread (OMP_NUM_THREADS=1; the same peak RSS, about 4x less time).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import (descendants, ensure_ray, mem_available_mb, peak_rss_mb, row,
                               rss_mb, timed)

ROOT = Path(__file__).resolve().parents[1]
BUFFER_TARGET_MB = 1024.0
DEFAULT_CAPACITY = 100_000


# ---------------------------------------------------------------- bytes per row
def bytes_per_row(world: str, **env_config) -> dict:
    from benchmarks.sampling import sampling_config
    algo = sampling_config(world, 0, 1, 50, env_config=env_config or None).build_algo()
    try:
        cols, _ = algo.env_runner_group.local_env_runner.sample_rows()
        algo.buffer.add(cols)
        spec = algo.env_runner_group.local_env_runner.env.unwrapped.envs[0].unwrapped.table_spec
        used = (cols["probs"].sum(1) > 0).sum(-1)         # successors with probability > 0
        return {"world": world, "bytes_per_row": algo.buffer.bytes_per_row,
                "columns": {k: list(v.shape[1:]) for k, v in cols.items()},
                "max_successors": spec.max_successors, "mode": spec.mode,
                "successors_used_mean": float(used.mean()),
                "successors_used_max": int(used.max())}
    finally:
        algo.stop()


# ---------------------------------------------------------------- buffer RSS (subprocess)
def _buffer_rss_child(world: str, capacity: int, distinct_rows: int) -> dict:
    """Runs in a fresh interpreter: RSS before and after filling the buffer."""
    import numpy as np
    from benchmarks.sampling import make_env
    from rllib_empo.algorithm.buffer import TransitionBuffer
    from rllib_empo.algorithm.tables import stack_rows
    env = make_env(world)
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(distinct_rows):
        _, _, term, _, info = env.step(int(rng.integers(env.action_space.n)))
        rows.append(info["empo"].columns)
        if term:
            env.reset()
    cols = stack_rows(rows)
    del rows
    before = rss_mb()
    buf = TransitionBuffer(capacity)
    t_fill, _ = timed(lambda: [buf.add(cols) for _ in range(-(-capacity // distinct_rows))])
    after = rss_mb()
    return {"world": world, "capacity": capacity, "rows_added": buf.num_added,
            "bytes_per_row": buf.bytes_per_row, "nbytes_mb": buf.nbytes / 2**20,
            "rss_before_mb": before, "rss_after_mb": after, "rss_growth_mb": after - before,
            "peak_rss_mb": peak_rss_mb(), "fill_s": t_fill}


def buffer_rss(world: str = "rock_gate", capacity: int = DEFAULT_CAPACITY,
               distinct_rows: int = 2000) -> dict:
    code = ("import json, sys; from benchmarks.memory import _buffer_rss_child; "
            f"print('RESULT ' + json.dumps(_buffer_rss_child({world!r}, {capacity}, "
            f"{distinct_rows})))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"buffer RSS subprocess failed:\n{proc.stderr[-3000:]}")


# ---------------------------------------------------------------- default run
def _cmd_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
        name = b" ".join(a for a in args[:3] if a).decode(errors="replace")
        return name.replace(str(ROOT) + "/", "")[:80]
    except OSError:
        return "?"


class TreeWatcher(threading.Thread):
    """Samples every 0.5 s: the driver's VmHWM (its own peak, exact whatever the sampling),
    the summed RSS of the whole process tree, and the largest process seen."""

    def __init__(self, root_pid: int):
        super().__init__(daemon=True)
        self.root_pid, self.stop = root_pid, threading.Event()
        self.driver_hwm_mb = self.tree_peak_mb = 0.0
        self.largest = (0.0, "")

    def run(self) -> None:
        while not self.stop.is_set():
            kids = descendants(self.root_pid)
            driver = next((p for p in kids if _parent(p) == self.root_pid), None)
            if driver is not None:
                self.driver_hwm_mb = max(self.driver_hwm_mb, peak_rss_mb(driver))
            rss = {p: rss_mb(p) for p in kids}
            self.tree_peak_mb = max(self.tree_peak_mb, sum(rss.values()))
            if rss:
                p, r = max(rss.items(), key=lambda kv: kv[1])
                if r > self.largest[0]:
                    self.largest = (r, _cmd_name(p))
            self.stop.wait(0.5)


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def default_run_rss(fast: bool, ray_address: str | None = None, timeout: float = 3600,
                    while_waiting=None, one_thread: bool = False) -> dict:
    """Run the quick start under /usr/bin/time; ``while_waiting()`` (memory-only work whose
    timings do not matter) runs meanwhile. ``one_thread``: OMP_NUM_THREADS=1 (torch's
    default on 2 cores is 2 threads, which makes the small networks several times slower on
    a busy machine; the peak RSS is the same)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for key in ("RLLIB_EMPO_FAST", "RAY_ADDRESS", "OMP_NUM_THREADS"):
        env.pop(key, None)
    if fast:
        env["RLLIB_EMPO_FAST"] = "1"
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    if one_thread:
        env["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        tfile, ofile, efile = (os.path.join(tmp, n) for n in ("time.txt", "out.txt", "err.txt"))
        cmd = ["/usr/bin/time", "-v", "-o", tfile, sys.executable, "examples/quickstart.py"]
        t0 = time.perf_counter()
        with open(ofile, "w") as out_f, open(efile, "w") as err_f:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out_f, stderr=err_f)
            watcher = TreeWatcher(proc.pid)
            watcher.start()
            try:
                if while_waiting is not None:
                    while_waiting()
                proc.wait(timeout=max(1.0, timeout - (time.perf_counter() - t0)))
            except subprocess.TimeoutExpired:
                proc.kill()
                raise TimeoutError("examples/quickstart.py ran past the timeout") from None
            finally:
                watcher.stop.set()
                watcher.join()
        wall = time.perf_counter() - t0
        out, err = open(ofile).read(), open(efile).read()
        if proc.returncode != 0:
            raise RuntimeError(f"examples/quickstart.py failed:\n{err[-3000:]}")
        stats = {}
        with open(tfile) as f:
            for line in f:
                k, _, v = line.strip().rpartition(": ")
                stats[k] = v
    return {"mode": "RLLIB_EMPO_FAST=1" if fast else "full", "joined_ray": bool(ray_address),
            "one_thread": one_thread,
            "driver_peak_rss_mb": watcher.driver_hwm_mb,
            "time_max_rss_mb": int(stats["Maximum resident set size (kbytes)"]) / 1024,
            "largest_process": watcher.largest[1], "largest_process_mb": watcher.largest[0],
            "tree_peak_rss_mb": watcher.tree_peak_mb, "wall_s": wall,
            "user_cpu_s": float(stats.get("User time (seconds)", "nan")),
            "tv_pi_r_s0": next((float(l.split()[1]) for l in out.splitlines()
                                if l.startswith("tv_pi_r_s0")), None)}


# ---------------------------------------------------------------- the figure
def run(quick: bool = False) -> dict:
    ray = ensure_ray()
    figures, rows, details = {}, [], {}
    buffer_rows = 500 if quick else 2000

    def memory_only_work():
        # Memory figures do not depend on CPU contention, so they run while the quick start
        # (a separate process) does; only the quick start's wall time is stretched.
        for world in ("rock_gate", "crowd"):
            details[f"bytes_per_row_{world}"] = bytes_per_row(world)
        details["buffer_rss_rock_gate"] = buffer_rss("rock_gate", DEFAULT_CAPACITY, buffer_rows)

    # --quick: the short run, attached to this process's Ray, torch on one thread (smoke-test
    # time; the peak RSS is the same, see default_run_rss)
    addr = ray.get_runtime_context().gcs_address if quick else None
    d = default_run_rss(fast=quick, ray_address=addr, while_waiting=memory_only_work,
                        one_thread=quick)
    details["default_run"] = d

    for world in ("rock_gate", "crowd"):
        b = details[f"bytes_per_row_{world}"]
        figures[f"bytes_per_transition_{world}"] = b["bytes_per_row"]
        full_mb = b["bytes_per_row"] * DEFAULT_CAPACITY / 2**20
        figures[f"replay_buffer_default_capacity_mb_{world}"] = full_mb
        rows.append(row(f"bytes_per_transition_{world}", f"{world}: bytes per buffered transition",
                        b["bytes_per_row"], "B", note=(
                            f"{full_mb:,.0f} MiB at replay_capacity 100,000; K = "
                            f"{b['max_successors']} successor slots, "
                            f"{b['successors_used_mean']:.1f} used on average "
                            f"(max {b['successors_used_max']}); mode {b['mode']}"), quick=quick))

    r = details["buffer_rss_rock_gate"]
    figures["buffer_rss_mb_100k_rock_gate"] = r["rss_growth_mb"]
    rows.append(row("buffer_rss_mb_100k_rock_gate", "rock_gate: RSS of a 100,000-row buffer",
                    r["rss_growth_mb"], "MiB", f"<= {BUFFER_TARGET_MB:,.0f}",
                    r["rss_growth_mb"] <= BUFFER_TARGET_MB, note=(
                        f"arrays {r['nbytes_mb']:,.0f} MiB; from {buffer_rows} distinct real "
                        "rows, cycled"), quick=quick))

    figures["peak_rss_mb_default_run"] = d["driver_peak_rss_mb"]
    figures["peak_rss_mb_default_run_largest_process"] = d["time_max_rss_mb"]
    figures["peak_tree_rss_mb_default_run"] = None if d["joined_ray"] else d["tree_peak_rss_mb"]
    figures["default_run_mode"] = d["mode"]
    how = ", ".join([d["mode"]] + (["joined Ray"] if d["joined_ray"] else [])
                    + (["OMP_NUM_THREADS=1"] if d["one_thread"] else []))
    note = (f"python examples/quickstart.py ({how}), {d['wall_s']:.0f} s, {d['user_cpu_s']:.0f} s "
            f"user CPU; peak of the driver process; largest single process "
            f"{d['time_max_rss_mb']:,.0f} MiB (/usr/bin/time; {d['largest_process']})")
    if not d["joined_ray"]:
        note += f"; whole process tree incl. Ray daemons {d['tree_peak_rss_mb']:,.0f} MiB"
    rows.append(row("peak_rss_mb_default_run", "peak RSS of a default run",
                    d["driver_peak_rss_mb"], "MiB", note=note, quick=quick))
    details["mem_available_mb"] = mem_available_mb()
    return {"figures": figures, "rows": rows, "details": details}
