"""Where the time goes: cProfile of the sampling path and of one learner update.

    python -m benchmarks.profiling sampling [--world rock_gate] [--calls 10]
    python -m benchmarks.profiling learner [--batch 64] [--updates 200] [--chunk 8]
    python -m benchmarks.profiling exact [--family room --size 10]

Prints the CPU time per step / update without the profiler, then the share of named parts
(cumulative time of the function that is the part's entry point) under the profiler, then
the top functions. cProfile inflates pure-Python code relative to torch kernels, so read the
shares as an upper bound for Python-heavy parts.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from benchmarks.common import ensure_ray

# part name -> (file suffix, function name) of its entry point
SAMPLING_PARTS = {
    "RLlib connector pipelines (env-to-module + module-to-env)":
        ("connectors/connector_pipeline_v2.py", "__call__"),
    "  of which env-to-module": ("env_to_module/env_to_module_pipeline.py", "__call__"),
    "module forward_exploration (EmpoRLModule, no eval()/train() toggles)":
        ("rllib_empo/module.py", "forward_exploration"),
    "  of which EmpoRLModule._act": ("rllib_empo/module.py", "_act"),
    "nn.Module.train/eval anywhere": ("torch/nn/modules/module.py", "train"),
    "vector env step (gymnasium, incl. EmpoEnv.step)": ("env/env_runner.py", "_try_env_step"),
    "  of which EmpoEnv.step": ("rllib_empo/env.py", "step"),
    "  of which TableBuilder.row_sum": ("rllib_empo/tables.py", "row_sum"),
    "  of which TableBuilder.row_sampled_humans": ("rllib_empo/tables.py", "row_sampled_humans"),
    "RLlib metrics (MetricsLogger.log_time)": ("metrics/metrics_logger.py", "log_time"),
    "RLlib metrics (MetricsLogger.log_value)": ("metrics/metrics_logger.py", "log_value"),
    "episode bookkeeping (SingleAgentEpisode.add_env_step)": ("env/single_agent_episode.py",
                                                              "add_env_step"),
    "EmpoEnvRunner.sample_rows: stack rows": ("rllib_empo/tables.py", "stack_rows"),
}
LEARNER_PARTS = {
    "TransitionBuffer.sample": ("rllib_empo/buffer.py", "sample"),
    "LearnerGroup.update (all below)": ("learner/learner_group.py", "update"),
    "  batch -> torch tensors": ("utils/torch_utils.py", "convert_to_torch_tensor"),
    "  forward_train (predictions of 5 nets)": ("rllib_empo/module.py", "_forward_train"),
    "  compute_targets (target nets, model-based sums)": ("rllib_empo/targets.py",
                                                          "compute_targets"),
    "    of which V_h^e forwards": ("rllib_empo/module.py", "v_h_e_values"),
    "  backward": ("torch/_tensor.py", "backward"),
    "  postprocess_gradients (grad clip)": ("core/learner/learner.py", "postprocess_gradients"),
    "  apply_gradients (5 Adam steps)": ("rllib_empo/learner.py", "apply_gradients"),
    "  metrics reduce per update": ("metrics/metrics_logger.py", "reduce"),
    "  metrics log_value": ("metrics/metrics_logger.py", "log_value"),
    "Algorithm.metrics.aggregate": ("metrics/metrics_logger.py", "aggregate"),
}
EXACT_PARTS = {
    "StateGraph (enumeration)": ("rllib_empo/statespace.py", "__init__"),
    "  world.transition_probabilities (checked)": ("rllib_empo/world.py", "checked_transitions"),
    "  level order": ("rllib_empo/statespace.py", "_level_order"),
    "goal spaces": ("rllib_empo/statespace.py", "_goal_spaces"),
    "phase 1 (BoltzmannHumanPrior)": ("rllib_empo/humans.py", "_solve_phase1"),
    "phase 2 (exact.solve)": ("rllib_empo/exact.py", "solve"),
}


def parts_report(stats: pstats.Stats, parts: dict, total: float, per: int, unit: str) -> None:
    table = stats.stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    print(f"\n{'part':62s} {'share':>6s} {'ms/' + unit:>9s}")
    for label, (suffix, func) in parts.items():
        ct = sum(v[3] for (f, _, n), v in table.items() if f.endswith(suffix) and n == func)
        print(f"{label:62s} {100 * ct / total:5.1f}% {1000 * ct / per:9.3f}")


def profile(fn, n: int):
    pr = cProfile.Profile()
    t0 = time.process_time()
    pr.enable()
    for _ in range(n):
        fn()
    pr.disable()
    return pstats.Stats(pr), time.process_time() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("sampling", "learner", "exact"))
    ap.add_argument("--world", default="rock_gate")
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--updates", type=int, default=200)
    ap.add_argument("--chunk", type=int, default=1,
                    help="learner: updates per learner call (algo._update_chunk)")
    ap.add_argument("--family", default="room")
    ap.add_argument("--size", type=int, default=10)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)

    if args.what == "exact":
        from benchmarks.scaling import _exact_child
        stats, cpu = profile(lambda: _exact_child(args.family, args.size, in_process=True), 1)
        parts_report(stats, EXACT_PARTS, stats.total_tt, 1, "solve")
    elif args.what == "sampling":
        ensure_ray()
        from benchmarks.sampling import sampling_config
        algo = sampling_config(args.world, 0, 1, 200).build_algo()
        er = algo.env_runner_group.local_env_runner
        for _ in range(3):
            er.sample_rows()
        t0 = time.process_time()
        steps = sum(len(er.sample_rows()[0]["obs"]) for _ in range(args.calls))
        cpu = time.process_time() - t0
        print(f"{args.world}: {1e3 * cpu / steps:.3f} ms CPU per env step without the profiler "
              f"({steps / cpu:,.0f} steps per CPU-second)")
        stats, _ = profile(lambda: er.sample_rows(), args.calls)
        parts_report(stats, SAMPLING_PARTS, stats.total_tt, steps, "step")
        algo.stop()
    else:
        ensure_ray()
        from benchmarks.learner import fill_buffer, learner_config
        algo = learner_config(args.batch).build_algo()
        fill_buffer(algo, 2000)
        algo._update_stats = {}
        from benchmarks.learner import update_fn
        fn = update_fn(algo, args.chunk)
        n = max(args.updates // args.chunk, 1) * args.chunk
        fn(max(10, args.chunk))
        t0 = time.process_time()
        fn(n)
        cpu = time.process_time() - t0
        print(f"batch {args.batch}, {args.chunk} per learner call: {1e3 * cpu / n:.2f} ms CPU per "
              f"update without the profiler ({n / cpu:.0f} updates per CPU-second)")
        stats, _ = profile(lambda: fn(n), 1)
        args.updates = n
        parts_report(stats, LEARNER_PARTS, stats.total_tt, args.updates, "update")
        algo.stop()
    print()
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
