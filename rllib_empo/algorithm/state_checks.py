"""Validating a state dict before it replaces an algorithm's state, and rolling back.

``Empo.set_state`` (every restore path: ``restore_from_path``, ``from_checkpoint``, Tune)
calls :func:`apply_or_roll_back`: it snapshots the live algorithm, checks the new state
against it (:func:`validate_state`: the :func:`signature` -- world, env_config, row shapes,
networks --, every tensor's shape, finite weights, the optimizers, the counters and the
random state), builds what can be built on the side (the replay memory), and only then
applies the state. Should applying still fail, the snapshot is applied instead. Either the
whole state is restored, or the algorithm is left as it was and a ``CheckpointError`` says
why.
"""
from __future__ import annotations

import copy
from dataclasses import asdict
from typing import Any, Callable, Optional

import numpy as np

from rllib_empo.algorithm.checkpoints import FORMAT, CheckpointError
from rllib_empo.algorithm.nonfinite import nonfinite_arrays

SIGNATURE_KEY = "empo_signature"
MAX_LISTED = 6            # shape mismatches listed in an error (then "... and N more")


def signature(algo) -> dict:
    """What a checkpoint must match to be restored into ``algo``: the world (name and
    env_config), the row shapes, the networks and their sizes."""
    cached = getattr(algo, "_empo_signature", None)
    if cached is not None:
        return cached
    from rllib_empo.algorithm.env import EnvSettings, table_spec, world_for_config
    from rllib_empo.worlds.protocol import world_name
    cfg = algo.config
    world = world_for_config(cfg.env, cfg.env_config)
    env_config = {k: repr(v) for k, v in sorted(dict(cfg.env_config or {}).items())
                  if isinstance(v, (str, int, float, bool, type(None), tuple))}
    sig = {"format": FORMAT, "world": world_name(world), "env": repr(cfg.env),
           "env_config": env_config,
           "table_spec": asdict(table_spec(world, EnvSettings(**cfg.empo_env_settings()))),
           "networks": {n: list(h) for n, h in sorted(cfg.hidden_sizes_by_network().items())
                        if n in algo.schedule.existing_networks}}
    algo._empo_signature = sig
    return sig


def _compare(name: str, saved, live) -> list[str]:
    if saved == live:
        return []
    if isinstance(saved, dict) and isinstance(live, dict):
        diffs = [f"{name}[{k!r}]: checkpoint {saved.get(k, '(none)')!r}, this algorithm "
                 f"{live.get(k, '(none)')!r}" for k in sorted(set(saved) | set(live), key=str)
                 if saved.get(k) != live.get(k)]
        return diffs
    return [f"{name}: checkpoint {saved!r}, this algorithm {live!r}"]


def _weights(state: dict) -> dict:
    return (state.get("learner_group", {}).get("learner", {}).get("rl_module", {}))


def validate_state(algo, state: dict, live: dict) -> None:
    """Raise CheckpointError listing every way ``state`` does not fit ``algo`` (``live`` is
    the algorithm's own current state, taken by ``get_state``)."""
    problems = []
    sig = state.get(SIGNATURE_KEY)
    if sig is not None:
        mine = signature(algo)
        for key in ("world", "env", "env_config", "table_spec", "networks"):
            problems += _compare(key, sig.get(key), mine.get(key))
    saved_modules, live_modules = _weights(state), _weights(live)
    for mid, weights in saved_modules.items():
        if mid not in live_modules:
            problems.append(f"module {mid!r} is not in this algorithm")
            continue
        mine = live_modules[mid]
        if set(weights) != set(mine):
            problems.append(f"networks differ: the checkpoint has "
                            f"{sorted(set(weights) - set(mine))[:6]} that this algorithm lacks "
                            f"and lacks {sorted(set(mine) - set(weights))[:6]}")
        shapes = [f"{key} has shape {np.shape(weights[key])} in the checkpoint, "
                  f"{np.shape(mine[key])} here" for key in sorted(set(weights) & set(mine))
                  if np.shape(weights[key]) != np.shape(mine[key])]
        problems += shapes[:MAX_LISTED]
        if len(shapes) > MAX_LISTED:
            problems.append(f"... and {len(shapes) - MAX_LISTED} more tensors of other shapes")
        bad = nonfinite_arrays(weights)
        if bad:
            problems.append(f"non-finite weights in {', '.join(bad[:5])}")
    problems += _check_optimizers(state, live)
    if "empo_counters" in state:
        problems += _check_counters(algo, state)
    if problems:
        raise CheckpointError("the checkpoint does not fit this algorithm, which is left as it "
                              "was:\n  - " + "\n  - ".join(problems))


