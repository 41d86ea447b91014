"""Scalable synthetic worlds for the exact-solver scaling benchmark (``benchmarks/scaling.py``).

``RoomWorld(width, height, num_humans, horizon)``: one robot and 1-3 humans in an open
``width`` x ``height`` room, deterministic moves with the rules of the built-in grid worlds
(``rllib_empo/worlds/grid.py``), every human's goals the four corners (uniform weights).
The reachable state count grows like ``cells ** num_agents * horizon``, so sizes from
10^3 to beyond 10^6 states are one keyword away; the joint action count is 5 ** agents.

Long-horizon ``rock_gate`` (``make_world("rock_gate", horizon=h)``) is the other family: about
650 new states per extra step once every placement is reachable.
"""
from __future__ import annotations

from rllib_empo.worlds.grid import Grid, GridWorld


def room_layout(width: int, height: int, num_humans: int) -> str:
    rows = [["."] * width for _ in range(height)]
    rows[height // 2][width // 2] = "R"
    corners = [(0, 0), (width - 1, height - 1), (width - 1, 0)]
    for mark, (x, y) in zip("ABC", corners[:num_humans]):
        rows[y][x] = mark
    border = "#" * (width + 2)
    return "\n".join([border] + ["#" + "".join(r) + "#" for r in rows] + [border])


class RoomWorld(GridWorld):
    """1 robot (agent 0) and ``num_humans`` humans in an open room; ``horizon`` steps."""

    name = "bench_room"
    default_prior = "boltzmann"

    def __init__(self, width: int = 4, height: int = 4, num_humans: int = 2, horizon: int = 8):
        if not (2 <= width and 2 <= height and 1 <= num_humans <= 3):
            raise ValueError("room: width, height >= 2 and num_humans in 1..3")
        grid = Grid(room_layout(width, height, num_humans))
        corners = [(1, 1), (width, 1), (1, height), (width, height)]
        humans = [grid.mark(m) for m in "ABC"[:num_humans]]
        self._setup(grid, [grid.mark("R")], humans, horizon, [corners] * num_humans)
