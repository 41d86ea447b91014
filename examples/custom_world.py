"""A custom world, end to end: implement the World protocol, solve it exactly, train on it.

The world (``DoorWorld``): a human walks on a line of four cells ``0 1 | 2 3`` with a door
between cells 1 and 2. The human starts on cell 1 and wants to reach cell 0 or cell 3 (equal
weights); each move fails with probability 0.1. The robot does not move: it opens the door,
closes it, or does nothing. A robot that softly maximises the human's power prefers opening
the door, since only then can the human reach both goals. The preference is mild (exact
pi_r at the start: 0.36 for "open", 0.32 for each of the others), because the robot can
still open the door one step later.

Two ways to train on a custom world:

- pass the instance: ``.environment("rllib_empo/World-v0", env_config={"world": DoorWorld()})``
  (shown here); or
- register it by name, ``register_world("door", DoorWorld)``, and use
  ``env_config={"world": "door", "horizon": 4}`` -- names work across processes as long
  as every process imports the module that registers it.

The world class must be importable wherever the env is built: with remote EnvRunners
(``num_env_runners > 0``) put it in a module of your package rather than in ``__main__``.

RLLIB_EMPO_FAST=1 shortens the run (CI).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from rllib_empo import EmpoConfig
from rllib_empo.evaluation import compare_to_exact, exact_solution_for

STAY, LEFT_OR_OPEN, RIGHT_OR_CLOSE = 0, 1, 2


@dataclass(frozen=True)
class ReachCell:
    """Goal: the human stands on ``cell``."""
    cell: int

    def is_achieved(self, state) -> bool:
        return state[1] == self.cell


class DoorWorld:
    """State ``(steps_left, human cell, door open)``; robot = agent 0, human = agent 1."""

    name = "door"
    human_agent_indices = [1]
    robot_agent_indices = [0]
    num_actions = 3                # robot: stay/open/close; human: stay/left/right
    slip = 0.1
    cells = 4

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
        robot, human = joint_action[0], joint_action[1]
        door = True if robot == LEFT_OR_OPEN else False if robot == RIGHT_OR_CLOSE else door
        target = cell + {STAY: 0, LEFT_OR_OPEN: -1, RIGHT_OR_CLOSE: 1}[human]
        crosses_door = {cell, target} == {1, 2}
        if target == cell or not 0 <= target < self.cells or (crosses_door and not door):
            return [(1.0, (steps - 1, cell, door))]
        return [(1.0 - self.slip, (steps - 1, target, door)), (self.slip, (steps - 1, cell, door))]

    def possible_goals(self, state, human):
        return [(ReachCell(0), 0.5), (ReachCell(3), 0.5)]

    def encode_state(self, state) -> np.ndarray:
        steps, cell, door = state
        v = np.zeros(self.horizon + 1 + self.cells + 1, dtype=np.float32)
        v[steps] = 1.0
        v[self.horizon + 1 + cell] = 1.0
        v[-1] = float(door)
        return v

    def encode_goal(self, goal: ReachCell) -> np.ndarray:
        return np.eye(self.cells, dtype=np.float32)[goal.cell]

    def render(self, state) -> str:
        steps, cell, door = state
        line = ["H" if c == cell else "." for c in range(self.cells)]
        return f"{line[0]} {line[1]} {'/' if door else '|'} {line[2]} {line[3]}   steps left {steps}"


def main() -> None:
    fast = os.environ.get("RLLIB_EMPO_FAST") == "1"
    n = 10 if fast else 100
    world = DoorWorld()
    config = (EmpoConfig()
              .environment("rllib_empo/World-v0", env_config={"world": world, "prior": "boltzmann"})
              .env_runners(rollout_fragment_length=20)
              .training(beta_r=10.0, warmup_v_h_e_steps=n, warmup_x_h_steps=n,
                        warmup_q_r_steps=n, beta_r_rampup_steps=2 * n, hidden_sizes=(32, 32))
              .debugging(seed=0))
    algo = config.build_algo()
    exact = exact_solution_for(algo)
    print(exact.summary())
    for i in range(15 if fast else 150):
        w = algo.train()["Warmup"]
        if w["stage_transition"]:
            print(f"iter {i:3d}: stage {w['stage']}, {w['num_updates']} updates, "
                  f"beta_r {w['effective_beta_r']:.2f}")
    s0 = world.initial_state()
    names = ("do nothing", "open", "close")
    learned = algo.robot_policy([s0])[0]
    print("pi_r at the start:", ", ".join(
        f"{a} {p:.2f} (exact {q:.2f})" for a, p, q in zip(names, learned, exact.pi_r[s0])))
    figures = compare_to_exact(algo, exact)
    print(f"TV distance to the exact policy: {figures['tv_pi_r_s0']:.3f} at the start, "
          f"{figures['mean_tv_pi_r']:.3f} on average over {figures['num_states']} states")
    algo.stop()


if __name__ == "__main__":
    main()
