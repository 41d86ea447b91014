"""Checkpoints: a run restored from a checkpoint taken in any stage continues exactly as the
original run does -- same stage, step, beta_r, learning rates, networks, targets, optimizer
states and clearing bookkeeping -- and its EnvRunners get the right beta_r at once.

Bit-identical continuation needs the replay buffer in the checkpoint
(``checkpoint_replay_buffer=True``) and the EnvRunners' sampling state, which ``Empo``
checkpoints itself (``rllib_empo.algorithm.runner_state``)."""
import copy

import numpy as np
import pytest
import torch

from conftest import assert_same_replay, small_config
from ray.rllib.core import DEFAULT_MODULE_ID

from rllib_empo import Empo


def learner_state(algo) -> dict:
    """Module weights (networks and targets) and optimizer states of the local Learner."""
    learner = algo.learner_group._learner
    weights = {k: v.detach().clone() for k, v in learner.module[DEFAULT_MODULE_ID].state_dict().items()}
    optims = {name: copy.deepcopy(opt.state_dict()) for name, opt in learner._named_optimizers.items()}
    return {"weights": weights, "optimizers": optims}


def assert_same_learner(a: dict, b: dict) -> None:
    assert a["weights"].keys() == b["weights"].keys()
    assert any(k.startswith("target_") for k in a["weights"])
    for k in a["weights"]:
        assert torch.equal(a["weights"][k], b["weights"][k]), k
    assert a["optimizers"].keys() == b["optimizers"].keys()
    for name in a["optimizers"]:
        sa, sb = a["optimizers"][name], b["optimizers"][name]
        assert [g["lr"] for g in sa["param_groups"]] == [g["lr"] for g in sb["param_groups"]], name
        assert sa["state"].keys() == sb["state"].keys(), name
        for pid in sa["state"]:
            for key, value in sa["state"][pid].items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb["state"][pid][key])), (name, key)


def runner_beta(algo) -> list:
    return algo.env_runner_group.foreach_env_runner(
        lambda er: er.module.beta_r if er.module is not None else None, local_env_runner=True)


def config(**kw):
    # warm-up: E0=4, E1=8, E3=12 (u_r, v_r direct), ramp 12..28; clears at 12 and 28;
    # target copies every few updates so that their bookkeeping matters.
    defaults = dict(beta_r_rampup_steps=16, checkpoint_replay_buffer=True,
                    q_r_target_update_interval=3, v_h_e_target_update_interval=5,
                    x_h_target_update_interval=7, use_sqrt_lr_decay=True)
    defaults.update(kw)
    return small_config(**defaults)


def test_resume_mid_ramp_is_bit_identical(ray_session, tmp_path):
    algo = config().build_algo()
    for _ in range(4):
        algo.train()
    t = algo._empo["num_updates"]
    assert algo.schedule.is_in_rampup(t)                    # mid-ramp
    ckpt = algo.save_to_path(tmp_path / "ckpt")
    at_ckpt = {"counters": copy.deepcopy(algo._empo), "learner": learner_state(algo),
               "iteration": algo.iteration}
    for _ in range(4):                                       # crosses the clear at E5 = 28
        algo.train()
    original = {"counters": copy.deepcopy(algo._empo), "learner": learner_state(algo),
                "buffer": algo.replay.get_state()}
    algo.stop()

    restored = Empo.from_checkpoint(ckpt)
    # right after the restore: same stage, step, bookkeeping, weights, optimizers
    assert restored._empo == at_ckpt["counters"]
    assert restored.iteration == at_ckpt["iteration"]
    assert_same_learner(learner_state(restored), at_ckpt["learner"])
    assert restored.schedule.stage(restored._empo["num_updates"]) == 5
    # the EnvRunner got the ramp's beta_r immediately, before any train()
    assert runner_beta(restored) == [pytest.approx(restored.schedule.effective_beta_r(t))]
    assert 0 < runner_beta(restored)[0] < restored.config.beta_r

    for _ in range(4):
        restored.train()
    assert restored._empo == original["counters"]           # no clear repeated or skipped
    assert restored._empo["clears_done"] == list(restored.schedule.clear_points)
    assert_same_learner(learner_state(restored), original["learner"])
    assert_same_replay(restored.replay.get_state(), original["buffer"])
    restored.stop()


def test_checkpoint_in_every_stage_resumes_there(ray_session, tmp_path):
    """A checkpoint after every iteration (stages 0, 1, 3, 5, 6 and both clearing points):
    restore_from_path into a second algorithm, check stage, step, beta_r and learning rates,
    then one iteration must reproduce the original's next iteration exactly."""
    algo = config(beta_r_rampup_steps=8).build_algo()
    ckpts, before, after = [], [], []
    for i in range(8):
        ckpts.append(algo.save_to_path(tmp_path / f"c{i}"))
        before.append(copy.deepcopy(algo._empo))
        result = algo.train()
        after.append({"counters": copy.deepcopy(algo._empo), "learner": learner_state(algo),
                      "lrs": dict(result["LearningRate"]), "stage": result["Warmup"]["stage"]})
    assert {c["stage"] for c in before} == {0, 1, 3, 5, 6}
    assert any(c["num_updates"] in algo.schedule.clear_points for c in before)
    algo.stop()

    other = config(beta_r_rampup_steps=8).build_algo()
    for i, path in enumerate(ckpts):
        other.restore_from_path(path)
        t = other._empo["num_updates"]
        assert other._empo == before[i]
        assert other._empo["stage"] == other.schedule.stage(t)
        assert runner_beta(other) == [pytest.approx(other.schedule.effective_beta_r(t))]
        result = other.train()
        assert other._empo == after[i]["counters"], f"iteration {i}"
        assert result["LearningRate"] == pytest.approx(after[i]["lrs"])
        assert result["Warmup"]["stage"] == after[i]["stage"]
        assert_same_learner(learner_state(other), after[i]["learner"])
    assert other._empo["num_buffer_clears"] == 2
    other.stop()


def test_replay_buffer_only_on_request(ray_session, tmp_path):
    algo = config(checkpoint_replay_buffer=False).build_algo()
    for _ in range(2):
        algo.train()
    assert len(algo.replay) > 0
    ckpt = algo.save_to_path(tmp_path / "ckpt")
    restored = Empo.from_checkpoint(ckpt)
    assert len(restored.replay) == 0                         # not in the checkpoint
    assert restored._empo == algo._empo
    t = restored._empo["num_updates"]
    restored.train()                                         # refills, then learns again
    assert restored._empo["num_updates"] > t
    algo.stop()
    restored.stop()


def test_remote_env_runner_gets_beta_and_continues_identically(ray_session, tmp_path):
    """One remote EnvRunner: its sampling state travels through the checkpoint too."""
    cfg = config().env_runners(num_env_runners=1)
    algo = cfg.build_algo()
    for _ in range(4):
        algo.train()
    t = algo._empo["num_updates"]
    ckpt = algo.save_to_path(tmp_path / "ckpt")
    for _ in range(2):
        algo.train()
    original = learner_state(algo)
    algo.stop()

    restored = Empo.from_checkpoint(ckpt)
    remote = restored.env_runner_group.foreach_env_runner(lambda er: er.module.beta_r,
                                                          local_env_runner=False)
    assert remote == [pytest.approx(restored.schedule.effective_beta_r(t))]
    for _ in range(2):
        restored.train()
    assert_same_learner(learner_state(restored), original)
    restored.stop()
