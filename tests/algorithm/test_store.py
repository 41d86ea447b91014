"""The replay memory (rllib_empo.algorithm.store): entries stored once, rows that never point
at a missing entry, bounded by what the rows reference, checkpoints and learner replicas."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from rllib_empo.algorithm.batch import expand
from rllib_empo.algorithm.store import KeyedStore, ReplayStore, StoreReplica

from test_targets import A, AR, random_sample


def check_invariants(store: ReplayStore) -> None:
    """Every row's table is live; every live table's states and goals are live; reference
    counts equal the references actually held; nothing unreferenced stays."""
    rows = store.rows
    live_rows = rows._cols["table"][:len(rows)] if rows._cols is not None else np.zeros(0, int)
    tables, states, goals = store.tables, store.states, store.goals
    assert (tables.key[live_rows] >= 0).all()
    t_live = tables.live_slots()
    counts = np.bincount(live_rows, minlength=tables.capacity)
    np.testing.assert_array_equal(tables.refs[t_live], counts[t_live])
    assert (counts[t_live] > 0).all()
    held_states = np.concatenate([tables.col("state")[t_live], tables.col("succ")[t_live].ravel()])
    held_states = held_states[held_states >= 0]
    assert (states.key[held_states] >= 0).all()
    s_counts = np.bincount(held_states, minlength=states.capacity)
    s_live = states.live_slots()
    np.testing.assert_array_equal(states.refs[s_live], s_counts[s_live])
    assert (s_counts[s_live] > 0).all()
    held_goals = [states.col("goals")[s_live].ravel()]
    if "held" in tables.cols:
        held_goals.append(tables.col("held")[t_live].ravel())
    held_goals = np.concatenate(held_goals)
    held_goals = held_goals[held_goals >= 0]
    assert (goals.key[held_goals] >= 0).all()
    g_live = goals.live_slots()
    g_counts = np.bincount(held_goals, minlength=goals.capacity)
    np.testing.assert_array_equal(goals.refs[g_live], g_counts[g_live])
    assert len(tables) == len(t_live) and len(states) == len(s_live)


@pytest.mark.parametrize("mode", ["sum", "sampled_humans", "sampled"])
def test_eviction_never_leaves_a_row_pointing_at_a_missing_entry(mode):
    store = ReplayStore(15, mode)
    rng = np.random.default_rng(0)
    samples = [random_sample(mode, seed=s) for s in range(12)]
    for i in range(40):                       # overlapping samples: entries are shared
        sample = samples[int(rng.integers(len(samples)))]
        store.add(sample)
        check_invariants(store)
        b = expand(store, torch.from_numpy(store.sample(32, rng)["table"]),
                   torch.ones(32), A, AR)
        assert (b.obs.abs().sum(-1) > 0).all()        # real states, not freed slots
    # bounded by what the rows reference, whatever was added
    assert len(store.tables) <= store.capacity
    store.clear()
    assert len(store) == 0 and len(store.tables) == len(store.states) == len(store.goals) == 0


def test_each_distinct_entry_is_stored_once():
    store = ReplayStore(1000, "sum")
    sample = random_sample("sum", seed=3)
    for _ in range(5):
        store.add(sample)
    assert len(store) == 5 * len(sample["rows"]["table"])
    tb, st = sample["tables"], sample["states"]
    mentioned = set(tb["state"].tolist()) | set(tb["succ"][tb["succ"] >= 0].tolist())
    goals = {g for k, gs in zip(st["key"], st["goals"]) if k in mentioned for g in gs.ravel()
             if g >= 0}
    assert len(store.tables) == len(tb["key"])
    assert len(store.states) == len(mentioned) < len(st["key"])   # unmentioned ones are not kept
    assert len(store.goals) == len(goals)
    check_invariants(store)


def test_an_add_larger_than_the_capacity_keeps_the_newest_rows_and_their_entries():
    sample = random_sample("sampled_humans", seed=0)
    store = ReplayStore(3, "sampled_humans")
    store.add(sample)
    assert len(store) == 3 and len(store.tables) <= 3
    kept = store.tables.key[store.rows._cols["table"][:3]]
    np.testing.assert_array_equal(np.sort(kept), np.sort(sample["rows"]["table"][-3:]))
    check_invariants(store)


@pytest.mark.parametrize("mode", ["sum", "sampled"])
def test_checkpoint_round_trip(mode):
    store = ReplayStore(20, mode)
    for seed in range(4):
        store.add(random_sample(mode, seed=seed))
    state = pickle.loads(pickle.dumps(store.get_state()))
    restored = ReplayStore(1, "sum")
    restored.set_state(state)
    check_invariants(restored)
    assert restored.sizes() == store.sizes()
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    a, b = store.sample(50, rng_a), restored.sample(50, rng_b)
    np.testing.assert_array_equal(a["table"], b["table"])
    ba = expand(store, torch.from_numpy(a["table"]), torch.from_numpy(a["weight"]), A, AR)
    bb = expand(restored, torch.from_numpy(b["table"]), torch.from_numpy(b["weight"]), A, AR)
    for field in ("obs", "probs", "vhe_probs", "achieved", "goal_enc", "succ_terminal"):
        assert torch.equal(getattr(ba, field), getattr(bb, field)), field
    # the restored store keeps working: more adds, evictions, invariants
    restored.add(random_sample(mode, seed=9))
    check_invariants(restored)


def test_a_replica_fed_by_deltas_expands_rows_like_the_driver():
    store = ReplayStore(12, "sum")
    replica = StoreReplica("sum")
    store.add(random_sample("sum", seed=0))
    replica.apply(store.delta(full=True))
    rng = np.random.default_rng(1)
    for seed in range(1, 8):
        store.add(random_sample("sum", seed=seed))
        replica.apply(store.delta())
        rows = store.sample(40, rng)
        t, w = torch.from_numpy(rows["table"]), torch.from_numpy(rows["weight"])
        ours, theirs = expand(store, t, w, A, AR), expand(replica, t, w, A, AR)
        for field in ("s", "obs", "probs", "vhe_probs", "achieved", "goal_enc", "succ"):
            assert torch.equal(getattr(ours, field), getattr(theirs, field)), field
        np.testing.assert_array_equal(replica.store("states").gen[:store.states.capacity],
                                      store.states.gen)


def test_observations_are_stored_compactly_and_widen_when_needed():
    st = KeyedStore("states", {"obs": 0, "terminal": True, "goals": -1, "goal_w": 0.0})
    one_hot = np.eye(4, dtype=np.float32)
    st.insert(np.arange(4), {"obs": one_hot})
    assert st.col("obs").dtype == np.uint8
    st.insert(np.arange(4, 6), {"obs": np.array([[0.5, 0, 0, 0], [0, 0, 0, 2.0]], np.float32)})
    assert st.col("obs").dtype == np.float32
    np.testing.assert_array_equal(st.col("obs")[st.slots_of([0, 3, 4])],
                                  [[1, 0, 0, 0], [0, 0, 0, 1], [0.5, 0, 0, 0]])
    # wider entries widen the column; older entries are padded
    st2 = KeyedStore("tables", {"succ": -1})
    st2.insert([1], {"succ": np.array([[5, 6]])})
    st2.insert([2], {"succ": np.array([[7, 8, 9, 10]])})
    np.testing.assert_array_equal(st2.col("succ")[st2.slots_of([1, 2])],
                                  [[5, 6, -1, -1], [7, 8, 9, 10]])


def test_rows_are_small_and_the_memory_reports_its_bytes():
    store = ReplayStore(1000, "sum")
    store.add(random_sample("sum", seed=0))
    sizes = store.sizes()
    assert sizes["row_bytes"] == 12                   # a table slot and a weight
    assert sizes["bytes_total"] == (store.rows.nbytes + store.goals.nbytes + store.states.nbytes
                                    + store.tables.nbytes)


def test_sampling_by_states_draws_every_state_equally_often():
    """'states': every stored state equally often whatever its visit count; among a state's
    rows each by its frequency. 'transitions': states as often as their rows. 'mixed': half
    of each."""
    sample = random_sample("sampled_humans", seed=0)
    tables, states = sample["tables"], sample["states"]
    # table 0 recorded 9 more times: its state is visited 10x as often as the others
    rows = np.concatenate([sample["rows"]["table"], np.repeat(sample["rows"]["table"][:1], 9)])
    store = ReplayStore(1000, "sampled_humans")
    store.add({**sample, "rows": {"table": rows, "weight": np.ones(len(rows), np.float32)}})
    rng = np.random.default_rng(0)
    state_of = store.tables.col("state")
    by_state = np.bincount(state_of[store.sample(60_000, rng, by="states")["table"]])
    by_row = np.bincount(state_of[store.sample(60_000, rng, by="transitions")["table"]])
    held = by_state[by_state > 0]
    assert held.max() / held.min() < 1.1                       # uniform over states
    first = state_of[store.tables.translate(np.array([tables["key"][0]]))[0]]
    assert by_row[first] / by_row.sum() == pytest.approx(10 / len(rows), rel=0.1)
    # 'mixed': even positions by states, odd ones by transitions, every even slice half each
    mixed = state_of[store.sample(60_000, rng, by="mixed")["table"]]
    even, odd = np.bincount(mixed[0::2], minlength=len(by_state)), np.bincount(mixed[1::2])
    assert even[first] / even.sum() == pytest.approx(1 / len(held), rel=0.1)
    assert odd[first] / odd.sum() == pytest.approx(10 / len(rows), rel=0.1)
    assert len(store.sample(7, rng, by="mixed")["table"]) == 7
    with pytest.raises(ValueError, match="by must be"):
        store.sample(4, rng, by="nope")
