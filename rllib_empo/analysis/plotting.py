"""PNG plots of a run (matplotlib ``Figure`` objects: no display needed, and the global
backend of a notebook or script that imports this stays as it was).

- :func:`plot_training_curves`: losses, beta_r and learning rates over learner updates, with
  the warm-up stages as shaded vertical bands, from a progress record
  (``rllib_empo.analysis.progress``; ``rllib-empo train`` writes ``progress.jsonl``).
- :func:`plot_learned_vs_exact`: learned vs exact V_r and pi_r over the reachable
  non-terminal states, when an exact solution exists (``rllib_empo.exact.solve``).
- :func:`plot_value_heatmap`: X_h (or V_r) over the grid, by the cell of one human, for
  worlds with ``grid_shape`` and ``human_cell(state, h)`` (the built-in grid worlds): the
  mean over the given states in which that human stands on the cell (exact and learned side
  by side when a solution is given).

Every function writes one PNG and returns its path.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import matplotlib
import numpy as np
from matplotlib.colors import Normalize, SymLogNorm
from matplotlib.figure import Figure

from rllib_empo.analysis.progress import column
from rllib_empo.theory.schedule import NETWORKS, STAGE_NAMES

STAGE_COLORS = ("#4c72b0", "#55a868", "#8172b2", "#c44e52", "#937860", "#dd8452", "#8c8c8c")
NET_COLORS = {"v_h_e": "#1f77b4", "x_h": "#2ca02c", "u_r": "#9467bd", "q_r": "#d62728",
              "v_r": "#ff7f0e"}


def _save(fig, path) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def stage_spans(rows: Sequence[dict], stage_ends: Optional[Sequence[int]] = None
                ) -> list[tuple[int, float, float]]:
    """(stage, start, end) intervals in learner updates. Exact from the schedule's
    cumulative ends E0..E5 when given (``run.json``), else inferred from the rows'
    ``Warmup/stage`` (boundaries then known to one iteration's updates)."""
    last = max((r["step"] for r in rows), default=0)
    if stage_ends is not None:
        starts = (0,) + tuple(stage_ends)
        ends = tuple(stage_ends) + (float("inf"),)
        return [(k, starts[k], min(ends[k], last)) for k in range(len(STAGE_NAMES))
                if ends[k] > starts[k] and starts[k] < last]
    spans, cur, start = [], None, 0
    for x, stage in zip(*column(rows, "Warmup/stage")):
        stage = int(stage)
        if cur is None:
            cur, start = stage, 0
        elif stage != cur:
            spans.append((cur, start, x))
            cur, start = stage, x
    if cur is not None:
        spans.append((cur, start, last))
    return spans


def _bands(ax, spans, label: bool = False) -> None:
    for stage, start, end in spans:
        ax.axvspan(start, max(end, start + 1e-9), color=STAGE_COLORS[stage], alpha=0.16, lw=0,
                   label=STAGE_NAMES[stage] if label else None)
        if label:                                   # stage id on top of the band
            ax.text((start + end) / 2, 1.01, f"S{stage}", transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=7, color=STAGE_COLORS[stage])


def plot_training_curves(rows: Sequence[dict], path, *, stage_ends: Optional[Sequence[int]] = None,
                         title: str = "EMPO training") -> str:
    """Losses (log scale), beta_r, learning rates (and exact-solution fidelity if the rows
    have ``Exact/tv_pi_r_s0``) over learner updates, stages as shaded bands."""
    if not rows:
        raise ValueError("the progress record has no rows")
    spans = stage_spans(rows, stage_ends)
    has_exact = bool(column(rows, "Exact/tv_pi_r_s0")[0])
    n = 4 if has_exact else 3
    fig = Figure(figsize=(9, 2.4 * n + 0.6))
    axes = fig.subplots(n, 1, sharex=True)
    ax_loss, ax_beta, ax_lr = axes[:3]
    for net in NETWORKS:
        xs, ys = column(rows, f"Loss/{net}")
        if xs:
            ax_loss.plot(xs, np.maximum(ys, 1e-12), ".-", ms=2, lw=0.8, color=NET_COLORS[net],
                         label=net)
        xs, ys = column(rows, f"LearningRate/{net}")
        if xs:
            ax_lr.plot(xs, ys, "-", lw=1.2, color=NET_COLORS[net], label=net)
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss")
    xs, ys = column(rows, "Warmup/effective_beta_r")
    ax_beta.plot(xs, ys, "-", color="k", lw=1.4, label="effective beta_r")
    ax_beta.set_ylabel("beta_r")
    ax_lr.set_ylabel("learning rate")
    if any(ax_lr.get_lines()):
        ax_lr.set_yscale("log")
    if has_exact:
        ax_ex = axes[3]
        for tag, style in (("Exact/tv_pi_r_s0", "o-"), ("Exact/mean_tv_pi_r", "s--")):
            xs, ys = column(rows, tag)
            if xs:
                ax_ex.plot(xs, ys, style, ms=3, lw=1, label=tag.split("/")[1])
        ax_ex.set_ylabel("TV to exact pi_r")
        ax_ex.set_ylim(bottom=0)
    for i, ax in enumerate(axes):
        _bands(ax, spans, label=(i == 0))
        ax.grid(True, alpha=0.3)
    handles, labels = ax_loss.get_legend_handles_labels()
    ax_loss.legend(handles, labels, fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1))
    for ax in axes[1:]:
        if any(line.get_label()[:1] != "_" for line in ax.get_lines()):
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    axes[-1].set_xlabel("learner updates")
    axes[0].set_title(title, pad=14)
    return _save(fig, path)


