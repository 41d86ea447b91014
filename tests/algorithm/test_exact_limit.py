"""``exact_max_states`` is the one limit of the exact solver for an algorithm: evaluation
during training (``exact_eval_interval``) and ``Empo.exact_solution`` say in one line that
the world is too large, at build time for the former; the limit can be raised per call."""
import pytest

from conftest import small_config
from rllib_empo.exact import TooManyStatesError


def test_exact_eval_on_a_world_too_large_fails_at_build(ray_session):
    config = small_config("rllib_empo/Crowd-v0", exact_eval_interval=5,
                          sum_human_actions=False)
    with pytest.raises(TooManyStatesError) as info:
        config.build_algo()
    message = str(info.value)
    assert "\n" not in message and "world 'crowd' has more than 1,000,000" in message
    assert "raise the limit exact_max_states=1000000" in message


def test_exact_solution_names_the_config_field(ray_session):
    algo = small_config(exact_max_states=200).build_algo()
    try:
        with pytest.raises(TooManyStatesError, match="exact_max_states=200"):
            algo.exact_solution()
        assert algo.exact_solution(max_states=2000).num_states == 1008
    finally:
        algo.stop()


def test_exact_figures_are_in_every_result(ray_session):
    """NaN before the first evaluation, so that a Tune metric exists from iteration 1."""
    import math
    algo = small_config(exact_eval_interval=2).build_algo()
    try:
        first, second = algo.train(), algo.train()
    finally:
        algo.stop()
    assert first["Exact"]["training_iteration"] == 0
    assert math.isnan(first["Exact"]["tv_pi_r_s0"])
    assert second["Exact"]["training_iteration"] == 2
    assert 0.0 <= second["Exact"]["tv_pi_r_s0"] <= 1.0
