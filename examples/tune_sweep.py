"""A small Ray Tune search on rock_gate: learning rates x warm-up lengths, ranked by how close
each trial's policy gets to the exact solution.

Every trial compares itself with the exact solution of rock_gate every ``exact_eval_interval``
iterations (``Exact/*`` figures) and the search ranks the trials by ``Exact/tv_pi_r_s0``
(total-variation distance of pi_r at the initial state) of their last result. Results before
the first evaluation carry the figures as NaN, so the metric is in every result, as Tune
requires. It prints the ranking, the best trial's hyperparameters and fidelity, and where its
checkpoint and TensorBoard events are (``tensorboard --logdir <experiment dir>`` shows one
run per trial, with the exact ``Warmup/*``, ``Loss/*`` ... tags over learner updates beside
Tune's own ``ray/tune/*``).

With ``--no-exact`` (a world without an exact solution) no trial evaluates and the ranking
uses the convergence residual ``CONVERGENCE_METRIC`` (``rllib_empo.analysis.progress``) when
the results log it, else the last Q_r loss.

Resources -- trials sharing a 2-core machine:

- RLlib asks per trial for ``max(num_cpus_for_main_process, num_cpus_per_learner)`` CPUs
  plus ``num_cpus_per_env_runner`` for every remote EnvRunner. With the defaults and
  ``num_env_runners=0`` (sampling in the trial's own process, used here) a trial takes
  1 CPU, so ``ray.init(num_cpus=2)`` runs 2 trials at once; ``num_env_runners=1`` would
  take 2 CPUs and serialise the trials.
- To run 2 trials with one remote EnvRunner each on 2 cores, ask for fractions:
  ``.env_runners(num_env_runners=1, num_cpus_per_env_runner=0.5)
  .learners(num_cpus_per_learner=0.5).resources(num_cpus_for_main_process=0.5)``
  (bundles ``[{CPU: 0.5}, {CPU: 0.5}]`` per trial). On 2 cores remote EnvRunners do not
  sample faster than the local one; they only pay off on a cluster.
- Ray starts trial actors with ``OMP_NUM_THREADS=1``, so torch uses one thread per trial
  and two trials do not fight over the cores.
- ``max_concurrent_trials`` (TuneConfig) caps parallel trials below what the CPUs allow,
  e.g. to bound memory (about 0.5 GB per trial process).

Usage: ``python examples/tune_sweep.py [--storage DIR] [--address ADDR] [--no-exact]``.
The full search (6 trials x 300 iterations of 32 learner updates, 2 trials at a time) took
11 minutes on this 2-core machine, shared with other work (load average 3-8); its best trial
(lr 3e-4, 200-update stages) ended at TV 0.086 of pi_r at s0 (mean TV over states 0.28). RLLIB_EMPO_FAST=1 (CI) runs the same code on 2 trials x 4 iterations, evaluating
every 2nd iteration, so the first result has no evaluation yet.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import ray
from ray import tune

from rllib_empo import Empo, EmpoConfig
from rllib_empo.analysis.progress import CONVERGENCE_METRIC, result_value

EXACT_METRIC = "Exact/tv_pi_r_s0"
FALLBACK_METRIC = "Loss/q_r"      # ranks --no-exact trials while no residual is logged


def search_space(fast: bool, exact: bool) -> tuple[EmpoConfig, int]:
    """(param_space, iterations). Exact figures come at iterations k, 2k, ..., and the run
    stops on one of them."""
    if fast:
        lrs, warmups, k, iterations, per_iteration = [3e-4, 1e-3], [4], 2, 4, 8
    else:
        lrs, warmups, k, iterations, per_iteration = [3e-4, 1e-3, 3e-3], [200, 500], 25, 300, 32
    # Derived values read the trial's resolved config (a function of the spec is deprecated)
    same_lr = tune.sample_from(lambda config: config["lr_v_h_e"])
    same_warmup = tune.sample_from(lambda config: config["warmup_v_h_e_steps"])
    config = (EmpoConfig()
              .environment("rllib_empo/RockGate-v0")
              .env_runners(num_env_runners=0)
              .training(beta_r=10.0, updates_per_iteration=per_iteration,
                        lr_v_h_e=tune.grid_search(lrs), lr_x_h=same_lr, lr_q_r=same_lr,
                        warmup_v_h_e_steps=tune.grid_search(warmups),
                        warmup_x_h_steps=same_warmup, warmup_q_r_steps=same_warmup,
                        beta_r_rampup_steps=tune.sample_from(
                            lambda config: 2 * config["warmup_v_h_e_steps"]),
                        num_training_steps=iterations * per_iteration,
                        exact_eval_interval=k if exact else 0)
              .debugging(seed=0))
    return config, iterations


def ranking_metric(results, exact: bool) -> str:
    """The exact figure when the trials evaluate; else the convergence residual if every
    trial's last result has it, else the Q_r loss."""
    if exact:
        return EXACT_METRIC
    if all(result_value(r.metrics, CONVERGENCE_METRIC) is not None for r in results):
        return CONVERGENCE_METRIC
    return FALLBACK_METRIC


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default=os.path.join(os.getcwd(), "runs", "tune"),
                        help="Tune storage_path (absolute; trials chdir into their own dirs)")
    parser.add_argument("--name", default="rock_gate_sweep", help="experiment name")
    parser.add_argument("--address", default=None, help="existing Ray cluster (default: local)")
    parser.add_argument("--no-exact", action="store_true",
                        help="no exact evaluation: rank by the convergence residual")
    args = parser.parse_args(argv)
    fast = os.environ.get("RLLIB_EMPO_FAST") == "1"
    exact = not args.no_exact
    if args.address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=args.address)             # None: the RAY_ADDRESS cluster
    else:
        ray.init(num_cpus=2, include_dashboard=False)

    param_space, iterations = search_space(fast, exact)
    t0 = time.perf_counter()
    tuner = tune.Tuner(
        Empo,                                       # or the registered name "EMPO"
        param_space=param_space,
        # Tune checks that every result has the metric: the NaN placeholders before the
        # first evaluation (EmpoCallbacks) make that hold for the exact figure.
        tune_config=tune.TuneConfig(metric=EXACT_METRIC, mode="min") if exact else None,
        run_config=tune.RunConfig(
            name=args.name, storage_path=os.path.abspath(args.storage), verbose=0,
            stop={"training_iteration": iterations},
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True)),
    )
    results = tuner.fit()
    seconds = time.perf_counter() - t0
    if results.errors:
        raise SystemExit(f"{len(results.errors)} trial(s) failed: {results.errors[0]}")

    metric = ranking_metric(results, exact)

    def score(r) -> float:
        value = result_value(r.metrics, metric)
        return math.inf if value is None else value

    def hyper(r) -> str:
        c = r.config
        return f"lr {c['lr_v_h_e']:.0e}, warm-up {c['warmup_v_h_e_steps']} updates per stage"

    print(f"{len(results)} trials, {iterations} iterations each, {seconds:.0f} s, "
          f"ranked by {metric} (last result, lower is better):")
    ranked = sorted(results, key=score)
    for r in ranked:
        print(f"  {score(r):.4f}  {hyper(r)}")
    best = ranked[0]
    print(f"best trial: {hyper(best)}")
    for key, value in (best.metrics.get("Exact") or {}).items():
        print(f"  {key:22s} {value:.4g}")
    w = best.metrics["Warmup"]
    print(f"  ended in stage {w['stage']} after {w['num_updates']} learner updates")
    print(f"checkpoint: {best.checkpoint.path}")
    print(f"tensorboard --logdir {results.experiment_path}")


if __name__ == "__main__":
    main()
