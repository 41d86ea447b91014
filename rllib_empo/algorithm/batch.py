"""From replay rows to the tensors of a minibatch, and the target networks' outputs per state.

A row names a table slot (``rllib_empo.algorithm.store``). :func:`expand` gathers, for a
minibatch of rows, everything the predictions and the model-based targets read, from a
*store view* (the driver's ``ReplayStore`` itself for a local Learner, a ``StoreReplica``
kept up to date by deltas for a remote one), and rebuilds the probabilities of eqs. (4) and
(6) from the table's joint kernel and the human prior:

    P(s'_k | s, a_r)            = sum_{a_H} prod_h pi_bar_h(a_h | s) P(s'_k | s, a_r, a_H)
    P_{h,g}(s'_k | s, a_r)      = sum_{a_H} pi_h(a_h | s, g) prod_{o != h} pi_bar_o(a_o | s) P(s'_k | s, a_r, a_H)

with pi_bar_h = sum_g w(g) pi_h(. | s, g) (mode "sum"; the sampled modes carry the
probabilities given the step's human actions directly).

:class:`TargetCache` keeps what the *target* networks give at each stored state -- Q_r^T,
U_r^T, X_h^T, V_r^T (network mode) and V_h^e^T for every goal of the state -- valid until the
next target copy or until the state's slot is reused. So every target network runs once per
distinct state between two copies, however often the state is sampled or reached.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rllib_empo.theory import equations as eq


def _t(view, store: str, col: str) -> torch.Tensor:
    return torch.from_numpy(view.store(store).col(col))


def _g(view, store: str, col: str, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` of a store column, on ``idx``'s device (the memory lives on the CPU)."""
    return _t(view, store, col)[idx.cpu()].to(idx.device)


@dataclass
class Batch:
    """One minibatch, expanded. B rows, H humans, M goals trained per human (G in mode
    "sum", else the held goal), G goals of s, K successors (the widest row's), A_r robot
    actions."""
    s: torch.Tensor             # [B] state slots
    obs: torch.Tensor           # [B, D]
    goal: torch.Tensor          # [B, H, M] goal slots whose V_h^e is trained (-1: none)
    goal_enc: torch.Tensor      # [B, H, M, Dg]
    goal_mask: torch.Tensor     # [B, H, M] 1 for real goals
    goal_w: torch.Tensor        # [B, H, G] weights of the goals of s (eq. 7)
    succ: torch.Tensor          # [B, K] successor slots (0 where padding)
    succ_valid: torch.Tensor    # [B, K] bool
    succ_terminal: torch.Tensor  # [B, K] 1 for terminal successors (and padding)
    probs: torch.Tensor         # [B, A_r, K] eq. (4)
    vhe_probs: torch.Tensor     # [B, H, M, A_r, K] eq. (6)
    achieved: torch.Tensor      # [B, H, M, K]
    q_mask: torch.Tensor        # [B, A_r] robot actions with a successor table

    @property
    def size(self) -> int:
        return int(self.s.shape[0])

    def to(self, device) -> "Batch":
        """The same minibatch on ``device`` (a GPU Learner's)."""
        if self.s.device == torch.device(device):
            return self
        return Batch(**{f: getattr(self, f).to(device) for f in self.__dataclass_fields__})


