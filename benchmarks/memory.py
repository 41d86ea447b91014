"""Figure 4: memory -- the replay memory on every built-in world, and a default run's RSS.

**The replay memory.** A transition row is (table slot, weight): 12 bytes; each distinct
goal, state and successor table is stored once in keyed, reference-counted stores
(``rllib_empo.algorithm.store``). So what a row costs depends on how many distinct states and
tables the rows reach. For every built-in world (``benchmarks.common.CASES``: rock_gate,
corridor, lanes, vault, crowd with 2 and 3 humans) a ``ReplayStore`` of the default capacity
(100,000 rows) is filled, in a fresh subprocess per world, with real rows: a bare
``EmpoEnv`` with the settings the algorithm's default config injects, stepped with uniform
random robot actions (the behaviour policy of the warm-up stages, where beta_r = 0), each
1,000 steps packed by ``tables.pack_sample`` exactly as ``EmpoEnvRunner.sample_rows`` packs a
sample and merged by ``ReplayStore.add``. ``ReplayStore.sizes()`` gives rows, entries and
bytes (allocated capacity of every column, so slack from the stores' doubling counts);
"bytes per transition" is all of it divided by the rows. Recorded at 10,000, 25,000, 50,000
and 100,000 rows, so the growth is visible. With ``--quick`` the fill stops at a few
thousand rows (rock_gate, corridor and crowd with 3 humans only: lanes and vault take a
while to solve their phase-1 priors) and
the 100,000-row figure is *extrapolated*: the ring at full capacity plus the stores' bytes
scaled linearly with the rows -- an upper bound, since revisited states add no entries.
Also measured: the subprocess's RSS growth during the fill (the memory plus the env's own
caches).

Bars: <= 2 KiB per transition on rock_gate, <= 4 KiB on lanes (2 humans, 64 joint actions,
28,137 states), and the default capacity within 2 GiB on every built-in world.

**Peak RSS of a default run**: ``python examples/quickstart.py`` in a subprocess under
``/usr/bin/time -v``. The figure is the driver's own peak (its VmHWM, read from /proc while
it runs); also reported: /usr/bin/time's "Maximum resident set size" (the largest single
process among the driver and every process it started, Ray's included) and, sampled every
0.5 s, the summed RSS of the whole process tree (shared pages count once per process, so
this sum is an upper bound). The full run without --quick; with --quick the
``RLLIB_EMPO_FAST=1`` run, attached to this process's Ray so as not to start another.
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

from benchmarks.common import (CASE_LABELS, CASES, descendants, ensure_ray, mem_available_mb,
                               peak_rss_mb, row, rss_mb)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CAPACITY = 100_000
BAR_BYTES = {"rock_gate": 2048, "lanes": 4096}
BAR_DEFAULT_CAPACITY_MIB = 2048.0
CHECKPOINTS = (10_000, 25_000, 50_000, 100_000)
QUICK_ROWS = 2_000
QUICK_CASES = ("rock_gate", "corridor", "crowd_h3")
CHUNK = 1_000                        # env steps per packed sample


# ---------------------------------------------------------------- replay memory per world
def fill_memory(case: str, rows: int, checkpoints=CHECKPOINTS,
                capacity: int = DEFAULT_CAPACITY) -> dict:
    """Fill a ReplayStore of ``capacity`` rows with ``rows`` real rows of ``case``; its
    ``sizes()`` at each checkpoint (module docstring)."""
    import numpy as np
    import torch
    from benchmarks.common import case_env, step_rows
    from rllib_empo.algorithm.store import ReplayStore
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    env = case_env(case)
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    rss0 = rss_mb()
    memory = ReplayStore(capacity, env.settings.mode)
    points, added, t0 = [], 0, time.perf_counter()
    marks = sorted({c for c in checkpoints if c < rows} | {rows})
    while added < rows:
        n = min(CHUNK, rows - added)
        memory.add(step_rows(env, n, rng))
        added += n
        if added >= marks[0]:
            marks.pop(0)
            points.append({**memory.sizes(), "fill_s": time.perf_counter() - t0,
                           "rss_growth_mb": rss_mb() - rss0})
    spec = env.table_spec
    widths = {f"tables.{c}": list(a.shape[1:]) for c, a in memory.tables.cols.items()}
    widths.update({f"states.{c}": list(a.shape[1:]) for c, a in memory.states.cols.items()})
    bpe = {n: memory.store(n).bytes_per_entry() for n in ("goals", "states", "tables")}
    return {"case": case, "mode": spec.mode, "num_humans": spec.num_humans,
            "num_robot_actions": spec.num_robot_actions, "obs_dim": spec.obs_dim,
            "joint_actions": spec.joint_actions, "max_goals": spec.max_goals,
            "env_build_s": build_s, "capacity": capacity, "points": points,
            "widths": widths, "bytes_per_entry": bpe, "peak_rss_mb": peak_rss_mb()}


def fill_memory_subprocess(case: str, rows: int, timeout: float = 1800) -> dict:
    code = ("import json; from benchmarks.memory import fill_memory; "
            f"print('RESULT ' + json.dumps(fill_memory({case!r}, {rows})))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"replay fill of {case} failed:\n{proc.stderr[-3000:]}")


def at_default_capacity(r: dict) -> dict:
    """The replay memory's bytes at the default capacity: measured when the fill reached
    it, else extrapolated (module docstring)."""
    last = r["points"][-1]
    store = last["goals_bytes"] + last["states_bytes"] + last["tables_bytes"]
    if last["rows"] >= r["capacity"]:
        return {"bytes": last["bytes_total"], "store_bytes": store, "extrapolated": False,
                "from_rows": last["rows"]}
    ring = r["capacity"] * last["row_bytes"]
    est_store = store * r["capacity"] / last["rows"]
    return {"bytes": ring + est_store, "store_bytes": est_store, "extrapolated": True,
            "from_rows": last["rows"]}


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
                    while_waiting=None) -> dict:
    """Run the quick start under /usr/bin/time, as a user would (no OMP_NUM_THREADS: the
    algorithm sizes torch's threads itself); ``while_waiting()`` (memory-only work whose
    timings do not matter) runs meanwhile."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for key in ("RLLIB_EMPO_FAST", "RAY_ADDRESS", "OMP_NUM_THREADS"):
        env.pop(key, None)
    if fast:
        env["RLLIB_EMPO_FAST"] = "1"
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
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
    figures, rows, details = {}, [], {"replay": {}}
    cases = QUICK_CASES if quick else tuple(CASES)

    def memory_only_work():
        # Memory figures do not depend on CPU contention, so they run while the quick start
        # (a separate process) does; only the quick start's wall time is stretched.
        for case in cases:
            if quick:       # in-process: no subprocess start-ups in a smoke run
                details["replay"][case] = fill_memory(case, QUICK_ROWS)
            else:
                details["replay"][case] = fill_memory_subprocess(case, DEFAULT_CAPACITY)

    addr = ray.get_runtime_context().gcs_address if quick else None
    d = default_run_rss(fast=quick, ray_address=addr, while_waiting=memory_only_work)
    details["default_run"] = d

    worst = None
    for case in CASES:
        label = CASE_LABELS[case]
        r = details["replay"].get(case)
        if r is None:
            figures[f"bytes_per_transition_{case}"] = None
            rows.append(row(f"bytes_per_transition_{case}", f"{label}: bytes per transition",
                            None, "B", note="not run in --quick", quick=quick))
            continue
        full = at_default_capacity(r)
        last = r["points"][-1]
        bpt = full["bytes"] / r["capacity"]
        mib = full["bytes"] / 2**20
        figures[f"bytes_per_transition_{case}"] = bpt
        figures[f"store_bytes_{case}"] = full["store_bytes"]
        figures[f"replay_default_capacity_mib_{case}"] = mib
        figures[f"replay_default_capacity_extrapolated_{case}"] = full["extrapolated"]
        figures[f"replay_states_{case}"] = last["states"]
        figures[f"replay_tables_{case}"] = last["tables"]
        figures[f"replay_rss_growth_mb_{case}"] = last["rss_growth_mb"]
        worst = max(worst or (0.0, ""), (mib, case))
        how = (f"extrapolated from {full['from_rows']:,} rows" if full["extrapolated"]
               else f"measured at {full['from_rows']:,} rows")
        growth = ", ".join(f"{p['rows'] // 1000}k: {p['bytes_per_transition']:,.0f}"
                           for p in r["points"])
        bar = BAR_BYTES.get(case)
        rows.append(row(
            f"bytes_per_transition_{case}", f"{label}: bytes per transition", bpt, "B",
            f"<= {bar:,}" if bar else "", (bpt <= bar) if bar else None, note=(
                f"{how}; store bytes {full['store_bytes'] / 2**20:,.1f} MiB beside the "
                f"{r['capacity'] * last['row_bytes'] / 2**20:.1f} MiB ring ({last['states']:,} "
                f"states, {last['tables']:,} tables, {last['goals']:,} goals); bytes per "
                f"transition by rows filled: {growth}; mode {r['mode']}, J = "
                f"{r['joint_actions']}, succ width {r['widths'].get('tables.succ')}"),
            quick=quick))
        rows.append(row(
            f"replay_default_capacity_mib_{case}",
            f"{label}: replay memory at 100,000 rows", mib, "MiB",
            f"<= {BAR_DEFAULT_CAPACITY_MIB:,.0f}", mib <= BAR_DEFAULT_CAPACITY_MIB, note=(
                f"{how}; RSS growth of the filling process "
                f"{last['rss_growth_mb']:,.0f} MiB (the memory and the env's caches); "
                f"fill {last['fill_s']:.0f} s"), quick=quick))
    if worst is not None:
        measured = [c for c in CASES if c in details["replay"]]
        figures["replay_default_capacity_max_mib"] = worst[0]
        rows.append(row("replay_default_capacity_max_mib",
                        "largest replay memory at 100,000 rows, over the built-in worlds",
                        worst[0], "MiB", f"<= {BAR_DEFAULT_CAPACITY_MIB:,.0f}",
                        worst[0] <= BAR_DEFAULT_CAPACITY_MIB,
                        note=f"{CASE_LABELS[worst[1]]}; worlds measured: {', '.join(measured)}",
                        quick=quick))

    figures["peak_rss_mb_default_run"] = d["driver_peak_rss_mb"]
    figures["peak_rss_mb_default_run_largest_process"] = d["time_max_rss_mb"]
    figures["peak_tree_rss_mb_default_run"] = None if d["joined_ray"] else d["tree_peak_rss_mb"]
    figures["default_run_mode"] = d["mode"]
    how = ", ".join([d["mode"]] + (["joined Ray"] if d["joined_ray"] else []))
    note = (f"python examples/quickstart.py ({how}), {d['wall_s']:.0f} s, {d['user_cpu_s']:.0f} s "
            f"user CPU; peak of the driver process; largest single process "
            f"{d['time_max_rss_mb']:,.0f} MiB (/usr/bin/time; {d['largest_process']})")
    if not d["joined_ray"]:
        note += f"; whole process tree incl. Ray daemons {d['tree_peak_rss_mb']:,.0f} MiB"
    rows.append(row("peak_rss_mb_default_run", "peak RSS of a default run",
                    d["driver_peak_rss_mb"], "MiB", note=note, quick=quick))
    details["mem_available_mb"] = mem_available_mb()
    return {"figures": figures, "rows": rows, "details": details}
