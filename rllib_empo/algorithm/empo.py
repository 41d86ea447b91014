"""EMPO phase 2 as an RLlib algorithm: ``EmpoConfig`` and ``Empo`` (the layout of RLlib's own
``algorithms/dqn/dqn.py``: the config and the Algorithm in one module).

Every EMPO field is declared once, in :data:`rllib_empo.algorithm.fields.FIELDS`; the config's
defaults, ``training()``'s signature and docstring, and the range checks derive from it.
Cross-field and environment checks live in :mod:`rllib_empo.algorithm.validation`.

One ``Empo.training_step``:
  1. sample rows from the EnvRunners (local or remote) into the TransitionBuffer;
  2. run ``updates_per_iteration`` learner updates; each gets the ``StepPlan`` of its step
     (stage, active networks, learning rates, beta_r, target copies; ``rllib_empo.theory
     .schedule``), and the buffer is cleared at the schedule's clearing points (learning
     pauses until it holds ``learning_starts`` rows again);
  3. sync q_r to the EnvRunners and push the current beta_r and epsilon;
  4. log the metrics of :mod:`rllib_empo.algorithm.metrics`.

Units: a step is one learner update (docs/DESIGN.md); steps, intervals and durations count
learner updates unless stated otherwise. The update counter, the clearing bookkeeping and the
batch-sampling generator are checkpointed, so a restored run continues where it stopped.
"""
from __future__ import annotations

import copy
import inspect
from typing import List, Optional, Tuple

import numpy as np

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import (ENV_RUNNER_RESULTS, ENV_RUNNER_SAMPLING_TIMER,
                                     LEARNER_RESULTS, LEARNER_UPDATE_TIMER,
                                     NUM_ENV_STEPS_SAMPLED_LIFETIME, TIMERS)

from rllib_empo.algorithm import runner_state
from rllib_empo.algorithm.buffer import TransitionBuffer
from rllib_empo.algorithm.callbacks import EmpoCallbacks
from rllib_empo.algorithm.env import EnvSettings, prior_from_env_config, table_spec, world_for_config
from rllib_empo.algorithm.env_runner import EmpoEnvRunner
from rllib_empo.algorithm.fields import DEFAULT_HIDDEN, FIELD_NAMES, FIELDS
from rllib_empo.algorithm.learner import EMPO_KEY, EmpoTorchLearner, EmpoUpdate
from rllib_empo.algorithm.metrics import log_exact_fidelity, log_iteration
from rllib_empo.algorithm.module import EmpoRLModule
from rllib_empo.algorithm.validation import check_cross_fields
from rllib_empo.algorithm.values import LearnedValues
from rllib_empo.exact.compare import compare_to_exact
from rllib_empo.exact.solver import ExactSolution, solve
from rllib_empo.theory.params import EmpoParams
from rllib_empo.theory.schedule import NETWORKS, WarmupSchedule


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
        super().__init__(algo_class=algo_class or Empo)
        # Overrides of AlgorithmConfig defaults.
        self.train_batch_size_per_learner = 64
        self.grad_clip = 10.0
        self.grad_clip_by = "global_norm"
        self.rollout_fragment_length = 50
        self.env_runner_cls = EmpoEnvRunner
        self.callbacks_class = EmpoCallbacks
        # EMPO fields (tuples are immutable, so sharing the defaults is safe).
        for f in FIELDS:
            setattr(self, f.name, f.default)

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
        """What the EnvRunners' envs must record (``EnvSettings`` fields)."""
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


