"""EmpoTorchLearner inside a running Empo algorithm (local learner, num_learners=0):
which networks each stage trains, target copies, learning rates, non-finite updates."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import small_config
from ray.rllib.core import DEFAULT_MODULE_ID

ALL_NETWORKS = dict(u_r_use_network=True, v_r_use_network=True, warmup_u_r_steps=3,
                    warmup_v_r_steps=3)


def learner(algo):
    return algo.learner_group._learner


def learner_module(algo):
    return learner(algo).module[DEFAULT_MODULE_ID]


def snapshot(algo) -> dict:
    return {k: v.detach().clone() for k, v in learner_module(algo).state_dict().items()}


def changed_networks(before: dict, after: dict) -> set:
    """Names of the (main or target_) networks with any parameter not bit-identical (a
    network's running average, average_<net>, moves with it and is not listed)."""
    assert before.keys() == after.keys()
    return {k.split(".")[0] for k in before
            if not torch.equal(before[k], after[k]) and not k.startswith("average_")}


def build(ray_session, **training):
    algo = small_config(**training).build_algo()
    return algo


@pytest.mark.parametrize("flags", [{}, ALL_NETWORKS], ids=["default", "all_networks"])
def test_each_stage_trains_exactly_its_active_networks(ray_session, flags):
    algo = build(ray_session, updates_per_iteration=1, **flags)
    try:
        sch = algo.schedule
        existing = set(learner_module(algo).network_names)
        assert existing == set(sch.existing_networks)
        stages_seen, t = set(), 0
        end = sch.ends[5] + 2
        while t < end:
            before = snapshot(algo)
            result = algo.train()
            after = snapshot(algo)
            t_new = result["Warmup"]["num_updates"]
            changed = changed_networks(before, after)
            if t_new == t:                   # learning paused: nothing may move
                assert changed == set()
                continue
            assert t_new == t + 1
            active = set(sch.active_networks(t))
            stages_seen.add(sch.stage(t))
            assert changed == active, (f"update {t} (stage {sch.stage(t)}): changed {changed}, "
                                       f"active {active}")
            # no target copy happens within the default interval of 100 updates
            assert not any(n.startswith("target_") for n in changed)
            t = t_new
        expected_stages = {k for k in range(7) if k == 6 or sch.durations[k] > 0}
        assert stages_seen == expected_stages
        if flags:
            assert stages_seen == set(range(7))
    finally:
        algo.stop()


def test_target_copies_happen_exactly_at_each_interval(ray_session):
    intervals = {"v_h_e": 2, "x_h": 5, "u_r": 4, "q_r": 3, "v_r": 1}
    algo = build(ray_session, updates_per_iteration=1, u_r_use_network=True,
                 v_r_use_network=True, target_copy="latest", warmup_v_h_e_steps=0, warmup_x_h_steps=0,
                 warmup_u_r_steps=0, warmup_q_r_steps=0, warmup_v_r_steps=0,
                 beta_r_rampup_steps=0,
                 **{f"{n}_target_update_interval": i for n, i in intervals.items()})
    try:
        sch = algo.schedule
        assert sch.stage(0) == 6 and sch.clear_points == ()
        module = learner_module(algo)
        prev = snapshot(algo)
        copies = {n: [] for n in intervals}
        for _ in range(12):
            result = algo.train()
            u = result["Warmup"]["num_updates"]          # updates done so far
            now = snapshot(algo)
            changed = changed_networks(prev, now)
            for n, interval in intervals.items():
                main = {k[len(n) + 1:]: v for k, v in now.items() if k.startswith(n + ".")}
                target = {k[len(n) + 8:]: v for k, v in now.items() if k.startswith(f"target_{n}.")}
                assert n in changed                        # every network trains
                same = all(torch.equal(main[k], target[k]) for k in main)
                if u % interval == 0:
                    copies[n].append(u)
                    assert same, f"target_{n} should be a copy after update {u}"
                    assert f"target_{n}" in changed
                else:
                    assert not same and f"target_{n}" not in changed, \
                        f"target_{n} must not change after update {u}"
            prev = now
        for n, interval in intervals.items():
            assert copies[n] == list(range(interval, 13, interval))
        assert module is learner_module(algo)
    finally:
        algo.stop()


@pytest.mark.parametrize("target_copy", ["interval_mean", "latest", "average"])
def test_target_copies_take_what_target_copy_names(ray_session, target_copy):
    """At every copy the target is: "interval_mean", the mean of the network's weights after
    each update since its last copy; "latest", its current weights; "average", its running
    average. Between copies the target stays put."""
    algo = build(ray_session, updates_per_iteration=1, ema_decay=0.9,
                 target_copy=target_copy, q_r_target_update_interval=3,
                 v_h_e_target_update_interval=2, x_h_target_update_interval=2,
                 warmup_v_h_e_steps=0, warmup_x_h_steps=0, warmup_q_r_steps=0,
                 beta_r_rampup_steps=0)
    try:
        m = learner_module(algo)
        intervals = {"q_r": 3, "v_h_e": 2, "x_h": 2}
        since_copy = {n: [] for n in intervals}     # weights after each update since a copy
        copies = 0
        for _ in range(7):
            before = {n: [t.clone() for t in m.net(n, target=True).parameters()]
                      for n in intervals}
            u = algo.train()["Warmup"]["num_updates"]
            for n, interval in intervals.items():
                target = list(m.net(n, target=True).parameters())
                avg = list(m.net(n, average=True).parameters())
                raw = list(m.net(n).parameters())
                since_copy[n].append([t.detach().double().clone() for t in raw])
                assert not all(torch.equal(a, b) for a, b in zip(avg, raw)), n
                if u % interval:
                    assert all(torch.equal(t, b) for t, b in zip(target, before[n])), (n, u)
                    continue
                copies += 1
                if target_copy == "interval_mean":
                    mean = [sum(ws) / len(ws) for ws in zip(*since_copy[n])]
                    assert all(torch.allclose(t.double(), x, rtol=1e-5, atol=1e-6)
                               for t, x in zip(target, mean)), (n, u)
                    assert not all(torch.equal(t, x) for t, x in zip(target, raw)), (n, u)
                else:
                    source = avg if target_copy == "average" else raw
                    assert all(torch.equal(t, x) for t, x in zip(target, source)), (n, u)
                since_copy[n] = []
        assert copies == 3 + 3 + 2
    finally:
        algo.stop()


def test_learning_rates_follow_the_schedule(ray_session):
    bases = {"v_h_e": 2e-3, "x_h": 1e-3, "q_r": 3e-3}
    algo = build(ray_session, updates_per_iteration=1, **{f"lr_{n}": lr for n, lr in bases.items()})
    try:
        cfg = algo.config
        lrn = learner(algo)
        seen = {n: set() for n in bases}
        for _ in range(cfg.schedule.ends[5] + 6):
            result = algo.train()
            t = result["Warmup"]["num_updates"] - 1       # the update just done
            for n in bases:
                expected = cfg.get_learning_rate(n, t)
                lr = lrn.network_learning_rates(DEFAULT_MODULE_ID)[n]
                assert lr == pytest.approx(expected, rel=1e-12), (n, t)
                assert result["LearningRate"][n] == pytest.approx(expected, rel=1e-12)
                seen[n].add(round(expected, 12))
        for n, base in bases.items():
            # constant through warm-up and ramp, then 1/sqrt(t) decay: several distinct values
            assert max(seen[n]) == pytest.approx(base)
            assert len(seen[n]) >= 5
            assert min(seen[n]) == pytest.approx(
                base * math.sqrt(cfg.schedule.ends[5] / (cfg.schedule.ends[5] + 5)))
    finally:
        algo.stop()


def _nan_targets(real):
    def patched(cache, batch, networks, beta_r, th):
        out = real(cache, batch, networks, beta_r, th)
        out["v_h_e"] = torch.full_like(out["v_h_e"], float("nan"))
        return out
    return patched


def test_nonfinite_target_raises(ray_session, monkeypatch):
    import rllib_empo.algorithm.learner as learner_mod
    algo = build(ray_session, on_nonfinite="raise")
    try:
        monkeypatch.setattr(learner_mod, "compute_targets", _nan_targets(learner_mod.compute_targets))
        before = snapshot(algo)
        with pytest.raises(FloatingPointError, match="non-finite"):
            algo.train()
        assert changed_networks(before, snapshot(algo)) == set()
    finally:
        algo.stop()


def test_nonfinite_target_skipped_and_counted(ray_session, monkeypatch):
    import rllib_empo.algorithm.learner as learner_mod
    real = learner_mod.compute_targets
    # every network active from the start, and one finite iteration first
    algo = build(ray_session, on_nonfinite="skip", warmup_v_h_e_steps=0, warmup_x_h_steps=0,
                 warmup_q_r_steps=0, beta_r_rampup_steps=0)
    try:
        algo.train()
        monkeypatch.setattr(learner_mod, "compute_targets", _nan_targets(real))
        before = snapshot(algo)
        t0 = algo._empo["num_updates"]
        algo.train()
        result = algo.train()
        after = snapshot(algo)
        n_skipped = result["Warmup"]["num_updates"] - t0
        assert n_skipped == 2 * algo.config.updates_per_iteration      # updates were attempted
        # ... v_h_e's (its targets are NaN) all skipped; the networks with finite losses learn
        assert changed_networks(before, after) == {"x_h", "q_r"}
        assert all(torch.isfinite(v).all() for v in after.values())
        assert result["learners"][DEFAULT_MODULE_ID]["num_nonfinite_skips"] == n_skipped
        # with finite targets again, training resumes
        monkeypatch.setattr(learner_mod, "compute_targets", real)
        algo.train()
        now = snapshot(algo)
        assert {"v_h_e", "x_h", "q_r"} <= changed_networks(after, now)
        assert all(torch.isfinite(v).all() for v in now.values())
    finally:
        algo.stop()


def test_nonfinite_skip_in_the_first_iteration(ray_session, monkeypatch):
    import rllib_empo.algorithm.learner as learner_mod
    algo = build(ray_session, on_nonfinite="skip")
    try:
        monkeypatch.setattr(learner_mod, "compute_targets", _nan_targets(learner_mod.compute_targets))
        before = snapshot(algo)
        result = algo.train()
        assert changed_networks(before, snapshot(algo)) == set()
        assert result["learners"][DEFAULT_MODULE_ID]["num_nonfinite_skips"] == \
            algo.config.updates_per_iteration
    finally:
        algo.stop()


@pytest.mark.parametrize("grad_clip,clip_by", [(0.5, "global_norm"), (None, "global_norm"),
                                               (0.01, "value")])
def test_gradient_clipping_matches_rllib_per_network(ray_session, grad_clip, clip_by):
    """The fused global-norm clipping gives RLlib's clip_gradients result for every active
    network's gradients (each network clipped on its own); "value" is RLlib's own."""
    from ray.rllib.utils.torch_utils import clip_gradients
    algo = small_config(warmup_v_h_e_steps=0, warmup_x_h_steps=0, warmup_q_r_steps=0,
                        beta_r_rampup_steps=0, grad_clip=grad_clip,
                        grad_clip_by=clip_by).build_algo()
    try:
        lrn, cfg = learner(algo), algo.config
        module = learner_module(algo)
        lrn._active = tuple(module.network_names)
        lrn._log_stats = True
        g = torch.Generator().manual_seed(0)
        grads = {ref: 10.0 * torch.randn(p.shape, generator=g) for ref, p in lrn._params.items()}
        expected = {ref: v.clone() for ref, v in grads.items()}
        for name in module.network_names:
            part = {r: expected[r] for r in lrn.network_parameter_refs(DEFAULT_MODULE_ID, name)}
            if grad_clip is not None:
                clip_gradients(part, grad_clip=grad_clip, grad_clip_by=clip_by)
                expected.update(part)           # "value" replaces the tensors in the dict
        out = lrn.postprocess_gradients_for_module(module_id=DEFAULT_MODULE_ID, config=cfg,
                                                   module_gradients_dict=grads)
        assert out.keys() == expected.keys()
        for ref in expected:
            torch.testing.assert_close(out[ref], expected[ref], rtol=1e-5, atol=1e-7)
        if grad_clip is not None and clip_by == "global_norm":
            for name in module.network_names:
                part = {r: out[r] for r in lrn.network_parameter_refs(DEFAULT_MODULE_ID, name)}
                norm = torch.linalg.vector_norm(torch.stack([v.norm() for v in part.values()]))
                assert norm <= grad_clip * (1 + 1e-5)
        if grad_clip is None:                   # unclipped: the gradients pass unchanged
            assert all(torch.equal(out[r], grads[r]) for r in grads)
    finally:
        algo.stop()


@pytest.mark.parametrize("on_nonfinite", ["raise", "skip"])
def test_nonfinite_gradient_with_a_finite_loss(ray_session, on_nonfinite):
    """A NaN gradient (finite loss) is caught by the clipping norms: raise, or skip that
    network's update and count it; q_r never moves (the other networks do learn with
    'skip'), and training resumes afterwards."""
    algo = build(ray_session, on_nonfinite=on_nonfinite, warmup_v_h_e_steps=0,
                 warmup_x_h_steps=0, warmup_q_r_steps=0, beta_r_rampup_steps=0)
    try:
        algo.train()
        param = next(learner_module(algo).q_r.parameters())
        hook = param.register_hook(lambda g: g * float("nan"))
        before = snapshot(algo)
        if on_nonfinite == "raise":
            with pytest.raises(FloatingPointError, match="non-finite gradient"):
                algo.train()
        else:
            result = algo.train()
            assert result["learners"][DEFAULT_MODULE_ID]["num_nonfinite_skips"] == \
                algo.config.updates_per_iteration
        assert "q_r" not in changed_networks(before, snapshot(algo))
        if on_nonfinite == "raise":
            assert changed_networks(before, snapshot(algo)) == set()
        else:
            assert changed_networks(before, snapshot(algo)) == {"v_h_e", "x_h"}
        hook.remove()
        if on_nonfinite == "skip":
            after = snapshot(algo)
            algo.train()
            assert "q_r" in changed_networks(after, snapshot(algo))
    finally:
        algo.stop()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_learner_trains(ray_session):
    """num_gpus_per_learner=1: the networks and the target cache live on the GPU, the
    replay memory on the CPU; minibatches move over once per update."""
    algo = (small_config(warmup_v_h_e_steps=2, warmup_x_h_steps=2, warmup_q_r_steps=2,
                         beta_r_rampup_steps=2)
            .learners(num_gpus_per_learner=1).build_algo())
    try:
        result = {}
        for _ in range(4):
            result = algo.train()
        lrn = learner(algo)
        assert next(learner_module(algo).parameters()).is_cuda
        assert lrn.target_cache.q.is_cuda
        assert result["Loss"] and all(np.isfinite(v) for v in result["Loss"].values())
    finally:
        algo.stop()


def test_averaged_networks_are_what_evaluation_and_the_env_runners_use(ray_session):
    """ema_decay > 0: every network has a running average of its weights (after the
    start-up, avg <- d avg + (1 - d) w per update of that network); the learned values and
    the EnvRunners' q_r come from the averages; ema_decay = 0: no averages, the latest
    weights everywhere."""
    import numpy as np
    from rllib_empo.algorithm.module import AVERAGE_PREFIX
    algo = small_config(ema_decay=0.9).build_algo()
    try:
        for _ in range(6):
            algo.train()
        m = learner_module(algo)
        assert m.has_averages()
        avg, now = m.net("q_r", average=True), m.net("q_r")
        assert not all(torch.equal(a, b) for a, b in zip(avg.parameters(), now.parameters()))
        for name in m.network_names:       # plain tensors: no autograd history that grows
            for p in m.net(name, average=True).parameters():
                assert p.grad_fn is None and not p.requires_grad, name
        steps = learner(algo)._averages.steps
        # q_r joined at the start of stage 3 (E2 updates after v_h_e)
        assert steps["q_r"] > 10 and steps["q_r"] == steps["v_h_e"] - algo.schedule.ends[2]
        runner = algo.env_runner_group.local_env_runner.module
        for (name, p), q in zip(runner.q_r.named_parameters(), avg.parameters()):
            assert torch.equal(p, q), name                    # the runners act with the average
        s0 = algo.world.initial_state()
        obs = torch.from_numpy(np.asarray(algo.world.encode_state(s0), np.float32))[None]
        with torch.no_grad():
            expected = -torch.exp(avg(obs).clamp(-30, 30))    # the q_r head on the average
        np.testing.assert_allclose(algo.values([s0])["q_r"], expected.numpy(), rtol=1e-6)
        assert any(k.startswith(AVERAGE_PREFIX) for k in m.state_dict())
    finally:
        algo.stop()
    algo = small_config(ema_decay=0.0).build_algo()
    try:
        algo.train()
        assert not learner_module(algo).has_averages()
    finally:
        algo.stop()


def test_q_r_advantage_weight_changes_the_q_r_updates_and_only_them(ray_session):
    """q_r_advantage_weight reaches the learner's q_r loss: two runs that differ only in it
    train identical V_h^e and X_h (the robot acts uniformly until the beta_r ramp, so they
    sample the same rows) but different Q_r once Q_r trains (stage 3, from update 8)."""
    nets = {}
    for w in (0.0, 30.0):
        algo = small_config(q_r_advantage_weight=w, ema_decay=0.0).build_algo()
        try:
            while algo.num_updates < 12:        # through stage 3 and 4, before the ramp
                algo.train()
            assert algo.num_updates == 12
            m = learner_module(algo)
            nets[w] = {n: [p.detach().clone() for p in m.net(n).parameters()]
                       for n in ("q_r", "v_h_e", "x_h")}
        finally:
            algo.stop()
    for n in ("v_h_e", "x_h"):
        assert all(torch.equal(a, b) for a, b in zip(nets[0.0][n], nets[30.0][n])), n
    assert not all(torch.equal(a, b) for a, b in zip(nets[0.0]["q_r"], nets[30.0]["q_r"]))
