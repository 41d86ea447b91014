"""The targets match a brute-force per-row computation on random replay memories.

A random *sample* (the dict an EnvRunner sends: goals, states and tables keyed by key, rows
naming tables) is merged into a ``ReplayStore``; ``batch.expand`` turns its rows into a
minibatch and ``targets.compute_targets`` computes every network's target through the
``TargetCache``. The brute force reads the same sample as plain Python, rebuilds the
probabilities of eqs. (4) and (6) from the joint kernel and the prior with loops over the
joint actions, and calls the module's *target* heads one state at a time (no cache) -- for
every combination of x_h/u_r/v_r_use_network and the three table modes. The target networks
are perturbed away from the main networks first, so that reading a main network instead of
its target copy fails the test.
"""
from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch

from rllib_empo.algorithm.batch import TargetCache, _g, expand
from rllib_empo.algorithm.module import EmpoRLModule
from rllib_empo.algorithm.store import ReplayStore
from rllib_empo.algorithm.targets import (LOG_TARGET_FLOOR, compute_targets, loss_masks,
                                          q_r_advantage_loss, value_loss)
from rllib_empo.theory.params import EmpoParams

D, DG, H, A, G = 9, 4, 2, 3, 3      # robots: 1, so A_r = A
AR = A
TH = EmpoParams(gamma_h=0.9, gamma_r=0.8, zeta=2.0, xi=1.5, eta=1.2, x_h_floor=1e-3,
                neg_q_r_floor=1e-3)
BETA = 3.0
FLAGS = list(itertools.product([True, False], repeat=3))   # x_h, u_r, v_r _use_network


def model_config(x_h, u_r, v_r):
    """What EmpoConfig._model_config_auto_includes produces."""
    return {"hidden_sizes": (16, 16), "num_humans": H, "num_actions": A, "goal_dim": DG,
            "x_h_use_network": x_h, "u_r_use_network": u_r, "v_r_use_network": v_r,
            "x_h_floor": TH.x_h_floor, "neg_q_r_floor": TH.neg_q_r_floor}


def make_module(x_h, u_r, v_r, seed=0):
    torch.manual_seed(seed)
    m = EmpoRLModule(observation_space=gym.spaces.Box(-np.inf, np.inf, (D,), np.float32),
                     action_space=gym.spaces.Discrete(AR), model_config=model_config(x_h, u_r, v_r))
    m.make_target_networks()
    with torch.no_grad():            # targets differ from the main networks
        for name in m.network_names:
            for p in m.net(name, target=True).parameters():
                p.add_(0.3 * torch.randn_like(p))
    return m


