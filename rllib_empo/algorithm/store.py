"""The replay memory: a ring of transition rows that point into three keyed stores.

Each distinct goal, state and successor table is stored once, keyed by a stable key
(``rllib_empo.worlds.keys``; the same on every EnvRunner), in a :class:`KeyedStore`:

| store  | one entry per              | columns (``rllib_empo.algorithm.tables`` says what they hold) |
|--------|----------------------------|--------------------------------------------------|
| goals  | goal                       | ``enc`` [Dg]                                     |
| states | state (visited or a successor) | ``obs`` [D], ``terminal``, ``goals`` [H, G] goal slots, ``goal_w`` [H, G] |
| tables | successor table of a state | ``state``, ``succ`` [K] state slots, ``kernel_k``/``kernel_p`` [J, Bm], ``achieved`` [H, M, K], ``prior`` [H, G, A] or ``held`` [H] goal slots, ``robot_action`` |

A transition row is just (``table`` slot, ``weight``): 12 bytes. Widths (K, Bm, ...) are the
largest seen so far, not a world's worst case; the observation column is stored as uint8 while
every observation is a small non-negative integer vector (one-hot grids), float32 otherwise.

**Lifetime.** Entries are reference-counted: rows hold their table, tables hold their state,
their successors and their goals, states hold the goals of their goal table. When the ring
overwrites or clears rows, tables (then states, then goals) whose count falls to zero are
freed and their slots reused; so no row ever points at a missing entry, and the stores hold at
most what ``capacity`` rows reference. ``gen[slot]`` counts the writes of a slot, so a cache
keyed by slot (the learner's target cache) can tell a reused slot from the old one.
"""
from __future__ import annotations

import numpy as np

from rllib_empo.algorithm.buffer import TransitionBuffer
from rllib_empo.algorithm.keyed_store import KeyedStore, _fit

__all__ = ["KeyedStore", "ReplayStore", "StoreReplica"]

MODES = ("sum", "sampled_humans", "sampled")
GOAL_FILLS = {"enc": 0.0}
STATE_FILLS = {"obs": 0, "terminal": True, "goals": -1, "goal_w": 0.0}
_TABLE_FILLS = {"state": -1, "succ": -1, "kernel_k": -1, "kernel_p": 0.0, "achieved": 0}
TABLE_FILLS = {"sum": {**_TABLE_FILLS, "prior": 0.0},
               "sampled_humans": {**_TABLE_FILLS, "held": -1},
               "sampled": {**_TABLE_FILLS, "held": -1, "robot_action": -1}}
ROW_COLUMNS = ("table", "weight")


