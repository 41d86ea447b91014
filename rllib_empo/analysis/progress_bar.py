"""A training run's progress on the console: one bar that updates in place on a terminal,
plain lines when the output is a file or a pipe, and a summary at the end.

    with TrainingProgress(total=10_000) as progress:       # total learner updates
        while algo.num_updates < 10_000:
            progress.update(algo.train())
    print("\\n".join(progress.summary()))

The bar (tqdm) shows the percentage, the updates done and planned, the time elapsed and left,
and after it the stage, beta_r, the losses of the last update and the convergence residual
(:data:`rllib_empo.analysis.progress.CONVERGENCE_METRIC`, when the results log it)::

    train  42%|########            | 4200/10000 [00:31<00:43], stage 5 ramp-up | beta_r 3.2 | loss v_h_e 0.021 x_h 0.0035 q_r 0.012 | residual 0.031

In ``lines`` mode (the default when the stream is not a terminal: ``> train.log``, CI) it
prints one line at every ``line_every`` of the run and at every stage transition, instead
of redrawing a bar that a log file would keep every copy of.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Optional

from tqdm import tqdm

from rllib_empo.analysis.progress import convergence_residual, result_value
from rllib_empo.theory.schedule import NETWORKS, stage_name

MODES = ("auto", "bar", "lines", "none")


def _num(v: float) -> str:
    return f"{v:.2g}"


def _clock(seconds: float) -> str:
    return tqdm.format_interval(max(0.0, seconds))


def describe(result: dict) -> str:
    """``stage 5 ramp-up | beta_r 3.2 | loss v_h_e 0.021 ... | residual 0.031`` of a result."""
    w = result.get("Warmup") or {}
    stage = int(w.get("stage", 0))
    name = stage_name(stage).split(": ", 1)[-1].replace("beta_r ", "")
    parts = [f"stage {stage} {name}", f"beta_r {float(w.get('effective_beta_r', 0.0)):.3g}"]
    losses = result.get("Loss") or {}
    shown = [f"{n} {_num(losses[n])}" for n in NETWORKS
             if result_value(result, f"Loss/{n}") is not None]
    parts.append("loss " + " ".join(shown) if shown else "loss -")
    residual = convergence_residual(result)
    if residual is not None:
        parts.append(f"residual {_num(residual)}")
    return " | ".join(parts)


class TrainingProgress:
    """Progress of a run of ``total`` learner updates (``unit="updates"``) or ``total``
    train() calls (``unit="iterations"``); see the module docstring.

    ``mode``: "bar", "lines", "none", or "auto" (a bar if ``stream`` is a terminal, else
    lines). ``stream`` defaults to stdout."""

    def __init__(self, total: int, *, unit: str = "updates", mode: str = "auto", stream=None,
                 line_every: float = 0.1):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if unit not in ("updates", "iterations"):
            raise ValueError(f"unit must be 'updates' or 'iterations', got {unit!r}")
        self.total, self.unit = int(total), unit
        self.stream = stream if stream is not None else sys.stdout
        if mode == "auto":
            mode = "bar" if callable(getattr(self.stream, "isatty", None)) and self.stream.isatty() \
                else "lines"
        self.mode, self.line_every = mode, float(line_every)
        self.iterations, self.position = 0, 0
        self.first: Optional[dict] = None
        self.last: Optional[dict] = None
        self._t0 = time.perf_counter()
        self._next_line = 0
        self._bar = None
        if mode == "bar":
            self._bar = tqdm(total=self.total, file=self.stream, dynamic_ncols=True,
                             desc="train", unit=unit, mininterval=0.25, smoothing=0.1,
                             bar_format="{desc} {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} "
                                        "[{elapsed}<{remaining}]{postfix}")   # tqdm puts ", " first

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def _position_of(self, result: dict) -> int:
        if self.unit == "iterations":
            return self.iterations
        return int(result_value(result, "Warmup/num_updates") or 0)

    def update(self, result: dict) -> None:
        """Show one train() result."""
        self.iterations += 1
        self.first = self.first if self.first is not None else result
        self.last = result
        self.position = min(self._position_of(result), self.total)
        if self._bar is not None:
            self._bar.set_postfix_str(describe(result), refresh=False)
            self._bar.update(self.position - self._bar.n)
        elif self.mode == "lines":
            fraction = self.position / self.total if self.total else 1.0
            transition = bool(result_value(result, "Warmup/stage_transition"))
            # whole multiples of line_every, counted in ints (0.1 * 3 > 0.3 in floats)
            part = int(round(fraction * 1e9)) // int(round(self.line_every * 1e9))
            if part >= self._next_line or transition or self.position >= self.total:
                self._write_line(result, fraction)
                self._next_line = max(self._next_line, part + 1)

    def _write_line(self, result: dict, fraction: float) -> None:
        left = self.elapsed * (1 - fraction) / fraction if fraction > 0 else math.nan
        left = _clock(left) if math.isfinite(left) else "?"
        print(f"[{100 * fraction:3.0f}%] {self.unit} {self.position:,}/{self.total:,} | "
              f"{_clock(self.elapsed)} elapsed, {left} left | {describe(result)}",
              file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "TrainingProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def summary(self) -> list[str]:
        """Lines that sum the run up: what was done in how long, and where it ended."""
        if self.last is None:
            return ["no training iteration finished"]
        r = self.last
        updates = int(result_value(r, "Warmup/num_updates") or 0)
        env_steps = result_value(r, "num_env_steps_sampled_lifetime")
        seconds = self.elapsed
        rate = f", {updates / seconds:,.0f} updates/s" if seconds > 0 else ""
        steps = f", {int(env_steps):,} env steps" if env_steps is not None else ""
        clears = int(result_value(r, "Warmup/num_buffer_clears") or 0)
        lines = [f"done: {updates:,} learner updates in {self.iterations:,} iterations, "
                 f"{_clock(seconds)}{rate}{steps}, {clears} buffer clear(s)",
                 f"final: {describe(r)}"]
        return lines


__all__ = ["TrainingProgress", "describe", "MODES"]
