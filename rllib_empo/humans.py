"""Public home of the human priors (they live in :mod:`rllib_empo.exact.priors`)."""
from rllib_empo.exact.priors import BoltzmannHumanPrior, HeuristicHumanPrior, UniformHumanPrior

__all__ = ["BoltzmannHumanPrior", "HeuristicHumanPrior", "UniformHumanPrior"]
