"""`EmpoConfig`: the RLlib AlgorithmConfig of the EMPO phase-2 algorithm.

Every EMPO field is declared once, in :data:`rllib_empo.fields.FIELDS`; this module derives
the defaults, ``training()``'s signature and docstring, and the range checks from it.
Cross-field and environment checks live in :mod:`rllib_empo.validation`.

Units: steps, intervals and durations count *learner updates* unless stated otherwise.
"""

from __future__ import annotations

import inspect
from typing import List, Optional, Tuple

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided

from rllib_empo.fields import (DEFAULT_HIDDEN, FIELD_NAMES, FIELDS, FieldSpec,
                               config_fields_table)
from rllib_empo.schedule import NETWORKS, WarmupSchedule
from rllib_empo.validation import check_cross_fields


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
        check_cross_fields(self)

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