def random_sample(mode: str, seed=0, num_states=14, num_tables=6, num_goals=5) -> dict:
    """A sample as ``tables.pack_sample`` builds it, with random content: successors with up
    to 2 outcomes per joint action, some terminal successors, goal tables of varying length
    (padding), a human without power (all goal weights on one goal it never reaches)."""
    rng = np.random.default_rng(seed)
    f = np.float32
    goal_keys = rng.choice(10**9, size=num_goals, replace=False).astype(np.int64) + 1
    state_keys = rng.choice(10**9, size=num_states, replace=False).astype(np.int64) + 1
    goals = np.full((num_states, H, G), -1, np.int64)
    goal_w = np.zeros((num_states, H, G), f)
    for i in range(num_states):
        for h in range(H):
            n = int(rng.integers(1, G + 1))
            goals[i, h, :n] = rng.choice(goal_keys, size=n, replace=False)
            w = rng.random(n) + 0.1
            goal_w[i, h, :n] = w / w.sum()
    terminal = rng.random(num_states) < 0.25
    terminal[:num_tables] = False                       # the table sources are not terminal
    goals[terminal], goal_w[terminal] = -1, 0.0
    J = AR * A ** H if mode == "sum" else (AR if mode == "sampled_humans" else 1)
    t_cols = {k: [] for k in ("state", "succ", "kernel_k", "kernel_p", "achieved")}
    extra = {"sum": ("prior",), "sampled_humans": ("held",),
             "sampled": ("held", "robot_action")}[mode]
    t_cols.update({k: [] for k in extra})
    K = 5
    for t in range(num_tables):
        n_succ = int(rng.integers(2, K + 1)) if mode != "sampled" else 1
        succ = rng.choice(np.arange(num_tables, num_states), size=n_succ, replace=False)
        kk = np.full((J, 2), -1, np.int32)
        kp = np.zeros((J, 2), f)
        for j in range(J):
            n = 1 if mode == "sampled" else int(rng.integers(1, 3))
            kk[j, :n] = rng.choice(n_succ, size=n, replace=False)
            p = rng.random(n) + 0.1
            kp[j, :n] = p / p.sum()
        row = {"state": state_keys[t], "succ": np.pad(state_keys[succ], (0, K - n_succ),
                                                      constant_values=-1),
               "kernel_k": kk, "kernel_p": kp}
        M = G if mode == "sum" else 1
        row["achieved"] = (rng.random((H, M, K)) < 0.3).astype(np.uint8)
        if mode == "sum":
            prior = rng.random((H, G, A)).astype(f)
            prior /= prior.sum(-1, keepdims=True)
            prior[goals[t] < 0] = 0.0
            row["prior"] = prior
        else:
            row["held"] = np.array([rng.choice(goals[t, h][goals[t, h] >= 0]) for h in range(H)])
        if mode == "sampled":
            row["robot_action"] = np.int64(rng.integers(AR))
        for k, v in row.items():
            t_cols[k].append(v)
    table_keys = rng.choice(10**9, size=num_tables, replace=False).astype(np.int64) + 1
    weight = (rng.random(num_tables) + 0.5).astype(f) if mode == "sampled" else np.ones(num_tables, f)
    return {"goals": {"key": goal_keys, "enc": rng.normal(size=(num_goals, DG)).astype(f)},
            "states": {"key": state_keys, "obs": rng.normal(size=(num_states, D)).astype(f),
                       "terminal": terminal, "goals": goals, "goal_w": goal_w},
            "tables": {"key": table_keys, **{k: np.stack(v) for k, v in t_cols.items()}},
            "rows": {"table": table_keys, "weight": weight}}


def memory(sample: dict, mode: str) -> ReplayStore:
    store = ReplayStore(100, mode)
    store.add(sample)
    return store


def minibatch(store: ReplayStore, sample: dict):
    """All rows of the sample, in sample order."""
    tables = torch.from_numpy(store.tables.translate(sample["rows"]["table"]))
    return expand(store, tables, torch.from_numpy(sample["rows"]["weight"]), A, AR)