# --------------------------------------------------------------------------- algorithm
class Empo(Algorithm):
    """The EMPO phase-2 algorithm (module docstring); ``EmpoConfig().build_algo()`` builds it."""

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> EmpoConfig:
        return EmpoConfig()

    @override(Algorithm)
    def setup(self, config) -> None:
        super().setup(config)
        self.schedule = self.config.schedule
        self.buffer = TransitionBuffer(self.config.replay_capacity)
        self._rng = np.random.default_rng(self.config.seed)
        self._empo = {"num_updates": 0, "stage": self.schedule.stage(0), "clears_done": [],
                      "num_buffer_clears": 0, "num_env_steps": 0}
        self._update_stats = {}              # loss/prediction/target of the last logged update
        self._exact: Optional[ExactSolution] = None       # solved once, on demand
        self._learned: Optional[LearnedValues] = None     # driver-side copy of the networks
        self._weights_version = 0            # bumped whenever the Learner's weights change
        if self.config.verbose:
            print(f"[Warmup] Starting in stage {self.schedule.stage(0)}: "
                  f"{self.schedule.stage_name(self.schedule.stage(0))} "
                  f"(active networks: {set(self.schedule.active_networks(0))})")
        self._push_exploration()
        if self.config.exact_eval_interval:
            try:                     # a world too large to solve fails now, not at iteration k
                self.exact_solution()
            except Exception:
                self.cleanup()       # the EnvRunners and Learners built above
                raise

    # ------------------------------------------------------------------ training step
    @override(Algorithm)
    def training_step(self) -> None:
        cfg, st = self.config, self._empo
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            columns, runner_metrics = self._sample()
        self.metrics.aggregate(runner_metrics, key=ENV_RUNNER_RESULTS)
        self.buffer.add(columns)
        st["num_env_steps"] += len(columns.get("obs", ()))

        transitions = 0
        updated = False
        self._update_stats = {}        # loss/prediction/target of this iteration's last update
        starts = cfg.effective_learning_starts
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            remaining = cfg.updates_per_iteration
            while remaining > 0:
                transitions += self._advance_stage()
                if len(self.buffer) < starts:
                    break                               # paused after a clear / before start
                # One learner call runs consecutive updates up to the next stage boundary
                # (where a clear may pause learning); RLlib's per-call cost is paid once.
                n = min(remaining, self._updates_to_next_stage(st["num_updates"]))
                self._update_chunk(n)
                remaining -= n
                updated = True
        transitions += self._advance_stage()

        self.env_runner_group.sync_weights(from_worker_or_learner_group=self.learner_group,
                                           inference_only=True)
        self._push_exploration()
        log_iteration(self.metrics, self.schedule, st, self.buffer, transitions > 0,
                      self._update_stats if updated else {})
        # self.iteration counts the finished iterations: this one is number iteration + 1,
        # so the figures come with training_iteration k, 2k, ... (the last of a k*m-long run)
        if cfg.exact_eval_interval and (self.iteration + 1) % cfg.exact_eval_interval == 0:
            st["exact"] = {**compare_to_exact(self, self.exact_solution()),
                           "training_iteration": self.iteration + 1}
        log_exact_fidelity(self.metrics, st.get("exact"))

    def _sample(self) -> tuple[dict, list]:
        group = self.env_runner_group
        if group.num_remote_env_runners() == 0:
            results = [group.local_env_runner.sample_rows()]
        else:
            results = group.foreach_env_runner(lambda er: er.sample_rows(),
                                               local_env_runner=False, healthy_only=True)
        for cols, _ in results:
            if isinstance(cols, BaseException):
                raise cols                      # a world error from a runner (see sample_rows)
        parts = [cols for cols, _ in results if cols]
        columns = ({k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
                   if parts else {})
        return columns, [m for _, m in results]

    def _updates_to_next_stage(self, t: int) -> int:
        return min([e - t for e in self.schedule.ends if e > t], default=1 << 62)

    def _update_chunk(self, n: int) -> None:
        """``n`` consecutive learner updates (within one stage) in one learner call: n
        minibatches of the train batch size, each with the StepPlan of its own step."""
        st = self._empo
        t = st["num_updates"]
        plans = tuple(self.schedule.plan(t + i) for i in range(n))
        size = self.config.total_train_batch_size
        batch = self.buffer.sample(n * size, self._rng)
        result = self.learner_group.update(
            batch=MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(batch)}, env_steps=n * size),
            timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: st["num_env_steps"],
                       EMPO_KEY: EmpoUpdate(plans=plans, log=True)},
            minibatch_size=self.config.train_batch_size_per_learner, num_epochs=1,
            num_total_minibatches=n, shuffle_batch_per_epoch=False)
        self.metrics.aggregate(result, key=LEARNER_RESULTS)
        for res in result:
            for key, stat in res.get(DEFAULT_MODULE_ID, {}).items():
                if key.startswith(("loss_", "prediction_", "target_")):
                    self._update_stats[key] = float(stat.peek() if hasattr(stat, "peek") else stat)
        st["num_updates"] = t + n
        self._weights_version += 1

    def _advance_stage(self) -> int:
        """Handle a stage transition and a clearing point at the current step. Returns 1 if
        the stage changed."""
        st, sch = self._empo, self.schedule
        t = st["num_updates"]
        changed = 0
        stage = sch.stage(t)
        if stage != st["stage"]:
            if self.config.verbose:
                print(f"\n[Warmup] Stage transition at step {t}, env step {st['num_env_steps']}:\n"
                      f"  {sch.stage_name(st['stage'])} -> {sch.stage_name(stage)}\n"
                      f"  Active networks: {set(sch.active_networks(t))}\n"
                      f"  Effective beta_r: {sch.effective_beta_r(t):.4f}")
            st["stage"] = stage
            changed = 1
        if t in sch.clear_points and t not in st["clears_done"]:
            n = len(self.buffer)
            self.buffer.clear()
            st["clears_done"].append(t)
            st["num_buffer_clears"] += 1
            if self.config.verbose:
                why = "before the beta_r ramp-up" if t == sch.ends[4] else "after the beta_r ramp-up"
                print(f"  [Training] Cleared replay buffer ({n} transitions) {why}")
        return changed

    @override(Algorithm)
    def restore_env_runners(self, env_runner_group):
        """RLlib restarts lost EnvRunners with the current weights; beta_r and epsilon are
        plain module attributes, so push them too."""
        restored = super().restore_env_runners(env_runner_group)
        if restored and env_runner_group is self.env_runner_group:
            self._push_exploration()
        return restored

    def _push_exploration(self) -> None:
        t = self._empo["num_updates"]
        beta_r, eps = self.schedule.effective_beta_r(t), self.schedule.epsilon_at(t)
        self.env_runner_group.foreach_env_runner(lambda er: er.set_exploration(beta_r, eps),
                                                 local_env_runner=True)

    # ------------------------------------------------------------------ analysis API
    @property
    def num_updates(self) -> int:
        """Learner updates so far: the warm-up schedule's step."""
        return self._empo["num_updates"]

    @property
    def world(self):
        """The World this algorithm trains on (built on the driver)."""
        return self.learned_values().world

    def learned_values(self) -> LearnedValues:
        """The learned networks on the driver, synced with the Learner's current weights."""
        if self._learned is None:
            self._learned = LearnedValues(self.config)
        if self._learned.version != self._weights_version:
            self._learned.sync(self.learner_group.get_weights()[DEFAULT_MODULE_ID],
                               self._weights_version)
        return self._learned

    def robot_policy(self, states) -> np.ndarray:
        """pi_r at the nominal beta_r for raw world states: [N, A_r]."""
        return self.learned_values().values(states, need=("pi_r",))["pi_r"]

    def values(self, states, need=LearnedValues.QUANTITIES) -> dict:
        """Learned q_r [N, A_r], pi_r, v_r [N], u_r [N], x_h [N, H] for raw world states."""
        return self.learned_values().values(states, need=need)

    def v_h_e_values(self, items) -> np.ndarray:
        """Learned V_h^e for (state, human position in human_agent_indices, goal) triples."""
        return self.learned_values().v_h_e_values(items)

    def exact_solution(self, max_states: Optional[int] = None) -> ExactSolution:
        """The exact solution of this algorithm's world, prior and theory parameters, solved
        once, of at most ``max_states`` (default ``exact_max_states``) states: raises
        TooManyStatesError (one line naming the limit) or WorldProtocolError (cyclic)."""
        if self._exact is None:
            cfg = self.config
            world = self.world
            prior = prior_from_env_config(world, cfg.env_config, cfg.gamma_h)
            self._exact = solve(world, prior, cfg.params, limit_name="exact_max_states",
                                max_states=max_states or cfg.exact_max_states)
        return self._exact

    # ------------------------------------------------------------------ checkpoints
    @override(Algorithm)
    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict:
        state = super().get_state(components, not_components=not_components, **kwargs)
        if self._check_component("empo_counters", components, not_components):
            state["empo_counters"] = copy.deepcopy(self._empo)
            state["empo_rng"] = copy.deepcopy(self._rng.bit_generator.state)
        if self._check_component("empo_env_runners", components, not_components):
            state["empo_env_runners"] = runner_state.capture_all(self)
        if self.config.checkpoint_replay_buffer and self._check_component(
                "empo_replay_buffer", components, not_components):
            state["empo_replay_buffer"] = self.buffer.get_state()
        return state

    @override(Algorithm)
    def set_state(self, state: dict) -> None:
        super().set_state(state)
        if "empo_counters" in state:
            self._empo = copy.deepcopy(state["empo_counters"])
            self._empo.pop("last_sync", None)   # older checkpoints: target copies are derived now
            self._rng.bit_generator.state = copy.deepcopy(state["empo_rng"])
        if "empo_replay_buffer" in state:
            self.buffer.set_state(state["empo_replay_buffer"])
        self._weights_version += 1
        self._push_exploration()       # plain module attributes are not in checkpoints
        if state.get("empo_env_runners"):
            runner_state.restore_all(self, state["empo_env_runners"])
        for callback in getattr(self, "callbacks", None) or ():
            if hasattr(callback, "on_empo_state_restored"):
                callback.on_empo_state_restored(algorithm=self)