def plot_learned_vs_exact(algo, solution, path, *, title: str = "learned vs exact") -> str:
    """V_r per state (states sorted by exact V_r), pi_r(a|s) learned against exact for
    every (state, action), and the distribution of the per-state TV distance."""
    graph = solution.graph
    idx = np.flatnonzero(~graph.terminal)
    states = [graph.states[i] for i in idx]
    learned = algo.values(states, need=("pi_r", "v_r"))
    v_exact, pi_exact = solution.V_R[idx], solution.PI[idx]
    order = np.argsort(v_exact)
    tv = 0.5 * np.abs(learned["pi_r"] - pi_exact).sum(-1)
    s0 = int(np.flatnonzero(idx == 0)[0])

    fig = Figure(figsize=(15, 4.3))
    a1, a2, a3 = fig.subplots(1, 3)
    a1.plot(np.arange(len(idx)), learned["v_r"][order], ".", ms=3, alpha=0.6, color="#d62728",
            label="learned")
    a1.plot(np.arange(len(idx)), v_exact[order], "-", lw=1.5, color="k", label="exact")
    a1.set_yscale("symlog", linthresh=1.0)
    a1.set_xlabel("non-terminal states, sorted by exact V_r")
    a1.set_ylabel("V_r")
    a1.set_title("V_r over states")
    a1.legend(fontsize=8)

    a2.scatter(pi_exact.ravel(), learned["pi_r"].ravel(), s=4, alpha=0.35, color="#1f77b4",
               label="(state, action)")
    a2.scatter(pi_exact[s0], learned["pi_r"][s0], s=40, color="#d62728", marker="*",
               label="initial state", zorder=3)
    a2.plot([0, 1], [0, 1], "k--", lw=1)
    a2.set_xlim(-0.02, 1.02)
    a2.set_ylim(-0.02, 1.02)
    a2.set_xlabel("exact pi_r(a|s)")
    a2.set_ylabel("learned pi_r(a|s)")
    a2.set_title("pi_r, every state and action")
    a2.legend(fontsize=8, loc="upper left")

    a3.hist(tv, bins=30, range=(0, 1), color="#8172b2", alpha=0.8)
    a3.axvline(tv[s0], color="#d62728", lw=2, label=f"initial state: {tv[s0]:.3f}")
    a3.axvline(tv.mean(), color="k", ls="--", lw=1, label=f"mean: {tv.mean():.3f}")
    a3.set_xlabel("TV(learned pi_r, exact pi_r)")
    a3.set_ylabel("states")
    a3.set_title("policy error per state")
    a3.legend(fontsize=8)
    fig.suptitle(f"{title} ({len(idx)} non-terminal states)")
    return _save(fig, path)


