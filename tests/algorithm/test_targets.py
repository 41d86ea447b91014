"""The target formulas match a brute-force per-transition computation on random batches.

``targets.compute_targets`` (vectorised over rows, humans, goals, robot actions and
successors) is compared with a per-row Python loop written directly from docs/DESIGN.md ("Data
flow"), which calls the module's *target* heads one row (one state) at a time, for every
combination of x_h/u_r/v_r_use_network. The target networks are perturbed away from the main
networks first, so that reading a main network instead of its target copy fails the test.
"""
from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch

from rllib_empo.algorithm.module import EmpoRLModule
from rllib_empo.algorithm.tables import TableSpec
from rllib_empo.theory.params import EmpoParams
from rllib_empo.algorithm.targets import (LOG_TARGET_FLOOR, compute_targets, loss_masks,
                                value_loss)

D, DG, H, A, K, G = 9, 4, 2, 4, 5, 3
TH = EmpoParams(gamma_h=0.9, gamma_r=0.8, zeta=2.0, xi=1.5, eta=1.2, x_h_floor=1e-3,
            neg_q_r_floor=1e-3)
BETA = 3.0
FLAGS = list(itertools.product([True, False], repeat=3))   # x_h, u_r, v_r _use_network


def model_config(x_h, u_r, v_r):
    """What EmpoConfig._model_config_auto_includes produces (tests/test_config checks that)."""
    return {"hidden_sizes": (16, 16), "num_humans": H, "goal_dim": DG, "x_h_use_network": x_h,
            "u_r_use_network": u_r, "v_r_use_network": v_r, "x_h_floor": TH.x_h_floor,
            "neg_q_r_floor": TH.neg_q_r_floor}


def make_module(x_h, u_r, v_r, seed=0):
    torch.manual_seed(seed)
    m = EmpoRLModule(observation_space=gym.spaces.Box(-np.inf, np.inf, (D,), np.float32),
                     action_space=gym.spaces.Discrete(A), model_config=model_config(x_h, u_r, v_r))
    m.make_target_networks()
    with torch.no_grad():            # targets differ from the main networks
        for name in m.network_names:
            for p in m.net(name, target=True).parameters():
                p.add_(0.3 * torch.randn_like(p))
    return m


def spec(x_h, u_r, v_r):
    return TableSpec(obs_dim=D, goal_dim=DG, num_humans=H, num_robot_actions=A, num_actions=A,
                     max_successors=K, max_goals=G, mode="sum",
                     succ_goals=not (x_h or u_r or v_r))


