"""EmpoCallbacks: TensorBoard scalars with exact tags, with and without Ray Tune.

``EmpoConfig`` uses :class:`EmpoCallbacks` as its default ``callbacks_class``. After every
``train()`` it writes the scalars the algorithm logged into the result (see
``Empo._log_metrics``) with a ``torch.utils.tensorboard.SummaryWriter``:

- ``Warmup/stage`` (stage id 0..6 at the end of the iteration), ``Warmup/stage_transition``
  (1 if the stage changed during the iteration, else 0), ``Warmup/effective_beta_r``,
  ``Warmup/is_warmup``, ``Warmup/is_rampup``, ``Warmup/active_networks_mask`` (bit i set
  when ``NETWORKS[i]`` is trained), ``Warmup/num_updates``, ``Warmup/num_buffer_clears``,
  ``Warmup/epsilon``;
- ``LearningRate/<net>`` for every existing network;
- ``Loss/<net>``, ``Prediction/<net>``, ``Target/<net>`` for the active networks
  (iterations with a learner update);
- ``Buffer/size``, ``Buffer/num_added``, ``Buffer/states``, ``Buffer/tables``,
  ``Buffer/bytes``, ``Buffer/bytes_per_transition`` (the replay memory, ``store``);
- ``Residual/<net>``, ``Residual/<net>_max``, ``Residual/policy_change`` (``residual_rows``);
- ``Runners/num_healthy``, ``Runners/num_lost``, ``Runners/num_restarts``,
  ``Runners/num_failures`` (``rllib_empo.algorithm.faults``);
- ``Exact/<figure>``: ``compare_to_exact`` figures (``exact_eval_interval`` > 0), written
  in the iterations that computed them (results repeat the latest, for Tune);
- ``Progress/num_env_steps``, ``Progress/num_episodes``, ``Progress/training_iteration``;
- ``Time/sampling_s``, ``Time/learning_s``, ``Time/training_step_s``: this iteration's
  seconds (:class:`IterationTimes`; RLlib's own ``result["timers"]`` are smoothed).

The x-axis (``global_step``) is the number of learner updates,
``result["Warmup"]["num_updates"]`` (docs/DESIGN.md: a warm-up step is a learner update).
Several iterations share a step while learning pauses after a buffer clear, and TensorBoard
keeps one point per step and tag (the last written), so the two event tags are written at the
learner update where the event happened instead of at the iteration's end:

- ``Warmup/stage_transition``: 1.0 at the update of every stage transition the iteration
  crossed (the schedule's boundary, even when several fall into one iteration), 0.0 at the
  iteration's step otherwise (never over a 1.0 at the same step);
- ``Warmup/buffer_clear``: the same for the replay-buffer clears (TensorBoard only; results
  count them in ``Warmup/num_buffer_clears``).

With ``exact_eval_interval`` > 0 every result carries ``Exact/*`` (a Tune metric must be in
every result): before the first evaluation the figures are NaN and
``Exact/training_iteration`` is 0 (not written to TensorBoard).

Where the events go:

- ``config.tensorboard_dir`` set, standalone: into that directory.
- ``config.tensorboard_dir`` set, under Tune: into ``<tensorboard_dir>/<trial dir name>``,
  so that the trials of a sweep are separate TensorBoard runs (a relative path is taken
  relative to the directory the Tune driver ran in, not the trial's working directory).
- ``None`` under Tune: into ``<trial dir>/tensorboard``, so
  ``tensorboard --logdir <storage_path>/<experiment>`` shows, per trial, Tune's own run
  (``ray/tune/...`` tags over iterations or env steps) and ``<trial>/tensorboard`` with
  these tags. (A separate directory, because TensorBoard purges steps per run and the two
  writers count steps differently.) With a non-local ``storage_path`` (S3, GCS, ...) the
  events go to ``tensorboard/`` in the trial's working directory and reach the storage only
  with ``tune.SyncConfig(sync_artifacts=True)``.
- ``None`` standalone: nothing is written.

After a restore (``restore_from_path``, ``from_checkpoint`` or a Tune trial restore;
``Empo.set_state`` calls :meth:`EmpoCallbacks.on_empo_state_restored`) the writer reopens
with ``purge_step`` just after the restored update count, so TensorBoard drops the events
the original run wrote after the checkpoint instead of showing two curves.

To add callbacks of your own keep these: ``config.callbacks([EmpoCallbacks, MyCallbacks])``
or subclass ``EmpoCallbacks`` (and call ``super().on_train_result(...)``).
"""
from __future__ import annotations

import math
import numbers
import os
from typing import Optional

from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.utils.annotations import override

