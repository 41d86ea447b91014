"""Model-based targets of the five networks, vectorised over a batch of rows and successors.

Every target uses the *target* networks (marked ^T) and the formulas of ``equations``:

    V_h^e target : sum_k [sum_a pi_r^T(a|s) P_h(k|a)] (ach + (1-ach)(1-term) gamma_h V_h^e^T(s'_k, g))
    X_h target   : sum_g w(g) V_h^e^T(s, g)^zeta                         (eq. 7)
    U_r target   : -(mean_h X_h^T(s)^-xi)^eta                            (eq. 8)
    Q_r target   : gamma_r sum_k P(k|a_r) (1-term_k) V_r^T(s'_k)          (eq. 4)
    V_r target   : U_r^T(s) + sum_a pi_r^T(a|s) Q_r^T(s,a)                 (eq. 9)

where X_h^T, U_r^T and V_r^T come from their target network when that network exists and
are otherwise computed from the networks below them ("direct" mode, docs/DESIGN.md):
X_h^T from V_h^e^T over the goal table, U_r^T from X_h^T, V_r^T from U_r^T and Q_r^T.
pi_r^T uses the beta_r of the current warm-up step.
"""
from __future__ import annotations

import torch

from rllib_empo.theory import equations as eq
from rllib_empo.theory.params import EmpoParams


def x_h_at(module, obs, goal_enc, goal_w, th: EmpoParams, target: bool = True):
    """X_h at states obs [..., D] -> [..., H]: the network, or directly from V_h^e over the
    goal table (goal_enc [..., H, G, Dg], goal_w [..., H, G]) by eq. (7). ``target``: the
    target networks (for targets) or the main ones (for evaluation)."""
    if "x_h" in module.network_names:
        return module.x_h_values(obs, target=target)
    v = module.v_h_e_values(obs[..., None, None, :], module.goal_inputs(goal_enc), target=target)
    return eq.x_h_from_v_h_e(v, goal_w, th.zeta, th.x_h_floor)


def u_r_at(module, obs, goal_enc, goal_w, th: EmpoParams, target: bool = True):
    """U_r at states obs [..., D] -> [...]: the network, or eq. (8) of :func:`x_h_at`."""
    if "u_r" in module.network_names:
        return module.u_r_values(obs, target=target)
    return eq.u_r_from_x_h(x_h_at(module, obs, goal_enc, goal_w, th, target), th.xi, th.eta,
                           th.x_h_floor)


def v_r_at(module, obs, goal_enc, goal_w, beta_r, th: EmpoParams, target: bool = True):
    """V_r at states obs [..., D] -> [...]: the network, or eq. (9) of Q_r, pi_r at ``beta_r``
    and :func:`u_r_at`."""
    if "v_r" in module.network_names:
        return module.v_r_values(obs, target=target)
    q = module.q_r_values(obs, target=target)
    pi = th.policy(q, beta_r)
    return eq.v_r_from(u_r_at(module, obs, goal_enc, goal_w, th, target), pi, q)


def _v_h_e_at_successors(module, batch: dict, term: torch.Tensor) -> torch.Tensor:
    """V_h^e^T(s'_k, g) [B, H, M, K], evaluated only where eq. (6) uses it: successors that
    some robot action reaches, that are not terminal and where the goal is not yet achieved
    (elsewhere it is multiplied by 0). On rock_gate that skips most of the padded entries."""
    probs, ach = batch["vhe_probs"], batch["vhe_achieved"]
    needed = (probs.sum(-2) > 0) & (term == 0) & (ach == 0) & (batch["vhe_mask"][..., None] > 0)
    b, h, m, k = needed.nonzero(as_tuple=True)
    out = torch.zeros_like(ach)
    if b.numel():
        goal = module.goal_inputs(batch["vhe_goal"])                       # [B, H, M, Dg+H]
        out[b, h, m, k] = module.v_h_e_values(batch["succ_obs"][b, k], goal[b, h, m],
                                              target=True)
    return out


