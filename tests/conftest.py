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
    """A fast EmpoConfig for tests: local sampling, tiny networks, short warm-up."""
    from rllib_empo import EmpoConfig
    defaults = dict(warmup_v_h_e_steps=4, warmup_x_h_steps=4, warmup_q_r_steps=4,
                    beta_r_rampup_steps=4, updates_per_iteration=4, hidden_sizes=(16, 16),
                    replay_capacity=2000)
    defaults.update(training)
    return (EmpoConfig().environment(world)
            .env_runners(num_env_runners=0, rollout_fragment_length=20)
            .training(train_batch_size_per_learner=16, **defaults)
            .debugging(seed=0)
            .fault_tolerance(restart_failed_env_runners=False))
