"""Faults: lost EnvRunners, checkpoints at stage boundaries, and world errors on remote runners.

Findings (RLlib 2.60; ``Empo._sample`` samples through ``faults.RunnerHealth``):

- With ``.fault_tolerance(restart_failed_env_runners=True)`` an EnvRunner process that dies --
  killed between iterations, or *during* the ``sample_rows`` call (tested) -- is marked
  unhealthy by RLlib's actor manager, and the iteration goes on with the healthy runners'
  rows only. Ray restarts the actor process; ``Algorithm.restore_env_runners`` (run by
  ``Algorithm.step`` before every ``training_step``) pings it, marks it healthy and syncs the
  local EnvRunner's state (connectors and q_r weights) into it. Empo's counters never depend
  on how many rows arrived, so the warm-up schedule is unaffected.
- ``Empo.restore_env_runners`` then reseeds the restarted runner (seed, index, restart count:
  it would otherwise replay its first fragments) and pushes beta_r and epsilon, which are
  plain module attributes and not part of the state RLlib syncs.
- A runner that dies ``max_env_runner_failures`` times in a row stops training with an
  ``EnvRunnerError``. Without restarts but with ``ignore_env_runner_failures=True`` a lost
  runner is logged and counted in ``Runners/num_lost``; with neither, the first loss raises
  an ``EnvRunnerError`` that names the runner and RLlib's error.
- A *world* error on a remote runner is not a lost process: RLlib's actor ``apply()`` would
  sleep 60 s and ``sys.exit(1)`` on it, so ``EmpoEnvRunner.sample_rows`` returns the error in
  place of the rows and ``Empo._sample`` raises it on the driver with the world's message,
  in the same iteration, whatever the fault tolerance settings.
"""
from __future__ import annotations

import copy
import os
import signal
import time

import pytest
import torch

from _faulty_worlds import FaultyWorld
from conftest import acting_q_r, small_config
from ray.rllib.core import DEFAULT_MODULE_ID

from rllib_empo import Empo
from rllib_empo.worlds.protocol import WorldProtocolError

UPDATES = 4
RESTART_TIMEOUT_S = 90


