"""Empo (the RLlib Algorithm): buffer lifecycle at the clearing points, beta_r on the
EnvRunners, remote EnvRunners, the result dict, building, other row modes, analysis API."""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import replay_batch, small_config
from rllib_empo import Empo, EmpoConfig
from rllib_empo.analysis.evaluation import compare_to_exact, exact_solution_for
from rllib_empo.worlds import make_world


def test_buffer_cleared_at_clearing_points_and_learning_resumes(ray_session):
    # 20 rows per iteration, learning needs 30: one paused iteration after every clear
    algo = small_config(learning_starts=30).build_algo()
    try:
        sch = algo.schedule
        assert sch.clear_points == (sch.ends[4], sch.ends[5]) == (12, 16)
        history = []            # (num_updates, buffer size, clears) after each iteration
        while algo._empo["num_updates"] < sch.ends[5] + 4:
            r = algo.train()
            history.append((r["Warmup"]["num_updates"], r["Buffer"]["size"],
                            list(algo._empo["clears_done"])))
            assert r["Buffer"]["size"] == len(algo.replay)
            assert r["Warmup"]["num_buffer_clears"] == len(algo._empo["clears_done"])
            assert len(history) < 20
        assert algo._empo["clears_done"] == list(sch.clear_points)
        assert algo._empo["num_buffer_clears"] == 2
        # the run, iteration by iteration
        assert history == [
            (0, 20, []),            # 20 < 30 rows: learning has not started
            (4, 40, []), (8, 60, []),
            (12, 0, [12]),          # cleared when the ramp starts (E4 = 12) ...
            (12, 20, [12]),         # ... learning pauses until 30 rows are back ...
            (16, 0, [12, 16]),      # ... resumes, and the buffer is cleared again at E5 = 16
            (16, 20, [12, 16]),
            (20, 40, [12, 16]),
        ]
        # the buffer only ever shrinks at a clearing point
        for (t0, n0, _), (t1, n1, c1) in zip(history, history[1:]):
            if n1 < n0 + 20:
                assert c1 and c1[-1] == t1 and n1 == 0
        assert algo.replay.num_added == 20 * len(history)
    finally:
        algo.stop()


def test_beta_r_and_epsilon_on_env_runners_follow_the_schedule(ray_session):
    algo = small_config(updates_per_iteration=2, beta_r=5.0, beta_r_rampup_steps=8,
                        epsilon=[(0, 0.5), (20, 0.0)]).build_algo()
    try:
        sch = algo.schedule
        module = algo.env_runner_group.local_env_runner.module
        assert (module.beta_r, module.epsilon) == (0.0, 0.5)        # pushed at setup
        ramp = []
        while algo._empo["num_updates"] < sch.ends[5] + 2:
            r = algo.train()
            t = r["Warmup"]["num_updates"]
            assert module.beta_r == sch.effective_beta_r(t)
            assert module.epsilon == pytest.approx(sch.epsilon_at(t))
            assert r["Warmup"]["effective_beta_r"] == sch.effective_beta_r(t)
            assert r["Warmup"]["epsilon"] == pytest.approx(sch.epsilon_at(t))
            if 0.0 < module.beta_r < 5.0:
                ramp.append(module.beta_r)
        assert module.beta_r == 5.0
        assert len(ramp) >= 3 and ramp == sorted(ramp)              # strictly inside the ramp
        assert len(set(ramp)) == len(ramp)
    finally:
        algo.stop()


def test_remote_env_runners_fill_the_buffer(ray_session):
    algo = (small_config(warmup_v_h_e_steps=0, warmup_x_h_steps=0, warmup_q_r_steps=0,
                         beta_r=4.0, beta_r_rampup_steps=16)
            .env_runners(num_env_runners=2)
            .build_algo())
    try:
        group = algo.env_runner_group
        assert group.num_remote_env_runners() == 2
        spec = algo.config.table_spec()
        sizes = []
        for _ in range(2):
            r = algo.train()
            t = r["Warmup"]["num_updates"]
            sizes.append(len(algo.replay))
            # beta_r reached every remote runner
            betas = group.foreach_env_runner(lambda er: er.module.beta_r, local_env_runner=False)
            assert betas == [algo.schedule.effective_beta_r(t)] * 2
            assert 0.0 < betas[0] < 4.0
        # each remote runner contributes rollout_fragment_length rows per iteration
        assert sizes == [40, 80]
        assert r["Warmup"]["num_updates"] == 8
        b = replay_batch(algo)
        assert b.size == 80 and b.probs.shape[1] == spec.num_robot_actions
        np.testing.assert_allclose(b.probs.sum(-1).numpy(), 1.0, atol=1e-5)
        real = b.goal_mask > 0
        np.testing.assert_allclose(b.vhe_probs.sum(-1)[real].numpy(), 1.0, atol=1e-5)
        # every row's observation is the encoding of a reachable state of the world, and the
        # runners' entries were merged: each distinct state once
        solution = exact_solution_for(algo)
        world = make_world("rock_gate")
        encodings = {np.asarray(world.encode_state(s), np.float32).tobytes()
                     for s in solution.nonterminal_states}
        assert all(o.numpy().astype(np.float32).tobytes() in encodings for o in b.obs)
        assert len(algo.replay.states) == len(np.unique(algo.replay.states.key[
            algo.replay.states.live_slots()]))
    finally:
        algo.stop()


