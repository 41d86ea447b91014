"""Successor tables (rllib_empo.algorithm.tables): the rows the learner's model-based targets read.

The "sum" rows are checked against a brute-force sum over joint human actions written with
plain loops from ``world.transition_probabilities`` and the prior, on the stochastic
two-human corridor (so the multi-human contraction and successor merging are really used).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from rllib_empo.algorithm.env import EnvSettings, prior_from_env_config, table_spec
from rllib_empo.algorithm.tables import (TableBuilder, TableSpec, finalize_sampled_rows, stack_rows)
from rllib_empo.worlds.protocol import WorldProtocolError
from rllib_empo.worlds import make_world


def visited_states(world, n_states: int, seed: int = 0) -> list:
    """A few distinct non-terminal states from random walks (all agents uniform)."""
    rng = np.random.default_rng(seed)
    n = len(world.human_agent_indices) + len(world.robot_agent_indices)
    out, seen = [], set()
    while len(out) < n_states:
        s = world.initial_state()
        while not world.is_terminal(s) and len(out) < n_states:
            if s not in seen:
                seen.add(s)
                out.append(s)
            succ = world.transition_probabilities(s, list(rng.integers(world.num_actions, size=n)))
            s = succ[rng.choice(len(succ), p=[p for p, _ in succ])][1]
    return out


def brute_force(world, prior, state):
    """Per robot action: {successor: prob} for eq. (4) (goal-marginal prior of every human) and,
    per (human i, goal j), {successor: prob} for eq. (6) (human i pursues goal j, the others
    act by their goal-marginal prior). Plain loops, no einsum."""
    humans, robots = list(world.human_agent_indices), list(world.robot_agent_indices)
    A = world.num_actions
    n = len(humans) + len(robots)
    goals = {h: list(world.possible_goals(state, h)) for h in humans}
    pibar = {}
    for h in humans:
        pibar[h] = [0.0] * A
        for g, w in goals[h]:
            p = prior(state, h, g)
            for a in range(A):
                pibar[h][a] += w * float(p[a])
    num_ar = A ** len(robots)
    probs = [dict() for _ in range(num_ar)]
    vhe = {(i, j): [dict() for _ in range(num_ar)]
           for i, h in enumerate(humans) for j in range(len(goals[h]))}
    for a_r in range(num_ar):
        robot_actions, rest = [], a_r
        for _ in robots:
            robot_actions.append(rest % A)
            rest //= A
        for a_h in itertools.product(range(A), repeat=len(humans)):
            joint = [0] * n
            for r, a in zip(robots, robot_actions):
                joint[r] = a
            for h, a in zip(humans, a_h):
                joint[h] = a
            out = world.transition_probabilities(state, joint)
            w_all = 1.0
            for h, a in zip(humans, a_h):
                w_all *= pibar[h][a]
            for p, s2 in out:
                probs[a_r][s2] = probs[a_r].get(s2, 0.0) + w_all * p
            for i, h in enumerate(humans):
                w_others = 1.0
                for o, a in zip(humans, a_h):
                    if o != h:
                        w_others *= pibar[o][a]
                for j, (g, _) in enumerate(goals[h]):
                    w_ij = float(prior(state, h, g)[a_h[i]]) * w_others
                    for p, s2 in out:
                        d = vhe[(i, j)][a_r]
                        d[s2] = d.get(s2, 0.0) + w_ij * p
    return probs, vhe, goals


def column_of(world, row, spec):
    """successor state -> column k, via the successor encodings (injective on grid worlds)."""
    used = np.flatnonzero(row["probs"].sum(0) > 0)
    return used, {row["succ_obs"][k].tobytes(): int(k) for k in used}


@pytest.fixture(scope="module")
def corridor():
    world = make_world("corridor", num_humans=2, slip=0.25)
    settings = EnvSettings()
    prior = prior_from_env_config(world, {"world": "corridor", "slip": 0.25})
    spec = table_spec(world, settings)
    return world, prior, spec


def test_sum_row_matches_brute_force_over_joint_human_actions(corridor):
    world, prior, spec = corridor
    assert spec.mode == "sum" and spec.num_humans == 2
    builder = TableBuilder(world, prior, spec, np.random.default_rng(0))
    humans = list(world.human_agent_indices)
    max_succ_seen = 0
    states = visited_states(world, 12)
    for s in states:
        row = builder.row_sum(s)
        bf_probs, bf_vhe, goals = brute_force(world, prior, s)
        used, col = column_of(world, row, spec)
        max_succ_seen = max(max_succ_seen, len(used))
        # every successor of the brute force has its column, with the same probability
        for a_r in range(spec.num_robot_actions):
            expected = np.zeros(spec.max_successors)
            for s2, p in bf_probs[a_r].items():
                expected[col[np.asarray(world.encode_state(s2), np.float32).tobytes()]] += p
            np.testing.assert_allclose(row["probs"][a_r], expected, atol=1e-6)
        for (i, j), per_ar in bf_vhe.items():
            for a_r in range(spec.num_robot_actions):
                expected = np.zeros(spec.max_successors)
                for s2, p in per_ar[a_r].items():
                    expected[col[np.asarray(world.encode_state(s2), np.float32).tobytes()]] += p
                np.testing.assert_allclose(row["vhe_probs"][i, j, a_r], expected, atol=1e-6)
        # the other columns of the row, from their definitions
        succ_by_col = {}
        for a_r in range(spec.num_robot_actions):
            for s2 in bf_probs[a_r]:
                succ_by_col[col[np.asarray(world.encode_state(s2), np.float32).tobytes()]] = s2
        assert sorted(succ_by_col) == sorted(used.tolist())
        for k, s2 in succ_by_col.items():
            assert row["succ_terminal"][k] == float(world.is_terminal(s2))
            for i, h in enumerate(humans):
                for j, (g, _) in enumerate(goals[h]):
                    assert row["vhe_achieved"][i, j, k] == float(g.is_achieved(s2))
        padding = np.setdiff1d(np.arange(spec.max_successors), used)
        assert (row["succ_obs"][padding] == 0).all() and (row["succ_terminal"][padding] == 0).all()
        np.testing.assert_array_equal(row["obs"], np.asarray(world.encode_state(s), np.float32))
        for i, h in enumerate(humans):
            for j, (g, w) in enumerate(goals[h]):
                np.testing.assert_array_equal(row["goal_enc"][i, j], world.encode_goal(g))
                np.testing.assert_array_equal(row["vhe_goal"][i, j], world.encode_goal(g))
                assert row["goal_w"][i, j] == pytest.approx(w)
                assert row["vhe_mask"][i, j] == 1.0
            assert (row["vhe_mask"][i, len(goals[h]):] == 0).all()
            assert (row["goal_w"][i, len(goals[h]):] == 0).all()
    # the test really exercised stochastic multi-successor rows
    assert max_succ_seen > spec.num_robot_actions


def test_sum_rows_are_normalised(corridor):
    world, prior, spec = corridor
    builder = TableBuilder(world, prior, spec, np.random.default_rng(0))
    for s in visited_states(world, 20, seed=1):
        row = builder.row_sum(s)
        np.testing.assert_allclose(row["probs"].sum(-1), 1.0, atol=1e-5)
        real = row["vhe_mask"] > 0
        np.testing.assert_allclose(row["vhe_probs"].sum(-1)[real], 1.0, atol=1e-5)
        assert (row["vhe_probs"].sum(-1)[~real] == 0).all()
        np.testing.assert_allclose(row["goal_w"].sum(-1), 1.0, atol=1e-6)
        assert {k: v.shape for k, v in row.items()} == spec.shapes()
        assert all(v.dtype == np.float32 for v in row.values())
        assert builder.row_sum(s) is row          # cached per state


def test_sampled_humans_row_uses_the_given_human_actions(corridor):
    world, prior, spec0 = corridor
    spec = table_spec(world, EnvSettings(sum_human_actions=False))
    assert spec.mode == "sampled_humans" and spec.vhe_goals == 1
    builder = TableBuilder(world, prior, spec, np.random.default_rng(0))
    s = world.initial_state()
    goals = [world.possible_goals(s, h)[2][0] for h in world.human_agent_indices]
    a_h = (2, 4)
    row = builder.row_sampled_humans(s, a_h, goals)
    assert {k: v.shape for k, v in row.items()} == spec.shapes()
    used, col = column_of(world, row, spec)
    for a_r in range(spec.num_robot_actions):
        out = world.transition_probabilities(s, [a_r, *a_h])
        expected = np.zeros(spec.max_successors)
        for p, s2 in out:
            expected[col[np.asarray(world.encode_state(s2), np.float32).tobytes()]] += p
        np.testing.assert_allclose(row["probs"][a_r], expected, atol=1e-7)
        for i in range(2):
            np.testing.assert_array_equal(row["vhe_probs"][i, 0, a_r], row["probs"][a_r])
    for i, g in enumerate(goals):
        np.testing.assert_array_equal(row["vhe_goal"][i, 0], world.encode_goal(g))
    np.testing.assert_array_equal(row["vhe_mask"], np.ones((2, 1), np.float32))


def test_sampled_row_is_one_hot_on_the_action_taken():
    world = make_world("rock_gate")
    spec = table_spec(world, EnvSettings(use_model_based_targets=False))
    assert spec.mode == "sampled" and spec.max_successors == 1
    builder = TableBuilder(world, lambda s, h, g: np.full(5, 0.2), spec, np.random.default_rng(0))
    s = world.initial_state()
    s2 = world.transition_probabilities(s, [3, 0])[0][1]
    g = world.possible_goals(s, 1)[0][0]
    row = builder.row_sampled(s, 3, s2, [g])
    expected = np.zeros((5, 1), np.float32)
    expected[3, 0] = 1
    np.testing.assert_array_equal(row["probs"], expected)
    np.testing.assert_array_equal(row["succ_obs"][0], world.encode_state(s2))
    assert row["vhe_achieved"][0, 0, 0] == float(g.is_achieved(s2))
    cols = stack_rows([row, row])
    out = finalize_sampled_rows(cols, np.array([0.5, 0.25]))
    np.testing.assert_allclose(out["vhe_probs"][0, 0, 0, 3, 0], 2.0)
    np.testing.assert_allclose(out["vhe_probs"][1, 0, 0, 3, 0], 4.0)


def test_more_successors_than_max_successors_raises(corridor):
    world, prior, _ = corridor
    spec = table_spec(world, EnvSettings(max_successors=3))
    builder = TableBuilder(world, prior, spec, np.random.default_rng(0))
    with pytest.raises(WorldProtocolError, match="max_successors"):
        builder.row_sum(world.initial_state())


def test_more_goals_than_max_goals_are_sampled_with_equal_weights():
    world = make_world("rock_gate")
    spec = table_spec(world, EnvSettings(max_goals_per_human=2))
    assert spec.max_goals == 2
    builder = TableBuilder(world, lambda s, h, g: np.full(5, 0.2), spec, np.random.default_rng(0))
    s = world.initial_state()
    all_goals = {world.encode_goal(g).tobytes() for g, _ in world.possible_goals(s, 1)}
    drawn = set()
    for _ in range(30):
        enc, w, chosen = builder.goal_table(s)
        np.testing.assert_allclose(w, 0.5)
        for e in enc[0]:
            assert e.tobytes() in all_goals
            drawn.add(e.tobytes())
    assert drawn == all_goals          # not cached: every call draws afresh


def test_table_spec_shapes_and_bytes():
    spec = TableSpec(obs_dim=3, goal_dim=2, num_humans=2, num_robot_actions=4, num_actions=4,
                     max_successors=5, max_goals=3, mode="sum", succ_goals=True)
    shapes = spec.shapes()
    assert shapes["vhe_probs"] == (2, 3, 4, 5) and shapes["succ_goal_enc"] == (5, 2, 3, 2)
    assert spec.bytes_per_row() == 4 * sum(int(np.prod(s)) for s in shapes.values())
    sampled = TableSpec(3, 2, 2, 4, 4, 1, 3, "sampled_humans", False)
    assert sampled.vhe_goals == 1 and "succ_goal_enc" not in sampled.shapes()


def test_rock_gate_bytes_per_row_fit_100k_rows_in_a_gibibyte():
    world = make_world("rock_gate")
    spec = table_spec(world, EnvSettings())
    b = spec.bytes_per_row()
    print(f"rock_gate bytes_per_row (sum mode) = {b}; 100k rows = {b * 1e5 / 2**30:.2f} GiB")
    assert b < 10_000
    assert b * 100_000 < 2 ** 30


def test_sum_rows_redraw_goals_when_there_are_more_than_max_goals():
    world = make_world("rock_gate")
    spec = table_spec(world, EnvSettings(max_goals_per_human=2))
    builder = TableBuilder(world, lambda s, h, g: np.full(5, 0.2), spec, np.random.default_rng(0))
    s = world.initial_state()
    all_goals = {world.encode_goal(g).tobytes() for g, _ in world.possible_goals(s, 1)}
    drawn = set()
    for _ in range(30):
        row = builder.row_sum(s)
        drawn |= {e.tobytes() for e in row["goal_enc"][0]}
        drawn |= {e.tobytes() for e in row["vhe_goal"][0]}
    assert drawn == all_goals
