"""Checks of an EmpoConfig beyond the EMPO fields' own ranges: RLlib's fields that EMPO relies
on (or ignores), cross-field limits, resources, and the world behind ``config.env`` /
``env_config``, run by ``EmpoConfig.validate()`` so that a bad setting fails in the first
second with a message naming the field."""
from __future__ import annotations

import math
import os
import warnings

import gymnasium as gym
import numpy as np

from rllib_empo.algorithm import env as env_mod
from rllib_empo.algorithm.fields import BOOL, _GAMMA, _choice, _float, _int, _optional
from rllib_empo.algorithm.resources import cluster_cpus, requested_cpus
from rllib_empo.algorithm.tables import TableBuilder
from rllib_empo.worlds.protocol import (WorldProtocolError, checked_successors,
                                        checked_transitions, num_agents, short_repr, world_name)
from rllib_empo.worlds.registry import WORLDS, check_world_arguments, did_you_mean

MAX_SEED = 2**31 - 1      # RLlib adds the worker index (and 1e6 for evaluation) to the seed,
                          # and numpy's global seed must stay below 2**32

# RLlib's own fields that EMPO uses: (name, (predicate, allowed)). Checked before RLlib's
# validate(), which would otherwise fail deep inside (or not at all) on such values.
RLLIB_FIELDS = (
    ("train_batch_size_per_learner", _int(1)),
    ("grad_clip", _optional(_float(0.0, lo_open=True), "no clipping")),
    ("grad_clip_by", _choice("value", "norm", "global_norm")),
    ("seed", (lambda v: v is None or (_int(0)[0](v) and v <= MAX_SEED),
              f"None or an int in [0, {MAX_SEED}]")),
    ("num_env_runners", _int(0)),
    ("num_envs_per_env_runner", _int(1)),
    ("rollout_fragment_length", (lambda v: v == "auto" or _int(1)[0](v), "'auto' or an int >= 1")),
    ("num_cpus_per_env_runner", _float(0.0)),
    ("num_learners", _int(0)),
    ("sample_timeout_s", _optional(_float(0.0, lo_open=True), "wait for ever")),
    ("restart_failed_env_runners", BOOL),
    ("ignore_env_runner_failures", BOOL),
    ("max_num_env_runner_restarts", _int(0)),
    ("delay_between_env_runner_restarts_s", _float(0.0)),
)

# RLlib's fields that EMPO does not use, with RLlib's default and what to set instead. A value
# other than the default would be silently ignored, so it is an error.
UNUSED_RLLIB_FIELDS = (
    ("lr", 0.001, "EMPO gives every network its own learning rate: set lr_q_r, lr_v_h_e, "
                  "lr_x_h (and lr_u_r, lr_v_r when those are networks)"),
    ("gamma", 0.99, "EMPO has two discount factors: set gamma_r (the robot's, eq. 4) and "
                    "gamma_h (the humans', eq. 6)"),
    ("num_epochs", 1, "every sampled minibatch is used once; set updates_per_iteration for "
                      "more learner updates per iteration"),
)


def check_rllib_fields(cfg) -> None:
    """RLlib's own fields: the ones EMPO uses must be in range, the ones it ignores must keep
    RLlib's default. Raises ValueError naming the field and what is allowed."""
    for name, (ok, allowed) in RLLIB_FIELDS:
        value = getattr(cfg, name)
        if not ok(value):
            raise ValueError(f"{name} must be {allowed}, got {value!r}")
    for name, default, instead in UNUSED_RLLIB_FIELDS:
        value = getattr(cfg, name)
        if not _same(value, default):
            raise ValueError(f"{name} is not used by EMPO and must stay at RLlib's default "
                             f"{default!r}, got {value!r}: {instead}")
    mb = cfg.minibatch_size
    if mb is not None and mb != cfg.train_batch_size_per_learner:
        raise ValueError(f"minibatch_size is not used by EMPO and must be None (or equal "
                         f"train_batch_size_per_learner), got {mb!r}: every learner update "
                         "draws train_batch_size_per_learner rows")


def _same(value, default) -> bool:
    try:
        return type(value) is not bool and bool(value == default)
    except Exception:   # noqa: BLE001 -- e.g. an array, which is not a default either
        return False


