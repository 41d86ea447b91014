"""vault: a human in a room whose two doorways are blocked by rocks, and a robot outside.

Layout (x to the right, y down; ``o`` the rocks)::

      012345678901
    0 ############
    1 #.....#....#
    2 #..H..o..R.#      rock 1 in the east doorway (6, 2)
    3 #.....#....#
    4 ####o####.##      rock 2 in the south doorway (4, 4)
    5 #..........#
    6 #..........#
    7 ############

The human (agent 1) starts in the west room, the robot (agent 0) in the east room, which
opens south onto the corridor at (9, 4). The robot pushes a rock by moving into it (any
direction): the rock moves one cell further if that cell is floor with no agent and no rock
on it, and the robot steps into its old cell; otherwise nothing moves. The human cannot
move rocks. Agents move in agent-id order; a move into a wall, another agent or a rock
fails. Pushing rock 1 west (from the east room) or rock 2 north (from the corridor) opens a
doorway but leaves the rock in the human's room, where it may stand in the human's way; the
robot chooses which doorway to open, when, and how far to push.

The human's goals (uniform weights): a corner of its own room, of the east room, the middle
and the west end of the corridor. State: ``(steps_left, robot, human, rock 1, rock 2)``
cells; ``steps_left == 0`` is terminal. With the default ``horizon`` of 16 the world has
208,995 reachable states (the exact solver takes about 15 s); ``tests/worlds`` pins counts.
"""
from __future__ import annotations

from rllib_empo.worlds.grid import NUM_ACTIONS, Grid, GridWorld

LAYOUT = """
############
#.....#....#
#..H..o..R.#
#.....#....#
####o####.##
#..........#
#..........#
############
"""
GOAL_CELLS = [(1, 1), (9, 1), (6, 6), (1, 6)]


class VaultWorld(GridWorld):
    """1 robot (agent 0), 1 human (agent 1), two rocks; ``horizon`` steps."""

    name = "vault"

    def __init__(self, horizon: int = 16):
        grid = Grid(LAYOUT)
        rocks = tuple(grid.cell_id[c] for c in sorted(grid.marks["o"], key=lambda c: (c[1], c[0])))
        self._setup(grid, [grid.mark("R")], [grid.mark("H")], horizon, [GOAL_CELLS],
                    object_starts=rocks)
        n = len(grid.cells)
        self._nb = tuple(tuple(grid.neighbour(c, a) for a in range(NUM_ACTIONS)) for c in range(n))

    def transition_probabilities(self, state, joint_action):
        steps_left, robot, human, *rocks = state
        if steps_left == 0:
            return None
        a_r, a_h = joint_action[0], joint_action[1]
        if a_r:
            target = self._nb[robot][a_r]
            if target in rocks:
                k = rocks.index(target)
                beyond = self._nb[target][a_r]
                if beyond >= 0 and beyond != human and beyond not in rocks:
                    rocks[k], robot = beyond, target
            elif target >= 0 and target != human:
                robot = target
        if a_h:
            target = self._nb[human][a_h]
            if target >= 0 and target != robot and target not in rocks:
                human = target
        return [(1.0, (steps_left - 1, robot, human, *rocks))]