def random_batch(sp: TableSpec, B=6, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    shapes = sp.shapes()
    f = np.float32
    batch = {"obs": rng.normal(size=(B, D)).astype(f),
             "succ_obs": rng.normal(size=(B, K, D)).astype(f),
             "succ_terminal": (rng.random((B, K)) < 0.3).astype(f),
             "vhe_goal": rng.normal(size=(B, H, sp.vhe_goals, DG)).astype(f),
             "vhe_achieved": (rng.random((B, H, sp.vhe_goals, K)) < 0.3).astype(f),
             "vhe_mask": (rng.random((B, H, sp.vhe_goals)) < 0.8).astype(f),
             "goal_enc": rng.normal(size=(B, H, G, DG)).astype(f)}
    probs = rng.random((B, A, K))
    probs[:, :, -1] = 0.0                                  # a padding successor column
    batch["probs"] = (probs / probs.sum(-1, keepdims=True)).astype(f)
    vp = rng.random((B, H, sp.vhe_goals, A, K))
    batch["vhe_probs"] = (vp / vp.sum(-1, keepdims=True)).astype(f)
    w = rng.random((B, H, G))
    w[:, :, -1] = 0.0                                      # a padding goal
    w = w / w.sum(-1, keepdims=True)
    w[0, 1] = 0.0                                          # a human without power: X_h floor
    batch["goal_w"] = w.astype(f)
    if sp.succ_goals:
        batch["succ_goal_enc"] = rng.normal(size=(B, K, H, G, DG)).astype(f)
        sw = rng.random((B, K, H, G))
        batch["succ_goal_w"] = (sw / sw.sum(-1, keepdims=True)).astype(f)
    assert {k: v.shape[1:] for k, v in batch.items()} == shapes
    return {k: torch.from_numpy(v) for k, v in batch.items()}


# ------------------------------------------------------------ brute force, one row at a time
class BruteForce:
    """Eqs. (4)-(9) as written in docs/DESIGN.md, with the target networks evaluated per state."""

    def __init__(self, m: EmpoRLModule):
        self.m = m
        self.nets = set(m.network_names)

    # the target heads, one state at a time
    def q(self, s):
        with torch.no_grad():
            return self.m.q_r_values(s[None], target=True)[0].double().numpy()

    def v_h_e(self, s, goal, h):
        gi = torch.cat([goal, torch.nn.functional.one_hot(torch.tensor(h), H).float()])
        with torch.no_grad():
            return float(self.m.v_h_e_values(s[None], gi[None], target=True)[0])

    def pi(self, q, beta):
        w = np.array([max(-x, TH.neg_q_r_floor) ** (-beta) for x in q])
        return w / w.sum()

    def x_h(self, s, genc, gw):
        if "x_h" in self.nets:
            with torch.no_grad():
                return self.m.x_h_values(s[None], target=True)[0].double().numpy()
        return self.x_h_direct(s, genc, gw)

    def x_h_direct(self, s, genc, gw):
        out = []
        for h in range(H):
            x = sum(float(gw[h, g]) * min(max(self.v_h_e(s, genc[h, g], h), 0.0), 1.0) ** TH.zeta
                    for g in range(G))
            out.append(min(max(x, TH.x_h_floor), 1.0))
        return np.array(out)

    def u_r(self, s, genc, gw):
        if "u_r" in self.nets:
            with torch.no_grad():
                return float(self.m.u_r_values(s[None], target=True)[0])
        x = self.x_h(s, genc, gw)
        return -(np.mean([max(xh, TH.x_h_floor) ** (-TH.xi) for xh in x])) ** TH.eta

    def v_r(self, s, genc, gw, beta):
        if "v_r" in self.nets:
            with torch.no_grad():
                return float(self.m.v_r_values(s[None], target=True)[0])
        q = self.q(s)
        return self.u_r(s, genc, gw) + float(self.pi(q, beta) @ q)

    def targets(self, batch, beta):
        B = len(batch["obs"])
        M = batch["vhe_goal"].shape[2]
        out = {"v_h_e": np.zeros((B, H, M)), "x_h": np.zeros((B, H)), "u_r": np.zeros(B),
               "q_r": np.zeros((B, A)), "v_r": np.zeros(B)}
        for b in range(B):
            s = batch["obs"][b]
            q_s = self.q(s)
            pi_s = self.pi(q_s, beta)
            # V_h^e: sum_k [sum_a pi(a|s) P_h(k|a)] (ach + (1-ach)(1-term) gamma_h V_h^e(s'_k, g))
            for h in range(H):
                for mm in range(M):
                    total = 0.0
                    for k in range(K):
                        p_k = sum(pi_s[a] * float(batch["vhe_probs"][b, h, mm, a, k])
                                  for a in range(A))
                        ach = float(batch["vhe_achieved"][b, h, mm, k])
                        term = float(batch["succ_terminal"][b, k])
                        v_next = self.v_h_e(batch["succ_obs"][b, k], batch["vhe_goal"][b, h, mm], h)
                        total += p_k * (ach + (1 - ach) * (1 - term) * TH.gamma_h * v_next)
                    out["v_h_e"][b, h, mm] = total
            # X_h target: sum_g w(g) V_h^e(s, g)^zeta (always from V_h^e^T)
            out["x_h"][b] = self.x_h_direct(s, batch["goal_enc"][b], batch["goal_w"][b])
            # U_r target: -(mean_h X_h(s)^-xi)^eta with X_h^T from its network if any
            out["u_r"][b] = -(np.mean(self.x_h(s, batch["goal_enc"][b], batch["goal_w"][b])
                                      ** (-TH.xi))) ** TH.eta
            # Q_r: gamma_r sum_k P(k|a) (1-term_k) V_r^T(s'_k)
            for a in range(A):
                total = 0.0
                for k in range(K):
                    p = float(batch["probs"][b, a, k])
                    term = float(batch["succ_terminal"][b, k])
                    if p == 0.0 or term:
                        continue
                    genc = batch["succ_goal_enc"][b, k] if "succ_goal_enc" in batch else None
                    gw = batch["succ_goal_w"][b, k] if "succ_goal_w" in batch else None
                    total += p * self.v_r(batch["succ_obs"][b, k], genc, gw, beta)
                out["q_r"][b, a] = TH.gamma_r * total
            # V_r: U_r^T(s) + sum_a pi(a|s) Q_r^T(s, a)
            out["v_r"][b] = self.u_r(s, batch["goal_enc"][b], batch["goal_w"][b]) + pi_s @ q_s
        return out


def assert_targets_close(name, got, expected, batch, what=""):
    """V_h^e targets are compared where ``vhe_mask`` is set: a masked (padding) goal slot is
    never read by the loss, and compute_targets skips its successor evaluations on purpose."""
    got = got.numpy()
    if name == "v_h_e":
        keep = batch["vhe_mask"].numpy() > 0
        assert keep.any() and (~keep).any()      # the batch exercises both cases
        got, expected = got[keep], expected[keep]
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-6,
                               err_msg=f"target of {name} {what}")


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "x%d-u%d-v%d" % f)
def test_compute_targets_matches_brute_force(flags):
    sp = spec(*flags)
    m = make_module(*flags)
    assert set(m.network_names) == {"v_h_e", "q_r"} | {
        n for n, on in zip(("x_h", "u_r", "v_r"), flags) if on}
    batch = random_batch(sp, seed=sum(f << i for i, f in enumerate(flags)))
    assert ("succ_goal_enc" in batch) == (not any(flags))
    got = compute_targets(m, batch, m.network_names, BETA, TH)
    assert set(got) == set(m.network_names)
    expected = BruteForce(m).targets(batch, BETA)
    for name, value in got.items():
        assert not value.requires_grad
        assert value.shape == expected[name].shape, name
        assert_targets_close(name, value, expected[name], batch, f"flags {flags}")
    # the computed targets respect the ranges of the quantities they estimate
    assert ((got["v_h_e"] >= 0) & (got["v_h_e"] <= 1 + 1e-6)).all()
    assert (got["q_r"] <= 0).all()
    if "u_r" in got:
        assert (got["u_r"] <= -1 + 1e-6).all()
    if "x_h" in got:
        assert ((got["x_h"] >= TH.x_h_floor) & (got["x_h"] <= 1)).all()


