"""Enumeration of a small world's reachable states, for exact backward induction.

``StateGraph(world)`` visits every state reachable from ``world.initial_state()`` under all
joint actions, stores one sparse transition matrix T with a row per (state, joint action)
and a column per successor, and orders the states in *levels*: level 0 holds the states
without successors (terminal), level L the states whose successors all lie in levels < L.
Backward induction then processes one level at a time with matrix products instead of a
Python loop per state, which is what lets 10^5-state worlds solve in minutes.

Joint actions are enumerated with agent 0 as the most significant digit, so ``T @ values``
reshaped to ``(n, A, ..., A, ...)`` has one axis per agent id.
"""
from __future__ import annotations

import itertools
import time
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from rllib_empo.worlds.protocol import (WorldProtocolError, check_goals, check_state_equality,
                                        check_world, checked_achieved, checked_successors,
                                        num_agents, short_repr, world_call, world_name)

# The largest world the exact solver enumerates unless told otherwise (``max_states``); the
# config's ``exact_max_states`` defaults to the same number.
DEFAULT_MAX_STATES = 1_000_000
# Every new state is checked to equal a copy of itself (NaN inside a state, identity-hashed
# objects) up to this many states, then one in EQUALITY_CHECK_EVERY: a world whose states
# never compare equal shows it within the first few states, and large worlds stay fast.
EQUALITY_CHECK_ALL = 10_000
EQUALITY_CHECK_EVERY = 97


class TooManyStatesError(WorldProtocolError):
    """A world has more reachable states than the exact solver was allowed to enumerate.

    The message is one line that names the world, the limit and ``limit_name``, the setting
    that raises the limit where the caller can change it (``exact_max_states`` for an
    algorithm, ``--max-states`` for ``rllib-empo solve``)."""

    def __init__(self, world_name: str, max_states: int, lower_bound: int | None = None,
                 limit_name: str = "max_states"):
        self.world_name, self.max_states = world_name, int(max_states)
        self.lower_bound, self.limit_name = lower_bound, limit_name
        text = self.message(self.default_how())
        if limit_name == "max_states":             # called directly: name the other way out
            text += (" (or train with a prior that does not enumerate the world: "
                     "prior='heuristic' or 'uniform')")
        super().__init__(text)

    def default_how(self) -> str:
        if self.limit_name == "max_states":        # called directly: every way to raise it
            return (f"with max_states= (now {self.max_states}; StateGraph, solve), "
                    "exact_max_states (the config) or --max-states (rllib-empo solve), if the "
                    "machine has the memory,")
        return f"{self.limit_name}={self.max_states}"

    def message(self, how: str) -> str:
        """The one-line message with ``how`` as the way to raise the limit."""
        known = f" (at least {self.lower_bound:,})" if self.lower_bound is not None else ""
        return (f"world {self.world_name!r} has more than {self.max_states:,} reachable "
                f"states{known}, too large for the exact solver; raise the limit {how} to "
                "enumerate it")


def check_state_limit(world, max_states: int | None, limit_name: str = "max_states") -> None:
    """Fail at once when the world certifies more than ``max_states`` reachable states
    (an optional ``reachable_states_lower_bound()`` method, e.g. crowd's), instead of after
    enumerating ``max_states`` of them."""
    bound = getattr(world, "reachable_states_lower_bound", None)
    if max_states is None or not callable(bound):
        return
    n = int(bound())
    if n > max_states:
        raise TooManyStatesError(world_name(world), max_states, n, limit_name)


