"""Where the time goes: cProfile of the sampling path, of the learner, and of the exact solver.

    python -m benchmarks.profiling sampling [--world rock_gate] [--calls 10]
    python -m benchmarks.profiling learner [--world rock_gate] [--updates 400] [--chunk 8]
    python -m benchmarks.profiling exact [--family room --size 10]

Prints the CPU time per step / update without the profiler, then the share of named parts
(cumulative time of the function that is the part's entry point; indented parts are inside
the one above) under the profiler, then the top functions. cProfile inflates pure-Python
code relative to torch kernels, so read the shares as an upper bound for Python-heavy parts.

``learner`` profiles the RLlib path (``algo._update_chunk``) and the plain-torch loop of
``benchmarks.learner.PlainLoop`` on the same module and replay memory, and splits the RLlib
path's time into the work both paths do (:data:`LEARNER_WORK`) and what only RLlib does
(:data:`LEARNER_RLLIB`), ranked; :func:`learner_parts` is what ``benchmarks/learner.py``
records.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from benchmarks.common import ensure_ray

# A part: label -> [(file suffix, function name[, caller[, "own"]])]; its time is the sum of
# the cumulative times of those entry points -- only the calls from ``caller`` when one is
# given ("file fragment" or "file fragment(function)"), and only the function's own time
# (cProfile's tottime, without what it calls) with "own".
SAMPLING_PARTS = {
    "RLlib connector pipelines (env-to-module + module-to-env)":
        [("connectors/connector_pipeline_v2.py", "__call__")],
    "  of which env-to-module": [("env_to_module/env_to_module_pipeline.py", "__call__")],
    "module forward_exploration (EmpoRLModule, no eval()/train() toggles)":
        [("rllib_empo/algorithm/module.py", "forward_exploration")],
    "  of which EmpoRLModule._act": [("rllib_empo/algorithm/module.py", "_act")],
    "nn.Module.train/eval anywhere": [("torch/nn/modules/module.py", "train")],
    "vector env step (gymnasium, incl. EmpoEnv.step)": [("env/env_runner.py", "_try_env_step")],
    "  of which EmpoEnv.step": [("rllib_empo/algorithm/env.py", "step")],
    "    of which TableBuilder.table_sum": [("rllib_empo/algorithm/tables.py", "table_sum")],
    "    of which TableBuilder.table_sampled_humans":
        [("rllib_empo/algorithm/tables.py", "table_sampled_humans")],
    "RLlib metrics (MetricsLogger.log_time)": [("metrics/metrics_logger.py", "log_time")],
    "RLlib metrics (MetricsLogger.log_value)": [("metrics/metrics_logger.py", "log_value")],
    "episode bookkeeping (SingleAgentEpisode.add_env_step)":
        [("env/single_agent_episode.py", "add_env_step")],
    "EmpoEnvRunner.sample_rows: the sample's entries (TableBuilder.entries)":
        [("rllib_empo/algorithm/tables.py", "entries")],
    "EmpoEnvRunner.sample_rows: packing (tables.pack_sample)":
        [("rllib_empo/algorithm/tables.py", "pack_sample")],
}
# The work both the RLlib path and the plain-torch loop do.
LEARNER_WORK = {
    "replay sample (ReplayStore.sample)": [("rllib_empo/algorithm/store.py", "sample")],
    "StepPlans (WarmupSchedule.plan)": [("rllib_empo/theory/schedule.py", "plan")],
    "rows -> Batch (batch.expand)": [("rllib_empo/algorithm/batch.py", "expand")],
    "targets (targets.compute_targets)": [("rllib_empo/algorithm/targets.py", "compute_targets")],
    "  of which TargetCache.ensure (target networks)":
        [("rllib_empo/algorithm/batch.py", "ensure")],
    "  of which V_h^e at successors": [("rllib_empo/algorithm/batch.py", "v_h_e_at_successors")],
    "losses (targets.value_loss)": [("rllib_empo/algorithm/targets.py", "value_loss")],
    "predictions (forward passes of the 5 networks)":
        [("rllib_empo/algorithm/module.py", f"{n}_values", "module.py") for n in
         ("q_r", "v_h_e", "x_h", "u_r", "v_r")]
        + [("rllib_empo/algorithm/module.py", f"{n}_values", "benchmarks/learner.py") for n in
           ("q_r", "v_h_e", "x_h", "u_r", "v_r")],
    "backward": [("torch/_tensor.py", "backward")],
    "gradient clipping per network (logging the norms on a call's last update)":
        [("rllib_empo/algorithm/learner.py", "postprocess_gradients_for_module"),
         ("benchmarks/learner.py", "clip")],
    "learning rates and finiteness per update (EMPO's _begin_step, _gradients_finite)":
        [("rllib_empo/algorithm/learner.py", "_begin_step"),
         ("rllib_empo/algorithm/learner.py", "_gradients_finite")],
    "zero_grad": [("torch/optim/optimizer.py", "zero_grad")],
    "Adam step": [("torch/optim/adam.py", "step")],
    "target copies": [("rllib_empo/algorithm/learner.py", "_sync_targets"),
                      ("benchmarks/learner.py", "sync")],
}
# What only the RLlib path does (disjoint call trees, ranked in the report).
LEARNER_RLLIB = {
    "minibatch slicing (MiniBatchCyclicIterator: SampleBatch slices, tree.map_structure)":
        [("rllib/utils/minibatch_utils.py", "__iter__")],
    "per-minibatch step counters (Learner._log_steps_trained_metrics)":
        [("core/learner/learner.py", "_log_steps_trained_metrics")],
    "Prometheus counters (Learner._log_metrics)": [("core/learner/learner.py", "_log_metrics")],
    "metrics reduce at the end of each learner call (MetricsLogger.reduce)":
        [("metrics/metrics_logger.py", "reduce", "core/learner/learner.py")],
    "driver: aggregating the learner results (MetricsLogger.aggregate)":
        [("metrics/metrics_logger.py", "aggregate", "rllib_empo/algorithm/empo.py")],
    "EMPO's loss statistics on a call's last update (MetricsLogger.log_value)":
        [("metrics/metrics_logger.py", "log_value",
          "rllib_empo/algorithm/learner.py(compute_loss_for_module)")],
    "total-loss and lr logging, lr bookkeeping (after_gradient_based_update, log_value)":
        [("core/learner/torch/torch_learner.py", "after_gradient_based_update"),
         ("metrics/metrics_logger.py", "log_value", "core/learner/learner.py(update)")],
    "batch set-up (TrainingData, _make_batch_if_necessary, slicing flags)":
        [("core/learner/training_data.py", "validate"),
         ("core/learner/training_data.py", "solve_refs"),
         ("core/learner/learner.py", "_make_batch_if_necessary"),
         ("core/learner/learner.py", "_set_slicing_by_batch_id")],
    "driver: MultiAgentBatch / SampleBatch of the sampled rows":
        [("policy/sample_batch.py", "__init__", "rllib_empo/algorithm/empo.py")],
    "off-policyness check (TorchLearner._compute_off_policyness)":
        [("core/learner/torch/torch_learner.py", "_compute_off_policyness")],
    "EMPO's RLlib hooks' own lines (compute_loss_for_module, forward_train, apply_gradients, "
    "...; the per-update loss finiteness check)":
        [(f, n, None, "own") for f, n in (
            ("rllib_empo/algorithm/learner.py", "compute_loss_for_module"),
            ("rllib_empo/algorithm/learner.py", "<dictcomp>"),
            ("rllib_empo/algorithm/learner.py", "_expand"),
            ("rllib_empo/algorithm/learner.py", "apply_gradients"),
            ("rllib_empo/algorithm/learner.py", "before_gradient_based_update"),
            ("rllib_empo/algorithm/module.py", "forward_train"),
            ("rllib_empo/algorithm/module.py", "_forward_train"))]
        + [("~", "<built-in method torch.isfinite>",
            "rllib_empo/algorithm/learner.py(compute_loss_for_module)")],
    "RLlib's update wrappers' own lines (gradient dicts, param.grad loop, dispatch)":
        [(f, n, None, "own") for f, n in (
            ("core/learner/learner_group.py", "update"), ("core/learner/learner.py", "update"),
            ("core/learner/torch/torch_learner.py", "_update"),
            ("core/learner/torch/torch_learner.py", "_uncompiled_update"),
            ("core/learner/learner.py", "compute_losses"),
            ("core/learner/torch/torch_learner.py", "compute_gradients"),
            ("core/learner/learner.py", "postprocess_gradients"),
            ("core/learner/torch/torch_learner.py", "apply_gradients"),
            ("core/rl_module/rl_module.py", "forward_train"),
            ("core/rl_module/multi_rl_module.py", "_forward_train"),
            ("core/learner/learner.py", "<dictcomp>"),
            ("core/learner/torch/torch_learner.py", "<dictcomp>"),
            ("core/rl_module/multi_rl_module.py", "<dictcomp>"))],
}
EXACT_PARTS = {
    "StateGraph (enumeration)": [("rllib_empo/exact/statespace.py", "__init__")],
    "  world.transition_probabilities (checked)":
        [("rllib_empo/worlds/protocol.py", "checked_transitions")],
    "  level order": [("rllib_empo/exact/statespace.py", "_level_order")],
    "goal spaces": [("rllib_empo/exact/statespace.py", "_goal_spaces")],
    "phase 1 (BoltzmannHumanPrior)": [("rllib_empo/exact/priors.py", "_solve_phase1")],
    "phase 2 (exact.solve)": [("rllib_empo/exact/solver.py", "solve")],
}


def part_seconds(stats: pstats.Stats, entries) -> float:
    """Summed cumulative seconds of a part's entry points (see the part tables)."""
    table = stats.stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    total = 0.0
    for entry in entries:
        suffix, func = entry[0], entry[1]
        caller = entry[2] if len(entry) > 2 else None
        own = len(entry) > 3 and entry[3] == "own"
        for (f, _, n), (_, _, tt, ct, callers) in table.items():
            if not (f.endswith(suffix) and n == func):
                continue
            if caller is None:
                total += tt if own else ct
                continue
            want_file, _, want_func = caller.partition("(")
            want_func = want_func.rstrip(")")
            total += sum(v[3] for (cf, _, cn), v in callers.items()
                         if want_file in cf and (not want_func or cn == want_func))
    return total