def _grid_means(world, states, vals, human_pos: int) -> np.ndarray:
    h = list(world.human_agent_indices)[human_pos]
    width, height = world.grid_shape
    total, count = np.zeros((height, width)), np.zeros((height, width))
    for s, v in zip(states, vals):
        x, y = world.human_cell(s, h)
        total[y, x] += v
        count[y, x] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def plot_value_heatmap(algo, states, path, *, quantity: str = "x_h", human: int = 0,
                       solution=None, world=None, title: Optional[str] = None) -> str:
    """Heat map of ``quantity`` ("x_h" of human ``human`` -- a position in
    ``human_agent_indices`` -- or "v_r") by that human's cell, averaged over ``states``
    (cells the human never occupies in them are blank). With ``solution`` the exact map is
    drawn beside the learned one (only states the solution knows are used)."""
    world = world if world is not None else algo.world
    if not (hasattr(world, "grid_shape") and callable(getattr(world, "human_cell", None))):
        raise ValueError(f"world {world!r} has no grid_shape / human_cell(state, h): "
                         "a heat map needs a grid world")
    if quantity not in ("x_h", "v_r"):
        raise ValueError(f"quantity must be 'x_h' or 'v_r', got {quantity!r}")
    states = [s for s in states if not world.is_terminal(s)]
    if solution is not None:
        states = [s for s in states if s in solution.graph.index]
    if not states:
        raise ValueError("no non-terminal states to plot")
    learned = algo.values(states, need=(quantity,))[quantity]
    learned = learned[:, human] if quantity == "x_h" else learned
    maps = [("learned", _grid_means(world, states, learned, human))]
    if solution is not None:
        rows = [solution.graph.index[s] for s in states]
        exact = solution.X_H[rows, human] if quantity == "x_h" else solution.V_R[rows]
        maps.insert(0, ("exact", _grid_means(world, states, exact, human)))
    finite = np.concatenate([m[np.isfinite(m)] for _, m in maps])
    vmin, vmax = float(finite.min()), float(finite.max())
    if vmax - vmin < 1e-12:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    # V_r spans orders of magnitude (U_r ~ -X_h^(-xi*eta) near the X_h floor): log colours
    norm = (SymLogNorm(linthresh=1.0, vmin=vmin, vmax=vmax) if quantity == "v_r"
            else Normalize(vmin=vmin, vmax=vmax))
    label = f"X_h (human {list(world.human_agent_indices)[human]})" if quantity == "x_h" else "V_r"
    fig = Figure(figsize=(4.2 * len(maps) + 1.2, 3.4), layout="constrained")
    axes = fig.subplots(1, len(maps), squeeze=False)
    cmap = matplotlib.colormaps["viridis"].copy()
    cmap.set_bad("#d9d9d9")
    for ax, (name, grid) in zip(axes[0], maps):
        im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, origin="upper",
                       interpolation="nearest")
        for (y, x), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(x, y, f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}", ha="center",
                        va="center", fontsize=7, color="w" if norm(v) < 0.5 else "k")
        ax.set_title(f"{name} {label}")
        ax.set_xticks(range(grid.shape[1]))
        ax.set_yticks(range(grid.shape[0]))
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.85)
    fig.suptitle(title or f"{label} by the human's cell (mean over {len(states)} states; grey: "
                          "never there)", fontsize=9)
    return _save(fig, path)


__all__ = ["plot_training_curves", "plot_learned_vs_exact", "plot_value_heatmap", "stage_spans"]