#: Result groups written as ``<group>/<key>`` (only numeric, finite values).
TB_GROUPS = ("Warmup", "LearningRate", "Loss", "Prediction", "Target", "Buffer", "Runners",
             "Exact")
#: Event tags written at the learner update of each event (module docstring).
EVENT_TAGS = ("Warmup/stage_transition", "Warmup/buffer_clear")
#: Suffix of the events files EmpoCallbacks writes.
EVENTS_SUFFIX = ".empo"
#: Under Tune (tensorboard_dir None): the subdirectory of the trial directory written to.
TUNE_SUBDIR = "tensorboard"


def _number(v) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, numbers.Number):
        try:                        # numpy scalars / 0-d arrays / torch scalars
            v = float(v)
        except (TypeError, ValueError):
            return None
    v = float(v)
    return v if math.isfinite(v) else None


def scalars_from_result(result: dict) -> dict:
    """The ``tag -> value`` pairs EmpoCallbacks writes for one train() result."""
    out = {}
    for group in TB_GROUPS:
        values = result.get(group)
        if not isinstance(values, dict):
            continue
        if group == "Exact" and values.get("training_iteration") != result.get("training_iteration"):
            continue        # results repeat the latest evaluation; write it once, when it is new
        for key, value in values.items():
            v = _number(value)
            if v is not None:
                out[f"{group}/{key}"] = v
    runners = result.get("env_runners") or {}
    progress = {
        "num_env_steps": result.get("num_env_steps_sampled_lifetime",
                                    runners.get("num_env_steps_sampled_lifetime")),
        "num_episodes": runners.get("num_episodes_lifetime"),
        "training_iteration": result.get("training_iteration"),
    }
    for key, value in progress.items():
        v = _number(value)
        if v is not None:
            out[f"Progress/{key}"] = v
    return out


#: RLlib's timers in ``result["timers"]`` are exponential moving averages with this
#: coefficient (``MetricsLogger.log_time``'s default reduce "ema", ema_coeff 0.01).
TIMER_EMA_COEFF = 0.01
TIMER_KEYS = {"sampling_s": "env_runner_sampling_timer", "learning_s": "learner_update_timer",
              "training_step_s": "training_step"}


class IterationTimes:
    """This iteration's own sampling / learning / training_step seconds, recovered from
    RLlib's smoothed ``result["timers"]`` (x_t = (ema_t - (1 - c) ema_{t-1}) / c).

    The first result after construction (or after a restore) gives the smoothed values
    themselves; results of iterations with several ``training_step`` calls too."""

    def __init__(self):
        self._prev: Optional[dict] = None

    def reset(self) -> None:
        self._prev = None

    def __call__(self, result: dict) -> dict:
        timers = result.get("timers") or {}
        ema = {tag: _number(timers.get(key)) for tag, key in TIMER_KEYS.items()}
        ema = {k: v for k, v in ema.items() if v is not None}
        calls = result.get("num_training_step_calls_per_iteration", 1)
        prev, self._prev = self._prev, ema
        if prev is None or calls != 1:
            return dict(ema)
        c = TIMER_EMA_COEFF
        return {k: max(0.0, (v - (1 - c) * prev[k]) / c) if k in prev else v
                for k, v in ema.items()}


def event_steps(schedule, prev: int, step: int) -> dict:
    """``{event tag: [learner updates]}`` of the stage transitions and buffer clears of the
    schedule in ``(prev, step]``: those of an iteration that went from ``prev`` to ``step``."""
    return {"Warmup/stage_transition": sorted({t for t, _ in schedule.stage_transitions()
                                               if prev < t <= step}),
            "Warmup/buffer_clear": [t for t in schedule.clear_points if prev < t <= step]}


def fill_exact_placeholders(result: dict, config) -> None:
    """NaN ``Exact/*`` figures (``Exact/training_iteration`` 0) in a result of a run that
    evaluates (``exact_eval_interval`` > 0) but has not yet: a Tune metric must be in every
    result, and NaN says "not known yet" (Tune ranks by the last result, which has one)."""
    if not getattr(config, "exact_eval_interval", 0) or result.get("Exact"):
        return
    from rllib_empo.exact.compare import FIGURES
    result["Exact"] = {**{k: math.nan for k in FIGURES}, "training_iteration": 0}


def tensorboard_step(result: dict) -> int:
    """The x-axis value of a result: learner updates so far."""
    warmup = result.get("Warmup") or {}
    step = _number(warmup.get("num_updates"))
    if step is None:                 # not an EMPO result: fall back to iterations
        step = _number(result.get("training_iteration")) or 0
    return int(step)


def _tune_storage(algorithm):
    """Tune's StorageContext of the trial, or None when the algorithm runs standalone."""
    storage = getattr(algorithm, "_storage", None)
    return storage if storage is not None and getattr(storage, "trial_dir_name", None) else None


