"""Model-based targets of the five networks, vectorised over a minibatch, and the losses.

Every target uses the *target* networks (marked ^T; their outputs per state come from the
``TargetCache`` of ``rllib_empo.algorithm.batch``) and the formulas of ``equations``:

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

from rllib_empo.algorithm.batch import Batch, TargetCache
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


def compute_targets(cache: TargetCache, b: Batch, networks, beta_r: float,
                    th: EmpoParams) -> dict:
    """Targets for ``networks`` (a subset of the module's networks) on the expanded minibatch
    ``b``, from the target networks' outputs in ``cache`` (no gradients).

    Shapes: q_r [B, A_r], v_h_e [B, H, M], x_h [B, H], u_r [B], v_r [B].
    """
    out = {}
    with torch.no_grad():
        cache.ensure(torch.unique(torch.cat([b.s, b.succ[b.succ_valid]])))
        q_s = cache.q[b.s]
        pi_s = th.policy(q_s, beta_r)
        if "v_h_e" in networks:
            term = b.succ_terminal[:, None, None, :]
            out["v_h_e"] = eq.v_h_e_from_successors(pi_s[:, None, None, :], b.vhe_probs,
                                                    b.achieved, term,
                                                    cache.v_h_e_at_successors(b), th.gamma_h)
        if "x_h" in networks:
            out["x_h"] = eq.x_h_from_v_h_e(cache.vhe[b.s], b.goal_w, th.zeta, th.x_h_floor)
        if "u_r" in networks:
            out["u_r"] = eq.u_r_from_x_h(cache.x[b.s], th.xi, th.eta, th.x_h_floor)
        if "q_r" in networks:
            if "v_r" in cache.module.network_names:
                v_next = cache.v_r[b.succ]
            else:
                q_next = cache.q[b.succ]
                v_next = eq.v_r_from(cache.u[b.succ], th.policy(q_next, beta_r), q_next)
            out["q_r"] = eq.q_r_from_successors(b.probs, v_next, b.succ_terminal, th.gamma_r)
        if "v_r" in networks:
            out["v_r"] = eq.v_r_from(cache.u[b.s], pi_s, q_s)
    return out


def loss_masks(b: Batch) -> dict:
    """Which prediction entries are real: Q_r only for robot actions with a successor table
    (all of them in model-based mode, the action taken in sampled mode); V_h^e only for
    non-padding goals."""
    return {"q_r": b.q_mask, "v_h_e": b.goal_mask}


# Networks whose values span orders of magnitude: Q_r, U_r, V_r (negative) and X_h
# (positive, between x_h_floor and 1).
LOG_SPACE_NETWORKS = ("q_r", "u_r", "v_r", "x_h")
# Targets below this magnitude are regressed as this (log 0 is -inf). It lies well below any
# neg_q_r_floor, so Q_r values learned for "every successor terminal" (target 0) fall under
# the policy's floor and give exactly the uniform policy there, as in the exact solution.
LOG_TARGET_FLOOR = 1e-6


def residuals(cache: TargetCache, b: Batch, beta_r: float, th: EmpoParams) -> dict:
    """How far each network of ``cache.module`` is from its own fixed point on the batch
    ``b``: the model-based targets are exact expectations given the target networks, so
    |prediction - target| measures it. For the log-space networks (q_r, u_r, v_r, x_h) it is
    |log(prediction / target)|, about the relative error, with magnitudes below the floors
    that make them irrelevant (neg_q_r_floor, x_h_floor; |U_r| >= 1) counted as the floor;
    for v_h_e it is absolute. Returns ``{net: mean, net_max: max}`` over the entries the
    losses use, and ``policy_change``: the mean TV between pi_r of the current and of the
    target q_r (the q_r of the last target copy) at the nominal beta_r. Targets use
    ``beta_r``."""
    module = cache.module
    targets = compute_targets(cache, b, module.network_names, beta_r, th)
    pred = {"q_r": module.q_r_values(b.obs),
            "v_h_e": module.v_h_e_values(b.obs[:, None, None, :], module.goal_inputs(b.goal_enc))}
    for name in ("x_h", "u_r", "v_r"):
        if name in module.network_names:
            pred[name] = getattr(module, f"{name}_values")(b.obs)
    masks = loss_masks(b)
    scale = {"q_r": th.neg_q_r_floor, "v_r": th.neg_q_r_floor, "x_h": th.x_h_floor, "u_r": 1.0}
    out = {}
    for name, p in pred.items():
        if name in LOG_SPACE_NETWORKS:
            err = (p.abs().clamp_min(scale[name]).log()
                   - targets[name].abs().clamp_min(scale[name]).log()).abs()
        else:
            err = (p - targets[name]).abs()
        keep = masks[name] > 0 if name in masks else torch.ones_like(err, dtype=torch.bool)
        err = err[keep]
        out[name] = float(err.mean()) if err.numel() else 0.0
        out[f"{name}_max"] = float(err.max()) if err.numel() else 0.0
    pi_now = th.policy(pred["q_r"])
    pi_then = th.policy(module.q_r_values(b.obs, target=True))
    out["policy_change"] = float(0.5 * (pi_now - pi_then).abs().sum(-1).mean())
    return out


def value_loss(name: str, pred: torch.Tensor, target: torch.Tensor, mask, space: str,
               advantage_weight: float = 0.0, neg_q_r_floor: float = eq.DEFAULT_NEG_Q_R_FLOOR):
    """MSE of ``name``'s prediction; in ``space == "log"`` the MSE of log|value| for the
    networks in LOG_SPACE_NETWORKS, i.e. of relative errors, which is what U_r (8) and the
    power law (5) are sensitive to, and cross-entropy for V_h^e.
    Unbiased when the targets are exact expectations (model-based targets); with sampled
    targets use ``space == "mse"``.

    For q_r in log space, ``advantage_weight`` > 0 adds that many times the MSE of the
    *advantages* (:func:`q_r_advantage_loss`): what pi_r depends on, and what the plain loss
    learns least precisely (docs/DESIGN.md, section 4)."""
    if space == "log" and name == "v_h_e":
        # Binary cross-entropy with soft targets: a proper scoring rule whose gradient does
        # not vanish near 0 and 1, where X_h = sum w V^zeta needs V_h^e most precisely.
        p = pred.clamp(1e-7, 1 - 1e-7)
        ce = -(target * torch.log(p) + (1 - target) * torch.log1p(-p))
        return masked_mean(ce, mask)
    if space == "log" and name in LOG_SPACE_NETWORKS:
        sign = 1.0 if name == "x_h" else -1.0
        extra = 0.0
        if name == "q_r" and advantage_weight > 0:
            extra = advantage_weight * q_r_advantage_loss(pred, target, mask, neg_q_r_floor)
        pred = torch.log(sign * pred)
        target = torch.log((sign * target).clamp_min(LOG_TARGET_FLOOR))
        return masked_mse(pred, target, mask) + extra
    return masked_mse(pred, target, mask)


def q_r_advantage_loss(pred: torch.Tensor, target: torch.Tensor, mask, neg_q_r_floor: float):
    """MSE of the advantages of log max(-Q_r, neg_q_r_floor): each row's values minus their
    mean over its real actions (``mask``). Eq. (5) makes pi_r a softmax of -beta_r times these
    logs, so only their differences between actions matter to pi_r: beta_r = 10 turns an
    error of 0.01 in them into 10 % in the odds, while their common part (the state's level)
    only enters V_r. Rows with fewer than two real actions contribute nothing."""
    lp = torch.log((-pred).clamp_min(neg_q_r_floor))
    lt = torch.log((-target).clamp_min(neg_q_r_floor))
    m = torch.ones_like(lp) if mask is None else mask.to(lp.dtype)
    n = m.sum(-1, keepdim=True)
    d = (lp - lt) * m
    centred = (d - d.sum(-1, keepdim=True) / n.clamp_min(1.0)) * m
    return masked_mean(centred ** 2, m * (n > 1))


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None):
    return masked_mean((pred - target) ** 2, mask)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None):
    if mask is None:
        return x.mean()
    return (x * mask).sum() / mask.sum().clamp_min(1.0)
