"""The exact solver: every reachable state of a small world, backward induction of phase 1
(the human prior) and phase 2 (eqs. 4-9) in float64, and the learned-vs-exact comparison.

    from rllib_empo.exact import solve
    from rllib_empo.exact.priors import BoltzmannHumanPrior
    prior = BoltzmannHumanPrior.solve(world, beta_h=10.0, gamma_h=0.99)
    solution = solve(world, prior, beta_r=10.0, gamma_h=0.99, gamma_r=0.99)

- ``statespace``: ``StateGraph``, the enumeration with a level order (successors first);
- ``priors``: human priors pi_h (uniform, heuristic, the exact Boltzmann phase 1);
- ``solver``: ``solve`` and ``ExactSolution``;
- ``compare``: ``compare_to_exact``, figures of a learned solution against an exact one.

May import: ``rllib_empo.theory`` and ``rllib_empo.worlds``; numpy, scipy and torch. Never
RLlib or Ray: the solver works on any World without the algorithm.
"""
from rllib_empo.exact.compare import compare_to_exact
from rllib_empo.exact.solver import ExactSolution, solve
from rllib_empo.exact.statespace import DEFAULT_MAX_STATES, StateGraph, TooManyStatesError

__all__ = ["solve", "ExactSolution", "StateGraph", "DEFAULT_MAX_STATES", "TooManyStatesError",
           "compare_to_exact"]
