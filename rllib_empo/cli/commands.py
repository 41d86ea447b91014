"""The ``rllib-empo`` subcommands (``train``, ``solve``, ``compare``, ``plot``, ``render``) and
the helpers they share; ``rllib_empo.cli`` parses the arguments and dispatches here."""
from __future__ import annotations

import importlib
import json
import os
import sys
import time

import numpy as np
import ray

from rllib_empo.algorithm.empo import Empo, EmpoConfig
from rllib_empo.algorithm.env import (GENERIC_ENV_ID, env_id, env_ids, prior_from_env_config,
                                      world_from_env_config)
from rllib_empo.analysis import plotting
from rllib_empo.analysis.evaluation import exact_fidelity, exact_solution_for
from rllib_empo.analysis.progress import (PROGRESS_FILE, ProgressWriter, read_progress,
                                          read_run_info, write_run_info)
from rllib_empo.analysis.rollout import action_label, make_env, rollout
from rllib_empo.cli.parser import EQUATION_FIELDS, UsageError, _literal
from rllib_empo.exact.solver import solve
from rllib_empo.theory.params import EmpoParams
from rllib_empo.theory.schedule import stage_name
from rllib_empo.worlds import make_world

# ------------------------------------------------------------------ helpers
def _import_modules(modules) -> None:
    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError as err:
            raise UsageError(f"--import {m}: {err}")


def _world_kwargs(items) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--world-arg expects KEY=VALUE, got {item!r}")
        out[key.strip()] = _literal(value)
    return out


def env_spec(args) -> tuple[str, dict]:
    """(env id, env_config) of the world arguments; checks the world builds."""
    kwargs = _world_kwargs(args.world_arg)
    try:
        make_world(args.world, **kwargs)
    except Exception as err:                         # noqa: BLE001 - any bad world argument
        raise UsageError(f"--world {args.world}: {err}")
    env_config = dict(kwargs)
    if args.prior is not None:
        env_config["prior"] = args.prior
    if args.beta_h is not None:
        env_config["beta_h"] = args.beta_h
    if env_id(args.world) in env_ids():
        return env_id(args.world), env_config
    return GENERIC_ENV_ID, {"world": args.world, **env_config}


def _fields(args) -> dict:
    """The EmpoConfig fields given on the command line."""
    out = {k[len("field_"):]: v for k, v in vars(args).items()
           if k.startswith("field_") and v is not None}
    if str(out.get("tensorboard_dir", "")).strip().lower() in ("none", "null"):
        out["tensorboard_dir"] = None
    return out


def build_config(args):
    """The EmpoConfig of a ``train`` command line (validated; UsageError on bad values)."""
    env_id, env_config = env_spec(args)
    fields = _fields(args)
    training = dict(fields)
    if args.train_batch_size is not None:
        training["train_batch_size_per_learner"] = args.train_batch_size
    runners = dict(num_env_runners=args.num_env_runners,
                   num_envs_per_env_runner=args.num_envs_per_env_runner)
    if args.rollout_fragment_length is not None:
        runners["rollout_fragment_length"] = args.rollout_fragment_length
    try:
        config = (EmpoConfig().environment(env_id, env_config=env_config)
                  .env_runners(**runners).training(**training).debugging(seed=args.seed))
        if args.num_env_runners > 0:
            config.fault_tolerance(restart_failed_env_runners=False)
        config.validate()
    except Exception as err:                         # noqa: BLE001 - config mistakes
        raise UsageError(str(err).strip().splitlines()[0] if str(err).strip() else repr(err))
    return config


def _init_ray(args) -> None:
    if ray.is_initialized():
        return
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if getattr(args, "address", None):
        kwargs["address"] = args.address
    elif getattr(args, "num_cpus", None):
        kwargs["num_cpus"] = args.num_cpus
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(**kwargs)


def _checkpoint_dir(path: str) -> str:
    if not os.path.isdir(path):
        raise UsageError(f"checkpoint {path!r} does not exist")
    if os.path.isfile(os.path.join(path, "rllib_checkpoint.json")):
        return os.path.abspath(path)
    nested = os.path.join(path, "checkpoint")         # a run directory
    if os.path.isfile(os.path.join(nested, "rllib_checkpoint.json")):
        return os.path.abspath(nested)
    raise UsageError(f"{path!r} is not an RLlib checkpoint (no rllib_checkpoint.json)")


