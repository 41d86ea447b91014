"""Small worlds for the reliability tests: a correct one (``TinyWorld``) and variants that
break the World protocol in one precise way, at the initial state or only later.

``TinyWorld``: a human (agent 1) on a line of ``cells`` cells starting in the middle, a
robot (agent 0) that does nothing useful; ``num_actions`` = 3 (stay, left, right) for
everyone; state ``(steps_left, human cell)``; goals: reach either end (weights 1/2).
Every state has at most 3 successors.

``FaultyWorld(fault, at=...)`` breaks the protocol at states whose ``steps_left`` equals
``at`` (default: one step after the start, so that ``check_world`` and ``validate()``
cannot see it and the error must surface at run time).
"""
from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass

import numpy as np

from ray import cloudpickle

# The worlds travel by value to remote EnvRunners (their workers cannot import tests/).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

STAY, LEFT, RIGHT = 0, 1, 2


@dataclass(frozen=True)
class ReachCell:
    cell: int

    def is_achieved(self, state) -> bool:
        return state[1] == self.cell


class TinyWorld:
    name = "tiny"
    human_agent_indices = [1]
    robot_agent_indices = [0]
    num_actions = 3

    def __init__(self, horizon: int = 4, cells: int = 5):
        self.horizon, self.cells = horizon, cells

    def initial_state(self):
        return (self.horizon, self.cells // 2)

    def is_terminal(self, state) -> bool:
        return state[0] == 0

    def transition_probabilities(self, state, joint_action):
        steps, cell = state
        if steps == 0:
            return None
        move = {STAY: 0, LEFT: -1, RIGHT: 1}[joint_action[1]]
        target = min(max(cell + move, 0), self.cells - 1)
        if target == cell:
            return [(1.0, (steps - 1, cell))]
        return [(0.75, (steps - 1, target)), (0.25, (steps - 1, cell))]

    def possible_goals(self, state, human):
        return [(ReachCell(0), 0.5), (ReachCell(self.cells - 1), 0.5)]

    def encode_state(self, state) -> np.ndarray:
        return np.array([state[0] / self.horizon, state[1] / (self.cells - 1)], np.float32)

    def encode_goal(self, goal) -> np.ndarray:
        return np.array([goal.cell / (self.cells - 1)], np.float32)


class FaultyWorld(TinyWorld):
    """TinyWorld with one protocol violation at states with ``steps_left == at``."""

    FAULTS = ("probs_sum", "prob_nan", "prob_negative", "not_pairs", "unhashable_successor",
              "none_for_nonterminal", "encode_nan", "encode_length",
              "encode_text", "goal_weights_sum", "goal_weight_nan", "goal_not_pairs",
              "goal_encoding_nan", "raises", "nan_successors", "kills_runner")

    def __init__(self, fault: str, at: int | None = None, horizon: int = 4):
        assert fault in self.FAULTS, fault
        super().__init__(horizon=horizon)
        self.fault = fault
        self.at = horizon - 1 if at is None else at
        self.name = f"faulty_{fault}"
        self.driver_pid = os.getpid()      # "kills_runner" never kills the test process

    def _here(self, state) -> bool:
        return state[0] == self.at

    def transition_probabilities(self, state, joint_action):
        out = super().transition_probabilities(state, joint_action)
        if out is None or not self._here(state):
            return out
        f = self.fault
        if f == "probs_sum":
            return [(0.9 * p, s) for p, s in out]
        if f == "prob_nan":
            return [(float("nan"), s) for _, s in out]
        if f == "prob_negative":
            return [(-0.5, out[0][1]), (1.5, out[0][1])]
        if f == "not_pairs":
            return [p for p, _ in out]
        if f == "unhashable_successor":
            return [(p, list(s)) for p, s in out]
        if f == "none_for_nonterminal":
            return None
        if f == "raises":                      # a plain bug in the world's code
            return {(0, 0): out}[tuple(joint_action)]
        if f == "nan_successors":              # no two visits of a successor compare equal
            return [(p / 2, (s[0], s[1], float("nan"))) for p, s in out for _ in range(2)]
        if f == "kills_runner" and os.getpid() != self.driver_pid:
            os.kill(os.getpid(), signal.SIGKILL)   # a crash no Python code can catch
        return out

    def encode_state(self, state):
        enc = super().encode_state(state)
        if self._here(state):
            if self.fault == "encode_nan":
                enc[1] = np.nan
            elif self.fault == "encode_length":
                enc = np.append(enc, 1.0).astype(np.float32)
            elif self.fault == "encode_text":
                return ["a", "b"]
        return enc

    def possible_goals(self, state, human):
        goals = super().possible_goals(state, human)
        if self._here(state):
            if self.fault == "goal_weights_sum":
                return [(g, 0.4) for g, _ in goals]
            if self.fault == "goal_weight_nan":
                return [(g, float("nan")) for g, _ in goals]
            if self.fault == "goal_not_pairs":
                return [g for g, _ in goals]
        return goals

    def encode_goal(self, goal):
        enc = super().encode_goal(goal)
        if self.fault == "goal_encoding_nan" and goal.cell == 0:
            enc[0] = np.nan
        return enc


class NanPrior:
    """A human prior that returns NaN (a broken phase-1 model)."""

    def __init__(self, world):
        self.n = world.num_actions

    def __call__(self, state, h, goal):
        return np.full(self.n, np.nan)


class Missing:
    """A world that lacks one protocol member (delegates everything else to a TinyWorld)."""

    def __init__(self, member: str, base=None):
        self._base, self._missing = base or TinyWorld(), member
        self.name = f"missing_{member}"

    def __getattr__(self, key):
        if key.startswith("_") or key == self._missing:
            raise AttributeError(key)
        return getattr(self._base, key)


class Tweaked(TinyWorld):
    """TinyWorld with attributes or methods replaced (``Tweaked(num_actions=0)``)."""

    def __init__(self, name: str = "tweaked", **overrides):
        super().__init__()
        self.name = name
        for key, value in overrides.items():
            setattr(self, key, value)
