"""EmpoEnv: the gymnasium env over a World that the EnvRunners step."""
from __future__ import annotations

import numpy as np
import pytest

import torch

from rllib_empo.algorithm.batch import expand
from rllib_empo.algorithm.env import EmpoEnv, EmpoStep
from rllib_empo.algorithm.store import ReplayStore
from rllib_empo.algorithm.tables import pack_sample

CASES = {
    "rock_gate": {"world": "rock_gate"},
    "corridor_slip": {"world": "corridor", "num_humans": 2, "slip": 0.25},
    "crowd_sampled_humans": {"world": "crowd", "prior": "heuristic",
                             "empo": {"sum_human_actions": False}},
    "rock_gate_sampled": {"world": "rock_gate", "empo": {"use_model_based_targets": False}},
    "corridor_sampled": {"world": "corridor", "slip": 0.25,
                         "empo": {"use_model_based_targets": False}},
}


def rollout(env, n_steps, seed=0):
    """(state, goals, action, obs, reward, terminated, truncated, info, next state) per step;
    states, goals and observations read from the env. Each step's table entries are taken
    right after the step (``entries``)."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    assert info == {}
    steps = []
    for _ in range(n_steps):
        s, goals, prev_obs = env.get_state(), list(env.goals), obs
        a = int(rng.integers(env.action_space.n))
        obs, r, term, trunc, info = env.step(a)
        steps.append(dict(state=s, goals=goals, action=a, prev_obs=prev_obs, obs=obs, reward=r,
                          terminated=term, truncated=trunc, info=info, next=env.get_state(),
                          next_goals=list(env.goals), entries=env.take_sample()))
        if term:
            obs, _ = env.reset()
    return steps


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    env = EmpoEnv(dict(CASES[request.param]))
    return request.param, env, rollout(env, 60)


def test_spaces(case):
    _, env, _ = case
    spec = env.table_spec
    assert env.observation_space.shape == (spec.obs_dim,)
    assert env.action_space.n == spec.num_robot_actions == \
        env.world.num_actions ** len(env.world.robot_agent_indices)


def test_observation_reward_termination(case):
    name, env, steps = case
    world = env.world
    n_terminations = 0
    for st in steps:
        np.testing.assert_array_equal(st["prev_obs"], world.encode_state(st["state"]))
        np.testing.assert_array_equal(st["obs"], world.encode_state(st["next"]))
        assert st["obs"].dtype == np.float32 and env.observation_space.contains(st["obs"])
        assert st["reward"] == 0.0
        assert st["terminated"] == bool(world.is_terminal(st["next"]))
        assert st["truncated"] is False
        # the successor is a possible outcome of the world (checked loosely via time)
        assert st["next"][0] == st["state"][0] - 1
        n_terminations += st["terminated"]
    assert n_terminations >= 1, "the rollout should span at least one episode end"
    # the first state of every episode is the world's initial state (no exploring starts)
    for prev, st in zip(steps, steps[1:]):
        if prev["terminated"]:
            assert st["state"] == world.initial_state()


def expanded(env, st, weight=1.0):
    """The step's row, through pack_sample, a ReplayStore and batch.expand."""
    key = st["info"]["empo"].table
    store = ReplayStore(10, env.table_spec.mode)
    store.add(pack_sample(*st["entries"], [key], [weight]))
    b = expand(store, torch.from_numpy(store.tables.translate(np.array([key]))),
               torch.tensor([weight]), env.table_spec.num_actions, env.table_spec.num_robot_actions)
    return store, b