def _snapshot(algo) -> dict:
    learner = algo.learner_group._learner
    return {k: v.detach().clone()
            for k, v in learner.module[DEFAULT_MODULE_ID].state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def killed_run(ray_session):
    """Two remote EnvRunners with fault tolerance; one is SIGKILLed while Empo samples from
    it; training goes on until it is back and both have sampled twice more."""
    cfg = (small_config(warmup_v_h_e_steps=0, warmup_x_h_steps=0, warmup_q_r_steps=0,
                        beta_r_rampup_steps=8, updates_per_iteration=UPDATES,
                        epsilon=[(0, 0.5), (1000, 0.05)])
           .env_runners(num_env_runners=2, num_cpus_per_env_runner=0.5)
           .fault_tolerance(restart_failed_env_runners=True))
    algo = cfg.build_algo()
    group = algo.env_runner_group
    log = {"iterations": [], "restored": [], "schedule": algo.schedule}

    def train(phase):
        r = algo.train()
        log["iterations"].append({
            "phase": phase, "num_updates": r["Warmup"]["num_updates"],
            "stage": r["Warmup"]["stage"], "beta_r": r["Warmup"]["effective_beta_r"],
            "clears": r["Warmup"]["num_buffer_clears"], "num_added": r["Buffer"]["num_added"],
            "healthy": group.num_healthy_remote_env_runners()})
        return r

    real_restore = algo.restore_env_runners

    def restore_and_look(env_runner_group):
        """Algorithm.step calls this before every training_step: look at the restored
        runners as they will sample."""
        restored = real_restore(env_runner_group)
        if restored and env_runner_group is group:
            t = algo._empo["num_updates"]
            seen = group.foreach_env_runner(
                lambda er: (er.worker_index, er.module.beta_r, er.module.epsilon,
                            {k: v.clone() for k, v in er.module.state_dict().items()},
                            er._seed, er._needs_initial_reset, torch.rand(4)),
                remote_worker_ids=restored, local_env_runner=False)
            learner_q_r = acting_q_r(algo)
            log["restored"] += [{"t": t, "index": i, "beta_r": b, "epsilon": e,
                                 "q_r_synced": all(torch.equal(w[k], learner_q_r[k])
                                                   for k in learner_q_r),
                                 "seed": seed, "fresh_reset": reset, "torch_draw": draw}
                                for i, b, e, w, seed, reset, draw in seen]
        return restored

    algo.restore_env_runners = restore_and_look
    try:
        for _ in range(3):                          # t = 12: past the clear at E5 = 8, stage 6
            train("before")
        ids = group.healthy_env_runner_ids()
        log["pids_before"] = dict(zip(ids, group.foreach_env_runner(
            lambda er: os.getpid(), local_env_runner=False)))
        log["seeds_before"] = dict(zip(ids, group.foreach_env_runner(
            lambda er: er._seed, local_env_runner=False)))
        victim = log["victim"] = ids[0]
        # The runner's process is SIGKILLed in the middle of Empo._sample's foreach_env_runner
        # call (a lambda, not a module-level function: it travels by value to the worker).
        group.foreach_env_runner(
            lambda er: setattr(er, "sample_rows", lambda **kw: os.kill(os.getpid(), signal.SIGKILL)),
            remote_worker_ids=[victim], local_env_runner=False)
        train("kill")
        deadline, after = time.monotonic() + RESTART_TIMEOUT_S, 0
        while after < 2:
            if time.monotonic() > deadline:
                pytest.fail(f"EnvRunners not back after {RESTART_TIMEOUT_S} s: {log}")
            train("after" if group.num_healthy_remote_env_runners() == 2 else "outage")
            after += log["iterations"][-1]["phase"] == "after"
        log["pids_after"] = dict(zip(group.healthy_env_runner_ids(), group.foreach_env_runner(
            lambda er: os.getpid(), local_env_runner=False)))
        log["restarts"] = group.num_remote_worker_restarts()
        log["final"] = copy.deepcopy(algo._empo)
        yield log
    finally:
        algo.stop()


def test_training_continues_and_the_schedule_is_unaffected(killed_run):
    its, sch = killed_run["iterations"], killed_run["schedule"]
    # every train() did exactly UPDATES learner updates, outage included
    assert [it["num_updates"] for it in its] == [UPDATES * (i + 1) for i in range(len(its))]
    for it in its:
        assert it["stage"] == sch.stage(it["num_updates"])
        assert it["beta_r"] == pytest.approx(sch.effective_beta_r(it["num_updates"]))
        assert it["clears"] == int(it["num_updates"] >= 8)   # the clear at E5 = 8, never again
    assert killed_run["final"]["clears_done"] == list(sch.clear_points) == [8]


def test_killed_env_runner_is_restarted_and_samples_again(killed_run):
    its, victim = killed_run["iterations"], killed_run["victim"]
    kill = next(i for i, it in enumerate(its) if it["phase"] == "kill")
    assert its[kill]["healthy"] == 1
    # while it is down, the healthy runner's rows keep coming
    for prev, it in zip(its[kill - 1:], its[kill:]):
        if it["phase"] in ("kill", "outage") and it["healthy"] == 1:
            assert it["num_added"] - prev["num_added"] == 20
    assert killed_run["restarts"] >= 1
    before, after = killed_run["pids_before"], killed_run["pids_after"]
    assert sorted(after) == sorted(before)                          # same runner indices ...
    assert after[victim] != before[victim]                          # ... in a new process
    assert all(after[i] == before[i] for i in before if i != victim)
    last = [it for it in its if it["phase"] == "after"]
    assert len(last) >= 2
    for prev, it in zip(its, its[1:]):
        if it["phase"] == "after" and prev["phase"] == "after":
            assert it["num_added"] - prev["num_added"] == 2 * 20    # both runners sample again
    assert [r["index"] for r in killed_run["restored"]] == [victim]
    assert all(r["q_r_synced"] for r in killed_run["restored"])     # current weights at once


def test_restarted_env_runner_draws_a_fresh_random_stream(killed_run):
    """Ray restarts a lost EnvRunner with its original config, so it would re-seed exactly as
    at the start and replay its first fragments (duplicate rows in the buffer). Empo reseeds
    it from the seed, its index and its restart count, before it samples again: its envs
    are reset with the new seed at the next sample() and its torch generator (robot actions)
    is reseeded at once."""
    from rllib_empo.algorithm.faults import restart_seed
    victim = killed_run["victim"]
    [r] = killed_run["restored"]
    assert killed_run["seeds_before"][victim] == 0 + victim     # RLlib: seed + worker index
    assert r["seed"] == restart_seed(0, victim, 1) != killed_run["seeds_before"][victim]
    assert r["fresh_reset"]
    torch.manual_seed(0 + victim)                               # what the replay would draw
    assert not torch.equal(r["torch_draw"], torch.rand(4))
    torch.manual_seed(r["seed"])
    assert torch.equal(r["torch_draw"], torch.rand(4))


def test_restarted_env_runner_gets_the_current_exploration_at_once(killed_run):
    sch = killed_run["schedule"]
    assert killed_run["restored"]
    for r in killed_run["restored"]:
        assert r["beta_r"] == pytest.approx(sch.effective_beta_r(r["t"]))
        assert r["epsilon"] == pytest.approx(sch.epsilon_at(r["t"]))


# ------------------------------------------------- checkpoints at stage boundaries
def _boundary_config(**kw):
    # E0 = 4, E1 = 8, E3 = 12 (= E4, the ramp starts: clear), E5 = 16 (clear)
    return small_config(updates_per_iteration=UPDATES, q_r_target_update_interval=3,
                        v_h_e_target_update_interval=5, **kw)


def test_checkpoint_exactly_at_a_clearing_point_continues_identically(ray_session, tmp_path):
    """The iteration that reaches E4 = 12 clears the buffer on its way out, so a checkpoint
    taken right then needs no buffer: the restored run repeats no clear, skips none, and is
    bit-identical to the original."""
    algo = _boundary_config(checkpoint_replay_buffer=False).build_algo()
    while algo._empo["num_updates"] < 12:
        algo.train()
    assert algo._empo["num_updates"] == 12 and 12 in algo.schedule.clear_points
    assert algo._empo["clears_done"] == [12] and len(algo.replay) == 0
    ckpt = algo.save_to_path(tmp_path / "at_clear")
    for _ in range(4):
        algo.train()
    original = {"counters": copy.deepcopy(algo._empo), "weights": _snapshot(algo)}
    algo.stop()

    restored = Empo.from_checkpoint(ckpt)
    try:
        assert restored._empo["clears_done"] == [12] and restored._empo["num_buffer_clears"] == 1
        for _ in range(4):
            restored.train()
        assert restored._empo == original["counters"]
        assert restored._empo["clears_done"] == [12, 16]
        assert _same(_snapshot(restored), original["weights"])
    finally:
        restored.stop()


@pytest.mark.parametrize("with_buffer", [True, False], ids=["with_buffer", "without_buffer"])
def test_checkpoint_while_learning_is_paused_after_a_clear(ray_session, tmp_path, with_buffer):
    """After the clear at 12 learning waits for learning_starts = 50 rows (20 per iteration).
    A checkpoint taken during the pause: with the buffer it continues identically; without it,
    the restored run refills from zero (one more paused iteration) but never clears at 12 again,
    and clears exactly once at 16."""
    algo = _boundary_config(learning_starts=50, checkpoint_replay_buffer=with_buffer).build_algo()
    while algo._empo["num_updates"] < 12:
        algo.train()
    algo.train()                                   # 20 rows < 50: paused
    assert algo._empo["num_updates"] == 12 and 0 < len(algo.replay) < 50
    ckpt = algo.save_to_path(tmp_path / "paused")
    orig = []
    for _ in range(5):
        r = algo.train()
        orig.append((r["Warmup"]["num_updates"], r["Warmup"]["num_buffer_clears"]))
    original = {"counters": copy.deepcopy(algo._empo), "weights": _snapshot(algo)}
    algo.stop()

    restored = Empo.from_checkpoint(ckpt)
    try:
        rest = []
        for _ in range(5):
            r = restored.train()
            rest.append((r["Warmup"]["num_updates"], r["Warmup"]["num_buffer_clears"]))
        if with_buffer:
            assert rest == orig
            assert restored._empo == original["counters"]
            assert _same(_snapshot(restored), original["weights"])
        else:
            assert [c for _, c in rest] == sorted(c for _, c in rest)   # clears never undone
            assert rest[0] == (12, 1) and rest[1] == (12, 1)            # 20, 40 rows: paused
            assert rest[2] == (16, 2)                                   # 60 rows: learns, clears at 16
            assert restored._empo["clears_done"] == [12, 16]
            assert restored._empo["num_buffer_clears"] == 2
    finally:
        restored.stop()


# ------------------------------------------------- world errors on remote EnvRunners
def _remote_bad_world_config(**fault_tolerance):
    return (small_config()
            .environment("rllib_empo/World-v0",
                         env_config={"world": FaultyWorld("probs_sum"), "prior": "uniform"})
            .env_runners(num_env_runners=1, num_cpus_per_env_runner=0.5)
            .fault_tolerance(**fault_tolerance))


def test_world_error_on_a_remote_runner_is_raised_not_swallowed(ray_session):
    algo = _remote_bad_world_config(restart_failed_env_runners=True,
                                    delay_between_env_runner_restarts_s=0.0).build_algo()
    try:
        with pytest.raises(WorldProtocolError, match=r"world 'faulty_probs_sum'.*sum to 0\.9"):
            algo.train()            # the first fragment reaches the bad state (step 2)
    finally:
        algo.stop()


# ------------------------------------------------- errors and lost runners (issue 13)
def _remote_world_config(world, num_env_runners=1, **fault_tolerance):
    return (small_config()
            .environment("rllib_empo/World-v0", env_config={"world": world, "prior": "uniform"})
            .env_runners(num_env_runners=num_env_runners, num_cpus_per_env_runner=0.5)
            .fault_tolerance(**fault_tolerance))


@pytest.mark.parametrize("restart", [True, False], ids=["restarts", "no_restarts"])
def test_a_plain_error_in_a_remote_world_reaches_train_in_the_first_iteration(ray_session, restart):
    """RLlib's default fault tolerance (restarts on, 60 s delay before an actor that raised
    exits): the first train() used to block 61 s, then every call returned empty-handed while
    the runner restarted into the same error; without restarts an ActorDiedError came without
    the world's message. Now the error, naming the world, the state and the joint action, is
    raised by the first train() at once."""
    algo = _remote_world_config(FaultyWorld("raises"), restart_failed_env_runners=restart).build_algo()
    try:
        t = time.monotonic()
        with pytest.raises(WorldProtocolError, match=r"world 'faulty_raises': transition_probabilities"
                                                     r"\(\(3, \d\), \[\d, \d\]\) raised KeyError"):
            algo.train()
        assert time.monotonic() - t < 20
        assert algo.env_runner_group.num_healthy_remote_env_runners() == 1   # not killed
    finally:
        algo.stop()


def test_a_lost_env_runner_without_restarts_is_reported_in_the_results(ray_session, caplog):
    """restart_failed_env_runners=False, ignore_env_runner_failures=True: training goes on
    with the other runner, and the results and the log say that one is lost."""
    from _faulty_worlds import TinyWorld
    algo = _remote_world_config(TinyWorld(), num_env_runners=2, restart_failed_env_runners=False,
                                ignore_env_runner_failures=True).build_algo()
    try:
        first = algo.train()
        assert first["Runners"] == {"num_healthy": 2, "num_lost": 0, "num_restarts": 0,
                                    "num_failures": 0}
        victim = algo.env_runner_group.healthy_env_runner_ids()[0]
        algo.env_runner_group.foreach_env_runner(
            lambda er: setattr(er, "sample_rows", lambda **kw: os.kill(os.getpid(), signal.SIGKILL)),
            remote_worker_ids=[victim], local_env_runner=False)
        with caplog.at_level("WARNING", logger="rllib_empo.algorithm.faults"):
            lost = algo.train()
        assert lost["Runners"]["num_lost"] == 1 and lost["Runners"]["num_healthy"] == 1
        assert lost["Buffer"]["num_added"] - first["Buffer"]["num_added"] == 20   # one runner's rows
        assert any(f"EnvRunner {victim} is lost" in r.getMessage() for r in caplog.records)
        later = algo.train()
        assert later["Runners"]["num_lost"] == 1 and later["Runners"]["num_failures"] == 1
    finally:
        algo.stop()


def test_an_env_runner_that_keeps_dying_is_not_restarted_for_ever(ray_session):
    """Its process dies at the same state each time (a crash no Python code catches): Ray
    restarts it, it dies again, and after max_env_runner_failures deaths in a row training
    stops with an error that names the runner and the last error."""
    cfg = _remote_world_config(FaultyWorld("kills_runner"), restart_failed_env_runners=True,
                               delay_between_env_runner_restarts_s=0.0)
    algo = cfg.training(max_env_runner_failures=2).build_algo()
    from rllib_empo.algorithm.faults import EnvRunnerError
    try:
        deadline = time.monotonic() + RESTART_TIMEOUT_S
        with pytest.raises(EnvRunnerError, match=r"EnvRunner 1 failed 2 times in a row \(restarted 1 "
                                                 r"times in between; max_env_runner_failures=2\)"):
            while time.monotonic() < deadline:
                algo.train()
    finally:
        algo.stop()


def test_a_lost_env_runner_without_fault_tolerance_stops_training_naming_it(ray_session):
    from _faulty_worlds import TinyWorld
    from rllib_empo.algorithm.faults import EnvRunnerError
    algo = _remote_world_config(TinyWorld(), restart_failed_env_runners=False,
                                ignore_env_runner_failures=False).build_algo()
    try:
        algo.train()
        algo.env_runner_group.foreach_env_runner(
            lambda er: setattr(er, "sample_rows", lambda **kw: os.kill(os.getpid(), signal.SIGKILL)),
            local_env_runner=False)
        with pytest.raises(EnvRunnerError, match=r"^EnvRunner 1 failed while sampling, and fault "
                                                 r"tolerance is off, so training stops .*; the error: "
                                                 r"ActorDiedError: The actor died"):
            algo.train()
    finally:
        algo.stop()


def test_any_other_error_on_a_remote_runner_is_raised_with_its_traceback(ray_session):
    """Not a world error, but a plain exception escaping the runner's sampling: it used to
    make RLlib's actor sleep 60 s and exit (then restart into the same error)."""
    from _faulty_worlds import TinyWorld
    from rllib_empo.algorithm.faults import EnvRunnerError

    def broken(**kwargs):
        raise ValueError("rows went missing")

    algo = _remote_world_config(TinyWorld(), restart_failed_env_runners=True).build_algo()
    try:
        algo.train()
        algo.env_runner_group.foreach_env_runner(lambda er: setattr(er, "sample_rows", broken),
                                                 local_env_runner=False)
        t = time.monotonic()
        with pytest.raises(EnvRunnerError, match=r"^EnvRunner 1 failed while sampling: ValueError: rows "
                                                 r"went missing\n(.|\n)*Traceback"):
            algo.train()
        assert time.monotonic() - t < 20
        assert algo.env_runner_group.num_healthy_remote_env_runners() == 1
    finally:
        algo.stop()