def _load(path: str):
    return Empo.from_checkpoint(path)


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def format_iteration(result: dict, seconds: float) -> str:
    """One console line of a train() result."""
    w = result.get("Warmup", {})
    stage = int(w.get("stage", 0))
    losses = " ".join(f"{n}={_fmt(float(v))}" for n, v in sorted((result.get("Loss") or {}).items())
                      if v is not None)
    name = stage_name(stage).split(": ", 1)[-1]
    mark = " *" if w.get("stage_transition") else ""
    return (f"iter {int(result.get('training_iteration', 0)):5d} | updates "
            f"{int(w.get('num_updates', 0)):6d} | stage {stage} {name:<17}{mark:2} | beta_r "
            f"{float(w.get('effective_beta_r', 0.0)):6.3f} | loss {losses or '-'} | buffer "
            f"{int((result.get('Buffer') or {}).get('size', 0))} | {seconds:.2f} s")


def _print_figures(figures: dict) -> None:
    width = max(len(k) for k in figures)
    for k, v in figures.items():
        print(f"  {k:<{width}}  {v:.6g}" if isinstance(v, float) else f"  {k:<{width}}  {v}")


# ------------------------------------------------------------------ commands
def cmd_train(args) -> int:
    _import_modules(args.imports)
    config = build_config(args)
    if args.iterations < 1 or (args.updates is not None and args.updates < 1):
        raise UsageError("--iterations and --updates must be >= 1")
    out = os.path.abspath(args.out or os.path.join(
        "runs", f"{args.world}-{time.strftime('%Y%m%d-%H%M%S')}"))
    os.makedirs(out, exist_ok=True)
    if args.field_tensorboard_dir is None:           # not given: into the run directory
        config.training(tensorboard_dir=os.path.join(out, "tensorboard"))
    write_run_info(out, config, argv=sys.argv[1:], world=args.world)
    _init_ray(args)
    algo = config.build_algo()
    print(f"training EMPO on {args.world} -> {out}")
    print(config.format_stages_table(markdown=False))
    ckpt = os.path.join(out, "checkpoint")
    interrupted = False
    try:
        with ProgressWriter(os.path.join(out, PROGRESS_FILE)) as progress:
            i = 0
            while True:
                t0 = time.perf_counter()
                result = algo.train()
                progress.write(result)
                i += 1
                if not args.quiet:
                    print(format_iteration(result, time.perf_counter() - t0), flush=True)
                if args.updates is not None:
                    if result["Warmup"]["num_updates"] >= args.updates:
                        break
                elif i >= args.iterations:
                    break
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: saving a checkpoint")
    algo.save_to_path(ckpt)
    print(f"checkpoint: {ckpt}")
    if config.tensorboard_dir:
        print(f"tensorboard: tensorboard --logdir {config.tensorboard_dir}")
    if args.compare and not interrupted:
        print("compared with the exact solution:")
        _print_figures(exact_fidelity(algo))
    algo.stop()
    return 130 if interrupted else 0


def cmd_solve(args) -> int:
    _import_modules(args.imports)
    env_id, env_config = env_spec(args)
    try:
        params = EmpoParams(**{k: v for k, v in _fields(args).items() if k in EQUATION_FIELDS})
    except ValueError as err:
        raise UsageError(str(err))
    world_cfg = {k: v for k, v in env_config.items() if k not in ("prior", "beta_h")}
    world_cfg.setdefault("world", args.world)
    world = world_from_env_config(world_cfg)
    t0 = time.perf_counter()
    prior = prior_from_env_config(world, {**env_config, "world": args.world}, params.gamma_h)
    t_prior = time.perf_counter() - t0
    t1 = time.perf_counter()
    try:
        sol = solve(world, prior, params, max_states=args.max_states)
    except ValueError as err:
        raise UsageError(f"cannot solve {args.world} exactly: {err}")
    t_solve = time.perf_counter() - t1
    print(sol.summary())
    nonterminal = len(sol.nonterminal_states)
    print(f"states: {sol.num_states} reachable, {nonterminal} non-terminal")
    print(f"time: prior {t_prior:.2f} s, phase 2 {t_solve:.2f} s")
    return 0


