"""Empo: the RLlib Algorithm that trains EMPO phase 2 with the staged warm-up.

One ``training_step``:
  1. sample rows from the EnvRunners (local or remote) into the TransitionBuffer;
  2. run ``updates_per_iteration`` learner updates; before each, the warm-up schedule decides
     the stage, active networks, learning rates, beta_r and target copies of that step, and the
     buffer is cleared at the schedule's clearing points (learning pauses until it holds
     ``learning_starts`` rows again);
  3. sync q_r to the EnvRunners and push the current beta_r and epsilon;
  4. log ``Warmup/*``, ``LearningRate/*``, ``Loss/*``, ``Prediction/*``, ``Target/*``, ``Buffer/*``.

A schedule step is one learner update (DESIGN.md); the update counter, the clearing
bookkeeping, the target-copy bookkeeping and the batch-sampling generator are checkpointed,
so a restored run continues exactly where it stopped.
"""
from __future__ import annotations

import copy

import numpy as np

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import (ENV_RUNNER_RESULTS, ENV_RUNNER_SAMPLING_TIMER,
                                     LEARNER_RESULTS, LEARNER_UPDATE_TIMER,
                                     NUM_ENV_STEPS_SAMPLED_LIFETIME, TIMERS)

from rllib_empo.buffer import TransitionBuffer
from rllib_empo.config import EmpoConfig
from rllib_empo.learner import EMPO_KEY
from rllib_empo.schedule import NETWORKS
from rllib_empo import evaluation
from rllib_empo import runner_state  # ecosystem: EnvRunner snapshots in checkpoints


# Every scalar Empo logs into a train() result (README "Metrics" is generated from this and
# tests/test_docs.py checks it against a real result). <net> is each existing network.
METRICS = (
    ("Warmup/stage", "warm-up stage id 0-6 at the end of the iteration (skipped stages keep their ids)"),
    ("Warmup/stage_transition", "1.0 in an iteration in which the stage changed, else 0.0"),
    ("Warmup/effective_beta_r", "beta_r of the current step (0 in warm-up, ramped, then nominal)"),
    ("Warmup/is_warmup", "1.0 before the ramp starts (steps < E4)"),
    ("Warmup/is_rampup", "1.0 during the beta_r ramp"),
    ("Warmup/active_networks_mask", "bit i set when network i of (v_h_e, x_h, u_r, q_r, v_r) is trained"),
    ("Warmup/num_updates", "learner updates so far (the schedule's step)"),
    ("Warmup/num_buffer_clears", "replay-buffer clears so far"),
    ("Warmup/epsilon", "the robot's epsilon-exploration on the EnvRunners"),
    ("LearningRate/<net>", "learning rate of the last update"),
    ("Loss/<net>", "loss of the last update (iterations with an update, active networks)"),
    ("Prediction/<net>", "mean prediction of the last update's batch"),
    ("Target/<net>", "mean target of the last update's batch"),
    ("Buffer/size", "rows in the replay buffer"),
    ("Buffer/num_added", "rows ever added"),
    ("Buffer/bytes_per_row", "bytes one row (one env step's successor table) occupies"),
    ("Exact/<figure>", "with exact_eval_interval > 0: compare_to_exact figures (tv_pi_r_s0, ...) "
                       "of the latest evaluation, made every exact_eval_interval iterations; "
                       "Exact/training_iteration says which"),
)


