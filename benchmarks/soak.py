"""Soak test (not CI): train rock_gate for a long time and watch for slow failures.

    python -m benchmarks.soak                      # 30 minutes (run it on a quiet machine)
    python -m benchmarks.soak --minutes 1          # smoke check
    python benchmarks/soak.py --minutes 60 --eval-every 100 --out /tmp/soak.json

Records, over time: the resident memory of the driver (and of every remote EnvRunner with
``--num-env-runners``), the number of live Python objects, the wall time of every
``algo.train()``, and every ``--eval-every`` iterations the fidelity against the exact
solution (``compare_to_exact``). The run uses the defaults on rock_gate (only the seed set),
with ``--replay-capacity`` rows of replay (20,000 unless told otherwise) so that the buffer
fills well within the run.

The summary answers three questions, each with its numbers and a verdict:

- memory: is RSS flat once the buffer is full (growth and slope after the fill)?
- time per iteration: does it grow (median of the first vs the last quarter of the
  fully-trained stage, or of the whole run if that stage is short)?
- fidelity: once every bar of ``CONVERGENCE_BARS`` is met, is every later evaluation within
  them (worst value of each figure after the first success, evaluations that miss a bar)?

Timings are wall-clock: on a machine shared with other work they stretch (the load average
is recorded at every evaluation). Exit status 0 whatever the verdicts; read the summary.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:               # `python benchmarks/soak.py` from anywhere
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from rllib_empo.exact.compare import CONVERGENCE_BARS as BARS, bars_met, worst_figures  # noqa: E402
from benchmarks.common import field_values  # noqa: E402

FIDELITY_KEYS = tuple(BARS) + ("argmax_agreement",)
# Verdict thresholds (generous: the machine is noisy).
MEMORY_GROWTH_MB = 50.0          # after the buffer is full
MEMORY_SLOPE_MB_PER_MIN = 2.0
TIME_GROWTH_RATIO = 1.25         # last quarter vs first quarter, median time per iteration


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size from /proc (Linux); NaN elsewhere."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def soak_config(seed: int, replay_capacity: int | None, num_env_runners: int):
    """The defaults on rock_gate (only the seed set), with ``replay_capacity`` rows so that
    the buffer fills well within the run."""
    from rllib_empo import EmpoConfig
    cfg = EmpoConfig().environment("rllib_empo/RockGate-v0").debugging(seed=seed)
    if replay_capacity:
        cfg = cfg.training(replay_capacity=replay_capacity)
    cfg = cfg.env_runners(num_env_runners=num_env_runners)
    if num_env_runners:
        cfg = cfg.env_runners(num_cpus_per_env_runner=0.5)
    return cfg


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return float("nan")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 60.0 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else float("nan")


def run(minutes: float, eval_every: int, seed: int, replay_capacity: int | None,
        num_env_runners: int, sample_every: int) -> dict:
    import ray
    import torch
    torch.set_num_threads(1)
    if not ray.is_initialized():
        ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    import rllib_empo  # noqa: F401  (registers the envs)
    from rllib_empo.evaluation import compare_to_exact, exact_solution_for

    t_build = time.perf_counter()
    algo = soak_config(seed, replay_capacity, num_env_runners).build_algo()
    t_build = time.perf_counter() - t_build
    capacity = algo.config.replay_capacity
    fields = field_values(algo.config)
    t_exact = time.perf_counter()
    solution = exact_solution_for(algo)
    t_exact = time.perf_counter() - t_exact
    group = algo.env_runner_group
    iterations, samples, evals = [], [], []
    start = time.perf_counter()
    end = start + 60.0 * minutes
    full_at = None
    try:
        i = 0
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            result = algo.train()
            dt = time.perf_counter() - t0
            w = result["Warmup"]
            size = len(algo.replay)
            if full_at is None and size >= capacity:
                full_at = time.perf_counter() - start
            iterations.append({"i": i, "t": time.perf_counter() - start, "train_s": dt,
                               "stage": int(w["stage"]), "num_updates": int(w["num_updates"]),
                               "buffer": size})
            if i % sample_every == 0:
                runners = []
                if group.num_remote_env_runners():
                    runners = group.foreach_env_runner(
                        lambda er: float(open("/proc/self/status").read().split("VmRSS:")[1]
                                         .split()[0]) / 1024.0, local_env_runner=False)
                samples.append({"t": time.perf_counter() - start, "i": i,
                                "driver_rss_mb": rss_mb(), "runner_rss_mb": runners,
                                "buffer": size, "buffer_mb": algo.replay.sizes()["bytes_total"] / 2**20,
                                "py_objects": len(gc.get_objects())})
            if i % eval_every == 0:
                te = time.perf_counter()
                fig = compare_to_exact(algo, solution)
                evals.append({"t": time.perf_counter() - start, "i": i, "stage": int(w["stage"]),
                              "num_updates": int(w["num_updates"]), "eval_s": time.perf_counter() - te,
                              "load": load_average(), **{k: fig[k] for k in FIDELITY_KEYS}})
                end += evals[-1]["eval_s"]          # evaluations do not eat training time
            i += 1
    finally:
        algo.stop()
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": "python -m benchmarks.soak " + " ".join(sys.argv[1:]),
            "minutes": minutes, "seed": seed, "replay_capacity": capacity,
            "num_env_runners": num_env_runners, "fields": fields,
            "build_s": t_build, "exact_solve_s": t_exact,
            "buffer_full_at_s": full_at, "iterations": iterations, "samples": samples,
            "evals": evals}


def summarize(rec: dict) -> dict:
    its, samples, evals = rec["iterations"], rec["samples"], rec["evals"]
    out = {"iterations": len(its), "final_num_updates": its[-1]["num_updates"] if its else 0,
           "final_stage": its[-1]["stage"] if its else None,
           "buffer_full_at_s": rec["buffer_full_at_s"]}

    # memory: after the buffer is full (else over the second half of the run, and say so)
    def total(s):
        return s["driver_rss_mb"] + sum(s["runner_rss_mb"])
    full = rec["buffer_full_at_s"]
    window = [s for s in samples if full is not None and s["t"] >= full]
    basis = "after the buffer filled"
    conclusive = len(window) >= 3
    if not conclusive:
        window = samples[len(samples) // 2:]
        basis = ("second half of the run (too little of it after the buffer filled for a "
                 "verdict: raise --minutes or lower --replay-capacity)")
    if window:
        growth = total(window[-1]) - total(window[0])
        slope = slope_per_min([(s["t"], total(s)) for s in window])
        obj_growth = window[-1]["py_objects"] - window[0]["py_objects"]
        out["memory"] = {
            "basis": basis, "rss_start_mb": total(window[0]), "rss_end_mb": total(window[-1]),
            "growth_mb": growth, "slope_mb_per_min": slope, "py_objects_growth": obj_growth,
            "buffer_mb": window[-1]["buffer_mb"],
            "flat": (bool(growth <= MEMORY_GROWTH_MB and not slope > MEMORY_SLOPE_MB_PER_MIN)
                     if conclusive else None)}

    # time per iteration: within the fully-trained stage when it is long enough
    stage6 = [it for it in its if it["stage"] == 6]
    segment, seg_name = (stage6, "stage 6") if len(stage6) >= 40 else (its[len(its) // 4:], "whole run after its first quarter")
    if len(segment) >= 8:
        q = max(len(segment) // 4, 2)
        first = statistics.median(it["train_s"] for it in segment[:q])
        last = statistics.median(it["train_s"] for it in segment[-q:])
        out["time_per_iteration"] = {"basis": seg_name, "first_quarter_median_s": first,
                                     "last_quarter_median_s": last, "ratio": last / first,
                                     "no_growth": bool(last / first <= TIME_GROWTH_RATIO)}

    # fidelity: first success, then the worst value afterwards
    ok = [e for e in evals if all(bars_met(e).values())]
    fid = {"evaluations": len(evals), "bars": {k: f"{d} {b}" for k, (d, b) in BARS.items()},
           "final": {k: evals[-1][k] for k in FIDELITY_KEYS} if evals else None}
    if ok:
        first = ok[0]
        later = [e for e in evals if e["i"] > first["i"]]
        fid |= {"reached_at_iteration": first["i"], "reached_at_s": first["t"],
                "reached_at_updates": first["num_updates"],
                "worst_after_reaching": worst_figures([first] + later),
                "evaluations_after": len(later),
                "evaluations_after_missing_a_bar": sum(not all(bars_met(e).values())
                                                       for e in later),
                "no_degradation": bool(all(all(bars_met(e).values()) for e in later))}
    else:
        fid |= {"reached_at_iteration": None, "no_degradation": None}
    out["fidelity"] = fid
    return out


def print_report(rec: dict, summary: dict) -> None:
    print(f"\nSoak: rock_gate, {rec['minutes']:g} min, seed {rec['seed']}, "
          f"{rec['num_env_runners']} remote EnvRunners, replay {rec['replay_capacity']} rows; "
          f"build {rec['build_s']:.1f} s, exact solve {rec['exact_solve_s']:.1f} s")
    print(f"iterations {summary['iterations']}, learner updates {summary['final_num_updates']}, "
          f"final stage {summary['final_stage']}, buffer full at "
          + (f"{summary['buffer_full_at_s']:.0f} s" if summary["buffer_full_at_s"] is not None else "never"))
    print("\nfidelity over time:")
    print(f"  {'iter':>6} {'t[s]':>7} {'stage':>5} " + " ".join(f"{k:>20}" for k in FIDELITY_KEYS)
          + f" {'load':>5}")
    for e in rec["evals"]:
        print(f"  {e['i']:>6} {e['t']:>7.0f} {e['stage']:>5} "
              + " ".join(f"{e[k]:>20.4g}" for k in FIDELITY_KEYS) + f" {e['load']:>5.1f}")
    m = summary.get("memory")
    print("\nmemory:", "no samples" if not m else
          f"{m['rss_start_mb']:.0f} -> {m['rss_end_mb']:.0f} MB ({m['growth_mb']:+.1f} MB, "
          f"{m['slope_mb_per_min']:+.2f} MB/min, {m['py_objects_growth']:+d} Python objects; "
          f"buffer {m['buffer_mb']:.0f} MB) over the {m['basis']}: "
          + {True: "FLAT", False: "GROWING", None: "INCONCLUSIVE"}[m["flat"]])
    t = summary.get("time_per_iteration")
    print("time per iteration:", "too few iterations" if not t else
          f"{1e3 * t['first_quarter_median_s']:.0f} -> {1e3 * t['last_quarter_median_s']:.0f} ms "
          f"(x{t['ratio']:.2f}, {t['basis']}): " + ("NO GROWTH" if t["no_growth"] else "GROWING"))
    f = summary["fidelity"]
    if f["reached_at_iteration"] is None:
        print(f"fidelity: bars {BARS} not reached in {f['evaluations']} evaluations")
    else:
        worst = ", ".join(f"{k} {v:.4g}" for k, v in f["worst_after_reaching"].items())
        print(f"fidelity: every bar met at iteration {f['reached_at_iteration']} "
              f"({f['reached_at_updates']:,} updates, {f['reached_at_s']:.0f} s); worst from "
              f"then on: {worst}; {f['evaluations_after_missing_a_bar']} of "
              f"{f['evaluations_after']} later evaluations miss a bar: "
              + ("STAYED" if f["no_degradation"] else "DEGRADED"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="training time (default 30)")
    p.add_argument("--eval-every", type=int, default=50,
                   help="compare_to_exact every N iterations (default 50)")
    p.add_argument("--sample-every", type=int, default=10,
                   help="record memory every N iterations (default 10)")
    p.add_argument("--replay-capacity", type=int, default=20_000,
                   help="replay rows (default 20000: full after 400 iterations); 0 keeps the config's")
    p.add_argument("--num-env-runners", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write every time series and the summary as JSON here")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.eval_every < 1 or args.sample_every < 1:
        p.error("--minutes must be > 0, --eval-every and --sample-every >= 1")
    rec = run(args.minutes, args.eval_every, args.seed, args.replay_capacity or None,
              args.num_env_runners, args.sample_every)
    summary = summarize(rec)
    print_report(rec, summary)
    if args.out:
        Path(args.out).write_text(json.dumps({"record": rec, "summary": summary}, indent=1))
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