def test_targets_of_a_subset_and_beta_dependence():
    m = make_module(True, True, True)
    batch = random_batch(spec(True, True, True), seed=11)
    only = compute_targets(m, batch, ("v_h_e",), BETA, TH)
    assert set(only) == {"v_h_e"}
    full = compute_targets(m, batch, m.network_names, BETA, TH)
    assert torch.equal(only["v_h_e"], full["v_h_e"])
    # beta_r enters V_h^e and V_r through pi_r^T; beta_r = 0 is the uniform policy
    zero = compute_targets(m, batch, ("v_h_e", "v_r"), 0.0, TH)
    assert not torch.allclose(zero["v_r"], full["v_r"])
    bf = BruteForce(m).targets(batch, 0.0)
    assert_targets_close("v_h_e", zero["v_h_e"], bf["v_h_e"], batch, "at beta_r = 0")
    assert_targets_close("v_r", zero["v_r"], bf["v_r"], batch, "at beta_r = 0")


def test_targets_ignore_the_main_networks():
    """Changing the main networks (not their targets) leaves every target unchanged."""
    m = make_module(False, False, False)
    batch = random_batch(spec(False, False, False), seed=5)
    before = compute_targets(m, batch, m.network_names, BETA, TH)
    with torch.no_grad():
        for name in m.network_names:
            for p in m.net(name).parameters():
                p.add_(1.0)
    after = compute_targets(m, batch, m.network_names, BETA, TH)
    for name in before:
        assert torch.equal(before[name], after[name]), name


def test_terminal_successors_and_achievement_in_targets():
    """All successors terminal: Q_r target 0; V_h^e target = P(goal achieved on entering)."""
    m = make_module(True, False, False)
    batch = random_batch(spec(True, False, False), seed=3)
    batch["succ_terminal"] = torch.ones_like(batch["succ_terminal"])
    got = compute_targets(m, batch, m.network_names, BETA, TH)
    assert torch.equal(got["q_r"], torch.zeros_like(got["q_r"]))
    pi = BruteForce(m)
    for b in range(len(batch["obs"])):
        p_s = pi.pi(pi.q(batch["obs"][b]), BETA)
        for h in range(H):
            for mm in range(G):
                p_k = np.einsum("a,ak->k", p_s, batch["vhe_probs"][b, h, mm].double().numpy())
                expected = float(p_k @ batch["vhe_achieved"][b, h, mm].double().numpy())
                assert got["v_h_e"][b, h, mm].item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


