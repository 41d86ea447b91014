"""Learned values on raw world states, and how close they are to the exact solution.

``robot_policy(algo, states)``, ``values(algo, states)`` and ``v_h_e_values(algo, items)`` read
the Learner's networks (the main ones, not the targets) at the nominal beta_r; the quantities
without a network (X_h, U_r, V_r in direct mode) are computed from the others by eqs. (7)-(9),
exactly as the learner's targets are. ``compare_to_exact(algo, solution)`` reports:

- ``tv_pi_r_s0``: total-variation distance of pi_r at the initial state;
- ``v_r_s0_rel_error``: |V_r - V_r*| / |V_r*| at the initial state;
- ``mean_tv_pi_r`` / ``max_tv_pi_r``: TV of pi_r over reachable non-terminal states;
- ``argmax_agreement``: share of those states (with a unique exact best action) where the
  learned policy's most likely action is the exact one;
- ``mean_abs_v_h_e_error``: mean |V_h^e - V_h^e*| over (state, human, possible goal);
- ``mean_abs_x_h_error`` and ``q_r_s0_max_rel_error``.
"""
from __future__ import annotations

import numpy as np
import torch

from ray.rllib.core import DEFAULT_MODULE_ID

from rllib_empo import equations as eq
from rllib_empo.world import check_goals


class _Analysis:
    """The driver's view of the world and of the Learner's module."""

    def __init__(self, algo):
        from rllib_empo.env import world_for_config
        self.algo = algo
        self.world = world_for_config(algo.config.env, algo.config.env_config)
        self.spec = algo.config.table_spec()
        self._module = None

    def module(self):
        group = self.algo.learner_group
        if group.is_local:
            return group._learner.module[DEFAULT_MODULE_ID].unwrapped()
        if self._module is None:
            import gymnasium as gym
            from rllib_empo.module import EmpoRLModule
            self._module = EmpoRLModule(
                observation_space=gym.spaces.Box(-np.inf, np.inf, (self.spec.obs_dim,), np.float32),
                action_space=gym.spaces.Discrete(self.spec.num_robot_actions),
                model_config=self.algo.config.model_config)
        self._module.set_state(group.get_weights()[DEFAULT_MODULE_ID])
        return self._module

    def obs(self, states) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(self.world.encode_state(s), np.float32)
                                          for s in states]))

    def goal_tables(self, states):
        """All goals of every state: enc [N, H, G, Dg], weights [N, H, G]."""
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


def _analysis(algo) -> _Analysis:
    if getattr(algo, "_analysis", None) is None:
        algo._analysis = _Analysis(algo)
    return algo._analysis


def robot_policy(algo, states) -> np.ndarray:
    return values(algo, states, need=("pi_r",))["pi_r"]


def values(algo, states, need=("q_r", "pi_r", "x_h", "u_r", "v_r")) -> dict:
    an = _analysis(algo)
    m, cfg = an.module(), algo.config
    out = {}
    with torch.no_grad():
        obs = an.obs(states)
        q = m.q_r_values(obs)
        pi = eq.power_law_policy(q, cfg.beta_r, cfg.neg_q_r_floor)
        out["q_r"], out["pi_r"] = q, pi
        if {"x_h", "u_r", "v_r"} & set(need):
            if "x_h" in m.network_names:
                x = m.x_h_values(obs)
            else:
                enc, w = an.goal_tables(states)
                v = m.v_h_e_values(obs[:, None, None, :], m.goal_inputs(enc))
                x = eq.x_h_from_v_h_e(v, w, cfg.zeta, cfg.x_h_floor)
            u = (m.u_r_values(obs) if "u_r" in m.network_names
                 else eq.u_r_from_x_h(x, cfg.xi, cfg.eta, cfg.x_h_floor))
            v_r = m.v_r_values(obs) if "v_r" in m.network_names else eq.v_r_from(u, pi, q)
            out |= {"x_h": x, "u_r": u, "v_r": v_r}
    return {k: v.numpy().astype(np.float64) for k, v in out.items() if k in need}


def v_h_e_values(algo, items) -> np.ndarray:
    """V_h^e for (state, human position in human_agent_indices, goal) triples."""
    an = _analysis(algo)
    m = an.module()
    H = len(an.world.human_agent_indices)
    obs = an.obs([s for s, _, _ in items])
    goal = torch.from_numpy(np.stack([np.asarray(an.world.encode_goal(g), np.float32)
                                      for _, _, g in items]))
    onehot = torch.nn.functional.one_hot(torch.tensor([h for _, h, _ in items]), H).float()
    with torch.no_grad():
        return m.v_h_e_values(obs, torch.cat([goal, onehot], -1)).numpy().astype(np.float64)


def compare_to_exact(algo, solution) -> dict:
    """Fidelity of the learned solution against ``exact.solve(...)`` (module docstring)."""
    graph = solution.graph
    idx = np.flatnonzero(~graph.terminal)
    states = [graph.states[i] for i in idx]
    learned = values(algo, states)
    pi_exact = solution.PI[idx]
    tv = 0.5 * np.abs(learned["pi_r"] - pi_exact).sum(-1)
    s0 = int(np.flatnonzero(idx == 0)[0])
    srt = np.sort(pi_exact, axis=-1)
    unique = srt[:, -1] - srt[:, -2] > 1e-9 if pi_exact.shape[1] > 1 else np.ones(len(idx), bool)
    agree = learned["pi_r"].argmax(-1) == pi_exact.argmax(-1)
    items, exact_v = [], []
    for pos, h in enumerate(graph.humans):
        _, W, _ = graph.goal_space(h)
        for i in idx:
            for g in np.flatnonzero(W[i] > 0):
                items.append((graph.states[i], pos, solution.goals[h][g]))
                exact_v.append(solution.V_HE[h][i, g])
    v_err = np.abs(v_h_e_values(algo, items) - np.array(exact_v))
    q0, q0_exact = learned["q_r"][s0], solution.Q[0]
    return {
        "tv_pi_r_s0": float(tv[s0]),
        "v_r_s0_rel_error": float(abs(learned["v_r"][s0] - solution.V_R[0]) / abs(solution.V_R[0])),
        "mean_tv_pi_r": float(tv.mean()),
        "max_tv_pi_r": float(tv.max()),
        "argmax_agreement": float(agree[unique].mean()) if unique.any() else 1.0,
        "mean_abs_v_h_e_error": float(v_err.mean()),
        "mean_abs_x_h_error": float(np.abs(learned["x_h"] - solution.X_H[idx]).mean()),
        "q_r_s0_max_rel_error": float(np.max(np.abs(q0 - q0_exact) / np.abs(q0_exact))),
        "num_states": int(len(idx)),
    }


def exact_solution_for(algo):
    """The exact solution of the algorithm's world, prior and parameters (solved once)."""
    if getattr(algo, "_exact", None) is None:
        from rllib_empo.env import prior_from_env_config
        from rllib_empo.exact import solve
        cfg = algo.config
        world = _analysis(algo).world
        prior = prior_from_env_config(world, cfg.env_config, cfg.gamma_h)
        algo._exact = solve(world, prior, beta_r=cfg.beta_r, gamma_h=cfg.gamma_h,
                            gamma_r=cfg.gamma_r, zeta=cfg.zeta, xi=cfg.xi, eta=cfg.eta,
                            x_h_floor=cfg.x_h_floor, neg_q_r_floor=cfg.neg_q_r_floor,
                            max_states=200_000)
    return algo._exact


def exact_fidelity(algo) -> dict:
    return compare_to_exact(algo, exact_solution_for(algo))
