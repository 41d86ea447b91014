"""crowd: several humans and one or two robots in a room too large to solve exactly.

Layout (x to the right, y down)::

      0123456789X
    0 ###########
    1 #1.......2#      1, 2, 3 human starts (3 only with num_humans=3)
    2 #.........#      R, S robot starts (S only with num_robots=2)
    3 #..##.##..#
    4 #..#...#..#      a walled plaza in the middle with four one-cell openings,
    5 #....RS...#      which the robots can block or keep open
    6 #..#...#..#
    7 #..##.##..#
    8 #.........#
    9 #3........#
   10 ###########

Robots are agents ``0..R-1``, humans ``R..R+H-1``. Every human has the same five goals,
the four corners and the centre (5,5), with uniform weights. Movement rules are those of
``grid.py``: agents move in agent-id order; a move into a wall or into a cell another agent
occupies at that moment fails. Deterministic. State: ``(steps_left, agent cells...)``.
``default_prior`` is "heuristic": the exact phase-1 prior would need every state.

Why it has more than 10^6 reachable states (do not enumerate them). The room has 69 floor
cells, so three agents alone have 69*68*67 = 314,364 placements, and with time in the state
each placement can recur at up to 21 values of ``steps_left``. A certified lower bound
(``reachable_states_lower_bound``): pick three agents to move and leave the others at their
starts; give each mover one shortest path (a BFS tree) from its start to every cell. If the
three paths to targets (c1, c2, c3) are pairwise disjoint and avoid the resting agents,
the movers can walk them at once without ever being blocked, so the placement is reachable
after ``max(d1, d2, d3)`` steps and, by staying, at every later step. Summing the number of
such placements with ``max(d) <= j`` over ``j = 0..horizon`` counts distinct reachable
states. Maximised over the choice of movers, at horizon 20 it is 1.53e6 for the default
(2 humans, 1 robot), 1.16e6 with 2 robots, 1.43e6 with 3 humans and 1.05e6 with 3 humans
and 2 robots. (It is a loose bound: resting agents block paths, which is why more agents
certify fewer states and why ``num_humans`` stops at 3.) The count takes milliseconds.
"""
from __future__ import annotations

import itertools
from collections import deque

import numpy as np

from rllib_empo.worlds.grid import NUM_ACTIONS, Grid, GridWorld

LAYOUT = """
###########
#1.......2#
#.........#
#..##.##..#
#..#...#..#
#....RS...#
#..#...#..#
#..##.##..#
#.........#
#3........#
###########
"""
GOAL_CELLS = [(1, 1), (9, 1), (1, 9), (9, 9), (5, 5)]


class CrowdWorld(GridWorld):
    """``num_robots`` in {1, 2} robots and ``num_humans`` in {2, 3} humans; ``horizon`` steps."""

    name = "crowd"
    default_prior = "heuristic"  # too large for the exact phase-1 prior

    def __init__(self, num_humans: int = 2, num_robots: int = 1, horizon: int = 20):
        if num_humans not in (2, 3):
            raise ValueError(f"crowd: num_humans must be 2 or 3, got {num_humans!r}")
        if num_robots not in (1, 2):
            raise ValueError(f"crowd: num_robots must be 1 or 2, got {num_robots!r}")
        grid = Grid(LAYOUT)
        robots = [grid.mark(m) for m in "RS"[:num_robots]]
        humans = [grid.mark(m) for m in "123"[:num_humans]]
        self._setup(grid, robots, humans, horizon, [GOAL_CELLS] * num_humans)

    # --- the counting argument ----------------------------------------------------------
    def _shortest_paths(self, start: int) -> tuple[np.ndarray, np.ndarray]:
        """paths[t, c]: cell c lies on the BFS-tree path from ``start`` to t; dist[t]."""
        n = len(self.grid.cells)
        parent, dist = [-1] * n, [-1] * n
        dist[start] = 0
        queue = deque([start])
        while queue:
            c = queue.popleft()
            for a in range(1, NUM_ACTIONS):
                nb = self.human_move[c][a]
                if dist[nb] < 0:
                    dist[nb], parent[nb] = dist[c] + 1, c
                    queue.append(nb)
        paths = np.zeros((n, n), dtype=bool)
        for t in range(n):
            if dist[t] < 0:
                continue
            c = t
            while c != -1:
                paths[t, c] = True
                c = parent[c]
        return paths, np.array(dist)

    def layer_lower_bounds(self) -> list[int]:
        """For j = 0..horizon, a lower bound on the number of distinct states reachable in
        exactly j steps (the construction of the module docstring), maximised over which
        three agents move."""
        best: list[int] = []
        for movers in itertools.combinations(range(self.num_agents), 3):
            layers = self._disjoint_path_layers(list(movers))
            if sum(layers) > sum(best):
                best = layers
        return best

    def _disjoint_path_layers(self, movers: list[int]) -> list[int]:
        starts = list(self._s0[1:1 + self.num_agents])
        resting = [starts[i] for i in range(self.num_agents) if i not in movers]
        trees = [self._shortest_paths(starts[i]) for i in movers]
        allowed = [(d >= 0) & ~paths[:, resting].any(axis=1) for paths, d in trees]
        mats = [paths.astype(np.float64) for paths, _ in trees]
        # disjoint[i, k][a, b]: mover i's path to a and mover k's path to b share no cell.
        disjoint = {(i, k): (mats[i] @ mats[k].T) == 0 for i in range(3) for k in range(i + 1, 3)}
        out = []
        for j in range(self.horizon + 1):
            m = [allowed[i] & (trees[i][1] <= j) for i in range(3)]
            d01 = disjoint[0, 1][np.ix_(m[0], m[1])].astype(np.float64)
            d02 = disjoint[0, 2][np.ix_(m[0], m[2])].astype(np.float64)
            d12 = disjoint[1, 2][np.ix_(m[1], m[2])].astype(np.float64)
            # Triples (a, b, c) with all three pairs disjoint.
            out.append(int(round(((d02 @ d12.T) * d01).sum())))
        return out

    def reachable_states_lower_bound(self) -> int:
        return sum(self.layer_lower_bounds())