def expand(view, tables: torch.Tensor, weight: torch.Tensor, num_actions: int,
           num_robot_actions: int, device=None) -> Batch:
    """The :class:`Batch` of the rows whose table slots are ``tables`` [B], gathered on the
    CPU and moved to ``device`` (default: ``tables``' device)."""
    device = tables.device if device is None else device
    mode = view.mode
    t, weight = tables.long().cpu(), weight.cpu()
    s = _t(view, "tables", "state")[t]
    succ = _t(view, "tables", "succ")[t]
    valid = succ >= 0
    # the widest row decides K: trailing padding columns of the store are dropped
    K = max(int(valid.sum(-1).max()), 1) if succ.numel() else 1
    succ, valid = succ[:, :K].clamp_min(0), valid[:, :K]
    obs = _t(view, "states", "obs")[s].float()
    term = _t(view, "states", "terminal")[succ].float().masked_fill(~valid, 1.0)
    kk = _t(view, "tables", "kernel_k")[t].long()
    kp = _t(view, "tables", "kernel_p")[t]
    ok = (kk >= 0) & (kk < K)
    B, J = kk.shape[:2]
    joint = torch.zeros(B, J, K).scatter_add_(2, kk.clamp(0, K - 1), kp * ok)   # [B, J, K]
    ach = _t(view, "tables", "achieved")[t][..., :K].float()                      # [B, H, M, K]
    goals_s = _t(view, "states", "goals")[s]                                      # [B, H, G]
    goal_w = _t(view, "states", "goal_w")[s]
    Ar = num_robot_actions
    if mode == "sum":
        prior = _t(view, "tables", "prior")[t]                                    # [B, H, G, A]
        probs, vhe_probs = _sum_out_humans(joint, prior, goal_w, num_actions, Ar)
        goal = goals_s
    else:
        goal = _t(view, "tables", "held")[t][:, :, None]                          # [B, H, 1]
        if mode == "sampled_humans":
            probs = joint                                                         # J = A_r
        else:                                                                     # J = 1
            a = _t(view, "tables", "robot_action")[t].long()
            probs = torch.zeros(B, Ar, K)
            probs[torch.arange(B), a] = joint[:, 0]
        vhe_probs = (probs * weight.view(B, 1, 1))[:, None, None].expand(
            B, goal.shape[1], 1, Ar, K)
    ach = ach[:, :, :goal.shape[2]]
    enc = _t(view, "goals", "enc")[goal.clamp_min(0)]
    mask = (goal >= 0).float()
    return Batch(s=s, obs=obs, goal=goal, goal_enc=enc * mask[..., None], goal_mask=mask,
                 goal_w=goal_w, succ=succ, succ_valid=valid, succ_terminal=term, probs=probs,
                 vhe_probs=vhe_probs, achieved=ach,
                 q_mask=(probs.sum(-1) > 0).float()).to(device)


def _sum_out_humans(joint: torch.Tensor, prior: torch.Tensor, goal_w: torch.Tensor, A: int,
                    Ar: int):
    """Eqs. (4) and (6) probabilities from the joint kernel [B, A_r * A^H, K] and the prior
    pi_h(a | s, g) [B, H, G, A] (module docstring).

    For each human h the kernel is first summed over the other humans' actions, weighted by
    their pi_bar (``_others_summed_out``, [B, A_r, A, K]); eq. (6) is then one batched
    product with pi_h(. | s, g), and eq. (4) the same array weighted by pi_bar_h. Each
    contraction reads the full kernel once per human (a 3-operand einsum read it once per
    output and was about 1.6x slower on corridor's [256, 5, 5, 5, 13] kernels)."""
    B, H, G, _ = prior.shape
    K = joint.shape[-1]
    P = joint.view((B, Ar) + (A,) * H + (K,))
    pibar = torch.einsum("bhg,bhga->bha", goal_w, prior)
    per_human, probs = [], None
    for i in range(H):
        T = _others_summed_out(P, pibar, i)                               # [B, A_r, A, K]
        per_human.append(torch.einsum("bga,brak->bgrk", prior[:, i], T))
        if probs is None:
            probs = (T * pibar[:, i, None, :, None]).sum(2)               # [B, A_r, K]
    return probs, torch.stack(per_human, 1)                           # [B, A_r, K], [B, H, G, A_r, K]


def _others_summed_out(P: torch.Tensor, pibar: torch.Tensor, keep: int) -> torch.Tensor:
    """sum over a_o, o != keep, of prod_o pi_bar_o(a_o) P[b, r, a_1..a_H, k]: [B, A_r, A, K].
    The humans are summed out from the last, so axis 2 + o still names human o."""
    B, H, A = pibar.shape
    out = P
    for o in reversed(range(H)):
        if o != keep:
            shape = [B] + [1] * (out.dim() - 1)
            shape[2 + o] = A
            out = (out * pibar[:, o].view(shape)).sum(2 + o)
    return out


