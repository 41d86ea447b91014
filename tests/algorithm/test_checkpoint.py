"""Checkpoints: a run restored from a checkpoint taken in any stage continues exactly as the
original run does -- same stage, step, beta_r, learning rates, networks, targets, optimizer
states and clearing bookkeeping -- and its EnvRunners get the right beta_r at once.

Bit-identical continuation needs the replay buffer in the checkpoint
(``checkpoint_replay_buffer=True``) and the EnvRunners' sampling state, which ``Empo``
checkpoints itself (``rllib_empo.algorithm.runner_state``)."""
import copy
import re

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


@pytest.mark.parametrize("frontier", [False, True])
def test_resume_mid_ramp_is_bit_identical(ray_session, tmp_path, frontier):
    # with exploring_starts_frontier the envs' frontiers travel in the checkpoint too
    algo = config(exploring_starts=0.5, exploring_starts_frontier=frontier).build_algo()
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


# ====================================================== atomic saves, validated restores
import json  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from rllib_empo.algorithm import checkpoints  # noqa: E402
from rllib_empo.algorithm.checkpoints import MARKER, CheckpointError  # noqa: E402


def whole_state(algo) -> dict:
    """Everything a restore may change: learner (weights, targets, optimizers), counters,
    batch generator, iteration and replay buffer."""
    return {"learner": learner_state(algo), "counters": copy.deepcopy(algo._empo),
            "rng": copy.deepcopy(algo._rng.bit_generator.state), "iteration": algo.iteration,
            "replay": copy.deepcopy(algo.replay.get_state())}


def assert_same_whole(a: dict, b: dict) -> None:
    assert_same_learner(a["learner"], b["learner"])
    assert (a["counters"], a["rng"], a["iteration"]) == (b["counters"], b["rng"], b["iteration"])
    ra, rb = a["replay"], b["replay"]
    assert ra["rows"]["num_added"] == rb["rows"]["num_added"]
    for k in ra["rows"]["columns"] or {}:
        np.testing.assert_array_equal(ra["rows"]["columns"][k], rb["rows"]["columns"][k])
    for store in ("goals", "states", "tables"):
        np.testing.assert_array_equal(ra[store]["key"], rb[store]["key"])
        for c, col in ra[store]["cols"].items():
            np.testing.assert_array_equal(col, rb[store]["cols"][c])


def trained(n=2, **kw):
    algo = config(**kw).build_algo()
    for _ in range(n):
        algo.train()
    return algo


class Killed(BaseException):
    """Stands for a signal that ends the process: no ``except Exception`` catches it."""


def test_a_save_killed_half_way_leaves_the_previous_checkpoint_intact(ray_session, tmp_path, monkeypatch):
    """RLlib writes the learner first and the counters last: a save over an older checkpoint
    that died in between restored the new weights with the old counters and buffer."""
    algo = trained(2)
    path = algo.save_to_path(tmp_path / "ckpt")
    at_first_save = whole_state(algo)
    for _ in range(3):
        algo.train()
    monkeypatch.setattr(algo.env_runner, "save_to_path",
                        lambda *a, **k: (_ for _ in ()).throw(Killed()))   # after learner_group
    with pytest.raises(Killed):
        algo.save_to_path(path)
    algo.stop()
    restored = Empo.from_checkpoint(path)
    try:
        assert_same_whole(whole_state(restored), at_first_save)
    finally:
        restored.stop()


_KILL_SCRIPT = r"""
import json, os, signal, sys
sys.path[:0] = [sys.argv[2], os.path.join(sys.argv[2], "tests")]
import ray, torch
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
from conftest import small_config
algo = small_config(checkpoint_replay_buffer=True).build_algo()
for _ in range(2):
    algo.train()
algo.save_to_path(sys.argv[1])
json.dump({"counters": algo._empo, "iteration": algo.iteration,
           "q_r": algo.learner_group._learner.module["default_policy"].state_dict()["q_r.0.bias"].tolist()},
          open(sys.argv[1] + ".expected.json", "w"))
for _ in range(3):
    algo.train()
algo.env_runner.save_to_path = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
algo.save_to_path(sys.argv[1])
"""


