"""Eqs. (4)-(9) in rllib_empo.theory.equations against their definitions (docs/DESIGN.md, "The
mathematics"), written out with plain Python loops."""
from __future__ import annotations

import math

import pytest
import torch

from rllib_empo.theory import equations as eq

FLOOR = eq.DEFAULT_NEG_Q_R_FLOOR


def _neg_q(*shape, gen=None):
    """Random Q_r values in [-5, -0.01] (well above the floor)."""
    gen = gen or torch.Generator().manual_seed(0)
    return -(0.01 + 5 * torch.rand(*shape, generator=gen))


# ----------------------------------------------------------------------- power law (5)
@pytest.mark.parametrize("num_actions", [1, 2, 3, 5, 7, 25])
def test_beta_zero_is_exactly_uniform(num_actions):
    q = _neg_q(64, num_actions)
    pi = eq.power_law_policy(q, 0.0)
    # exactly uniform: every entry equal to the first, bit for bit
    assert torch.equal(pi, pi[:, :1].expand_as(pi))
    assert torch.allclose(pi, torch.full_like(pi, 1.0 / num_actions), rtol=0, atol=1e-7)


@pytest.mark.parametrize("beta", [0.5, 10.0, 1e3, 1e6])
def test_ties_are_exactly_uniform(beta):
    q = torch.tensor([[-0.3] * 5, [-2.0] * 5, [-1e-2] * 5, [-7.25] * 5])
    pi = eq.power_law_policy(q, beta)
    assert torch.equal(pi, pi[:, :1].expand_as(pi))
    assert torch.allclose(pi.sum(-1), torch.ones(4), atol=1e-6)


@pytest.mark.parametrize("beta", [1.0, 10.0, 100.0, 1e4, 1e6])
def test_any_beta_is_finite_and_normalised(beta):
    gen = torch.Generator().manual_seed(1)
    q = torch.cat([_neg_q(50, 6, gen=gen),
                   -torch.logspace(-8, 8, 6).expand(2, 6),       # extreme magnitudes
                   torch.zeros(1, 6)])                            # all successors terminal
    pi = eq.power_law_policy(q, beta)
    assert torch.isfinite(pi).all()
    assert (pi >= 0).all()
    assert torch.allclose(pi.sum(-1), torch.ones(len(q)), atol=1e-5)


def test_power_law_matches_definition():
    """pi(a) ∝ max(-Q(a), floor)^(-beta), computed in float64 by hand."""
    gen = torch.Generator().manual_seed(2)
    q = _neg_q(20, 4, gen=gen).double()
    for beta in (0.3, 1.0, 4.0, 10.0):
        pi = eq.power_law_policy(q, beta)
        for row, prow in zip(q.tolist(), pi.tolist()):
            w = [max(-x, FLOOR) ** (-beta) for x in row]
            expected = [x / sum(w) for x in w]
            assert prow == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_beta_as_tensor_per_row():
    q = _neg_q(3, 4)
    beta = torch.tensor([[0.0], [1.0], [5.0]])
    pi = eq.power_law_policy(q, beta)
    for i, b in enumerate((0.0, 1.0, 5.0)):
        assert torch.allclose(pi[i], eq.power_law_policy(q[i:i + 1], b)[0], atol=1e-7)


@pytest.mark.parametrize("beta", [1.0, 10.0, 1e6])
def test_q_near_zero_or_below_floor_gives_uniform(beta):
    # every -Q below the floor (including exactly 0): exactly uniform
    q = torch.tensor([[0.0, -1e-12, -1e-8, -5e-4, -FLOOR * 0.999],
                      [-0.0, 0.0, 0.0, 0.0, 0.0]])
    pi = eq.power_law_policy(q, beta)
    assert torch.equal(pi, pi[:, :1].expand_as(pi))
    assert torch.allclose(pi.sum(-1), torch.ones(2), atol=1e-6)
    # a positive Q (not a valid value, but it must not produce NaN) is treated as the floor
    q2 = torch.tensor([[1e-3, 0.5, -1e-9]])
    pi2 = eq.power_law_policy(q2, beta)
    assert torch.isfinite(pi2).all() and torch.equal(pi2, pi2[:, :1].expand_as(pi2))