def resolve_tensorboard_dir(algorithm) -> Optional[str]:
    """Where EmpoCallbacks writes for ``algorithm`` (module docstring), or None."""
    configured = getattr(algorithm.config, "tensorboard_dir", None)
    storage = _tune_storage(algorithm)
    if storage is None:
        return os.path.abspath(os.fspath(configured)) if configured else None
    if configured:
        base = os.fspath(configured)
        if not os.path.isabs(base):
            base = os.path.join(os.environ.get("TUNE_ORIG_WORKING_DIR", os.getcwd()), base)
        return os.path.join(base, storage.trial_dir_name)
    import pyarrow.fs
    if isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
        return os.path.join(storage.trial_fs_path, TUNE_SUBDIR)
    return os.path.join(storage.trial_working_directory, TUNE_SUBDIR)


class EmpoCallbacks(RLlibCallback):
    """Writes the EMPO scalars of every result to TensorBoard (module docstring)."""

    def __init__(self):
        super().__init__()
        self._writer = None
        self._logdir: Optional[str] = None
        self._purge_step: Optional[int] = None
        self._times = IterationTimes()
        self._prev_step = 0                  # learner updates at the end of the last result
        self._last_event: dict = {}          # event tag -> last step written as 1.0

    @property
    def logdir(self) -> Optional[str]:
        """The directory written to (None before the first result or when disabled)."""
        return self._logdir

    def _get_writer(self, algorithm):
        if self._writer is None:
            logdir = resolve_tensorboard_dir(algorithm)
            if logdir is None:
                return None
            # torch's writer (the tensorboard package underneath): its flush() blocks until
            # the events are on disk; tensorboardX's returns with events still queued.
            from torch.utils.tensorboard import SummaryWriter
            os.makedirs(logdir, exist_ok=True)
            # The suffix tells these files apart from Tune's (events.out.tfevents.<s>.<host>).
            self._writer = SummaryWriter(logdir, purge_step=self._purge_step, flush_secs=30,
                                         filename_suffix=EVENTS_SUFFIX)
            self._logdir = logdir
            self._purge_step = None
        return self._writer

    @override(RLlibCallback)
    def on_train_result(self, *, algorithm, metrics_logger=None, result, **kwargs) -> None:
        fill_exact_placeholders(result, algorithm.config)
        step = tensorboard_step(result)
        prev, self._prev_step = self._prev_step, step
        writer = self._get_writer(algorithm)
        if writer is None:
            return
        for tag, value in scalars_from_result(result).items():
            if tag not in EVENT_TAGS:
                writer.add_scalar(tag, value, global_step=step)
        for tag, value in self._times(result).items():
            writer.add_scalar(f"Time/{tag}", value, global_step=step)
        schedule = getattr(algorithm, "schedule", None)
        if schedule is not None:
            for tag, steps in event_steps(schedule, prev, step).items():
                for t in steps:
                    writer.add_scalar(tag, 1.0, global_step=t)
                    self._last_event[tag] = t
                if self._last_event.get(tag) != step:
                    writer.add_scalar(tag, 0.0, global_step=step)
        writer.flush()

    def on_empo_state_restored(self, *, algorithm, **kwargs) -> None:
        """Called by ``Empo.set_state`` (every restore path: restore_from_path,
        from_checkpoint, Tune's trial restore). Reopens the writer so that events the
        original run wrote after the checkpoint are purged."""
        self.close()
        self._times.reset()
        self._purge_step = int(algorithm.num_updates) + 1
        self._prev_step = int(algorithm.num_updates)
        self._last_event = {}

    def close(self) -> None:
        """Flush and close the writer (a later result reopens it)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def as_tensorboard_shows(points) -> list:
    """The (step, value) points of one tag that TensorBoard's UI plots: a point written at a
    step not after the previous one replaces every point from that step on (its data server
    keeps one point per step, the last)."""
    shown: list = []
    for step, value in points:
        while shown and shown[-1][0] >= step:
            shown.pop()
        shown.append((step, value))
    return shown


def read_scalars(logdir: str) -> dict:
    """``{tag: [(step, value), ...]}`` of every events file in ``logdir``, read with
    TensorBoard's own reader (so the steps a restore purged are dropped, as TensorBoard
    shows them)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(os.fspath(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


__all__ = ["EmpoCallbacks", "IterationTimes", "read_scalars", "resolve_tensorboard_dir",
           "scalars_from_result", "tensorboard_step", "event_steps", "fill_exact_placeholders",
           "as_tensorboard_shows", "TB_GROUPS", "EVENT_TAGS", "EVENTS_SUFFIX", "TUNE_SUBDIR"]