@pytest.mark.slow
def test_a_save_killed_by_sigkill_leaves_the_previous_checkpoint_intact(ray_session, tmp_path):
    path = str(tmp_path / "ckpt")
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, path, root], capture_output=True,
                          timeout=240, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert list(tmp_path.glob(".ckpt.tmp-*")), "the killed save left its temporary directory"
    expected = json.load(open(path + ".expected.json"))
    restored = Empo.from_checkpoint(path)
    try:
        assert restored._empo == expected["counters"] and restored.iteration == expected["iteration"]
        bias = learner_state(restored)["weights"]["q_r.0.bias"]
        assert bias.tolist() == pytest.approx(expected["q_r"], abs=0)
        restored.save_to_path(path)                   # a later save removes the leftovers
        assert not list(tmp_path.glob(".ckpt.*-*"))
    finally:
        restored.stop()


def test_a_save_killed_between_the_two_renames_is_an_error_naming_both_copies(
        ray_session, tmp_path, monkeypatch):
    """Where the atomic exchange is missing, the swap is two renames; a kill between them
    leaves no checkpoint under the name, and restoring says where the complete copies are."""
    algo = trained(1)
    path = algo.save_to_path(tmp_path / "ckpt")
    monkeypatch.setattr(checkpoints, "_exchange", lambda a, b: False)
    real_rename, calls = os.rename, []

    def rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:                         # the new copy into place
            raise Killed()
        real_rename(src, dst)

    monkeypatch.setattr(checkpoints.os, "rename", rename)
    with pytest.raises(Killed):
        algo.save_to_path(path)
    monkeypatch.undo()
    algo.stop()
    with pytest.raises(CheckpointError, match=rf"checkpoint directory {re.escape(path)} does not exist\. "
                                              r"A save of it was interrupted .*\.ckpt\.old-.*\.ckpt\.tmp-"):
        Empo.from_checkpoint(path)


def test_saving_over_a_checkpoint_replaces_it_whole(ray_session, tmp_path):
    algo = trained(1)
    path = algo.save_to_path(tmp_path / "ckpt")
    algo.train()
    assert algo.save_to_path(path) == path
    after = whole_state(algo)
    assert (Path(path) / MARKER).is_file() and not list(tmp_path.glob(".ckpt.*"))
    algo.stop()
    restored = Empo.from_checkpoint(path)
    try:
        assert_same_whole(whole_state(restored), after)
    finally:
        restored.stop()


def test_a_save_does_not_replace_a_directory_holding_other_files(ray_session, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "progress.jsonl").write_text("{}\n")
    algo = trained(1)
    try:
        with pytest.raises(CheckpointError, match=r"holds entries that are not part of a checkpoint "
                                                  r"\(progress\.jsonl\)"):
            algo.save_to_path(run)
        assert (run / "progress.jsonl").read_text() == "{}\n"
    finally:
        algo.stop()


@pytest.fixture
def two_algos(ray_session, tmp_path):
    """A checkpoint of one run, and a second algorithm in another state to restore it into."""
    first = trained(2)
    path = first.save_to_path(tmp_path / "ckpt")
    first.stop()
    other = trained(3)
    yield path, other
    other.stop()


def test_an_incomplete_checkpoint_is_refused_naming_the_directory(two_algos):
    path, other = two_algos
    os.remove(Path(path) / MARKER)
    before = whole_state(other)
    for restore in (Empo.from_checkpoint, other.restore_from_path):
        with pytest.raises(CheckpointError, match=rf"{re.escape(path)} is not a complete EMPO "
                                                  rf"checkpoint: it has no {MARKER}"):
            restore(path)
    assert_same_whole(whole_state(other), before)
    checkpoints.mark_complete(path)                    # adopt it: its save did finish
    other.restore_from_path(path)


