"""The built-in worlds and a registry to build worlds by name.

    make_world("rock_gate", horizon=8)      # -> RockGateWorld
    world_kwargs("corridor")                # -> {"length": 5, "num_humans": 2, ...}

Built in: ``corridor`` (tiny, optionally stochastic), ``rock_gate`` (the main benchmark,
exactly solvable) and ``crowd`` (more than 10^6 states, for learning without enumeration).
Users add their own with ``register_world(name, cls)``.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any

from rllib_empo.worlds.corridor import CorridorWorld
from rllib_empo.worlds.crowd import CrowdWorld
from rllib_empo.worlds.grid import GridWorld, ReachGoal
from rllib_empo.worlds.rock_gate import RockGateWorld

WORLDS: dict[str, type] = {}


class UnknownWorldArgument(TypeError, ValueError):
    """A keyword argument the world's constructor does not take. A TypeError like Python's
    own for a bad keyword, and a ValueError like every other configuration error here."""


def register_world(name: str, cls: type) -> None:
    """Make ``make_world(name, **kwargs)`` build ``cls(**kwargs)``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"world name must be a non-empty string, got {name!r}")
    if not callable(cls):
        raise ValueError(f"world {name!r}: {cls!r} is not a class or factory")
    if name in WORLDS and WORLDS[name] is not cls:
        raise ValueError(f"world name {name!r} is already registered to {WORLDS[name].__name__}")
    WORLDS[name] = cls


def _lookup(name: str) -> type:
    if name not in WORLDS:
        close = difflib.get_close_matches(str(name), WORLDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown world {name!r}{hint}; known worlds: {', '.join(sorted(WORLDS))}")
    return WORLDS[name]


def world_kwargs(name: str) -> dict[str, Any]:
    """The keyword arguments world ``name`` accepts, with their defaults
    (``inspect.Parameter.empty`` for a required one)."""
    params = inspect.signature(_lookup(name)).parameters.values()
    return {p.name: p.default for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def make_world(name: str, **kwargs: Any):
    """Build the world registered as ``name``; an unknown name or keyword raises an error
    that lists the accepted ones."""
    cls = _lookup(name)
    accepted = world_kwargs(name)
    takes_any = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(cls).parameters.values())
    for key in kwargs:
        if key not in accepted and not takes_any:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownWorldArgument(
                f"{name} does not accept {key!r}{hint}; accepted: {', '.join(accepted) or 'none'}")
    return cls(**kwargs)


register_world("corridor", CorridorWorld)
register_world("rock_gate", RockGateWorld)
register_world("crowd", CrowdWorld)

__all__ = ["WORLDS", "register_world", "make_world", "world_kwargs", "UnknownWorldArgument",
           "GridWorld", "ReachGoal", "CorridorWorld", "RockGateWorld", "CrowdWorld"]