class ReplayStore:
    """The driver's replay memory (module docstring): ``rows`` (a TransitionBuffer of
    ``capacity`` rows) over the ``goals``, ``states`` and ``tables`` stores."""

    def __init__(self, capacity: int, mode: str):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        # Names this memory (and its slots): a cache keyed by slot is only valid for it.
        self.uid = int(np.random.default_rng().integers(1 << 62))
        self.rows = TransitionBuffer(capacity)
        self.goals = KeyedStore("goals", GOAL_FILLS)
        self.states = KeyedStore("states", STATE_FILLS)
        self.tables = KeyedStore("tables", TABLE_FILLS[mode])

    # ---- the StoreView the learner reads ----------------------------------------------
    def store(self, name: str) -> KeyedStore:
        return {"goals": self.goals, "states": self.states, "tables": self.tables}[name]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def capacity(self) -> int:
        return self.rows.capacity

    @property
    def num_added(self) -> int:
        return self.rows.num_added

    # ---- adding a sample ----------------------------------------------------------------
    def add(self, sample: dict) -> None:
        """Merge one EnvRunner sample (``tables.pack_sample``'s dict of ``goals``, ``states``,
        ``tables`` entries keyed by stable keys, and ``rows`` naming tables by key)."""
        if not sample or not len(sample["rows"]["table"]):
            return
        g = sample["goals"]
        self.goals.insert(g["key"], {"enc": g["enc"]})
        s = sample["states"]
        state_cols = {"obs": s["obs"], "terminal": s["terminal"],
                      "goals": self.goals.translate(s["goals"]), "goal_w": s["goal_w"]}
        s_slots, s_new = self.states.insert(s["key"], state_cols)
        self.goals.incref(state_cols["goals"][s_new])
        t = sample["tables"]
        table_cols = {c: v for c, v in t.items() if c != "key"}
        table_cols["state"] = self.states.translate(t["state"])
        table_cols["succ"] = self.states.translate(t["succ"])
        if "held" in table_cols:
            table_cols["held"] = self.goals.translate(t["held"])
        t_slots, t_new = self.tables.insert(t["key"], table_cols)
        self.states.incref(table_cols["state"][t_new])
        self.states.incref(table_cols["succ"][t_new])
        if "held" in table_cols:
            self.goals.incref(table_cols["held"][t_new])
        row_tables = self.tables.translate(sample["rows"]["table"])
        weight = np.asarray(sample["rows"]["weight"], np.float32)
        if len(row_tables) > self.capacity:          # only the newest rows fit
            row_tables, weight = row_tables[-self.capacity:], weight[-self.capacity:]
        self.tables.incref(row_tables)
        evicted = self.rows.add({"table": row_tables, "weight": weight})
        if evicted is not None:
            self._release(evicted["table"])
        # entries that arrived but that no row or table holds (rows cut by the capacity)
        self._release_tables(t_slots[t_new][self.tables.refs[t_slots[t_new]] == 0])
        self._release_states(s_slots[s_new][self.states.refs[s_slots[s_new]] == 0])
        orphans = self.goals.live_slots()
        self.goals.free(orphans[self.goals.refs[orphans] == 0])

    def _release(self, table_slots: np.ndarray) -> None:
        self._release_tables(self.tables.decref(table_slots), already_freed=True)

    def _release_tables(self, slots: np.ndarray, already_freed: bool = False) -> None:
        if not already_freed:
            slots = self.tables.free(slots)
        if not len(slots):
            return
        cols = self.tables.cols
        freed = self.states.decref(np.concatenate([cols["state"][slots], cols["succ"][slots].ravel()]))
        if "held" in cols:
            self.goals.decref(cols["held"][slots])
        self._release_states(freed, already_freed=True)

    def _release_states(self, slots: np.ndarray, already_freed: bool = False) -> None:
        if not already_freed:
            slots = self.states.free(slots)
        if not len(slots):
            return
        self.goals.decref(self.states.cols["goals"][slots])

    def clear(self) -> None:
        """Forget every row (and every entry only rows held)."""
        live = self.rows.clear()
        if live is not None:
            self._release(live["table"])

    def sample(self, batch_size: int, rng: np.random.Generator, by: str = "transitions") -> dict:
        """``batch_size`` rows drawn with replacement: uniformly (``"transitions"``: states as
        often as they were visited), or ``"states"``: every stored state equally often, and
        among a state's rows each as often as it was recorded (so the sampled human actions
        of "sampled_humans" rows keep their frequencies); or ``"mixed"``: the even positions
        by states and the odd ones by transitions, so that every even-sized slice of the
        result (a minibatch) holds exactly half of each."""
        if by == "transitions":
            return self.rows.sample(batch_size, rng)
        if by == "mixed":
            out = self.sample(batch_size, rng, by="states")
            odd = self.rows.sample(batch_size // 2, rng)
            for k, v in out.items():
                v[1::2] = odd[k]
            return out
        if by != "states":
            raise ValueError(f"by must be 'transitions', 'states' or 'mixed', got {by!r}")
        n = len(self.rows)
        if n == 0:
            raise ValueError("cannot sample from an empty replay memory")
        table = self.rows._cols["table"][:n]
        state = self.tables.cols["state"][table]
        count = np.bincount(state)
        p = 1.0 / count[state]
        idx = rng.choice(n, size=batch_size, p=p / p.sum())
        return {k: v[idx] for k, v in self.rows._cols.items()}

    # ---- sizes --------------------------------------------------------------------------
    def sizes(self) -> dict:
        """Entries and bytes: rows, the stores, and bytes per transition (all of it / rows)."""
        stores = {n: self.store(n) for n in ("goals", "states", "tables")}
        total = self.rows.nbytes + sum(s.nbytes for s in stores.values())
        out = {"rows": len(self.rows), "row_bytes": self.rows.bytes_per_row,
               **{f"{n}": len(s) for n, s in stores.items()},
               **{f"{n}_bytes": s.nbytes for n, s in stores.items()},
               "bytes_total": total}
        out["bytes_per_transition"] = total / max(len(self.rows), 1)
        return out

    # ---- checkpoints --------------------------------------------------------------------
    def get_state(self, rows: bool = True) -> dict:
        """Rows and entries; or (``rows=False``) only the layout, so that a memory restored
        empty allocates its slots as this one would (``KeyedStore.get_state``)."""
        ring = self.rows.get_state() if rows else {
            "capacity": self.capacity, "columns": None, "num_added": self.num_added, "pos": 0}
        return {"mode": self.mode, "uid": self.uid, "rows": ring,
                **{n: self.store(n).get_state(entries=rows) for n in ("goals", "states", "tables")}}

    def set_state(self, state: dict) -> None:
        self.__init__(state["rows"]["capacity"], state["mode"])
        self.uid = state["uid"]
        for n in ("goals", "states", "tables"):
            self.store(n).set_state(state[n])
        self.rows.set_state(state["rows"])

    # ---- replicas -----------------------------------------------------------------------
    def delta(self, full: bool = False) -> dict:
        """What a learner-side :class:`StoreReplica` needs to catch up: the slots written since
        the last delta (all live slots with ``full``), with their columns and generations."""
        out = {"mode": self.mode, "uid": self.uid, "full": full}
        for n in ("goals", "states", "tables"):
            st = self.store(n)
            st.track_dirty = True
            slots = st.live_slots() if full else st.take_dirty()
            if full:
                st.take_dirty()
            out[n] = {"capacity": st.capacity, "slots": slots, "gen": st.gen[slots],
                      "cols": {c: a[slots] for c, a in st.cols.items()}}
        return out


class StoreReplica:
    """A learner process's copy of the driver's stores, slot for slot, kept up to date by
    :meth:`ReplayStore.delta` (only the columns: keys and references stay on the driver)."""

    def __init__(self, mode: str):
        self.mode = mode
        self.uid = None
        self._stores = {n: _ReplicaStore(n, f) for n, f in
                        (("goals", GOAL_FILLS), ("states", STATE_FILLS), ("tables", TABLE_FILLS[mode]))}

    def store(self, name: str) -> "_ReplicaStore":
        return self._stores[name]

    def apply(self, delta: dict) -> None:
        if delta["full"] or delta["uid"] != self.uid:
            self.__init__(delta["mode"])          # a new memory: start over
            self.uid = delta["uid"]
        for n in ("goals", "states", "tables"):
            self._stores[n].apply(delta[n])


class _ReplicaStore:
    def __init__(self, name: str, fills: dict):
        self.name, self.fills = name, fills
        self.cols: dict[str, np.ndarray] = {}
        self.gen = np.zeros(0, np.int64)

    def col(self, name: str) -> np.ndarray:
        return self.cols[name]

    @property
    def capacity(self) -> int:
        return len(self.gen)

    def apply(self, part: dict) -> None:
        cap = max(int(part["capacity"]), self.capacity)
        if cap > self.capacity:
            self.gen = np.concatenate([self.gen, np.zeros(cap - self.capacity, np.int64)])
            for c, arr in self.cols.items():
                pad = np.full((cap - len(arr),) + arr.shape[1:], self.fills[c], arr.dtype)
                self.cols[c] = np.concatenate([arr, pad])
        slots = np.asarray(part["slots"], np.int64)
        self.gen[slots] = part["gen"]
        for c, v in part["cols"].items():
            arr = self.cols.get(c)
            if arr is None or v.shape[1:] != arr.shape[1:] or v.dtype != arr.dtype:
                shape = v.shape[1:] if arr is None else tuple(
                    max(a, b) for a, b in zip(arr.shape[1:], v.shape[1:]))
                new = np.full((cap,) + shape, self.fills[c], v.dtype if arr is None
                              else np.result_type(arr.dtype, v.dtype))
                if arr is not None:
                    new[:len(arr)] = _fit(arr, shape, self.fills[c])
                arr = self.cols[c] = new
            arr[slots] = _fit(v, arr.shape[1:], self.fills[c])
