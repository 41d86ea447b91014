"""Figure 5: how costs grow with the world.

A. Sampling and learner cost per world (nr = 0, 1 env, the real RLlib path; learner with all
   five networks at batch 64, as in figure 2): world size (corridor -> rock_gate -> crowd),
   number of humans (corridor 1 vs 2, crowd 2 vs 3) and number of joint robot actions (crowd
   with 2 robots: 25). Crowd worlds use the heuristic prior and ``sum_human_actions=False``.

B. The exact solver against the state count: ``StateGraph`` (enumeration),
   ``BoltzmannHumanPrior.solve`` (phase 1) and ``rllib_empo.exact.solve`` (phase 2), each size
   in a fresh subprocess that reports its times and its peak RSS above the RSS after imports
   (VmHWM - VmRSS; tracemalloc would slow the Python enumeration down too much to time it).
   Families: corridor, rock_gate at horizons 6..12 and then longer horizons (about 650 new
   states per step), and ``benchmarks.worlds.RoomWorld`` (1 robot + 2 humans in an open 4x4
   room: 125 joint actions). A family stops growing when the next size (about twice the
   states) would pass ``EXACT_LIMIT_S`` (set with ``--exact-limit-s``) or half the free memory,
   judged from the cost per state of the last size; the last rows extrapolate to 10 minutes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.common import ensure_ray, mem_available_mb, median, row, timed_cpu

ROOT = Path(__file__).resolve().parents[1]
EXACT_LIMIT_S = float(os.environ.get("EMPO_BENCH_EXACT_LIMIT_S", 120))
TEN_MINUTES = 600.0

# (name, env id, env_config, training overrides)
WORLD_CASES = [
    ("corridor h=1", "corridor", {"num_humans": 1}, {}),
    ("corridor h=2", "corridor", {"num_humans": 2}, {}),
    ("rock_gate", "rock_gate", {}, {}),
    ("crowd h=2 r=1", "crowd", {"num_humans": 2}, {}),
    ("crowd h=3 r=1", "crowd", {"num_humans": 3}, {}),
    ("crowd h=2 r=2", "crowd", {"num_robots": 2}, {}),
]


# ---------------------------------------------------------------- A: per-world costs
def world_config(world: str, env_config: dict, nr: int = 0, fragment: int = 100, **training):
    from rllib_empo import EmpoConfig
    from rllib_empo.algorithm.env import env_id
    extra = {"prior": "heuristic"} if world == "crowd" else {}
    train = {"sum_human_actions": False} if world == "crowd" else {}
    return (EmpoConfig()
            .environment(env_id(world), env_config={**extra, **env_config})
            .env_runners(num_env_runners=nr, rollout_fragment_length=fragment)
            .training(**{**train, **training})
            .debugging(seed=0)
            .fault_tolerance(restart_failed_env_runners=False))


def world_costs(world: str, env_config: dict, sample_calls: int, blocks: int, per_block: int,
                fill: int) -> dict:
    from benchmarks.learner import ZERO_WARMUP, fill_replay, update_fn
    from benchmarks.sampling import sample_steps
    algo = world_config(world, env_config, u_r_use_network=True, v_r_use_network=True,
                        train_batch_size_per_learner=64, torch_num_threads=1,
                        **ZERO_WARMUP).build_algo()
    try:
        er = algo.env_runner_group.local_env_runner
        spec = er.env.unwrapped.envs[0].unwrapped.table_spec
        er.sample_rows()                                        # first call: set-up, caches
        calls = [timed_cpu(lambda: sample_steps(er.sample_rows()[0]))
                 for _ in range(sample_calls)]
        fill_replay(algo, fill)
        algo._update_stats = {}
        update = update_fn(algo, 8)
        update(8)
        upd = [timed_cpu(lambda: update(per_block)) for _ in range(blocks)]
        sizes = algo.replay.sizes()
        return {"world": world, "env_config": env_config,
                "steps_per_s": median(n / w for w, _, n in calls),
                "cpu_steps_per_s": median(n / c for _, c, n in calls),
                "updates_per_s": median(per_block / w for w, _, _ in upd),
                "cpu_updates_per_s": median(per_block / c for _, c, _ in upd),
                "bytes_per_transition": sizes["bytes_per_transition"],
                "replay": sizes, "obs_dim": spec.obs_dim,
                "num_humans": spec.num_humans, "num_robot_actions": spec.num_robot_actions,
                "joint_actions": spec.joint_actions, "mode": spec.mode}
    finally:
        algo.stop()


# ---------------------------------------------------------------- B: exact solver
def make_exact_world(family: str, size: int):
    from rllib_empo.worlds import make_world
    if family == "corridor":
        return make_world("corridor", num_humans=size)
    if family == "rock_gate":
        return make_world("rock_gate", horizon=size)
    if family == "room":
        from benchmarks.worlds import RoomWorld
        return RoomWorld(width=4, height=4, num_humans=2, horizon=size)
    if family == "room3":
        from benchmarks.worlds import RoomWorld
        return RoomWorld(width=3, height=3, num_humans=2, horizon=size)
    raise ValueError(family)


def _exact_child(family: str, size: int, in_process: bool = False) -> dict:
    """Runs in a fresh interpreter (peak memory: VmHWM above the RSS after imports), or
    ``in_process`` (--quick: tiny worlds, times only)."""
    import time
    from benchmarks.common import peak_rss_mb, rss_mb
    from rllib_empo.exact import solve
    from rllib_empo.humans import BoltzmannHumanPrior
    from rllib_empo.exact.statespace import StateGraph
    world = make_exact_world(family, size)
    base = rss_mb()
    c0 = time.process_time()
    t0 = time.perf_counter()
    graph = StateGraph(world)
    t1 = time.perf_counter()
    prior = BoltzmannHumanPrior.solve(world, 10.0, 0.99, graph=graph)
    t2 = time.perf_counter()
    solve(world, prior, beta_r=10.0, gamma_h=0.99, gamma_r=1.0, zeta=2.0, xi=1.0, eta=1.1)
    t3 = time.perf_counter()
    cpu = time.process_time() - c0
    peak = None if in_process else peak_rss_mb() - base
    return {"family": family, "size": size, "states": graph.num_states,
            "transitions": int(graph.T.nnz), "joint_actions": graph.J,
            "graph_s": t1 - t0, "phase1_s": t2 - t1, "phase2_s": t3 - t2, "total_s": t3 - t0,
            "cpu_s": cpu, "peak_mb": peak}


def exact_point(family: str, size: int, timeout: float, in_process: bool = False) -> dict | None:
    if in_process:
        return _exact_child(family, size, in_process=True)
    code = ("import json; from benchmarks.scaling import _exact_child; "
            f"print('RESULT ' + json.dumps(_exact_child({family!r}, {size})))")
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"family": family, "size": size, "timed_out": True, "timeout_s": timeout}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"family": family, "size": size, "failed": proc.stderr[-2000:]}


def exact_sweep(quick: bool, limit_s: float) -> list[dict]:
    if quick:       # in-process (no peak memory): tiny sizes only
        plan = {"corridor": [1, 2], "rock_gate": [6, 8, 10, 12], "room3": [4]}
    else:
        plan = {"corridor": [1, 2], "rock_gate": [6, 8, 10, 12, 25, 50, 100, 200, 400, 800, 1600],
                "room": [10, 20, 40, 80, 160]}
    out = []
    for family, sizes in plan.items():
        last = None
        for size in sizes:
            if last is not None and "states" in last:
                growth = size / last["size"]      # states grow about linearly in the horizon
                if min(last["total_s"], last["cpu_s"]) * growth > limit_s:
                    break
                if (last["peak_mb"] or 0) * growth > 0.5 * mem_available_mb():
                    break
            p = exact_point(family, size, timeout=max(60.0, 2 * limit_s), in_process=quick)
            out.append(p)
            if "states" not in p:
                break
            last = p
    return out


def mem_total_mb() -> float:
    with open("/proc/meminfo") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("MemTotal:")) / 1024


def describe_world(family: str, size: int) -> str:
    return {"corridor": f"corridor, {size} human(s)", "rock_gate": f"rock_gate, horizon {size}",
            "room": f"4x4 room, 2 humans, horizon {size}",
            "room3": f"3x3 room, 2 humans, horizon {size}"}[family]


# ---------------------------------------------------------------- the figure
def run(quick: bool = False, exact_limit_s: float | None = None) -> dict:
    ensure_ray()
    limit = exact_limit_s or (30.0 if quick else EXACT_LIMIT_S)
    details = {"worlds": [], "exact": [], "exact_limit_s": limit, "quick": quick,
               "mem_total_mb": mem_total_mb()}
    calls, blocks, per_block, fill = (1, 1, 8, 256) if quick else (5, 3, 40, 2000)
    for name, world, env_config, _ in WORLD_CASES:
        c = world_costs(world, env_config, calls, blocks, per_block, fill)
        details["worlds"].append({"name": name, **c})
    details["exact"] = exact_sweep(quick, limit)
    return summarize(details)


def summarize(details: dict) -> dict:
    """Figures and table rows from the measurements (kept in results.json's details)."""
    quick, limit = details["quick"], details["exact_limit_s"]
    figures, rows = {}, []
    for c in details["worlds"]:
        name = c["name"]
        key = "scaling_" + name.replace(" ", "_").replace("=", "")
        figures[key + "_steps_per_s"] = c["steps_per_s"]
        figures[key + "_updates_per_s"] = c["updates_per_s"]
        figures[key + "_bytes_per_transition"] = c["bytes_per_transition"]
        rows.append(row(key, f"{name}: sampling / learner (B=64, 5 nets, 8 per call)",
                        f"{c['steps_per_s']:,.0f} / {c['updates_per_s']:.0f}", "steps/s / upd/s",
                        note=(f"CPU-time {c['cpu_steps_per_s']:,.0f} / "
                              f"{c['cpu_updates_per_s']:.0f}; "
                              f"A_r={c['num_robot_actions']}, J={c['joint_actions']}, "
                              f"D={c['obs_dim']}, {c['bytes_per_transition']:,.0f} B per "
                              f"transition at {c['replay']['rows']:,} rows, {c['mode']}"),
                        quick=quick))
    points = details["exact"]
    for p in points:
        key = f"exact_{p['family']}_{p['size']}"
        label = f"exact solve: {describe_world(p['family'], p['size'])}"
        if "states" not in p:
            rows.append(row(key, label, None, "s", note="timed out" if p.get("timed_out")
                            else "failed", quick=quick))
            continue
        figures[key + "_states"] = p["states"]
        figures[key + "_s"] = p["total_s"]
        figures[key + "_peak_mb"] = p["peak_mb"]
        rows.append(row(key, label, p["total_s"], "s", note=(
            f"CPU {p['cpu_s']:.1f} s; {p['states']:,} states, {p['transitions']:,} "
            "transitions; enumerate "
            f"{p['graph_s']:.1f} s, phase 1 {p['phase1_s']:.1f} s, phase 2 {p['phase2_s']:.1f} s;"
            + (f" peak +{p['peak_mb']:,.0f} MiB" if p["peak_mb"] is not None else
               " in-process, no memory figure")), quick=quick))
    solved = [p for p in points if "states" in p]
    for family in sorted({p["family"] for p in solved}):
        fam = [p for p in solved if p["family"] == family]
        big = max(fam, key=lambda p: p["states"])
        # CPU seconds: steadier than wall time on a shared machine (equal on an idle one)
        us_per_state = 1e6 * min(big["total_s"], big["cpu_s"]) / big["states"]
        n10 = TEN_MINUTES / (us_per_state * 1e-6)
        mem = "memory not measured in --quick"
        if big["peak_mb"] is not None:
            kb_per_state = 1024 * big["peak_mb"] / big["states"]
            ram = details.get("mem_total_mb") or mem_total_mb()
            n_ram = 0.5 * ram * 1024 / kb_per_state
            figures[f"exact_{family}_states_in_half_ram_extrapolated"] = n_ram
            mem = (f"{kb_per_state:.1f} KiB per state -> {n10 * kb_per_state / 2**20:,.1f} GiB "
                   f"at that size; half of the {ram / 1024:.0f} GiB RAM holds "
                   f"{n_ram:,.0f} states")
        figures[f"exact_{family}_largest_states"] = big["states"]
        figures[f"exact_{family}_largest_s"] = big["total_s"]
        figures[f"exact_{family}_us_per_state"] = us_per_state
        figures[f"exact_{family}_states_in_10_min_extrapolated"] = n10
        if big["states"] < 1000:
            continue
        rows.append(row(f"exact_{family}_10min", f"exact solve: {family} states in 10 minutes",
                        n10, "states", note=(
                            f"extrapolated from the largest solved ({big['states']:,} states in "
                            f"{big['total_s']:.1f} s, CPU {big['cpu_s']:.1f} s: "
                            f"{us_per_state:.0f} us per state; "
                            f"{mem}); "
                            f"limit per size {limit:.0f} s"), quick=quick))
    for family in sorted({p["family"] for p in solved}):
        near = [p for p in solved if p["family"] == family and p["states"] >= 1e5]
        if not near:
            continue
        p = min(near, key=lambda p: p["states"])
        figures[f"exact_1e5_states_s_{family}"] = p["total_s"]
        rows.append(row(f"exact_1e5_states_s_{family}",
                        f"exact solve: first {family} world with >= 10^5 states", p["total_s"],
                        "s", note=(f"{describe_world(p['family'], p['size'])}: {p['states']:,} "
                                   f"states, CPU {p['cpu_s']:.0f} s, peak "
                                   f"+{p['peak_mb']:,.0f} MiB"),
                        quick=quick))
    return {"figures": figures, "rows": rows, "details": details}
