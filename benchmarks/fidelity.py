"""Fidelity of learned EMPO against the exact solution on rock_gate (the algorithm's acceptance bar).

Setting (issue "The Empo algorithm end to end"): BoltzmannHumanPrior (beta_h = 10,
gamma_h = 0.99), beta_r = 10, gamma_r = 1, zeta = 2, xi = 1, eta = 1.1, neural networks, the
default warm-up scaled to the run, num_env_runners = 0, at most
5 minutes of wall time on 2 cores (the warm-up scaled to the run). Bars, against ``exact.solve``:

    tv_pi_r_s0 <= 0.05, v_r_s0_rel_error <= 0.05, mean_tv_pi_r <= 0.10, mean_abs_v_h_e_error <= 0.05

    python benchmarks/fidelity.py [--seed 0] [--budget 300] [--save PATH]

prints the figures every ``--eval-every`` seconds of training (evaluation time is not counted),
the first time each bar was met, the final figures and the wall time; with ``--save`` it
writes the trained algorithm's checkpoint (``Empo.from_checkpoint(PATH)``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

BARS = {"tv_pi_r_s0": 0.05, "v_r_s0_rel_error": 0.05, "mean_tv_pi_r": 0.10,
        "mean_abs_v_h_e_error": 0.05}
S0_BARS = ("tv_pi_r_s0", "v_r_s0_rel_error")


def fidelity_config(seed: int = 0, budget_s: float = 300.0, **overrides):
    """The EmpoConfig of the benchmark (shared with benchmarks/fidelity_time.py and the slow
    learning test)."""
    from rllib_empo import EmpoConfig
    # The run is planned at ~60 learner updates/s (2 quiet cores, these network sizes): the
    # learning-rate decay refers to num_training_steps, and the warm-up is the default one
    # scaled to the run (500 updates per stage and a 1000-update ramp, ~15% of the run).
    planned = int(60 * budget_s)
    training = dict(beta_r=10.0, gamma_r=1.0, gamma_h=0.99, zeta=2.0, xi=1.0, eta=1.1,
                    hidden_sizes={"q_r": (256, 256), "v_h_e": (128, 128), "x_h": (128, 128)},
                    warmup_v_h_e_steps=500, warmup_x_h_steps=500, warmup_q_r_steps=500,
                    beta_r_rampup_steps=1000, updates_per_iteration=64,
                    # mean TV is over every reachable state, most of which the policy rarely
                    # visits: start most episodes at a state seen earlier as a successor
                    exploring_starts=0.9,
                    q_r_target_update_interval=50, v_h_e_target_update_interval=50,
                    x_h_target_update_interval=50,
                    num_training_steps=planned, lr_constant_fraction=0.3,
                    constant_lr_then_1_over_t=True)
    training.update(overrides)
    return (EmpoConfig()
            .environment("rllib_empo/RockGate-v0",
                         env_config={"prior": "boltzmann", "beta_h": 10.0, "gamma_h": 0.99})
            .env_runners(num_env_runners=0, rollout_fragment_length=50)
            .training(**training)
            .debugging(seed=seed))


def run(seed: int = 0, budget_s: float = 300.0, eval_every_s: float = 15.0, save: str | None = None,
        verbose: bool = True, **overrides) -> dict:
    """Train for ``budget_s`` seconds of wall time (evaluation excluded) and report."""
    from rllib_empo.evaluation import compare_to_exact, exact_solution_for
    algo = fidelity_config(seed, budget_s, **overrides).build_algo()
    solution = exact_solution_for(algo)
    trained, next_eval, first_met, history = 0.0, eval_every_s, {}, []
    while trained < budget_s:
        t0 = time.perf_counter()
        result = algo.train()
        trained += time.perf_counter() - t0
        if trained >= next_eval or trained >= budget_s:
            next_eval += eval_every_s
            fig = compare_to_exact(algo, solution)
            fig |= {"train_s": trained, "num_updates": result["Warmup"]["num_updates"],
                    "stage": result["Warmup"]["stage"]}
            history.append(fig)
            for k, bar in BARS.items():
                if fig[k] <= bar and k not in first_met:
                    first_met[k] = trained
            if "s0" not in first_met and all(fig[k] <= BARS[k] for k in S0_BARS):
                first_met["s0"] = trained
            if verbose:
                print(f"{trained:6.1f}s upd={fig['num_updates']:6d} stage={fig['stage']} "
                      + " ".join(f"{k}={fig[k]:.4f}" for k in BARS), flush=True)
    final = history[-1]
    report = {"seed": seed, "budget_s": budget_s, "final": final, "first_met_s": first_met,
              "bars_met_at_end": {k: final[k] <= b for k, b in BARS.items()}}
    if save:
        algo.save_to_path(os.path.abspath(save))
        report["checkpoint"] = os.path.abspath(save)
    algo.stop()
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=float, default=300.0, help="seconds of training")
    ap.add_argument("--eval-every", type=float, default=15.0)
    ap.add_argument("--save", default=None, help="write the trained checkpoint here")
    ap.add_argument("--json", default=None, help="write the report as JSON here")
    args = ap.parse_args(argv)
    import ray
    import torch
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    report = run(args.seed, args.budget, args.eval_every, args.save)
    report["wall_s"] = time.perf_counter() - t0
    report["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report["machine"] = (f"{len(os.sched_getaffinity(0))} CPUs, load average "
                         f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("\nfinal figures (bar):")
    for k, bar in BARS.items():
        v = report["final"][k]
        print(f"  {k:22s} {v:.4f}  (<= {bar})  {'met' if v <= bar else 'NOT met'}")
    print("first time met (s of training): "
          + ", ".join(f"{k} {v:.0f}" for k, v in report["first_met_s"].items()))
    print(f"wall time {report['wall_s']:.0f} s (training budget {args.budget:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=float)
        from tools import gen_docs as docs
        if os.path.abspath(args.json) == str(docs.FIDELITY_RUN):
            docs.update(docs.ROOT / "README.md")     # the README quotes this run
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
