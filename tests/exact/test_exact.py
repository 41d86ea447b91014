"""Exact solver against values worked out by hand on tiny worlds."""
from dataclasses import dataclass

import numpy as np
import pytest

from rllib_empo.exact import solve
from rllib_empo.exact.priors import BoltzmannHumanPrior, UniformHumanPrior
from rllib_empo.exact.statespace import StateGraph
from rllib_empo.worlds.protocol import WorldProtocolError


@dataclass(frozen=True)
class AtState:
    name: str

    def is_achieved(self, state):
        return state == self.name


class ThreeStateWorld:
    """s0 -> {s1, sT}, s1 -> sT, sT terminal. Agent 0 = robot, agent 1 = human, 2 actions each.

    P(s1 | s0, a_r, a_h) = P1[a_r][a_h], the rest goes to sT. Goal g1 is "be in s1",
    g2 is "be in sT", weight 1/2 each.
    """
    name = "three_state"
    human_agent_indices = [1]
    robot_agent_indices = [0]
    num_actions = 2
    P1 = [[1.0, 0.5], [0.0, 0.25]]
    goals = (AtState("s1"), AtState("sT"))

    def initial_state(self):
        return "s0"

    def is_terminal(self, s):
        return s == "sT"

    def transition_probabilities(self, s, ja):
        if s == "sT":
            return None
        if s == "s1":
            return [(1.0, "sT")]
        p = self.P1[ja[0]][ja[1]]
        return [(q, succ) for q, succ in ((p, "s1"), (1 - p, "sT")) if q > 0]

    def possible_goals(self, s, h):
        return [(g, 0.5) for g in self.goals]

    def encode_state(self, s):
        return np.array([s == "s0", s == "s1", s == "sT"], np.float32)

    def encode_goal(self, g):
        return np.array([g.name == "s1"], np.float32)


def goal_prior(state, h, goal):
    """pi_h(.|s0, g1) = [0.8, 0.2], pi_h(.|s0, g2) = [0.3, 0.7]; uniform elsewhere."""
    if state != "s0":
        return np.array([0.5, 0.5])
    return np.array([0.8, 0.2]) if goal.name == "s1" else np.array([0.3, 0.7])


def hand_solution(beta_r, gamma_h, gamma_r, zeta, xi, eta):
    """The same numbers, worked out on paper (see ThreeStateWorld)."""
    # s1: only successor sT (terminal). V(s1,g1) = 0 (g1 not achieved in sT), V(s1,g2) = 1.
    x1 = 0.5 * 0.0 ** zeta + 0.5 * 1.0 ** zeta
    u1 = -((x1 ** -xi) ** eta)
    v_r1 = u1                                   # Q_r(s1, .) = gamma_r * V_r(sT) = 0
    # s0: goal-marginal human prior = 0.5*[0.8,0.2] + 0.5*[0.3,0.7] = [0.55, 0.45]
    reach = [0.55 * 1.0 + 0.45 * 0.5, 0.55 * 0.0 + 0.45 * 0.25]  # P(s1 | a_r)
    q = np.array([gamma_r * v_r1 * r for r in reach])
    log_w = -beta_r * np.log(-q)            # (-Q)^(-beta) in logs: beta up to 1e3 overflows
    pi = np.exp(log_w - log_w.max()) / np.exp(log_w - log_w.max()).sum()
    # V(s0, g1) = sum_ar pi(ar) sum_ah pi_h(ah|g1) P1[ar][ah]          (achieved in s1)
    v1 = pi[0] * (0.8 * 1.0 + 0.2 * 0.5) + pi[1] * (0.8 * 0.0 + 0.2 * 0.25)
    # V(s0, g2): via s1 -> gamma_h * V(s1, g2) = gamma_h; via sT -> achieved = 1
    v2 = (pi[0] * (0.3 * (1.0 * gamma_h) + 0.7 * (0.5 * gamma_h + 0.5))
          + pi[1] * (0.3 * 1.0 + 0.7 * (0.25 * gamma_h + 0.75)))
    x0 = 0.5 * v1 ** zeta + 0.5 * v2 ** zeta
    u0 = -((x0 ** -xi) ** eta)
    return dict(q=q, pi=pi, v1=v1, v2=v2, x0=x0, u0=u0, v_r0=u0 + pi @ q, x1=x1, v_r1=v_r1)


