"""EmpoEnvRunner: RLlib's SingleAgentEnvRunner plus what EMPO needs on every rollout worker.

- It injects the algorithm's ``EnvSettings`` into ``env_config["empo"]`` (its own copy of the
  config), so every EmpoEnv records the rows the learner's configuration needs.
- ``set_exploration(beta_r, epsilon)`` is how the driver pushes the warm-up's beta_r;
  ``reseed(seed)`` how it gives a restarted runner a fresh random stream
  (``rllib_empo.algorithm.faults``).
- ``sample_rows()`` samples as usual and turns the episodes into flat column arrays right here,
  in parallel on every runner: the driver receives numpy arrays, not episode objects, and the
  per-step ``info`` tables never cross the network a second time.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np

from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.utils.annotations import override
from ray.rllib.utils.debug import update_global_seed_if_necessary

from rllib_empo.algorithm.env import EnvSettings
from rllib_empo.algorithm.faults import sampling_error
from rllib_empo.algorithm.tables import finalize_sampled_rows, stack_rows

ROW_KEY = "empo"


class EmpoEnvRunner(SingleAgentEnvRunner):
    @override(SingleAgentEnvRunner)
    def __init__(self, *, config, **kwargs):
        settings = EnvSettings(**config.empo_env_settings())
        config = config.copy(copy_frozen=False)
        config.env_config = {**dict(config.env_config or {}), ROW_KEY: asdict(settings)}
        config.freeze()
        self._sampled_mode = settings.mode == "sampled"
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
        """(columns, metrics): one row per env step taken, then RLlib's runner metrics.

        An error while sampling (a world that breaks its protocol or raises) is returned in
        place of the columns (``faults.sampling_error``) and raised by the driver: RLlib
        would otherwise hide it (an empty RuntimeError locally; a remote runner that exits
        and, with fault tolerance, restarts into the same error forever)."""
        try:
            episodes = self.sample(**kwargs)
        except Exception as err:       # noqa: BLE001 -- every error must reach the driver
            return sampling_error(self, err), {}
        rows, logp = [], []
        for ep in episodes:
            infos = ep.get_infos()[1:]          # info t+1 carries the row of step t
            rows += [info[ROW_KEY].columns for info in infos]
            if self._sampled_mode:
                logp.append(np.asarray(ep.get_extra_model_outputs(Columns.ACTION_LOGP)))
        columns = stack_rows(rows)
        if logp:                                # sampled mode: importance weights pi/mu
            columns = finalize_sampled_rows(columns, np.exp(np.concatenate(logp)))
        return columns, self.get_metrics()
