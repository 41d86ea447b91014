"""Exact EMPO phase 2 on small worlds: backward induction of eqs. (4)-(9) in float64.

``solve(world, prior, params)`` (an ``EmpoParams``, or its fields as keywords:
``solve(world, prior, beta_r=..., gamma_h=..., ...)``) visits
every reachable state (``StateGraph``) and processes the state DAG level by level, successors
first. Within a level everything is batched: for the n states of the level,

    Q_r   = gamma_r * E_{a_H ~ pi_bar_H} E_{s'} V_r(s')        (4)  pi_bar_h = sum_g w(g) pi_h(.|s,g)
    pi_r  = power law of Q_r                                  (5)
    V_h^e = E_{a_h ~ pi_h(.|s,g)} E_{a_-h ~ pi_bar} E_{a_r ~ pi_r} E_{s'}[...]   (6)
    X_h, U_r, V_r                                             (7)-(9)

The expectation over all humans' goals in (4) and over the other humans' goals in (6) is the
expectation over their goal-marginal policies pi_bar, since goals and actions of different
humans are independent given s. All formulas come from ``rllib_empo.theory.equations``.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from rllib_empo.exact.statespace import DEFAULT_MAX_STATES, StateGraph, TooManyStatesError
from rllib_empo.theory import equations as eq
from rllib_empo.theory.params import EmpoParams
from rllib_empo.worlds.protocol import world_name

_LETTERS = "abcdefghijklmnop"


class _StateMap(Mapping):
    """Read-only ``state -> value`` view over an array indexed like ``graph.states``."""

    def __init__(self, graph: StateGraph, getter):
        self._graph, self._get = graph, getter

    def __getitem__(self, state):
        return self._get(self._graph.index[state])

    def __iter__(self):
        return iter(self._graph.states)

    def __len__(self):
        return self._graph.num_states


@dataclass
class ExactSolution:
    """The exact phase-2 solution. Per-state mappings: ``q_r[s]`` and ``pi_r[s]`` (arrays over
    joint robot actions), ``v_r[s]``, ``u_r[s]``, ``x_h[s]`` (array over humans, in
    ``world.human_agent_indices`` order) and ``v_h_e[s]`` (dict ``(h, goal) -> value`` over the
    goals possible at s). Array forms (rows = ``graph.states``) are kept as attributes.
    Terminal states have Q_r = 0, V_r = 0, U_r = 0 and V_h^e = 0."""

    graph: StateGraph
    Q: np.ndarray
    PI: np.ndarray
    V_R: np.ndarray
    U_R: np.ndarray
    X_H: np.ndarray
    V_HE: dict
    params: EmpoParams
    solve_time_s: float
    goals: dict = field(init=False)

    def __post_init__(self):
        self.goals = {h: self.graph.goal_space(h)[0] for h in self.graph.humans}

    @property
    def states(self) -> list:
        return self.graph.states

    @property
    def initial_state(self):
        return self.graph.states[0]

    @property
    def num_states(self) -> int:
        return self.graph.num_states

    @property
    def nonterminal_states(self) -> list:
        return [s for s, t in zip(self.graph.states, self.graph.terminal) if not t]

    q_r = property(lambda self: _StateMap(self.graph, lambda i: self.Q[i]))
    pi_r = property(lambda self: _StateMap(self.graph, lambda i: self.PI[i]))
    v_r = property(lambda self: _StateMap(self.graph, lambda i: float(self.V_R[i])))
    u_r = property(lambda self: _StateMap(self.graph, lambda i: float(self.U_R[i])))
    x_h = property(lambda self: _StateMap(self.graph, lambda i: self.X_H[i]))

    @property
    def v_h_e(self) -> Mapping:
        def per_state(i):
            out = {}
            for h in self.graph.humans:
                _, W, _ = self.graph.goal_space(h)
                for g, goal in enumerate(self.goals[h]):
                    if W[i, g] > 0 or self.graph.terminal[i]:
                        out[(h, goal)] = float(self.V_HE[h][i, g])
            return out
        return _StateMap(self.graph, per_state)

    def summary(self) -> str:
        s0 = 0
        lines = [f"exact solution: {self.num_states} reachable states, solved in "
                 f"{self.solve_time_s:.2f} s",
                 f"V_r(s0) = {self.V_R[s0]:.6g}   U_r(s0) = {self.U_R[s0]:.6g}",
                 "X_h(s0) = " + ", ".join(f"{x:.4f}" for x in self.X_H[s0]),
                 "pi_r(s0) = " + ", ".join(f"{p:.4f}" for p in self.PI[s0]),
                 "Q_r(s0)  = " + ", ".join(f"{q:.5g}" for q in self.Q[s0])]
        return "\n".join(lines)


def prior_table(prior, graph: StateGraph, h: int, goals: list) -> np.ndarray:
    """[S, G, A] array of prior(s, h, g) over all states and goals (vectorised when the prior
    offers ``table``)."""
    if hasattr(prior, "table"):
        return np.asarray(prior.table(graph, h, goals), dtype=np.float64)
    out = np.empty((graph.num_states, len(goals), graph.A))
    for i, s in enumerate(graph.states):
        for g, goal in enumerate(goals):
            out[i, g] = prior(s, h, goal)
    return out


def solve(world, prior, params: EmpoParams | None = None, *,
          graph: StateGraph | None = None, max_states: int | None = DEFAULT_MAX_STATES,
          limit_name: str = "max_states", verbose: bool = False,
          x_h: np.ndarray | None = None, **param_values) -> ExactSolution:
    """Solve EMPO phase 2 exactly on ``world`` with human prior ``prior``.

    ``params`` is an ``EmpoParams``; alternatively give its fields as keywords
    (``beta_r=10.0, gamma_h=0.99, ...``; the others keep EmpoParams' defaults).
    Reuses ``prior.graph`` (a BoltzmannHumanPrior's enumeration of the same world) when given.
    Raises WorldProtocolError for a cyclic world, TooManyStatesError (its message names
    ``limit_name``) for one with more than ``max_states`` states, whichever graph is used
    (default DEFAULT_MAX_STATES, the config's ``exact_max_states``; None: no limit).

    ``x_h`` ([num_states, H], rows = ``graph.states``, humans in ``world.human_agent_indices``
    order; give ``graph`` too) replaces eq. (7)'s X_h at the non-terminal states: the result
    is the robot's exact fixed point (4), (5), (8), (9) given those X_h, with the humans'
    V_h^e (6) under its policy. A diagnostic: with a learner's X_h it shows how far X_h's
    error alone moves pi_r (``benchmarks/error_budget.py``).
    """
    if params is None:
        params = EmpoParams(**param_values)
    elif param_values:
        raise TypeError(f"solve() takes params or parameter keywords, not both "
                        f"(got params and {sorted(param_values)})")
    beta_r, gamma_h, gamma_r = params.beta_r, params.gamma_h, params.gamma_r
    zeta, xi, eta = params.zeta, params.xi, params.eta
    x_h_floor, neg_q_r_floor = params.x_h_floor, params.neg_q_r_floor
    t0 = time.perf_counter()
    if graph is None:
        pg = getattr(prior, "graph", None)
        graph = (pg if pg is not None and pg.world is world
                 else StateGraph(world, max_states, limit_name))
    if max_states is not None and graph.num_states > max_states:   # a prior's or given graph
        raise TooManyStatesError(world_name(world), max_states, graph.num_states, limit_name)
    S, A, Ar = graph.num_states, graph.A, graph.num_robot_actions
    humans, robots = graph.humans, graph.robots
    if x_h is not None:
        x_h = np.asarray(x_h, dtype=np.float64)
        if x_h.shape != (S, len(humans)) or not np.isfinite(x_h).all():
            raise ValueError(f"x_h must be a finite array of shape (num_states, humans) = "
                             f"{(S, len(humans))} over graph.states, got {x_h.shape}")
    goal_w, ach, pi_h, pibar = {}, {}, {}, {}
    for h in humans:
        goals, W, achieved = graph.goal_space(h)
        goal_w[h], ach[h] = W, achieved
        pi_h[h] = prior_table(prior, graph, h, goals)                   # [S, G, A]
        pibar[h] = np.einsum("sg,sga->sa", W, pi_h[h])                  # goal-marginal policy

    Q, PI = np.zeros((S, Ar)), np.full((S, Ar), 1.0 / Ar)
    V_R, U_R = np.zeros(S), np.zeros(S)
    X_H = np.full((S, len(humans)), x_h_floor)
    V_HE = {h: np.zeros((S, goal_w[h].shape[1])) for h in humans}
    term = graph.terminal[:, None]
    L = {agent: _LETTERS[agent] for agent in range(graph.N)}
    agents = "".join(L[a] for a in range(graph.N))
    robots_rev = "".join(L[r] for r in reversed(robots))  # a_r = sum_i a_i A^i
    t = lambda x: torch.from_numpy(x)                        # noqa: E731

    for level in graph.levels:
        level = level[~graph.terminal[level]]
        n = level.size
        if n == 0:
            continue
        # (4): human actions under the goal-marginal priors, robot axes kept
        EV = graph.expect(level, V_R[:, None])[..., 0]
        ops = [EV] + [pibar[h][level] for h in humans]
        subs = ["z" + agents] + ["z" + L[h] for h in humans]
        q = gamma_r * np.einsum(",".join(subs) + "->z" + robots_rev, *ops).reshape(n, Ar)
        pi = eq.power_law_policy(t(q), beta_r, neg_q_r_floor)            # (5)
        pi_axes = pi.numpy().reshape((n,) + (A,) * len(robots))
        for i, h in enumerate(humans):                                  # (6)
            cont = np.where(ach[h], 1.0, np.where(term, 0.0, gamma_h * V_HE[h]))
            EW = graph.expect(level, cont)                              # (n, A.., G)
            ops = [EW, pi_axes, pi_h[h][level]]
            subs = ["z" + agents + "y", "z" + robots_rev, "zy" + L[h]]
            for o in humans:
                if o != h:
                    ops.append(pibar[o][level])
                    subs.append("z" + L[o])
            V_HE[h][level] = np.einsum(",".join(subs) + "->zy", *ops, optimize=True)
            X_H[level, i] = (eq.x_h_from_v_h_e(t(V_HE[h][level]), t(goal_w[h][level]),
                                               zeta, x_h_floor).numpy()  # (7)
                             if x_h is None else x_h[level, i])
        u = eq.u_r_from_x_h(t(X_H[level]), xi, eta, x_h_floor)           # (8)
        Q[level], PI[level], U_R[level] = q, pi.numpy(), u.numpy()
        V_R[level] = eq.v_r_from(u, pi, t(q)).numpy()                     # (9)

    sol = ExactSolution(graph, Q, PI, V_R, U_R, X_H, V_HE, params, time.perf_counter() - t0)
    if verbose:
        print(sol.summary())
    return sol
