"""The EMPO config fields, declared once: name, default, allowed range, description.

``EmpoConfig.__init__`` (defaults), ``EmpoConfig.training()`` (signature and docstring),
``EmpoConfig.validate()`` (range checks) and :func:`config_fields_table` (the README table)
are all derived from :data:`FIELDS`, so they cannot drift apart.

Units: steps, intervals and durations count *learner updates* unless stated otherwise.
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import numpy as np

from rllib_empo.exact.statespace import DEFAULT_MAX_STATES
from rllib_empo.theory.params import PARAMS, Range
from rllib_empo.theory.schedule import NETWORKS

#: what a target copy takes (``target_copy``); the first is the default
TARGET_COPIES = ("interval_mean", "latest", "average")
DEFAULT_HIDDEN = (256, 256)
#: The default hidden sizes per network: q_r is twice as wide as the others. pi_r depends on
#: the differences of log(-Q_r) between actions to about 0.005 (beta_r = 10), a precision the
#: other networks do not need (docs/DESIGN.md, section 4).
DEFAULT_HIDDEN_SIZES = {n: ((512, 512) if n == "q_r" else DEFAULT_HIDDEN) for n in NETWORKS}


# ----------------------------------------------------------------------- range checks
# A "kind" is (predicate, text); the text completes "<field> must be ...".
Kind = Tuple[Callable[[Any], bool], str]


def _is_int(v) -> bool:
    # bool is an Integral in Python, but True as a step count is a bug, not a 1.
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)


def _int(lo: int) -> Kind:
    return (lambda v: _is_int(v) and v >= lo), f"an int >= {lo}"


def _float(lo: float, hi: Optional[float] = None, lo_open=False, hi_open=False) -> Kind:
    allowed = Range(lo, hi, lo_open, hi_open)
    return (lambda v: _is_real(v) and allowed.contains(v)), allowed.text


def _param(name: str) -> "FieldSpec":
    """The config field of theory parameter ``name`` (rllib_empo.theory.params.PARAMS)."""
    default, allowed, doc = PARAMS[name]
    return FieldSpec(name, default, (lambda v: _is_real(v) and allowed.contains(v), allowed.text), doc)


def _optional(kind: Kind, meaning: str) -> Kind:
    return (lambda v: v is None or kind[0](v)), f"None ({meaning}) or {kind[1]}"


def _choice(*options) -> Kind:
    return (lambda v: v in options), "one of " + ", ".join(map(repr, options))


def _is_epsilon(v) -> bool:
    if _is_real(v):
        return 0.0 <= v <= 1.0
    if not isinstance(v, (list, tuple)) or not v:
        return False
    try:
        steps, values = zip(*v)
    except (TypeError, ValueError):  # not a sequence of pairs
        return False
    return (all(_is_int(s) and s >= 0 for s in steps) and all(_is_real(x) and 0 <= x <= 1 for x in values)
            and all(a <= b for a, b in zip(steps, steps[1:])))


BOOL: Kind = (lambda v: isinstance(v, (bool, np.bool_)), "a bool")
EPSILON: Kind = (_is_epsilon, "a float in [0, 1] or a non-empty list of (step, value) pairs with "
                              "non-decreasing int steps >= 0 and values in [0, 1]")
def _is_sizes(v) -> bool:
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(_is_int(h) and h > 0 for h in v)


HIDDEN: Kind = (lambda v: _is_sizes(v) or (isinstance(v, dict) and len(v) > 0 and all(
                    k in NETWORKS and _is_sizes(s) for k, s in v.items())),
                "a non-empty sequence of positive ints, or a dict {network: such a sequence} "
                f"with networks among {', '.join(NETWORKS)} (the others get their default)")
PATH: Kind = (lambda v: v is None or (isinstance(v, (str, os.PathLike)) and os.fspath(v) != ""),
              "a non-empty str path or None")


@dataclass(frozen=True)
class FieldSpec:
    """One EMPO config field: its default, allowed range and one-line description."""

    name: str
    default: Any
    kind: Kind
    doc: str

    @property
    def allowed(self) -> str:
        return self.kind[1]

    def check(self, value) -> Optional[str]:
        """None if ``value`` is allowed, else the error message naming the field."""
        return None if self.kind[0](value) else f"{self.name} must be {self.allowed}, got {value!r}"


_F = FieldSpec
_STEPS, _POS = _int(0), _int(1)
_LR = _float(0.0, lo_open=True)
_GAMMA = _float(0.0, 1.0, lo_open=True)

FIELDS: Tuple[FieldSpec, ...] = (
    # Warm-up: stage durations (not cumulative), in learner updates.
    _F("warmup_v_h_e_steps", 1000, _STEPS, "Duration of stage 0 (V_h^e only)."),
    _F("warmup_x_h_steps", 1000, _STEPS, "Duration of stage 1 (+ X_h); counts as 0 if x_h_use_network=False."),
    _F("warmup_u_r_steps", 1000, _STEPS, "Duration of stage 2 (+ U_r); counts as 0 if u_r_use_network=False."),
    _F("warmup_q_r_steps", 1000, _STEPS, "Duration of stage 3 (+ Q_r)."),
    _F("warmup_v_r_steps", 1000, _STEPS, "Duration of stage 4 (+ V_r); counts as 0 if v_r_use_network=False."),
    _F("beta_r_rampup_steps", 2000, _STEPS, "Duration of stage 5, the sigmoidal beta_r ramp from 0 to beta_r."),
    _param("beta_r"),
    # Learning-rate schedule.
    _F("use_sqrt_lr_decay", True, BOOL, "Decay learning rates as 1/sqrt(t) after the constant phase."),
    _F("lr_constant_fraction", 0.0, _float(0.0, 1.0),
       "Keep learning rates constant until this fraction of num_training_steps (and at least until the ramp ends)."),
    _F("constant_lr_then_1_over_t", False, BOOL, "Decay as 1/t instead of 1/sqrt(t) (Robbins-Monro)."),
    _F("lr_q_r", 3e-3, _LR, "Base learning rate of Q_r."),
    _F("lr_v_h_e", 1e-3, _LR, "Base learning rate of V_h^e."),
    _F("lr_x_h", 1e-3, _LR, "Base learning rate of X_h (network mode)."),
    _F("lr_u_r", 1e-3, _LR, "Base learning rate of U_r (network mode)."),
    _F("lr_v_r", 1e-3, _LR, "Base learning rate of V_r (network mode)."),
    # Which quantities are networks (False: computed directly from the others).
    _F("x_h_use_network", True, BOOL, "Learn X_h with a network (False: Monte-Carlo over goals from V_h^e)."),
    _F("u_r_use_network", False, BOOL, "Learn U_r with a network (False: computed from X_h by eq. (8))."),
    _F("v_r_use_network", False, BOOL, "Learn V_r with a network (False: computed from U_r and Q_r by eq. (9))."),
    # Hard target-network copies, every N learner updates.
    _F("q_r_target_update_interval", 100, _POS, "Learner updates between hard copies of Q_r into its target."),
    _F("v_r_target_update_interval", 100, _POS, "Learner updates between hard copies of V_r into its target."),
    _F("v_h_e_target_update_interval", 100, _POS, "Learner updates between hard copies of V_h^e into its target."),
    _F("x_h_target_update_interval", 100, _POS, "Learner updates between hard copies of X_h into its target."),
    _F("u_r_target_update_interval", 100, _POS, "Learner updates between hard copies of U_r into its target."),
    _F("use_model_based_targets", True, BOOL,
       "Targets sum over all successors with the world's probabilities (False: sampled successor)."),
    _F("num_training_steps", 100_000, _POS, "Planned total learner updates (what lr_constant_fraction refers to)."),
    # The equations (rllib_empo.theory.params).
    _param("gamma_h"), _param("gamma_r"), _param("zeta"), _param("xi"), _param("eta"),
    _param("x_h_floor"), _param("neg_q_r_floor"),
    _F("q_r_advantage_weight", 30.0, _float(0.0),
       "With value_loss='log': weight of an extra MSE of Q_r's advantages (log max(-Q_r, "
       "neg_q_r_floor) minus its mean over actions), the part pi_r depends on (0 = off)."),
    _F("value_loss", "log", _choice("log", "mse"),
       "'log': MSE of log|value| for q_r, u_r, v_r, x_h (relative errors) and cross-entropy for v_h_e; 'mse': plain MSE everywhere."),
    # Replay and updates.
    _F("replay_capacity", 100_000, _POS, "Transitions the replay buffer holds (>= the total train batch size)."),
    _F("updates_per_iteration", 32, _POS, "Learner updates per training_step()."),
    _F("ema_decay", 0.999, _float(0.0, 1.0, hi_open=True),
       "Per-update decay of a running average of every network's weights; evaluation, the "
       "learned values and the EnvRunners' q_r use the averages (0 = the latest weights). "
       "Averaging removes the optimizer's jitter, which beta_r = 10 amplifies in pi_r."),
    _F("target_copy", TARGET_COPIES[0], _choice(*TARGET_COPIES),
       "What a network's hard target copy takes: 'interval_mean' the mean of its weights over "
       "the updates since its last copy (the optimizer's jitter averaged out, about half an "
       "interval of lag), 'latest' its current weights, 'average' its running average "
       "(needs ema_decay > 0; lags about 1 / (1 - ema_decay) updates)."),
    _F("replay_sampling", "mixed", _choice("transitions", "states", "mixed"),
       "How minibatches draw replay rows: 'transitions' uniformly (states as often as visited); "
       "'states' every stored state equally often (the targets are exact expectations, so "
       "visitation need not weight the fit); 'mixed' half of every minibatch each way."),
    _F("learning_starts", None, _optional(_POS, "= train_batch_size_per_learner"),
       "Buffer size before learning starts or resumes after a clear (<= replay_capacity)."),
    _F("max_goals_per_human", 16, _POS, "Goals per human stored per transition for X_h targets (more are sampled)."),
    _F("sum_human_actions", True, BOOL,
       "Sum human actions out under the prior (False: use the sampled human action)."),
    _F("exploring_starts", 0.9, _float(0.0, 1.0),
       "Share of episodes that start from a random state seen earlier as a successor (coverage of rarely reached states)."),
    _F("exploring_starts_frontier", False, BOOL,
       "Exploring starts draw from the frontier first: states met as successors but never stepped from (False: any state met)."),
    _F("epsilon", 0.05, EPSILON,
       "Robot epsilon-exploration; a schedule is piecewise-linear in learner updates."),
    # Output and robustness.
    _F("verbose", False, BOOL, "Print stage transitions and buffer clears to the console."),
    _F("tensorboard_dir", None, PATH, "Directory for TensorBoard scalars (None: no TensorBoard writer)."),
    _F("checkpoint_replay_buffer", False, BOOL, "Include the replay buffer in checkpoints."),
    _F("residual_rows", 256, _STEPS,
       "Replay rows kept as a fixed set on which every iteration logs Residual/* (each "
       "network's distance from its fixed point); redrawn when its rows leave. 0 = off."),
    _F("exact_eval_interval", 0, _STEPS,
       "Every N training iterations compare with the exact solution on small worlds (0 = off)."),
    _F("exact_max_states", DEFAULT_MAX_STATES, _POS,
       "Largest world (reachable states) the exact solver enumerates, for exact_eval_interval, "
       "evaluation and the command line."),
    _F("on_nonfinite", "raise", _choice("raise", "skip"),
       "What to do on a non-finite loss or gradient: raise, or skip that network's update "
       "(weights that become non-finite are restored from their target copy either way)."),
    _F("max_nonfinite_skips", 100, _POS,
       "Learner updates in a row with a skipped network or a restored one (on_nonfinite='skip') "
       "after which training stops with FloatingPointError."),
    _F("max_env_runner_failures", 3, _POS,
       "Failures in a row of one EnvRunner (its process died; with restart_failed_env_runners "
       "it is restarted in between) after which training stops with an error naming it."),
    _F("torch_num_threads", None, _optional(_POS, "each process's CPU allotment"),
       "Torch threads per process: None sizes the driver (and a local Learner and EnvRunner) to "
       "num_cpus_for_main_process, remote EnvRunners to num_cpus_per_env_runner, remote "
       "Learners to num_cpus_per_learner (at least 1 each)."),
    _F("hidden_sizes", DEFAULT_HIDDEN_SIZES, HIDDEN,
       "Hidden layer sizes of every network, or per network as {name: sizes} (a network not "
       "named keeps its default)."),
)
FIELD_NAMES = tuple(f.name for f in FIELDS)
_BY_NAME = {f.name: f for f in FIELDS}


def config_fields_table() -> str:
    """Markdown table of every EMPO field: name, default, allowed range, description."""
    lines = ["| Field | Default | Allowed | Description |", "|---|---|---|---|"]
    for f in FIELDS:
        lines.append(f"| `{f.name}` | `{f.default!r}` | {f.allowed} | {f.doc} |")
    return "\n".join(lines)