def _check_optimizers(state: dict, live: dict) -> list[str]:
    saved = state.get("learner_group", {}).get("learner", {}).get("optimizer")
    mine = live.get("learner_group", {}).get("learner", {}).get("optimizer")
    if saved is None or mine is None:
        return []
    if set(saved) != set(mine):
        return [f"optimizers differ: checkpoint {sorted(saved)}, this algorithm {sorted(mine)}"]
    problems = []
    for name in sorted(saved):
        try:
            a = [len(g["params"]) for g in saved[name]["state"]["param_groups"]]
            b = [len(g["params"]) for g in mine[name]["state"]["param_groups"]]
        except (KeyError, TypeError) as err:
            problems.append(f"optimizer {name!r} has no readable state ({err!r})")
            continue
        if a != b:
            problems.append(f"optimizer {name!r} holds {a} parameters in the checkpoint, {b} here")
    return problems


def _check_counters(algo, state: dict) -> list[str]:
    c, problems = state["empo_counters"], []
    if not isinstance(c, dict):
        return [f"empo_counters is {type(c).__name__}, not a dict"]
    for key in ("num_updates", "num_buffer_clears", "num_env_steps"):
        v = c.get(key)
        if not isinstance(v, (int, np.integer)) or v < 0:
            problems.append(f"empo_counters[{key!r}] is {v!r}, not an int >= 0")
    if not isinstance(c.get("clears_done"), list):
        problems.append(f"empo_counters['clears_done'] is {c.get('clears_done')!r}, not a list")
    if "empo_rng" in state:
        try:
            np.random.default_rng().bit_generator.state = copy.deepcopy(state["empo_rng"])
        except Exception as err:   # noqa: BLE001 -- any failure means a bad generator state
            problems.append(f"empo_rng is not a generator state ({type(err).__name__}: {err})")
    return problems


def apply_or_roll_back(algo, state: dict, prepare: Callable[[dict], Any],
                       apply: Callable[[dict, Any], None]) -> None:
    """Validate ``state`` against a snapshot of ``algo``, ``prepare(state)`` what can be built
    on the side (the replay memory), then ``apply(state, prepared)``; if applying fails,
    ``apply(snapshot, None)`` puts everything back and CheckpointError says so."""
    snapshot = copy.deepcopy(algo.get_state(not_components=["empo_replay_buffer"]))
    validate_state(algo, state, snapshot)
    try:
        prepared = prepare(state)
    except Exception as err:   # noqa: BLE001 -- the live algorithm is untouched here
        raise CheckpointError(f"the checkpoint's state cannot be loaded ({type(err).__name__}: "
                              f"{err}); the algorithm is left as it was") from err
    kept = getattr(algo, "replay", None)
    try:
        apply(state, prepared)
    except BaseException as err:
        try:
            algo.replay = kept
            apply(snapshot, None)
        except Exception as again:   # noqa: BLE001
            raise CheckpointError(
                f"restoring failed ({type(err).__name__}: {err}) and so did rolling back "
                f"({type(again).__name__}: {again}); build a new algorithm") from err
        raise CheckpointError(f"restoring failed ({type(err).__name__}: {err}); the algorithm "
                              "was rolled back to the state it had before") from err


def optional_buffer(make: Callable[[], Any], state: Optional[dict]):
    """A replay memory filled from ``state`` on the side (None without one)."""
    if state is None:
        return None
    buffer = make()
    buffer.set_state(state)
    return buffer


def restore_connectors(algo, state: dict) -> None:
    """Without a local EnvRunner, RLlib checkpoints the connectors at the top level, and
    ``Algorithm.set_state`` does not restore them (its ``restore_from_path`` does): do that."""
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME
    keys = [k for k in ("env_to_module_connector", "module_to_env_connector") if k in state]
    if not keys or algo.env_runner is not None:
        return
    for key in keys:
        getattr(algo, key).set_state(state[key])
    algo.env_runner_group.sync_env_runner_states(
        config=algo.config, from_worker=None,
        env_steps_sampled=algo.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME),
                                            default=0),
        env_to_module=algo.env_to_module_connector, module_to_env=algo.module_to_env_connector)
