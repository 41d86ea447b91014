"""Plots of learned values and policies against the exact solution, and over a grid world's
cells (``rllib_empo.analysis.plotting`` re-exports both).

- :func:`plot_learned_vs_exact`: V_r over the non-terminal states, pi_r(a|s) learned against
  exact for every (state, action) with the initial state's actions marked and named,
  pi_r(.|s0) as bars per action, and the distribution of the per-state TV distance.
- :func:`plot_value_heatmap`: X_h of each human (or V_r) by that human's cell, averaged over
  the given states in which the human stands there; one row per human; with a solution the
  exact map, the learned map and their difference side by side. Walls are dark, floor cells
  the human never occupies in the states are hatched, every colour bar says what it shows.
"""
from __future__ import annotations

import os
from typing import Optional

import matplotlib
import numpy as np
from matplotlib.colors import Normalize, SymLogNorm, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from rllib_empo.analysis.rollout import action_name

ACTION_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b2", "#937860", "#da8bc3",
                 "#8c8c8c", "#ccb974", "#64b5cd")
ACTION_MARKERS = ("*", "P", "X", "D", "^", "v", "<", ">", "s", "o")
WALL_COLOR = "#3b3b3b"
CELL_INCHES = 0.42


def save(fig, path) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def is_grid_world(world) -> bool:
    """Whether ``world`` can be drawn cell by cell (``grid_shape``, ``human_cell``)."""
    return hasattr(world, "grid_shape") and callable(getattr(world, "human_cell", None))


def _action(world, a: int) -> str:
    return action_name(world, a) or f"action {a}"


# ------------------------------------------------------------------ learned vs exact
def plot_learned_vs_exact(algo, solution, path, **kwargs) -> str:
    """Write :func:`learned_vs_exact_figure` as a PNG; returns its path."""
    return save(learned_vs_exact_figure(algo, solution, **kwargs), path)


def learned_vs_exact_figure(algo, solution, *, title: str = "learned vs exact") -> Figure:
    """The four panels of the module docstring."""
    graph = solution.graph
    world = getattr(algo, "world", graph.world)
    idx = np.flatnonzero(~graph.terminal)
    states = [graph.states[i] for i in idx]
    learned = algo.values(states, need=("pi_r", "v_r"))
    v_exact, pi_exact = solution.V_R[idx], solution.PI[idx]
    order = np.argsort(v_exact)
    tv = 0.5 * np.abs(learned["pi_r"] - pi_exact).sum(-1)
    s0 = int(np.flatnonzero(idx == 0)[0])
    num_actions = pi_exact.shape[1]
    names = [_action(world, a) for a in range(num_actions)]

    fig = Figure(figsize=(12, 8.4), layout="constrained")
    (a1, a2), (a3, a4) = fig.subplots(2, 2)
    a1.plot(np.arange(len(idx)), learned["v_r"][order], ".", ms=3, alpha=0.6, color="#d62728",
            label="learned")
    a1.plot(np.arange(len(idx)), v_exact[order], "-", lw=1.5, color="k", label="exact")
    a1.set_yscale("symlog", linthresh=1.0)
    a1.set_xlabel("non-terminal states, sorted by exact V_r")
    a1.set_ylabel("V_r")
    a1.set_title("V_r over states")
    a1.legend(fontsize=8)

    a2.scatter(pi_exact.ravel(), learned["pi_r"].ravel(), s=4, alpha=0.3, color="#9a9a9a",
               label="every (state, action)")
    for a in range(num_actions):            # the initial state's actions, each named; later
        size = 170 - 100 * a / max(num_actions - 1, 1)      # ones smaller, so ties stay visible
        a2.scatter(pi_exact[s0, a], learned["pi_r"][s0, a], s=size, zorder=3,
                   marker=ACTION_MARKERS[a % len(ACTION_MARKERS)],
                   color=ACTION_COLORS[a % len(ACTION_COLORS)], edgecolor="k", lw=0.5,
                   label=f"s0, {names[a]}")
    a2.plot([0, 1], [0, 1], "k--", lw=1)
    a2.set_xlim(-0.02, 1.02)
    a2.set_ylim(-0.02, 1.02)
    a2.set_xlabel("exact pi_r(a|s)")
    a2.set_ylabel("learned pi_r(a|s)")
    a2.set_title("pi_r, every state and action")
    a2.legend(fontsize=7, loc="upper left", ncol=2 if num_actions > 6 else 1)

    x = np.arange(num_actions)
    a3.bar(x - 0.2, pi_exact[s0], 0.4, color="#4d4d4d", label="exact")
    a3.bar(x + 0.2, learned["pi_r"][s0], 0.4, color="#d62728", label="learned")
    a3.set_xticks(x, names, rotation=30 if num_actions > 5 else 0, fontsize=8)
    a3.set_ylabel("pi_r(a | s0)")
    a3.set_title(f"pi_r at the initial state (TV {tv[s0]:.3f})")
    a3.legend(fontsize=8)

    a4.hist(tv, bins=30, range=(0, 1), color="#8172b2", alpha=0.8)
    a4.axvline(tv[s0], color="#d62728", lw=2, label=f"initial state: {tv[s0]:.3f}")
    a4.axvline(tv.mean(), color="k", ls="--", lw=1, label=f"mean: {tv.mean():.3f}")
    a4.set_xlabel("TV(learned pi_r, exact pi_r)")
    a4.set_ylabel("states")
    a4.set_title("policy error per state")
    a4.legend(fontsize=8)
    fig.suptitle(f"{title} ({len(idx)} non-terminal states)")
    return fig


