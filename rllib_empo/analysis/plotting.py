"""PNG plots of a run (matplotlib ``Figure`` objects: no display needed, and the global
backend of a notebook or script that imports this stays as it was).

- :func:`plot_training_curves`: over learner updates, from a progress record
  (``rllib_empo.analysis.progress``; ``rllib-empo train`` writes ``progress.jsonl``): the
  V_h^e loss (cross-entropy) and the other networks' losses (MSE of log|value|) in separate
  panels, beta_r, the learning rates, the fidelity to the exact solution when the run logged
  ``Exact/*`` (``exact_eval_interval``, ``train --compare``) and the convergence residuals
  when it logged ``Residual/*``; the warm-up stages as shaded bands, the buffer clears as
  dashed lines.
- :func:`plot_learned_vs_exact` and :func:`plot_value_heatmap` (``value_plots``): learned
  against exact values and policies over the states, and X_h or V_r over a grid world's
  cells, for every human, with the exact map and the difference when a solution is given.

Every ``plot_*`` function writes one PNG and returns its path; the ``*_figure`` functions
return the matplotlib Figure instead.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from rllib_empo.analysis.progress import column
from rllib_empo.analysis.value_plots import (heatmap_figure, is_grid_world,
                                             learned_vs_exact_figure, plot_learned_vs_exact,
                                             plot_value_heatmap, save)
from rllib_empo.theory.schedule import NETWORKS, STAGE_NAMES

STAGE_COLORS = ("#4c72b0", "#55a868", "#8172b2", "#c44e52", "#937860", "#dd8452", "#8c8c8c")
NET_COLORS = {"v_h_e": "#1f77b4", "x_h": "#2ca02c", "u_r": "#9467bd", "q_r": "#d62728",
              "v_r": "#ff7f0e"}
# Learning rates are often equal for every network: thick solid lines under thinner dashed
# and dotted ones, with markers at staggered points, keep each visible where they overlap.
NET_STYLES = {"v_h_e": ("-", 4.0, "o"), "x_h": ("--", 2.6, "s"), "u_r": ("-.", 2.0, "^"),
              "q_r": (":", 1.6, "D"), "v_r": ((0, (1, 3)), 1.2, "v")}
LOSS_KINDS = {"log": ("binary\ncross-entropy", "MSE of\nlog|value|"), "mse": ("MSE", "MSE")}
FIDELITY = (("Exact/tv_pi_r_s0", "TV of pi_r at s0", "o-"),
            ("Exact/mean_tv_pi_r", "mean TV of pi_r over states", "s--"),
            ("Exact/v_r_s0_rel_error", "relative error of V_r(s0)", "^:"),
            ("Exact/mean_abs_v_h_e_error", "mean |V_h^e error|", "v-."))


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


def clear_steps(rows: Sequence[dict], clear_points: Optional[Sequence[int]] = None) -> list:
    """Learner updates at which the replay buffer was cleared: the schedule's clearing points
    the run reached (``run.json``), else the steps where ``Warmup/num_buffer_clears`` grew."""
    last = max((r["step"] for r in rows), default=0)
    if clear_points is not None:
        return [c for c in clear_points if c <= last]
    out, prev = [], 0
    for x, n in zip(*column(rows, "Warmup/num_buffer_clears")):
        if n > prev:
            out.append(x)
        prev = n
    return out


def _bands(ax, spans, label: bool = False) -> None:
    for stage, start, end in spans:
        ax.axvspan(start, max(end, start + 1e-9), color=STAGE_COLORS[stage], alpha=0.16, lw=0,
                   label=STAGE_NAMES[stage] if label else None)
        if label:                                   # stage id on top of the band
            ax.text((start + end) / 2, 1.01, f"S{stage}", transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=7, color=STAGE_COLORS[stage])


def _clears(ax, steps, label: bool = False) -> None:
    for i, x in enumerate(steps):
        ax.axvline(x, color="k", ls=(0, (4, 3)), lw=1.0, alpha=0.75,
                   label="replay buffer cleared" if label and i == 0 else None)


_SHORT = FuncFormatter(lambda v, _: f"{v:.2g}")


def _log_axis(ax) -> None:
    """A log y-axis with labels like 0.62, not 6.2e-1; minor ticks are labelled only when
    the data span less than a decade (otherwise they would crowd)."""
    ax.set_yscale("log")
    ys = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax.get_lines()])
    ys = ys[np.isfinite(ys) & (ys > 0)]
    ax.yaxis.set_major_formatter(_SHORT)
    if ys.size and ys.max() / ys.min() < 10:
        ax.yaxis.set_minor_formatter(_SHORT)
        ax.tick_params(axis="y", which="minor", labelsize=7)
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


def _net_lines(ax, rows, group: str, nets, staggered: bool = False) -> None:
    for k, net in enumerate(nets):
        xs, ys = column(rows, f"{group}/{net}")
        if not xs:
            continue
        ls, lw, marker = NET_STYLES[net]
        every = max(1, len(xs) // 8)
        ax.plot(xs, np.maximum(ys, 1e-12), ls=ls, lw=lw if staggered else 1.0,
                color=NET_COLORS[net], label=net, marker=marker, ms=4,
                markevery=(k * every // max(len(nets), 1), every) if staggered else every)


def plot_training_curves(rows: Sequence[dict], path, **kwargs) -> str:
    """Write :func:`training_curves_figure` as a PNG; returns its path."""
    return save(training_curves_figure(rows, **kwargs), path)


def training_curves_figure(rows: Sequence[dict], *, stage_ends: Optional[Sequence[int]] = None,
                           clear_points: Optional[Sequence[int]] = None,
                           value_loss: str = "log", title: str = "EMPO training") -> Figure:
    """The panels of the module docstring over learner updates (``value_loss`` names the
    losses: "log" or "mse", the run's config field)."""
    if not rows:
        raise ValueError("the progress record has no rows")
    spans, clears = stage_spans(rows, stage_ends), clear_steps(rows, clear_points)
    ce_kind, value_kind = LOSS_KINDS.get(value_loss, LOSS_KINDS["log"])
    value_nets = [n for n in NETWORKS if n != "v_h_e" and column(rows, f"Loss/{n}")[0]]
    residuals = sorted({k.split("/", 1)[1] for r in rows for k in r
                        if k.startswith("Residual/")})
    panels = ["v_h_e", "values", "beta", "lr"]
    panels += ["exact"] if column(rows, "Exact/tv_pi_r_s0")[0] else []
    panels += ["residual"] if residuals else []
    fig = Figure(figsize=(10, 2.1 * len(panels) + 0.8))
    axes = dict(zip(panels, fig.subplots(len(panels), 1, sharex=True)))

    ax = axes["v_h_e"]
    _net_lines(ax, rows, "Loss", ["v_h_e"])
    _log_axis(ax)
    ax.set_ylabel(f"V_h^e loss:\n{ce_kind}", fontsize=9)
    ax = axes["values"]
    _net_lines(ax, rows, "Loss", value_nets)
    ax.set_ylabel(f"{', '.join(value_nets) or 'value'} loss:\n{value_kind}", fontsize=9)
    if value_nets:
        _log_axis(ax)
    ax = axes["beta"]
    xs, ys = column(rows, "Warmup/effective_beta_r")
    ax.plot(xs, ys, "-", color="k", lw=1.4, label="effective beta_r")
    ax.set_ylabel("beta_r")
    ax = axes["lr"]
    _net_lines(ax, rows, "LearningRate", [n for n in NETWORKS
                                          if column(rows, f"LearningRate/{n}")[0]], staggered=True)
    ax.set_ylabel("learning rate")
    if ax.get_lines():
        _log_axis(ax)
    if "exact" in axes:
        ax = axes["exact"]
        for tag, label, style in FIDELITY:
            xs, ys = column(rows, tag)
            if xs:
                ax.plot(xs, ys, style, ms=3, lw=1, label=label)
        ax.set_ylabel("error against the\nexact solution", fontsize=9)
        ax.set_ylim(bottom=0)
    if "residual" in axes:
        ax = axes["residual"]
        for name in residuals:
            xs, ys = column(rows, f"Residual/{name}")
            net = name.split("_max")[0]
            ax.plot(xs, np.maximum(ys, 1e-12), "-" if not name.endswith("_max") else ":", lw=1,
                    color=NET_COLORS.get(net), label=name)
        ax.set_yscale("log")
        ax.set_ylabel("convergence residual:\n|pred - target| / |target|", fontsize=9)
    for i, ax in enumerate(axes.values()):
        _bands(ax, spans, label=(i == 0))
        _clears(ax, clears, label=(i == 0))
        ax.grid(True, alpha=0.3)
        if any(line.get_label()[:1] != "_" for line in ax.get_lines()) or i == 0:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_xlabel("learner updates")
    fig.suptitle(title)
    fig.subplots_adjust(hspace=0.45, right=0.74, top=1 - 0.55 / fig.get_figheight())
    return fig


__all__ = ["plot_training_curves", "plot_learned_vs_exact", "plot_value_heatmap", "stage_spans",
           "clear_steps", "is_grid_world", "training_curves_figure", "learned_vs_exact_figure",
           "heatmap_figure"]