PACKAGES = (("rllib_empo/", "rllib_empo (Python)"), ("benchmarks/", "the plain loop (Python)"),
            ("ray/rllib/", "RLlib (Python)"), ("ray/util/metrics", "Ray Prometheus metrics"),
            ("site-packages/ray/", "Ray, other (Python)"), ("site-packages/torch/", "torch (Python)"),
            ("site-packages/tree/", "dm-tree (Python)"), ("site-packages/numpy/", "numpy (Python)"))


def own_time_by_package(stats: pstats.Stats, per: int) -> dict:
    """ms per ``per`` of each package's own time (tottime); built-ins (torch's and numpy's C
    functions included) apart, named by what calls them most: RLlib or not."""
    out: dict = {}
    for (f, _, _), (_, _, tt, _, callers) in stats.stats.items():
        if f == "~":
            rllib = sum(v[2] for (cf, _, _), v in callers.items() if "ray/" in cf)
            out["built-ins called by Ray/RLlib"] = out.get("built-ins called by Ray/RLlib", 0.0) + rllib
            out["built-ins (torch ops ...), other callers"] = (
                out.get("built-ins (torch ops ...), other callers", 0.0) + tt - rllib)
            continue
        name = next((label for frag, label in PACKAGES if frag in f), "other Python")
        out[name] = out.get(name, 0.0) + tt
    return {k: 1000 * v / per for k, v in out.items()}


