"""Checks of an EmpoConfig beyond single-field ranges: cross-field limits and the world
behind ``config.env`` / ``env_config``, run by ``EmpoConfig.validate()`` so that a bad setting
fails in the first second with a message naming the field."""
from __future__ import annotations

import math
import os

import gymnasium as gym
import numpy as np

from rllib_empo.algorithm import env as env_mod
from rllib_empo.algorithm.fields import _GAMMA, _float
from rllib_empo.algorithm.tables import TableBuilder
from rllib_empo.worlds.protocol import (WorldProtocolError, checked_transitions, num_agents,
                                        world_name)
from rllib_empo.worlds.registry import WORLDS, check_world_arguments, did_you_mean


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
    _check_beta_r_range(cfg)
    _check_u_r_range(cfg)
    _check_fault_tolerance(cfg)
    _check_tensorboard_dir(cfg)
    if cfg._validate_config:       # experimental(_validate_config=False) skips the env
        _check_environment(cfg)


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
