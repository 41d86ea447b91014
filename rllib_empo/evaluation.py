"""Public home of ``compare_to_exact`` and ``exact_solution_for`` (they live in
:mod:`rllib_empo.analysis.evaluation`)."""
from rllib_empo.analysis.evaluation import compare_to_exact, exact_fidelity, exact_solution_for

__all__ = ["compare_to_exact", "exact_solution_for", "exact_fidelity"]
