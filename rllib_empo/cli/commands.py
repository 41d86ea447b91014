"""The ``rllib-empo`` subcommands (``train``, ``solve``, ``compare``, ``plot``, ``render``) and
the helpers they share; ``rllib_empo.cli`` parses the arguments and dispatches here.

Custom worlds: ``train`` records in ``run.json`` the modules it imported (``--import``, with
the directory each was found in) and the world arguments; ``compare``, ``plot`` and
``render`` import those modules again before they load the run's checkpoint, so a world
registered by such a module loads from any working directory (``--import`` adds more).
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import sys
import time

import gymnasium as gym
import numpy as np
import ray

from rllib_empo.algorithm.empo import Empo, EmpoConfig
from rllib_empo.algorithm.env import GENERIC_ENV_ID, env_id, env_ids, world_from_env_config
from rllib_empo.analysis import plotting
from rllib_empo.analysis.evaluation import compare_to_exact, solve_world
from rllib_empo.analysis.progress import (PROGRESS_FILE, ProgressWriter, read_progress,
                                          read_run_info, write_run_info)
from rllib_empo.analysis.progress_bar import TrainingProgress
from rllib_empo.analysis.rollout import action_label, action_name, make_env, rollout
from rllib_empo.cli.parser import DEFAULT_RUN_FACTOR, EQUATION_FIELDS, UsageError, _literal
from rllib_empo.exact.statespace import TooManyStatesError
from rllib_empo.theory.params import EmpoParams
from rllib_empo.worlds import make_world

#: How ``train --compare`` spaces its evaluations when --exact-eval-interval is not given.
EVALUATIONS_PER_RUN = 20


# ------------------------------------------------------------------ custom worlds
def _import_modules(modules) -> list[dict]:
    """Import ``modules`` (the working directory is searched too, as ``python -m`` does);
    returns ``[{"module": name, "path": the sys.path entry it came from}, ...]``."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    records = []
    for m in modules:
        try:
            mod = importlib.import_module(m)
        except ImportError as err:
            raise UsageError(f"--import {m}: {err}")
        path = getattr(mod, "__file__", None)
        if path:
            path = os.path.dirname(os.path.abspath(path))
            if os.path.basename(mod.__file__) == "__init__.py":
                path = os.path.dirname(path)
            for _ in range(m.count(".")):
                path = os.path.dirname(path)
        records.append({"module": m, "path": path})
    return records


def _reimport(records) -> None:
    """Import the modules a run recorded, from where they were found if needed."""
    for rec in records or ():
        name, path = rec.get("module"), rec.get("path")
        if path and path not in sys.path and importlib.util.find_spec(name.split(".")[0]) is None:
            sys.path.insert(0, path)
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise UsageError(f"the run imported {name} (from {path}), which fails now: {err}; "
                             "pass --import MODULE")


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
    # A world's own id exists only where something registered it (the built-in ones, at
    # import); any other world goes through the generic id, which every process has.
    if env_id(args.world) in env_ids() and env_id(args.world) in gym.registry:
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
    training = _fields(args)
    if args.train_batch_size is not None:
        training["train_batch_size_per_learner"] = args.train_batch_size
    runners = dict(num_env_runners=args.num_env_runners)
    for name in ("num_envs_per_env_runner", "rollout_fragment_length"):
        if getattr(args, name) is not None:          # unset: EmpoConfig's default
            runners[name] = getattr(args, name)
    try:
        config = (EmpoConfig().environment(env_id, env_config=env_config)
                  .env_runners(**runners).training(**training).debugging(seed=args.seed))
        if args.num_env_runners > 0:
            config.fault_tolerance(restart_failed_env_runners=False)
        config.validate()
    except Exception as err:                         # noqa: BLE001 - config mistakes
        raise UsageError(str(err).strip().splitlines()[0] if str(err).strip() else repr(err))
    return config


def default_updates(config) -> int:
    """Learner updates of ``train`` without --updates/--iterations: the warm-up and the ramp,
    then (DEFAULT_RUN_FACTOR - 1) times as long in full training (at least one iteration's
    updates)."""
    return max(DEFAULT_RUN_FACTOR * config.schedule.ends[-1], config.updates_per_iteration)


def _too_large(err: TooManyStatesError) -> UsageError:
    return UsageError(err.message("with --exact-max-states N (the config field "
                                  "exact_max_states)"))


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


