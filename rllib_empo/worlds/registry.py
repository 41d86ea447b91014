"""The registry of worlds by name, with the built-in ones registered.

    make_world("rock_gate", horizon=8)      # -> RockGateWorld
    world_kwargs("corridor")                # -> {"length": 5, "num_humans": 2, ...}

Built in: ``corridor`` (tiny, optionally stochastic), ``rock_gate`` (the main benchmark,
1,008 states), ``lanes`` (2 humans, 64 joint actions, 28,137 states), ``vault`` (two rocks,
208,995 states) -- all exactly solvable -- and ``crowd`` (more than 10^6 states, for
learning without enumeration).
Users add their own with ``register_world(name, cls)``.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any

from rllib_empo.worlds.corridor import CorridorWorld
from rllib_empo.worlds.crowd import CrowdWorld
from rllib_empo.worlds.lanes import LanesWorld
from rllib_empo.worlds.rock_gate import RockGateWorld
from rllib_empo.worlds.vault import VaultWorld

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


def did_you_mean(value, options) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``options``, or ``""``."""
    close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _lookup(name: str) -> type:
    if name not in WORLDS:
        raise ValueError(f"unknown world {name!r}{did_you_mean(name, WORLDS)}; known worlds: "
                         f"{', '.join(sorted(WORLDS))}")
    return WORLDS[name]


def world_kwargs(name: str) -> dict[str, Any]:
    """The keyword arguments world ``name`` accepts, with their defaults
    (``inspect.Parameter.empty`` for a required one)."""
    params = inspect.signature(_lookup(name)).parameters.values()
    return {p.name: p.default for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_world_arguments(name: str, keys, *, also_allowed=(), where=repr) -> None:
    """Raise UnknownWorldArgument for the first of ``keys`` that world ``name``'s constructor
    does not take (``also_allowed`` are keys the caller handles itself; ``where(key)`` says
    where the key was given, e.g. ``env_config['horizn']``)."""
    accepted = list(world_kwargs(name))
    if any(p.kind == p.VAR_KEYWORD for p in inspect.signature(WORLDS[name]).parameters.values()):
        return
    for key in keys:
        if key not in accepted and key not in also_allowed:
            others = (f" and {', '.join(also_allowed)} (env settings)" if also_allowed else "")
            raise UnknownWorldArgument(
                f"{where(key)} is not accepted by world {name!r}"
                f"{did_you_mean(key, accepted + list(also_allowed))}; allowed keys: "
                f"{', '.join(accepted) or 'none'} (arguments of {name!r}){others}")


def make_world(name: str, **kwargs: Any):
    """Build the world registered as ``name``; an unknown name or keyword raises an error
    that lists the accepted ones."""
    cls = _lookup(name)
    check_world_arguments(name, kwargs)
    return cls(**kwargs)


register_world("corridor", CorridorWorld)
register_world("rock_gate", RockGateWorld)
register_world("crowd", CrowdWorld)
register_world("lanes", LanesWorld)
register_world("vault", VaultWorld)

__all__ = ["WORLDS", "register_world", "make_world", "world_kwargs", "check_world_arguments",
           "did_you_mean", "UnknownWorldArgument"]