class Empo(Algorithm):
    @classmethod
    def get_default_config(cls) -> EmpoConfig:
        return EmpoConfig()

    def setup(self, config) -> None:
        super().setup(config)
        self.schedule = self.config.schedule
        self.buffer = TransitionBuffer(self.config.replay_capacity)
        self._rng = np.random.default_rng(self.config.seed)
        self._empo = {"num_updates": 0, "stage": self.schedule.stage(0),
                      "last_sync": {n: 0 for n in NETWORKS}, "clears_done": [],
                      "num_buffer_clears": 0, "num_env_steps": 0}
        self._update_stats = {}              # loss/prediction/target of the last logged update
        self._exact = None                   # lazily solved reference (exact_eval_interval)
        self._analysis = None                # lazily built world / module for evaluation
        if self.config.verbose:
            t = 0
            print(f"[Warmup] Starting in stage {self.schedule.stage(t)}: "
                  f"{self.schedule.stage_name(self.schedule.stage(t))} "
                  f"(active networks: {set(self.schedule.active_networks(t))})")
        self._push_exploration()

    # ------------------------------------------------------------------ training step
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
                self._update_chunk(n, log=True)
                remaining -= n
                updated = True
        transitions += self._advance_stage()

        self.env_runner_group.sync_weights(from_worker_or_learner_group=self.learner_group,
                                           inference_only=True)
        self._push_exploration()
        self._log_metrics(transitions > 0, updated)
        # self.iteration counts the finished iterations: this one is number iteration + 1,
        # so the figures come with training_iteration k, 2k, ... (the last of a k*m-long run)
        if cfg.exact_eval_interval and (self.iteration + 1) % cfg.exact_eval_interval == 0:
            self._empo["exact"] = {**evaluation.exact_fidelity(self),
                                   "training_iteration": self.iteration + 1}
        self._log_exact_fidelity()

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

    def _update_info(self, t: int, last_sync: dict) -> dict:
        """The warm-up values of learner update number ``t`` (0-based); updates
        ``last_sync`` with the target copies it schedules."""
        sch = self.schedule
        sync = [n for n in sorted(sch.existing_networks) if t + 1 - last_sync[n]
                >= getattr(self.config, f"{n}_target_update_interval")]
        for n in sync:
            last_sync[n] = t + 1
        return {"active": sorted(sch.active_networks(t)), "beta_r": sch.effective_beta_r(t),
                "lrs": {n: sch.learning_rate(n, t) for n in sch.existing_networks},
                "sync": sync}

    def _update_once(self, log: bool = True) -> None:
        self._update_chunk(1, log)

    def _update_chunk(self, n: int, log: bool = True) -> None:
        """``n`` consecutive learner updates (within one stage) in one learner call: n
        minibatches of the train batch size, each with its own step's values."""
        st = self._empo
        t = st["num_updates"]
        steps = [self._update_info(t + i, st["last_sync"]) for i in range(n)]
        size = self.config.total_train_batch_size
        batch = self.buffer.sample(n * size, self._rng)
        result = self.learner_group.update(
            batch=MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(batch)}, env_steps=n * size),
            timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: st["num_env_steps"],
                       EMPO_KEY: {"steps": steps, "log": log}},
            minibatch_size=self.config.train_batch_size_per_learner, num_epochs=1,
            num_total_minibatches=n, shuffle_batch_per_epoch=False)
        self.metrics.aggregate(result, key=LEARNER_RESULTS)
        for res in result:
            for key, stat in res.get(DEFAULT_MODULE_ID, {}).items():
                if key.startswith(("loss_", "prediction_", "target_")):
                    self._update_stats[key] = float(stat.peek() if hasattr(stat, "peek") else stat)
        st["num_updates"] = t + n

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

    # ------------------------------------------------------------------ metrics
    def _log_metrics(self, transition: bool, updated: bool) -> None:
        st, sch, t = self._empo, self.schedule, self._empo["num_updates"]
        log = self.metrics.log_value
        for key, value in sch.as_dict(t).items():
            log(("Warmup", key), value, reduce="item")
        log(("Warmup", "stage_transition"), float(transition), reduce="item")
        log(("Warmup", "num_updates"), t, reduce="item")
        log(("Warmup", "num_buffer_clears"), st["num_buffer_clears"], reduce="item")
        log(("Warmup", "epsilon"), sch.epsilon_at(t), reduce="item")
        for n in sorted(sch.existing_networks):
            log(("LearningRate", n), sch.learning_rate(n, max(t - 1, 0)), reduce="item")
        log(("Buffer", "size"), len(self.buffer), reduce="item")
        log(("Buffer", "num_added"), self.buffer.num_added, reduce="item")
        log(("Buffer", "bytes_per_row"), self.buffer.bytes_per_row, reduce="item")
        groups = {"loss": "Loss", "prediction": "Prediction", "target": "Target"}
        for key, value in (self._update_stats if updated else {}).items():
            stat, net = key.split("_", 1)
            log((groups[stat], net), value, reduce="item")

    def _log_exact_fidelity(self) -> None:
        """Every result from the first evaluation on carries the latest one (a Tune metric
        must be in every result); checkpoints keep it with the counters."""
        for key, value in (self._empo.get("exact") or {}).items():
            self.metrics.log_value(("Exact", key), value, reduce="item")

    # ------------------------------------------------------------------ analysis API
    def robot_policy(self, states) -> np.ndarray:
        """pi_r at the nominal beta_r for raw world states: [N, A_r]."""
        return evaluation.robot_policy(self, states)

    def values(self, states) -> dict:
        """Learned q_r [N, A_r], pi_r, v_r [N], u_r [N], x_h [N, H] for raw world states."""
        return evaluation.values(self, states)

    # ------------------------------------------------------------------ checkpoints
    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict:
        state = super().get_state(components, not_components=not_components, **kwargs)
        if self._check_component("empo_counters", components, not_components):
            state["empo_counters"] = copy.deepcopy(self._empo)
            state["empo_rng"] = copy.deepcopy(self._rng.bit_generator.state)
        # --- ecosystem: EnvRunners' sampling state (rllib_empo.runner_state) ---
        if self._check_component("empo_env_runners", components, not_components):
            state["empo_env_runners"] = runner_state.capture_all(self)
        # --- end ecosystem ---
        if self.config.checkpoint_replay_buffer and self._check_component(
                "empo_replay_buffer", components, not_components):
            state["empo_replay_buffer"] = self.buffer.get_state()
        return state

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        if "empo_counters" in state:
            self._empo = copy.deepcopy(state["empo_counters"])
            self._rng.bit_generator.state = copy.deepcopy(state["empo_rng"])
        if "empo_replay_buffer" in state:
            self.buffer.set_state(state["empo_replay_buffer"])
        self._analysis = None
        self._push_exploration()       # plain module attributes are not in checkpoints
        # --- ecosystem: EnvRunners' sampling state; TensorBoard writers reopen ---
        if state.get("empo_env_runners"):
            runner_state.restore_all(self, state["empo_env_runners"])
        for callback in getattr(self, "callbacks", None) or ():
            if hasattr(callback, "on_empo_state_restored"):
                callback.on_empo_state_restored(algorithm=self)
        # --- end ecosystem ---