# ------------------------------------------------------------ brute force, one row at a time
class BruteForce:
    """Eqs. (4)-(9) from the raw sample, target networks evaluated per state."""

    def __init__(self, m: EmpoRLModule, sample: dict, mode: str):
        self.m, self.mode, self.nets = m, mode, set(m.network_names)
        st, go = sample["states"], sample["goals"]
        self.state = {int(k): i for i, k in enumerate(st["key"])}
        self.enc = {int(k): go["enc"][i] for i, k in enumerate(go["key"])}
        self.st, self.tb, self.rows = st, sample["tables"], sample["rows"]

    def obs(self, key):
        return torch.from_numpy(self.st["obs"][self.state[key]])

    def goals_of(self, key, h):
        i = self.state[key]
        return [(int(g), float(w)) for g, w in zip(self.st["goals"][i, h], self.st["goal_w"][i, h])
                if g >= 0]

    def q(self, key):
        with torch.no_grad():
            return self.m.q_r_values(self.obs(key)[None], target=True)[0].double().numpy()

    def v_h_e(self, key, goal, h):
        gi = torch.cat([torch.from_numpy(self.enc[goal]),
                        torch.nn.functional.one_hot(torch.tensor(h), H).float()])
        with torch.no_grad():
            return float(self.m.v_h_e_values(self.obs(key)[None], gi[None], target=True)[0])

    def pi(self, q, beta):
        w = np.array([max(-x, TH.neg_q_r_floor) ** (-beta) for x in q])
        return w / w.sum()

    def x_h(self, key):
        if "x_h" in self.nets:
            with torch.no_grad():
                return self.m.x_h_values(self.obs(key)[None], target=True)[0].double().numpy()
        return self.x_h_direct(key)

    def x_h_direct(self, key):
        out = []
        for h in range(H):
            x = sum(w * min(max(self.v_h_e(key, g, h), 0.0), 1.0) ** TH.zeta
                    for g, w in self.goals_of(key, h))
            out.append(min(max(x, TH.x_h_floor), 1.0))
        return np.array(out)

    def u_r(self, key):
        if "u_r" in self.nets:
            with torch.no_grad():
                return float(self.m.u_r_values(self.obs(key)[None], target=True)[0])
        return -(np.mean([max(x, TH.x_h_floor) ** (-TH.xi) for x in self.x_h(key)])) ** TH.eta

    def v_r(self, key, beta):
        if "v_r" in self.nets:
            with torch.no_grad():
                return float(self.m.v_r_values(self.obs(key)[None], target=True)[0])
        q = self.q(key)
        return self.u_r(key) + float(self.pi(q, beta) @ q)

    def distributions(self, t):
        """(succ keys, P(k | a_r) per a_r, {(h, m): P_hm(k | a_r)}, trained goals per human)."""
        tb = self.tb
        succ = [int(k) for k in tb["succ"][t] if k >= 0]
        K = len(succ)
        J = tb["kernel_k"].shape[1]
        joint = np.zeros((J, K))
        for j in range(J):
            for k, p in zip(tb["kernel_k"][t, j], tb["kernel_p"][t, j]):
                if k >= 0:
                    joint[j, k] += p
        s_key = int(tb["state"][t])
        if self.mode == "sum":
            goals = {h: [g for g, _ in self.goals_of(s_key, h)] for h in range(H)}
            prior = tb["prior"][t]
            pibar = {h: sum(w * prior[h, j] for j, (_, w) in enumerate(self.goals_of(s_key, h)))
                     for h in range(H)}
            probs = np.zeros((AR, K))
            vhe = {(h, m): np.zeros((AR, K)) for h in range(H) for m in range(len(goals[h]))}
            for a_r in range(AR):
                for a_h in itertools.product(range(A), repeat=H):
                    j = a_r * A ** H + int(np.ravel_multi_index(a_h, (A,) * H))
                    w_all = np.prod([pibar[h][a_h[h]] for h in range(H)])
                    probs[a_r] += w_all * joint[j]
                    for h in range(H):
                        w_o = np.prod([pibar[o][a_h[o]] for o in range(H) if o != h])
                        for m in range(len(goals[h])):
                            vhe[(h, m)][a_r] += prior[h, m, a_h[h]] * w_o * joint[j]
        else:
            goals = {h: [int(tb["held"][t, h])] for h in range(H)}
            if self.mode == "sampled_humans":
                probs = joint
            else:
                probs = np.zeros((AR, K))
                probs[int(tb["robot_action"][t])] = joint[0]
            wt = float(self.rows["weight"][t])
            vhe = {(h, 0): probs * wt for h in range(H)}
        return succ, probs, vhe, goals

    def targets(self, beta):
        n = len(self.tb["key"])
        M = G if self.mode == "sum" else 1
        out = {"v_h_e": np.zeros((n, H, M)), "x_h": np.zeros((n, H)), "u_r": np.zeros(n),
               "q_r": np.zeros((n, AR)), "v_r": np.zeros(n)}
        for t in range(n):
            s_key = int(self.tb["state"][t])
            succ, probs, vhe, goals = self.distributions(t)
            term = [bool(self.st["terminal"][self.state[k]]) for k in succ]
            q_s = self.q(s_key)
            pi_s = self.pi(q_s, beta)
            for h in range(H):
                for m, g in enumerate(goals[h]):
                    total = 0.0
                    for k, key in enumerate(succ):
                        p_k = float(pi_s @ vhe[(h, m)][:, k])
                        ach = float(self.tb["achieved"][t, h, m, k])
                        v_next = 0.0 if term[k] else self.v_h_e(key, g, h)
                        total += p_k * (ach + (1 - ach) * (1 - term[k]) * TH.gamma_h * v_next)
                    out["v_h_e"][t, h, m] = total
            out["x_h"][t] = self.x_h_direct(s_key)
            out["u_r"][t] = -(np.mean(self.x_h(s_key) ** (-TH.xi))) ** TH.eta
            for a in range(AR):
                out["q_r"][t, a] = TH.gamma_r * sum(
                    probs[a, k] * self.v_r(key, beta)
                    for k, key in enumerate(succ) if probs[a, k] > 0 and not term[k])
            out["v_r"][t] = self.u_r(s_key) + pi_s @ q_s
        return out


def assert_targets_close(name, got, expected, b, what=""):
    """V_h^e targets are compared where a goal is trained (padding goals are never read)."""
    got = got.numpy()
    if name == "v_h_e":
        keep = b.goal_mask.numpy() > 0
        got, expected = got[keep], expected[keep]
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-6,
                               err_msg=f"target of {name} {what}")


