"""EmpoEnvRunner: RLlib's SingleAgentEnvRunner plus what EMPO needs on every rollout worker.

- It injects the algorithm's ``EnvSettings`` into ``env_config["empo"]`` (its own copy of the
  config), so every EmpoEnv records the tables the learner's configuration needs.
- ``set_exploration(beta_r, epsilon)`` is how the driver pushes the warm-up's beta_r.
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

from rllib_empo.algorithm.env import EnvSettings
from rllib_empo.algorithm.tables import pack_sample
from rllib_empo.worlds.protocol import WorldProtocolError

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

    def sample_rows(self, **kwargs) -> tuple[dict, dict]:
        """(sample, metrics): the packed sample of this call's env steps (module docstring),
        then RLlib's runner metrics.

        A world that breaks its protocol is returned as the WorldProtocolError in place of
        the sample: RLlib would otherwise hide it (an empty RuntimeError locally; a runner
        that exits and, with fault tolerance, restarts into the same error forever)."""
        try:
            episodes = self.sample(**kwargs)
        except WorldProtocolError as err:
            return err, {}
        except RuntimeError as err:
            if isinstance(err.__cause__, WorldProtocolError):
                return err.__cause__, {}
            raise
        keys, weights = [], []
        for ep in episodes:
            infos = ep.get_infos()[1:]          # info t+1 names the table of step t
            keys += [info[ROW_KEY].table for info in infos]
            if self._sampled_mode:              # importance weights pi / mu of the V_h^e target
                logp = np.asarray(ep.get_extra_model_outputs(Columns.ACTION_LOGP))
                weights.append(1.0 / np.maximum(np.exp(logp), 1e-8))
        weights = np.concatenate(weights) if weights else np.ones(len(keys), np.float32)
        tables, states, goals = {}, {}, {}
        for env in self._sub_envs():
            t, s, g = env.take_sample()
            tables.update(t)
            states.update(s)
            goals.update(g)
        return pack_sample(tables, states, goals, keys, weights), self.get_metrics()

    def _sub_envs(self) -> list:
        venv = self.env.unwrapped if self.env is not None else None
        return [e.unwrapped for e in (getattr(venv, "envs", None) or [])]
