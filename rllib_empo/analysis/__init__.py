"""Analysis of trained algorithms: comparison with the exact solution, rollouts, progress
records and plots.

- ``evaluation``: ``compare_to_exact``, ``exact_solution_for`` (also ``rllib_empo.evaluation``);
- ``rollout``: episodes of the learned policy outside the EnvRunners (text rendering);
- ``progress``: ``progress.jsonl`` records of a run; ``plotting``: PNG figures.

May import: ``rllib_empo.algorithm``, ``rllib_empo.exact``, ``rllib_empo.theory``,
``rllib_empo.worlds``, matplotlib. Never ``rllib_empo.cli``.
"""
