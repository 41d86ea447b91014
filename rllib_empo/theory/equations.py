"""EMPO phase 2, eqs. (4)-(9) of arXiv 2508.00159, as pure tensor functions.

Both the learner (float32, batched over transitions) and the exact solver (float64, batched
over the states of one level of the state DAG) compute every quantity with these functions,
so the two solve the same equations by construction.

Conventions (docs/DESIGN.md, "The mathematics"):

    (4) Q_r(s,a_r)   = gamma_r * E_g E_{a_H ~ pi_H(s,g)} E_{s'} [ V_r(s') ]
    (5) pi_r(a_r|s)  ∝ (-Q_r(s,a_r)) ** (-beta_r)                  (beta_r = 0 -> uniform)
    (6) V_h^e(s,g_h) = E_{g_-h} E_{a_H} E_{a_r ~ pi_r(s)} E_{s'} [ 1{g_h in s'}
                                  + (1 - 1{g_h in s'}) * gamma_h * V_h^e(s',g_h) ]
    (7) X_h(s)       = sum_g w(g) * V_h^e(s,g) ** zeta               (weights sum to 1)
    (8) U_r(s)       = -( mean_h X_h(s) ** (-xi) ) ** eta
    (9) V_r(s)       = U_r(s) + sum_a pi_r(a|s) * Q_r(s,a)

Ranges: Q_r <= 0, V_r <= 0, 0 <= V_h^e <= 1, x_h_floor <= X_h <= 1, U_r <= -1.
Terminal states have V_r = 0 and V_h^e = 0; achieving a goal in the last step still counts.
"""
from __future__ import annotations

import torch

# Default lower bound of -Q_r in the power law (5), shared by EmpoConfig.neg_q_r_floor and
# exact.solve. Q_r = 0 (every successor terminal) stays defined, and values that differ only
# below the floor give exactly the uniform policy. Real values are >= gamma_r times the
# probability of a non-terminal successor (V_r <= U_r <= -1 there), so the floor only
# matters where that probability is below ~1e-3.
DEFAULT_NEG_Q_R_FLOOR = 1e-3
# Default lower bound of X_h, shared by EmpoConfig.x_h_floor and exact.solve, so that U_r
# stays finite when a human has no power left.
DEFAULT_X_H_FLOOR = 1e-3


def power_law_policy(q_r: torch.Tensor, beta_r,
                     neg_q_r_floor: float = DEFAULT_NEG_Q_R_FLOOR) -> torch.Tensor:
    """Eq. (5): pi_r(a|s) ∝ max(-Q_r(s,a), neg_q_r_floor)^(-beta_r), over the last axis.

    Computed as softmax(-beta_r * log(-Q_r)), which cannot overflow for any beta_r >= 0
    (1e6 included) and gives exactly the uniform policy for beta_r = 0 or tied Q values.
    ``beta_r`` is a float or a tensor broadcastable to ``q_r[..., :1]``.
    """
    log_neg_q = torch.log((-q_r).clamp_min(neg_q_r_floor))
    # Shift so the largest logit is 0 before scaling: beta_r * log(-Q) alone overflows to
    # inf - inf = NaN for beta_r beyond ~1e37.
    log_neg_q = log_neg_q - log_neg_q.amin(-1, keepdim=True)
    return torch.softmax(-beta_r * log_neg_q, dim=-1)


def epsilon_mix(pi: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Exploration: (1 - epsilon) * pi + epsilon * uniform."""
    return (1.0 - epsilon) * pi + epsilon / pi.shape[-1]


def q_r_from_successors(probs: torch.Tensor, succ_v_r: torch.Tensor,
                        succ_terminal: torch.Tensor, gamma_r: float) -> torch.Tensor:
    """Eq. (4) with the expectation as an exact sum over successors.

    probs [..., A_r, K]: P(s'_k | s, a_r) with human actions (and goals) summed out.
    succ_v_r [..., K]: V_r(s'_k); succ_terminal [..., K] in {0, 1}: terminal successors count
    V_r = 0. Returns [..., A_r].
    """
    v = (1.0 - succ_terminal) * succ_v_r
    return gamma_r * (probs * v.unsqueeze(-2)).sum(-1)


def v_h_e_from_successors(pi_r: torch.Tensor, probs: torch.Tensor, achieved: torch.Tensor,
                          succ_terminal: torch.Tensor, succ_v_h_e: torch.Tensor,
                          gamma_h: float) -> torch.Tensor:
    """Eq. (6) with the expectations over a_r and s' as exact sums.

    pi_r [..., A_r]; probs [..., A_r, K]: P(s'_k | s, a_r) with human h acting for g_h and the
    other humans' goals and actions summed out; achieved [..., K]: 1{g_h achieved in s'_k};
    succ_terminal [..., K]; succ_v_h_e [..., K]: V_h^e(s'_k, g_h). Returns [...].
    """
    p_succ = (pi_r.unsqueeze(-1) * probs).sum(-2)
    cont = (1.0 - achieved) * (1.0 - succ_terminal) * gamma_h * succ_v_h_e
    return (p_succ * (achieved + cont)).sum(-1)


def x_h_from_v_h_e(v_h_e: torch.Tensor, weights: torch.Tensor, zeta: float,
                   x_h_floor: float) -> torch.Tensor:
    """Eq. (7): X_h = sum_g w(g) V_h^e(s,g)^zeta over the last axis, kept in [x_h_floor, 1]."""
    return (weights * v_h_e.clamp(0.0, 1.0).pow(zeta)).sum(-1).clamp(x_h_floor, 1.0)


def u_r_from_x_h(x_h: torch.Tensor, xi: float, eta: float, x_h_floor: float) -> torch.Tensor:
    """Eq. (8): U_r = -(mean_h X_h^(-xi))^eta over the last axis (humans). U_r <= -1 when
    every X_h <= 1; the floor keeps it finite."""
    return -x_h.clamp(x_h_floor, 1.0).pow(-xi).mean(-1).pow(eta)


def v_r_from(u_r: torch.Tensor, pi_r: torch.Tensor, q_r: torch.Tensor) -> torch.Tensor:
    """Eq. (9): V_r = U_r + sum_a pi_r(a) Q_r(a)."""
    return u_r + (pi_r * q_r).sum(-1)


def boltzmann_policy(q_h: torch.Tensor, beta_h: float) -> torch.Tensor:
    """Phase-1 human prior: softmax(beta_h * Q_h) over the last axis."""
    return torch.softmax(beta_h * q_h, dim=-1)