@pytest.mark.parametrize("params", [
    dict(beta_r=2.0, gamma_h=0.8, gamma_r=0.9, zeta=2.0, xi=1.0, eta=1.1),
    dict(beta_r=0.0, gamma_h=0.8, gamma_r=0.9, zeta=2.0, xi=1.0, eta=1.1),   # uniform pi_r
    dict(beta_r=1000.0, gamma_h=1.0, gamma_r=1.0, zeta=1.0, xi=1.0, eta=1.0),  # near-argmax
    dict(beta_r=3.0, gamma_h=0.5, gamma_r=0.7, zeta=3.0, xi=2.0, eta=1.5),
])
def test_three_state_world_matches_hand_computation(params):
    world = ThreeStateWorld()
    sol = solve(world, goal_prior, **params)
    ref = hand_solution(**params)
    assert sol.num_states == 3
    np.testing.assert_allclose(sol.q_r["s0"], ref["q"], rtol=1e-12)
    np.testing.assert_allclose(sol.pi_r["s0"], ref["pi"], rtol=1e-9, atol=1e-300)
    ve = sol.v_h_e["s0"]
    assert ve[(1, AtState("s1"))] == pytest.approx(ref["v1"], rel=1e-12)
    assert ve[(1, AtState("sT"))] == pytest.approx(ref["v2"], rel=1e-12)
    assert sol.x_h["s0"][0] == pytest.approx(ref["x0"], rel=1e-12)
    assert sol.u_r["s0"] == pytest.approx(ref["u0"], rel=1e-12)
    assert sol.v_r["s0"] == pytest.approx(ref["v_r0"], rel=1e-12)
    assert sol.x_h["s1"][0] == pytest.approx(ref["x1"])
    assert sol.v_r["s1"] == pytest.approx(ref["v_r1"])
    assert sol.v_r["sT"] == 0.0 and np.all(sol.q_r["sT"] == 0.0)


def test_beta_r_limits_of_the_policy():
    world = ThreeStateWorld()
    common = dict(gamma_h=0.8, gamma_r=0.9, zeta=2.0, xi=1.0, eta=1.1)
    assert np.array_equal(solve(world, goal_prior, beta_r=0.0, **common).pi_r["s0"], [0.5, 0.5])
    greedy = solve(world, goal_prior, beta_r=1e6, **common).pi_r["s0"]
    # a_r = 1 keeps the human out of s1, where it would lose the chance to reach either goal
    assert greedy[1] > 1 - 1e-12 and np.all(np.isfinite(greedy))


def test_s1_policy_is_uniform_when_all_successors_terminal():
    sol = solve(ThreeStateWorld(), goal_prior, beta_r=50.0, gamma_h=0.8, gamma_r=0.9,
                zeta=2.0, xi=1.0, eta=1.1)
    np.testing.assert_array_equal(sol.pi_r["s1"], [0.5, 0.5])


class TwoHumanWorld(ThreeStateWorld):
    """Agents: human 0, robot 1, human 2. From s0 the state moves to s1 iff human 0 and the
    robot both pick action 1 or human 2 picks 1 (deterministic)."""
    human_agent_indices = [0, 2]
    robot_agent_indices = [1]

    def transition_probabilities(self, s, ja):
        if s == "sT":
            return None
        if s == "s1":
            return [(1.0, "sT")]
        return [(1.0, "s1" if (ja[0] == 1 and ja[1] == 1) or ja[2] == 1 else "sT")]


def test_two_humans_other_human_goal_marginal():
    """V_h^e of human 0 averages over human 2's goals: human 2 picks 1 with marginal
    0.5*0.2 + 0.5*0.7 = 0.45 under goal_prior."""
    world = TwoHumanWorld()
    sol = solve(world, goal_prior, beta_r=0.0, gamma_h=1.0, gamma_r=1.0, zeta=1.0, xi=1.0, eta=1.0)
    # human 0 with goal g1 (be in s1): a_h0 ~ [0.8, 0.2], robot uniform, human 2 marginal.
    p_s1 = 0.2 * 0.5 + (1 - 0.2 * 0.5) * 0.45
    assert sol.v_h_e["s0"][(0, AtState("s1"))] == pytest.approx(p_s1, rel=1e-12)
    # human 2 with goal g1: a_h2 ~ [0.8, 0.2]; human 0 marginal 0.45 picks 1, robot uniform
    p2 = 0.2 + 0.8 * (0.45 * 0.5)
    assert sol.v_h_e["s0"][(2, AtState("s1"))] == pytest.approx(p2, rel=1e-12)
    # robot action index: joint robot action == the single robot's action
    assert sol.q_r["s0"].shape == (2,)


