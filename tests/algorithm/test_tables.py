"""Successor tables (rllib_empo.algorithm.tables) as the learner rebuilds them.

A TableBuilder's entries go through ``pack_sample`` into a ``ReplayStore`` and come out of
``batch.expand`` as the minibatch tensors of eqs. (4) and (6); these are checked against a
brute-force sum over joint human actions written with plain loops from
``world.transition_probabilities`` and the prior, on random visited states of every built-in
world (the stochastic two-human corridor exercises the multi-human contraction and
successor merging).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import subprocess
import sys

import torch

from rllib_empo.algorithm.batch import expand
from rllib_empo.algorithm.env import EnvSettings, prior_from_env_config, table_spec
from rllib_empo.algorithm.store import ReplayStore
from rllib_empo.algorithm.tables import TableBuilder, pack_sample
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



WORLDS = {
    "corridor_slip_2h": ("corridor", {"num_humans": 2, "slip": 0.25}),
    "rock_gate": ("rock_gate", {}),
    "crowd": ("crowd", {"horizon": 4}),
}


def setup(name, **settings):
    world_name, kwargs = WORLDS[name]
    world = make_world(world_name, **kwargs)
    prior = prior_from_env_config(world, {"world": world_name, **kwargs})
    spec = table_spec(world, EnvSettings(**settings))
    return world, prior, spec, TableBuilder(world, prior, spec, np.random.default_rng(0))


def through_the_store(builder, spec, tables, weights=None):
    """Tables -> pack_sample -> ReplayStore -> expand: the minibatch of one row per table."""
    entries = builder.entries(tables)
    weights = np.ones(len(tables)) if weights is None else weights
    sample = pack_sample(*entries, [t.key for t in tables], weights)
    store = ReplayStore(1000, spec.mode)
    store.add(sample)
    slots = torch.from_numpy(store.tables.translate(np.array([t.key for t in tables])))
    b = expand(store, slots, torch.tensor(weights, dtype=torch.float32), spec.num_actions,
               spec.num_robot_actions)
    return store, b


def column_of(builder, store, b, row, state) -> int:
    """The successor column of ``state`` in minibatch row ``row``."""
    keys = store.states.key[b.succ[row]]
    cols = np.flatnonzero((keys == builder.key(state)) & b.succ_valid[row].numpy())
    assert len(cols) == 1, state
    return int(cols[0])


@pytest.mark.parametrize("name", sorted(WORLDS))
def test_rebuilt_tables_match_brute_force_over_joint_human_actions(name):
    world, prior, spec, builder = setup(name)
    assert spec.mode == "sum"
    humans = list(world.human_agent_indices)
    states = visited_states(world, 6 if name == "crowd" else 12)
    tables = [builder.table_sum(s) for s in states]
    store, b = through_the_store(builder, spec, tables)
    most_successors = 0
    for r, s in enumerate(states):
        bf_probs, bf_vhe, goals = brute_force(world, prior, s)
        np.testing.assert_array_equal(b.obs[r].numpy(), np.asarray(world.encode_state(s), np.float32))
        for a_r in range(spec.num_robot_actions):
            expected = np.zeros(b.probs.shape[-1])
            for s2, p in bf_probs[a_r].items():
                expected[column_of(builder, store, b, r, s2)] += p
            np.testing.assert_allclose(b.probs[r, a_r].numpy(), expected, atol=1e-6)
        for (i, j), per_ar in bf_vhe.items():
            for a_r in range(spec.num_robot_actions):
                expected = np.zeros(b.probs.shape[-1])
                for s2, p in per_ar[a_r].items():
                    expected[column_of(builder, store, b, r, s2)] += p
                np.testing.assert_allclose(b.vhe_probs[r, i, j, a_r].numpy(), expected, atol=1e-6)
        successors = {s2 for a_r in range(spec.num_robot_actions) for s2 in bf_probs[a_r]}
        assert int(b.succ_valid[r].sum()) == len(successors)
        most_successors = max(most_successors, len(successors))
        for s2 in successors:
            k = column_of(builder, store, b, r, s2)
            assert b.succ_terminal[r, k] == float(world.is_terminal(s2))
            for i, h in enumerate(humans):
                for j, (g, _) in enumerate(goals[h]):
                    assert b.achieved[r, i, j, k] == float(g.is_achieved(s2))
        for i, h in enumerate(humans):
            for j, (g, w) in enumerate(goals[h]):
                np.testing.assert_array_equal(b.goal_enc[r, i, j].numpy(), world.encode_goal(g))
                assert b.goal_w[r, i, j].item() == pytest.approx(w)
                assert b.goal_mask[r, i, j] == 1.0
            assert (b.goal_mask[r, i, len(goals[h]):] == 0).all()
    if name == "corridor_slip_2h":        # stochastic, with several successors per action
        assert most_successors > spec.num_robot_actions


def test_sum_tables_are_normalised_and_cached():
    world, prior, spec, builder = setup("corridor_slip_2h")
    states = visited_states(world, 20, seed=1)
    tables = [builder.table_sum(s) for s in states]
    assert all(builder.table_sum(s) is t for s, t in zip(states, tables))    # one per state
    _, b = through_the_store(builder, spec, tables)
    np.testing.assert_allclose(b.probs.sum(-1).numpy(), 1.0, atol=1e-5)
    real = b.goal_mask > 0
    np.testing.assert_allclose(b.vhe_probs.sum(-1)[real].numpy(), 1.0, atol=1e-5)
    assert (b.vhe_probs.sum(-1)[~real] == 0).all()
    np.testing.assert_allclose(b.goal_w.sum(-1).numpy(), 1.0, atol=1e-6)


def test_sampled_humans_tables_use_the_given_human_actions():
    world, prior, spec, builder = setup("corridor_slip_2h", sum_human_actions=False)
    assert spec.mode == "sampled_humans" and spec.trained_goals == 1
    s = world.initial_state()
    goals = [world.possible_goals(s, h)[2][0] for h in world.human_agent_indices]
    a_h = (2, 4)
    store, b = through_the_store(builder, spec, [builder.table_sampled_humans(s, a_h, goals)])
    for a_r in range(spec.num_robot_actions):
        expected = np.zeros(b.probs.shape[-1])
        for p, s2 in world.transition_probabilities(s, [a_r, *a_h]):
            expected[column_of(builder, store, b, 0, s2)] += p
        np.testing.assert_allclose(b.probs[0, a_r].numpy(), expected, atol=1e-7)
        for i in range(2):
            np.testing.assert_array_equal(b.vhe_probs[0, i, 0, a_r].numpy(), b.probs[0, a_r].numpy())
    for i, g in enumerate(goals):
        np.testing.assert_array_equal(b.goal_enc[0, i, 0].numpy(), world.encode_goal(g))
    np.testing.assert_array_equal(b.goal_mask.numpy(), np.ones((1, 2, 1), np.float32))


def test_sampled_tables_are_one_hot_on_the_action_taken_and_weighted():
    world, _, spec, builder = setup("rock_gate", use_model_based_targets=False)
    assert spec.mode == "sampled" and spec.joint_actions == 1
    s = world.initial_state()
    s2 = world.transition_probabilities(s, [3, 0])[0][1]
    g = world.possible_goals(s, 1)[0][0]
    t = builder.table_sampled(s, 3, s2, [g])
    store, b = through_the_store(builder, spec, [t, t], weights=np.array([2.0, 4.0]))
    expected = np.zeros((5, 1), np.float32)
    expected[3, 0] = 1
    np.testing.assert_array_equal(b.probs[0].numpy(), expected)
    np.testing.assert_array_equal(store.states.col("obs")[b.succ[0, 0]],
                                  np.asarray(world.encode_state(s2), np.float32))
    assert b.achieved[0, 0, 0, 0] == float(g.is_achieved(s2))
    np.testing.assert_allclose(b.vhe_probs[0, 0, 0, 3, 0].item(), 2.0)   # 1 / behaviour prob
    np.testing.assert_allclose(b.vhe_probs[1, 0, 0, 3, 0].item(), 4.0)


def test_more_goals_than_max_goals_keep_a_draw_every_runner_agrees_on():
    world = make_world("rock_gate")
    spec = table_spec(world, EnvSettings(max_goals_per_human=2))
    assert spec.max_goals == 2
    uniform = lambda s, h, g: np.full(5, 0.2)                 # noqa: E731
    all_goals = {g for g, _ in world.possible_goals(world.initial_state(), 1)}
    drawn = set()
    for s in visited_states(world, 30):
        tables = [TableBuilder(world, uniform, spec, np.random.default_rng(seed)).goal_table(s)
                  for seed in (0, 1)]
        assert tables[0] == tables[1]               # the same draw in every builder
        (per_human,) = tables[0]
        assert len(per_human) == 2 and all(w == 0.5 for _, w in per_human)
        drawn |= {g for g, _ in per_human}
    assert drawn == all_goals                       # different states keep different goals


def test_a_sample_carries_every_entry_its_tables_mention():
    world, prior, spec, builder = setup("corridor_slip_2h")
    states = visited_states(world, 5)
    tables = [builder.table_sum(s) for s in states]
    t_out, s_out, g_out = builder.entries(tables)
    assert set(t_out) == {t.key for t in tables}
    mentioned = {int(t["state"]) for t in t_out.values()} | {
        int(k) for t in t_out.values() for k in t["succ"]}
    assert mentioned == set(s_out)
    goals = {int(k) for e in s_out.values() for k in e["goals"].ravel() if k >= 0}
    assert goals == set(g_out)
    # and the pending list empties: the next sample carries only what it uses
    builder.take_pending()
    assert builder.take_pending() == []


def test_state_keys_agree_across_processes():
    """Equal states get equal keys in processes with different string hashing."""
    code = ("from rllib_empo.worlds.keys import stable_key; "
            "print(stable_key((3, 'door', frozenset({'a', 'b', 'c'}), (1.5, None, True))))")
    keys = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**__import__("os").environ, "PYTHONHASHSEED": seed}).stdout.strip()
            for seed in ("1", "2", "3")}
    assert len(keys) == 1 and keys.pop().isdigit()
