"""lanes: two humans on a two-lane road, a rock in its one-lane stretch, and a robot.

Layout (x to the right, y down; ``o`` the rock)::

      01234567890
    0 ############
    1 #1...Ro...2#      lane 1
    2 #....##....#      lane 2: wall under x = 5, 6, the one-lane stretch
    3 ############    (``half=4``, the default: 4 columns on each side)

Four actions for every agent -- 0 stay, 1 left, 2 right, 3 switch lanes (up or down) -- so
1 robot and 2 humans have 4^3 = 64 joint actions. The rock lies in the one-lane stretch: while
it is anywhere in the stretch, nobody gets from one half of the road to the other. The robot
(agent 0) moving left or right into the rock pushes it one cell further if that cell is free
floor, and steps into the rock's old cell; otherwise nothing moves. Humans cannot move the
rock. Agents move one after another in agent-id order; a move into a wall, into another
agent's cell *at that moment*, or onto the rock fails.

Human 1 starts at the left end, human 2 at the right end. Each human's goals (uniform
weights) are the two cells of its own half next to the stretch and the two end cells of the
other half. Opening the stretch means pushing the rock into one half, where it sits in that
half's lane 1 -- so the robot helps one human's far goals at the cost of the other's near
ones, and inequality aversion (xi) decides. State: ``(steps_left, robot, human 1, human 2,
rock)`` cells; ``steps_left == 0`` is terminal. The defaults (``half=4``, ``horizon=10``)
give 28,137 reachable states (``tests/worlds`` pins the count).
"""
from __future__ import annotations

from rllib_empo.worlds.grid import Grid, GridWorld

def lanes_layout(half: int) -> str:
    """Two halves of ``half`` columns each around a two-column one-lane stretch."""
    lane1 = "1" + "." * (half - 1) + "Ro" + "." * (half - 1) + "2"
    lane2 = "." * half + "##" + "." * half
    border = "#" * (len(lane1) + 2)
    return "\n".join([border, "#" + lane1 + "#", "#" + lane2 + "#", border])
ACTIONS = ("stay", "left", "right", "switch")
LEFT, RIGHT, SWITCH = 1, 2, 3


class LanesWorld(GridWorld):
    """1 robot (agent 0), 2 humans (agents 1, 2), one rock; ``horizon`` steps."""

    name = "lanes"
    num_actions = len(ACTIONS)
    action_names = ACTIONS

    def __init__(self, horizon: int = 10, half: int = 4):
        if not isinstance(half, int) or half < 2:
            raise ValueError(f"lanes: half must be an int >= 2, got {half!r}")
        grid = Grid(lanes_layout(half))
        self._lanes = sorted({y for _, y in grid.cells})
        left_end, right_end = grid.mark("1"), grid.mark("2")
        (x1, y1), (x2, _) = grid.cells[left_end], grid.cells[right_end]
        lane2 = self._lanes[1]
        near1, near2 = x1 + half - 1, x2 - half + 1        # beside the stretch
        goals = [[(near1, y1), (near1, lane2), (x2, y1), (x2, lane2)],
                 [(near2, y1), (near2, lane2), (x1, y1), (x1, lane2)]]
        self.rock_start = grid.mark("o")
        self._setup(grid, [grid.mark("R")], [left_end, right_end], horizon, goals,
                    object_starts=(self.rock_start,))
        self._tgt = tuple(tuple(self._target(c, a) for a in range(self.num_actions))
                          for c in range(len(grid.cells)))

    def _target(self, cid: int, action: int) -> int:
        x, y = self.grid.cells[cid]
        if action == LEFT:
            return self.grid.cell_id.get((x - 1, y), -1)
        if action == RIGHT:
            return self.grid.cell_id.get((x + 1, y), -1)
        if action == SWITCH:
            other = self._lanes[1] if y == self._lanes[0] else self._lanes[0]
            return self.grid.cell_id.get((x, other), -1)
        return cid

    def transition_probabilities(self, state, joint_action):
        steps_left, robot, h1, h2, rock = state
        if steps_left == 0:
            return None
        cells = [robot, h1, h2]
        for i in range(3):
            a = joint_action[i]
            if not a:
                continue
            target = self._tgt[cells[i]][a]
            if target < 0 or target in cells:
                continue
            if target == rock:
                if i == 0 and a in (LEFT, RIGHT):
                    beyond = self._tgt[rock][a]
                    if beyond >= 0 and beyond not in cells:
                        rock, cells[0] = beyond, target
                continue
            cells[i] = target
        return [(1.0, (steps_left - 1, *cells, rock))]

    def rock_cell(self, state) -> tuple[int, int]:
        return self.grid.cells[state[4]]