def cmd_compare(args) -> int:
    path = _checkpoint_dir(args.checkpoint)
    _init_ray(args)
    algo = _load(path)
    try:
        figures = exact_fidelity(algo)
    except ValueError as err:
        raise UsageError(f"no exact solution for this checkpoint's world: {err}")
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"checkpoint {path}: {algo.num_updates} learner updates, stage "
              f"{algo.schedule.stage(algo.num_updates)}")
        _print_figures(figures)
    algo.stop()
    return 0


def cmd_plot(args) -> int:
    run = args.run
    if not os.path.exists(run):
        raise UsageError(f"{run!r} does not exist")
    run_dir = run if os.path.isdir(run) else os.path.dirname(os.path.abspath(run))
    out = args.out or run_dir
    written = []
    progress_path = run if os.path.isfile(run) else os.path.join(run, "progress.jsonl")
    if os.path.isfile(progress_path):
        try:
            rows = read_progress(progress_path)
        except ValueError as err:
            raise UsageError(str(err))
        info = read_run_info(run_dir)
        if rows:
            written.append(plotting.plot_training_curves(
                rows, os.path.join(out, "training_curves.png"),
                stage_ends=info.get("stage_ends"),
                title=f"EMPO training on {info.get('world', os.path.basename(run_dir))}"))
    ckpt = args.checkpoint
    if ckpt is None and os.path.isdir(run) and os.path.isfile(
            os.path.join(run, "checkpoint", "rllib_checkpoint.json")):
        ckpt = os.path.join(run, "checkpoint")
    if ckpt is not None:
        written += _plot_checkpoint(args, _checkpoint_dir(ckpt), out)
    if not written:
        raise UsageError(f"nothing to plot in {run!r}: no progress.jsonl and no checkpoint")
    for path in written:
        print(path)
    return 0


def _plot_checkpoint(args, ckpt: str, out: str) -> list:
    """Learned vs exact (when the world can be solved) and the heat map (grid worlds)."""
    _init_ray(args)
    algo = _load(ckpt)
    written = []
    try:
        world = algo.world
        grid = hasattr(world, "grid_shape") and callable(getattr(world, "human_cell", None))
        if grid and not 0 <= args.human < len(world.human_agent_indices):
            raise UsageError(f"--human must be in 0..{len(world.human_agent_indices) - 1}")
        try:
            solution = exact_solution_for(algo)
        except Exception as err:                     # noqa: BLE001 - too large, cyclic ...
            print(f"no exact solution ({err}); the heat map uses rollouts of the policy")
            solution = None
        if solution is not None:
            written.append(plotting.plot_learned_vs_exact(
                algo, solution, os.path.join(out, "learned_vs_exact.png")))
            states = solution.nonterminal_states
        else:
            env = make_env(algo)
            states = [s for e in range(args.episodes) for s in rollout(algo, env, seed=e).states]
        if grid:
            written.append(plotting.plot_value_heatmap(
                algo, states, os.path.join(out, f"heatmap_{args.quantity}.png"),
                quantity=args.quantity, human=args.human, solution=solution, world=world))
    finally:
        algo.stop()
    return written


def cmd_render(args) -> int:
    path = _checkpoint_dir(args.checkpoint)
    if args.episodes < 1 or args.max_steps < 1:
        raise UsageError("--episodes and --max-steps must be >= 1")
    _init_ray(args)
    algo = _load(path)
    env = make_env(algo)
    for e in range(args.episodes):
        episode = rollout(algo, env, seed=args.seed + e, max_steps=args.max_steps)
        print(f"=== episode {e + 1} (seed {args.seed + e}) ===")
        for t, step in enumerate(episode.steps):
            print(f"--- t={t}  robot action {action_label(env.world, step.action)}  "
                  f"pi_r={np.array2string(step.probs, precision=2, separator=' ')}")
            print(step.frame)
        print(f"--- t={len(episode.steps)}  (end)")
        print(episode.final_frame)
    algo.stop()
    return 0


COMMANDS = {"train": cmd_train, "solve": cmd_solve, "compare": cmd_compare, "plot": cmd_plot,
            "render": cmd_render}
