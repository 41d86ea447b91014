"""EmpoEnv: a gymnasium env over any World, as the EnvRunners see it.

- The observation is ``encode_state(state)``; the action is the joint robot action
  (``Discrete(num_actions ** num_robots)``); the reward is 0 (EMPO has no environment reward);
  ``terminated`` comes from the world (time is part of the state), ``truncated`` is False.
- On reset every human draws a goal from ``possible_goals``; in ``step`` the humans act by the
  prior, the world moves, and a human whose goal is achieved draws a new one.
- Every ``step`` returns ``info["empo"]``: an ``EmpoStep`` naming (by key) the successor table
  of the state the step started from (``rllib_empo.algorithm.tables``); the env's
  ``TableBuilder`` holds the entries until the EnvRunner packs them (``take_sample``).

``env_config`` keys: ``world`` (a registered name or a World instance; set by the registered ids
such as ``rllib_empo/RockGate-v0``), ``prior`` ("boltzmann", "uniform", "heuristic" or a callable
``factory(world) -> prior``; default the world's ``default_prior`` or "boltzmann"), ``beta_h`` and
``gamma_h`` of the prior, and any keyword the world's constructor accepts. The key ``empo`` is
reserved for the settings the algorithm injects (``EnvSettings``).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np

from rllib_empo.exact.priors import BoltzmannHumanPrior, HeuristicHumanPrior, UniformHumanPrior
from rllib_empo.algorithm.faults import world_errors
from rllib_empo.algorithm.tables import TableBuilder, TableSpec
from rllib_empo.worlds.protocol import (check_goals, check_world, checked_achieved,
                                        num_robot_actions, world_name)
from rllib_empo.worlds.registry import WORLDS, make_world

GENERIC_ENV_ID = "rllib_empo/World-v0"
ENV_KEYS = ("world", "prior", "beta_h", "gamma_h", "empo")
PRIORS = ("boltzmann", "uniform", "heuristic")


def env_id(world_name: str) -> str:
    """The env id of a registered world: ``rock_gate`` -> ``rllib_empo/RockGate-v0``."""
    return "rllib_empo/" + "".join(part.capitalize() for part in world_name.split("_")) + "-v0"


def env_ids() -> dict[str, str]:
    """{env id: world name} of every registered world."""
    return {env_id(name): name for name in WORLDS}


class _PriorCache:
    """The phase-1 priors this process solved, keyed by what determines them: the world (its
    registered name and arguments, or a fingerprint of a World instance's pickle, which
    copies of the instance share) and beta_h, gamma_h. Bounded: the least recently used
    prior goes first."""

    def __init__(self, size: int = 4):
        self.size, self._items = size, OrderedDict()

    def get(self, key, make):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = self._items[key] = make()
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value


_PRIORS = _PriorCache()


def world_fingerprint(world) -> str:
    """A digest of the World instance's pickle: equal for copies of one instance (deep copies,
    the copies that reach remote EnvRunners), computed once per instance."""
    cached = getattr(world, "_empo_fingerprint", None)
    if cached is not None:
        return cached
    from ray import cloudpickle
    digest = hashlib.sha1(cloudpickle.dumps(world)).hexdigest()
    try:
        world._empo_fingerprint = digest
    except AttributeError:          # __slots__ or a frozen class: recomputed next time
        pass
    return digest


@dataclass(frozen=True)
class EnvSettings:
    """What the algorithm's config decides about the rows an env records."""
    use_model_based_targets: bool = True
    sum_human_actions: bool = True
    max_goals_per_human: int = 16
    gamma_h: float = 0.99                   # default discount of the Boltzmann prior
    exploring_starts: float = 0.0           # share of episodes starting at a seen state
    exploring_starts_frontier: bool = False  # ... at a frontier state while there is one

    @property
    def mode(self) -> str:
        if not self.use_model_based_targets:
            return "sampled"
        return "sum" if self.sum_human_actions else "sampled_humans"


class EmpoStep:
    """What one step adds to the replay memory, in ``info["empo"]``: the key of the table of
    the state the step left. Not a dict or an int on purpose: gymnasium's vector env would
    merge those into per-key batch arrays at every step."""
    __slots__ = ("table",)

    def __init__(self, table: int):
        self.table = table


def split_env_config(env_config: dict | None) -> tuple[dict, dict]:
    """(env-level keys, world constructor keyword arguments)."""
    cfg = dict(env_config or {})
    env_keys = {k: cfg.pop(k) for k in ENV_KEYS if k in cfg}
    return env_keys, cfg


