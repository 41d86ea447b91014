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

# The built-in worlds as the benchmarks run them: case -> (env id, env_config, training
# overrides). crowd is too large for the exact phase-1 prior and for summing the humans'
# actions out, so it runs with the heuristic prior and the step's sampled human actions.
CASES = {
    "rock_gate": ("rllib_empo/RockGate-v0", {}, {}),
    "corridor": ("rllib_empo/Corridor-v0", {}, {}),
    "lanes": ("rllib_empo/Lanes-v0", {}, {}),
    "vault": ("rllib_empo/Vault-v0", {}, {}),
    "crowd": ("rllib_empo/Crowd-v0", {"prior": "heuristic"}, {"sum_human_actions": False}),
    "crowd_h3": ("rllib_empo/Crowd-v0", {"prior": "heuristic", "num_humans": 3},
                 {"sum_human_actions": False}),
}
CASE_LABELS = {"rock_gate": "rock_gate", "corridor": "corridor", "lanes": "lanes",
               "vault": "vault", "crowd": "crowd (2 humans)", "crowd_h3": "crowd (3 humans)"}


def case_world(case: str) -> str:
    """The registered world name behind a case (``crowd_h3`` -> ``crowd``)."""
    from rllib_empo.algorithm.env import env_ids
    return env_ids()[CASES[case][0]]


def case_config(case: str, nr: int = 0, ne: int = 1, fragment: int = 100,
                env_config: dict | None = None, **training):
    """The EmpoConfig of a case (the algorithm's defaults otherwise; seed 0)."""
    from rllib_empo import EmpoConfig
    env_id, env_cfg, train = CASES[case]
    return (EmpoConfig()
            .environment(env_id, env_config={**env_cfg, **(env_config or {})})
            .env_runners(num_env_runners=nr, num_envs_per_env_runner=ne,
                         rollout_fragment_length=fragment)
            .training(**{**train, **training})
            .debugging(seed=0)
            .fault_tolerance(restart_failed_env_runners=False))


def case_env(case: str, seed: int = 0, **training):
    """A bare EmpoEnv of a case with the settings the algorithm's config injects into its
    EnvRunners' envs (``EmpoConfig.empo_env_settings``), reset."""
    from rllib_empo.algorithm.env import EmpoEnv
    cfg = case_config(case, **training)
    env = EmpoEnv({**dict(cfg.env_config), "world": case_world(case),
                   "empo": cfg.empo_env_settings()})
    env.reset(seed=seed)
    return env


def old_successor_slots(world) -> int:
    """K of the replay design before issue 11, which padded every row to a world-wide bound on
    the successors of a state: for grid worlds the product over agents of the most distinct
    cells one agent's moves reach from a cell (``GridWorld.max_successors``, removed in commit
    eaf5610; 25 on rock_gate), otherwise the world's ``max_successors`` hint or 32."""
    import numpy as np
    moves = getattr(world, "_moves", None)
    if moves is None:
        return int(getattr(world, "max_successors", 32))
    return int(np.prod([max(len(set(row)) for row in move) for move in moves]))


def step_rows(env, steps: int, rng) -> dict:
    """``steps`` env steps with uniform random robot actions (the behaviour policy of the
    warm-up, where beta_r = 0), then the packed sample of them exactly as
    ``EmpoEnvRunner.sample_rows`` packs it (``tables.pack_sample``)."""
    import numpy as np
    from rllib_empo.algorithm.tables import pack_sample
    n, keys = env.action_space.n, []
    for _ in range(steps):
        _, _, term, trunc, info = env.step(int(rng.integers(n)))
        keys.append(info["empo"].table)
        if term or trunc:
            env.reset()
    tables, states, goals = env.take_sample()
    return pack_sample(tables, states, goals, keys, np.ones(len(keys), np.float32))


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


#: RLlib fields whose default EmpoConfig sets, recorded with the EMPO fields ...
RLLIB_OVERRIDES = ("train_batch_size_per_learner", "grad_clip", "grad_clip_by",
                   "rollout_fragment_length", "num_envs_per_env_runner")
#: ... and their values in the records that predate recording them.
BEFORE_RECORDED = {"train_batch_size_per_learner": 256, "grad_clip": 10.0,
                   "grad_clip_by": "global_norm", "rollout_fragment_length": 50,
                   "num_envs_per_env_runner": 1,
                   # EMPO fields added later: the behaviour before they existed
                   "exploring_starts_frontier": False}


def field_values(config) -> dict:
    """{EMPO config field or RLlib field in RLLIB_OVERRIDES: its value in ``config``},
    JSON-able (tuples as lists): what a recorded run trained with, to compare with the
    defaults of a later checkout."""
    import json
    from rllib_empo.algorithm.fields import FIELD_NAMES
    names = tuple(FIELD_NAMES) + RLLIB_OVERRIDES
    return json.loads(json.dumps({n: getattr(config, n) for n in names}, default=list))


def changed_defaults(recorded: dict | None) -> dict | None:
    """{field: (recorded value, today's default)} for the fields whose recorded value is not
    today's default (a field the record predates counts as changed); None without a record."""
    if recorded is None:
        return None
    from rllib_empo import EmpoConfig
    now = field_values(EmpoConfig())
    then = {n: recorded.get(n, BEFORE_RECORDED.get(n)) for n in now}
    return {n: (then[n], v) for n, v in now.items() if then[n] != v}


def defaults_phrase(fields, ignore=("replay_capacity",)) -> str:
    """"on the defaults", or which of today's defaults a recorded run (its ``field_values``)
    did not have; fields in ``ignore`` (set by the benchmark itself) do not count."""
    changed = changed_defaults(fields)
    if changed is None:
        return "on the defaults of its day (not recorded)"
    changed = {n: v for n, v in changed.items() if n not in ignore}
    if not changed:
        return "on the defaults"
    then = ", ".join(f"{n} {'absent' if old is None else old}" for n, (old, _) in changed.items())
    return f"on earlier defaults ({then}; the run predates today's)"


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
