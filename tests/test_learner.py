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
    """Names of the (main or target_) networks with any parameter not bit-identical."""
    assert before.keys() == after.keys()
    return {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}


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
                 v_r_use_network=True, warmup_v_h_e_steps=0, warmup_x_h_steps=0,
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
                groups = lrn.get_optimizer(DEFAULT_MODULE_ID, n).param_groups
                assert all(g["lr"] == pytest.approx(expected, rel=1e-12) for g in groups), (n, t)
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
    def patched(module, batch, networks, beta_r, th):
        out = real(module, batch, networks, beta_r, th)
        out["v_h_e"] = torch.full_like(out["v_h_e"], float("nan"))
        return out
    return patched


def test_nonfinite_target_raises(ray_session, monkeypatch):
    import rllib_empo.learner as learner_mod
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
    import rllib_empo.learner as learner_mod
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
        assert changed_networks(before, after) == set()                # ... and all skipped
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
    import rllib_empo.learner as learner_mod
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
