"""The exact solver's state limit: one error type with a one-line message that names the
setting which raises it, at once for a world that certifies more states, and honoured
whichever graph (a prior's own enumeration included) the solver would use."""
import time

import pytest

from rllib_empo.exact import StateGraph, TooManyStatesError, solve
from rllib_empo.exact.compare import FIGURES, compare_to_exact
from rllib_empo.exact.priors import BoltzmannHumanPrior, UniformHumanPrior
from rllib_empo.worlds import make_world


def test_enumeration_stops_at_the_limit():
    with pytest.raises(TooManyStatesError) as info:
        StateGraph(make_world("rock_gate"), max_states=100, limit_name="exact_max_states")
    err = info.value
    assert (err.world_name, err.max_states, err.limit_name) == ("rock_gate", 100, "exact_max_states")
    assert str(err) == ("world 'rock_gate' has more than 100 reachable states, too large for the "
                        "exact solver; raise the limit exact_max_states=100 to enumerate it")
    assert err.message("with --max-states N") .endswith("raise the limit with --max-states N "
                                                        "to enumerate it")
    assert StateGraph(make_world("rock_gate"), max_states=1008).num_states == 1008


def test_a_world_with_a_lower_bound_fails_at_once():
    t0 = time.perf_counter()
    with pytest.raises(TooManyStatesError, match=r"'crowd' has more than 1,000,000 reachable "
                                                 r"states \(at least 1,53\d,\d{3}\)"):
        StateGraph(make_world("crowd"), max_states=1_000_000)
    assert time.perf_counter() - t0 < 5.0          # no enumeration


@pytest.mark.parametrize("prior", ["boltzmann", "uniform"])
def test_solve_honours_the_limit_with_every_prior(prior):
    world = make_world("rock_gate")
    prior = (BoltzmannHumanPrior.solve(world) if prior == "boltzmann"
             else UniformHumanPrior(world))
    with pytest.raises(TooManyStatesError, match="more than 500 reachable states"):
        solve(world, prior, beta_r=10.0, max_states=500)       # the prior's graph has 1008
    assert solve(world, prior, beta_r=10.0, max_states=1008).num_states == 1008
    with pytest.raises(TooManyStatesError):
        BoltzmannHumanPrior.solve(world, max_states=500)


def test_figures_name_compare_to_exact_s_keys():
    class Learned:                        # the exact solution itself, as a learned one
        def __init__(self, sol):
            self.sol = sol

        def values(self, states):
            idx = [self.sol.graph.index[s] for s in states]
            return {"q_r": self.sol.Q[idx], "pi_r": self.sol.PI[idx], "v_r": self.sol.V_R[idx],
                    "x_h": self.sol.X_H[idx]}

        def v_h_e_values(self, items):
            import numpy as np
            g = self.sol.graph
            return np.array([self.sol.V_HE[g.humans[pos]][g.index[s],
                                                          self.sol.goals[g.humans[pos]].index(goal)]
                             for s, pos, goal in items])
    world = make_world("corridor")
    sol = solve(world, UniformHumanPrior(world), beta_r=5.0)
    figures = compare_to_exact(Learned(sol), sol)
    assert tuple(figures) == FIGURES
    assert figures["tv_pi_r_s0"] == 0.0 and figures["mean_abs_v_h_e_error"] == 0.0
