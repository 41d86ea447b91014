"""A training run's progress record: one JSON line per ``train()`` result.

The rows hold exactly the scalars the TensorBoard callback writes (same tags, see
``rllib_empo.algorithm.callbacks``) plus ``step`` (learner updates, the TensorBoard x-axis), so a run
can be plotted without TensorBoard (``rllib_empo.analysis.plotting.plot_training_curves``).

``rllib-empo train`` writes ``<out>/progress.jsonl`` and ``<out>/run.json`` (the command line,
the world and the warm-up schedule's stage boundaries); the same works in a script::

    with ProgressWriter("runs/x/progress.jsonl") as progress:
        for _ in range(100):
            progress.write(algo.train())
    rows = read_progress("runs/x/progress.jsonl")
"""
from __future__ import annotations

import json
import math
import os
from typing import Iterable

from rllib_empo.algorithm.callbacks import IterationTimes, scalars_from_result, tensorboard_step

PROGRESS_FILE = "progress.jsonl"
RUN_FILE = "run.json"
#: The convergence residual shown by the progress bar and ranked by the Tune example when no
#: exact solution is configured: mean relative |prediction - target| of Q_r on held-out rows.
#: Results that lack it (runs before the residual metrics exist) show no residual.
CONVERGENCE_METRIC = "Residual/q_r"


def result_value(result: dict, tag: str):
    """The finite number under ``"Group/key"`` of a (nested) train() result, else None."""
    value = result
    for part in tag.split("/"):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def convergence_residual(result: dict):
    """The result's :data:`CONVERGENCE_METRIC`, or None when it does not log one."""
    return result_value(result, CONVERGENCE_METRIC)


def progress_row(result: dict, times: IterationTimes | None = None) -> dict:
    """The record of one result: ``step`` plus ``tag -> value`` for every scalar (and
    ``Time/*`` when ``times`` tracks the run's timers)."""
    row = {"step": tensorboard_step(result), **scalars_from_result(result)}
    if times is not None:
        row.update({f"Time/{k}": v for k, v in times(result).items()})
    return row


class ProgressWriter:
    """Appends one JSON line per result (flushed, so a crashed run keeps its record)."""

    def __init__(self, path: str | os.PathLike, append: bool = False):
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._file = open(self.path, "a" if append else "w", encoding="utf-8")
        self._times = IterationTimes()

    def write(self, result: dict) -> dict:
        row = progress_row(result, self._times)
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        return row

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> "ProgressWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_progress(path: str | os.PathLike) -> list[dict]:
    """Rows of a progress record (a ``progress.jsonl`` file or a run directory)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, PROGRESS_FILE)
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {n}: not a JSON object ({err.msg})") from None
    return rows


def column(rows: Iterable[dict], tag: str) -> tuple[list, list]:
    """(steps, values) of ``tag`` over the rows that have a finite value for it."""
    xs, ys = [], []
    for row in rows:
        v = row.get(tag)
        if isinstance(v, (int, float)) and math.isfinite(v):
            xs.append(row["step"])
            ys.append(v)
    return xs, ys


def write_run_info(out_dir: str | os.PathLike, config, **extra) -> str:
    """``run.json``: the warm-up schedule's boundaries and names (for the plots) plus
    ``extra`` (the command line, the world ...)."""
    schedule = config.schedule
    info = {
        "stage_ends": list(schedule.ends),
        "stage_transitions": [[t, text] for t, text in schedule.stage_transitions()],
        "clear_points": list(schedule.clear_points),
        "beta_r": config.beta_r,
        "value_loss": config.value_loss,
        "env": config.env if isinstance(config.env, str) else repr(config.env),
        **extra,
    }
    path = os.path.join(os.fspath(out_dir), RUN_FILE)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, default=repr)
    return path


def read_run_info(run_dir: str | os.PathLike) -> dict:
    path = os.path.join(os.fspath(run_dir), RUN_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)
