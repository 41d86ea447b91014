"""Worlds: the World protocol, the registry of worlds by name, and the built-in worlds.

    from rllib_empo.worlds import make_world, register_world
    world = make_world("rock_gate", horizon=8)

- ``protocol``: the World / Goal protocol, the checks a world gets when it is first used and
  the checked accessors every other layer calls (``checked_transitions`` ...);
- ``registry``: ``register_world``, ``make_world``, ``world_kwargs``;
- ``grid``: what the built-in grid worlds share; ``corridor``, ``rock_gate``, ``lanes``,
  ``vault``, ``crowd``: the built-in worlds (``registry`` lists them all);
- ``keys``: stable keys of states and goals, equal in every process.

May import: numpy and the standard library. Worlds know nothing of RLlib, torch or the
solver, so a world can be written, tested and solved without them.
"""
from rllib_empo.worlds.corridor import CorridorWorld
from rllib_empo.worlds.crowd import CrowdWorld
from rllib_empo.worlds.grid import GridWorld, ReachGoal
from rllib_empo.worlds.lanes import LanesWorld
from rllib_empo.worlds.protocol import Goal, World, WorldProtocolError, check_world
from rllib_empo.worlds.registry import (WORLDS, UnknownWorldArgument, check_world_arguments,
                                        did_you_mean, make_world, register_world, world_kwargs)
from rllib_empo.worlds.rock_gate import RockGateWorld
from rllib_empo.worlds.vault import VaultWorld

__all__ = ["WORLDS", "register_world", "make_world", "world_kwargs", "check_world_arguments",
           "did_you_mean", "UnknownWorldArgument", "World", "Goal", "WorldProtocolError",
           "check_world", "GridWorld", "ReachGoal", "CorridorWorld", "RockGateWorld", "CrowdWorld",
           "LanesWorld", "VaultWorld"]