@pytest.mark.parametrize("mode", ["sum", "sampled_humans", "sampled"])
@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "x%d-u%d-v%d" % f)
def test_compute_targets_matches_brute_force(flags, mode):
    m = make_module(*flags)
    sample = random_sample(mode, seed=sum(f << i for i, f in enumerate(flags)))
    store = memory(sample, mode)
    b = minibatch(store, sample)
    if mode == "sum":
        assert (b.goal_mask == 0).any() and (b.goal_mask == 1).any()   # padding goals too
    cache = TargetCache(m, store, TH)
    got = compute_targets(cache, b, m.network_names, BETA, TH)
    assert set(got) == set(m.network_names)
    expected = BruteForce(m, sample, mode).targets(BETA)
    for name, value in got.items():
        assert not value.requires_grad
        assert value.shape == expected[name].shape, name
        assert_targets_close(name, value, expected[name], b, f"flags {flags} mode {mode}")
    assert ((got["v_h_e"] >= 0) & (got["v_h_e"] <= (1 + 1e-6) * b.vhe_probs.sum(-1).amax())).all()
    assert (got["q_r"] <= 0).all()
    if "u_r" in got:
        assert (got["u_r"] <= -1 + 1e-6).all()
    if "x_h" in got:
        assert ((got["x_h"] >= TH.x_h_floor) & (got["x_h"] <= 1)).all()


def test_each_target_network_runs_once_per_state_between_copies():
    """The cache evaluates each distinct state once until invalidated; a second minibatch of
    the same rows costs no target evaluation; a target copy (invalidate) recomputes."""
    m = make_module(True, False, False)
    sample = random_sample("sum", seed=4)
    store = memory(sample, "sum")
    b = minibatch(store, sample)
    cache = TargetCache(m, store, TH)
    first = compute_targets(cache, b, m.network_names, BETA, TH)
    distinct = len(set(b.s.tolist()) | set(b.succ[b.succ_valid].tolist()))
    assert cache.evaluated == distinct
    again = compute_targets(cache, b, m.network_names, BETA, TH)
    assert cache.evaluated == distinct
    for name in first:
        assert torch.equal(first[name], again[name])
    with torch.no_grad():                     # a "target copy": new target weights
        for p in m.net("q_r", target=True).parameters():
            p.add_(0.5)
    stale = compute_targets(cache, b, m.network_names, BETA, TH)
    assert torch.equal(stale["q_r"], first["q_r"])          # not yet invalidated
    cache.invalidate()
    fresh = compute_targets(cache, b, m.network_names, BETA, TH)
    assert cache.evaluated == 2 * distinct
    assert not torch.equal(fresh["q_r"], first["q_r"])
    np.testing.assert_allclose(fresh["q_r"].numpy(),
                               BruteForce(m, sample, "sum").targets(BETA)["q_r"], rtol=2e-4,
                               atol=1e-6)


def test_v_h_e_is_not_evaluated_where_eq_6_multiplies_it_by_zero():
    """Outside the cache (a goal that the successor does not list), V_h^e^T(s', g) is only
    evaluated at non-terminal successors in which g is not achieved: elsewhere eq. (6)
    multiplies it by 0. The targets stay those of the brute force (the test above)."""
    m = make_module(True, False, False)
    sample = random_sample("sum", seed=4)
    store = memory(sample, "sum")
    b = minibatch(store, sample)
    cache = TargetCache(m, store, TH)
    cache.ensure(torch.unique(torch.cat([b.s, b.succ[b.succ_valid]])))
    calls = []
    real = m.v_h_e_values
    m.v_h_e_values = lambda obs, goal, target=False: calls.append(obs.shape[0]) or real(
        obs, goal, target=target)
    try:
        out = cache.v_h_e_at_successors(b)
    finally:
        del m.v_h_e_values
    term = (b.succ_terminal > 0)[:, None, None, :].expand_as(out)
    achieved = b.achieved > 0
    assert (term & (b.goal >= 0)[..., None]).any() and achieved.any()   # both cases occur
    assert (out[term | achieved] == 0).all()
    goals_next = _g(store, "states", "goals", b.succ)
    listed = (goals_next.permute(0, 2, 1, 3)[:, :, None] == b.goal[..., None, None]).any(-1)
    needed = (~listed & (b.goal >= 0)[..., None] & b.succ_valid[:, None, None, :]
              & ~term & ~achieved)
    assert sum(calls) == int(needed.sum()) > 0