class StateGraph:
    """All reachable states of ``world`` with transitions and a level order.

    Attributes: ``states`` (list), ``index`` (state -> int), ``terminal`` (bool [S]),
    ``T`` (csr [S*J, S]), ``levels`` (list of int arrays, successors first), ``build_time_s``.
    Raises WorldProtocolError on a cycle among reachable states or on a state that is not
    equal to a copy of itself, and TooManyStatesError after ``max_states`` states (default
    DEFAULT_MAX_STATES; None means no limit; at once when the world's
    ``reachable_states_lower_bound()`` exceeds it).
    """

    def __init__(self, world, max_states: int | None = DEFAULT_MAX_STATES,
                 limit_name: str = "max_states"):
        t0 = time.perf_counter()
        check_world(world)
        check_state_limit(world, max_states, limit_name)
        self.world = world
        self.A = int(world.num_actions)
        self.N = num_agents(world)
        self.J = self.A ** self.N
        self.humans = list(world.human_agent_indices)
        self.robots = list(world.robot_agent_indices)
        self.num_robot_actions = self.A ** len(self.robots)
        joint_actions = list(itertools.product(range(self.A), repeat=self.N))

        s0 = world.initial_state()
        states, index = [s0], {s0: 0}
        rows, cols, data, terminal = [], [], [], []
        i = 0
        while i < len(states):
            s = states[i]
            is_term = bool(world_call(world, lambda: f"is_terminal({short_repr(s)})", world.is_terminal, s))
            terminal.append(is_term)
            if not is_term:
                for j, ja in enumerate(joint_actions):
                    for p, succ in checked_successors(world, s, ja):
                        k = index.get(succ)
                        if k is None:
                            k = index[succ] = len(states)
                            states.append(succ)
                            if k < EQUALITY_CHECK_ALL or k % EQUALITY_CHECK_EVERY == 0:
                                check_state_equality(world, succ)
                            if max_states is not None and len(states) > max_states:
                                raise TooManyStatesError(world_name(world), max_states,
                                                         limit_name=limit_name)
                        rows.append(i * self.J + j)
                        cols.append(k)
                        data.append(float(p))
            i += 1
        S = len(states)
        self.states, self.index = states, index
        self.terminal = np.array(terminal, dtype=bool)
        self.T = sp.csr_matrix((np.array(data), (np.array(rows, dtype=np.int64),
                                                 np.array(cols, dtype=np.int64))),
                               shape=(S * self.J, S))
        self.levels = self._level_order()
        self.build_time_s = time.perf_counter() - t0

    @property
    def num_states(self) -> int:
        return len(self.states)

    def _level_order(self) -> list[np.ndarray]:
        """Kahn's algorithm on the state graph, one whole level per iteration."""
        S = self.num_states
        adj = self._state_adjacency()  # adj[s, s'] = 1 if s' follows s under some joint action
        remaining = np.asarray(adj.sum(axis=1)).ravel().astype(np.int64)
        done = np.zeros(S, dtype=bool)
        levels = []
        frontier = np.flatnonzero(remaining == 0)
        while frontier.size:
            levels.append(frontier)
            done[frontier] = True
            mark = np.zeros(S)
            mark[frontier] = 1.0
            # each predecessor has as many fewer pending successors as it has in the frontier
            remaining -= np.rint(adj @ mark).astype(np.int64)
            frontier = np.flatnonzero((remaining == 0) & ~done)
        if not done.all():
            stuck = [self.states[k] for k in np.flatnonzero(~done)[:3]]
            raise WorldProtocolError(
                f"world {world_name(self.world)!r} has a cycle among its reachable states "
                f"(e.g. through {stuck}); the exact solver needs an acyclic state graph "
                "(put the steps left into the state)")
        return levels

    def _state_adjacency(self) -> sp.csr_matrix:
        coo = self.T.tocoo()
        S = self.num_states
        adj = sp.csr_matrix((np.ones_like(coo.data), (coo.row // self.J, coo.col)), shape=(S, S))
        adj.data[:] = 1.0  # duplicates were summed; keep 0/1
        return adj

    def level_rows(self, level: np.ndarray) -> np.ndarray:
        """Row indices of T for every (state in ``level``, joint action)."""
        return (level[:, None] * self.J + np.arange(self.J)[None, :]).ravel()

    def expect(self, level: np.ndarray, values: np.ndarray) -> np.ndarray:
        """E_{s'}[values(s')] for each state of ``level`` and joint action, shaped
        (n, A, ..., A, *values.shape[1:]) with one axis per agent id."""
        out = self.T[self.level_rows(level)] @ values
        return np.asarray(out).reshape((len(level),) + (self.A,) * self.N + values.shape[1:])

    def goal_space(self, h: int) -> tuple[list, np.ndarray, np.ndarray]:
        """Human h's goals over all states: (goals, weights [S, G], achieved [S, G]).

        Goals are the union of ``possible_goals(s, h)`` over non-terminal states; a goal has
        weight 0 where it is not possible. ``achieved[s, g] = g.is_achieved(s)``.
        """
        return self._goal_spaces[h]

    @cached_property
    def _goal_spaces(self) -> dict:
        spaces = {}
        for h in self.humans:
            goals, gidx, entries = [], {}, []
            for s_i, s in enumerate(self.states):
                if self.terminal[s_i]:
                    continue
                for goal, w in check_goals(self.world, s, h):
                    g = gidx.get(goal)
                    if g is None:
                        g = gidx[goal] = len(goals)
                        goals.append(goal)
                    entries.append((s_i, g, w))
            W = np.zeros((self.num_states, len(goals)))
            for s_i, g, w in entries:
                W[s_i, g] += w
            ach = np.array([[checked_achieved(self.world, goal, s) for goal in goals]
                            for s in self.states],
                           dtype=bool).reshape(self.num_states, len(goals))
            spaces[h] = (goals, W, ach)
        return spaces
