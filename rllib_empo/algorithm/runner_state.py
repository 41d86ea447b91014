"""Snapshots of the EnvRunners' sampling state, so that a restored run samples exactly what
the original run would have sampled.

RLlib's checkpoint holds the networks, optimizers, connector states and metrics; ``Empo``
adds its counters, its batch-sampling generator and (optionally) the replay buffer. What a
continued run *samples* also depends on state that lives only inside the EnvRunners:

- every sub-env's random generator (human actions, goals, successor draws), the episode in
  progress (world state, current goals) and the exploring-starts pool of states;
- the vector env's autoreset flags (gymnasium's next-step autoreset);
- the EnvRunner's ongoing episode chunks, the cached env-to-module output (the
  observation the next action is computed from) and the connectors' shared data (which
  episode each batch row belongs to);
- the process-wide torch generator, which draws the robot's actions
  (the action sampling in ``EmpoRLModule._act``). With ``num_env_runners=0`` that is the
  driver's generator, so a restore sets the driver's torch RNG state.

:func:`capture` takes all of this from every EnvRunner that has an env (the local one when
``num_env_runners=0``, else the remote ones, keyed by ``worker_index``) and :func:`restore`
puts it back into the EnvRunners with the same index. EnvRunners without a snapshot (a
restore with more EnvRunners than the checkpoint had) simply start fresh episodes.

What remains outside the snapshot: the sub-envs' caches of successor tables and goal tables
(``TableBuilder``). They never change a value, with one exception: a world with more goals
per human than ``max_goals_per_human`` draws a goal subset afresh on each uncached visit of a
state, so the generator is consumed differently by a restored env with empty caches. On such
worlds a restored run is a valid continuation but not a bit-identical one.
"""
from __future__ import annotations

import copy
from typing import Any, Optional

import torch

SNAPSHOT_VERSION = 1


def _sub_envs(er) -> list:
    venv = er.env.unwrapped if er.env is not None else None
    return list(getattr(venv, "envs", None) or [])


def _wrappers(env):
    """The wrapper chain of one sub-env, outermost first (the base env last)."""
    chain = [env]
    while hasattr(chain[-1], "env") and chain[-1] is not chain[-1].unwrapped:
        chain.append(chain[-1].env)
    return chain


def capture_env(env) -> dict:
    """The dynamic state of one (unwrapped) EmpoEnv."""
    if callable(getattr(env, "get_snapshot", None)):
        return {"snapshot": env.get_snapshot()}
    builder = getattr(env, "_builder", None)
    return {
        "state": copy.deepcopy(getattr(env, "state", None)),
        "goals": copy.deepcopy(getattr(env, "goals", None)),
        "rng": (copy.deepcopy(env._np_random.bit_generator.state)
                if getattr(env, "_np_random", None) is not None else None),
        "seen_states": list(getattr(builder, "seen_states", ()) or ()),
        "frontier": list(getattr(builder, "frontier", ()) or ()),
        "visited": list(getattr(builder, "_visited", ()) or ()),
    }


def restore_env(env, snap: dict) -> None:
    if "snapshot" in snap:
        env.set_snapshot(snap["snapshot"])
        return
    env.state, env.goals = copy.deepcopy(snap["state"]), copy.deepcopy(snap["goals"])
    builder = getattr(env, "_builder", None)
    if snap["rng"] is not None:
        env.np_random.bit_generator.state = copy.deepcopy(snap["rng"])
        if builder is not None:
            builder.rng = env.np_random          # the env shares its generator with the builder
    if builder is not None and hasattr(builder, "seen_states"):
        builder.seen_states = list(snap["seen_states"])
        builder._seen = set(builder.seen_states)
        builder.frontier = list(snap.get("frontier", ()))
        builder._visited = set(snap.get("visited", ()))


def capture(er) -> Optional[dict]:
    """Snapshot of one EnvRunner (None if it has no env, e.g. the local runner when there
    are remote ones)."""
    subs = _sub_envs(er)
    if not subs:
        return None
    venv = er.env.unwrapped
    return {
        "version": SNAPSHOT_VERSION,
        "worker_index": er.worker_index,
        "envs": [capture_env(e.unwrapped) for e in subs],
        "has_reset": [[getattr(w, "_has_reset", None) for w in _wrappers(e)] for e in subs],
        "autoreset": copy.deepcopy(getattr(venv, "_autoreset_envs", None)),
        "needs_initial_reset": er._needs_initial_reset,
        "ongoing_episodes": copy.deepcopy(er._ongoing_episodes),
        "cached_to_module": copy.deepcopy(er._cached_to_module),
        "shared_data": copy.deepcopy(er._shared_data),
        "torch_rng": torch.get_rng_state(),
    }


def restore(er, snap: Optional[dict]) -> bool:
    """Put a :func:`capture` snapshot back into an EnvRunner with the same number of
    sub-envs. Returns False (and changes nothing) when the snapshot does not fit."""
    subs = _sub_envs(er)
    if not snap or not subs or snap.get("version") != SNAPSHOT_VERSION \
            or len(snap["envs"]) != len(subs):
        return False
    venv = er.env.unwrapped
    for env, env_snap, flags in zip(subs, snap["envs"], snap["has_reset"]):
        restore_env(env.unwrapped, env_snap)
        for wrapper, flag in zip(_wrappers(env), flags):
            if flag is not None and hasattr(wrapper, "_has_reset"):
                wrapper._has_reset = flag           # OrderEnforcing: reset already happened
    if snap["autoreset"] is not None and hasattr(venv, "_autoreset_envs"):
        venv._autoreset_envs = copy.deepcopy(snap["autoreset"])
    er._needs_initial_reset = snap["needs_initial_reset"]
    er._ongoing_episodes = copy.deepcopy(snap["ongoing_episodes"])
    er._cached_to_module = copy.deepcopy(snap["cached_to_module"])
    er._shared_data = copy.deepcopy(snap["shared_data"])
    torch.set_rng_state(snap["torch_rng"])
    return True


def capture_all(algo) -> dict[int, Any]:
    """``{worker_index: snapshot}`` of every EnvRunner of ``algo`` that samples."""
    group = algo.env_runner_group
    if group.num_remote_env_runners() == 0:
        snaps = [capture(group.local_env_runner)]
    else:
        snaps = group.foreach_env_runner(capture, local_env_runner=False, healthy_only=True)
    return {s["worker_index"]: s for s in snaps if s}


def restore_all(algo, snaps: dict[int, Any]) -> int:
    """Restore :func:`capture_all` snapshots by worker index; returns how many fit."""
    if not snaps:
        return 0
    group = algo.env_runner_group
    if group.num_remote_env_runners() == 0:
        er = group.local_env_runner
        return int(restore(er, snaps.get(er.worker_index)))
    done = group.foreach_env_runner(lambda er: restore(er, snaps.get(er.worker_index)),
                                    local_env_runner=False, healthy_only=True)
    return int(sum(bool(d) for d in done))
