"""TransitionBuffer: the flat numpy ring buffer of fixed-shape rows."""
from __future__ import annotations

import numpy as np
import pytest

from rllib_empo.algorithm.buffer import TransitionBuffer


def rows(start: int, n: int) -> dict:
    """n rows numbered start..start+n-1 (the number is written into every column)."""
    ids = np.arange(start, start + n)
    return {"obs": np.repeat(ids[:, None], 3, 1).astype(np.float32),
            "probs": np.broadcast_to(ids[:, None, None], (n, 2, 4)).astype(np.float32).copy(),
            "flag": ids.astype(np.int64)}


def ids_of(buf: TransitionBuffer) -> list:
    """The row numbers held, oldest first."""
    rows_ = buf.oldest_first()
    return [] if rows_ is None else rows_["flag"].tolist()


def test_add_len_sample_clear():
    buf = TransitionBuffer(10)
    assert len(buf) == 0 and buf.columns == () and buf.nbytes == 0
    buf.add(rows(0, 4))
    assert len(buf) == 4 and set(buf.columns) == {"obs", "probs", "flag"}
    assert buf.bytes_per_row == 3 * 4 + 8 * 4 + 8
    assert buf.nbytes == 10 * buf.bytes_per_row        # allocated once, at capacity
    buf.add(rows(4, 3))
    assert len(buf) == 7 and buf.num_added == 7
    batch = buf.sample(50, np.random.default_rng(0))
    assert batch["obs"].shape == (50, 3) and batch["probs"].shape == (50, 2, 4)
    assert batch["obs"].dtype == np.float32 and batch["flag"].dtype == np.int64
    assert set(batch["flag"].tolist()) <= set(range(7))
    # rows stay intact: every column of a sampled row carries the same id
    assert (batch["obs"] == batch["flag"][:, None]).all()
    assert (batch["probs"] == batch["flag"][:, None, None]).all()
    buf.clear()
    assert len(buf) == 0 and buf.num_added == 7       # lifetime count survives a clear
    with pytest.raises(ValueError, match="empty"):
        buf.sample(1, np.random.default_rng(0))
    buf.add(rows(100, 2))
    assert len(buf) == 2
    assert set(buf.sample(40, np.random.default_rng(1))["flag"].tolist()) == {100, 101}


def test_add_empty_dict_is_a_no_op():
    buf = TransitionBuffer(5)
    buf.add({})
    assert len(buf) == 0 and buf.num_added == 0


def test_sampling_an_empty_buffer_raises():
    with pytest.raises(ValueError, match="empty"):
        TransitionBuffer(5).sample(4, np.random.default_rng(0))


def test_sampling_covers_all_rows_uniformly():
    buf = TransitionBuffer(8)
    buf.add(rows(0, 8))
    flags = buf.sample(8000, np.random.default_rng(2))["flag"]
    counts = np.bincount(flags, minlength=8)
    assert counts.min() > 850 and counts.max() < 1150


def test_ring_wrap_keeps_newest_rows():
    buf = TransitionBuffer(5)
    buf.add(rows(0, 3))
    buf.add(rows(3, 4))          # wraps: 7 rows into 5 slots
    assert len(buf) == 5 and buf.num_added == 7
    assert ids_of(buf) == [2, 3, 4, 5, 6]
    assert set(buf.sample(500, np.random.default_rng(0))["flag"].tolist()) == {2, 3, 4, 5, 6}
    buf.add(rows(7, 12))         # more rows than the capacity in one add
    assert len(buf) == 5
    assert ids_of(buf) == [14, 15, 16, 17, 18]
    buf.add(rows(19, 1))
    assert ids_of(buf) == [15, 16, 17, 18, 19]


def test_num_added_counts_rows_of_an_oversized_add():
    buf = TransitionBuffer(5)
    buf.add(rows(0, 12))
    assert len(buf) == 5
    assert buf.num_added == 12