def test_rows_name_their_table_and_follow_it(case):
    name, env, steps = case
    spec = env.table_spec
    builder = env._builder
    for st in steps:
        assert isinstance(st["info"]["empo"], EmpoStep)
        tables, states, goals = st["entries"]
        assert set(tables) == {st["info"]["empo"].table}     # one step, one table
        store, b = expanded(env, st)
        np.testing.assert_array_equal(b.obs[0].numpy(), st["prev_obs"])
        np.testing.assert_allclose(b.goal_w.sum(-1).numpy(), 1.0, atol=1e-6)
        # the successor actually reached is one of the table's successors, with positive
        # probability under the action taken
        keys = store.states.key[b.succ[0]]
        k = np.flatnonzero((keys == builder.key(st["next"])) & b.succ_valid[0].numpy())
        assert len(k) == 1 and b.probs[0, st["action"], k[0]] > 0
        assert b.succ_terminal[0, k[0]] == float(st["terminated"])
        if spec.mode != "sampled":
            np.testing.assert_allclose(b.probs.sum(-1).numpy(), 1.0, atol=1e-5)
            real = b.goal_mask > 0
            np.testing.assert_allclose(b.vhe_probs.sum(-1)[real].numpy(), 1.0, atol=1e-5)
        else:
            expected = np.zeros((spec.num_robot_actions, 1), np.float32)
            expected[st["action"], 0] = 1.0
            np.testing.assert_array_equal(b.probs[0].numpy(), expected)
        if spec.mode != "sum":
            # V_h^e is trained on the goals the humans held during the step
            for i, g in enumerate(st["goals"]):
                np.testing.assert_array_equal(b.goal_enc[0, i, 0].numpy(), env.world.encode_goal(g))
                assert b.achieved[0, i, 0, k[0]] == float(g.is_achieved(st["next"]))


@pytest.mark.parametrize("a_r", [0, 1, 3])
def test_sampled_successors_follow_the_table_at_the_initial_state(a_r):
    """Right after reset the goals are drawn by weight, so the env's successor distribution
    for a robot action is the table's goal-marginal P(. | s0, a_r) (eq. 4)."""
    env = EmpoEnv({"world": "corridor", "num_humans": 2, "slip": 0.25})
    n = 3000
    counts, step = {}, None
    for i in range(n):
        env.reset(seed=i)
        obs, _, _, _, info = env.step(a_r)
        step = {"info": info, "entries": env.take_sample()}
        key = env._builder.key(env.get_state())
        counts[key] = counts.get(key, 0) + 1
    store, b = expanded(env, step)
    keys = store.states.key[b.succ[0]]
    p = {int(keys[k]): float(b.probs[0, a_r, k]) for k in range(b.succ.shape[1])
         if b.probs[0, a_r, k] > 0}
    assert set(counts) <= set(p)
    assert len(p) > 1                    # stochastic: slip and human choices
    tv = 0.5 * sum(abs(counts.get(key, 0) / n - q) for key, q in p.items())
    assert tv < 0.05, tv


def test_goals_are_resampled_after_achievement():
    """A human whose goal is achieved in a non-terminal successor draws a new goal from
    possible_goals (by weight); every other goal is kept."""
    env = EmpoEnv({"world": "corridor", "num_humans": 2})
    steps = rollout(env, 400, seed=1)
    changed_after_achieved, n_achieved = 0, 0
    for st in steps:
        if st["terminated"]:
            continue
        for g, g2 in zip(st["goals"], st["next_goals"]):
            if g.is_achieved(st["next"]):
                n_achieved += 1
                changed_after_achieved += g2 != g
                assert g2 in [x for x, _ in env.world.possible_goals(st["next"], g.human)]
            else:
                assert g2 == g, "a goal not yet achieved must be kept"
    assert n_achieved > 50
    # 5 goals of weight 1/5: a fresh draw differs from the old goal 4/5 of the time
    assert 0.6 < changed_after_achieved / n_achieved < 0.95


def test_reset_draws_goals_by_weight():
    env = EmpoEnv({"world": "corridor", "num_humans": 2})
    counts = {}
    for i in range(400):
        env.reset(seed=i)
        for g in env.goals:
            counts[g] = counts.get(g, 0) + 1
    # 2 humans x 5 corridor cells, uniform weights
    assert len(counts) == 10
    assert min(counts.values()) > 40 and max(counts.values()) < 120