class CyclicWorld(ThreeStateWorld):
    def transition_probabilities(self, s, ja):
        return [(1.0, "s1" if s == "s0" else "s0")]

    def is_terminal(self, s):
        return False


def test_cycle_is_a_clear_error():
    with pytest.raises(WorldProtocolError, match="cycle"):
        StateGraph(CyclicWorld())


def test_max_states_is_enforced():
    with pytest.raises(WorldProtocolError, match="more than 2"):
        StateGraph(ThreeStateWorld(), max_states=2)


@pytest.mark.parametrize("bad", [
    dict(beta_r=-1.0), dict(gamma_h=0.0), dict(gamma_r=1.5), dict(zeta=0.5), dict(xi=0.9),
    dict(eta=0.0), dict(x_h_floor=0.0),
])
def test_bad_parameters_are_rejected(bad):
    params = dict(beta_r=1.0, gamma_h=0.9, gamma_r=0.9, zeta=2.0, xi=1.0, eta=1.1) | bad
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        solve(ThreeStateWorld(), goal_prior, **params)


def test_boltzmann_prior_phase1_by_hand():
    """Phase 1 on ThreeStateWorld, robot worst-case: for g1 (be in s1) the worst robot action
    is a_r = 1, so Q_h(s0, a_h, g1) = P1[1][a_h] = [0, 0.25]; for g2 (be in sT) the worst is
    a_r = 0: Q_h = (1 - P1[0][a_h]) * 1 + P1[0][a_h] * gamma_h * V_h(s1, g2) with
    V_h(s1, g2) = 1, i.e. [gamma_h, 0.5 + 0.5 gamma_h]."""
    world, beta_h, gamma_h = ThreeStateWorld(), 4.0, 0.6
    prior = BoltzmannHumanPrior.solve(world, beta_h=beta_h, gamma_h=gamma_h)
    q1 = np.array([0.0, 0.25])
    q2_a = np.array([1 * gamma_h, 0.5 + 0.5 * gamma_h])
    q2_b = np.array([1.0, 0.75 + 0.25 * gamma_h])  # a_r = 1 for each a_h
    q2 = np.minimum(q2_a, q2_b)
    for goal, q in ((AtState("s1"), q1), (AtState("sT"), q2)):
        expected = np.exp(beta_h * q) / np.exp(beta_h * q).sum()
        np.testing.assert_allclose(prior("s0", 1, goal), expected, rtol=1e-12)
    # goal achieved -> stay
    np.testing.assert_array_equal(prior("s1", 1, AtState("s1")), [1.0, 0.0])


def test_uniform_prior_and_prior_reuse_of_graph():
    world = ThreeStateWorld()
    prior = BoltzmannHumanPrior.solve(world, beta_h=2.0, gamma_h=0.9)
    sol = solve(world, prior, beta_r=1.0, gamma_h=0.9, gamma_r=0.9, zeta=2, xi=1, eta=1.1)
    assert sol.graph is prior.graph
    u = UniformHumanPrior(world)
    np.testing.assert_array_equal(u("s0", 1, AtState("s1")), [0.5, 0.5])


# ---------------------------------------------------------------- built-in worlds
import functools  # noqa: E402

from rllib_empo.worlds import make_world  # noqa: E402

PAPER = dict(beta_r=10.0, gamma_h=0.99, gamma_r=1.0, zeta=2.0, xi=1.0, eta=1.1)


@functools.lru_cache(maxsize=None)
def builtin_solution(name: str, **kwargs):
    world = make_world(name, **kwargs)
    prior = BoltzmannHumanPrior.solve(world, beta_h=10.0, gamma_h=0.99)
    return world, solve(world, prior, **PAPER)