def test_a_reused_slot_is_recomputed():
    """A state slot freed and given to another state is not read from the cache."""
    m = make_module(True, False, False)
    mode = "sampled_humans"
    sample = random_sample(mode, seed=1)
    store = ReplayStore(len(sample["rows"]["table"]), mode)
    store.add(sample)
    cache = TargetCache(m, store, TH)
    compute_targets(cache, minibatch(store, sample), m.network_names, BETA, TH)
    other = random_sample(mode, seed=2)      # overwrites every row: the old entries are freed
    store.add(other)
    got = compute_targets(cache, minibatch(store, other), m.network_names, BETA, TH)
    expected = BruteForce(m, other, mode).targets(BETA)
    for name, value in got.items():
        np.testing.assert_allclose(value.numpy(), expected[name], rtol=2e-4, atol=1e-6)


def test_targets_of_a_subset_and_beta_dependence():
    m = make_module(True, True, True)
    sample = random_sample("sum", seed=11)
    store = memory(sample, "sum")
    b = minibatch(store, sample)
    cache = TargetCache(m, store, TH)
    only = compute_targets(cache, b, ("v_h_e",), BETA, TH)
    assert set(only) == {"v_h_e"}
    full = compute_targets(cache, b, m.network_names, BETA, TH)
    assert torch.equal(only["v_h_e"], full["v_h_e"])
    zero = compute_targets(cache, b, ("v_h_e", "v_r"), 0.0, TH)
    assert not torch.allclose(zero["v_r"], full["v_r"])
    bf = BruteForce(m, sample, "sum").targets(0.0)
    assert_targets_close("v_h_e", zero["v_h_e"], bf["v_h_e"], b, "at beta_r = 0")
    assert_targets_close("v_r", zero["v_r"], bf["v_r"], b, "at beta_r = 0")


def test_targets_ignore_the_main_networks():
    """Changing the main networks (not their targets) leaves every target unchanged."""
    m = make_module(False, False, False)
    sample = random_sample("sum", seed=5)
    store = memory(sample, "sum")
    b = minibatch(store, sample)
    before = compute_targets(TargetCache(m, store, TH), b, m.network_names, BETA, TH)
    with torch.no_grad():
        for name in m.network_names:
            for p in m.net(name).parameters():
                p.add_(1.0)
    after = compute_targets(TargetCache(m, store, TH), b, m.network_names, BETA, TH)
    for name in before:
        assert torch.equal(before[name], after[name]), name