# --------------------------------------------------------------------- losses and masks
def _loss_by_hand(name, pred, target, mask, space):
    """value_loss's documented definition (targets.py, config field value_loss): in "log"
    space the MSE of log|value| for q_r, u_r, v_r, x_h and the cross-entropy with soft
    targets for v_h_e; plain MSE otherwise; averaged over the mask's ones."""
    pred, target = pred.double().numpy(), target.double().numpy()
    if space == "log" and name in ("q_r", "u_r", "v_r", "x_h"):
        sign = 1.0 if name == "x_h" else -1.0
        pred = np.log(sign * pred)
        target = np.log(np.maximum(sign * target, LOG_TARGET_FLOOR))
    if space == "log" and name == "v_h_e":
        p = np.clip(pred, 1e-7, 1 - 1e-7)
        err = -(target * np.log(p) + (1 - target) * np.log(1 - p))
    else:
        err = (pred - target) ** 2
    if mask is None:
        return err.mean()
    mask = mask.double().numpy()
    return (err * mask).sum() / max(mask.sum(), 1.0)


@pytest.mark.parametrize("space", ["log", "mse"])
def test_value_loss(space):
    g = torch.Generator().manual_seed(0)
    cases = {
        "q_r": (-torch.rand(6, A, generator=g) - 0.01,
                torch.cat([-torch.rand(5, A, generator=g) - 0.01, torch.zeros(1, A)]),
                (torch.rand(6, A, generator=g) < 0.7).float()),
        "v_h_e": (torch.rand(6, H, G, generator=g), torch.rand(6, H, G, generator=g),
                  (torch.rand(6, H, G, generator=g) < 0.7).float()),
        "x_h": (torch.rand(6, H, generator=g) * 0.9 + 0.05, torch.rand(6, H, generator=g) * 0.9 + 0.05,
                None),
        "u_r": (-1 - 5 * torch.rand(6, generator=g), -1 - 5 * torch.rand(6, generator=g), None),
        "v_r": (-0.1 - 5 * torch.rand(6, generator=g), -0.1 - 5 * torch.rand(6, generator=g), None),
    }
    for name, (pred, target, mask) in cases.items():
        loss = value_loss(name, pred, target, mask, space)
        assert loss.shape == () and torch.isfinite(loss)
        assert loss.item() == pytest.approx(_loss_by_hand(name, pred, target, mask, space),
                                            rel=1e-5), (name, space)
    # a zero target (every successor terminal) stays finite in log space
    q = value_loss("q_r", torch.full((2, A), -1e-3), torch.zeros(2, A), None, "log")
    assert q.item() == pytest.approx(np.log(1e3 * LOG_TARGET_FLOOR) ** 2, rel=1e-5)
    # the loss has a gradient for the prediction only where the mask is 1
    pred = cases["q_r"][0].clone().requires_grad_(True)
    value_loss("q_r", pred, cases["q_r"][1], cases["q_r"][2], space).backward()
    assert torch.equal(pred.grad != 0, cases["q_r"][2] > 0)


@pytest.mark.parametrize("space", ["log", "mse"])
def test_value_loss_all_masked_is_zero(space):
    loss = value_loss("v_h_e", torch.rand(3, 2), torch.rand(3, 2), torch.zeros(3, 2), space)
    assert loss.item() == 0.0


def test_v_h_e_loss_is_minimised_at_the_target():
    """Whatever the loss of V_h^e, its gradient vanishes at the target and points to it."""
    target = torch.tensor([0.02, 0.1, 0.5, 0.93, 0.98], dtype=torch.float64)
    for space in ("log", "mse"):
        at = target.clone().requires_grad_(True)
        value_loss("v_h_e", at, target, None, space).backward()
        assert at.grad.abs().max() < 1e-9, space
        for shift in (-0.01, 0.01):
            off = (target + shift).requires_grad_(True)
            value_loss("v_h_e", off, target, None, space).backward()
            assert (torch.sign(off.grad) == np.sign(shift)).all(), space


def test_loss_masks():
    probs = torch.zeros(3, A, K)
    probs[0] = 1.0 / K                   # model-based: every robot action has a table
    probs[1, 2, 0] = 1.0                 # sampled: only the action taken
    probs[2, 0, 1] = 0.5
    probs[2, 0, 2] = 0.5
    vhe_mask = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]], [[0.0, 0.0]]])
    masks = loss_masks({"probs": probs, "vhe_mask": vhe_mask})
    expected = torch.zeros(3, A)
    expected[0] = 1.0
    expected[1, 2] = 1.0
    expected[2, 0] = 1.0
    assert torch.equal(masks["q_r"], expected)
    assert torch.equal(masks["v_h_e"], vhe_mask)
    assert set(masks) == {"q_r", "v_h_e"}
