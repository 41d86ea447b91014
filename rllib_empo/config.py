"""`EmpoConfig`: the RLlib AlgorithmConfig of the EMPO phase-2 algorithm.

Every EMPO field is declared once, in :data:`FIELDS` (name, default, allowed range,
description). ``__init__`` (defaults), ``training()`` (signature and docstring),
``validate()`` (range checks) and :func:`config_fields_table` (the README table) are all
derived from that tuple, so they cannot drift apart.

Units: steps, intervals and durations count *learner updates* unless stated otherwise.
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

import numpy as np
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided

from rllib_empo.equations import DEFAULT_NEG_Q_R_FLOOR, DEFAULT_X_H_FLOOR
from rllib_empo.schedule import NETWORKS, WarmupSchedule

DEFAULT_HIDDEN = (64, 64)


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
    def check(v):
        return (_is_real(v) and (v > lo if lo_open else v >= lo)
                and (hi is None or (v < hi if hi_open else v <= hi)))

    if hi is None:
        return check, f"a finite float {'>' if lo_open else '>='} {lo:g}"
    return check, f"a finite float in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


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
                f"with networks among {', '.join(NETWORKS)} (the others get {DEFAULT_HIDDEN})")
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
_GE1 = _float(1.0)

FIELDS: Tuple[FieldSpec, ...] = (
    # Warm-up: stage durations (not cumulative), in learner updates.
    _F("warmup_v_h_e_steps", 1000, _STEPS, "Duration of stage 0 (V_h^e only)."),
    _F("warmup_x_h_steps", 1000, _STEPS, "Duration of stage 1 (+ X_h); counts as 0 if x_h_use_network=False."),
    _F("warmup_u_r_steps", 1000, _STEPS, "Duration of stage 2 (+ U_r); counts as 0 if u_r_use_network=False."),
    _F("warmup_q_r_steps", 1000, _STEPS, "Duration of stage 3 (+ Q_r)."),
    _F("warmup_v_r_steps", 1000, _STEPS, "Duration of stage 4 (+ V_r); counts as 0 if v_r_use_network=False."),
    _F("beta_r_rampup_steps", 2000, _STEPS, "Duration of stage 5, the sigmoidal beta_r ramp from 0 to beta_r."),
    _F("beta_r", 10.0, _float(0.0), "Nominal robot policy concentration beta_r of eq. (5) (0 = uniform)."),
    # Learning-rate schedule.
    _F("use_sqrt_lr_decay", True, BOOL, "Decay learning rates as 1/sqrt(t) after the constant phase."),
    _F("lr_constant_fraction", 0.0, _float(0.0, 1.0),
       "Keep learning rates constant until this fraction of num_training_steps (and at least until the ramp ends)."),
    _F("constant_lr_then_1_over_t", False, BOOL, "Decay as 1/t instead of 1/sqrt(t) (Robbins-Monro)."),
    _F("lr_q_r", 1e-3, _LR, "Base learning rate of Q_r."),
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
    # The equations.
    _F("gamma_h", 0.99, _GAMMA, "Human discount factor gamma_h of eq. (6)."),
    _F("gamma_r", 0.99, _GAMMA, "Robot discount factor gamma_r of eq. (4)."),
    _F("zeta", 2.0, _GE1, "Risk aversion exponent zeta of eq. (7)."),
    _F("xi", 1.0, _GE1, "Inequality aversion exponent xi of eq. (8)."),
    _F("eta", 1.1, _GE1, "Intertemporal exponent eta of eq. (8)."),
    _F("x_h_floor", DEFAULT_X_H_FLOOR, _float(0.0, 1.0, lo_open=True, hi_open=True),
       "Lower bound of X_h (keeps U_r finite); shared with the exact solver."),
    _F("neg_q_r_floor", DEFAULT_NEG_Q_R_FLOOR, _float(0.0, 1.0, lo_open=True, hi_open=True),
       "Lower bound of -Q_r in the power law (5) (Q_r = 0 where every successor is terminal); shared with the exact solver."),
    _F("value_loss", "log", _choice("log", "mse"),
       "'log': MSE of log|value| for q_r, u_r, v_r, x_h (relative errors) and cross-entropy for v_h_e; 'mse': plain MSE everywhere."),
    # Replay and updates.
    _F("replay_capacity", 100_000, _POS, "Transitions the replay buffer holds (>= the total train batch size)."),
    _F("updates_per_iteration", 8, _POS, "Learner updates per training_step()."),
    _F("learning_starts", None, _optional(_POS, "= train_batch_size_per_learner"),
       "Buffer size before learning starts or resumes after a clear (<= replay_capacity)."),
    _F("max_successors", None, _optional(_POS, "the world's hint"), "Pad width K of the successor tables."),
    _F("max_goals_per_human", 16, _POS, "Goals per human stored per transition for X_h targets (more are sampled)."),
    _F("sum_human_actions", True, BOOL,
       "Sum human actions out under the prior (False: use the sampled human action)."),
    _F("exploring_starts", 0.0, _float(0.0, 1.0),
       "Share of episodes that start from a random state seen earlier as a successor (coverage of rarely reached states)."),
    _F("epsilon", 0.05, EPSILON,
       "Robot epsilon-exploration; a schedule is piecewise-linear in learner updates."),
    # Output and robustness.
    _F("verbose", False, BOOL, "Print stage transitions and buffer clears to the console."),
    _F("tensorboard_dir", None, PATH, "Directory for TensorBoard scalars (None: no TensorBoard writer)."),
    _F("checkpoint_replay_buffer", False, BOOL, "Include the replay buffer in checkpoints."),
    _F("exact_eval_interval", 0, _STEPS,
       "Every N training iterations compare with the exact solution on small worlds (0 = off)."),
    _F("on_nonfinite", "raise", _choice("raise", "skip"), "What to do on a non-finite loss: raise, or skip the update."),
    _F("hidden_sizes", DEFAULT_HIDDEN, HIDDEN,
       "Hidden layer sizes of every network, or per network as {name: sizes}."),
)
FIELD_NAMES = tuple(f.name for f in FIELDS)
_BY_NAME = {f.name: f for f in FIELDS}


def config_fields_table() -> str:
    """Markdown table of every EMPO field: name, default, allowed range, description."""
    lines = ["| Field | Default | Allowed | Description |", "|---|---|---|---|"]
    for f in FIELDS:
        lines.append(f"| `{f.name}` | `{f.default!r}` | {f.allowed} | {f.doc} |")
    return "\n".join(lines)


# ------------------------------------------------------------ cross-field checks
# |U_r| <= x_h_floor ** -(xi * eta) (eq. 8 where X_h sits at its floor). The learner computes in
# float32 (max ~3.4e38); V_r and Q_r add up a horizon of such values, and 'mse' squares them.
MAX_LOG10_U_R = {"log": 30.0, "mse": 15.0}


# beta_r * log(-Q_r) must stay finite in float32 (|log(-Q_r)| < 89 for any float32 Q_r); the
# power law is already an argmax far below this bound.
MAX_BETA_R = 1e30


def _check_beta_r_range(cfg) -> None:
    if cfg.beta_r > MAX_BETA_R:
        raise ValueError(f"beta_r must be <= {MAX_BETA_R:g} (beta_r * log(-Q_r) must stay finite "
                         f"in float32; the policy is an argmax long before), got {cfg.beta_r!r}")


def _check_u_r_range(cfg) -> None:
    decades = cfg.xi * cfg.eta * math.log10(1.0 / cfg.x_h_floor)
    limit = MAX_LOG10_U_R.get(cfg.value_loss, min(MAX_LOG10_U_R.values()))
    if decades > limit:
        raise ValueError(
            f"xi * eta * log10(1 / x_h_floor) must be <= {limit:g} with value_loss="
            f"{cfg.value_loss!r}, got xi={cfg.xi!r}, eta={cfg.eta!r}, x_h_floor={cfg.x_h_floor!r} "
            f"({decades:.3g}): U_r = -(mean_h X_h^-xi)^eta reaches -1e{decades:.0f} where X_h is "
            "at its floor, beyond what the float32 learner represents; lower xi or eta, or "
            "raise x_h_floor")


def _check_fault_tolerance(cfg) -> None:
    if getattr(cfg, "restart_failed_sub_environments", False):
        raise ValueError(
            "restart_failed_sub_environments must be False for EMPO, got True: an error in an "
            "EmpoEnv is a world that breaks its protocol (rllib_empo.world), which happens again "
            "on every retry, so RLlib's recreate-and-retry would loop inside sample() forever. "
            "restart_failed_env_runners=True (lost EnvRunner processes) is supported.")


def _check_tensorboard_dir(cfg) -> None:
    d = cfg.tensorboard_dir
    if d is not None and os.path.exists(d) and not os.path.isdir(d):
        raise ValueError(f"tensorboard_dir must be a directory path or None, got {d!r}, "
                         "which is an existing file")


def _hint(value, options) -> str:
    close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _reraise(err: Exception, prefix: str):
    """Raise ``err`` again, as the same ValueError/TypeError class, with ``prefix`` (the config
    field) in front of its message; the original stays attached as the cause."""
    try:
        new = type(err)(f"{prefix}: {err}")
    except Exception:  # an exception class with an unusual constructor
        new = None
    if not isinstance(new, (ValueError, TypeError)):
        new = ValueError(f"{prefix}: {err}")
    raise new from err


def _check_env_class(env, empo_env_cls, ids) -> None:
    """Reject, without building it, an env that is a gym.Env class (or a gymnasium id of one)
    but not an EmpoEnv. Env creators registered with Ray Tune and other callables cannot be
    told apart without calling them; ``table_spec`` checks them at build time."""
    import gymnasium as gym
    cls = env
    if isinstance(env, str):
        from ray.tune.registry import ENV_CREATOR, _global_registry
        if _global_registry.contains(ENV_CREATOR, env) or env not in gym.registry:
            return
        entry = gym.registry[env].entry_point
        try:
            from gymnasium.envs.registration import load_env_creator
            cls = load_env_creator(entry) if isinstance(entry, str) else entry
        except Exception:       # not importable here: RLlib reports that when it builds
            return
    if isinstance(cls, type) and issubclass(cls, gym.Env) and not issubclass(cls, empo_env_cls):
        raise ValueError(f"env must be an EmpoEnv id or class, got {env!r} ({cls.__name__}); EMPO "
                         f"trains on a World: use one of {', '.join(ids)} (env_config="
                         "{'world': ...} for the last), or register an EmpoEnv subclass")


def _check_environment(cfg) -> None:
    """The world behind ``config.env``/``env_config``: built (cheap; never the human prior),
    checked against the World protocol, its initial state's tables checked against the
    config. Only for the package's own env ids: a user's own env id may be expensive to
    build, so it is checked when the algorithm is built (``table_spec``)."""
    env = cfg.env
    if env is None:
        return                          # build_algo() says that an environment is needed
    from rllib_empo import env as env_mod
    from rllib_empo.tables import TableBuilder
    from rllib_empo.world import WorldProtocolError, checked_transitions, num_agents, world_name
    from rllib_empo.worlds import WORLDS, UnknownWorldArgument, world_kwargs

    named = {env_mod.ENV_IDS.get(n, f"rllib_empo/{n}-v0"): n for n in WORLDS}
    generic = env_mod.GENERIC_ENV_ID
    if not isinstance(env, str) or (env not in named and env != generic):
        _check_env_class(env, env_mod.EmpoEnv, sorted(named) + [generic])
        return
    ec = dict(cfg.env_config or {})
    settings_keys = [k for k in env_mod.ENV_KEYS if k != "empo"]
    if "empo" in ec:
        raise ValueError("env_config['empo'] is reserved for the settings EmpoConfig passes to "
                         "its envs; set them with .training(...) instead. Allowed env_config "
                         f"keys: {', '.join(settings_keys)} and the world's arguments")
    if env in named:
        given = ec.get("world", named[env])
        if not (isinstance(given, str) and given == named[env]):
            raise ValueError(f"env_config['world'] must be {named[env]!r} or absent with env "
                             f"{env!r}, got {given!r}; use env {generic!r} to choose the world "
                             "in env_config")
        ec["world"] = named[env]
    world = ec.get("world")
    if world is None:
        raise ValueError(f"env_config['world'] is required with env {generic!r}: one of "
                         f"{', '.join(sorted(WORLDS))}, or a World instance")
    extra = [k for k in ec if k not in env_mod.ENV_KEYS]
    if isinstance(world, type):
        raise ValueError(f"env_config['world'] must be a registered world name or a World "
                         f"instance, got the class {world.__name__}; pass {world.__name__}(...) "
                         "or register it with rllib_empo.worlds.register_world(name, cls)")
    if isinstance(world, str):
        if world not in WORLDS:
            raise ValueError(f"env_config['world'] must be one of {', '.join(sorted(WORLDS))} "
                             f"or a World instance, got {world!r}{_hint(world, WORLDS)}")
        accepted = list(world_kwargs(world))
        takes_any = any(p.kind == p.VAR_KEYWORD
                        for p in inspect.signature(WORLDS[world]).parameters.values())
        for key in extra:
            if key not in accepted and not takes_any:
                raise UnknownWorldArgument(
                    f"env_config[{key!r}] is not accepted by world {world!r}"
                    f"{_hint(key, accepted + settings_keys)}; allowed keys: "
                    f"{', '.join(accepted) or 'none'} (arguments of {world!r}) and "
                    f"{', '.join(settings_keys)} (env settings)")
    elif extra:
        raise ValueError(f"env_config[{extra[0]!r}] is not allowed when env_config['world'] is a "
                         f"World instance (there is no constructor to pass it to); allowed keys: "
                         f"{', '.join(settings_keys)}")
    if "prior" in ec and not callable(ec["prior"]) and ec["prior"] not in env_mod.PRIORS:
        raise ValueError(f"env_config['prior'] must be one of {', '.join(map(repr, env_mod.PRIORS))} "
                         f"or a callable factory(world) -> prior, got {ec['prior']!r}"
                         f"{_hint(ec['prior'], env_mod.PRIORS)}")
    for key, kind in (("beta_h", _float(0.0)), ("gamma_h", _GAMMA)):
        if key in ec and not kind[0](ec[key]):
            raise ValueError(f"env_config[{key!r}] must be {kind[1]}, got {ec[key]!r}")

    try:
        w = env_mod.world_from_env_config(ec)
    except WorldProtocolError as err:
        _reraise(err, "env_config['world']")
    except (TypeError, ValueError) as err:    # the world's constructor rejected an argument
        args = ", ".join(f"{k}={ec[k]!r}" for k in extra)
        _reraise(err, f"env_config: world {world!r} rejected its arguments ({args or 'none'})")
    name = world_name(w)
    kind = ec.get("prior", getattr(w, "default_prior", "boltzmann"))
    if kind == "heuristic" and not callable(getattr(w, "goal_distance_after", None)):
        raise ValueError(f"env_config['prior'] is 'heuristic', which needs world {name!r} to have "
                         "a method goal_distance_after(state, h, goal); allowed for this world: "
                         "'boltzmann', 'uniform' or a callable factory(world) -> prior")
    try:
        spec = env_mod.table_spec(w, env_mod.EnvSettings(**cfg.empo_env_settings()))
        s0 = w.initial_state()
        # all joint actions of s0 when there are few (a user's world may be slow to step)
        if spec.mode == "sum" and spec.num_robot_actions * spec.num_actions ** spec.num_humans <= 1_000:
            TableBuilder(w, None, spec, np.random.default_rng(0)).successors(s0)
        else:                             # one joint action is enough to catch the common slips
            checked_transitions(w, s0, [0] * num_agents(w))
    except WorldProtocolError as err:
        field = ("max_successors" if cfg.max_successors is not None and "max_successors" in str(err)
                 else "env_config['world']")
        _reraise(err, field)
    if not isinstance(world, str) and (cfg.num_env_runners or 0) > 0:
        from ray import cloudpickle
        try:
            cloudpickle.dumps(world)
        except Exception as err:
            raise ValueError(
                f"env_config['world'] must be picklable to reach the remote EnvRunners "
                f"(num_env_runners={cfg.num_env_runners}), but pickling world {name!r} failed: "
                f"{err}; register it by name (rllib_empo.worlds.register_world) or use "
                "num_env_runners=0") from err


# ----------------------------------------------------------------- algorithm class
class _MissingEmpo:
    """Stands in for `Empo` while `rllib_empo.algorithm` cannot be imported, so that a
    config can still be built and validated; building the algorithm raises."""

    import_error: Optional[str] = None

    def __init__(self, *args, **kwargs):
        raise ImportError(f"rllib_empo.algorithm could not be imported: {self.import_error}")


def _lazy_empo():
    """The `Empo` algorithm class, imported late because `rllib_empo.algorithm` imports
    this module. Falls back to `_MissingEmpo` only if a module of this package is
    missing (other import errors propagate)."""
    try:
        from rllib_empo.algorithm import Empo
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("rllib_empo"):
            raise
        _MissingEmpo.import_error = str(err)
        return _MissingEmpo
    return Empo


# -------------------------------------------------------------------------- config
class EmpoConfig(AlgorithmConfig):
    """Configuration of the EMPO phase-2 algorithm (robot softly maximising human power).

    .. code-block:: python

        config = (EmpoConfig()
                  .environment("rllib_empo/RockGate-v0")
                  .training(beta_r=10.0, gamma_r=0.99, warmup_v_h_e_steps=1000))
        algo = config.build_algo()

    EMPO fields are listed in :data:`FIELDS` and :func:`config_fields_table`; RLlib's own
    ``gamma``, ``lr``, ``grad_clip``, ``train_batch_size_per_learner`` ... still work.
    The warm-up queries (``is_in_warmup``, ``get_learning_rate`` ...) delegate to
    :attr:`schedule`; their ``step`` arguments count learner updates.
    """

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or _lazy_empo())
        # Overrides of AlgorithmConfig defaults.
        self.train_batch_size_per_learner = 64
        self.grad_clip = 10.0
        self.grad_clip_by = "global_norm"
        self.rollout_fragment_length = 50
        from rllib_empo.runner import EmpoEnvRunner
        self.env_runner_cls = EmpoEnvRunner
        # --- ecosystem: TensorBoard scalars (rllib_empo.callbacks) ---
        from rllib_empo.callbacks import EmpoCallbacks
        self.callbacks_class = EmpoCallbacks
        # --- end ecosystem ---
        # EMPO fields (tuples are immutable, so sharing the defaults is safe).
        for f in FIELDS:
            setattr(self, f.name, f.default)

    def training(self, **kwargs) -> "EmpoConfig":
        # Signature and docstring are generated from FIELDS below the class.
        empo = {k: kwargs.pop(k) for k in FIELD_NAMES if k in kwargs}
        super().training(**kwargs)  # RLlib's own args; rejects unknown keywords
        for name, value in empo.items():
            if value is not NotProvided:
                setattr(self, name, value)
        return self

    def validate(self) -> None:
        """RLlib's checks, then every EMPO field against its allowed range (ValueError
        naming the field). Never mutates the config."""
        super().validate()
        for f in FIELDS:
            msg = f.check(getattr(self, f.name))
            if msg:
                raise ValueError(msg)
        if self.replay_capacity < self.total_train_batch_size:
            raise ValueError(
                f"replay_capacity ({self.replay_capacity}) must be >= the total train batch size "
                f"(train_batch_size_per_learner={self.train_batch_size_per_learner} x "
                f"num_learners={self.num_learners or 1})")
        if self.learning_starts is not None and self.learning_starts > self.replay_capacity:
            raise ValueError(f"learning_starts ({self.learning_starts}) must be <= replay_capacity "
                             f"({self.replay_capacity})")
        _check_beta_r_range(self)
        _check_u_r_range(self)
        _check_fault_tolerance(self)
        _check_tensorboard_dir(self)
        if self._validate_config:       # experimental(_validate_config=False) skips the env
            _check_environment(self)

    # ------------------------------------------------------------- warm-up queries
    @property
    def schedule(self) -> WarmupSchedule:
        """A fresh :class:`WarmupSchedule` of the current field values."""
        return WarmupSchedule.from_config(self)

    @property
    def effective_learning_starts(self) -> int:
        """Buffer size at which learning starts / resumes after a clear."""
        return self.train_batch_size_per_learner if self.learning_starts is None else self.learning_starts

    def is_in_warmup(self, step: int) -> bool:
        """True before the beta_r ramp starts."""
        return self.schedule.is_in_warmup(step)

    def is_in_rampup(self, step: int) -> bool:
        """True during the beta_r ramp."""
        return self.schedule.is_in_rampup(step)

    def is_fully_trained(self, step: int) -> bool:
        """True once warm-up and ramp are over."""
        return self.schedule.is_fully_trained(step)

    def get_warmup_stage(self, step: int) -> int:
        """Stage id 0..6 at ``step`` (disabled stages are skipped, never renumbered)."""
        return self.schedule.stage(step)

    def get_warmup_stage_name(self, step: int) -> str:
        """Readable name of the stage at ``step``."""
        schedule = self.schedule
        return schedule.stage_name(schedule.stage(step))

    def get_effective_beta_r(self, step: int) -> float:
        """beta_r at ``step``: 0 in warm-up, sigmoidal ramp, then nominal."""
        return self.schedule.effective_beta_r(step)

    def get_active_networks(self, step: int) -> set:
        """Names of the networks trained at ``step``."""
        return set(self.schedule.active_networks(step))

    def get_learning_rate(self, network: str, step: int, update_count: Optional[int] = None) -> float:
        """Learning rate of ``network`` at ``step`` (see WarmupSchedule.learning_rate)."""
        return self.schedule.learning_rate(network, step, update_count)

    def get_stage_transition_steps(self) -> List[Tuple[int, str]]:
        """(step, "old stage -> new stage") for every stage transition that happens."""
        return self.schedule.stage_transitions()

    def format_stages_table(self, markdown: bool = True) -> str:
        """The stages of this configuration as a (markdown) table."""
        return self.schedule.format_stages_table(markdown=markdown)

    # ------------------------------------------------------------- RLlib wiring
    def get_default_rl_module_spec(self):
        from ray.rllib.core.rl_module.rl_module import RLModuleSpec
        from rllib_empo.module import EmpoRLModule
        return RLModuleSpec(module_class=EmpoRLModule)

    def get_default_learner_class(self):
        from rllib_empo.learner import EmpoTorchLearner
        return EmpoTorchLearner

    @property
    def _model_config_auto_includes(self) -> dict:
        spec = self.table_spec()
        return super()._model_config_auto_includes | {
            "hidden_sizes": self.hidden_sizes_by_network(), "num_humans": spec.num_humans,
            "goal_dim": spec.goal_dim, "x_h_use_network": self.x_h_use_network,
            "u_r_use_network": self.u_r_use_network, "v_r_use_network": self.v_r_use_network,
            "x_h_floor": self.x_h_floor, "neg_q_r_floor": self.neg_q_r_floor}

    def hidden_sizes_by_network(self) -> dict:
        """{network: hidden layer sizes} for every network name."""
        hs = self.hidden_sizes
        if isinstance(hs, dict):
            return {n: tuple(hs.get(n, DEFAULT_HIDDEN)) for n in NETWORKS}
        return {n: tuple(hs) for n in NETWORKS}

    def empo_env_settings(self) -> dict:
        """What the EnvRunners' envs must record (rllib_empo.env.EnvSettings fields)."""
        return {"use_model_based_targets": self.use_model_based_targets,
                "sum_human_actions": self.sum_human_actions,
                "max_successors": self.max_successors,
                "max_goals_per_human": self.max_goals_per_human,
                # X_h at successors is needed only when X_h, U_r and V_r are all direct
                "succ_goals": not (self.x_h_use_network or self.u_r_use_network
                                   or self.v_r_use_network),
                "gamma_h": self.gamma_h, "exploring_starts": self.exploring_starts}

    def table_spec(self):
        """Row shapes of the configured world (builds the world, not the prior)."""
        from rllib_empo.env import EnvSettings, table_spec, world_for_config
        return table_spec(world_for_config(self.env, self.env_config),
                          EnvSettings(**self.empo_env_settings()))


def _training_doc() -> str:
    args = "\n".join(f"            {f.name}: {f.doc} Must be {f.allowed}; default {f.default!r}."
                     for f in FIELDS)
    return ("Sets the training related configuration (EMPO fields and RLlib's own).\n\n"
            "        Steps, durations and intervals count learner updates unless a field says otherwise.\n\n"
            f"        Args:\n{args}\n"
            "            **kwargs: RLlib's own training() arguments (gamma, lr, grad_clip,\n"
            "                train_batch_size_per_learner, ...).\n\n"
            "        Returns:\n            This updated EmpoConfig object.\n")


# Keyword-only parameters for help(), IDEs' runtime introspection and Tune.
EmpoConfig.training.__signature__ = inspect.Signature(
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=NotProvided) for n in FIELD_NAMES]
    + [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)],
    return_annotation="EmpoConfig",
)
EmpoConfig.training.__doc__ = _training_doc()

__all__ = ["EmpoConfig", "FIELDS", "FIELD_NAMES", "FieldSpec", "config_fields_table", "NETWORKS"]