def test_rebuilt_probabilities_are_distributions():
    """P(. | s, a_r) of eq. (4) and P_h,g(. | s, a_r) of eq. (6) sum to 1 for every robot
    action and every trained goal."""
    sample = random_sample("sum", seed=8)
    b = minibatch(memory(sample, "sum"), sample)
    np.testing.assert_allclose(b.probs.sum(-1).numpy(), 1.0, rtol=1e-5)
    sums = b.vhe_probs.sum(-1)
    np.testing.assert_allclose(sums[b.goal_mask > 0].numpy(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("num_humans", [1, 2, 3])
def test_summing_out_the_humans_matches_the_formula_term_by_term(num_humans):
    """batch.py's eqs. (4) and (6), P(k | r) = sum_aH prod_h pi_bar_h(a_h) P(k | r, aH) and
    P_h,g(k | r) = sum_aH pi_h(a_h | g) prod_{o != h} pi_bar_o(a_o) P(k | r, aH), against a
    loop over every joint human action."""
    from rllib_empo.algorithm.batch import _sum_out_humans
    rng = np.random.default_rng(num_humans)
    B, Ar, A, K, G, H = 3, 2, 3, 4, 2, num_humans
    joint = torch.tensor(rng.random((B, Ar * A ** H, K)), dtype=torch.float64)
    prior = torch.tensor(rng.dirichlet(np.ones(A), (B, H, G)), dtype=torch.float64)
    goal_w = torch.tensor(rng.dirichlet(np.ones(G), (B, H)), dtype=torch.float64)
    probs, per_human = _sum_out_humans(joint, prior, goal_w, A, Ar)
    pibar = np.einsum("bhg,bhga->bha", goal_w.numpy(), prior.numpy())
    P = joint.numpy().reshape((B, Ar) + (A,) * H + (K,))
    want = np.zeros((B, Ar, K))
    want_h = np.zeros((B, H, G, Ar, K))
    for a in itertools.product(range(A), repeat=H):
        kernel = P[(slice(None), slice(None)) + a]                         # [B, Ar, K]
        want += np.prod([pibar[:, h, a[h]] for h in range(H)], 0)[:, None, None] * kernel
        for h in range(H):
            others = np.prod([pibar[:, o, a[o]] for o in range(H) if o != h] or [np.ones(B)], 0)
            w = prior[:, h, :, a[h]].numpy() * others[:, None]            # [B, G]
            want_h[:, h] += w[:, :, None, None] * kernel[:, None]
    np.testing.assert_allclose(probs.numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(per_human.numpy(), want_h, rtol=1e-12)


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
        "q_r": (-torch.rand(6, AR, generator=g) - 0.01,
                torch.cat([-torch.rand(5, AR, generator=g) - 0.01, torch.zeros(1, AR)]),
                (torch.rand(6, AR, generator=g) < 0.7).float()),
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
    q = value_loss("q_r", torch.full((2, AR), -1e-3), torch.zeros(2, AR), None, "log")
    assert q.item() == pytest.approx(np.log(1e3 * LOG_TARGET_FLOOR) ** 2, rel=1e-5)
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


@pytest.mark.parametrize("mode", ["sum", "sampled"])
def test_loss_masks(mode):
    """Model-based: every robot action has a Q_r target; sampled: only the action taken.
    V_h^e: the real goals."""
    sample = random_sample(mode, seed=3)
    b = minibatch(memory(sample, mode), sample)
    masks = loss_masks(b)
    if mode == "sum":
        assert torch.equal(masks["q_r"], torch.ones(b.size, AR))
    else:
        expected = torch.zeros(b.size, AR)
        expected[torch.arange(b.size), torch.from_numpy(sample["tables"]["robot_action"])] = 1.0
        assert torch.equal(masks["q_r"], expected)
    assert torch.equal(masks["v_h_e"], b.goal_mask)


def test_q_r_advantage_loss_measures_only_the_differences_between_actions():
    """The extra q_r loss of q_r_advantage_weight: the MSE of log max(-Q_r, floor) minus its
    mean over the row's real actions. A per-row scale of Q_r (a shift of the logs) costs
    nothing, a change of one action's value does; masked actions and rows with one real
    action do not count; value_loss adds weight times it to the plain log loss."""
    g = torch.Generator().manual_seed(3)
    floor = 1e-3
    target = -torch.rand(5, AR, generator=g, dtype=torch.float64) - 0.01
    scaled = target * torch.tensor([0.5, 2.0, 1.0, 3.0, 0.9], dtype=torch.float64)[:, None]
    assert q_r_advantage_loss(scaled, target, None, floor).item() == pytest.approx(0.0, abs=1e-12)
    off = target.clone()
    off[0, 1] *= np.exp(0.1)                       # log(-Q) of one action up by 0.1
    d = np.zeros(AR)
    d[1] = 0.1
    by_hand = ((d - d.mean()) ** 2).sum() / (5 * AR)
    assert q_r_advantage_loss(off, target, None, floor).item() == pytest.approx(by_hand, rel=1e-9)
    mask = torch.ones(5, AR, dtype=torch.float64)
    mask[0, 1] = 0.0                               # the changed action is not real: no loss
    assert q_r_advantage_loss(off, target, mask, floor).item() == pytest.approx(0.0, abs=1e-12)
    one = torch.zeros(5, AR, dtype=torch.float64)
    one[:, 0] = 1.0                                # one real action per row: nothing to compare
    assert q_r_advantage_loss(off, target, one, floor).item() == 0.0
    # below the policy's floor every value is the floor: no difference left to learn
    tiny = torch.full((1, AR), -1e-5, dtype=torch.float64)
    assert q_r_advantage_loss(tiny * torch.arange(1, AR + 1), tiny, None, floor).item() == 0.0
    plain = value_loss("q_r", off, target, None, "log")
    weighted = value_loss("q_r", off, target, None, "log", 30.0, floor)
    assert weighted.item() == pytest.approx(plain.item() + 30.0 * by_hand, rel=1e-9)
    # the other networks and the mse space ignore it
    assert value_loss("q_r", off, target, None, "mse", 30.0, floor).item() == pytest.approx(
        value_loss("q_r", off, target, None, "mse").item())