@pytest.mark.parametrize("name, kwargs", [("rock_gate", {}), ("corridor", {}),
                                          ("corridor", {"num_humans": 1, "slip": 0.2})])
def test_builtin_solution_ranges(name, kwargs):
    world, sol = builtin_solution(name, **kwargs)
    nt = ~sol.graph.terminal
    assert np.all(sol.Q <= 0) and np.all(sol.V_R <= 0)
    assert np.all(sol.V_R[nt] <= -1.0)                     # V_r <= U_r <= -1 when X_h <= 1
    assert np.all(sol.U_R[nt] <= -1.0)
    np.testing.assert_allclose(sol.PI.sum(-1), 1.0, rtol=1e-12)
    for h in sol.graph.humans:
        assert np.all((sol.V_HE[h] >= 0) & (sol.V_HE[h] <= 1 + 1e-12))
    assert np.all((sol.X_H >= sol.params.x_h_floor) & (sol.X_H <= 1))
    # every transition row of the world sums to 1 (the solver's T matrix)
    row_sums = np.asarray(sol.graph.T.sum(axis=1)).ravel()
    assert np.allclose(row_sums[row_sums > 0], 1.0)


def test_rock_gate_exact_policy_frees_the_human():
    """At the start the robot prefers to walk up towards the rock (action 1), and states in
    which the rock no longer blocks the gate give the human more power."""
    world, sol = builtin_solution("rock_gate")
    pi0 = sol.pi_r[sol.initial_state]
    assert int(np.argmax(pi0)) == 1 and pi0[1] > 0.4
    # along the exact greedy path the robot pushes the rock out within the first steps
    s = sol.initial_state
    for _ in range(4):
        a_r = int(np.argmax(sol.pi_r[s]))
        succ = world.transition_probabilities(s, [a_r, 0])        # the human stays
        s = max(succ)[1] if len(succ) > 1 else succ[0][1]
    assert not world.gate_blocked(s)
    # X_h is higher where the gate is open, at equal time left
    steps = np.array([st[0] for st in sol.states])
    blocked = np.array([world.gate_blocked(st) for st in sol.states])
    for t in range(4, world.horizon):
        free, shut = (steps == t) & ~blocked, (steps == t) & blocked
        if free.any() and shut.any():
            assert sol.X_H[free, 0].mean() > sol.X_H[shut, 0].mean()


def test_x_h_override_gives_the_robot_fixed_point_for_those_x_h():
    """solve(x_h=...) with the exact X_h reproduces the solution; with other X_h it is the
    robot's fixed point for them: U_r (8) from the given X_h, Q_r, pi_r, V_r consistent."""
    world, sol = builtin_solution("rock_gate")
    prior = BoltzmannHumanPrior.solve(world, beta_h=10.0, gamma_h=0.99)
    same = solve(world, prior, graph=sol.graph, x_h=sol.X_H, **PAPER)
    np.testing.assert_allclose(same.Q, sol.Q, rtol=1e-12)
    np.testing.assert_allclose(same.PI, sol.PI, rtol=1e-12)
    # every human twice as powerful (capped at 1): a different fixed point, U_r from these X_h
    nt = ~sol.graph.terminal
    other_x = np.minimum(1.0, 2.0 * sol.X_H)
    other = solve(world, prior, graph=sol.graph, x_h=other_x, **PAPER)
    np.testing.assert_allclose(other.X_H[nt], other_x[nt])
    th = sol.params
    u = -(np.maximum(other_x[nt], th.x_h_floor) ** (-th.xi)).mean(-1) ** th.eta
    np.testing.assert_allclose(other.U_R[nt], u, rtol=1e-9)
    assert np.abs(other.Q - sol.Q).max() > 1e-3
    v_r = other.U_R[nt] + (other.PI[nt] * other.Q[nt]).sum(-1)
    np.testing.assert_allclose(other.V_R[nt], v_r, rtol=1e-9)
    with pytest.raises(ValueError, match="x_h must be"):
        solve(world, prior, graph=sol.graph, x_h=sol.X_H[:, :0], **PAPER)


# ---------------------------------------------------------------- reliability (issue 13)
import inspect  # noqa: E402

