"""TransitionBuffer: a flat numpy ring buffer of fixed-shape rows.

Rows (see ``rllib_empo.algorithm.tables``) are model-based targets' raw material; one row per env step.
Columns are allocated on the first ``add`` from the rows' shapes and dtypes, so the buffer
holds exactly ``capacity * bytes_per_row`` bytes once full, with no per-row Python objects.
``sample`` draws uniformly with replacement with the caller's generator (reproducible);
``clear`` forgets every row (the warm-up's clearing points) without reallocating.
"""
from __future__ import annotations

import logging
import os

import numpy as np

logger = logging.getLogger(__name__)


def physical_memory_bytes() -> int | None:
    """This machine's RAM (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


class TransitionBuffer:
    def __init__(self, capacity: int):
        if not isinstance(capacity, (int, np.integer)) or capacity < 1:
            raise ValueError(f"replay_capacity must be an int >= 1, got {capacity!r}")
        self.capacity = int(capacity)
        self._cols: dict[str, np.ndarray] | None = None
        self._size = 0
        self._pos = 0
        self.num_added = 0          # lifetime rows added (not reset by clear)

    def __len__(self) -> int:
        return self._size

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self._cols) if self._cols else ()

    @property
    def bytes_per_row(self) -> int:
        return sum(a[0].nbytes for a in self._cols.values()) if self._cols else 0

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._cols.values()) if self._cols else 0

    def _allocate(self, rows: dict[str, np.ndarray]) -> None:
        """Columns for ``capacity`` rows. numpy maps the pages lazily, so an oversized buffer
        would only fail when it fills, possibly hours into a run: check against the RAM now."""
        row = sum(v.itemsize * int(np.prod(v.shape[1:])) for v in rows.values())
        full, ram = row * self.capacity, physical_memory_bytes()
        if ram and full > ram:
            raise ValueError(
                f"replay_capacity={self.capacity:,} rows of {row:,} bytes (this world's successor "
                f"tables) need {full / 2**30:.1f} GiB once full, more than this machine's "
                f"{ram / 2**30:.1f} GiB of RAM; set replay_capacity <= {ram // 2 // row:,} "
                "(half the RAM)")
        if ram and full > ram // 2:
            logger.warning("replay buffer: %s rows of %s bytes need %.1f GiB once full, over half "
                           "of this machine's %.1f GiB of RAM", f"{self.capacity:,}", f"{row:,}",
                           full / 2**30, ram / 2**30)
        self._cols = {k: np.zeros((self.capacity,) + v.shape[1:], v.dtype) for k, v in rows.items()}

    def add(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """Append n rows given as column arrays with a leading axis of length n. Returns the
        rows that left the buffer (overwritten by the ring, or the oldest of an add larger
        than the capacity), or None."""
        if not rows:
            return None
        n = {len(v) for v in rows.values()}
        if len(n) != 1:
            raise ValueError(f"columns have different row counts: "
                             f"{ {k: len(v) for k, v in rows.items()} }")
        n = n_in = n.pop()
        if self._cols is None:
            self._allocate(rows)
        if set(rows) != set(self._cols):
            raise ValueError(f"rows have columns {sorted(rows)}, the buffer holds "
                             f"{sorted(self._cols)}")
        for k, v in rows.items():
            if v.shape[1:] != self._cols[k].shape[1:]:
                raise ValueError(f"column {k!r} has row shape {v.shape[1:]}, the buffer holds "
                                 f"{self._cols[k].shape[1:]} (a world's table width changed?)")
        dropped = None
        if n > self.capacity:               # only the newest rows fit
            dropped = {k: v[:-self.capacity] for k, v in rows.items()}
            rows = {k: v[-self.capacity:] for k, v in rows.items()}
            n = self.capacity
        idx = (self._pos + np.arange(n)) % self.capacity
        overwritten = idx[idx < self._size]     # occupied slots are [0, size) until it is full
        evicted = {k: self._cols[k][overwritten] for k in rows} if overwritten.size else None
        for k, v in rows.items():
            self._cols[k][idx] = v
        self._pos = int((self._pos + n) % self.capacity)
        self._size = min(self._size + n, self.capacity)
        self.num_added += n_in
        if dropped is not None:
            evicted = dropped if evicted is None else {k: np.concatenate([evicted[k], dropped[k]])
                                                       for k in rows}
        return evicted

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        if self._size == 0:
            raise ValueError("cannot sample from an empty TransitionBuffer")
        idx = rng.integers(0, self._size, size=batch_size)
        return {k: v[idx] for k, v in self._cols.items()}

    def clear(self) -> dict[str, np.ndarray] | None:
        """Forget every row; returns the rows that were held (None if none)."""
        live = ({k: v[:self._size].copy() for k, v in self._cols.items()}
                if self._cols is not None and self._size else None)
        self._size = 0
        self._pos = 0
        return live

    def oldest_first(self) -> dict[str, np.ndarray] | None:
        """Copies of the rows held, oldest first (None when empty)."""
        if self._cols is None or not self._size:
            return None
        start = self._pos if self._size == self.capacity else 0
        order = (start + np.arange(self._size)) % self.capacity
        return {k: v[order] for k, v in self._cols.items()}

    def get_state(self) -> dict:
        """The rows as they lie in the ring (with its write position), so that a restored
        buffer samples exactly what this one would."""
        cols = None if self._cols is None else {k: v[:self._size].copy()
                                                for k, v in self._cols.items()}
        return {"capacity": self.capacity, "columns": cols, "num_added": self.num_added,
                "pos": self._pos}

    def set_state(self, state: dict) -> None:
        """Restore what ``get_state`` saved."""
        self.__init__(state["capacity"])
        if state["columns"]:
            self.add(state["columns"])
            self._pos = int(state.get("pos", self._size % self.capacity))
        self.num_added = state["num_added"]