def check_cross_fields(cfg) -> None:
    """Everything ``validate()`` checks after the per-field ranges."""
    if cfg.replay_capacity < cfg.total_train_batch_size:
        raise ValueError(
            f"replay_capacity ({cfg.replay_capacity}) must be >= the total train batch size "
            f"(train_batch_size_per_learner={cfg.train_batch_size_per_learner} x "
            f"num_learners={cfg.num_learners or 1})")
    if cfg.learning_starts is not None and cfg.learning_starts > cfg.replay_capacity:
        raise ValueError(f"learning_starts ({cfg.learning_starts}) must be <= replay_capacity "
                         f"({cfg.replay_capacity})")
    if cfg.target_copy == "average" and cfg.ema_decay <= 0:
        raise ValueError("target_copy='average' copies the running averages into the "
                         "targets and needs ema_decay in (0, 1), got ema_decay="
                         f"{cfg.ema_decay}")
    rows = _rows_per_iteration(cfg)
    if cfg.replay_capacity < rows:
        raise ValueError(
            f"replay_capacity ({cfg.replay_capacity}) must be >= the rows one iteration samples "
            f"({rows} = {max(cfg.num_env_runners or 0, 1)} EnvRunner(s) x "
            f"num_envs_per_env_runner={cfg.num_envs_per_env_runner} x rollout_fragment_length="
            f"{cfg.get_rollout_fragment_length()}): a smaller buffer overwrites rows before any "
            "update sees them; raise replay_capacity or lower rollout_fragment_length")
    _check_beta_r_range(cfg)
    _check_u_r_range(cfg)
    _check_fault_tolerance(cfg)
    _check_tensorboard_dir(cfg)
    if cfg._validate_config:       # experimental(_validate_config=False) skips the env
        _check_cpus(cfg)
        _check_environment(cfg)


def _rows_per_iteration(cfg) -> int:
    """Rows one training_step adds: every sampling EnvRunner's fragment of each of its envs."""
    return (max(cfg.num_env_runners or 0, 1) * cfg.num_envs_per_env_runner
            * cfg.get_rollout_fragment_length())