from rllib_empo.exact.compare import compare_to_exact  # noqa: E402
from rllib_empo.exact.statespace import DEFAULT_MAX_STATES  # noqa: E402


def test_max_states_has_a_default_shared_with_the_config_and_the_error_says_how_to_raise_it():
    from rllib_empo import EmpoConfig
    assert DEFAULT_MAX_STATES == EmpoConfig().exact_max_states == 1_000_000
    assert inspect.signature(StateGraph).parameters["max_states"].default == DEFAULT_MAX_STATES
    assert inspect.signature(solve).parameters["max_states"].default == DEFAULT_MAX_STATES
    with pytest.raises(WorldProtocolError, match=r"more than 2 reachable states, too large for the "
                                                 r"exact solver; raise the limit with max_states= "
                                                 r".*exact_max_states.*--max-states"):
        StateGraph(ThreeStateWorld(), max_states=2)


class NanStateWorld(ThreeStateWorld):
    """Successors carry a fresh float NaN: no two visits of a state compare equal."""

    def initial_state(self):
        return ("s0", 0.0)

    def is_terminal(self, s):
        return s[0] == "sT"

    def transition_probabilities(self, s, ja):
        out = super().transition_probabilities(s[0], ja)
        return out and [(p, (t, float("nan"))) for p, t in out]

    def possible_goals(self, s, h):
        return [(AtState("s1"), 0.5), (AtState("sT"), 0.5)]

    def encode_state(self, s):
        return super().encode_state(s[0])


class _Cell:
    """A state object without __eq__/__hash__ (identity-hashed)."""

    def __init__(self, name):
        self.name = name


class IdentityStateWorld(NanStateWorld):
    def transition_probabilities(self, s, ja):
        out = ThreeStateWorld.transition_probabilities(self, s[0], ja)
        return out and [(p, (t, _Cell(t))) for p, t in out]


@pytest.mark.parametrize("world", [NanStateWorld(), IdentityStateWorld()], ids=["nan", "identity"])
def test_states_that_never_compare_equal_are_an_error_not_a_blow_up(world):
    with pytest.raises(WorldProtocolError, match=r"is not equal to a copy of itself"):
        StateGraph(world)


def test_is_achieved_returning_none_is_not_read_as_false_by_the_solver():
    class NoneGoal(AtState):
        def is_achieved(self, state):
            return True if state == self.name else None

    class W(ThreeStateWorld):
        goals = (NoneGoal("s1"), NoneGoal("sT"))

    with pytest.raises(WorldProtocolError, match=r"is_achieved\('s0'\) returned None"):
        solve(W(), goal_prior, beta_r=1.0, gamma_h=0.9, gamma_r=0.9, zeta=2.0, xi=1.0, eta=1.1)


def test_argmax_agreement_is_nan_when_no_state_has_a_unique_best_action():
    """beta_r = 0: the exact policy is uniform everywhere, so no state has a unique best
    action and the agreement is undefined (NaN), not 1.0."""
    sol = solve(ThreeStateWorld(), goal_prior, beta_r=0.0, gamma_h=0.8, gamma_r=0.9,
                zeta=2.0, xi=1.0, eta=1.1)

    class Exact:                    # "learned" values equal to the exact ones
        def values(self, states):
            idx = [sol.graph.index[s] for s in states]
            return {"q_r": sol.Q[idx], "pi_r": sol.PI[idx], "v_r": sol.V_R[idx], "x_h": sol.X_H[idx]}

        def v_h_e_values(self, items):
            return np.array([sol.V_HE[sol.graph.humans[pos]][sol.graph.index[s],
                                                            sol.goals[sol.graph.humans[pos]].index(g)]
                             for s, pos, g in items])

    figures = compare_to_exact(Exact(), sol)
    assert np.isnan(figures["argmax_agreement"])
    assert figures["tv_pi_r_s0"] == 0.0
    greedy = solve(ThreeStateWorld(), goal_prior, beta_r=5.0, gamma_h=0.8, gamma_r=0.9,
                   zeta=2.0, xi=1.0, eta=1.1)
    sol = greedy
    assert compare_to_exact(Exact(), sol)["argmax_agreement"] == 1.0