def test_result_dict(ray_session):
    algo = small_config().build_algo()
    try:
        sch = algo.schedule
        prev_stage = sch.stage(0)
        for i in range(5):
            r = algo.train()
            t = r["Warmup"]["num_updates"]
            w = r["Warmup"]
            assert w["stage"] == sch.stage(t)
            assert w["stage_transition"] == float(sch.stage(t) != prev_stage)
            assert w["effective_beta_r"] == sch.effective_beta_r(t)
            assert w["is_warmup"] == float(sch.is_in_warmup(t))
            assert w["is_rampup"] == float(sch.is_in_rampup(t))
            assert w["active_networks_mask"] == sch.active_mask(t)
            assert set(r["LearningRate"]) == set(sch.existing_networks)
            for n, lr in r["LearningRate"].items():
                assert lr == algo.config.get_learning_rate(n, max(t - 1, 0))
            assert r["Buffer"]["size"] == len(algo.replay)
            sizes = algo.replay.sizes()
            assert r["Buffer"]["bytes"] == sizes["bytes_total"]
            assert r["Buffer"]["states"] == sizes["states"] and r["Buffer"]["tables"] == sizes["tables"]
            # losses of the networks trained in this iteration's last update, finite
            trained = sch.active_networks(t - 1)
            assert trained <= set(r["Loss"])
            assert all(np.isfinite(r["Loss"][n]) for n in trained)
            if i == 0:
                assert set(r["Loss"]) == {"v_h_e"}          # stage 0 trains V_h^e only
            prev_stage = sch.stage(t)
        assert r["Warmup"]["num_updates"] == 20
        assert r["Warmup"]["num_buffer_clears"] == 2
    finally:
        algo.stop()


def test_exact_figures_come_every_exact_eval_interval_iterations(ray_session):
    """exact_eval_interval=3: evaluations in training_iteration 3 and 6 (so a run of k*m
    iterations ends on one); earlier results carry NaN placeholders and later ones repeat the
    latest (Tune needs the metric in every result), and TensorBoard gets each evaluation
    once."""
    from rllib_empo.algorithm.callbacks import scalars_from_result
    algo = small_config(exact_eval_interval=3).build_algo()
    try:
        results = [algo.train() for _ in range(7)]
    finally:
        algo.stop()
    assert all("Exact" in r for r in results)
    assert [r["Exact"]["training_iteration"] for r in results] == [0, 0, 3, 3, 3, 6, 6]
    assert all(math.isnan(r["Exact"]["tv_pi_r_s0"]) for r in results[:2])
    assert results[3]["Exact"]["tv_pi_r_s0"] == results[2]["Exact"]["tv_pi_r_s0"]
    written = [r["training_iteration"] for r in results
               if "Exact/tv_pi_r_s0" in scalars_from_result(r)]
    assert written == [3, 6]


@pytest.mark.parametrize("method", ["build", "build_algo"])
def test_default_config_builds(ray_session, method):
    config = EmpoConfig().environment("rllib_empo/RockGate-v0")
    algo = getattr(config, method)()
    try:
        assert isinstance(algo, Empo)
        widths = {n: tuple(m.out_features for m in algo.learner_group._learner.module[
            "default_policy"].unwrapped().net(n) if hasattr(m, "out_features"))
            for n in ("q_r", "x_h")}
        A_r = algo.config.table_spec().num_robot_actions
        assert widths == {"q_r": (512, 512, A_r), "x_h": (256, 256, 1)}
        r = algo.train()        # ~200 rows < learning_starts = the batch size, 256: sampling only
        assert algo.config.effective_learning_starts == 256
        # 4 envs x 50 steps; RLlib steps the envs together until 200 steps are done, and an
        # env's reset step counts none, so up to 3 more rows come
        assert 200 <= r["Buffer"]["size"] <= 203 and r["Warmup"]["num_updates"] == 0
    finally:
        algo.stop()