def test_reset_is_reproducible_with_a_seed_on_fresh_envs():
    a = [(st["state"], st["action"], st["next"])
         for st in rollout(EmpoEnv({"world": "corridor", "slip": 0.25}), 30, seed=7)]
    b = [(st["state"], st["action"], st["next"])
         for st in rollout(EmpoEnv({"world": "corridor", "slip": 0.25}), 30, seed=7)]
    assert a == b


def test_reset_with_a_seed_does_not_depend_on_history():
    env = EmpoEnv({"world": "corridor", "slip": 0.25})
    a = [(st["state"], st["action"], st["next"]) for st in rollout(env, 30, seed=7)]
    b = [(st["state"], st["action"], st["next"]) for st in rollout(env, 30, seed=7)]
    assert a == b


def test_exploring_starts_start_away_from_the_initial_state():
    env = EmpoEnv({"world": "rock_gate", "empo": {"exploring_starts": 1.0}})
    s0 = env.world.initial_state()
    env.reset(seed=0)
    assert env.get_state() == s0          # nothing seen yet: the initial state
    env.step(0)                           # the successor table records states
    starts = []
    for _ in range(20):
        obs, _ = env.reset()
        starts.append(env.get_state())
        np.testing.assert_array_equal(obs, env.world.encode_state(env.get_state()))
        assert not env.world.is_terminal(env.get_state())
        env.step(int(env.np_random.integers(5)))
    assert all(s != s0 for s in starts)
    assert len(set(starts)) > 3
    # and without exploring starts every episode starts at s0
    plain = EmpoEnv({"world": "rock_gate"})
    plain.reset(seed=0)
    plain.step(0)
    for _ in range(5):
        plain.reset()
        assert plain.get_state() == s0


def _exploring_run(frontier: bool, episodes: int = 60):
    """States stepped from in ``episodes`` short episodes of random robot actions."""
    env = EmpoEnv({"world": "rock_gate", "empo": {"exploring_starts": 1.0,
                                                  "exploring_starts_frontier": frontier}})
    env.reset(seed=3)
    stepped, starts = set(), []
    for _ in range(episodes):
        env.reset()
        starts.append((env.get_state(), env.get_state() in stepped))
        for _ in range(2):
            stepped.add(env.get_state())
            _, _, term, trunc, _ = env.step(int(env.np_random.integers(5)))
            if term or trunc:
                break
    return env, stepped, starts


def test_exploring_starts_take_the_frontier_first():
    """With exploring_starts_frontier every exploring start is a state never stepped from
    before (while the frontier lasts), so the same episodes step from more distinct states
    than starts drawn from every state met."""
    env, stepped, starts = _exploring_run(True)
    builder = env._builder
    assert builder.frontier, "rock_gate's frontier should outlast 60 short episodes"
    assert not any(again for _, again in starts), "a frontier start was stepped from before"
    assert set(builder.frontier) <= set(builder.seen_states)
    _, stepped_any, starts_any = _exploring_run(False)
    assert any(again for _, again in starts_any)      # drawn from every state met
    assert len(stepped) > len(stepped_any)
    # without the frontier (the default) none is kept: no memory spent on it
    off, _, _ = _exploring_run(False, episodes=5)
    assert not off._builder.frontier and not off._builder._visited
    # an empty frontier falls back to any state met
    builder.frontier.clear()
    env.reset()
    assert env.get_state() in set(builder.seen_states)


def test_step_before_reset_raises():
    with pytest.raises(RuntimeError, match="reset"):
        EmpoEnv({"world": "rock_gate"}).step(0)


def test_describe():
    d = EmpoEnv({"world": "rock_gate"}).describe()
    assert d["world"] == "rock_gate" and d["mode"] == "sum" and d["num_robot_actions"] == 5


def test_bad_env_config():
    with pytest.raises(ValueError, match="world"):
        EmpoEnv({})
    with pytest.raises(ValueError, match="prior"):
        EmpoEnv({"world": "rock_gate", "prior": "nope"})
