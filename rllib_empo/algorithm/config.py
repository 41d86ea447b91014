"""``EmpoConfig``: the configuration of the EMPO phase-2 algorithm (``Empo``, in
:mod:`rllib_empo.algorithm.empo`).

Every EMPO field is declared once, in :data:`rllib_empo.algorithm.fields.FIELDS`; the config's
defaults, ``training()``'s signature and docstring, and the range checks derive from it.
Cross-field and environment checks live in :mod:`rllib_empo.algorithm.validation`; the
warm-up queries delegate to the config's :class:`~rllib_empo.theory.schedule.WarmupSchedule`.
Units: steps, intervals and durations count learner updates unless stated otherwise.
"""
from __future__ import annotations

import copy
import inspect
from typing import List, Optional, Tuple

import torch

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override

from rllib_empo.algorithm.callbacks import EmpoCallbacks
from rllib_empo.algorithm.env import EnvSettings, table_spec, world_for_config
from rllib_empo.algorithm.env_runner import EmpoEnvRunner
from rllib_empo.algorithm.fields import DEFAULT_HIDDEN_SIZES, FIELD_NAMES, FIELDS
from rllib_empo.algorithm.learner import EmpoTorchLearner
from rllib_empo.algorithm.module import EmpoRLModule
from rllib_empo.algorithm.validation import check_cross_fields, check_rllib_fields
from rllib_empo.theory.params import EmpoParams
from rllib_empo.theory.schedule import NETWORKS, WarmupSchedule


#: ``Empo``, registered by :mod:`rllib_empo.algorithm.empo` (which imports this module, so
#: this one cannot import it); the package's ``__init__`` imports both.
DEFAULT_ALGO_CLASS: list = [None]


# ------------------------------------------------------------------------------ config
class EmpoConfig(AlgorithmConfig):
    """Configuration of the EMPO phase-2 algorithm (robot softly maximising human power).

    .. code-block:: python

        config = (EmpoConfig()
                  .environment("rllib_empo/RockGate-v0")
                  .training(beta_r=10.0, gamma_r=0.99, warmup_v_h_e_steps=1000))
        algo = config.build_algo()

    EMPO fields are listed in :data:`FIELDS` and ``config_fields_table()``; RLlib's own
    ``grad_clip``, ``train_batch_size_per_learner`` ... still work.
    The warm-up queries (``is_in_warmup``, ``get_learning_rate`` ...) delegate to
    :attr:`schedule`; their ``step`` arguments count learner updates.
    """

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or DEFAULT_ALGO_CLASS[0])
        # Overrides of AlgorithmConfig defaults.
        self.train_batch_size_per_learner = 256
        self.grad_clip = 10.0
        self.grad_clip_by = "global_norm"
        # 4 envs x 50 steps = 200 env steps per EnvRunner per iteration (RLlib's "auto" would
        # be tiny): with 32 updates of 256 rows, each transition is replayed ~40 times; at 50
        # steps (~160 times) the memory held too few of a larger world's states. Four envs
        # step together through one module call and one connector pass: ~30 % less sampling
        # time than one env x 200 steps on corridor (docs/DESIGN.md, section 4).
        self.num_envs_per_env_runner = 4
        self.rollout_fragment_length = 50
        self.env_runner_cls = EmpoEnvRunner
        self.callbacks_class = EmpoCallbacks
        # The learner checks every gradient's finiteness itself (fused norms, on_nonfinite),
        # so RLlib's per-tensor torch.isfinite() pass is skipped; and with several learners
        # (DDP) the frozen networks of a warm-up stage get no gradient.
        self.torch_skip_nan_gradients = True
        self.torch_ddp_kwargs = {"find_unused_parameters": True}
        # EMPO fields (copies: hidden_sizes defaults to a dict).
        for f in FIELDS:
            setattr(self, f.name, copy.deepcopy(f.default))   # no shared mutable default

    @override(AlgorithmConfig)
    def training(self, **kwargs) -> "EmpoConfig":
        # Signature and docstring are generated from FIELDS below the class.
        empo = {k: kwargs.pop(k) for k in FIELD_NAMES if k in kwargs}
        super().training(**kwargs)  # RLlib's own args; rejects unknown keywords
        for name, value in empo.items():
            if value is not NotProvided:
                setattr(self, name, value)
        return self

    @override(AlgorithmConfig)
    def validate(self) -> None:
        """RLlib's own fields that EMPO relies on (before RLlib's checks, which would fail
        deep inside on such values), RLlib's checks, then every EMPO field against its
        allowed range (ValueError naming the field). Never mutates the config."""
        check_rllib_fields(self)
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
    def params(self) -> EmpoParams:
        """The theory parameters (beta_r, gamma_h, gamma_r, zeta, xi, eta, floors)."""
        return EmpoParams.from_config(self)

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
    @override(AlgorithmConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(module_class=EmpoRLModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self):
        return EmpoTorchLearner

    @property
    @override(AlgorithmConfig)
    def _model_config_auto_includes(self) -> dict:
        spec = self.table_spec()
        return super()._model_config_auto_includes | {
            "hidden_sizes": self.hidden_sizes_by_network(), "num_humans": spec.num_humans,
            "num_actions": spec.num_actions,
            "goal_dim": spec.goal_dim, "x_h_use_network": self.x_h_use_network,
            "u_r_use_network": self.u_r_use_network, "v_r_use_network": self.v_r_use_network,
            "x_h_floor": self.x_h_floor, "neg_q_r_floor": self.neg_q_r_floor}

    def hidden_sizes_by_network(self) -> dict:
        """{network: hidden layer sizes} for every network name."""
        hs = self.hidden_sizes
        if isinstance(hs, dict):
            return {n: tuple(hs.get(n, DEFAULT_HIDDEN_SIZES[n])) for n in NETWORKS}
        return {n: tuple(hs) for n in NETWORKS}

    def empo_env_settings(self) -> dict:
        """What the EnvRunners' envs must record (``EnvSettings`` fields)."""
        return {"use_model_based_targets": self.use_model_based_targets,
                "sum_human_actions": self.sum_human_actions,
                "max_goals_per_human": self.max_goals_per_human,
                "gamma_h": self.gamma_h, "exploring_starts": self.exploring_starts,
                "exploring_starts_frontier": self.exploring_starts_frontier}

    def torch_threads(self, role: str) -> int:
        """Torch threads for a process of ``role`` ("main", "env_runner", "learner"):
        ``torch_num_threads``, or that process's CPU allotment (at least 1)."""
        if self.torch_num_threads is not None:
            return int(self.torch_num_threads)
        cpus = {"main": self.num_cpus_for_main_process,
                "env_runner": self.num_cpus_per_env_runner,
                "learner": self.num_cpus_per_learner}[role]
        return max(1, int(cpus)) if isinstance(cpus, (int, float)) else 1

    def table_spec(self):
        """Row shapes of the configured world (builds the world, not the prior)."""
        return table_spec(world_for_config(self.env, self.env_config),
                          EnvSettings(**self.empo_env_settings()))


def _training_doc() -> str:
    args = "\n".join(f"            {f.name}: {f.doc} Must be {f.allowed}; default {f.default!r}."
                     for f in FIELDS)
    return ("Sets the training related configuration (EMPO fields and RLlib's own).\n\n"
            "        Steps, durations and intervals count learner updates unless a field says otherwise.\n\n"
            f"        Args:\n{args}\n"
            "            **kwargs: RLlib's own training() arguments (grad_clip,\n"
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
