"""EmpoEnvRunner: RLlib's SingleAgentEnvRunner plus what EMPO needs on every rollout worker.

- It injects the algorithm's ``EnvSettings`` into ``env_config["empo"]`` (its own copy of the
  config), so every EmpoEnv records the tables the learner's configuration needs.
- ``set_exploration(beta_r, epsilon)`` is how the driver pushes the warm-up's beta_r;
  ``reseed(seed)`` how it gives a restarted runner a fresh random stream
  (``rllib_empo.algorithm.faults``).
- ``sample_rows()`` samples as usual and packs, right here on the runner, one *sample*: a row
  per env step naming its table by key, and every goal, state and table those rows mention,
  each once (``tables.pack_sample``). The driver merges it into its stores, which keep each
  distinct entry once; keys are stable across processes, so runners on any node agree.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch

from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.utils.annotations import override
from ray.rllib.utils.debug import update_global_seed_if_necessary

from rllib_empo.algorithm.env import EnvSettings
from rllib_empo.algorithm.faults import sampling_error
from rllib_empo.algorithm.tables import pack_sample

ROW_KEY = "empo"


class EmpoEnvRunner(SingleAgentEnvRunner):
    @override(SingleAgentEnvRunner)
    def __init__(self, *, config, **kwargs):
        settings = EnvSettings(**config.empo_env_settings())
        config = config.copy(copy_frozen=False)
        config.env_config = {**dict(config.env_config or {}), ROW_KEY: asdict(settings)}
        config.freeze()
        self._sampled_mode = settings.mode == "sampled"
        if (kwargs.get("worker_index") or 0) > 0:     # a remote runner: its own process
            torch.set_num_threads(config.torch_threads("env_runner"))
        super().__init__(config=config, **kwargs)

    def set_exploration(self, beta_r: float, epsilon: float) -> None:
        if self.module is not None:
            self.module.set_exploration(beta_r, epsilon)

    def reseed(self, seed: int) -> None:
        """Draw from a new random stream: the envs are reset with ``seed`` at the next
        ``sample()`` (RLlib seeds only that first reset) and the process-wide generators
        (torch draws the robot's actions) are seeded with it now."""
        self._seed = int(seed)
        self._needs_initial_reset = True
        update_global_seed_if_necessary(framework=self.config.framework_str, seed=self._seed)

    def sample_rows(self, **kwargs) -> tuple[dict, dict]:
        """(sample, metrics): the packed sample of this call's env steps (module docstring),
        then RLlib's runner metrics.

        An error while sampling or packing (a world that breaks its protocol or raises) is
        returned in place of the sample (``faults.sampling_error``) and raised by the driver:
        RLlib would otherwise hide it (an empty RuntimeError locally; a remote runner that
        exits and, with fault tolerance, restarts into the same error forever)."""
        try:
            episodes = self.sample(**kwargs)
            keys, weights = [], []
            for ep in episodes:
                infos = ep.get_infos()[1:]          # info t+1 names the table of step t
                keys += [info[ROW_KEY].table for info in infos]
                if self._sampled_mode:              # importance weights pi / mu of V_h^e's target
                    logp = np.asarray(ep.get_extra_model_outputs(Columns.ACTION_LOGP))
                    weights.append(1.0 / np.maximum(np.exp(logp), 1e-8))
            weights = np.concatenate(weights) if weights else np.ones(len(keys), np.float32)
            tables, states, goals = {}, {}, {}
            for env in self._sub_envs():
                t, s, g = env.take_sample()
                tables.update(t)
                states.update(s)
                goals.update(g)
            sample = pack_sample(tables, states, goals, keys, weights)
        except Exception as err:       # noqa: BLE001 -- every error must reach the driver
            return sampling_error(self, err), {}
        return sample, self.get_metrics()

    def _sub_envs(self) -> list:
        venv = self.env.unwrapped if self.env is not None else None
        return [e.unwrapped for e in (getattr(venv, "envs", None) or [])]
