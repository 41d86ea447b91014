"""Rollouts on many EnvRunners: connect to a Ray cluster (or start a local one), train with
N remote EnvRunners and report throughput.

    python examples/cluster_rollouts.py --address auto --num-env-runners 32
    python examples/cluster_rollouts.py --num-env-runners 2        # local Ray

Reports:

- env steps per second over the whole ``train()`` calls, and while sampling only;
- what the replay memory holds: rows (one per env step, 12 bytes: its table's slot and a
  weight), the distinct states and successor tables stored once each, and its bytes per
  transition (``algo.replay.sizes()``);
- the share of each iteration spent sampling vs learning, from ``result["timers"]``
  (RLlib reports them as moving averages; ``IterationTimes`` recovers each iteration's own
  seconds).

Each EnvRunner turns its episodes into flat numpy rows itself (``EmpoEnvRunner.sample_rows``),
so only arrays cross the network. On a cluster every node must be able to import
``rllib_empo`` (``pip install`` it on the nodes, or use a runtime_env).

With RLLIB_EMPO_FAST=1 (CI): 1 EnvRunner, 3 iterations.
"""
from __future__ import annotations

import argparse
import os
import time

import ray

from rllib_empo import EmpoConfig
from rllib_empo.algorithm.callbacks import IterationTimes
from rllib_empo.algorithm.env import env_id
from rllib_empo.worlds import WORLDS


def main(argv=None) -> None:
    fast = os.environ.get("RLLIB_EMPO_FAST") == "1"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--address", default=None,
                   help="address of a running Ray cluster ('auto' or host:port); default: "
                        "start a local Ray")
    p.add_argument("--num-env-runners", type=int, default=1 if fast else 2)
    defaults = EmpoConfig()
    p.add_argument("--num-envs-per-env-runner", type=int, default=defaults.num_envs_per_env_runner)
    p.add_argument("--rollout-fragment-length", type=int, default=defaults.rollout_fragment_length)
    p.add_argument("--iterations", type=int, default=3 if fast else 20)
    p.add_argument("--world", default="rock_gate", choices=sorted(WORLDS))
    args = p.parse_args(argv)

    if args.address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=args.address)             # None: the RAY_ADDRESS cluster
    else:
        # Logical CPUs: one per EnvRunner plus the driver, even on a smaller machine.
        ray.init(num_cpus=args.num_env_runners + 1, include_dashboard=False)
    print(f"cluster: {len(ray.nodes())} node(s), {ray.cluster_resources().get('CPU', 0):g} CPUs")

    config = (EmpoConfig()
              .environment(env_id(args.world))
              .env_runners(num_env_runners=args.num_env_runners,
                           num_envs_per_env_runner=args.num_envs_per_env_runner,
                           rollout_fragment_length=args.rollout_fragment_length)
              .training(warmup_v_h_e_steps=50, warmup_x_h_steps=50, warmup_q_r_steps=50,
                        beta_r_rampup_steps=100)
              .fault_tolerance(restart_failed_env_runners=False))
    t0 = time.perf_counter()
    algo = config.build_algo()
    print(f"built with {args.num_env_runners} EnvRunner(s) x {args.num_envs_per_env_runner} "
          f"env(s) in {time.perf_counter() - t0:.1f} s")

    times = IterationTimes()          # this iteration's seconds from RLlib's smoothed timers
    wall, steps, last_steps = 0.0, 0, 0
    spent = {"sampling_s": 0.0, "learning_s": 0.0, "training_step_s": 0.0}
    for i in range(args.iterations):
        t = time.perf_counter()
        result = algo.train()
        dt = time.perf_counter() - t
        total = int(result.get("num_env_steps_sampled_lifetime", 0))
        new, last_steps = total - last_steps, total
        own = times(result)
        if i > 0:                                    # the first iteration warms caches up
            wall += dt
            steps += new
            for k in spent:
                spent[k] += own.get(k, 0.0)
        print(f"iter {i + 1:3d}: {new} env steps in {dt:.2f} s (sampling "
              f"{own.get('sampling_s', 0):.2f} s, learning {own.get('learning_s', 0):.2f} s), "
              f"stage {result['Warmup']['stage']}, {result['Warmup']['num_updates']} updates")

    sizes = algo.replay.sizes()
    print("--- report (iterations 2..) ---")
    if wall > 0:
        print(f"env steps/s, whole train() calls:   {steps / wall:,.0f}")
    if spent["sampling_s"] > 0:
        print(f"env steps/s while sampling:         {steps / spent['sampling_s']:,.0f}")
    print(f"replay memory:                      {sizes['rows']:,} rows, {sizes['states']:,} "
          f"states, {sizes['tables']:,} tables, {sizes['bytes_total'] / 2**20:,.1f} MiB "
          f"({sizes['bytes_per_transition']:,.0f} bytes per transition)")
    if spent["training_step_s"] > 0:
        share_s = spent["sampling_s"] / spent["training_step_s"]
        share_l = spent["learning_s"] / spent["training_step_s"]
        print(f"share of training_step time:        sampling {100 * share_s:.0f}%, learning "
              f"{100 * share_l:.0f}%, other {100 * max(0.0, 1 - share_s - share_l):.0f}%")
    algo.stop()


if __name__ == "__main__":
    main()
