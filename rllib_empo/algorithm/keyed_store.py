"""Keyed stores: entries with a stable int key, each stored once in a slot of growable numpy
columns and reference-counted, slots reused after a free, ``gen[slot]`` counting the writes of
a slot (the building block of the replay memory, ``rllib_empo.algorithm.store``). Imports
only numpy."""
from __future__ import annotations

import numpy as np


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
