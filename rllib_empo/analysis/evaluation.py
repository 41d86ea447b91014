"""How close a trained algorithm is to the exact solution of its world.

    from rllib_empo.evaluation import compare_to_exact, exact_solution_for
    figures = compare_to_exact(algo, exact_solution_for(algo))

``exact_solution_for(algo)`` solves the algorithm's world exactly with its human prior and
theory parameters (once; ``Empo.exact_solution``), and ``compare_to_exact`` is
:func:`rllib_empo.exact.compare.compare_to_exact` (its docstring lists the figures), which
reads the learned values through ``algo.values`` and ``algo.v_h_e_values``.
"""
from __future__ import annotations

from rllib_empo.exact.compare import compare_to_exact


def exact_solution_for(algo):
    """The exact solution of ``algo``'s world, prior and parameters (solved once)."""
    return algo.exact_solution()


def exact_fidelity(algo) -> dict:
    """``compare_to_exact(algo, exact_solution_for(algo))``."""
    return compare_to_exact(algo, exact_solution_for(algo))


__all__ = ["compare_to_exact", "exact_solution_for", "exact_fidelity"]
