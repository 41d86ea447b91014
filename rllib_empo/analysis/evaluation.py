"""How close a trained algorithm is to the exact solution of its world.

    from rllib_empo.evaluation import compare_to_exact, exact_solution_for
    figures = compare_to_exact(algo, exact_solution_for(algo))

``exact_solution_for(algo)`` solves the algorithm's world exactly with its human prior and
theory parameters (once; ``Empo.exact_solution``), and ``compare_to_exact`` is
:func:`rllib_empo.exact.compare.compare_to_exact` (its docstring lists the figures), which
reads the learned values through ``algo.values`` and ``algo.v_h_e_values``.
"""
from __future__ import annotations

from rllib_empo.algorithm.env import prior_from_env_config, split_env_config
from rllib_empo.exact.compare import compare_to_exact
from rllib_empo.exact.priors import BoltzmannHumanPrior
from rllib_empo.exact.solver import solve
from rllib_empo.exact.statespace import StateGraph

#: beta_h of the human prior when env_config has none (as ``prior_from_env_config``).
DEFAULT_BETA_H = 10.0


def exact_solution_for(algo, max_states=None):
    """The exact solution of ``algo``'s world, prior and parameters (solved once), of at
    most ``max_states`` states (default: the config's ``exact_max_states``)."""
    return algo.exact_solution(max_states=max_states)


def exact_fidelity(algo, max_states=None) -> dict:
    """``compare_to_exact(algo, exact_solution_for(algo, max_states))``."""
    return compare_to_exact(algo, exact_solution_for(algo, max_states))


def solve_world(world, env_config: dict, params, *, max_states: int,
                limit_name: str = "max_states"):
    """(exact solution, prior) of ``world`` under the prior ``env_config`` names, enumerating
    at most ``max_states`` states for the prior and the solver alike (TooManyStatesError):
    the exact phase-1 prior is solved on the very graph the solver then uses."""
    graph = StateGraph(world, max_states, limit_name)
    env_keys, _ = split_env_config(env_config)
    if env_keys.get("prior", getattr(world, "default_prior", "boltzmann")) == "boltzmann":
        prior = BoltzmannHumanPrior.solve(
            world, float(env_keys.get("beta_h", DEFAULT_BETA_H)),
            float(env_keys.get("gamma_h", params.gamma_h)), graph=graph)
    else:
        prior = prior_from_env_config(world, env_config, params.gamma_h)
    return solve(world, prior, params, graph=graph), prior


__all__ = ["compare_to_exact", "exact_solution_for", "exact_fidelity", "solve_world"]