# ------------------------------------------------------------------ heat maps
def _grid_means(world, states, vals, h: int) -> np.ndarray:
    width, height = world.grid_shape
    total, count = np.zeros((height, width)), np.zeros((height, width))
    for s, v in zip(states, vals):
        x, y = world.human_cell(s, h)
        total[y, x] += v
        count[y, x] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _walls(world) -> np.ndarray:
    """[height, width] True where a cell is not floor (built-in grid worlds; else none)."""
    width, height = world.grid_shape
    cell_id = getattr(getattr(world, "grid", None), "cell_id", None)
    if cell_id is None:
        return np.zeros((height, width), dtype=bool)
    return np.array([[(x, y) not in cell_id for x in range(width)] for y in range(height)])


def _label(v: float) -> str:
    """At most 4-5 characters, so that labels fit their cells: 0.41, -7.1, -16, -230, -12k."""
    a = abs(v)
    if a < 1:
        return f"{v:.2f}"
    if a < 99.5:
        return f"{v:.2g}"
    return f"{v:.0f}" if a < 999.5 else f"{v / 1000:.0f}k"


def _draw(ax, grid, walls, cmap, norm, fontsize: float, diverging: bool):
    height, width = grid.shape
    background = np.where(walls[..., None], matplotlib.colors.to_rgb(WALL_COLOR), 1.0)
    ax.imshow(background, origin="upper", interpolation="nearest")
    im = ax.imshow(np.ma.masked_invalid(np.where(walls, np.nan, grid)), cmap=cmap, norm=norm,
                   origin="upper", interpolation="nearest")
    for (y, x), v in np.ndenumerate(grid):
        if walls[y, x]:
            continue
        if not np.isfinite(v):
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, hatch="////",
                                   edgecolor="#b0b0b0", lw=0))
            continue
        shade = float(norm(v))
        dark = abs(shade - 0.5) > 0.3 if diverging else shade < 0.5
        ax.text(x, y, _label(v), ha="center", va="center", fontsize=fontsize,
                color="w" if dark else "k")
    ax.set_xticks(range(width))
    ax.set_yticks(range(height))
    ax.tick_params(labelsize=6)
    return im


def plot_value_heatmap(algo, states, path, **kwargs) -> str:
    """Write :func:`heatmap_figure` as a PNG; returns its path."""
    return save(heatmap_figure(algo, states, **kwargs), path)


