"""Stable 63-bit keys of states and goals: equal in every process and on every node.

EnvRunners on different machines send the driver each state they met, keyed by
:func:`stable_key`, and the driver stores every distinct state once; so equal states must get
equal keys everywhere. Python's ``hash`` does not do that (strings hash differently in every
process), and ``pickle`` bytes differ for equal sets. :func:`stable_key` hashes a canonical
encoding instead: tuples, lists, ints, floats, strings, bytes, bools, None, sets (sorted),
dicts (sorted), numpy scalars and arrays, enums and dataclasses (type name and fields),
recursively. A world whose states are other objects gives ``state_key(state)`` (and
``goal_key(goal)``) methods returning an int; an object that can only be told apart by
identity (a default ``repr`` with its address) is refused with an error saying so.

Keys are BLAKE2b digests cut to 63 bits (they fit numpy's int64): two distinct states of a
world with 10^6 states collide with probability about 5e-8.
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
from typing import Any

import numpy as np

from rllib_empo.worlds.protocol import WorldProtocolError, short_repr, world_name

_MASK = (1 << 63) - 1


def _canonical(x: Any, out: list) -> None:
    t = type(x)
    if t is not tuple and t is not list and isinstance(x, (tuple, list, int, float, str)) \
            and not isinstance(x, (bool, enum.Enum, np.generic)):
        out.append(b"<" + t.__qualname__.encode() + b">")   # a NamedTuple, an int subclass ...
        t = next(c for c in (tuple, list, int, float, str) if isinstance(x, c))
    if t is tuple or t is list:
        if all(type(v) is int for v in x):               # the common case, in one piece
            out.append((b"T" if t is tuple else b"L") + repr(tuple(x)).encode())
            return
        out.append(b"(" if t is tuple else b"[")
        for v in x:
            _canonical(v, out)
        out.append(b")")
    elif t is int or t is bool or x is None:
        out.append(b"i" + repr(int(x) if t is int else x).encode())
    elif t is float:
        out.append(b"f" + (b"nan" if math.isnan(x) else float.hex(float(x) + 0.0).encode()))
    elif t is str:
        out.append(b"s" + str(x).encode("utf-8", "surrogatepass") + b"\0")
    elif t is bytes:
        out.append(b"b" + repr(x).encode())
    elif isinstance(x, np.generic):
        _canonical(x.item(), out)
    elif isinstance(x, np.ndarray):
        out.append(b"a" + str(x.dtype).encode() + repr(x.shape).encode() + x.tobytes())
    elif isinstance(x, (frozenset, set)):
        out.append(b"{" + b"|".join(sorted(_bytes(v) for v in x)) + b"}")
    elif isinstance(x, dict):
        out.append(b"d" + b"|".join(sorted(_bytes(k) + b":" + _bytes(v) for k, v in x.items())))
    elif isinstance(x, enum.Enum):
        out.append(b"e" + f"{type(x).__qualname__}.{x.name}".encode())
    elif dataclasses.is_dataclass(x) and not isinstance(x, type):
        out.append(b"D" + type(x).__qualname__.encode())
        for f in dataclasses.fields(x):
            if f.compare:
                _canonical(getattr(x, f.name), out)
    else:
        text = repr(x)
        if " at 0x" in text:
            raise TypeError(f"{short_repr(x)} of type {t.__name__} has no stable key: it is "
                            "told apart by identity")
        out.append(b"r" + t.__qualname__.encode() + text.encode())


def _bytes(x: Any) -> bytes:
    out: list = []
    _canonical(x, out)
    return b"".join(out)


def stable_key(x: Any) -> int:
    """A 63-bit int, equal for equal values in every process (module docstring)."""
    digest = hashlib.blake2b(_bytes(x), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK


def state_key(world, state) -> int:
    """The world's ``state_key(state)`` if it has one, else :func:`stable_key`."""
    return _key(world, state, "state_key", "state")


def goal_key(world, goal) -> int:
    """The world's ``goal_key(goal)`` if it has one, else :func:`stable_key`."""
    return _key(world, goal, "goal_key", "goal")


def _key(world, x, method: str, what: str) -> int:
    own = getattr(world, method, None)
    try:
        return (int(own(x)) & _MASK) if callable(own) else stable_key(x)
    except TypeError as err:
        raise WorldProtocolError(
            f"world {world_name(world)!r}: {err}; the driver stores every {what} once, keyed "
            f"the same on every EnvRunner, so give the world a method {method}({what}) -> int "
            f"or make its {what}s tuples, numbers, strings or dataclasses") from err