def test_below_floor_actions_share_equally_with_others():
    """Two actions below the floor tie with each other and beat every action above it."""
    q = torch.tensor([[-1e-9, -1e-5, -0.5, -2.0]])
    pi = eq.power_law_policy(q, 3.0)[0]
    assert pi[0] == pi[1]
    assert pi[1] > pi[2] > pi[3]


def test_large_beta_picks_argmax():
    gen = torch.Generator().manual_seed(3)
    q = _neg_q(200, 5, gen=gen)
    pi = eq.power_law_policy(q, 1e6)
    best = q.argmax(-1)                      # least negative Q = best robot action
    assert torch.equal(pi.argmax(-1), best)
    assert torch.allclose(pi.max(-1).values, torch.ones(200), atol=1e-6)
    # and the policy concentrates monotonically with beta
    p_best = [eq.power_law_policy(q, b).gather(-1, best[:, None]).mean().item()
              for b in (0.0, 1.0, 10.0, 100.0)]
    assert p_best == sorted(p_best)


def test_epsilon_mix():
    pi = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    out = eq.epsilon_mix(pi, 0.2)
    assert torch.allclose(out, torch.tensor([[0.85, 0.05, 0.05, 0.05], [0.25] * 4]))


# ----------------------------------------------------------------- (7), (8): floors
def test_x_h_floor_keeps_u_r_finite():
    floor = 1e-3
    v = torch.zeros(3, 2, 4)                 # no power at all
    w = torch.full((3, 2, 4), 0.25)
    x = eq.x_h_from_v_h_e(v, w, zeta=2.0, x_h_floor=floor)
    assert torch.allclose(x, torch.full((3, 2), floor))
    u = eq.u_r_from_x_h(x, xi=1.0, eta=1.1, x_h_floor=floor)
    assert torch.isfinite(u).all()
    assert torch.allclose(u, torch.full((3,), -(floor ** -1.0) ** 1.1), rtol=1e-5)
    # U_r's own floor: X_h = 0 passed directly still gives a finite U_r
    u0 = eq.u_r_from_x_h(torch.zeros(2, 3), xi=2.0, eta=1.5, x_h_floor=floor)
    assert torch.isfinite(u0).all()
    assert torch.allclose(u0, torch.full((2,), -(floor ** -2.0) ** 1.5), rtol=1e-5)


def test_x_h_and_u_r_match_definitions():
    gen = torch.Generator().manual_seed(4)
    B, H, G = 6, 3, 4
    v = torch.rand(B, H, G, generator=gen, dtype=torch.float64)
    w = torch.rand(B, H, G, generator=gen, dtype=torch.float64)
    w = w / w.sum(-1, keepdim=True)
    zeta, xi, eta, floor = 2.0, 1.5, 1.1, 1e-3
    x = eq.x_h_from_v_h_e(v, w, zeta, floor)
    u = eq.u_r_from_x_h(x, xi, eta, floor)
    for b in range(B):
        xs = []
        for h in range(H):
            xh = sum(w[b, h, g].item() * v[b, h, g].item() ** zeta for g in range(G))
            xh = min(max(xh, floor), 1.0)
            xs.append(xh)
            assert x[b, h].item() == pytest.approx(xh, rel=1e-12)
        expected_u = -(sum(xh ** -xi for xh in xs) / H) ** eta
        assert u[b].item() == pytest.approx(expected_u, rel=1e-12)
        assert u[b].item() <= -1.0
    # a single goal with V_h^e = 1 gives X_h = 1 and U_r = -1 exactly
    one = eq.u_r_from_x_h(eq.x_h_from_v_h_e(torch.ones(1, 2, 1), torch.ones(1, 2, 1), zeta, floor),
                          xi, eta, floor)
    assert one.item() == -1.0


def test_v_r_from_matches_definition():
    gen = torch.Generator().manual_seed(5)
    q = _neg_q(7, 3, gen=gen).double()
    pi = eq.power_law_policy(q, 2.0)
    u = -(1 + torch.rand(7, generator=gen, dtype=torch.float64))
    v = eq.v_r_from(u, pi, q)
    for b in range(7):
        assert v[b].item() == pytest.approx(u[b].item() + sum(pi[b, a].item() * q[b, a].item()
                                                             for a in range(3)), rel=1e-12)


