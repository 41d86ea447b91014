"""Running ``rllib-empo`` in its own process, as a user does (tests/cli/)."""
from __future__ import annotations

import os
import subprocess
import sys

#: A warm-up of 4 updates per stage and a 4-update ramp (E5 = 16), tiny networks.
FAST_TRAIN = ["--hidden-sizes", "16,16", "--train-batch-size", "16",
              "--rollout-fragment-length", "20", "--warmup-v-h-e-steps", "4",
              "--warmup-x-h-steps", "4", "--warmup-q-r-steps", "4", "--beta-r-rampup-steps", "4",
              "--updates-per-iteration", "4", "--replay-capacity", "2000"]


def cli_env(ray_session=None) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    return env


def address(ray_session) -> list:
    """``--address`` of the test session's Ray: the command joins it instead of starting one."""
    return ["--address", ray_session.get_runtime_context().gcs_address]


def run_cli(args, *, cwd=None, timeout=300, check=True, **popen) -> subprocess.CompletedProcess:
    """``python -m rllib_empo.cli ARGS`` (what the console script runs), output captured."""
    proc = subprocess.run([sys.executable, "-m", "rllib_empo.cli", *map(str, args)], cwd=cwd,
                          env=cli_env(), capture_output=True, text=True, timeout=timeout,
                          **popen)
    if check:
        assert proc.returncode == 0, f"rllib-empo {' '.join(map(str, args))} failed:\n" \
                                     f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


#: A custom world in a module of its own (what ``--import`` imports): the door world of
#: examples/custom_world.py, registered by name.
DOOR_WORLD_MODULE = '''
from dataclasses import dataclass

import numpy as np

from rllib_empo.worlds import register_world


@dataclass(frozen=True)
class ReachCell:
    cell: int

    def is_achieved(self, state) -> bool:
        return state[1] == self.cell


class DoorWorld:
    """State (steps_left, human cell, door open); robot 0 opens / closes, human 1 walks."""
    name = "door"
    human_agent_indices = [1]
    robot_agent_indices = [0]
    num_actions = 3
    max_successors = 6
    action_names = ("nothing", "open", "close")

    def __init__(self, horizon: int = 4):
        self.horizon = horizon

    def initial_state(self):
        return (self.horizon, 1, False)

    def is_terminal(self, state) -> bool:
        return state[0] == 0

    def transition_probabilities(self, state, joint_action):
        steps, cell, door = state
        if steps == 0:
            return None
        robot, human = joint_action
        door = True if robot == 1 else False if robot == 2 else door
        target = cell + (0, -1, 1)[human]
        if target == cell or not 0 <= target < 4 or ({cell, target} == {1, 2} and not door):
            return [(1.0, (steps - 1, cell, door))]
        return [(0.9, (steps - 1, target, door)), (0.1, (steps - 1, cell, door))]

    def possible_goals(self, state, human):
        return [(ReachCell(0), 0.5), (ReachCell(3), 0.5)]

    def encode_state(self, state):
        steps, cell, door = state
        v = np.zeros(self.horizon + 6, dtype=np.float32)
        v[steps], v[self.horizon + 1 + cell], v[-1] = 1.0, 1.0, float(door)
        return v

    def encode_goal(self, goal):
        return np.eye(4, dtype=np.float32)[goal.cell]

    def render(self, state):
        steps, cell, door = state
        line = ["H" if c == cell else "." for c in range(4)]
        return f"{line[0]} {line[1]} {'/' if door else '|'} {line[2]} {line[3]}  steps left {steps}"


register_world("door", DoorWorld)
'''
