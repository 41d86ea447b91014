"""corridor: a robot that blocks a one-cell-wide corridor unless it steps aside.

Default layout (``length=5``, ``num_humans=2``; ``num_humans=1`` drops human 2)::

    #######
    #1.R.2#      R robot (agent 0), 1 and 2 the humans (agents 1 and 2)
    ###n###      n a niche only the robot may enter
    #######

The robot starts in the middle of the corridor, above the niche; the humans start at the
two ends. While the robot stands in the corridor, neither human can get past it; once it
steps down into the niche, every corridor cell is open to both. Each human's goals are the
``length`` corridor cells, with uniform weights.

Rules (shared by all built-in worlds, see ``grid.py``): agents move one after another in
agent-id order (robot first); a move into a wall, off the grid, onto robot-only floor (for a
human) or into a cell another agent occupies at that moment fails and the agent stays. With
``slip > 0`` each human's non-stay move independently fails with probability ``slip`` (the
human stays), so one joint action has up to ``2 ** num_humans`` successors. Time is part of
the state: ``(steps_left, robot cell, human cells...)``; ``steps_left == 0`` is terminal.
"""
from __future__ import annotations

import itertools

from rllib_empo.worlds.grid import Grid, GridWorld


def corridor_layout(length: int, num_humans: int) -> str:
    mid = (length - 1) // 2
    row = ["."] * length
    row[0], row[mid] = "A", "R"
    if num_humans == 2:
        row[-1] = "B"
    niche = ["#"] * length
    niche[mid] = "n"
    border = "#" * (length + 2)
    return "\n".join([border, "#" + "".join(row) + "#", "#" + "".join(niche) + "#", border])


class CorridorWorld(GridWorld):
    """1 robot, ``num_humans`` in {1, 2} humans in a corridor of ``length`` cells (3..15)."""

    name = "corridor"

    def __init__(self, length: int = 5, num_humans: int = 2, horizon: int = 6,
                 slip: float = 0.0):
        if not isinstance(length, int) or not 3 <= length <= 15:
            raise ValueError(f"corridor: length must be an int in 3..15, got {length!r}")
        if num_humans not in (1, 2):
            raise ValueError(f"corridor: num_humans must be 1 or 2, got {num_humans!r}")
        if not 0.0 <= float(slip) < 1.0:
            raise ValueError(f"corridor: slip must be a probability in [0, 1), got {slip!r}")
        self.length, self.slip = length, float(slip)
        grid = Grid(corridor_layout(length, num_humans))
        humans = [grid.mark(m) for m in "AB"[:num_humans]]
        corridor_cells = [(x, 1) for x in range(1, length + 1)]
        self._setup(grid, [grid.mark("R")], humans, horizon, [corridor_cells] * num_humans)

    def transition_probabilities(self, state, joint_action):
        steps_left = state[0]
        movers = [h for h in self.human_agent_indices if joint_action[h]]
        if steps_left == 0 or self.slip == 0.0 or not movers:
            return super().transition_probabilities(state, joint_action)
        out: dict[tuple, float] = {}
        for slipped in itertools.product((False, True), repeat=len(movers)):
            actions = list(joint_action)
            p = 1.0
            for h, s in zip(movers, slipped):
                if s:
                    actions[h] = 0
                    p *= self.slip
                else:
                    p *= 1.0 - self.slip
            cells = list(state[1:])
            self._move_agents(cells, actions)
            succ = (steps_left - 1, *cells)
            # Different slip patterns can end in the same state (e.g. a blocked move).
            out[succ] = out.get(succ, 0.0) + p
        return [(p, s) for s, p in out.items()]