@pytest.mark.parametrize("damage", ["truncated", "flipped_byte", "unreadable"])
def test_a_damaged_checkpoint_is_refused_and_the_algorithm_is_unchanged(two_algos, damage):
    """A truncated state file used to leave the checkpoint's weights beside the old counters."""
    path, other = two_algos
    state_file = Path(path) / "algorithm_state.pkl"
    data = state_file.read_bytes()
    if damage == "truncated":
        state_file.write_bytes(data[: len(data) // 2])
        pattern = r"algorithm_state\.pkl has \d+ bytes, the save wrote \d+"
    elif damage == "flipped_byte":
        state_file.write_bytes(data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
        pattern = r"algorithm_state\.pkl differs from what the save wrote \(CRC-32 mismatch\)"
    else:
        state_file.write_bytes(data[: len(data) // 2])
        checkpoints.mark_complete(path)                # the marker vouches for a bad file
        pattern = r"cannot read .*algorithm_state\.pkl: UnpicklingError|cannot read .*EOFError"
    before = whole_state(other)
    with pytest.raises(CheckpointError, match=pattern):
        other.restore_from_path(path)
    assert_same_whole(whole_state(other), before)


def test_a_checkpoint_of_other_networks_is_refused_before_anything_changes(ray_session, tmp_path):
    """A network-size mismatch used to raise only after 6 of 38 tensors were overwritten."""
    small = trained(1, hidden_sizes=(8, 8))
    path = small.save_to_path(tmp_path / "ckpt")
    small.stop()
    other = trained(2)
    try:
        before = whole_state(other)
        with pytest.raises(CheckpointError, match=r"does not fit this algorithm, which is left as it "
                                                  r"was:(.|\n)*networks\['q_r'\]: checkpoint \[8, 8\], "
                                                  r"this algorithm \[16, 16\](.|\n)*q_r\.0\.weight has "
                                                  r"shape \(8, 57\) in the checkpoint, \(16, 57\) here(.|\n)*and \d+ more tensors of other shapes"):
            other.restore_from_path(path)
        assert_same_whole(whole_state(other), before)
    finally:
        other.stop()


def test_a_checkpoint_of_another_world_is_refused(ray_session, tmp_path):
    rock = trained(1)
    path = rock.save_to_path(tmp_path / "ckpt")
    rock.stop()
    corridor = config().environment("rllib_empo/Corridor-v0").build_algo()
    try:
        with pytest.raises(CheckpointError, match=r"world: checkpoint 'rock_gate', this algorithm "
                                                  r"'corridor'"):
            corridor.restore_from_path(path)
    finally:
        corridor.stop()


def test_non_finite_weights_in_a_checkpoint_are_refused(two_algos):
    path, other = two_algos
    module_file = Path(path) / "learner_group/learner/rl_module/default_policy/module_state.pkl"
    weights = pickle.loads(module_file.read_bytes())
    weights["q_r.0.weight"][0, 0] = np.nan
    module_file.write_bytes(pickle.dumps(weights))
    checkpoints.mark_complete(path)
    before = whole_state(other)
    with pytest.raises(CheckpointError, match=r"non-finite weights in q_r\.0\.weight"):
        other.restore_from_path(path)
    assert_same_whole(whole_state(other), before)


def test_a_failure_while_applying_a_checkpoint_rolls_the_algorithm_back(two_algos, monkeypatch):
    """Whatever fails after validation (here the metrics, which RLlib restores after the
    networks) puts back the state the algorithm had."""
    path, other = two_algos
    before = whole_state(other)
    real, calls = other.metrics.set_state, []

    def failing(state):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("disk on fire")
        return real(state)

    monkeypatch.setattr(other.metrics, "set_state", failing)
    with pytest.raises(CheckpointError, match=r"restoring failed \(RuntimeError: disk on fire\); the "
                                              r"algorithm was rolled back"):
        other.restore_from_path(path)
    assert len(calls) == 2                                   # the rollback restored them too
    assert_same_whole(whole_state(other), before)
    other.train()                                            # and it trains on
