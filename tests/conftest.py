"""Shared test set-up: one Ray instance per session, torch on one thread."""
import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_session():
    """Ray started once for every test that needs it (2 CPUs, no dashboard)."""
    import ray
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield ray
    ray.shutdown()


def small_config(world: str = "rllib_empo/RockGate-v0", **training):
    """A fast EmpoConfig for tests: local sampling with one env (20 rows an iteration), tiny
    networks, short warm-up."""
    from rllib_empo import EmpoConfig
    defaults = dict(warmup_v_h_e_steps=4, warmup_x_h_steps=4, warmup_q_r_steps=4,
                    beta_r_rampup_steps=4, updates_per_iteration=4, hidden_sizes=(16, 16),
                    replay_capacity=2000)
    defaults.update(training)
    return (EmpoConfig().environment(world)
            .env_runners(num_env_runners=0, num_envs_per_env_runner=1, rollout_fragment_length=20)
            .training(train_batch_size_per_learner=16, **defaults)
            .debugging(seed=0)
            .fault_tolerance(restart_failed_env_runners=False))


def replay_batch(algo):
    """Every row of ``algo``'s replay memory, expanded as the learner sees it (a ``Batch``)."""
    import torch
    from rllib_empo.algorithm.batch import expand
    replay, spec = algo.replay, algo.config.table_spec()
    rows = replay.rows.oldest_first()
    return expand(replay, torch.from_numpy(rows["table"]), torch.from_numpy(rows["weight"]),
                  spec.num_actions, spec.num_robot_actions)


def assert_same_replay(a: dict, b: dict) -> None:
    """Two ``ReplayStore.get_state()``: the same rows and the same entries in the same slots
    (the memories' names, ``uid``, may differ)."""
    import numpy as np
    assert a["mode"] == b["mode"]
    assert a["rows"]["num_added"] == b["rows"]["num_added"] and a["rows"]["pos"] == b["rows"]["pos"]
    for k, col in (a["rows"]["columns"] or {}).items():
        np.testing.assert_array_equal(col, b["rows"]["columns"][k], err_msg=f"rows {k}")
    for store in ("goals", "states", "tables"):
        for k in ("slots", "key", "refs", "gen"):
            np.testing.assert_array_equal(a[store][k], b[store][k], err_msg=f"{store} {k}")
        for k, col in a[store]["cols"].items():
            np.testing.assert_array_equal(col, b[store]["cols"][k], err_msg=f"{store} {k}")


def acting_q_r(algo) -> dict:
    """The local Learner's q_r that the EnvRunners act with, keyed as the runners' "q_r.*":
    its running average when ema_decay > 0 (EmpoRLModule.get_state), else q_r itself."""
    from ray.rllib.core import DEFAULT_MODULE_ID
    module = algo.learner_group._learner.module[DEFAULT_MODULE_ID].unwrapped()
    prefix = "average_q_r." if module.has_averages() else "q_r."
    return {"q_r." + k[len(prefix):]: v.detach().clone()
            for k, v in module.state_dict().items() if k.startswith(prefix)}
