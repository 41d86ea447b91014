"""EmpoRLModule: output ranges of the five heads, inference-only trimming, target copies, and
the robot policy (5) it samples from on the EnvRunners."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from ray.rllib.core.columns import Columns

from rllib_empo.theory import equations as eq
from rllib_empo.algorithm.module import NETWORKS, EmpoRLModule

OBS_DIM, GOAL_DIM, H, A = 12, 5, 2, 5
FLOOR = 1e-3


def make_module(inference_only=False, x_h=True, u_r=True, v_r=True, seed=0, **extra):
    torch.manual_seed(seed)
    mc = {"hidden_sizes": (16, 16), "num_humans": H, "num_actions": A, "goal_dim": GOAL_DIM,
          "x_h_use_network": x_h, "u_r_use_network": u_r, "v_r_use_network": v_r,
          "x_h_floor": FLOOR, "neg_q_r_floor": 1e-3, **extra}
    return EmpoRLModule(observation_space=gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32),
                        action_space=gym.spaces.Discrete(A), model_config=mc,
                        inference_only=inference_only)


def random_inputs(n=64, seed=0):
    """Ordinary and extreme observations."""
    g = torch.Generator().manual_seed(seed)
    parts = [torch.randn(n, OBS_DIM, generator=g) * s for s in (0.0, 1.0, 30.0, 1e3, 1e6)]
    parts.append(torch.full((2, OBS_DIM), 3e7))
    parts.append(torch.full((2, OBS_DIM), -3e7))
    return torch.cat(parts)


def scaled_module(scale, **kw):
    """A module whose weights are scaled, to push every head to saturation."""
    m = make_module(**kw)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(scale)
    return m


@pytest.mark.parametrize("scale", [1.0, 50.0, -50.0])
def test_output_ranges(scale):
    m = scaled_module(scale)
    obs = random_inputs()
    goal = torch.randn(len(obs), H, 3, GOAL_DIM) * 100
    with torch.no_grad():
        q = m.q_r_values(obs)
        v = m.v_h_e_values(obs[:, None, None, :], m.goal_inputs(goal))
        x = m.x_h_values(obs)
        u = m.u_r_values(obs)
        vr = m.v_r_values(obs)
    for t in (q, v, x, u, vr):
        assert torch.isfinite(t).all()
    assert q.shape == (len(obs), A) and (q < 0).all()
    assert v.shape == (len(obs), H, 3) and ((v >= 0) & (v <= 1)).all()
    assert x.shape == (len(obs), H) and (x <= 1).all()
    assert (x >= FLOOR).all()
    assert u.shape == (len(obs),) and (u <= -1).all()
    assert vr.shape == (len(obs),) and (vr < 0).all()
    # the derived quantities stay in range too
    pi = eq.power_law_policy(q, 10.0)
    assert torch.isfinite(pi).all()
    assert (eq.u_r_from_x_h(x, 1.0, 1.1, FLOOR) <= -1).all()


def test_x_h_never_below_floor_when_saturated():
    m = scaled_module(50.0)
    with torch.no_grad():
        x = m.x_h_values(random_inputs())
    assert (x >= FLOOR).all()


def test_forward_train_predicts_the_networks_trained_now_from_the_learners_rows():
    """forward_train reads its rows through ``module.expand`` (set by the Learner, which holds
    the replay memory) and predicts only the networks the Learner trains now."""
    from types import SimpleNamespace
    B, M = 7, 3
    b = SimpleNamespace(obs=torch.randn(B, OBS_DIM), goal_enc=torch.randn(B, H, M, GOAL_DIM))
    m = make_module()
    with pytest.raises(RuntimeError, match="replay memory"):
        m.forward_train({"table": torch.zeros(B, dtype=torch.long)})
    active = set(NETWORKS)
    m.expand = lambda batch: (b, active)
    out = m.forward_train({"table": torch.zeros(B, dtype=torch.long)})
    assert out["batch"] is b
    assert out["q_r"].shape == (B, A) and out["v_h_e"].shape == (B, H, M)
    assert out["x_h"].shape == (B, H) and out["u_r"].shape == (B,) and out["v_r"].shape == (B,)
    torch.testing.assert_close(out["q_r"], m.q_r_values(b.obs))
    active = {"v_h_e"}
    m.expand = lambda batch: (b, active)
    assert set(m.forward_train({"table": torch.zeros(B)})) == {"batch", "v_h_e"}
    m2 = make_module(x_h=False, u_r=False, v_r=False)
    assert m2.network_names == ("v_h_e", "q_r")
    assert make_module().network_names == NETWORKS


def test_goal_inputs_append_the_human_one_hot():
    m = make_module()
    goal = torch.randn(4, H, 3, GOAL_DIM)
    gi = m.goal_inputs(goal)
    assert gi.shape == (4, H, 3, GOAL_DIM + H)
    assert torch.equal(gi[..., :GOAL_DIM], goal)
    for h in range(H):
        assert torch.equal(gi[:, h, :, GOAL_DIM:], torch.eye(H)[h].expand(4, 3, H))


@pytest.mark.parametrize("flags", [(True, True, True), (False, False, False), (True, False, True)])
def test_inference_only_module_keeps_only_q_r(flags):
    full = make_module(False, *flags)
    inf = make_module(True, *flags)
    assert [n for n, _ in inf.named_children()] == ["q_r"]
    assert inf.network_names == ("q_r",)
    assert all(k.startswith("q_r.") for k in inf.state_dict())
    # the weights the driver syncs to EnvRunners (inference-only state) fit the trimmed module
    state = full.get_state(inference_only=True)
    assert set(state) == set(inf.state_dict())
    inf.set_state(state)
    obs = torch.randn(5, OBS_DIM)
    with torch.no_grad():
        assert torch.equal(inf.q_r_values(obs), full.q_r_values(obs))


def test_target_networks():
    m = make_module()
    m.make_target_networks()
    pairs = m.get_target_network_pairs()
    assert len(pairs) == len(NETWORKS)
    for name in NETWORKS:
        main, target = m.net(name), m.net(name, target=True)
        assert main is not target
        for p, pt in zip(main.parameters(), target.parameters()):
            assert torch.equal(p, pt) and not pt.requires_grad
    obs = torch.randn(3, OBS_DIM)
    with torch.no_grad():
        assert torch.equal(m.forward_target({Columns.OBS: obs})["q_r"], m.q_r_values(obs))
        m.net("q_r", target=True)[0].weight.add_(1.0)
        assert not torch.equal(m.q_r_values(obs, target=True), m.q_r_values(obs))
    # targets are not inference attributes
    assert {f"target_{n}" for n in NETWORKS} <= set(m.get_non_inference_attributes())
    assert "q_r" not in m.get_non_inference_attributes()


def test_beta_zero_epsilon_zero_samples_uniformly():
    m = make_module(True)
    m.set_exploration(0.0, 0.0)
    torch.manual_seed(0)
    obs = torch.randn(5000, OBS_DIM)
    out = m.forward_exploration({Columns.OBS: obs})
    counts = np.bincount(out[Columns.ACTIONS].numpy(), minlength=A)
    expected = len(obs) / A
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 25.0, counts          # 4 dof: p < 1e-4 for a uniform sampler
    np.testing.assert_allclose(out[Columns.ACTION_LOGP].numpy(), np.log(1 / A), rtol=1e-6)


def test_large_beta_picks_the_argmax():
    m = make_module(True)
    obs = torch.randn(300, OBS_DIM)
    with torch.no_grad():
        best = m.q_r_values(obs).argmax(-1)
    m.set_exploration(1e6, 0.0)
    out = m.forward_exploration({Columns.OBS: obs})
    assert torch.equal(out[Columns.ACTIONS], best)
    # inference ignores epsilon: still the argmax with epsilon = 0.9
    m.set_exploration(1e6, 0.9)
    assert torch.equal(m.forward_inference({Columns.OBS: obs})[Columns.ACTIONS], best)
    # ... while exploration with epsilon = 0.9 is mostly random
    explore = m.forward_exploration({Columns.OBS: obs})[Columns.ACTIONS]
    assert (explore != best).float().mean() > 0.5


@pytest.mark.parametrize("beta,eps", [(0.0, 0.0), (2.0, 0.0), (5.0, 0.2), (1e6, 0.1)])
def test_action_logp_matches_the_probabilities(beta, eps):
    m = make_module(True, seed=3)
    with torch.no_grad():            # spread Q_r so that the policy is far from uniform
        m.q_r[-1].weight.mul_(20.0)
    m.set_exploration(beta, eps)
    obs = torch.randn(400, OBS_DIM)
    out = m.forward_exploration({Columns.OBS: obs})
    with torch.no_grad():
        q = m.q_r_values(obs).double()
    # eq. (5) by hand, then epsilon-uniform mixing
    w = (-q).clamp_min(1e-3).log() * -beta
    pi = torch.softmax(w, -1)
    probs = (1 - eps) * pi + eps / A
    expected = probs.gather(-1, out[Columns.ACTIONS][:, None]).squeeze(-1).clamp_min(1e-30).log()
    np.testing.assert_allclose(out[Columns.ACTION_LOGP].numpy(), expected.numpy(), rtol=1e-4,
                               atol=1e-5)
    if beta == 2.0:
        # the empirical action frequencies follow the same probabilities (loosely)
        obs1 = obs[:1].expand(4000, OBS_DIM)
        acts = m.forward_exploration({Columns.OBS: obs1})[Columns.ACTIONS].numpy()
        freq = np.bincount(acts, minlength=A) / len(acts)
        np.testing.assert_allclose(freq, probs[0].numpy(), atol=0.04)


def test_exploration_attributes_are_not_in_the_state():
    """beta_r and epsilon are plain attributes, so a weight sync cannot overwrite them."""
    m = make_module(True)
    m.set_exploration(3.5, 0.25)
    state = make_module(True, seed=1).get_state(inference_only=True)
    m.set_state(state)
    assert (m.beta_r, m.epsilon) == (3.5, 0.25)
    assert not any("beta" in k or "epsilon" in k for k in m.state_dict())


def test_action_sampling_follows_the_probabilities_and_never_draws_a_zero():
    """The inverse-CDF sampler of _act: frequencies match pi_r, actions of probability 0
    (first, middle and last) are never drawn, and the module's train/eval mode is untouched."""
    m = make_module(True)
    probs = torch.tensor([0.0, 0.3, 0.0, 0.7, 0.0])[:A]
    probs = probs / probs.sum()
    m._policy = lambda obs, eps: probs.expand(len(obs), A)
    torch.manual_seed(0)
    was = m.training
    acts = m.forward_exploration({Columns.OBS: torch.zeros(20000, OBS_DIM)})[Columns.ACTIONS]
    assert m.training == was
    freq = np.bincount(acts.numpy(), minlength=A) / len(acts)
    assert (freq[probs.numpy() == 0] == 0).all(), freq
    np.testing.assert_allclose(freq, probs.numpy(), atol=0.015)
