"""The RLlib algorithm, laid out like RLlib's own ``algorithms/dqn/``.

- ``empo``: ``EmpoConfig`` and ``Empo`` (config and Algorithm in one module);
- ``fields``: every EMPO config field declared once; ``validation``: cross-field and
  environment checks;
- ``env``: ``EmpoEnv`` (a gymnasium env over any World), priors, env ids; ``tables``: the
  successor-table rows an env step records; ``env_runner``: ``EmpoEnvRunner``;
  ``runner_state``: EnvRunner sampling state in checkpoints;
- ``buffer``: ``TransitionBuffer``;
- ``module``: ``EmpoRLModule`` (five networks, targets, pi_r); ``targets``: model-based
  targets and losses; ``learner``: ``EmpoTorchLearner``;
- ``values``: learned values on raw states (driver side); ``metrics``: what a result holds;
  ``callbacks``: TensorBoard scalars; ``notices``: library notices silenced on import.

May import: ``rllib_empo.theory``, ``rllib_empo.worlds``, ``rllib_empo.exact``, Ray/RLlib,
torch, gymnasium, numpy. Never ``rllib_empo.analysis`` or ``rllib_empo.cli``.
"""
from rllib_empo.algorithm import notices

notices.silence()      # before RLlib runs: notices no EMPO user can act on

from rllib_empo.algorithm.empo import Empo, EmpoConfig  # noqa: E402

__all__ = ["Empo", "EmpoConfig"]
