"""Resource bounds: the memory of one learner call and the CPUs a configuration asks for.

- ``Empo.training_step`` runs its ``updates_per_iteration`` learner updates in calls of at
  most :func:`updates_per_call` updates: each call materialises its minibatches at once
  (rows x bytes per row, then again as tensors), so without a bound one iteration's memory
  grew with ``updates_per_iteration`` (+574 MB at 1,000 updates on rock_gate).
- ``validate()`` compares the CPUs that the EnvRunner and Learner actors ask for with the
  CPUs Ray has (:func:`cluster_cpus`): an actor that cannot be placed makes ``build_algo()``
  wait forever without a word.
"""
from __future__ import annotations

import os

# Bytes of replay rows one learner call may sample (its tensors take about as much again).
LEARNER_CALL_BYTES = 64 * 2**20


def updates_per_call(batch_rows: int, bytes_per_row: int, limit: int | None = None) -> int:
    """How many updates of ``batch_rows`` rows fit in one learner call (at least 1)."""
    limit = LEARNER_CALL_BYTES if limit is None else limit
    return max(1, int(limit // max(1, batch_rows * max(1, bytes_per_row))))


def cluster_cpus() -> tuple[float, str] | None:
    """(CPUs, where the number comes from): the running Ray cluster's total, else what Ray
    would start with on this machine; None when Ray will connect to a cluster not known yet
    (``RAY_ADDRESS`` set, Ray not started)."""
    try:
        import ray
        if ray.is_initialized():
            return float(ray.cluster_resources().get("CPU", 0.0)), "the Ray cluster has"
    except Exception:   # noqa: BLE001 -- no Ray, or a cluster that does not answer: guess
        pass
    if os.environ.get("RAY_ADDRESS"):
        return None
    try:
        from ray._private.utils import get_num_cpus
        return float(get_num_cpus()), "this machine has (Ray is not started yet)"
    except Exception:   # noqa: BLE001
        return float(os.cpu_count() or 1), "this machine has (Ray is not started yet)"


def requested_cpus(cfg) -> float:
    """CPUs that the remote actors of ``cfg`` reserve: the EnvRunners and, with
    ``num_learners > 0``, the Learners. The driver (and a local Learner) reserve none."""
    runners = (cfg.num_env_runners or 0) * float(cfg.num_cpus_per_env_runner or 0)
    learners = (cfg.num_learners or 0) * float(cfg.num_cpus_per_learner
                                               if cfg.num_cpus_per_learner != "auto" else 1)
    return runners + learners
