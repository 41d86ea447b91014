"""Successor tables: what the learner needs to form model-based targets, as keyed entries.

An EnvRunner's env records, for every step, the *successor table* of the state it left. The
table, the states it mentions and their goals are entries keyed by stable keys
(``rllib_empo.worlds.keys``); the driver stores each distinct entry once
(``rllib_empo.algorithm.store``) and a transition row only names its table. Shapes (H humans,
G goals per human, A actions per agent, A_r joint robot actions, K distinct successors,
J joint actions the table covers, Bm the most successors of one joint action):

| entry | column         | shape        | meaning                                                |
|-------|----------------|--------------|--------------------------------------------------------|
| goal  | enc            | [Dg]         | encode_goal(g)                                         |
| state | obs            | [D]          | encode_state(s)                                        |
|       | terminal       | []           | is_terminal(s)                                         |
|       | goals, goal_w  | [H, G]       | keys and weights of possible_goals(s, h) (eq. 7)       |
| table | state          | []           | key of s                                               |
|       | succ           | [K]          | keys of the distinct successors s'_k                   |
|       | kernel_k/_p    | [J, Bm]      | the k and P(s'_k | s, joint action j) of every outcome |
|       | achieved       | [H, M, K]    | 1{goal m of human h is achieved in s'_k}               |
|       | prior          | [H, G, A]    | pi_h(a | s, g) for the goals of s      (mode "sum")    |
|       | held           | [H]          | the goal each human holds              (sampled modes) |
|       | robot_action   | []           | the robot action taken                 (mode "sampled") |

Three modes (``TableSpec.mode``):
- ``"sum"`` (model-based, default): J = A_r * A^H, every joint action (a_r major, then the
  humans' actions in ``human_agent_indices`` order, C order); M = G, V_h^e is trained for
  every goal of s. The learner sums the humans' actions out under the prior on the batch
  (``targets.expand``). The table depends on s only: one per state.
- ``"sampled_humans"`` (model-based, ``sum_human_actions=False``): the step's sampled human
  actions stand for the sum; J = A_r; M = 1 (each human's held goal). For worlds whose joint
  human action space is too large to enumerate.
- ``"sampled"`` (``use_model_based_targets=False``): the one observed successor; J = 1, and
  the row's weight is 1 / (behaviour probability of the action), an importance weight for the
  V_h^e target.

A state with more goals than ``max_goals_per_human`` keeps ``G`` of them, drawn by weight
with a generator seeded by the state's key (so every EnvRunner draws the same ones), each
with weight 1/G: an unbiased estimate of eq. (7) over the draws, fixed for the state.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rllib_empo.worlds.keys import goal_key, stable_key, state_key
from rllib_empo.worlds.protocol import (WorldProtocolError, check_goals, check_state_equality,
                                        checked_achieved, checked_encoding,
                                        checked_goal_encoding, checked_prior, checked_successors,
                                        joint_action, num_robot_actions)

MODES = ("sum", "sampled_humans", "sampled")


@dataclass(frozen=True)
class TableSpec:
    """What is fixed for a world and a configuration."""
    obs_dim: int
    goal_dim: int
    num_humans: int
    num_robot_actions: int
    num_actions: int
    max_goals: int            # G
    mode: str

    @property
    def joint_actions(self) -> int:   # J
        if self.mode == "sum":
            return self.num_robot_actions * self.num_actions ** self.num_humans
        return self.num_robot_actions if self.mode == "sampled_humans" else 1

    @property
    def trained_goals(self) -> int:   # M
        return self.max_goals if self.mode == "sum" else 1


@dataclass
class _Table:
    key: int
    arrays: dict              # the table's columns (keys of states and goals, not slots)
    state: object             # the source state
    succ: list                # the successor states, in column order
    held: tuple = ()          # the held goals (sampled modes)


class TableBuilder:
    """Builds the keyed entries of one world, prior and TableSpec; caches what depends on the
    state only (bounded by ``cache_size`` entries per cache: once full, new entries are
    built again when needed instead of being kept). ``take_sample`` packs the entries the
    rows since the last call refer to."""

    def __init__(self, world, prior, spec: TableSpec, rng: np.random.Generator,
                 cache_size: int = 200_000):
        self.world, self.prior_fn, self.spec, self.rng = world, prior, spec, rng
        if num_robot_actions(world) != spec.num_robot_actions:
            raise WorldProtocolError("TableSpec does not match the world's robot actions")
        self.humans = list(world.human_agent_indices)
        self.A = int(world.num_actions)
        self.cache_size = cache_size
        self._keys: dict = {}            # state -> key
        self._states: dict = {}          # state -> state entry (dict of arrays)
        self._goals: dict = {}           # goal -> (key, enc)
        self._goal_tables: dict = {}     # state -> [goals of human h, ...] (the G kept)
        self._tables: dict = {}          # table cache key -> _Table
        self._succ: dict = {}            # (state, human actions) -> (successors, kernel)
        self._prior: dict = {}           # (state, human, goal) -> checked prior
        self._obs: dict = {}             # state -> encoding (what the module sees)
        self._pending: dict = {}         # table key -> _Table referenced since take_sample
        # Non-terminal states met as successors, for exploring starts (bounded like the caches),
        # and, when ``track_frontier`` (the env's exploring_starts_frontier), the frontier:
        # those among them not yet stepped from (``visit``).
        self.seen_states: list = []
        self._seen: set = set()
        self.track_frontier = False
        self.frontier: list = []
        self._visited: set = set()

    def _remember(self, cache: dict, key, value):
        if len(cache) < self.cache_size:
            cache[key] = value
        return value

    # ---- pieces -------------------------------------------------------------------------
    def key(self, state) -> int:
        k = self._keys.get(state)
        return k if k is not None else self._remember(self._keys, state, state_key(self.world, state))

    def encode(self, state) -> np.ndarray:
        enc = self._obs.get(state)
        if enc is None:
            enc = self._remember(self._obs, state, checked_encoding(self.world, state,
                                                                    self.spec.obs_dim))
        return enc

    def goal_pair(self, goal) -> tuple[int, np.ndarray]:
        """(key, encoding) of a goal."""
        hit = self._goals.get(goal)
        if hit is None:
            hit = self._remember(self._goals, goal, (
                goal_key(self.world, goal),
                checked_goal_encoding(self.world, goal, self.spec.goal_dim)))
        return hit

    def goal(self, goal) -> int:
        return self.goal_pair(goal)[0]

    def goal_table(self, state) -> list:
        """Per human, the goals kept for ``state`` with their weights (module docstring)."""
        hit = self._goal_tables.get(state)
        if hit is not None:
            return hit
        G, out = self.spec.max_goals, []
        for h in self.humans:
            goals = check_goals(self.world, state, h)
            if len(goals) > G:
                p = np.array([w for _, w in goals], float)
                draw = np.random.default_rng(self.key(state) + h).choice(
                    len(goals), size=G, p=p / p.sum())
                goals = [(goals[j][0], 1.0 / G) for j in draw]
            out.append(goals)
        return self._remember(self._goal_tables, state, out)

    def state_entry(self, state) -> dict:
        """The state's entry: obs, terminal, goal keys and weights (no goals if terminal)."""
        hit = self._states.get(state)
        if hit is not None:
            return hit
        H, G = self.spec.num_humans, self.spec.max_goals
        goals, goal_w = np.full((H, G), -1, np.int64), np.zeros((H, G), np.float32)
        terminal = bool(self.world.is_terminal(state))
        objs = []
        if not terminal:
            for i, per_human in enumerate(self.goal_table(state)):
                for j, (g, w) in enumerate(per_human):
                    goals[i, j], goal_w[i, j] = self.goal(g), w
                    objs.append(g)
        entry = {"key": self.key(state), "obs": self.encode(state), "terminal": terminal,
                 "goals": goals, "goal_w": goal_w, "goal_objs": objs}
        return self._remember(self._states, state, entry)

    def prior(self, state, human: int, goal) -> np.ndarray:
        """The human prior pi_h(. | state, goal), checked once and cached."""
        key = (state, human, goal)
        p = self._prior.get(key)
        if p is None:
            p = self._remember(self._prior, key, checked_prior(self.world, self.prior_fn, state,
                                                               human, goal))
        return p

    def successors(self, state, human_actions=None):
        """(distinct successors, kernel_k [J, Bm], kernel_p [J, Bm]) over every joint action
        (``human_actions`` None: J = A_r * A^H) or over the robot actions with the humans'
        actions fixed (J = A_r)."""
        key = (state, human_actions)
        hit = self._succ.get(key)
        if hit is not None:
            return hit
        profiles = ([tuple(human_actions)] if human_actions is not None else
                    list(np.ndindex(*(self.A,) * len(self.humans))))
        succ, index, outcomes = [], {}, []
        for a_r in range(self.spec.num_robot_actions):
            for prof in profiles:
                merged: dict = {}
                for p, s2 in checked_successors(self.world, state,
                                                joint_action(self.world, a_r, prof)):
                    k = index.get(s2)
                    if k is None:
                        k = index[s2] = len(succ)
                        succ.append(s2)
                    merged[k] = merged.get(k, 0.0) + float(p)
                outcomes.append(merged)
        for s2 in succ:
            if s2 not in self._keys:   # new states only: one that never equals itself is an
                check_state_equality(self.world, s2)   # error, not a new state at every step
        width = max(len(m) for m in outcomes)
        kk = np.full((len(outcomes), width), -1, np.int32)
        kp = np.zeros((len(outcomes), width), np.float32)
        for j, merged in enumerate(outcomes):
            kk[j, :len(merged)] = list(merged)
            kp[j, :len(merged)] = list(merged.values())
        self.remember_states(succ)
        return self._remember(self._succ, key, (succ, kk, kp))

    def remember_states(self, states) -> None:
        for s in states:
            if s not in self._seen and len(self._seen) < self.cache_size \
                    and not self.world.is_terminal(s):
                self._seen.add(s)
                self.seen_states.append(s)
                if self.track_frontier and s not in self._visited:
                    self.frontier.append(s)

    def visit(self, state) -> None:
        """Note that an episode stepped from ``state``: it leaves the frontier."""
        if self.track_frontier and len(self._visited) < self.cache_size:
            self._visited.add(state)

    def exploring_start(self, rng: np.random.Generator):
        """A start state for an exploring start (None before any state was met): a random
        frontier state (met as a successor, never stepped from) while there is one, when
        ``track_frontier``; else a random state of ``seen_states``. A frontier state is taken
        off the frontier when drawn; states visited since they joined it are dropped as met."""
        while self.track_frontier and self.frontier:
            i = int(rng.integers(len(self.frontier)))
            s = self.frontier[i]
            self.frontier[i] = self.frontier[-1]
            self.frontier.pop()
            if s not in self._visited:
                return s
        if not self.seen_states:
            return None
        return self.seen_states[int(rng.integers(len(self.seen_states)))]

    def _achieved(self, goals_per_human, succ) -> np.ndarray:
        ach = np.zeros((self.spec.num_humans, max(len(g) for g in goals_per_human), len(succ)),
                       np.uint8)
        for i, goals in enumerate(goals_per_human):
            for j, g in enumerate(goals):
                for k, s2 in enumerate(succ):
                    ach[i, j, k] = checked_achieved(self.world, g, s2)
        return ach

    # ---- tables -------------------------------------------------------------------------
    def table_sum(self, state) -> _Table:
        """Mode "sum": the table of ``state`` (cached)."""
        t = self._tables.get(state)
        if t is None:
            succ, kk, kp = self.successors(state)
            goals = [[g for g, _ in per_human] for per_human in self.goal_table(state)]
            H, G = self.spec.num_humans, self.spec.max_goals
            prior = np.zeros((H, G, self.A), np.float32)       # padding goals stay 0
            for i, h in enumerate(self.humans):
                for j, g in enumerate(goals[i]):
                    prior[i, j] = self.prior(state, h, g)
            arrays = {"kernel_k": kk, "kernel_p": kp, "achieved": self._achieved(goals, succ),
                      "prior": prior}
            t = self._remember(self._tables, state, _Table(self.key(state), arrays, state, succ))
        self._pending[t.key] = t
        return t

    def table_sampled_humans(self, state, human_actions, held_goals) -> _Table:
        """Mode "sampled_humans": the step's human actions fixed, the held goals trained."""
        human_actions = tuple(int(a) for a in human_actions)
        cache_key = (state, human_actions, tuple(held_goals))
        t = self._tables.get(cache_key)
        if t is None:
            succ, kk, kp = self.successors(state, human_actions)
            key = stable_key((self.key(state), human_actions, tuple(self.goal(g) for g in held_goals)))
            arrays = {"kernel_k": kk, "kernel_p": kp,
                      "achieved": self._achieved([[g] for g in held_goals], succ)}
            t = self._remember(self._tables, cache_key,
                               _Table(key, arrays, state, succ, tuple(held_goals)))
        self._pending[t.key] = t
        return t

    def table_sampled(self, state, robot_action: int, next_state, held_goals) -> _Table:
        """Mode "sampled": the one observed successor."""
        key = stable_key((self.key(state), int(robot_action), self.key(next_state),
                          tuple(self.goal(g) for g in held_goals)))
        arrays = {"kernel_k": np.zeros((1, 1), np.int32), "kernel_p": np.ones((1, 1), np.float32),
                  "achieved": self._achieved([[g] for g in held_goals], [next_state]),
                  "robot_action": np.int64(robot_action)}
        self.remember_states([next_state])
        t = _Table(key, arrays, state, [next_state], tuple(held_goals))
        self._pending[t.key] = t
        return t

    # ---- what a sample carries ----------------------------------------------------------
    def take_pending(self) -> list:
        """The tables referenced since the last call (and forget them)."""
        out, self._pending = list(self._pending.values()), {}
        return out

    def entries(self, tables: list) -> tuple[dict, dict, dict]:
        """({key: table columns}, {key: state entry}, {key: goal enc}) of ``tables`` and
        every state and goal they mention."""
        t_out, s_out, g_out = {}, {}, {}
        for t in tables:
            cols = dict(t.arrays)
            cols["state"] = np.int64(self.key(t.state))
            cols["succ"] = np.array([self.key(s) for s in t.succ], np.int64)
            if self.spec.mode != "sum":
                cols["held"] = np.array([self.goal(g) for g in t.held], np.int64)
            t_out[t.key] = cols
            for s in [t.state, *t.succ]:
                e = self.state_entry(s)
                s_out[e["key"]] = e
        for g in [g for e in s_out.values() for g in e["goal_objs"]] + \
                [g for t in tables for g in t.held]:
            k, enc = self.goal_pair(g)
            g_out[k] = enc
        return t_out, s_out, g_out