@pytest.mark.parametrize("world,training", [
    ("rllib_empo/RockGate-v0", {"use_model_based_targets": False, "value_loss": "mse"}),
    ("rllib_empo/Corridor-v0", {"sum_human_actions": False}),
    ("rllib_empo/RockGate-v0", {"x_h_use_network": False}),
], ids=["sampled", "sampled_humans", "direct_x_h"])
def test_other_row_modes_train(ray_session, world, training):
    algo = small_config(world, **training).build_algo()
    try:
        spec = algo.config.table_spec()
        expected_mode = ("sampled" if not training.get("use_model_based_targets", True) else
                         "sampled_humans" if not training.get("sum_human_actions", True) else "sum")
        assert spec.mode == expected_mode
        losses = {}
        while algo._empo["num_updates"] < algo.schedule.ends[5] + 4:
            r = algo.train()
            losses.update(r.get("Loss", {}))
        assert set(losses) == set(algo.schedule.existing_networks)
        assert all(np.isfinite(v) for v in losses.values())
        b = replay_batch(algo)
        assert b.size == len(algo.replay) and (b.q_mask.sum(-1) >= 1).all()
        if expected_mode != "sum":
            assert b.goal.shape[2] == 1              # the held goal of each human
    finally:
        algo.stop()


def test_robot_policy_values_and_compare_to_exact(ray_session):
    algo = small_config().build_algo()
    try:
        for _ in range(3):
            algo.train()
        solution = exact_solution_for(algo)
        states = solution.nonterminal_states[:25]
        pi = algo.robot_policy(states)
        assert pi.shape == (25, 5)
        np.testing.assert_allclose(pi.sum(-1), 1.0, atol=1e-6)
        assert (pi >= 0).all()
        v = algo.values(states)
        assert v["q_r"].shape == (25, 5) and v["v_r"].shape == (25,)
        assert v["u_r"].shape == (25,) and v["x_h"].shape == (25, 1)
        assert (v["q_r"] < 0).all() and (v["u_r"] <= -1 + 1e-6).all()
        report = compare_to_exact(algo, solution)
        for key in ("tv_pi_r_s0", "v_r_s0_rel_error", "mean_tv_pi_r", "argmax_agreement",
                    "mean_abs_v_h_e_error"):
            assert key in report and np.isfinite(report[key])
        for key in ("tv_pi_r_s0", "mean_tv_pi_r", "argmax_agreement", "mean_abs_v_h_e_error"):
            assert 0.0 <= report[key] <= 1.0, key
        assert report["v_r_s0_rel_error"] >= 0.0
        assert report["num_states"] == len(solution.nonterminal_states)
        # the policy at s0 agrees with the report
        pi0 = algo.robot_policy([solution.initial_state])[0]
        tv0 = 0.5 * np.abs(pi0 - solution.pi_r[solution.initial_state]).sum()
        assert report["tv_pi_r_s0"] == pytest.approx(tv0, abs=1e-6)
    finally:
        algo.stop()


def test_torch_threads_follow_each_process_allotment(ray_session):
    """torch_num_threads=None: the driver runs on num_cpus_for_main_process threads (not on
    every core of a shared machine), remote EnvRunners on num_cpus_per_env_runner; an int
    sets every process."""
    import torch
    cfg = small_config()
    assert cfg.torch_threads("main") == 1 and cfg.torch_threads("env_runner") == 1
    assert cfg.copy().resources(num_cpus_for_main_process=2).torch_threads("main") == 2
    assert cfg.copy().env_runners(num_cpus_per_env_runner=0.5).torch_threads("env_runner") == 1
    assert cfg.copy().training(torch_num_threads=3).torch_threads("learner") == 3
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        algo = small_config().build_algo()
        assert torch.get_num_threads() == 1
        algo.stop()
        algo = small_config(torch_num_threads=2).env_runners(num_env_runners=1).build_algo()
        try:
            assert torch.get_num_threads() == 2
            assert algo.env_runner_group.foreach_env_runner(
                lambda er: torch.get_num_threads(), local_env_runner=False) == [2]
        finally:
            algo.stop()
    finally:
        torch.set_num_threads(before)


