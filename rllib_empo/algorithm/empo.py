"""EMPO phase 2 as an RLlib algorithm: ``Empo``; its config ``EmpoConfig`` is in
:mod:`rllib_empo.algorithm.config` (re-exported here).

One ``Empo.training_step``:
  1. sample from the EnvRunners (local or remote) and merge each sample into the replay
     memory (``ReplayStore``: rows that point to goals, states and tables stored once);
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
import os
from typing import Optional

import numpy as np
import torch

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import (ENV_RUNNER_RESULTS, ENV_RUNNER_SAMPLING_TIMER,
                                     LEARNER_RESULTS, LEARNER_UPDATE_TIMER,
                                     NUM_ENV_STEPS_SAMPLED_LIFETIME, TIMERS)

from rllib_empo.algorithm import checkpoints, runner_state, state_checks
from rllib_empo.algorithm import config as _config
from rllib_empo.algorithm.config import EmpoConfig
from rllib_empo.algorithm.env import prior_from_env_config
from rllib_empo.algorithm.faults import RunnerHealth
from rllib_empo.algorithm.learner import EMPO_KEY, EmpoTorchLearner, EmpoUpdate
from rllib_empo.algorithm.metrics import log_exact_fidelity, log_iteration, log_residuals
from rllib_empo.algorithm.nonfinite import CheckedWeights, repair_learners
from rllib_empo.algorithm.resources import updates_per_call
from rllib_empo.algorithm.store import ReplayStore
from rllib_empo.algorithm.values import LearnedValues
from rllib_empo.exact.compare import compare_to_exact
from rllib_empo.exact.solver import ExactSolution, solve

__all__ = ["Empo", "EmpoConfig"]    # EmpoConfig lives in rllib_empo.algorithm.config


# --------------------------------------------------------------------------- algorithm
class Empo(Algorithm):
    """The EMPO phase-2 algorithm (module docstring); ``EmpoConfig().build_algo()`` builds it."""

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> EmpoConfig:
        return EmpoConfig()

    @override(Algorithm)
    def setup(self, config) -> None:
        # before RLlib builds anything: the driver (with a local Learner and EnvRunner) runs
        # on its allotment, not on every core of a shared machine
        torch.set_num_threads(config.torch_threads("main"))
        super().setup(config)
        self.schedule = self.config.schedule
        self.replay = ReplayStore(self.config.replay_capacity, self.config.table_spec().mode)
        self._attach_replay()
        self._rng = np.random.default_rng(self.config.seed)
        self._empo = {"num_updates": 0, "stage": self.schedule.stage(0), "clears_done": [],
                      "num_buffer_clears": 0, "num_env_steps": 0}
        self._update_stats = {}              # loss/prediction/target of the last logged update
        self._exact: Optional[ExactSolution] = None       # solved once, on demand
        self._learned: Optional[LearnedValues] = None     # driver-side copy of the networks
        self._weights_version = 0            # bumped whenever the Learner's weights change
        self._held = None                    # the residual rows (residual_rows)
        self._held_rng = np.random.default_rng([self.config.seed or 0, 1])
        self._runner_health = RunnerHealth(self.config)   # lost / failing EnvRunners
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
            samples, runner_metrics = self._sample()
        self.metrics.aggregate(runner_metrics, key=ENV_RUNNER_RESULTS)
        for sample in samples:
            self.replay.add(sample)
            st["num_env_steps"] += len(sample["rows"]["table"])
        if not self.learner_group.is_local:
            self._send_replay_delta()          # remote Learners see what was just merged

        transitions = 0
        updated = False
        self._update_stats = {}        # loss/prediction/target of this iteration's last update
        starts = cfg.effective_learning_starts
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            remaining = cfg.updates_per_iteration
            while remaining > 0:
                transitions += self._advance_stage()
                if len(self.replay) < starts:
                    break                               # paused after a clear / before start
                # One learner call runs consecutive updates up to the next stage boundary
                # (where a clear may pause learning); RLlib's per-call cost is paid once.
                # ... and at most as many as keep the call's batch within the memory bound.
                n = min(remaining, self._updates_to_next_stage(st["num_updates"]),
                        updates_per_call(cfg.total_train_batch_size,
                                         self.replay.rows.bytes_per_row))
                self._update_chunk(n)
                remaining -= n
                updated = True
        transitions += self._advance_stage()

        # q_r reaches the EnvRunners only if finite (repaired from its target copy first).
        self.env_runner_group.sync_weights(
            from_worker_or_learner_group=CheckedWeights(self.learner_group,
                                                        lambda bad: repair_learners(self.learner_group)),
            inference_only=True)
        self._push_exploration()
        self._runner_health.log(self.metrics, self.env_runner_group)
        log_iteration(self.metrics, self.schedule, st, self.replay, transitions > 0,
                      self._update_stats if updated else {})
        log_residuals(self.metrics, self.residuals())
        # self.iteration counts the finished iterations: this one is number iteration + 1,
        # so the figures come with training_iteration k, 2k, ... (the last of a k*m-long run)
        if cfg.exact_eval_interval and (self.iteration + 1) % cfg.exact_eval_interval == 0:
            st["exact"] = {**compare_to_exact(self, self.exact_solution()),
                           "training_iteration": self.iteration + 1}
        log_exact_fidelity(self.metrics, st.get("exact"))

    def _sample(self) -> tuple[list, list]:
        # The local runner, or every healthy remote one; failures are counted and bounded.
        results = self._runner_health.sample(self.env_runner_group, lambda er: er.sample_rows())
        for sample, _ in results:
            if isinstance(sample, BaseException):
                raise sample                    # a world error from a runner (see sample_rows)
        return [s for s, _ in results if s], [m for _, m in results]

    def _attach_replay(self) -> None:
        """Give the Learner(s) the replay memory: a local Learner shares ``self.replay``; a
        remote one gets a full copy now and deltas before every update (``_sync_replay``)."""
        if self.learner_group.is_local:
            replay = self.replay
            self.learner_group.foreach_learner(lambda learner: learner.attach_replay(replay))
        else:
            self._send_replay_delta(full=True)

    def _send_replay_delta(self, full: bool = False) -> None:
        delta = self.replay.delta(full=full)
        self.learner_group.foreach_learner(lambda learner: learner.apply_replay_delta(delta))

    def _updates_to_next_stage(self, t: int) -> int:
        return min([e - t for e in self.schedule.ends if e > t], default=1 << 62)

    def _update_chunk(self, n: int) -> None:
        """``n`` consecutive learner updates (within one stage) in one learner call: n
        minibatches of the train batch size, each with the StepPlan of its own step."""
        st = self._empo
        t = st["num_updates"]
        plans = tuple(self.schedule.plan(t + i) for i in range(n))
        size = self.config.total_train_batch_size
        batch = self.replay.sample(n * size, self._rng, by=self.config.replay_sampling)
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
            n = len(self.replay)
            self.replay.clear()
            st["clears_done"].append(t)
            st["num_buffer_clears"] += 1
            if self.config.verbose:
                why = "before the beta_r ramp-up" if t == sch.ends[4] else "after the beta_r ramp-up"
                print(f"  [Training] Cleared replay buffer ({n} transitions) {why}")
        return changed

    @override(Algorithm)
    def restore_env_runners(self, env_runner_group):
        """RLlib restarts lost EnvRunners with the current weights; a restarted runner gets a
        fresh random stream (``faults.RunnerHealth.restored``), and beta_r and epsilon,
        which are plain module attributes, are pushed too."""
        restored = super().restore_env_runners(env_runner_group)
        if restored and env_runner_group is self.env_runner_group:
            self._runner_health.restored(env_runner_group, restored)
            self._push_exploration()
        return restored

    def _push_exploration(self) -> None:
        t = self._empo["num_updates"]
        beta_r, eps = self.schedule.effective_beta_r(t), self.schedule.epsilon_at(t)
        self.env_runner_group.foreach_env_runner(lambda er: er.set_exploration(beta_r, eps),
                                                 local_env_runner=True)

    # ------------------------------------------------------------------ convergence
    def residual_rows(self) -> dict | None:
        """The fixed set of ``residual_rows`` replay rows the residuals are measured on,
        redrawn (uniformly from the memory) once any of its rows' tables left it; None while
        the memory is empty or residual_rows is 0."""
        n = self.config.residual_rows
        if not n or not len(self.replay):
            return None
        held, tables = self._held, self.replay.tables
        if held is None or not ((tables.key[held["table"]] >= 0).all()
                                and (tables.gen[held["table"]] == held["gen"]).all()):
            rows = self.replay.sample(n, self._held_rng)
            held = self._held = {**rows, "gen": tables.gen[rows["table"]].copy()}
        return held

    def residuals(self) -> dict:
        """Each network's distance from its own fixed point on the residual rows
        (``EmpoTorchLearner.residuals``; the first Learner's when there are several):
        ``{net: mean, net_max: max, policy_change: ...}``; {} without residual rows."""
        held = self.residual_rows()
        if held is None:
            return {}
        beta_r = self.schedule.effective_beta_r(self.num_updates)
        table, weight = held["table"], held["weight"]
        results = self.learner_group.foreach_learner(
            lambda learner: learner.residuals(table, weight, beta_r))
        return next(iter(results)).get()

    @override(Algorithm)
    def evaluate(self, parallel_train_future=None) -> dict:
        """EMPO's own evaluation (RLlib's default reports an episode return, which is always
        0 here): under ``"evaluation"``, the ``Residual`` figures, the learned values at the
        initial state (``InitialState``: v_r, u_r, x_h_<i> per human, pi_r's entropy) and,
        when ``exact_eval_interval`` > 0 says the world is small enough, ``Exact``
        (``compare_to_exact``)."""
        s0 = self.world.initial_state()
        v = self.values([s0])
        pi = v["pi_r"][0]
        initial = {"v_r": float(v["v_r"][0]), "u_r": float(v["u_r"][0]),
                   "pi_r_entropy": float(-(pi * np.log(np.maximum(pi, 1e-30))).sum()),
                   **{f"x_h_{i}": float(x) for i, x in enumerate(v["x_h"][0])}}
        out = {"Residual": self.residuals(), "InitialState": initial}
        if self.config.exact_eval_interval:
            out["Exact"] = compare_to_exact(self, self.exact_solution())
        return {"evaluation": out}

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
            # its module's initial weights would draw from torch's global generator, which
            # the local EnvRunner's action sampling draws from too: evaluating must not
            # change the training that follows
            with torch.random.fork_rng(devices=[]):
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
    # A save is atomic and a restore complete-or-nothing (rllib_empo.algorithm.checkpoints).
    @override(Algorithm)
    def save_to_path(self, path=None, *, state=None, filesystem=None, use_msgpack=False) -> str:
        write = super().save_to_path
        return checkpoints.save_atomically(
            lambda p, fs: write(p, state=state, filesystem=fs, use_msgpack=use_msgpack),
            path, filesystem)

    @override(Algorithm)
    def restore_from_path(self, path, *args, **kwargs) -> None:
        """Restore a whole checkpoint: checked, read and validated before anything changes.
        Partial restores (``component=``) and remote filesystems are RLlib's own."""
        if args or kwargs.get("component") is not None or kwargs.get("filesystem") is not None \
                or "://" in os.fspath(path):
            return super().restore_from_path(path, *args, **kwargs)
        self.set_state(checkpoints.read_checkpoint(path))

    @classmethod
    @override(Algorithm)
    def from_checkpoint(cls, path, filesystem=None, **kwargs) -> "Empo":
        """Refuse an incomplete checkpoint before building anything."""
        if filesystem is None and isinstance(path, (str, os.PathLike)) and "://" not in os.fspath(path):
            checkpoints.check_complete(path)
        return super().from_checkpoint(path, filesystem=filesystem, **kwargs)

    @override(Algorithm)
    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict:
        state = super().get_state(components, not_components=not_components, **kwargs)
        if self._check_component("empo_counters", components, not_components):
            state["empo_counters"] = copy.deepcopy(self._empo)
            state["empo_rng"] = copy.deepcopy(self._rng.bit_generator.state)
        if self._check_component(state_checks.SIGNATURE_KEY, components, not_components):
            state[state_checks.SIGNATURE_KEY] = copy.deepcopy(state_checks.signature(self))
        if self._check_component("empo_env_runners", components, not_components):
            state["empo_env_runners"] = runner_state.capture_all(self)
        if self._check_component("empo_replay_buffer", components, not_components):
            # without checkpoint_replay_buffer: only the memory's (tiny) slot layout
            state["empo_replay_buffer"] = self.replay.get_state(
                rows=self.config.checkpoint_replay_buffer)
        return state

    @override(Algorithm)
    def set_state(self, state: dict) -> None:
        """Validate ``state`` against this algorithm, then apply it; if applying fails, the
        algorithm is rolled back (``state_checks.apply_or_roll_back``)."""
        state_checks.apply_or_roll_back(
            self, state,
            prepare=lambda s: state_checks.optional_buffer(
                lambda: ReplayStore(self.config.replay_capacity, self.replay.mode),
                s.get("empo_replay_buffer")),
            apply=self._apply_state)
        for callback in getattr(self, "callbacks", None) or ():
            if hasattr(callback, "on_empo_state_restored"):
                callback.on_empo_state_restored(algorithm=self)

    def _apply_state(self, state: dict, replay: Optional[ReplayStore]) -> None:
        super().set_state(state)
        state_checks.restore_connectors(self, state)
        if "empo_counters" in state:
            self._empo = copy.deepcopy(state["empo_counters"])
            self._empo.pop("last_sync", None)   # older checkpoints: target copies are derived now
            self._rng.bit_generator.state = copy.deepcopy(state["empo_rng"])
        if replay is not None:
            self.replay = replay
        self._attach_replay()          # the Learner's weights and memory both just changed
        self._weights_version += 1
        self._push_exploration()       # plain module attributes are not in checkpoints
        if state.get("empo_env_runners"):
            runner_state.restore_all(self, state["empo_env_runners"])


_config.DEFAULT_ALGO_CLASS[0] = Empo     # EmpoConfig()'s algo_class
