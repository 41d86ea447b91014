"""Human policy priors pi_h(a_h | s, g_h): the fixed "phase 1" behaviour EMPO assumes.

A prior is any callable ``prior(state, h, goal) -> np.ndarray[num_actions]`` (normalised).
The project ships three:

- ``UniformHumanPrior``: every action equally likely.
- ``BoltzmannHumanPrior.solve(world, beta_h, gamma_h)``: exact phase 1 by backward induction
  (docs/DESIGN.md): the robots are worst-case, the other humans uniform,
      Q_h(s,a_h,g) = E_{a_-h uniform} min_{a_r} E_{s'}[1{g in s'} + (1-1{g in s'}) gamma_h V_h(s',g)],
      pi_h = softmax(beta_h Q_h), V_h = sum pi_h Q_h,
  and the human stays (action 0) once its goal is achieved. Small worlds only.
- ``HeuristicHumanPrior(world, beta_h)``: Boltzmann over minus the shortest-path distance to the
  goal after each action (``world.goal_distance_after``); needs no enumeration, for large worlds.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from rllib_empo.theory.equations import boltzmann_policy
from rllib_empo.exact.statespace import StateGraph
from rllib_empo.worlds.protocol import WorldProtocolError, checked_achieved, world_name


def _stay(num_actions: int) -> np.ndarray:
    out = np.zeros(num_actions)
    out[0] = 1.0
    return out


class UniformHumanPrior:
    """pi_h(a | s, g) = 1 / num_actions."""

    def __init__(self, world):
        self.num_actions = int(world.num_actions)
        self._p = np.full(self.num_actions, 1.0 / self.num_actions)

    def __call__(self, state, h, goal) -> np.ndarray:
        return self._p

    def table(self, graph: StateGraph, h: int, goals: list) -> np.ndarray:
        """[S, G, A] prior over every state of ``graph`` and goal of ``goals``."""
        return np.broadcast_to(self._p, (graph.num_states, len(goals), self.num_actions))


class HeuristicHumanPrior:
    """Boltzmann over minus the shortest-path distance to the goal after each action; the
    human stays once the goal is achieved. Needs ``world.goal_distance_after(state, h, goal)``."""

    def __init__(self, world, beta_h: float = 2.0):
        if not callable(getattr(world, "goal_distance_after", None)):
            raise WorldProtocolError(
                f"world {world_name(world)!r} has no method `goal_distance_after`, which the "
                "heuristic human prior needs; use 'uniform' or 'boltzmann' instead")
        self.world, self.beta_h = world, float(beta_h)
        self.num_actions = int(world.num_actions)

    def __call__(self, state, h, goal) -> np.ndarray:
        if checked_achieved(self.world, goal, state):
            return _stay(self.num_actions)
        logits = -self.beta_h * np.asarray(self.world.goal_distance_after(state, h, goal), float)
        logits -= logits.max()
        p = np.exp(logits)
        return p / p.sum()

    def table(self, graph: StateGraph, h: int, goals: list) -> np.ndarray:
        return np.array([[self(s, h, g) for g in goals] for s in graph.states]
                        ).reshape(graph.num_states, len(goals), self.num_actions)


class BoltzmannHumanPrior:
    """The exact phase-1 prior of a small world; build it with ``BoltzmannHumanPrior.solve``."""

    def __init__(self, graph: StateGraph, beta_h: float, gamma_h: float,
                 tables: dict, values: dict, solve_time_s: float):
        self.graph, self.beta_h, self.gamma_h = graph, beta_h, gamma_h
        self.num_actions = graph.A
        self._tables = tables          # h -> [S, G, A]
        self.values = values           # h -> [S, G]: V_h(s, g) of phase 1
        self._goal_index = {h: {g: i for i, g in enumerate(graph.goal_space(h)[0])}
                            for h in graph.humans}
        self.solve_time_s = solve_time_s

    @classmethod
    def solve(cls, world, beta_h: float = 10.0, gamma_h: float = 0.99,
              graph: StateGraph | None = None, max_states: int | None = None,
              limit_name: str = "max_states") -> "BoltzmannHumanPrior":
        """Backward induction of phase 1 over every reachable state of ``world`` (at most
        ``max_states`` of them: TooManyStatesError, see ``StateGraph``)."""
        if beta_h < 0 or not 0 < gamma_h <= 1:
            raise ValueError(f"beta_h must be >= 0 and gamma_h in (0, 1], got {beta_h}, {gamma_h}")
        t0 = time.perf_counter()
        graph = graph or StateGraph(world, max_states, limit_name)
        tables, values = {}, {}
        for h in graph.humans:
            tables[h], values[h] = _solve_phase1(graph, h, beta_h, gamma_h)
        return cls(graph, beta_h, gamma_h, tables, values, time.perf_counter() - t0)

    def __call__(self, state, h, goal) -> np.ndarray:
        try:
            s = self.graph.index[state]
            g = self._goal_index[h][goal]
        except KeyError:
            raise WorldProtocolError(
                f"BoltzmannHumanPrior has no entry for state {state!r}, human {h}, goal {goal!r}: "
                "it only covers states reachable from the initial state") from None
        return self._tables[h][s, g]

    def table(self, graph: StateGraph, h: int, goals: list) -> np.ndarray:
        if graph is self.graph and goals == graph.goal_space(h)[0]:
            return self._tables[h]
        return np.array([[self(s, h, g) for g in goals] for s in graph.states]
                        ).reshape(graph.num_states, len(goals), self.num_actions)


def _solve_phase1(graph: StateGraph, h: int, beta_h: float, gamma_h: float):
    goals, _, ach = graph.goal_space(h)
    S, G, A = graph.num_states, len(goals), graph.A
    V = np.zeros((S, G))
    pi = np.zeros((S, G, A))
    pi[:, :, 0] = 1.0                      # terminal states: stay (never used)
    term = graph.terminal[:, None]
    robot_axes = [1 + r for r in graph.robots]
    other_axes = [1 + o for o in graph.humans if o != h]
    stay = np.zeros(A)
    stay[0] = 1.0
    for level in graph.levels:
        level = level[~graph.terminal[level]]
        if level.size == 0:
            continue
        W = np.where(ach, 1.0, np.where(term, 0.0, gamma_h * V))          # value of s' for g
        EW = graph.expect(level, W)                                      # (n, A.., G)
        EW = EW.min(axis=tuple(robot_axes), keepdims=True)               # worst-case robots
        if other_axes:
            EW = EW.mean(axis=tuple(other_axes), keepdims=True)          # uniform other humans
        # only human h's axis still has size A, so this reshape keeps (n, a_h, g)
        q = EW.reshape(level.size, A, G).transpose(0, 2, 1)               # (n, G, A)
        p = boltzmann_policy(torch.from_numpy(q), beta_h).numpy()
        p = np.where(ach[level][:, :, None], stay, p)                    # stay once achieved
        pi[level] = p
        V[level] = (p * q).sum(-1)
    return pi, V
