"""Fidelity matrix: the defaults on every built-in world, 3 seeds each, against the exact solution.

Each cell trains ``EmpoConfig().environment(<world>).debugging(seed=<seed>)`` -- nothing else
set: the defaults, with ``num_env_runners=0`` -- and compares it with ``exact.solve`` every
``--every`` learner updates. It records, per cell:

- the curve: every evaluation's figures (``compare_to_exact``) with the residuals of the
  same iteration (``Residual/*``) and the seconds of training so far;
- ``first_met``: the learner update at which every bar of ``CONVERGENCE_BARS`` was first met;
- ``worst_after``: each figure's worst value at or after that update (did it stay?);
- ``final``: the last evaluation; ``rank_correlation``: Spearman's rho between the residual of
  q_r and the exact figures along the curve (the convergence monitor's promise);
- updates, training and wall seconds, the machine's load, and the config's fields (the
  README's table says which cells ran on defaults other than today's).

A world the exact solver cannot enumerate (crowd) gets a residual-only cell: the curve holds
the residuals and the learned values at the initial state (``algo.evaluate()``).

    python -m benchmarks.fidelity_matrix                       # every world, seeds 0 1 2
    python -m benchmarks.fidelity_matrix --worlds rock_gate --seeds 1 --updates 5000

Cells are merged into ``--out`` (default ``benchmarks/fidelity_matrix.json``) as they
finish, so a matrix can be built by several processes or sessions; the README's fidelity
table is generated from that file (``make docs``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "fidelity_matrix.json"
#: world -> learner updates a cell trains for (the issue's budget: 20,000 up to 30,000
#: states, 100,000 above).
WORLDS = {"corridor": 20_000, "rock_gate": 20_000, "lanes": 20_000,
          "vault": 100_000, "crowd": 20_000}
SEEDS = (0, 1, 2)
#: evaluations per cell (every budget / EVALUATIONS updates)
EVALUATIONS = 20


def _value(v) -> float:
    """A logged figure, NaN where there is none (no residual rows just after a clear)."""
    return math.nan if v is None else float(v)


def _spearman(a, b) -> float:
    import numpy as np
    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = ~(np.isnan(a) | np.isnan(b))
    if keep.sum() < 3:
        return float("nan")
    ra = np.argsort(np.argsort(a[keep])).astype(float)
    rb = np.argsort(np.argsort(b[keep])).astype(float)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def run_cell(world: str, seed: int, updates: int, every: int, verbose: bool = True) -> dict:
    from benchmarks.common import field_values
    from rllib_empo import EmpoConfig
    from rllib_empo.algorithm.env import env_id
    from rllib_empo.exact import TooManyStatesError
    from rllib_empo.exact.compare import (CONVERGENCE_BARS, bars_met, compare_to_exact,
                                          worst_figures)
    t_wall = time.perf_counter()
    load_before = os.getloadavg()[0]
    algo = (EmpoConfig().environment(env_id(world))
            .env_runners(num_env_runners=0)
            .debugging(seed=seed)).build_algo()
    try:
        try:
            solution = algo.exact_solution()
        except TooManyStatesError as e:
            solution, exact_note = None, str(e)
        else:
            exact_note = None
        build_s = time.perf_counter() - t_wall
        curve, trained, next_eval = [], 0.0, every
        while algo.num_updates < updates:
            t0 = time.perf_counter()
            result = algo.train()
            trained += time.perf_counter() - t0
            if algo.num_updates < next_eval and algo.num_updates < updates:
                continue
            next_eval += every
            point = {"num_updates": algo.num_updates, "train_s": round(trained, 1),
                     "stage": result["Warmup"]["stage"],
                     "residual": dict(result.get("Residual", {}))}
            if solution is not None:
                point["figures"] = compare_to_exact(algo, solution)
            else:
                point["initial_state"] = algo.evaluate()["evaluation"]["InitialState"]
            curve.append(point)
            if verbose:
                shown = point.get("figures", point.get("initial_state"))
                print(f"{world} s{seed} upd={algo.num_updates:6d} {trained:6.0f}s "
                      + " ".join(f"{k}={v:.4g}" for k, v in shown.items()
                                 if k in CONVERGENCE_BARS or solution is None)
                      + f" res_q_r={_value(point['residual'].get('q_r')):.4g}", flush=True)
        cell = {"world": world, "seed": seed, "updates": algo.num_updates,
                "train_s": round(trained, 1), "build_s": round(build_s, 1),
                "wall_s": round(time.perf_counter() - t_wall, 1),
                "num_states": solution.num_states if solution is not None else None,
                "exact": exact_note is None, "exact_note": exact_note,
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "load": [round(load_before, 1), round(os.getloadavg()[0], 1)],
                "fields": field_values(algo.config), "curve": curve}
        if solution is not None:
            history = [p["figures"] for p in curve]
            met = [i for i, f in enumerate(history) if all(bars_met(f).values())]
            first = met[0] if met else None
            cell |= {
                "final": history[-1], "final_met": bars_met(history[-1]),
                "first_met": curve[first]["num_updates"] if first is not None else None,
                "first_met_s": curve[first]["train_s"] if first is not None else None,
                "worst_after": worst_figures(history[first:]) if first is not None else None,
                "stayed": (all(all(bars_met(f).values()) for f in history[first:])
                           if first is not None else None),
                "rank_correlation": {
                    k: _spearman([_value(p["residual"].get("q_r")) for p in curve],
                                 [f[k] for f in history])
                    for k in ("mean_tv_pi_r", "tv_pi_r_s0", "v_r_s0_rel_error")}}
        return cell
    finally:
        algo.stop()


def merge(cell: dict, out: Path = OUT) -> dict:
    data = json.loads(out.read_text()) if out.exists() else {"cells": {}}
    data["cells"][f"{cell['world']}/{cell['seed']}"] = cell
    data["machine"] = f"{len(os.sched_getaffinity(0))} CPUs"
    out.write_text(json.dumps(data, indent=1, default=float) + "\n")
    return data


def summary_rows(data: dict) -> list[dict]:
    """One row per world: over its seeds, the final figures (worst seed), the first update
    meeting every bar and the worst figure after it."""
    from rllib_empo.exact.compare import CONVERGENCE_BARS
    by_world: dict = {}
    for cell in data["cells"].values():
        by_world.setdefault(cell["world"], []).append(cell)
    rows = []
    for world in [w for w in WORLDS if w in by_world] + sorted(set(by_world) - set(WORLDS)):
        cells = sorted(by_world[world], key=lambda c: c["seed"])
        row = {"world": world, "seeds": [c["seed"] for c in cells],
               "num_states": cells[0]["num_states"], "updates": max(c["updates"] for c in cells),
               "train_s": [c["train_s"] for c in cells], "exact": cells[0]["exact"]}
        if cells[0]["exact"]:
            row["final"] = {k: [c["final"][k] for c in cells] for k in CONVERGENCE_BARS}
            row["first_met"] = [c["first_met"] for c in cells]
            row["stayed"] = [c["stayed"] for c in cells]
            row["worst_after"] = {k: [c["worst_after"][k] if c["worst_after"] else None
                                      for c in cells] for k in CONVERGENCE_BARS}
            row["rank_correlation"] = [c["rank_correlation"]["mean_tv_pi_r"] for c in cells]
        else:
            row["final_residual"] = {k: [c["curve"][-1]["residual"].get(k) for c in cells]
                                     for k in ("q_r", "v_h_e", "x_h", "policy_change")}
        rows.append(row)
    return rows


PLOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "residual_vs_exact.png"


def plot_residual_vs_exact(data: dict, path: Path = PLOT,
                           worlds=("rock_gate", "lanes")) -> Path | None:
    """One panel per world (its seeds as lines): ``Residual/q_r`` (no exact solution needed,
    solid) and the exact mean TV and TV(pi_r, s0) (dashed, dotted) against learner updates,
    on log axes, with Spearman's rho in the title. None when no cell of ``worlds`` has both."""
    from matplotlib.figure import Figure
    cells = [c for c in data["cells"].values() if c["world"] in worlds and c.get("exact")]
    shown = [w for w in worlds if any(c["world"] == w for c in cells)]
    if not shown:
        return None
    fig = Figure(figsize=(5.2 * len(shown), 3.8))
    for i, world in enumerate(shown):
        ax = fig.add_subplot(1, len(shown), i + 1)
        rhos = []
        for c in sorted((c for c in cells if c["world"] == world), key=lambda c: c["seed"]):
            x = [p["num_updates"] for p in c["curve"]]
            colour = f"C{c['seed'] % 10}"
            ax.plot(x, [_value(p["residual"].get("q_r")) for p in c["curve"]], "-",
                    color=colour, label=f"seed {c['seed']}: Residual/q_r")
            ax.plot(x, [p["figures"]["mean_tv_pi_r"] for p in c["curve"]], "--", color=colour,
                    label=f"seed {c['seed']}: exact mean TV")
            ax.plot(x, [p["figures"]["tv_pi_r_s0"] for p in c["curve"]], ":", color=colour,
                    label=f"seed {c['seed']}: exact TV(pi_r, s0)")
            rhos.append(c["rank_correlation"]["mean_tv_pi_r"])
        ax.set_yscale("log")
        ax.set_xlabel("learner updates")
        ax.axhline(0.03, color="grey", lw=0.8)
        rho = ", ".join(f"{r:.2f}" for r in rhos)
        ax.set_title(f"{world}: Spearman rho(Residual/q_r, mean TV) = {rho}", fontsize=9)
        ax.legend(fontsize=6, ncol=1 if len(rhos) < 2 else 2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default=",".join(WORLDS))
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--updates", type=int, default=None,
                    help="learner updates per cell (default: the world's budget, WORLDS)")
    ap.add_argument("--every", type=int, default=None,
                    help=f"evaluate every N updates (default: budget / {EVALUATIONS})")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--plot-only", action="store_true",
                    help=f"only redraw {PLOT.relative_to(PLOT.parents[2])} from --out")
    args = ap.parse_args(argv)
    if args.plot_only:
        print(plot_residual_vs_exact(json.loads(args.out.read_text())))
        return 0
    from benchmarks.common import ensure_ray
    ensure_ray(num_cpus=2)
    for world in args.worlds.split(","):
        for seed in map(int, args.seeds.split(",")):
            updates = args.updates or WORLDS[world]
            cell = run_cell(world, seed, updates, args.every or max(1, updates // EVALUATIONS))
            merge(cell, args.out)
            print(json.dumps({k: cell.get(k) for k in ("world", "seed", "first_met", "stayed",
                                                      "final_met", "train_s")}), flush=True)
    if args.out == OUT:
        plot_residual_vs_exact(json.loads(OUT.read_text()))
        from tools import gen_docs
        gen_docs.update(gen_docs.ROOT / "README.md")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
