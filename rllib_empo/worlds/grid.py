"""Shared machinery of the built-in gridworlds: layout parsing, move tables, distances,
the reach-a-cell goal, deterministic moves, encodings and text rendering.

Coordinates are ``(x, y)`` with x growing to the right and y growing *down* (row index of
the ASCII layout). Actions, the same for every agent:

    0 = stay, 1 = up (y-1), 2 = down (y+1), 3 = left (x-1), 4 = right (x+1)

A state is a plain tuple of small ints, so that hashing it is cheap:

    (steps_left, cell of agent 0, cell of agent 1, ..., [extra object cells])

where a cell is an index into ``Grid.cells`` (floor cells in row-major order). Robots are
agents ``0..R-1`` and humans ``R..R+H-1``. Time is part of the state, so the reachable
state graph is acyclic; a state with ``steps_left == 0`` is terminal.

Layout characters: ``#`` wall, ``.`` floor, ``n`` floor only robots may enter, any other
character floor with a marker (start cells). A world may also declare floor that only
humans may enter (drawn ``h``).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

WALL = "#"
# Floor that only robots may enter (a niche where a robot can make way).
ROBOT_ONLY = "n"
# Drawn on floor that only humans may enter (a doorway too narrow for a robot).
HUMAN_ONLY = "h"
ACTION_NAMES = ("stay", "up", "down", "left", "right")
DELTAS = ((0, 0), (0, -1), (0, 1), (-1, 0), (1, 0))
NUM_ACTIONS = len(DELTAS)
UNREACHABLE = float("inf")


class Grid:
    """A parsed ASCII layout. Any character but ``#`` is floor; letters are markers whose
    cells are listed in ``marks`` (e.g. start cells)."""

    def __init__(self, layout: str):
        rows = layout.strip("\n").splitlines()
        self.height = len(rows)
        self.width = max(len(r) for r in rows)
        self.cells: list[tuple[int, int]] = []
        self.marks: dict[str, list[tuple[int, int]]] = {}
        self.robot_only: set[int] = set()
        for y, row in enumerate(rows):
            for x, ch in enumerate(row.ljust(self.width, WALL)):
                if ch == WALL:
                    continue
                if ch == ROBOT_ONLY:
                    self.robot_only.add(len(self.cells))
                elif ch != ".":
                    self.marks.setdefault(ch, []).append((x, y))
                self.cells.append((x, y))
        self.cell_id = {c: i for i, c in enumerate(self.cells)}

    def id_of(self, cell: tuple[int, int]) -> int:
        if cell not in self.cell_id:
            raise ValueError(f"cell {cell} is a wall or outside the {self.width}x{self.height} grid")
        return self.cell_id[cell]

    def mark(self, ch: str) -> int:
        """The cell id of the single cell marked ``ch``."""
        (cell,) = self.marks[ch]
        return self.cell_id[cell]

    def neighbour(self, cid: int, action: int) -> int:
        """The floor cell one step from ``cid`` in ``action``'s direction, or -1 for a wall."""
        x, y = self.cells[cid]
        dx, dy = DELTAS[action]
        return self.cell_id.get((x + dx, y + dy), -1)

    def move_table(self, passable: set[int], target=None, num_actions: int = NUM_ACTIONS
                   ) -> tuple[tuple[int, ...], ...]:
        """``table[cell][action]``: where an agent that may only stand on ``passable`` ends up
        when nothing else is in the way (it stays when the target is not passable).
        ``target(cell, action)`` is the cell an action aims at (-1: a wall); default
        :meth:`neighbour`."""
        target = target or self.neighbour
        table = []
        for cid in range(len(self.cells)):
            row = []
            for a in range(num_actions):
                nb = target(cid, a)
                row.append(nb if nb in passable else cid)
            table.append(tuple(row))
        return tuple(table)

    def distances(self, source: int, passable: set[int], target=None,
                  num_actions: int = NUM_ACTIONS) -> list[float]:
        """BFS distance from ``source`` to every cell over ``passable`` (static walls only;
        moves are symmetric in every world here)."""
        target = target or self.neighbour
        dist = [UNREACHABLE] * len(self.cells)
        dist[source] = 0
        queue = deque([source])
        while queue:
            c = queue.popleft()
            for a in range(1, num_actions):
                nb = target(c, a)
                if nb in passable and dist[nb] == UNREACHABLE:
                    dist[nb] = dist[c] + 1
                    queue.append(nb)
        return dist

    def picture(self, symbols: dict[int, str], human_only: frozenset[int] = frozenset()
                ) -> list[str]:
        """Rows of the layout with ``symbols[cell_id]`` drawn over the floor."""
        canvas = [[WALL] * self.width for _ in range(self.height)]
        for cid, (x, y) in enumerate(self.cells):
            canvas[y][x] = (ROBOT_ONLY if cid in self.robot_only
                            else HUMAN_ONLY if cid in human_only else ".")
        for cid, ch in symbols.items():
            x, y = self.cells[cid]
            canvas[y][x] = ch
        return ["".join(row) for row in canvas]


