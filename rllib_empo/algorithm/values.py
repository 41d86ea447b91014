"""Learned values on raw world states, on the driver.

``LearnedValues`` keeps a copy of the Learner's networks (their running averages when
``ema_decay`` > 0, else the latest weights; never the targets) in the driver process, filled
from ``learner_group.get_weights()`` (RLlib's public accessor, the same
for a local and a remote Learner). ``Empo.values``, ``Empo.robot_policy`` and
``Empo.v_h_e_values`` read it; it is re-synced only when the weights changed.

Quantities without a network (X_h, U_r, V_r in direct mode) come from the others by the
direct-mode functions of :mod:`rllib_empo.algorithm.targets` (``x_h_at``, ``u_r_at``,
``v_r_at`` with ``target=False``), over *every* goal of each state, at the nominal beta_r.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from rllib_empo.algorithm.env import world_for_config
from rllib_empo.algorithm.module import AVERAGE_PREFIX, TARGET_PREFIX, EmpoRLModule
from rllib_empo.algorithm.targets import u_r_at, v_r_at, x_h_at
from rllib_empo.theory.params import EmpoParams
from rllib_empo.worlds.protocol import check_goals


class LearnedValues:
    """The driver's view of the world and of the Learner's module (module docstring)."""

    QUANTITIES = ("q_r", "pi_r", "x_h", "u_r", "v_r")

    def __init__(self, config):
        self.world = world_for_config(config.env, config.env_config)
        self.spec = config.table_spec()
        self.params = EmpoParams.from_config(config)
        self.module = EmpoRLModule(
            observation_space=gym.spaces.Box(-np.inf, np.inf, (self.spec.obs_dim,), np.float32),
            action_space=gym.spaces.Discrete(self.spec.num_robot_actions),
            model_config=config.model_config)
        self.version = None          # which weights the module holds (Empo's counter)

    def sync(self, weights: dict, version) -> None:
        """Load the Learner's weights: the running averages of the networks where there are
        some (``ema_decay`` > 0), else the latest weights."""
        prefix = AVERAGE_PREFIX
        averaged = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        plain = {k: v for k, v in weights.items()
                 if not k.startswith(prefix) and not k.startswith(TARGET_PREFIX)}
        self.module.set_state({**plain, **averaged})
        self.version = version

    # ---- inputs -------------------------------------------------------------------------
    def obs(self, states) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(self.world.encode_state(s), np.float32)
                                          for s in states]))

    def goal_tables(self, states):
        """All goals of every state: enc [N, H, G, Dg], weights [N, H, G] (zero padded)."""
        humans = list(self.world.human_agent_indices)
        goals = [[check_goals(self.world, s, h) for h in humans] for s in states]
        G = max(len(g) for per_state in goals for g in per_state)
        enc = np.zeros((len(states), len(humans), G, self.spec.goal_dim), np.float32)
        w = np.zeros((len(states), len(humans), G), np.float32)
        for i, per_state in enumerate(goals):
            for j, gl in enumerate(per_state):
                for k, (g, gw) in enumerate(gl):
                    enc[i, j, k], w[i, j, k] = self.world.encode_goal(g), gw
        return torch.from_numpy(enc), torch.from_numpy(w)

    # ---- values -------------------------------------------------------------------------
    def values(self, states, need=QUANTITIES) -> dict:
        """{quantity: float64 array} for the quantities in ``need`` at raw world states."""
        m, th = self.module, self.params
        out = {}
        with torch.no_grad():
            obs = self.obs(states)
            q = m.q_r_values(obs)
            out["q_r"], out["pi_r"] = q, th.policy(q)
            if {"x_h", "u_r", "v_r"} & set(need):
                enc, w = ((None, None) if "x_h" in m.network_names
                          else self.goal_tables(states))
                out["x_h"] = x_h_at(m, obs, enc, w, th, target=False)
                out["u_r"] = u_r_at(m, obs, enc, w, th, target=False)
                out["v_r"] = v_r_at(m, obs, enc, w, th.beta_r, th, target=False)
        return {k: v.numpy().astype(np.float64) for k, v in out.items() if k in need}

    def v_h_e_values(self, items) -> np.ndarray:
        """V_h^e for (state, human position in human_agent_indices, goal) triples."""
        H = len(self.world.human_agent_indices)
        obs = self.obs([s for s, _, _ in items])
        goal = torch.from_numpy(np.stack([np.asarray(self.world.encode_goal(g), np.float32)
                                          for _, _, g in items]))
        onehot = torch.nn.functional.one_hot(torch.tensor([h for _, h, _ in items]), H).float()
        with torch.no_grad():
            return self.module.v_h_e_values(obs, torch.cat([goal, onehot], -1)).numpy().astype(np.float64)
