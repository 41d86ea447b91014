"""Why TV(pi_r, s0) wandered: the optimizer's jitter, seen at every iteration. The evidence
behind ``ema_decay``'s default.

A run trains one world with the defaults, except the learner's own running average, which is
set to ``--learner-ema`` (0.997, the default when the wander was measured), and, with
``--target-copy``, what the target copies take (``target_copy``). From ``--start`` on, after every
iteration (``updates_per_iteration`` updates) it reads the Learner's weights and computes
pi_r and V_r at the initial state s0, against the exact solution, for several *series*:

- ``raw``: the latest weights (what trains);
- ``target``: the target copies (what the bootstrapped targets are computed with);
- ``ema<d>`` for the learner's decay: the learner's running average (what is evaluated);
- ``ema<d>`` for each of ``LONGER`` but the learner's: running averages, kept here from the
  weights read after each iteration (``avg <- a avg + (1 - a) w`` with ``a = d ** updates
  since the last read``; they start from the weights at ``--start``).

Per series it records every iteration's TV(pi_r, s0) and V_r(s0) relative error, and, after
``--after`` updates, the worst and mean TV and the share of iterations above the bar
(``CONVERGENCE_BARS["tv_pi_r_s0"]``, 0.03). Evaluation every 2,000 updates (the fidelity matrix)
samples this curve; here it is seen whole.

    python -m benchmarks.averaging --world rock_gate --seeds 0 1          # ~10 min a seed

Writes ``benchmarks/averaging.json`` (merged per world, seed and variant).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "averaging.json"
#: longer running averages kept by the benchmark (per-update decays)
LONGER = (0.999, 0.9997)


def series_name(decay: float) -> str:
    return "ema" + f"{decay:.6g}"[2:]


def run(world: str, seed: int, updates: int, start: int, after: int, learner_ema: float,
        target_copy: str, warmup: int | None = None, verbose: bool = True) -> dict:
    import numpy as np
    import torch
    from ray.rllib.core import DEFAULT_MODULE_ID
    from benchmarks.common import ensure_ray
    from rllib_empo import EmpoConfig
    from rllib_empo.algorithm.env import env_id
    from rllib_empo.algorithm.module import AVERAGE_PREFIX, TARGET_PREFIX
    from rllib_empo.algorithm.values import LearnedValues
    from rllib_empo.exact.compare import CONVERGENCE_BARS
    ensure_ray()
    config = (EmpoConfig().environment(env_id(world)).env_runners(num_env_runners=0)
              .training(ema_decay=learner_ema, target_copy=target_copy)
              .debugging(seed=seed))
    if warmup is not None:          # a quick look: every warm-up stage ``warmup`` updates
        config.training(**{f"warmup_{n}_steps": warmup for n in ("v_h_e", "x_h", "q_r")},
                        beta_r_rampup_steps=2 * warmup)
    algo = config.build_algo()
    try:
        solution = algo.exact_solution()
        s0 = solution.initial_state
        with torch.random.fork_rng(devices=[]):       # do not touch the run's generator
            view = LearnedValues(algo.config)

        def at_s0(weights: dict) -> tuple[float, float]:
            view.module.set_state(weights)
            v = view.values([s0], need=("q_r", "pi_r", "v_r"))
            tv = 0.5 * float(np.abs(v["pi_r"][0] - solution.PI[0]).sum())
            return tv, float(abs(v["v_r"][0] - solution.V_R[0]) / abs(solution.V_R[0]))

        longer_decays = [d for d in LONGER if d != learner_ema]     # the learner's is read
        names = ["raw", "target", series_name(learner_ema)] + [series_name(d) for d in longer_decays]
        curves = {n: {"tv_pi_r_s0": [], "v_r_s0_rel_error": []} for n in names}
        longer: dict = {}
        steps, last, t0 = [], 0, time.process_time()
        while algo.num_updates < updates:
            algo.train()
            n = algo.num_updates
            if n < max(start, 1) or (steps and n == steps[-1]):    # no update since the last read
                last = n
                continue
            w = algo.learner_group.get_weights()[DEFAULT_MODULE_ID]
            raw = {k: np.asarray(v) for k, v in w.items()
                   if not k.startswith((AVERAGE_PREFIX, TARGET_PREFIX))}
            for d in longer_decays:
                if d not in longer:
                    longer[d] = {k: v.copy() for k, v in raw.items()}
                else:
                    a = d ** (n - last)
                    for k, v in raw.items():
                        longer[d][k] = a * longer[d][k] + (1.0 - a) * v
            last = n
            strip = lambda p: {k[len(p):]: v for k, v in w.items() if k.startswith(p)}
            weights = {"raw": raw, "target": {**raw, **strip(TARGET_PREFIX)},
                       series_name(learner_ema): {**raw, **strip(AVERAGE_PREFIX)},
                       **{series_name(d): longer[d] for d in longer_decays}}
            for name in names:
                tv, vr = at_s0(weights[name])
                curves[name]["tv_pi_r_s0"].append(round(tv, 5))
                curves[name]["v_r_s0_rel_error"].append(round(vr, 5))
            steps.append(n)
            if verbose and len(steps) % 30 == 0:
                print(f"{world} s{seed} upd={n:6d} " + " ".join(
                    f"{k}={curves[k]['tv_pi_r_s0'][-1]:.3f}" for k in names), flush=True)
        bar = CONVERGENCE_BARS["tv_pi_r_s0"][1]
        keep = [i for i, n in enumerate(steps) if n >= after]
        summary = {}
        for name in names:
            tv = [curves[name]["tv_pi_r_s0"][i] for i in keep]
            vr = [curves[name]["v_r_s0_rel_error"][i] for i in keep]
            summary[name] = {"max_tv_pi_r_s0": max(tv), "mean_tv_pi_r_s0": float(np.mean(tv)),
                             "share_above_bar": float(np.mean([x > bar for x in tv])),
                             "max_v_r_s0_rel_error": max(vr)}
        return {"world": world, "seed": seed, "updates": algo.num_updates, "start": start,
                "after": after, "learner_ema_decay": learner_ema,
                "target_copy": target_copy, "warmup": warmup, "bar": bar,
                "cpu_s": round(time.process_time() - t0, 1),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "summary": summary, "num_updates": steps, "curves": curves}
    finally:
        algo.stop()


def key(res: dict) -> str:
    variant = "target_" + res["target_copy"]
    if res.get("warmup") is not None:
        variant += f"_warmup{res['warmup']}"
    return f"{res['world']}/{res['seed']}/{variant}/ema{res['learner_ema_decay']}"


def main(argv=None) -> int:
    import torch
    from rllib_empo.algorithm.fields import TARGET_COPIES
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default="rock_gate")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--updates", type=int, default=20_000)
    ap.add_argument("--start", type=int, default=7_000,
                    help="first update read (the beta_r ramp ends at 5,000)")
    ap.add_argument("--after", type=int, default=8_000,
                    help="the summary covers the iterations from this update on")
    ap.add_argument("--learner-ema", type=float, default=0.997)
    ap.add_argument("--target-copy", choices=TARGET_COPIES, default=TARGET_COPIES[0],
                    help="the config's target_copy (default: its default)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="a quick look: each warm-up stage this many updates (default: the spec's)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for seed in args.seeds:
        res = run(args.world, seed, args.updates, args.start, args.after, args.learner_ema,
                  args.target_copy, args.warmup)
        data = json.loads(args.out.read_text()) if args.out.exists() else {}
        data[key(res)] = res
        args.out.write_text(json.dumps(data, indent=1) + "\n")
        for name, s in res["summary"].items():
            print(f"{key(res)} {name:8s} after {args.after}: max TV(pi_r, s0) "
                  f"{s['max_tv_pi_r_s0']:.3f}, mean {s['mean_tv_pi_r_s0']:.3f}, "
                  f"{100 * s['share_above_bar']:.0f} % of iterations above {res['bar']}, "
                  f"max V_r error {s['max_v_r_s0_rel_error']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
