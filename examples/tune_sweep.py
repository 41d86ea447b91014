"""A small Ray Tune search on rock_gate: learning rates x warm-up lengths, scored by the
exact solution.

Every trial logs ``Exact/*`` figures (``exact_eval_interval``: the learned policy against
the exact solution of rock_gate) and the search keeps the trial with the smallest
``Exact/tv_pi_r_s0`` (total-variation distance of pi_r at the initial state). It prints the
best trial, its hyperparameters and figures, and where its checkpoint and TensorBoard
events are (``tensorboard --logdir <experiment dir>`` shows one run per trial, with the
exact ``Warmup/*``, ``Loss/*`` ... tags over learner updates beside Tune's own ``ray/tune/*``).

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

Usage: ``python examples/tune_sweep.py [--storage DIR] [--address ADDR]``; with
RLLIB_EMPO_FAST=1 (CI) 2 trials x 2 iterations.
"""
from __future__ import annotations

import argparse
import os

import ray
from ray import tune

from rllib_empo import Empo, EmpoConfig

METRIC = "Exact/tv_pi_r_s0"


def search_space(fast: bool) -> tuple[EmpoConfig, int]:
    """(param_space, iterations). Exact figures are logged in iterations k, 2k, ...
    so the run stops on one of them."""
    if fast:
        lrs, warmups, k, iterations = [3e-4, 1e-3], [10], 1, 2
    else:
        lrs, warmups, k, iterations = [3e-4, 1e-3, 3e-3], [100, 300], 20, 240
    same_lr = tune.sample_from(lambda spec: spec.config.lr_v_h_e)
    same_warmup = tune.sample_from(lambda spec: spec.config.warmup_v_h_e_steps)
    config = (EmpoConfig()
              .environment("rllib_empo/RockGate-v0")
              .env_runners(num_env_runners=0)
              .training(beta_r=10.0,
                        lr_v_h_e=tune.grid_search(lrs), lr_x_h=same_lr, lr_q_r=same_lr,
                        warmup_v_h_e_steps=tune.grid_search(warmups),
                        warmup_x_h_steps=same_warmup, warmup_q_r_steps=same_warmup,
                        beta_r_rampup_steps=tune.sample_from(
                            lambda spec: 2 * spec.config.warmup_v_h_e_steps),
                        exact_eval_interval=k)
              .debugging(seed=0))
    return config, iterations


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default=os.path.join(os.getcwd(), "runs", "tune"),
                        help="Tune storage_path (absolute; trials chdir into their own dirs)")
    parser.add_argument("--name", default="rock_gate_sweep")
    parser.add_argument("--address", default=None, help="existing Ray cluster (default: local)")
    args = parser.parse_args(argv)
    fast = os.environ.get("RLLIB_EMPO_FAST") == "1"
    if args.address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=args.address)             # None: the RAY_ADDRESS cluster
    else:
        ray.init(num_cpus=2, include_dashboard=False)

    param_space, iterations = search_space(fast)
    tuner = tune.Tuner(
        Empo,                                       # or the registered name "EMPO"
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=METRIC, mode="min"),
        run_config=tune.RunConfig(
            name=args.name, storage_path=os.path.abspath(args.storage), verbose=0,
            stop={"training_iteration": iterations},
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True)),
    )
    results = tuner.fit()
    if results.errors:
        raise SystemExit(f"{len(results.errors)} trial(s) failed: {results.errors[0]}")

    def hyper(r):
        c = r.config
        return f"lr {c['lr_v_h_e']:.0e}, warm-up {c['warmup_v_h_e_steps']} updates per stage"

    print(f"{len(results)} trials, {iterations} iterations each, scored by {METRIC}:")
    for r in sorted(results, key=lambda r: r.metrics["Exact"]["tv_pi_r_s0"]):
        print(f"  {r.metrics['Exact']['tv_pi_r_s0']:.4f}  {hyper(r)}")
    best = results.get_best_result()
    print(f"best trial: {hyper(best)}")
    for key, value in best.metrics["Exact"].items():
        print(f"  {key:22s} {value:.4g}")
    w = best.metrics["Warmup"]
    print(f"  ended in stage {w['stage']} after {w['num_updates']} learner updates")
    print(f"checkpoint: {best.checkpoint.path}")
    print(f"tensorboard --logdir {results.experiment_path}")


if __name__ == "__main__":
    main()
