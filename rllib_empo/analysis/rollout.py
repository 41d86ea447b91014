"""Rollouts of a learned robot policy outside RLlib's EnvRunners (for rendering and plots).

``make_env(algo)`` builds the algorithm's env (an ``EmpoEnv``) on the driver;
``rollout(algo, env, seed=...)`` plays one episode with actions drawn from the learned pi_r
at the nominal beta_r (``algo.robot_policy``, no epsilon) and returns its steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rllib_empo.worlds.protocol import decode_robot_action


@dataclass
class Step:
    state: object                 # the raw world state the robot acted in
    action: int                   # joint robot action index
    probs: np.ndarray             # pi_r(. | state)
    frame: str                    # env.render() before the action


@dataclass
class Episode:
    steps: list = field(default_factory=list)
    final_state: object = None
    final_frame: str = ""

    @property
    def states(self) -> list:
        return [s.state for s in self.steps] + [self.final_state]


def make_env(algo):
    """The algorithm's env, built from its ``config.env`` / ``config.env_config`` (the
    unwrapped EmpoEnv)."""
    from ray.tune.registry import ENV_CREATOR, _global_registry
    import gymnasium as gym
    env_id, env_config = algo.config.env, dict(algo.config.env_config or {})
    if isinstance(env_id, str) and _global_registry.contains(ENV_CREATOR, env_id):
        env = _global_registry.get(ENV_CREATOR, env_id)(env_config)
    elif callable(env_id):
        env = env_id(env_config)
    else:
        env = gym.make(env_id, **env_config)
    env = getattr(env, "unwrapped", env)
    if not hasattr(env, "world"):
        raise ValueError(f"env {env_id!r} is not an EmpoEnv")
    return env


def action_name(world, a_r: int):
    """``"left"`` for the built-in grid worlds and worlds with ``action_names`` (``"up+left"``
    for a joint action of two robots), else None."""
    names = getattr(world, "action_names", None)
    if names is None:
        from rllib_empo.worlds.grid import ACTION_NAMES, GridWorld
        names = ACTION_NAMES if isinstance(world, GridWorld) else None
    if names is None:
        return None
    parts = decode_robot_action(a_r, int(world.num_actions), len(world.robot_agent_indices))
    return "+".join(names[a] for a in parts)


def action_label(world, a_r: int) -> str:
    """``"3"`` or, where the actions have names, ``"3 (left)"``."""
    name = action_name(world, a_r)
    return str(a_r) if name is None else f"{a_r} ({name})"


def rollout(algo, env=None, *, seed: int | None = None, max_steps: int = 1000) -> Episode:
    """One episode of the learned policy (actions sampled from pi_r at the nominal beta_r)."""
    env = env if env is not None else make_env(algo)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    episode = Episode()
    for _ in range(max_steps):
        state = env.get_state()
        probs = np.asarray(algo.robot_policy([state])[0], dtype=np.float64)
        a = int(rng.choice(len(probs), p=probs / probs.sum()))
        episode.steps.append(Step(state, a, probs, env.render()))
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            break
    episode.final_state = env.get_state()
    episode.final_frame = env.render()
    return episode
