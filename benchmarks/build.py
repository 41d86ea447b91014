"""Figure 6: what ``build_algo()`` costs on every built-in world, by name and as a World instance.

For every built-in world (``benchmarks.common.CASES``; the algorithm's defaults,
``num_env_runners=0``) a fresh subprocess starts Ray (not timed), then times
``config.build_algo()`` -- the world, the phase-1 human prior (the exact Boltzmann prior
where the world is enumerable: corridor, rock_gate, lanes, vault; the heuristic one on
crowd), the EnvRunner, the Learner and the replay memory -- and then trains ``ITERATIONS``
iterations with ``algo.train()``, reporting learner updates per CPU-second of this process
over the iterations after learning started (the whole training loop: sampling, updates,
residuals, metrics; everything runs in this process with ``num_env_runners=0``).

lanes (2 humans, 64 joint actions, 28,137 states) is built twice: registered by name
(``rllib_empo/Lanes-v0``) and with a ``LanesWorld()`` instance in ``env_config`` (the way
``examples/custom_world.py`` shows, ``rllib_empo/World-v0``). Bar: <= 15 s both ways, and
the instance should cost what the name costs (training rate too). A fresh process each, so
that no cache of an earlier build helps.

``--quick``: rock_gate only, both ways, in this process (its phase-1 prior is solved once
per way: the two are cached under different keys), 3 training iterations.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import CASE_LABELS, CASES, case_world, ensure_ray, row

ROOT = Path(__file__).resolve().parents[1]
TARGET_LANES_S = 15.0
ITERATIONS = 40
RUNS = [(case, False) for case in CASES] + [("lanes", True)]
ENV_LEVEL = ("prior", "beta_h", "gamma_h")


def build_config(case: str, instance: bool):
    """The default EmpoConfig of ``case``; ``instance``: the world passed as an instance."""
    from rllib_empo import EmpoConfig
    from rllib_empo.algorithm.env import GENERIC_ENV_ID
    from rllib_empo.worlds import make_world
    env_id, env_cfg, train = CASES[case]
    if instance:
        env_level = {k: v for k, v in env_cfg.items() if k in ENV_LEVEL}
        kwargs = {k: v for k, v in env_cfg.items() if k not in ENV_LEVEL}
        env_id, env_cfg = GENERIC_ENV_ID, {**env_level,
                                           "world": make_world(case_world(case), **kwargs)}
    return (EmpoConfig().environment(env_id, env_config=env_cfg).training(**train)
            .debugging(seed=0))


def build_and_train(case: str, instance: bool, iterations: int) -> dict:
    """Build (timed) and train ``iterations`` iterations (module docstring)."""
    config = build_config(case, instance)
    c0, t0 = time.process_time(), time.perf_counter()
    algo = config.build_algo()
    build_s, build_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    try:
        marks = []
        for _ in range(iterations):
            algo.train()
            marks.append((time.perf_counter(), time.process_time(), algo.num_updates))
        started = [m for m in marks if m[2] > 0]
        rate = cpu_rate = None
        if len(started) >= 2:
            (w0, c0, u0), (w1, c1, u1) = started[0], started[-1]
            rate, cpu_rate = (u1 - u0) / (w1 - w0), (u1 - u0) / max(c1 - c0, 1e-9)
        return {"case": case, "instance": instance, "build_s": build_s,
                "build_cpu_s": build_cpu_s, "iterations": iterations,
                "num_updates": algo.num_updates, "updates_per_s": rate,
                "updates_per_cpu_s": cpu_rate}
    finally:
        algo.stop()


def _child(case: str, instance: bool, iterations: int) -> dict:
    ensure_ray()
    from benchmarks.common import load_average
    load = load_average()
    out = build_and_train(case, instance, iterations)
    return {**out, "load_before": load, "load_after": load_average()}


def run_child(case: str, instance: bool, iterations: int, timeout: float = 1800) -> dict:
    code = ("import json; from benchmarks.build import _child; "
            f"print('RESULT ' + json.dumps(_child({case!r}, {instance!r}, {iterations})))")
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"build of {case} (instance={instance}) failed:\n{proc.stderr[-3000:]}")


def run(quick: bool = False) -> dict:
    if quick:
        ensure_ray()
        results = [build_and_train("rock_gate", inst, 3) for inst in (False, True)]
    else:
        results = [run_child(case, inst, ITERATIONS) for case, inst in RUNS]
    figures, rows = {}, []
    for r in results:
        case, inst = r["case"], r["instance"]
        key = f"build_s_{case}" + ("_instance" if inst else "")
        how = "a World instance in env_config" if inst else "registered by name"
        bar = case == "lanes"
        figures[key] = r["build_s"]
        figures[key + "_cpu"] = r["build_cpu_s"]
        figures[f"training_loop_updates_per_cpu_s_{case}" + ("_instance" if inst else "")] = \
            r["updates_per_cpu_s"]
        rate = (f"then {r['updates_per_cpu_s']:.1f} updates per CPU-second of training "
                f"({r['updates_per_s']:.1f} per wall second; defaults, {r['iterations']} "
                "iterations)" if r["updates_per_cpu_s"] else "no updates yet")
        load = (f"; load {r['load_before']:.1f}" if "load_before" in r else "")
        rows.append(row(key, f"{CASE_LABELS[case]}: build_algo(), {how}", r["build_s"], "s",
                        f"<= {TARGET_LANES_S:.0f}" if bar else "",
                        (r["build_s"] <= TARGET_LANES_S) if bar else None,
                        note=f"CPU {r['build_cpu_s']:.1f} s; {rate}{load}", quick=quick))
    by = {(r["case"], r["instance"]): r for r in results}
    pair = [by.get((c, False)) for c in ("lanes", "rock_gate")]
    for case in ("lanes", "rock_gate"):
        name, inst = by.get((case, False)), by.get((case, True))
        if name and inst:
            figures[f"build_instance_over_name_{case}"] = inst["build_s"] / name["build_s"]
            if name["updates_per_cpu_s"] and inst["updates_per_cpu_s"]:
                figures[f"training_instance_over_name_{case}"] = (
                    inst["updates_per_cpu_s"] / name["updates_per_cpu_s"])
    if all(pair) and all(p["updates_per_cpu_s"] for p in pair):
        figures["training_loop_lanes_over_rock_gate_cpu"] = (
            pair[0]["updates_per_cpu_s"] / pair[1]["updates_per_cpu_s"])
        rows.append(row("training_loop_lanes_over_rock_gate_cpu",
                        "lanes / rock_gate: updates per CPU-second of the training loop",
                        figures["training_loop_lanes_over_rock_gate_cpu"], "x", note=(
                            "defaults, num_env_runners=0, separate processes (the issue's "
                            "'today' figure: 10.6 / 103.6 = 0.10)"), quick=quick))
    return {"figures": figures, "rows": rows, "details": {"runs": results}}
