"""Keeping non-finite numbers out of the weights and the EnvRunners.

The learner (``rllib_empo.algorithm.learner``) never applies a non-finite loss or gradient
(``on_nonfinite``). This module adds what that alone does not cover:

- weights that are non-finite anyway (an optimizer step that overflowed on finite
  gradients, or weights corrupted between updates): :func:`nonfinite_networks` finds them
  and :func:`restore_from_target` puts the network back to its target copy, the last weights
  that were finite when they were copied, with fresh optimizer moments. A target that is
  non-finite too leaves nothing to restore: FloatingPointError.
- the weights pushed to the EnvRunners: :class:`CheckedWeights` stands between the
  LearnerGroup and ``EnvRunnerGroup.sync_weights`` and refuses a non-finite state.
- :func:`nonfinite_arrays`, the same check on numpy state dicts (pushed weights, checkpoints).
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch

from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE


def _parameters(module, name: str, target: bool) -> list:
    """The parameters of one network, listed once per module (the learner checks them after
    every update; walking the module tree each time costs more than the check)."""
    cache = module.__dict__.setdefault("_empo_parameters", {})
    key = (name, target)
    if key not in cache:
        cache[key] = list(module.net(name, target).parameters())
    return cache[key]


def nonfinite_networks(module, names, target: bool = False) -> list[str]:
    """The networks among ``names`` (main or target copies) with a NaN or inf parameter.

    One fused 2-norm over every parameter (fast; a norm that overflows on finite but huge
    weights is then confirmed tensor by tensor, so only real NaN/inf count)."""
    nets = {n: _parameters(module, n, target) for n in names}
    flat = [p for ps in nets.values() for p in ps]
    if not flat:
        return []
    with torch.no_grad():
        if bool(torch.isfinite(torch.stack(torch._foreach_norm(flat))).all()):
            return []
        return [n for n, ps in nets.items() if not all(bool(torch.isfinite(p).all()) for p in ps)]


def restore_from_target(module, name: str, optimizer: torch.optim.Optimizer) -> None:
    """Copy network ``name``'s target into it and forget its optimizer moments (Adam's
    running averages saw the non-finite step). Raises FloatingPointError when the target is
    non-finite too."""
    if nonfinite_networks(module, [name], target=True):
        raise FloatingPointError(
            f"EMPO: the weights of {name} and of its target copy are both non-finite, so there "
            "is nothing finite to restore; lower its learning rate (lr_"
            f"{name}) or grad_clip, or look for NaN in the world's encodings and the prior")
    main, target = _parameters(module, name, False), _parameters(module, name, True)
    with torch.no_grad():
        for p, q in zip(main, target):
            p.copy_(q)
    for p in main:
        optimizer.state.pop(p, None)


def nonfinite_arrays(state: dict, prefix: str = "") -> list[str]:
    """Keys (dotted, nested dicts walked) of the float arrays in ``state`` that hold a NaN or
    inf."""
    bad = []
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            bad += nonfinite_arrays(value, name + ".")
        elif torch.is_tensor(value):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad.append(name)
        elif isinstance(value, np.ndarray) and value.dtype.kind == "f":
            if not np.isfinite(value).all():
                bad.append(name)
    return bad


class CheckedWeights:
    """A weight source for ``EnvRunnerGroup.sync_weights`` that checks what it hands out.

    ``sync_weights`` asks its source for ``get_state(components=["rl_module"],
    inference_only=True)``; this forwards the request to the LearnerGroup and checks the
    answer. Non-finite weights are first given to ``repair`` (which may fix them on the
    learner and return True to fetch them again); if they are still non-finite, it raises
    FloatingPointError and nothing is pushed."""

    def __init__(self, learner_group, repair: Optional[Callable[[list], bool]] = None):
        self._group, self._repair = learner_group, repair

    def _fetch(self, components, inference_only):
        return self._group.get_state(
            components=[f"{COMPONENT_LEARNER}/{c}" for c in components],
            inference_only=inference_only)[COMPONENT_LEARNER]

    def get_state(self, components=(COMPONENT_RL_MODULE,), inference_only: bool = True, **kw):
        state = self._fetch(components, inference_only)
        bad = nonfinite_arrays(state.get(COMPONENT_RL_MODULE, {}))
        if bad and self._repair is not None and self._repair(bad):
            state = self._fetch(components, inference_only)
            bad = nonfinite_arrays(state.get(COMPONENT_RL_MODULE, {}))
        if bad:
            raise FloatingPointError(
                f"EMPO: not pushing non-finite weights to the EnvRunners ({', '.join(bad[:5])}"
                f"{' ...' if len(bad) > 5 else ''}); the EnvRunners keep their last finite q_r")
        return state


def repair_learners(learner_group) -> bool:
    """Restore every Learner's non-finite networks from their target copies (raises
    FloatingPointError with ``on_nonfinite="raise"``, or when a target is non-finite too)."""
    def repair(learner):
        return {mid: learner.repair_nonfinite(mid, learner.module[mid].unwrapped().network_names)
                for mid in learner.module.keys()}
    for result in learner_group.foreach_learner(repair):
        if not result.ok:
            raise result.get()
    return True
