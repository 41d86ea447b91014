"""Determinism: what a fixed seed reproduces, and what it does not.

Reproducible (bit for bit):

- ``num_env_runners=0`` and a fixed ``.debugging(seed=...)``: two runs give identical network
  and target weights, Adam states, replay rows and metrics (``Warmup/*``, ``Loss/*``,
  ``Prediction/*``, ``Target/*``, ``LearningRate/*``, ``Buffer/*``) -- in one process (tested
  here) and in separate processes with different ``PYTHONHASHSEED`` (checked by hand for
  rock_gate and corridor: world states are tuples of ints, and nothing iterates over a set or
  dict of goals or states in an order that depends on hashing). RLlib seeds torch when it
  builds the Learner and the EnvRunner, every sub-env with ``seed`` and its index, and ``Empo``
  seeds its batch-sampling generator with ``seed``.
- Remote EnvRunners *without faults* (slow test below): each runner seeds its envs and its
  torch generator from ``seed`` and its ``worker_index``, samples a fixed
  ``rollout_fragment_length``, and ``Empo._sample`` concatenates the rows in runner order
  (``ray.wait`` keeps the order of its input), so the buffer and everything after it are the
  same. A run restored from a checkpoint continues bit-identically (tests/test_checkpoint.py).

Not reproducible:

- A run in which an EnvRunner is lost and restarted (fault tolerance): the rows it did not
  deliver are missing, the restart takes wall-clock time (how many iterations go by without it
  depends on the machine), and the restarted runner starts a fresh env and generator.
- ``sample_timeout_s`` expiring on a slow runner (partial fragments), for the same reason.
- A different ``num_env_runners``, ``num_envs_per_env_runner`` or ``rollout_fragment_length``:
  the same distribution of rows, split into different random streams.
- Remote or GPU Learners (not covered here), and a different torch thread count between runs,
  may change float rounding in reductions.
- After a checkpoint restore on worlds with more goals per human than
  ``max_goals_per_human``: goal subsets are redrawn on the first visit of a state, which the
  restored env's empty caches redo (see rllib_empo.algorithm.runner_state).
- Timers and throughput metrics, of course.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import assert_same_replay, small_config
from ray.rllib.core import DEFAULT_MODULE_ID

DETERMINISTIC_GROUPS = ("Warmup", "Loss", "Prediction", "Target", "LearningRate", "Buffer")


def _run(seed: int, iterations: int = 8, **env_runners):
    cfg = small_config(exploring_starts=0.3, q_r_target_update_interval=3,
                       v_h_e_target_update_interval=5).debugging(seed=seed)
    if env_runners:
        cfg = cfg.env_runners(**env_runners)
    algo = cfg.build_algo()
    try:
        metrics = []
        for _ in range(iterations):
            r = algo.train()
            metrics.append({g: dict(r[g]) for g in DETERMINISTIC_GROUPS if g in r})
            metrics[-1]["env_steps"] = r["env_runners"].get("num_env_steps_sampled")
        learner = algo.learner_group._learner
        weights = {k: v.detach().clone()
                   for k, v in learner.module[DEFAULT_MODULE_ID].state_dict().items()}
        adam = {name: opt.state_dict() for name, opt in learner._named_optimizers.items()}
        return {"metrics": metrics, "weights": weights, "adam": adam,
                "buffer": algo.replay.get_state(), "counters": dict(algo._empo)}
    finally:
        algo.stop()


def _assert_identical(a: dict, b: dict) -> None:
    assert a["metrics"] == b["metrics"]
    assert a["counters"] == b["counters"]
    assert a["weights"].keys() == b["weights"].keys()
    for k in a["weights"]:
        assert torch.equal(a["weights"][k], b["weights"][k]), k
    for name in a["adam"]:
        for pid, state in a["adam"][name]["state"].items():
            for key, value in state.items():
                assert torch.equal(torch.as_tensor(value),
                                   torch.as_tensor(b["adam"][name]["state"][pid][key])), (name, key)
    assert_same_replay(a["buffer"], b["buffer"])


def test_same_seed_same_run_without_remote_runners(ray_session):
    a, b = _run(seed=3), _run(seed=3)
    # the run went through the warm-up, a clear and the ramp: a non-trivial comparison
    assert a["counters"]["num_buffer_clears"] >= 1 and len(a["metrics"][-1]["Loss"]) >= 3
    _assert_identical(a, b)


def test_another_seed_gives_another_run(ray_session):
    a, c = _run(seed=3, iterations=2), _run(seed=4, iterations=2)
    assert a["metrics"] != c["metrics"]
    assert any(not torch.equal(a["weights"][k], c["weights"][k]) for k in a["weights"])


@pytest.mark.slow
def test_same_seed_same_run_with_two_remote_runners(ray_session):
    a = _run(seed=3, num_env_runners=2, num_cpus_per_env_runner=0.5)
    b = _run(seed=3, num_env_runners=2, num_cpus_per_env_runner=0.5)
    _assert_identical(a, b)