def compute_targets(module, batch: dict, networks, beta_r: float, th: EmpoParams) -> dict:
    """Targets for ``networks`` (a subset of the module's networks), without gradients.

    Shapes: q_r [B, A_r], v_h_e [B, H, M], x_h [B, H], u_r [B], v_r [B].
    """
    out = {}
    obs = batch["obs"]
    with torch.no_grad():
        pi_s = None
        if {"v_h_e", "v_r"} & set(networks):
            q_s = module.q_r_values(obs, target=True)
            pi_s = th.policy(q_s, beta_r)
        if "v_h_e" in networks:
            term = batch["succ_terminal"][:, None, None, :]
            v_next = _v_h_e_at_successors(module, batch, term)             # [B, H, M, K]
            out["v_h_e"] = eq.v_h_e_from_successors(pi_s[:, None, None, :], batch["vhe_probs"],
                                                    batch["vhe_achieved"], term, v_next,
                                                    th.gamma_h)
        if "x_h" in networks:
            v = module.v_h_e_values(obs[:, None, None, :], module.goal_inputs(batch["goal_enc"]),
                                    target=True)
            out["x_h"] = eq.x_h_from_v_h_e(v, batch["goal_w"], th.zeta, th.x_h_floor)
        if "u_r" in networks:
            x = x_h_at(module, obs, batch["goal_enc"], batch["goal_w"], th)
            out["u_r"] = eq.u_r_from_x_h(x, th.xi, th.eta, th.x_h_floor)
        if "q_r" in networks:
            v_next = v_r_at(module, batch["succ_obs"], batch.get("succ_goal_enc"),
                            batch.get("succ_goal_w"), beta_r, th)              # [B, K]
            out["q_r"] = eq.q_r_from_successors(batch["probs"], v_next, batch["succ_terminal"],
                                                th.gamma_r)
        if "v_r" in networks:
            u = u_r_at(module, obs, batch["goal_enc"], batch["goal_w"], th)
            out["v_r"] = eq.v_r_from(u, pi_s, module.q_r_values(obs, target=True))
    return out


def loss_masks(batch: dict) -> dict:
    """Which prediction entries are real: Q_r only for robot actions with a successor table
    (all of them in model-based mode, the action taken in sampled mode); V_h^e only for
    non-padding goals."""
    return {"q_r": (batch["probs"].sum(-1) > 0).to(batch["probs"].dtype),
            "v_h_e": batch["vhe_mask"]}


# Networks whose values span orders of magnitude: Q_r, U_r, V_r (negative) and X_h
# (positive, between x_h_floor and 1).
LOG_SPACE_NETWORKS = ("q_r", "u_r", "v_r", "x_h")
# Targets below this magnitude are regressed as this (log 0 is -inf). It lies well below any
# neg_q_r_floor, so Q_r values learned for "every successor terminal" (target 0) fall under
# the policy's floor and give exactly the uniform policy there, as in the exact solution.
LOG_TARGET_FLOOR = 1e-6


def value_loss(name: str, pred: torch.Tensor, target: torch.Tensor, mask, space: str):
    """MSE of ``name``'s prediction; in ``space == "log"`` the MSE of log|value| for the
    networks in LOG_SPACE_NETWORKS, i.e. of relative errors, which is what U_r (8) and the
    power law (5) are sensitive to, and cross-entropy for V_h^e.
    Unbiased when the targets are exact expectations (model-based targets); with sampled
    targets use ``space == "mse"``."""
    if space == "log" and name == "v_h_e":
        # Binary cross-entropy with soft targets: a proper scoring rule whose gradient does
        # not vanish near 0 and 1, where X_h = sum w V^zeta needs V_h^e most precisely.
        p = pred.clamp(1e-7, 1 - 1e-7)
        ce = -(target * torch.log(p) + (1 - target) * torch.log1p(-p))
        return masked_mean(ce, mask)
    if space == "log" and name in LOG_SPACE_NETWORKS:
        sign = 1.0 if name == "x_h" else -1.0
        pred = torch.log(sign * pred)
        target = torch.log((sign * target).clamp_min(LOG_TARGET_FLOOR))
    return masked_mse(pred, target, mask)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None):
    return masked_mean((pred - target) ** 2, mask)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None):
    if mask is None:
        return x.mean()
    return (x * mask).sum() / mask.sum().clamp_min(1.0)
