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

MODES = ("sum", "sampled_humans", "sampled")
GOAL_FILLS = {"enc": 0.0}
STATE_FILLS = {"obs": 0, "terminal": True, "goals": -1, "goal_w": 0.0}
_TABLE_FILLS = {"state": -1, "succ": -1, "kernel_k": -1, "kernel_p": 0.0, "achieved": 0}
TABLE_FILLS = {"sum": {**_TABLE_FILLS, "prior": 0.0},
               "sampled_humans": {**_TABLE_FILLS, "held": -1},
               "sampled": {**_TABLE_FILLS, "held": -1, "robot_action": -1}}
ROW_COLUMNS = ("table", "weight")


def _fit(data: np.ndarray, shape: tuple, fill) -> np.ndarray:
    """``data`` [n, ...] padded with ``fill`` to trailing ``shape``."""
    if data.shape[1:] == shape:
        return data
    out = np.full((len(data),) + shape, fill, dtype=data.dtype)
    out[(slice(None),) + tuple(slice(0, d) for d in data.shape[1:])] = data
    return out


class KeyedStore:
    """Entries with a stable int key, each stored once in a slot of growable numpy columns,
    reference-counted (module docstring). ``fills`` names the columns and their pad values;
    shapes and dtypes come from the first insert and widen when wider data arrives."""

    def __init__(self, name: str, fills: dict):
        self.name, self.fills = name, dict(fills)
        self.cols: dict[str, np.ndarray] = {}
        self.key = np.zeros(0, np.int64)
        self.refs = np.zeros(0, np.int64)
        self.gen = np.zeros(0, np.int64)
        self._slot: dict[int, int] = {}
        self._free: list[int] = []
        self._dirty: list[np.ndarray] = []
        self.track_dirty = False        # set once a replica consumes deltas

    def __len__(self) -> int:
        return len(self._slot)

    @property
    def capacity(self) -> int:
        return len(self.key)

    @property
    def nbytes(self) -> int:
        """Bytes of the columns and the bookkeeping (allocated capacity)."""
        return (sum(c.nbytes for c in self.cols.values()) + self.key.nbytes + self.refs.nbytes
                + self.gen.nbytes)

    def bytes_per_entry(self) -> int:
        return sum(c[0].nbytes for c in self.cols.values()) + 24 if self.cols else 0

    def col(self, name: str) -> np.ndarray:
        return self.cols[name]

    def slots_of(self, keys) -> np.ndarray:
        """Slots of ``keys`` (-1 where absent)."""
        get = self._slot.get
        return np.fromiter((get(int(k), -1) for k in keys), np.int64, count=len(keys))

    def translate(self, keys: np.ndarray) -> np.ndarray:
        """``keys`` of any shape (-1 = none) -> slots; every key must be stored."""
        keys = np.asarray(keys, np.int64)
        out = np.full(keys.shape, -1, np.int64)
        some = keys >= 0
        if some.any():
            uk, inv = np.unique(keys[some], return_inverse=True)
            slots = self.slots_of(uk)
            if (slots < 0).any():
                raise KeyError(f"{self.name}: {int((slots < 0).sum())} referenced keys are not "
                               "in the store (a sample must carry every entry its tables use)")
            out[some] = slots[inv]
        return out

    def insert(self, keys: np.ndarray, columns: dict) -> tuple[np.ndarray, np.ndarray]:
        """Store the entries whose keys are new; return (slots of all ``keys``, mask of the
        new ones). Entries already stored keep their data. New entries start with 0 refs."""
        keys = np.asarray(keys, np.int64)
        slots = self.slots_of(keys)
        new = slots < 0
        n = int(new.sum())
        if n:
            if len(np.unique(keys[new])) != n:
                raise ValueError(f"{self.name}: duplicate keys in one insert")
            fresh = self._allocate(n)
            slots[new] = fresh
            for k, s in zip(keys[new].tolist(), fresh.tolist()):
                self._slot[k] = s
            self.key[fresh] = keys[new]
            self.refs[fresh] = 0
            self.gen[fresh] += 1
            self._write(fresh, {c: np.asarray(v)[new] for c, v in columns.items()})
            if self.track_dirty:
                self._dirty.append(fresh)
        return slots, new

    def _allocate(self, n: int) -> np.ndarray:
        take = [self._free.pop() for _ in range(min(n, len(self._free)))]
        extra = n - len(take)
        if extra:
            start = self.capacity
            self._grow(start + extra)
            take += range(start, start + extra)
        return np.asarray(take, np.int64)

    def _grow(self, need: int) -> None:
        cap = max(need, 2 * self.capacity, 64)
        grow = cap - self.capacity
        self.key = np.concatenate([self.key, np.full(grow, -1, np.int64)])
        self.refs = np.concatenate([self.refs, np.zeros(grow, np.int64)])
        self.gen = np.concatenate([self.gen, np.zeros(grow, np.int64)])
        for c, arr in self.cols.items():
            pad = np.full((grow,) + arr.shape[1:], self.fills[c], arr.dtype)
            self.cols[c] = np.concatenate([arr, pad])
        # the slots just added are free beyond what _allocate hands out now
        self._free.extend(range(cap - 1, need - 1, -1))

    def _write(self, slots: np.ndarray, data: dict) -> None:
        for c, v in data.items():
            v = np.asarray(v)
            arr = self.cols.get(c)
            if arr is None:
                dtype = _compact_dtype(c, v)
                arr = self.cols[c] = np.full((self.capacity,) + v.shape[1:], self.fills[c], dtype)
            if v.ndim != arr.ndim:
                raise ValueError(f"{self.name}.{c}: entries of rank {v.ndim - 1}, the store holds "
                                 f"rank {arr.ndim - 1}")
            wide = tuple(max(a, b) for a, b in zip(arr.shape[1:], v.shape[1:]))
            if wide != arr.shape[1:] or not _fits(v, arr.dtype):
                dtype = arr.dtype if _fits(v, arr.dtype) else np.promote_types(arr.dtype, v.dtype)
                arr = self.cols[c] = _fit(arr, wide, self.fills[c]).astype(dtype, copy=False)
            arr[slots] = _fit(v, arr.shape[1:], self.fills[c])

    def incref(self, slots: np.ndarray) -> None:
        slots = np.asarray(slots, np.int64).ravel()
        np.add.at(self.refs, slots[slots >= 0], 1)

    def decref(self, slots: np.ndarray) -> np.ndarray:
        """Drop references; free and return the slots whose count reached 0."""
        slots = np.asarray(slots, np.int64).ravel()
        slots = slots[slots >= 0]
        if not slots.size:
            return slots
        np.subtract.at(self.refs, slots, 1)
        touched = np.unique(slots)
        return self.free(touched[self.refs[touched] <= 0])

    def free(self, slots: np.ndarray) -> np.ndarray:
        """Forget the entries in ``slots`` (their refs must be 0); slots already free are
        skipped. Returns the slots freed."""
        slots = np.asarray(slots, np.int64)
        slots = slots[self.key[slots] >= 0]
        for k in self.key[slots].tolist():
            del self._slot[k]
        self.key[slots] = -1
        self.refs[slots] = 0
        self._free.extend(slots.tolist())
        return slots

    def take_dirty(self) -> np.ndarray:
        """Slots written since the last call (for a replica's delta)."""
        out = np.unique(np.concatenate(self._dirty)) if self._dirty else np.zeros(0, np.int64)
        self._dirty = []
        return out

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self.key >= 0)

    def get_state(self, entries: bool = True) -> dict:
        """Everything (``entries``), or only the slot layout: the capacity, every slot's
        generation and the order free slots are reused in, with the stored entries counted
        as free (a restored empty store then allocates exactly as this one would have)."""
        live = self.live_slots()
        if not entries:
            free = np.concatenate([live[::-1], np.asarray(self._free, np.int64)])
            return {"name": self.name, "capacity": self.capacity, "slots": live[:0], "free": free,
                    "key": live[:0], "refs": live[:0], "gen": live[:0], "all_gen": self.gen.copy(),
                    "cols": {}, "dtypes": {}, "shapes": {}}
        return {"name": self.name, "capacity": self.capacity, "slots": live,
                "free": np.asarray(self._free, np.int64),      # reuse order, for identical runs
                "key": self.key[live], "refs": self.refs[live], "gen": self.gen[live],
                "cols": {c: a[live] for c, a in self.cols.items()},
                "dtypes": {c: str(a.dtype) for c, a in self.cols.items()},
                "shapes": {c: a.shape[1:] for c, a in self.cols.items()}}

    def set_state(self, state: dict) -> None:
        self.__init__(self.name, self.fills)
        cap, live = int(state["capacity"]), np.asarray(state["slots"], np.int64)
        self.key = np.full(cap, -1, np.int64)
        self.refs = np.zeros(cap, np.int64)
        self.gen = np.zeros(cap, np.int64)
        self.key[live], self.refs[live], self.gen[live] = state["key"], state["refs"], state["gen"]
        if "all_gen" in state:
            self.gen[:] = state["all_gen"]
        for c, data in state["cols"].items():
            arr = np.full((cap,) + tuple(state["shapes"][c]), self.fills[c], state["dtypes"][c])
            arr[live] = data
            self.cols[c] = arr
        self._slot = dict(zip(self.key[live].tolist(), live.tolist()))
        self._free = np.asarray(state["free"], np.int64).tolist()


def _compact_dtype(column: str, v: np.ndarray):
    """uint8 for observations that are small non-negative integers (one-hot grids)."""
    if column == "obs" and v.size and v.dtype.kind == "f" and _fits(v, np.uint8):
        return np.uint8
    if column in ("kernel_k",):
        return np.int16 if v.size == 0 or v.max() < 2 ** 15 else np.int32
    if column == "achieved":
        return np.uint8
    return v.dtype


def _fits(v: np.ndarray, dtype) -> bool:
    dtype = np.dtype(dtype)
    if dtype.kind != "u" and dtype.kind != "i":
        return True
    if v.size == 0:
        return True
    info = np.iinfo(dtype)
    if v.dtype.kind == "f":
        return bool(np.all((v >= info.min) & (v <= info.max) & (v == np.round(v))))
    return bool(v.min() >= info.min and v.max() <= info.max)


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
        of "sampled_humans" rows keep their frequencies)."""
        if by == "transitions":
            return self.rows.sample(batch_size, rng)
        if by != "states":
            raise ValueError(f"by must be 'transitions' or 'states', got {by!r}")
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