def world_from_env_config(env_config: dict | None):
    """Build (or pass through) the world an env_config describes; errors name bad keys."""
    env_keys, world_kwargs = split_env_config(env_config)
    world = env_keys.get("world")
    if world is None:
        raise ValueError(f"env_config needs a 'world' (one of {sorted(WORLDS)} or a World "
                         "instance); or use a registered id such as 'rllib_empo/RockGate-v0'")
    if isinstance(world, str):
        world = make_world(world, **world_kwargs)
    elif world_kwargs:
        raise ValueError(f"env_config keys {sorted(world_kwargs)} are not env settings "
                         f"({', '.join(ENV_KEYS[:-1])}) and the world is an instance, so "
                         "they cannot be world arguments")
    check_world(world)
    return world


def world_for_config(env, env_config: dict | None):
    """The world behind an RLlib ``config.env`` (one of our ids, or any env whose unwrapped
    form is an EmpoEnv) without building a prior."""
    ids = env_ids()
    if isinstance(env, str) and env in ids:
        return world_from_env_config({**dict(env_config or {}), "world": ids[env]})
    if env == GENERIC_ENV_ID:
        return world_from_env_config(env_config)
    from ray.tune.registry import ENV_CREATOR, _global_registry
    if isinstance(env, str) and _global_registry.contains(ENV_CREATOR, env):
        made = _global_registry.get(ENV_CREATOR, env)(dict(env_config or {}))
    elif callable(env):
        made = env(dict(env_config or {}))
    elif isinstance(env, str):
        made = gym.make(env, **dict(env_config or {}))
    else:
        raise ValueError("EmpoConfig needs an environment: .environment('rllib_empo/RockGate-v0')"
                         f" or another EmpoEnv id; got env={env!r}")
    world = getattr(getattr(made, "unwrapped", made), "world", None)
    if world is None:
        raise ValueError(f"env {env!r} is not an EmpoEnv (it has no `world`); EMPO trains on "
                         "EmpoEnv over a World, see rllib_empo.algorithm.env")
    return world


def prior_from_env_config(world, env_config: dict | None, default_gamma_h: float = 0.99):
    env_keys, world_kwargs = split_env_config(env_config)
    kind = env_keys.get("prior", getattr(world, "default_prior", "boltzmann"))
    beta_h = float(env_keys.get("beta_h", 10.0))
    gamma_h = float(env_keys.get("gamma_h", default_gamma_h))
    if callable(kind):
        return kind(world)
    if kind == "uniform":
        return UniformHumanPrior(world)
    if kind == "heuristic":
        return HeuristicHumanPrior(world, beta_h=beta_h)
    if kind == "boltzmann":
        w = env_keys.get("world")
        ident = (world_fingerprint(world) if w is not None and not isinstance(w, str)
                 else (world_name(world), repr(sorted(world_kwargs.items()))))
        return _PRIORS.get((ident, beta_h, gamma_h),
                           lambda: BoltzmannHumanPrior.solve(world, beta_h, gamma_h))
    raise ValueError(f"env_config 'prior' must be one of {PRIORS} or a callable "
                     f"factory(world) -> prior, got {kind!r}")


def table_spec(world, settings: EnvSettings) -> TableSpec:
    s0 = world.initial_state()
    goals0 = [check_goals(world, s0, h) for h in world.human_agent_indices]
    goal = goals0[0][0][0]
    # G: no wider than the world needs (the world's ``max_goals`` hint or the initial state);
    # states with more goals than G keep a fixed draw of G goals (TableBuilder.goal_table)
    max_goals = min(settings.max_goals_per_human,
                    int(getattr(world, "max_goals", max(len(g) for g in goals0))))
    return TableSpec(obs_dim=int(np.asarray(world.encode_state(s0)).shape[0]),
                     goal_dim=int(np.asarray(world.encode_goal(goal)).shape[0]),
                     num_humans=len(world.human_agent_indices),
                     num_robot_actions=num_robot_actions(world),
                     num_actions=int(world.num_actions), max_goals=max_goals,
                     mode=settings.mode)


def _draw(p: np.ndarray, u: float) -> int:
    """Inverse-CDF draw from a small probability vector (faster than rng.choice)."""
    return min(int(np.searchsorted(np.cumsum(p), u * float(np.sum(p)), side="right")),
               len(p) - 1)