def heatmap_figure(algo, states, *, quantity: str = "x_h", human="all", solution=None,
                   world=None, title: Optional[str] = None,
                   states_label: str = "non-terminal states") -> Figure:
    """Heat maps of ``quantity`` ("x_h" or "v_r") by the cell of each human (``human``: a
    position in ``human_agent_indices`` or "all"), averaged over the non-terminal
    ``states`` (``states_label`` says what they are, in the title). With ``solution`` (only
    states it knows are used): exact, learned and learned - exact side by side, a row per
    human; without, the humans' learned maps side by side."""
    world = world if world is not None else algo.world
    if not is_grid_world(world):
        raise ValueError(f"world {world!r} has no grid_shape / human_cell(state, h): "
                         "a heat map needs a grid world")
    if quantity not in ("x_h", "v_r"):
        raise ValueError(f"quantity must be 'x_h' or 'v_r', got {quantity!r}")
    humans = list(world.human_agent_indices)
    positions = range(len(humans)) if human == "all" else [int(human)]
    states = [s for s in states if not world.is_terminal(s)]
    if solution is not None:
        states = [s for s in states if s in solution.graph.index]
    if not states:
        raise ValueError("no non-terminal states to plot")
    learned = algo.values(states, need=(quantity,))[quantity]
    exact = None
    if solution is not None:
        rows = [solution.graph.index[s] for s in states]
        exact = solution.X_H[rows] if quantity == "x_h" else solution.V_R[rows]
    rows_of_maps = []
    for pos in positions:
        pick = (lambda v: v[:, pos]) if quantity == "x_h" else (lambda v: v)
        maps = {"learned": _grid_means(world, states, pick(learned), humans[pos])}
        if exact is not None:
            maps = {"exact": _grid_means(world, states, pick(exact), humans[pos]), **maps}
            maps["learned - exact"] = maps["learned"] - maps["exact"]
        rows_of_maps.append((pos, maps))

    name = "X_h" if quantity == "x_h" else "V_r"
    values = np.concatenate([m[np.isfinite(m)] for _, maps in rows_of_maps
                             for k, m in maps.items() if k != "learned - exact"])
    vmin, vmax = float(values.min()), float(values.max())
    if vmax - vmin < 1e-12:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    # V_r may span orders of magnitude (U_r ~ -X_h^(-xi*eta) near the X_h floor): log colours
    decades = np.log10(max(abs(vmin), abs(vmax), 1.0) / max(min(abs(vmin), abs(vmax)), 1.0))
    norm = (SymLogNorm(linthresh=1.0, vmin=vmin, vmax=vmax) if quantity == "v_r" and decades > 1
            else Normalize(vmin=vmin, vmax=vmax))
    diffs = [m["learned - exact"] for _, m in rows_of_maps if "learned - exact" in m]
    dmax = max([float(np.nanmax(np.abs(d))) for d in diffs if np.isfinite(d).any()] + [1e-9])
    dnorm = TwoSlopeNorm(vcenter=0.0, vmin=-dmax, vmax=dmax)

    walls = _walls(world)
    width, height = world.grid_shape
    map_w = max(3.0, CELL_INCHES * width)
    map_h = map_w * height / width
    cols = len(rows_of_maps[0][1])
    transpose = cols == 1                   # learned maps only: the humans side by side
    nrows, ncols = (1, len(rows_of_maps)) if transpose else (len(rows_of_maps), cols)
    fig = Figure(figsize=(map_w * ncols + 1.6 * (1 + (cols == 3)), map_h * nrows + 1.3),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    if transpose:
        axes = axes.T
    fontsize = float(np.clip(map_w / width * 72 / 3.4, 4.5, 8))
    cmap = matplotlib.colormaps["viridis"]
    dcmap = matplotlib.colormaps["RdBu_r"]
    im = dim = None
    for r, (pos, maps) in enumerate(rows_of_maps):
        for c, (kind, grid) in enumerate(maps.items()):
            ax = axes[r, c]
            diverging = kind == "learned - exact"
            drawn = _draw(ax, grid, walls, dcmap if diverging else cmap,
                          dnorm if diverging else norm, fontsize, diverging)
            dim, im = (drawn, im) if diverging else (dim, drawn)
            who = f"human {humans[pos]}" if len(humans) > 1 or quantity == "x_h" else ""
            ax.set_title(f"{kind} {name}" + (f", {who}" if who else ""), fontsize=9)
    value_axes = [ax for r in axes for ax in r[:2 if dim is not None else cols]]
    fig.colorbar(im, ax=value_axes, shrink=0.9, label=f"{name} (mean over the states)")
    if dim is not None:
        fig.colorbar(dim, ax=list(axes[:, -1]), shrink=0.9, label=f"learned - exact {name}")
    fig.legend(handles=[Patch(facecolor=WALL_COLOR, label="wall"),
                        Patch(facecolor="white", edgecolor="#b0b0b0", hatch="////",
                              label="floor the human never occupies in these states")],
               loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    what = ("X_h, each human's aggregate power" if quantity == "x_h" else "V_r, the robot's value")
    fig.suptitle(title or f"{what}, by the human's cell (mean over {len(states)} "
                          f"{states_label})", fontsize=10)
    return fig


__all__ = ["plot_learned_vs_exact", "plot_value_heatmap", "learned_vs_exact_figure",
           "heatmap_figure", "is_grid_world", "save"]