@dataclass(frozen=True)
class ReachGoal:
    """Human ``human`` (an agent id) stands on ``cell`` = (x, y). Equality and hashing use
    only those two fields; ``slot``/``cell_id`` make ``is_achieved`` one tuple lookup."""

    human: int
    cell: tuple[int, int]
    slot: int = field(compare=False, repr=False)
    cell_id: int = field(compare=False, repr=False)

    def is_achieved(self, state) -> bool:
        return state[self.slot] == self.cell_id


class GridWorld:
    """Everything a built-in world shares; a subclass sets up the layout (``_setup``) and
    overrides ``transition_probabilities`` when its moves are not the plain ones. Members beyond the World protocol (``horizon``,
    ``grid_shape``, ``human_cell``, ``goal_cell``, ``goal_distance_after``) are used by the
    heuristic prior and the plots.

    ``goal_distance_after`` measures distances over static walls only: other agents and
    movable objects (the rock) are treated as passable, robot-only floor as a wall.
    """

    name = "grid"
    num_actions = NUM_ACTIONS
    action_names = ACTION_NAMES
    # The human prior an env builds when its config names none (read by rllib_empo.algorithm.env):
    # the exact phase-1 prior where the world is small enough to enumerate.
    default_prior = "boltzmann"

    def _setup(self, grid: Grid, robot_starts: list[int], human_starts: list[int],
               horizon: int, goal_cells: list[list[tuple[int, int]]],
               object_starts: tuple[int, ...] = (), human_only: tuple[int, ...] = ()) -> None:
        if not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"{self.name}: horizon must be an int >= 1, got {horizon!r}")
        self.grid, self.horizon = grid, horizon
        self.grid_shape = (grid.width, grid.height)
        nr, nh = len(robot_starts), len(human_starts)
        self.robot_agent_indices = list(range(nr))
        self.human_agent_indices = list(range(nr, nr + nh))
        self.num_agents = nr + nh
        self._s0 = (horizon, *robot_starts, *human_starts, *object_starts)
        everywhere = set(range(len(grid.cells)))
        self.human_only = frozenset(human_only)
        self._human_floor = everywhere - grid.robot_only
        self._robot_floor = everywhere - self.human_only
        self.robot_move = grid.move_table(self._robot_floor, self._target, self.num_actions)
        self.human_move = grid.move_table(self._human_floor, self._target, self.num_actions)
        self._moves = [self.robot_move] * nr + [self.human_move] * nh
        self._goals: dict[int, list] = {}
        self._dist: dict[int, list[float]] = {}
        for h, cells in zip(self.human_agent_indices, goal_cells):
            goals = [ReachGoal(h, c, 1 + h, grid.id_of(c)) for c in cells]
            self._goals[h] = [(g, 1.0 / len(goals)) for g in goals]
            for g in goals:
                if g.cell_id not in self._dist:
                    self._dist[g.cell_id] = grid.distances(g.cell_id, self._human_floor,
                                                           self._target, self.num_actions)
                if any(self._dist[g.cell_id][c] == UNREACHABLE for c in self._human_floor):
                    raise ValueError(f"{self.name}: goal {g} is not reachable from every cell")
        self._distance_cache: dict[tuple[int, int], np.ndarray] = {}
        # One-hot of the cell of every agent, then of every object, then of the steps left.
        # Per-cell rather than per-coordinate one-hots: fitted to rock_gate's exact log(-Q_r),
        # a 256x256 MLP reached a mean TV of pi_r of 0.005 from them, 0.023 from x/y one-hots.
        self._num_objects = len(object_starts)
        self._entities = self.num_agents + self._num_objects
        self._num_cells = len(grid.cells)
        self._time_offset = self._entities * self._num_cells
        self.state_dim = self._time_offset + horizon + 1
        self.goal_dim = nh + self._num_cells

    def _target(self, cid: int, action: int) -> int:
        """The cell ``action`` aims at from ``cid`` (-1: a wall); worlds with other actions
        override this (and ``num_actions``, ``action_names``)."""
        return self.grid.neighbour(cid, action)

    def _move_agents(self, cells: list[int], actions) -> None:
        """Move agents in agent-id order, in place: a move into a wall, onto floor the agent
        may not stand on, or into a cell another agent occupies *at that moment* fails and
        the agent stays. So an agent can follow one with a lower id in the same step, and
        two agents cannot swap cells."""
        for i, move in enumerate(self._moves):
            a = actions[i]
            if a:
                c = cells[i]
                target = move[c][a]
                if target != c and target not in cells:
                    cells[i] = target

    # --- World protocol -------------------------------------------------------------------
    def transition_probabilities(self, state, joint_action):
        """Deterministic moves by the shared rules (:meth:`_move_agents`); None once the time
        is up. Worlds with objects or noise override this."""
        if state[0] == 0:
            return None
        cells = list(state[1:])
        self._move_agents(cells, joint_action)
        return [(1.0, (state[0] - 1, *cells))]

    def initial_state(self) -> tuple:
        return self._s0

    def is_terminal(self, state) -> bool:
        return state[0] == 0

    def possible_goals(self, state, h: int) -> list:
        return list(self._goals[h])

    def encode_state(self, state) -> np.ndarray:
        v = np.zeros(self.state_dim, dtype=np.float32)
        for k in range(self._entities):
            v[k * self._num_cells + state[1 + k]] = 1.0
        v[self._time_offset + state[0]] = 1.0
        return v

    def encode_goal(self, goal: ReachGoal) -> np.ndarray:
        v = np.zeros(self.goal_dim, dtype=np.float32)
        nh = len(self.human_agent_indices)
        v[self.human_agent_indices.index(goal.human)] = 1.0
        v[nh + goal.cell_id] = 1.0
        return v

    # --- extras ---------------------------------------------------------------------------
    def human_cell(self, state, h: int) -> tuple[int, int]:
        return self.grid.cells[state[1 + h]]

    def goal_cell(self, goal: ReachGoal) -> tuple[int, int]:
        return goal.cell

    def goal_distance_after(self, state, h: int, goal: ReachGoal) -> np.ndarray:
        """Per action of human ``h``: static-wall BFS distance to the goal from the cell the
        action leads to (the current cell when a wall is in the way). The array is cached
        and read-only."""
        cid = state[1 + h]
        key = (cid, goal.cell_id)
        out = self._distance_cache.get(key)
        if out is None:
            dist = self._dist[goal.cell_id]
            out = np.array([dist[nc] for nc in self.human_move[cid]], dtype=np.float64)
            out.flags.writeable = False
            self._distance_cache[key] = out
        return out

    def _symbols(self, state) -> dict[int, str]:
        """Cell id -> character for rendering; agents over objects."""
        nr, nh = len(self.robot_agent_indices), len(self.human_agent_indices)
        symbols = {state[1 + self.num_agents + k]: "o" for k in range(self._num_objects)}
        for i, r in enumerate(self.robot_agent_indices):
            symbols[state[1 + r]] = "R" if nr == 1 else "RS"[i]
        for i, h in enumerate(self.human_agent_indices):
            symbols[state[1 + h]] = "H" if nh == 1 else str(i + 1)
        return symbols

    def legend(self) -> str:
        nr, nh = len(self.robot_agent_indices), len(self.human_agent_indices)
        parts = [f"{'R' if nr == 1 else 'RS'[i]}=robot {r}"
                 for i, r in enumerate(self.robot_agent_indices)]
        parts += [f"{'H' if nh == 1 else str(i + 1)}=human {h}"
                  for i, h in enumerate(self.human_agent_indices)]
        if self._num_objects:
            parts.append("o=rock")
        if self.grid.robot_only:
            parts.append(f"{ROBOT_ONLY}=robot-only")
        if self.human_only:
            parts.append(f"{HUMAN_ONLY}=human-only")
        return ", ".join(parts)

    def render(self, state) -> str:
        rows = self.grid.picture(self._symbols(state), self.human_only)
        rows.append(f"steps left: {state[0]}/{self.horizon}  ({self.legend()})")
        return "\n".join(rows)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, horizon={self.horizon})"