def _load(args, path: str):
    """The algorithm of checkpoint ``path`` (``_checkpoint_dir``), after importing the
    modules its run recorded and ``--import``."""
    _import_modules(getattr(args, "imports", ()))
    _reimport(read_run_info(os.path.dirname(path)).get("imports"))
    _init_ray(args)
    try:
        return Empo.from_checkpoint(path)
    except ValueError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
        if "env_config['world']" in first:
            first += "; pass --import MODULE for the module that registers the run's world"
        raise UsageError(f"cannot load {path}: {first}")


def _exact(algo, args):
    try:
        return algo.exact_solution(max_states=getattr(args, "exact_max_states", None))
    except TooManyStatesError as err:
        raise _too_large(err)


def _print_figures(figures: dict) -> None:
    width = max(len(k) for k in figures)
    for k, v in figures.items():
        print(f"  {k:<{width}}  {v:.6g}" if isinstance(v, float) else f"  {k:<{width}}  {v}")


# ------------------------------------------------------------------ train
def cmd_train(args) -> int:
    imports = _import_modules(args.imports)
    config = build_config(args)
    if args.iterations is not None:
        total, unit, why = args.iterations, "iterations", "--iterations"
    elif args.updates is not None:
        total, unit, why = args.updates, "updates", "--updates"
    else:
        total, unit = default_updates(config), "updates"
        why = (f"default: {DEFAULT_RUN_FACTOR} x the end of the beta_r ramp at "
               f"{config.schedule.ends[-1]:,}; --updates N to change")
    if args.compare and args.field_exact_eval_interval is None:
        iterations = total if unit == "iterations" else math.ceil(
            total / config.updates_per_iteration)
        config.training(exact_eval_interval=max(1, iterations // EVALUATIONS_PER_RUN))
    out = os.path.abspath(args.out or os.path.join(
        "runs", f"{args.world}-{time.strftime('%Y%m%d-%H%M%S')}"))
    if args.field_tensorboard_dir is None:           # not given: into the run directory
        config.training(tensorboard_dir=os.path.join(out, "tensorboard"))
    _init_ray(args)
    try:
        algo = config.build_algo()                   # solves the world if it evaluates
    except TooManyStatesError as err:
        raise _too_large(err)
    try:
        return _train(args, config, algo, out, total, unit, why, imports)
    finally:
        algo.stop()


def _train(args, config, algo, out, total, unit, why, imports) -> int:
    os.makedirs(out, exist_ok=True)
    write_run_info(out, config, argv=sys.argv[1:], world=args.world,
                   world_args=_world_kwargs(args.world_arg), prior=args.prior,
                   beta_h=args.beta_h, imports=imports, run_length={unit: total})
    print(f"training EMPO on {args.world} -> {out}")
    print(config.format_stages_table(markdown=False))
    print(f"run: {total:,} {'learner updates' if unit == 'updates' else 'iterations'} ({why})")
    mode = "none" if args.quiet else args.progress
    interrupted = False
    with ProgressWriter(os.path.join(out, PROGRESS_FILE)) as record, \
            TrainingProgress(total, unit=unit, mode=mode) as progress:
        try:
            while progress.position < total:
                result = algo.train()
                record.write(result)
                progress.update(result)
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        print("\ninterrupted: saving a checkpoint")
    for line in progress.summary():
        print(line)
    ckpt = os.path.join(out, "checkpoint")
    algo.save_to_path(ckpt)
    print(f"checkpoint: {ckpt}")
    if config.tensorboard_dir:
        print(f"tensorboard: tensorboard --logdir {config.tensorboard_dir}")
    print(f"plots: rllib-empo plot {out}")
    if args.compare and not interrupted:
        print("compared with the exact solution:")
        _print_figures(compare_to_exact(algo, _exact(algo, args)))
    return 130 if interrupted else 0


# ------------------------------------------------------------------ solve
def cmd_solve(args) -> int:
    _import_modules(args.imports)
    _, env_config = env_spec(args)
    try:
        params = EmpoParams(**{k: v for k, v in _fields(args).items() if k in EQUATION_FIELDS})
    except ValueError as err:
        raise UsageError(str(err))
    env_config = {**env_config, "world": args.world}
    world = world_from_env_config({k: v for k, v in env_config.items()
                                   if k not in ("prior", "beta_h")})
    t0 = time.perf_counter()
    try:
        sol, _ = solve_world(world, env_config, params, max_states=args.max_states,
                             limit_name="--max-states")
    except TooManyStatesError as err:
        raise UsageError(err.message(f"with --max-states N (now {args.max_states})"))
    except ValueError as err:
        raise UsageError(f"cannot solve {args.world} exactly: {err}")
    seconds = time.perf_counter() - t0
    render = getattr(world, "render", None)
    if callable(render):
        print(render(sol.initial_state))
    print(sol.summary())
    print(f"\n  a_r  {'robot action':<14}  {'Q_r(s0, a_r)':>13}  {'pi_r(a_r | s0)':>14}")
    for a, (q, p) in enumerate(zip(sol.Q[0], sol.PI[0])):
        print(f"  {a:>3}  {action_name(world, a) or '-':<14}  {q:>13.4f}  {p:>14.4f}")
    print(f"\nstates: {sol.num_states} reachable, {len(sol.nonterminal_states)} non-terminal")
    print(f"time: prior and phase 2 {seconds:.2f} s (phase 2 {sol.solve_time_s:.2f} s)")
    return 0


# ------------------------------------------------------------------ compare, plot, render
def cmd_compare(args) -> int:
    path = _checkpoint_dir(args.checkpoint)
    algo = _load(args, path)
    try:
        figures = compare_to_exact(algo, _exact(algo, args))
        if args.json:
            print(json.dumps(figures))
        else:
            print(f"checkpoint {path}: {algo.num_updates} learner updates, stage "
                  f"{algo.schedule.stage(algo.num_updates)}")
            _print_figures(figures)
    finally:
        algo.stop()
    return 0


def cmd_plot(args) -> int:
    run = args.run
    if not os.path.exists(run):
        raise UsageError(f"{run!r} does not exist")
    run_dir = run if os.path.isdir(run) else os.path.dirname(os.path.abspath(run))
    out = args.out or run_dir
    written = []
    progress_path = run if os.path.isfile(run) else os.path.join(run, PROGRESS_FILE)
    info = read_run_info(run_dir)
    if os.path.isfile(progress_path):
        try:
            rows = read_progress(progress_path)
        except ValueError as err:
            raise UsageError(str(err))
        if rows and not any("Exact/tv_pi_r_s0" in r for r in rows):
            print("no fidelity panel: the run logged no exact evaluation (train with --compare "
                  "or --exact-eval-interval N)")
        if rows:
            written.append(plotting.plot_training_curves(
                rows, os.path.join(out, "training_curves.png"),
                stage_ends=info.get("stage_ends"), clear_points=info.get("clear_points"),
                value_loss=info.get("value_loss", "log"),
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
    algo = _load(args, ckpt)
    written = []
    try:
        world = algo.world
        grid = plotting.is_grid_world(world)
        humans = len(world.human_agent_indices)
        if grid and args.human != "all" and not 0 <= args.human < humans:
            raise UsageError(f"--human must be all or in 0..{humans - 1}")
        try:
            solution = algo.exact_solution(max_states=args.exact_max_states)
        except Exception as err:                     # noqa: BLE001 - too large, cyclic ...
            msg = (_too_large(err) if isinstance(err, TooManyStatesError) else err)
            print(f"no exact solution: {msg}; the heat map uses rollouts of the policy")
            solution = None
        if solution is not None:
            written.append(plotting.plot_learned_vs_exact(
                algo, solution, os.path.join(out, "learned_vs_exact.png")))
            states = solution.nonterminal_states
        else:
            env = make_env(algo)
            states = [s for e in range(args.episodes) for s in rollout(algo, env, seed=e).states]
        if grid:
            label = ("reachable non-terminal states" if solution is not None else
                     f"non-terminal states of {args.episodes} rollouts of the learned policy")
            written.append(plotting.plot_value_heatmap(
                algo, states, os.path.join(out, f"heatmap_{args.quantity}.png"),
                quantity=args.quantity, human=args.human, solution=solution, world=world,
                states_label=label))
    finally:
        algo.stop()
    return written


def cmd_render(args) -> int:
    path = _checkpoint_dir(args.checkpoint)
    algo = _load(args, path)
    try:
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
    finally:
        algo.stop()
    return 0


COMMANDS = {"train": cmd_train, "solve": cmd_solve, "compare": cmd_compare, "plot": cmd_plot,
            "render": cmd_render}
