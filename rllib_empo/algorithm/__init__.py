"""The RLlib algorithm, laid out like RLlib's own ``algorithms/dqn/``.

- ``config``: ``EmpoConfig``; ``empo``: ``Empo``, the Algorithm (and ``EmpoConfig`` re-exported);
- ``fields``: every EMPO config field declared once; ``validation``: cross-field and
  environment checks;
- ``env``: ``EmpoEnv`` (a gymnasium env over any World), priors, env ids; ``tables``: the
  successor tables an env step records; ``env_runner``: ``EmpoEnvRunner``;
  ``runner_state``: EnvRunner sampling state in checkpoints; ``faults``: EnvRunner health;
- ``keyed_store``: growable, reference-counted columns keyed by stable keys;
- ``store``: the replay memory (rows over keyed goal, state and table stores);
  ``buffer``: ``TransitionBuffer``, the ring of rows; ``batch``: a minibatch gathered from
  the stores and the ``TargetCache``;
- ``module``: ``EmpoRLModule`` (five networks, targets, running averages, pi_r);
  ``targets``: model-based targets and losses; ``learner``: ``EmpoTorchLearner``;
  ``nonfinite``: keeping NaN out of the weights;
- ``checkpoints``, ``state_checks``: atomic checkpoints and validated restores;
  ``resources``: memory of one learner call, CPU counts;
- ``values``: learned values on raw states (driver side); ``metrics``: what a result holds;
  ``callbacks``: TensorBoard scalars; ``notices``: library notices silenced on import.

May import: ``rllib_empo.theory``, ``rllib_empo.worlds``, ``rllib_empo.exact``, Ray/RLlib,
torch, gymnasium, numpy. Never ``rllib_empo.analysis`` or ``rllib_empo.cli``.
"""
from rllib_empo.algorithm import notices

notices.silence()      # before RLlib runs: notices no EMPO user can act on

from rllib_empo.algorithm.empo import Empo, EmpoConfig  # noqa: E402

__all__ = ["Empo", "EmpoConfig"]