def parts_report(stats: pstats.Stats, parts: dict, total: float, per: int, unit: str) -> list:
    rows = []
    print(f"\n{'part':78s} {'share':>6s} {'ms/' + unit:>9s}")
    for label, entries in parts.items():
        ct = part_seconds(stats, entries)
        rows.append({"part": label.strip(), "nested": label.startswith(" "),
                     "share": ct / total if total else 0.0, "ms": 1000 * ct / per})
        print(f"{label:78s} {100 * ct / total:5.1f}% {1000 * ct / per:9.3f}")
    return rows


def profile(fn, n: int):
    pr = cProfile.Profile()
    t0 = time.process_time()
    pr.enable()
    for _ in range(n):
        fn()
    pr.disable()
    return pstats.Stats(pr), time.process_time() - t0


def learner_parts(world: str = "rock_gate", updates: int = 400, fill: int = 20_000,
                  chunk: int = 8, batch_size: int = 64, verbose: bool = False) -> dict:
    """cProfile of the RLlib path and of the plain-torch loop (module docstring): ms per
    update of each, RLlib's time beyond the loop, and that time's parts, ranked."""
    from benchmarks.learner import PlainLoop, build, update_fn
    algo = build(world, batch_size, fill)
    try:
        rllib, plain = update_fn(algo, chunk), PlainLoop(algo).run
        n = max(updates // chunk, 1) * chunk
        rllib(2 * chunk)
        plain(2 * chunk)
        cpu = {"rllib": 0.0, "plain": 0.0}
        prof = {"rllib": cProfile.Profile(), "plain": cProfile.Profile()}
        rounds = max(n // (4 * chunk), 1)          # interleaved, so both see the same load
        per = n // rounds // chunk * chunk
        n = per * rounds
        for _ in range(rounds):
            for name, fn in (("rllib", rllib), ("plain", plain)):
                t0 = time.process_time()
                fn(per)
                cpu[name] += time.process_time() - t0
        for _ in range(rounds):
            for name, fn in (("rllib", rllib), ("plain", plain)):
                prof[name].enable()
                fn(per)
                prof[name].disable()
        cpu = {k: 1000 * v / n for k, v in cpu.items()}
        st_r, st_p = pstats.Stats(prof["rllib"]), pstats.Stats(prof["plain"])
    finally:
        algo.stop()
    t_r, t_p = st_r.total_tt, st_p.total_tt
    own = {name: own_time_by_package(st, n) for name, st in (("rllib", st_r), ("plain", st_p))}
    if verbose:
        print(f"{world}, batch {batch_size}, {chunk} per learner call: without the profiler "
              f"{cpu['rllib']:.2f} ms CPU per update (RLlib path), {cpu['plain']:.2f} ms "
              f"(plain-torch loop)")
        print("\nRLlib path, the work both paths do:")
    work = parts_report(st_r, LEARNER_WORK, t_r, n, "update") if verbose else [
        {"part": k.strip(), "nested": k.startswith(" "), "ms": 1000 * part_seconds(st_r, v) / n}
        for k, v in LEARNER_WORK.items()]
    if verbose:
        print("\nRLlib path, what only RLlib does:")
    extra = parts_report(st_r, LEARNER_RLLIB, t_r, n, "update") if verbose else [
        {"part": k, "ms": 1000 * part_seconds(st_r, v) / n} for k, v in LEARNER_RLLIB.items()]
    plain_work = sum(1000 * part_seconds(st_p, v) / n for k, v in LEARNER_WORK.items()
                     if not k.startswith(" "))
    rllib_work = sum(p["ms"] for p in work if not p["nested"])
    listed = sum(p["ms"] for p in extra)
    overhead = 1000 * (t_r - t_p) / n
    other = 1000 * t_r / n - rllib_work - listed
    ranked = sorted(extra, key=lambda p: -p["ms"]) + [{
        "part": "not attributed above (EMPO's learner hooks' own lines, other calls)",
        "ms": other}]
    ranked.sort(key=lambda p: -p["ms"])
    out = {"world": world, "updates": n, "chunk": chunk, "batch_size": batch_size,
           "cpu_ms_rllib": cpu["rllib"], "cpu_ms_plain": cpu["plain"],
           "rllib_ms": 1000 * t_r / n, "plain_ms": 1000 * t_p / n, "overhead_ms": overhead,
           "work_ms_rllib": rllib_work, "work_ms_plain": plain_work,
           "work": work, "overhead_parts": ranked, "own_time_ms": own}
    if verbose:
        print(f"\nunder the profiler: RLlib path {out['rllib_ms']:.2f} ms per update, plain loop "
              f"{out['plain_ms']:.2f} ms, difference {overhead:.2f} ms; the shared work "
              f"{rllib_work:.2f} ms in the RLlib path, {plain_work:.2f} ms in the loop")
        print("RLlib's own time, ranked:")
        for p in ranked:
            print(f"  {p['ms']:7.3f} ms  {p['part']}")
        print("\nown time (cProfile tottime) by package, ms per update: RLlib path / plain loop")
        for k in sorted(set(own["rllib"]) | set(own["plain"]), key=lambda k: -own["rllib"].get(k, 0)):
            print(f"  {own['rllib'].get(k, 0):7.3f} / {own['plain'].get(k, 0):7.3f}  {k}")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("sampling", "learner", "exact"))
    ap.add_argument("--world", default="rock_gate")
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--updates", type=int, default=400)
    ap.add_argument("--fill", type=int, default=20_000, help="learner: replay rows")
    ap.add_argument("--chunk", type=int, default=8,
                    help="learner: updates per learner call (algo._update_chunk)")
    ap.add_argument("--family", default="room")
    ap.add_argument("--size", type=int, default=10)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)

    if args.what == "learner":
        ensure_ray()
        learner_parts(args.world, args.updates, args.fill, args.chunk, args.batch, verbose=True)
        return
    if args.what == "exact":
        from benchmarks.scaling import _exact_child
        stats, cpu = profile(lambda: _exact_child(args.family, args.size, in_process=True), 1)
        parts_report(stats, EXACT_PARTS, stats.total_tt, 1, "solve")
    else:
        ensure_ray()
        from benchmarks.sampling import sample_steps, sampling_config
        algo = sampling_config(args.world, 0, 1, 200).build_algo()
        er = algo.env_runner_group.local_env_runner
        for _ in range(3):
            er.sample_rows()
        t0 = time.process_time()
        steps = sum(sample_steps(er.sample_rows()[0]) for _ in range(args.calls))
        cpu = time.process_time() - t0
        print(f"{args.world}: {1e3 * cpu / steps:.3f} ms CPU per env step without the profiler "
              f"({steps / cpu:,.0f} steps per CPU-second)")
        stats, _ = profile(lambda: er.sample_rows(), args.calls)
        parts_report(stats, SAMPLING_PARTS, stats.total_tt, steps, "step")
        algo.stop()
    print()
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