@pytest.mark.parametrize("n_added", [0, 3, 5, 8, 13])
def test_state_round_trip(n_added):
    buf = TransitionBuffer(5)
    for start in range(0, n_added, 2):
        buf.add(rows(start, min(2, n_added - start)))
    state = buf.get_state()
    other = TransitionBuffer(1)
    other.set_state(state)
    assert other.capacity == 5 and len(other) == len(buf) == min(n_added, 5)
    assert other.num_added == buf.num_added == n_added
    assert ids_of(other) == ids_of(buf) == list(range(max(0, n_added - 5), n_added))
    for k in ("obs", "probs"):
        assert np.array_equal(state["columns"][k] if state["columns"] else None,
                              other.get_state()["columns"][k] if n_added else None)
    if n_added:
        a = buf.sample(30, np.random.default_rng(9))
        b = other.sample(30, np.random.default_rng(9))
        assert all(np.array_equal(a[k], b[k]) for k in a)    # the same slots: same samples
        assert set(b["flag"].tolist()) <= set(ids_of(buf))
        # after the round trip new rows still overwrite the oldest ones
        other.add(rows(100, 1))
        buf.add(rows(100, 1))
        assert ids_of(other) == ids_of(buf)


def test_state_is_a_copy():
    buf = TransitionBuffer(4)
    buf.add(rows(0, 2))
    state = buf.get_state()
    buf.add(rows(2, 2))
    buf.clear()
    assert state["columns"]["flag"].tolist() == [0, 1]


def test_add_returns_the_rows_that_leave_and_clear_the_rows_held():
    buf = TransitionBuffer(4)
    assert buf.add(rows(0, 3)) is None
    out = buf.add(rows(3, 3))                     # overwrites rows 0 and 1
    assert out["flag"].tolist() == [0, 1]
    out = buf.add(rows(6, 6))                     # larger than the buffer: 4 kept
    assert sorted(out["flag"].tolist()) == [2, 3, 4, 5, 6, 7]
    assert ids_of(buf) == [8, 9, 10, 11]
    assert sorted(buf.clear()["flag"].tolist()) == [8, 9, 10, 11]
    assert buf.clear() is None and len(buf) == 0


def test_shape_mismatch_raises():
    buf = TransitionBuffer(5)
    buf.add(rows(0, 2))
    bad = rows(2, 2)
    bad["probs"] = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="probs"):
        buf.add(bad)
    missing = rows(2, 2)
    del missing["flag"]
    with pytest.raises(ValueError, match="columns"):
        buf.add(missing)
    ragged = rows(2, 2)
    ragged["flag"] = ragged["flag"][:1]
    with pytest.raises(ValueError, match="row counts"):
        buf.add(ragged)
    assert len(buf) == 2 and ids_of(buf) == [0, 1]      # failed adds change nothing


@pytest.mark.parametrize("capacity", [0, -1, 2.5, None])
def test_bad_capacity(capacity):
    with pytest.raises(ValueError, match="replay_capacity"):
        TransitionBuffer(capacity)


def test_sampling_is_reproducible_with_a_seeded_generator():
    buf = TransitionBuffer(50)
    buf.add(rows(0, 50))
    a = buf.sample(20, np.random.default_rng(123))
    b = buf.sample(20, np.random.default_rng(123))
    c = buf.sample(20, np.random.default_rng(124))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["flag"], c["flag"])
    rng1, rng2 = np.random.default_rng(5), np.random.default_rng(5)
    seq1 = [buf.sample(4, rng1)["flag"].tolist() for _ in range(3)]
    seq2 = [buf.sample(4, rng2)["flag"].tolist() for _ in range(3)]
    assert seq1 == seq2


def test_a_buffer_larger_than_the_ram_is_refused_at_the_first_add(monkeypatch, caplog):
    """numpy allocates lazily: without this check an oversized buffer fails only once full."""
    from rllib_empo.algorithm import buffer as buffer_mod
    monkeypatch.setattr(buffer_mod, "physical_memory_bytes", lambda: 2**20)   # 1 MiB of RAM
    rows = {"obs": np.zeros((1, 256), np.float32)}                            # 1 KiB per row
    with pytest.raises(ValueError, match=r"replay_capacity=2,000 .* set replay_capacity <= 512"):
        TransitionBuffer(2000).add(rows)
    with caplog.at_level("WARNING", logger="rllib_empo.algorithm.buffer"):
        b = TransitionBuffer(700)                   # 700 KiB: over half the RAM, allowed
        b.add(rows)
    assert len(b) == 1 and "over half" in caplog.text
    TransitionBuffer(100).add(rows)                 # small: silent