class EmpoEnv(gym.Env):
    metadata = {"render_modes": ["ansi"]}

    def __init__(self, config: dict | None = None, render_mode: str | None = None):
        cfg = dict(config or {})
        self.settings = EnvSettings(**dict(cfg.get("empo") or {}))
        self.world = world_from_env_config(cfg)
        self.prior = prior_from_env_config(self.world, cfg, self.settings.gamma_h)
        self.table_spec = table_spec(self.world, self.settings)
        self.humans = list(self.world.human_agent_indices)
        self.A = int(self.world.num_actions)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.table_spec.obs_dim,),
                                                np.float32)
        self.action_space = gym.spaces.Discrete(self.table_spec.num_robot_actions)
        self.render_mode = render_mode
        self._builder = TableBuilder(self.world, self.prior, self.table_spec,
                                     np.random.default_rng())
        self._builder.track_frontier = self.settings.exploring_starts_frontier
        self.state, self.goals = None, None

    # ---- gymnasium API ------------------------------------------------------------------
    @world_errors
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._builder.rng = self.np_random
        self.state = self.world.initial_state()
        if self._builder.seen_states and self.settings.exploring_starts > 0 \
                and self.np_random.random() < self.settings.exploring_starts:
            # Model-based targets are expectations under the target policy whatever the
            # visitation, so starting anywhere only changes which states get trained.
            self.state = self._builder.exploring_start(self.np_random)
        self.goals = [self._draw_goal(h) for h in self.humans]
        return self._builder.encode(self.state), {}

    @world_errors
    def step(self, action):
        if self.state is None:
            raise RuntimeError("EmpoEnv.step called before reset")
        s, a_r, rng = self.state, int(action), self.np_random
        human_actions = tuple(_draw(self._builder.prior(s, h, g), rng.random())
                              for h, g in zip(self.humans, self.goals))
        b, mode = self._builder, self.settings.mode
        b.state_entry(s)        # checks s's goals and encodings now, at the step that meets them
        b.visit(s)
        if mode == "sum":
            table = b.table_sum(s)
            j = a_r * self.A ** len(self.humans) + int(
                np.ravel_multi_index(human_actions, (self.A,) * len(self.humans)))
        elif mode == "sampled_humans":
            table = b.table_sampled_humans(s, human_actions, self.goals)
            j = a_r
        if mode != "sampled":
            kk, kp = table.arrays["kernel_k"][j], table.arrays["kernel_p"][j]
            s2 = table.succ[int(kk[_draw(kp, rng.random())])]
        else:
            succ, kk, kp = b.successors(s, human_actions)
            s2 = succ[int(kk[a_r][_draw(kp[a_r], rng.random())])]
            table = b.table_sampled(s, a_r, s2, self.goals)
        self.state = s2
        terminated = bool(self.world.is_terminal(s2))
        if not terminated:
            self.goals = [g if not checked_achieved(self.world, g, s2) else self._draw_goal(h)
                          for h, g in zip(self.humans, self.goals)]
        obs = b.encode(s2)
        return obs, 0.0, terminated, False, {"empo": EmpoStep(table.key)}

    def render(self):
        text = self.world.render(self.state) if hasattr(self.world, "render") else repr(self.state)
        goals = ", ".join(f"h{h}: {g!r}" for h, g in zip(self.humans, self.goals or []))
        return f"{text}\ngoals: {goals}"

    # ---- helpers ------------------------------------------------------------------------
    def _draw_goal(self, h: int):
        goals = check_goals(self.world, self.state, h)
        return goals[_draw(np.array([w for _, w in goals]), self.np_random.random())][0]

    def get_state(self):
        """The raw world state (for analysis; the observation is its encoding)."""
        return self.state

    def take_sample(self) -> tuple[dict, dict, dict]:
        """The entries (tables, states, goals) of every table named by a step since the last
        call (``TableBuilder.entries``)."""
        return self._builder.entries(self._builder.take_pending())

    def describe(self) -> dict[str, Any]:
        return {"world": world_name(self.world), "mode": self.settings.mode,
                **asdict(self.table_spec)}


def _make(world: str | None, env_config: dict | None = None):
    cfg = dict(env_config or {})
    if world is not None:
        cfg.setdefault("world", world)
    return EmpoEnv(cfg)


def register_envs() -> None:
    """Register every built-in world (and a generic id) with gymnasium and Ray Tune."""
    from ray.tune.registry import register_env
    for eid, name in {**env_ids(), GENERIC_ENV_ID: None}.items():
        if eid not in gym.registry:
            gym.register(eid, entry_point=partial(_gym_entry, name))
        register_env(eid, partial(_make, name))


def _gym_entry(world: str | None, **kwargs):
    return _make(world, kwargs)