class TargetCache:
    """Target-network outputs per state slot (module docstring). ``invalidate()`` after every
    target copy; ``ensure(slots)`` fills what is missing or stale."""

    def __init__(self, module, view, params):
        self.module, self.view, self.params = module, view, params
        self.device = next(module.parameters()).device
        self.version = 0
        self.uid = None               # the replay memory the slots belong to
        self._ver = torch.full((0,), -1, dtype=torch.long)
        self._gen = torch.full((0,), -1, dtype=torch.long)
        self.q = self.u = self.x = self.v_r = self.vhe = None
        self.evaluated = 0            # states whose target outputs were computed (a counter)

    def invalidate(self) -> None:
        self.version += 1

    _TENSORS = ("q", "u", "x", "v_r", "vhe", "_ver", "_gen")

    def get_state(self) -> dict:
        """What a checkpoint needs for a restored run to compute bit-identical targets (a
        matrix product's last bits depend on which rows share the call)."""
        return {"version": self.version, "evaluated": self.evaluated, "uid": self.uid,
                **{k: None if getattr(self, k) is None else getattr(self, k).clone()
                   for k in self._TENSORS}}

    def set_state(self, state: dict) -> None:
        self.version, self.evaluated, self.uid = state["version"], state["evaluated"], state["uid"]
        for k in self._TENSORS:
            setattr(self, k, None if state[k] is None else state[k].clone())

    def _fit(self, n: int, H: int, G: int, Ar: int) -> None:
        """Room for ``n`` slots and ``G`` goals per human; a reallocation recomputes all."""
        if self.vhe is not None and n <= self._ver.shape[0] and G <= self.vhe.shape[2]:
            return
        n, d = max(n, self._ver.shape[0]), self.device
        self.q, self.u = torch.zeros(n, Ar, device=d), torch.zeros(n, device=d)
        self.x, self.v_r = torch.zeros(n, H, device=d), torch.zeros(n, device=d)
        self.vhe = torch.zeros(n, H, G, device=d)
        self._ver = torch.full((n,), -1, dtype=torch.long, device=d)
        self._gen = torch.full((n,), -1, dtype=torch.long, device=d)

    def ensure(self, slots: torch.Tensor) -> None:
        """Compute the target outputs of the states in ``slots`` (unique) that are stale."""
        gen = torch.from_numpy(self.view.store("states").gen).to(self.device)
        H, G = self.view.store("states").col("goals").shape[1:]
        if self.uid != self.view.uid:          # another memory: nothing cached applies
            self.uid, self.vhe = self.view.uid, None
        self._fit(gen.shape[0], H, G, self.module.num_robot_actions)
        stale = slots[(self._ver[slots] != self.version) | (self._gen[slots] != gen[slots])]
        if not stale.numel():
            return
        m, th = self.module, self.params
        obs = _g(self.view, "states", "obs", stale).float()
        goals = _g(self.view, "states", "goals", stale)
        mask = (goals >= 0).float()
        enc = _g(self.view, "goals", "enc", goals.clamp_min(0)) * mask[..., None]
        with torch.no_grad():
            q = m.q_r_values(obs, target=True)
            vhe = m.v_h_e_values(obs[:, None, None, :], m.goal_inputs(enc), target=True) * mask
            if "x_h" in m.network_names:
                x = m.x_h_values(obs, target=True)
            else:
                x = eq.x_h_from_v_h_e(vhe, _g(self.view, "states", "goal_w", stale), th.zeta,
                                      th.x_h_floor)
            u = (m.u_r_values(obs, target=True) if "u_r" in m.network_names
                 else eq.u_r_from_x_h(x, th.xi, th.eta, th.x_h_floor))
            if "v_r" in m.network_names:
                self.v_r[stale] = m.v_r_values(obs, target=True)
        self.q[stale], self.vhe[stale], self.x[stale], self.u[stale] = q, vhe, x, u
        self._ver[stale], self._gen[stale] = self.version, gen[stale]
        self.evaluated += int(stale.numel())

    def v_h_e_at_successors(self, b: Batch) -> torch.Tensor:
        """V_h^e^T(s'_k, g) for the goals g = ``b.goal`` [B, H, M] of each row's state and its
        successors: [B, H, M, K]. Read from the cache where g is among the successor's own
        goals (always, on worlds whose goals do not depend on the state), else evaluated --
        except where eq. (6) multiplies it by zero (a terminal successor, or one in which g
        is achieved): there it is 0."""
        goals_next = _g(self.view, "states", "goals", b.succ)               # [B, K, H, G]
        vals = self.vhe[b.succ]                                               # [B, K, H, G]
        match = goals_next.permute(0, 2, 1, 3)[:, :, None] == b.goal[..., None, None]
        found = match.any(-1) & (b.goal >= 0)[..., None]                     # [B, H, M, K]
        pos = match.to(torch.uint8).argmax(-1)
        out = vals.permute(0, 2, 1, 3)[:, :, None].expand(-1, -1, b.goal.shape[2], -1, -1)
        out = out.gather(-1, pos[..., None]).squeeze(-1) * found
        needed = (b.succ_valid & (b.succ_terminal == 0))[:, None, None, :] & (b.achieved == 0)
        out = out * needed
        missing = (~found) & (b.goal >= 0)[..., None] & needed
        if missing.any():
            bi, hi, mi, ki = missing.nonzero(as_tuple=True)
            obs = _g(self.view, "states", "obs", b.succ[bi, ki]).float()
            goal = self.module.goal_inputs(b.goal_enc)[bi, hi, mi]
            with torch.no_grad():
                out[bi, hi, mi, ki] = self.module.v_h_e_values(obs, goal, target=True)
        return out