def _check_cpus(cfg) -> None:
    """EnvRunner (and Learner) actors that need more CPUs than Ray has are never placed, and
    build_algo() waits for them for ever without a message."""
    need, known = requested_cpus(cfg), cluster_cpus()
    if known is None or need <= known[0] + 1e-9:
        return                  # fits, or a cluster that Ray has not connected to yet
    have, source = known
    n, per = cfg.num_env_runners or 0, float(cfg.num_cpus_per_env_runner or 0)
    learners = (f" + num_learners={cfg.num_learners} x num_cpus_per_learner="
                f"{cfg.num_cpus_per_learner}" if cfg.num_learners else "")
    fit = int(max(have - (need - n * per), 0) // per) if per else n
    raise ValueError(
        f"num_env_runners={n} x num_cpus_per_env_runner={per:g}{learners} needs {need:g} CPUs, "
        f"but {source} {have:g}: Ray would never place the EnvRunners and build_algo() would "
        f"wait for ever. Set num_env_runners <= {fit}, or a fractional "
        f"num_cpus_per_env_runner (<= {have / max(n, 1):.3g}), or num_env_runners=0 (sampling "
        "in the driver); on a cluster, start Ray with enough CPUs first")


# |U_r| <= x_h_floor ** -(xi * eta) (eq. 8 where X_h sits at its floor). The learner computes in
# float32 (max ~3.4e38); V_r and Q_r add up a horizon of such values, and 'mse' squares them.
MAX_LOG10_U_R = {"log": 30.0, "mse": 15.0}


# beta_r * log(-Q_r) must stay finite in float32 (|log(-Q_r)| < 89 for any float32 Q_r); the
# power law is already an argmax far below this bound.
MAX_BETA_R = 1e30


def _check_beta_r_range(cfg) -> None:
    if cfg.beta_r > MAX_BETA_R:
        raise ValueError(f"beta_r must be <= {MAX_BETA_R:g} (beta_r * log(-Q_r) must stay finite "
                         f"in float32; the policy is an argmax long before), got {cfg.beta_r!r}")


def _check_u_r_range(cfg) -> None:
    decades = cfg.xi * cfg.eta * math.log10(1.0 / cfg.x_h_floor)
    limit = MAX_LOG10_U_R.get(cfg.value_loss, min(MAX_LOG10_U_R.values()))
    if decades > limit:
        raise ValueError(
            f"xi * eta * log10(1 / x_h_floor) must be <= {limit:g} with value_loss="
            f"{cfg.value_loss!r}, got xi={cfg.xi!r}, eta={cfg.eta!r}, x_h_floor={cfg.x_h_floor!r} "
            f"({decades:.3g}): U_r = -(mean_h X_h^-xi)^eta reaches -1e{decades:.0f} where X_h is "
            "at its floor, beyond what the float32 learner represents; lower xi or eta, or "
            "raise x_h_floor")


def _check_fault_tolerance(cfg) -> None:
    if getattr(cfg, "restart_failed_sub_environments", False):
        raise ValueError(
            "restart_failed_sub_environments must be False for EMPO, got True: an error in an "
            "EmpoEnv is a world that breaks its protocol (rllib_empo.worlds), which happens again "
            "on every retry, so RLlib's recreate-and-retry would loop inside sample() forever. "
            "restart_failed_env_runners=True (lost EnvRunner processes) is supported.")


def _check_tensorboard_dir(cfg) -> None:
    d = cfg.tensorboard_dir
    if d is not None and os.path.exists(d) and not os.path.isdir(d):
        raise ValueError(f"tensorboard_dir must be a directory path or None, got {d!r}, "
                         "which is an existing file")


def _reraise(err: Exception, prefix: str):
    """Raise ``err`` again, as the same ValueError/TypeError class, with ``prefix`` (the config
    field) in front of its message; the original stays attached as the cause."""
    try:
        new = type(err)(f"{prefix}: {err}")
    except Exception:  # an exception class with an unusual constructor
        new = None
    if not isinstance(new, (ValueError, TypeError)):
        new = ValueError(f"{prefix}: {err}")
    raise new from err


def _check_env_class(env, empo_env_cls, ids) -> None:
    """Reject, without building it, an env that is a gym.Env class (or a gymnasium id of one)
    but not an EmpoEnv. Env creators registered with Ray Tune and other callables cannot be
    told apart without calling them; ``table_spec`` checks them at build time."""
    cls = env
    if isinstance(env, str):
        from ray.tune.registry import ENV_CREATOR, _global_registry
        if _global_registry.contains(ENV_CREATOR, env) or env not in gym.registry:
            return
        entry = gym.registry[env].entry_point
        try:
            from gymnasium.envs.registration import load_env_creator
            cls = load_env_creator(entry) if isinstance(entry, str) else entry
        except Exception:       # not importable here: RLlib reports that when it builds
            return
    if isinstance(cls, type) and issubclass(cls, gym.Env) and not issubclass(cls, empo_env_cls):
        raise ValueError(f"env must be an EmpoEnv id or class, got {env!r} ({cls.__name__}); EMPO "
                         f"trains on a World: use one of {', '.join(ids)} (env_config="
                         "{'world': ...} for the last), or register an EmpoEnv subclass")


def _check_environment(cfg) -> None:
    """The world behind ``config.env``/``env_config``: built (cheap; never the human prior),
    checked against the World protocol, its initial state's tables checked against the
    config. Only for the package's own env ids: a user's own env id may be expensive to
    build, so it is checked when the algorithm is built (``table_spec``)."""
    env = cfg.env
    if env is None:
        return                          # build_algo() says that an environment is needed
    named = env_mod.env_ids()
    generic = env_mod.GENERIC_ENV_ID
    if not isinstance(env, str) or (env not in named and env != generic):
        _check_env_class(env, env_mod.EmpoEnv, sorted(named) + [generic])
        return
    ec = dict(cfg.env_config or {})
    settings_keys = [k for k in env_mod.ENV_KEYS if k != "empo"]
    if "empo" in ec:
        raise ValueError("env_config['empo'] is reserved for the settings EmpoConfig passes to "
                         "its envs; set them with .training(...) instead. Allowed env_config "
                         f"keys: {', '.join(settings_keys)} and the world's arguments")
    if env in named:
        given = ec.get("world", named[env])
        if not (isinstance(given, str) and given == named[env]):
            raise ValueError(f"env_config['world'] must be {named[env]!r} or absent with env "
                             f"{env!r}, got {given!r}; use env {generic!r} to choose the world "
                             "in env_config")
        ec["world"] = named[env]
    world = ec.get("world")
    if world is None:
        raise ValueError(f"env_config['world'] is required with env {generic!r}: one of "
                         f"{', '.join(sorted(WORLDS))}, or a World instance")
    extra = [k for k in ec if k not in env_mod.ENV_KEYS]
    if isinstance(world, type):
        raise ValueError(f"env_config['world'] must be a registered world name or a World "
                         f"instance, got the class {world.__name__}; pass {world.__name__}(...) "
                         "or register it with rllib_empo.worlds.register_world(name, cls)")
    if isinstance(world, str):
        if world not in WORLDS:
            raise ValueError(f"env_config['world'] must be one of {', '.join(sorted(WORLDS))} "
                             f"or a World instance, got {world!r}{did_you_mean(world, WORLDS)}")
        check_world_arguments(world, extra, also_allowed=settings_keys,
                              where=lambda key: f"env_config[{key!r}]")
    elif extra:
        raise ValueError(f"env_config[{extra[0]!r}] is not allowed when env_config['world'] is a "
                         f"World instance (there is no constructor to pass it to); allowed keys: "
                         f"{', '.join(settings_keys)}")
    if "prior" in ec and not callable(ec["prior"]) and ec["prior"] not in env_mod.PRIORS:
        raise ValueError(f"env_config['prior'] must be one of {', '.join(map(repr, env_mod.PRIORS))} "
                         f"or a callable factory(world) -> prior, got {ec['prior']!r}"
                         f"{did_you_mean(ec['prior'], env_mod.PRIORS)}")
    for key, kind in (("beta_h", _float(0.0)), ("gamma_h", _GAMMA)):
        if key in ec and not kind[0](ec[key]):
            raise ValueError(f"env_config[{key!r}] must be {kind[1]}, got {ec[key]!r}")

    try:
        w = env_mod.world_from_env_config(ec)
    except WorldProtocolError as err:
        _reraise(err, "env_config['world']")
    except (TypeError, ValueError) as err:    # the world's constructor rejected an argument
        args = ", ".join(f"{k}={ec[k]!r}" for k in extra)
        _reraise(err, f"env_config: world {world!r} rejected its arguments ({args or 'none'})")
    name = world_name(w)
    kind = ec.get("prior", getattr(w, "default_prior", "boltzmann"))
    if kind == "heuristic" and not callable(getattr(w, "goal_distance_after", None)):
        raise ValueError(f"env_config['prior'] is 'heuristic', which needs world {name!r} to have "
                         "a method goal_distance_after(state, h, goal); allowed for this world: "
                         "'boltzmann', 'uniform' or a callable factory(world) -> prior")
    try:
        spec = env_mod.table_spec(w, env_mod.EnvSettings(**cfg.empo_env_settings()))
        s0 = w.initial_state()
        # all joint actions of s0 when there are few (a user's world may be slow to step)
        if spec.mode == "sum" and spec.num_robot_actions * spec.num_actions ** spec.num_humans <= 1_000:
            TableBuilder(w, None, spec, np.random.default_rng(0)).successors(s0)
        else:                             # one joint action is enough to catch the common slips
            checked_transitions(w, s0, [0] * num_agents(w))
    except WorldProtocolError as err:
        _reraise(err, "env_config['world']")
    if cfg.gamma_r == 1.0:
        _warn_undiscounted_cycle(w, name)
    if not isinstance(world, str) and (cfg.num_env_runners or 0) > 0:
        from ray import cloudpickle
        try:
            cloudpickle.dumps(world)
        except Exception as err:
            raise ValueError(
                f"env_config['world'] must be picklable to reach the remote EnvRunners "
                f"(num_env_runners={cfg.num_env_runners}), but pickling world {name!r} failed: "
                f"{err}; register it by name (rllib_empo.worlds.register_world) or use "
                "num_env_runners=0") from err


class UndiscountedCycleWarning(UserWarning):
    """gamma_r = 1 on a world whose state graph has a cycle."""


# transition_probabilities calls the gamma_r = 1 cycle search makes at most (validate() must
# stay fast); larger worlds are searched only near their initial state.
CYCLE_SEARCH_CALLS = 20_000


def find_cycle(world, max_calls: int = CYCLE_SEARCH_CALLS):
    """A state that the world can return to (a cycle reachable from the initial state), found
    by depth-first search over every joint action within ``max_calls`` calls of
    ``transition_probabilities``; None if there is none within the budget."""
    import itertools
    n = num_agents(world)
    joint = list(itertools.product(range(int(world.num_actions)), repeat=n))
    max_states = max(1, max_calls // len(joint))
    s0 = world.initial_state()
    on_path, done, expanded = {s0}, set(), 0
    stack = [(s0, iter(()) if world.is_terminal(s0) else _successors(world, s0, joint))]
    while stack:
        state, successors = stack[-1]
        nxt = next(successors, None)
        if nxt is None:
            stack.pop()
            on_path.discard(state)
            done.add(state)
            continue
        if nxt in on_path:
            return nxt
        if nxt in done or expanded >= max_states:
            continue
        expanded += 1
        on_path.add(nxt)
        stack.append((nxt, iter(()) if world.is_terminal(nxt) else _successors(world, nxt, joint)))
    return None


def _successors(world, state, joint):
    seen = set()
    for ja in joint:
        for _, s2 in checked_successors(world, state, ja):
            if s2 not in seen:
                seen.add(s2)
                yield s2


def _warn_undiscounted_cycle(world, name: str) -> None:
    try:
        state = find_cycle(world)
    except WorldProtocolError:
        return                  # a broken world is reported by the checks that use it
    if state is not None:
        warnings.warn(
            f"gamma_r = 1 on world {name!r}, which has a cycle (the world can return to state "
            f"{short_repr(state)}): without discounting, V_r adds U_r <= -1 for every step "
            "the robot keeps the world in the cycle, so Q_r and V_r have no finite fixed point "
            "unless every policy leaves the cycle with probability 1, and the learned values "
            "drift towards -inf; use gamma_r < 1, or put the steps left into the state",
            UndiscountedCycleWarning, stacklevel=4)