def _stack(values: list, fill, dtype) -> np.ndarray:
    """Arrays of equal rank and possibly different shapes, padded with ``fill`` and stacked."""
    if not values:
        return np.zeros((0,), dtype)
    values = [np.asarray(v) for v in values]
    shape = tuple(max(v.shape[d] for v in values) for d in range(values[0].ndim))
    out = np.full((len(values),) + shape, fill, dtype)
    for i, v in enumerate(values):
        out[(i,) + tuple(slice(0, d) for d in v.shape)] = v
    return out


_TABLE_PAD = {"state": (-1, np.int64), "succ": (-1, np.int64), "kernel_k": (-1, np.int32),
              "kernel_p": (0.0, np.float32), "achieved": (0, np.uint8),
              "prior": (0.0, np.float32), "held": (-1, np.int64), "robot_action": (-1, np.int64)}


def pack_sample(tables: dict, states: dict, goals: dict, row_keys, row_weights) -> dict:
    """The dict a ``ReplayStore.add`` merges: every entry once, padded to this sample's widths;
    rows name their tables by key."""
    t_keys = list(tables)
    t_cols = {c: _stack([tables[k][c] for k in t_keys], *_TABLE_PAD[c])
              for c in (tables[t_keys[0]] if t_keys else ())}
    s_keys = list(states)
    s = [states[k] for k in s_keys]
    return {
        "goals": {"key": np.array(list(goals), np.int64),
                  "enc": _stack([goals[k] for k in goals], 0.0, np.float32)},
        "states": {"key": np.array(s_keys, np.int64),
                   "obs": _stack([e["obs"] for e in s], 0.0, np.float32),
                   "terminal": np.array([e["terminal"] for e in s], bool),
                   "goals": _stack([e["goals"] for e in s], -1, np.int64),
                   "goal_w": _stack([e["goal_w"] for e in s], 0.0, np.float32)},
        "tables": {"key": np.array(t_keys, np.int64), **t_cols},
        "rows": {"table": np.asarray(row_keys, np.int64),
                 "weight": np.asarray(row_weights, np.float32)},
    }
