"""rock_gate: a human shut in behind a rock that only the robot can move.

Layout (x to the right, y down; ``o`` the rock, lying in the gate (3,2))::

      01234567
    0 ########
    1 #......#
    2 #..o...#      H human (agent 1), R robot (agent 0)
    3 ###H#R.#
    4 ########

The human starts in the pocket (3,3), whose only exit is the gate (3,2) above it. The gate
is a doorway too narrow for the robot: only the human (and the rock) may be in it. The rock
fills the gate; the human cannot move it. The robot pushes the rock by moving into its
cell: the rock moves one cell further in the same direction if that cell is floor and no
agent stands on it, otherwise nothing moves; the robot follows into the rock's old cell only
if it may stand there. So the robot frees the gate by walking to (4,2) (two steps) and
pushing left (step three; the rock rolls to (2,2) and the robot stays at (4,2)), or by
pushing right from (2,2). Pushing down from (3,1) always fails, since the human fills the
pocket. Because the robot can never stand in the gate, it cannot seal the human in again
by standing there, and a human that models the robot as an adversary (the Boltzmann
phase-1 prior) still values the outside once the rock is gone.

Goals of the human (uniform weights): (3,3) in the pocket and (3,1), (1,1), (6,1) outside.
A human left behind the rock can only ever achieve the first; once the gate is free (step
3 at the earliest; the human can step into the gate in that same step, as the robot moves
first) the human can be on (3,1) by step 4, (1,1) by step 6 and (6,1) by step 7, within the
default horizon of 10. A robot that softly maximises human power therefore
walks to the rock and pushes it out of the gate: under the exact solution (beta_r=10,
gamma_h=gamma_r=0.99, zeta=2, xi=1, eta=1.1) with the Boltzmann prior (beta_h=10) the rock
is out of the gate at the end of 98% of episodes (goals drawn uniformly). With a uniformly
random human the outside goals are worth almost nothing and the robot policy is near uniform.

Movement rules (see ``grid.py``): the robot moves first, then the human; a move into a wall,
the rock (for the human), the gate (for the robot) or the other agent's cell fails and the
agent stays. State: ``(steps_left, robot cell, human cell, rock cell)``; ``steps_left == 0``
is terminal. With the default horizon of 10 there are 1008 reachable states.
"""
from __future__ import annotations

import numpy as np

from rllib_empo.worlds.grid import NUM_ACTIONS, Grid, GridWorld

LAYOUT = """
########
#......#
#..o...#
###H#R.#
########
"""
GOAL_CELLS = [(3, 3), (3, 1), (1, 1), (6, 1)]


class RockGateWorld(GridWorld):
    """1 robot (agent 0), 1 human (agent 1), a pushable rock; ``horizon`` steps."""

    name = "rock_gate"

    def __init__(self, horizon: int = 10):
        grid = Grid(LAYOUT)
        self.gate = grid.mark("o")
        self._setup(grid, [grid.mark("R")], [grid.mark("H")], horizon, [GOAL_CELLS],
                    object_starts=(self.gate,), human_only=(self.gate,))
        n = len(grid.cells)
        # Raw neighbours (-1 = wall): a robot "moves into" the rock even where it may not stand.
        self._nb = tuple(tuple(grid.neighbour(c, a) if a else c for a in range(NUM_ACTIONS))
                         for c in range(n))
        self._push = tuple(tuple(grid.neighbour(c, a) if a else -1 for a in range(NUM_ACTIONS))
                           for c in range(n))
        self._robot_may = tuple(c in self._robot_floor for c in range(n))
        # One more input: whether the rock still blocks the gate.
        self._flag_index = self.state_dim
        self.state_dim += 1

    def transition_probabilities(self, state, joint_action):
        steps_left, robot, human, rock = state
        if steps_left == 0:
            return None
        a_r, a_h = joint_action[0], joint_action[1]
        target = self._nb[robot][a_r]
        if target == rock:
            pushed = self._push[rock][a_r]
            if pushed >= 0 and pushed != human:
                rock = pushed
                if self._robot_may[target]:
                    robot = target
        elif target >= 0 and target != human and self._robot_may[target]:
            robot = target
        target = self.human_move[human][a_h]
        if target != robot and target != rock:
            human = target
        return [(1.0, (steps_left - 1, robot, human, rock))]

    def encode_state(self, state) -> np.ndarray:
        v = GridWorld.encode_state(self, state)
        v[self._flag_index] = float(state[3] == self.gate)
        return v

    def rock_cell(self, state) -> tuple[int, int]:
        return self.grid.cells[state[3]]

    def gate_blocked(self, state) -> bool:
        return state[3] == self.gate