# -------------------------------------------------------- (4), (6) over successor tables
def _random_tables(gen, B=5, A=4, K=6):
    probs = torch.rand(B, A, K, generator=gen, dtype=torch.float64)
    probs[:, :, -1] = 0.0                                           # padding successor
    probs = probs / probs.sum(-1, keepdim=True)
    term = (torch.rand(B, K, generator=gen) < 0.4).double()
    return probs, term


def test_q_r_from_successors_matches_loop():
    gen = torch.Generator().manual_seed(6)
    B, A, K, gamma = 5, 4, 6, 0.9
    probs, term = _random_tables(gen, B, A, K)
    v_next = -(1 + 3 * torch.rand(B, K, generator=gen, dtype=torch.float64))
    q = eq.q_r_from_successors(probs, v_next, term, gamma)
    assert q.shape == (B, A)
    for b in range(B):
        for a in range(A):
            expected = gamma * sum(probs[b, a, k].item() * (0.0 if term[b, k] else v_next[b, k].item())
                                   for k in range(K))
            assert q[b, a].item() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert (q <= 0).all()


def test_v_h_e_from_successors_matches_loop():
    gen = torch.Generator().manual_seed(7)
    B, A, K, gamma = 5, 4, 6, 0.95
    probs, term = _random_tables(gen, B, A, K)
    pi = eq.power_law_policy(-(0.1 + torch.rand(B, A, generator=gen, dtype=torch.float64)), 3.0)
    ach = (torch.rand(B, K, generator=gen) < 0.3).double()
    v_next = torch.rand(B, K, generator=gen, dtype=torch.float64)
    v = eq.v_h_e_from_successors(pi, probs, ach, term, v_next, gamma)
    assert v.shape == (B,)
    for b in range(B):
        expected = 0.0
        for a in range(A):
            for k in range(K):
                if ach[b, k]:
                    value = 1.0                       # achieved, even in a terminal state
                elif term[b, k]:
                    value = 0.0                       # terminal: V_h^e = 0
                else:
                    value = gamma * v_next[b, k].item()
                expected += pi[b, a].item() * probs[b, a, k].item() * value
        assert v[b].item() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert ((v >= 0) & (v <= 1)).all()


def test_terminal_successors_contribute_zero():
    probs = torch.tensor([[[0.5, 0.5]], [[0.5, 0.5]]])          # B=2, A=1, K=2
    term = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    huge = torch.tensor([[-1e6, -2.0], [-1e6, -1e6]])            # terminal value ignored
    q = eq.q_r_from_successors(probs, huge, term, 0.5)
    assert q[0, 0].item() == pytest.approx(0.5 * 0.5 * -2.0)
    assert q[1, 0].item() == 0.0
    pi = torch.ones(2, 1)
    v = eq.v_h_e_from_successors(pi, probs, torch.zeros(2, 2), term,
                                 torch.tensor([[1.0, 0.8], [1.0, 1.0]]), 0.5)
    assert v[0].item() == pytest.approx(0.5 * 0.5 * 0.8)
    assert v[1].item() == 0.0


def test_goal_achieved_in_last_step_counts():
    """A goal achieved on entering a terminal state counts 1, as in any other state."""
    probs = torch.tensor([[[0.25, 0.75]]])
    term = torch.tensor([[1.0, 1.0]])
    ach = torch.tensor([[1.0, 0.0]])
    v = eq.v_h_e_from_successors(torch.ones(1, 1), probs, ach, term, torch.ones(1, 2), 0.9)
    assert v.item() == pytest.approx(0.25)
    # and an achieved goal is not discounted nor continued
    v2 = eq.v_h_e_from_successors(torch.ones(1, 1), probs, torch.ones(1, 2), torch.zeros(1, 2),
                                  torch.ones(1, 2), 0.5)
    assert v2.item() == pytest.approx(1.0)


def test_boltzmann_policy():
    q = torch.tensor([[0.0, 1.0, 2.0]])
    pi = eq.boltzmann_policy(q, 2.0)
    e = [math.exp(2.0 * x) for x in (0.0, 1.0, 2.0)]
    assert pi[0].tolist() == pytest.approx([x / sum(e) for x in e])