def test_evaluate_reports_residuals_initial_values_and_exact_figures(ray_session):
    """algo.evaluate() is EMPO's own: residuals (finite, falling as the networks approach
    their fixed points), the learned values at the initial state, and the exact figures
    when exact_eval_interval > 0; every train() result carries the residuals too."""
    algo = small_config(warmup_v_h_e_steps=0, warmup_x_h_steps=0, warmup_q_r_steps=0,
                        beta_r_rampup_steps=0, updates_per_iteration=16,
                        exact_eval_interval=50).build_algo()
    try:
        early = None
        for i in range(60):
            result = algo.train()
            if i == 2:
                early = algo.evaluate()["evaluation"]
        late = algo.evaluate()["evaluation"]
        assert set(result["Residual"]) == set(late["Residual"])
        for ev in (early, late):
            assert {"q_r", "q_r_max", "v_h_e", "x_h", "policy_change"} <= set(ev["Residual"])
            assert all(np.isfinite(v) for v in ev["Residual"].values())
            init = ev["InitialState"]
            assert init["v_r"] < 0 and init["u_r"] <= -1 + 1e-6 and 0 < init["x_h_0"] <= 1
            assert 0 <= init["pi_r_entropy"] <= np.log(5) + 1e-9
        for net in ("q_r", "v_h_e", "x_h"):
            assert late["Residual"][net] < early["Residual"][net], net
        assert late["Exact"]["num_states"] == 751 and "tv_pi_r_s0" in late["Exact"]
        s0 = algo.world.initial_state()
        assert late["InitialState"]["v_r"] == pytest.approx(float(algo.values([s0])["v_r"][0]))
    finally:
        algo.stop()


def test_residual_rows_field(ray_session):
    """residual_rows=0 logs no residuals; the set is redrawn after a clear empties it."""
    algo = small_config(residual_rows=0).build_algo()
    try:
        assert "Residual" not in algo.train() and algo.residuals() == {}
    finally:
        algo.stop()
    algo = small_config(residual_rows=32).build_algo()
    try:
        algo.train()
        held = algo.residual_rows()
        assert len(held["table"]) == 32 and algo.residual_rows() is held      # fixed
        while algo.num_updates < algo.schedule.clear_points[0] + 1:
            algo.train()
        assert algo.residual_rows() is not held                               # redrawn
    finally:
        algo.stop()


@pytest.mark.parametrize("by", ["transitions", "states", "mixed"])
def test_replay_sampling_field_picks_how_minibatches_draw_rows(ray_session, monkeypatch, by):
    """Every learner chunk samples the replay memory the way replay_sampling says."""
    from rllib_empo.algorithm.store import ReplayStore
    seen, sample, depth = [], ReplayStore.sample, [0]

    def spy(self, batch_size, rng, by="transitions"):
        if not depth[0]:                           # not 'mixed' drawing its 'states' half
            seen.append(by)
        depth[0] += 1
        try:
            return sample(self, batch_size, rng, by=by)
        finally:
            depth[0] -= 1
    monkeypatch.setattr(ReplayStore, "sample", spy)
    algo = small_config(replay_sampling=by, residual_rows=0).build_algo()
    try:
        algo.train()
        algo.train()
        assert algo.num_updates > 0 and seen and set(seen) == {by}
    finally:
        algo.stop()


def test_evaluating_does_not_change_the_training_that_follows(ray_session):
    """Two runs with the same seed, one of which asks for the learned values (and so builds
    the driver's copy of the networks) and compares with the exact solution along the way,
    train bit-identical weights: evaluation draws nothing from the generators that
    sampling and training use."""
    import numpy as np
    sums = []
    for evaluate in (False, True):
        algo = small_config(beta_r_rampup_steps=0).build_algo()
        try:
            for i in range(8):
                algo.train()
                if evaluate and i in (1, 4):
                    algo.values([algo.world.initial_state()])
                    compare_to_exact(algo, exact_solution_for(algo))
            m = algo.learner_group._learner.module["default_policy"].unwrapped()
            sums.append([float(p.detach().double().sum()) for p in m.parameters()])
        finally:
            algo.stop()
    assert algo.num_updates >= 20       # q_r trained, with beta_r > 0: the robot acted on it
    np.testing.assert_array_equal(sums[0], sums[1])
