"""The convergence bars and how figures are read against them (pure, milliseconds)."""
import math

from rllib_empo.exact.compare import CONVERGENCE_BARS, FIGURES, bars_met, worst_figures


def _figures(**changes):
    good = {"tv_pi_r_s0": 0.01, "v_r_s0_rel_error": 0.01, "mean_tv_pi_r": 0.01,
            "mean_abs_v_h_e_error": 0.01, "mean_tv_pi_r_decision": 0.02,
            "greedy_agreement_clear": 1.0}
    return {**good, **changes}


def test_the_bars_are_compare_to_exact_figures():
    assert set(CONVERGENCE_BARS) <= set(FIGURES)


def test_bars_met_reads_each_direction_and_lets_nan_pass():
    assert all(bars_met(_figures()).values())
    assert bars_met(_figures(tv_pi_r_s0=0.03))["tv_pi_r_s0"]                 # on the bound
    assert not bars_met(_figures(tv_pi_r_s0=0.031))["tv_pi_r_s0"]
    assert not bars_met(_figures(greedy_agreement_clear=0.94))["greedy_agreement_clear"]
    assert bars_met(_figures(greedy_agreement_clear=math.nan))["greedy_agreement_clear"]
    met = bars_met(_figures(mean_tv_pi_r=0.2))
    assert [k for k, ok in met.items() if not ok] == ["mean_tv_pi_r"]


def test_worst_figures_takes_the_bad_side_of_each_bar():
    history = [_figures(tv_pi_r_s0=0.02, greedy_agreement_clear=0.97),
               _figures(tv_pi_r_s0=0.05, greedy_agreement_clear=math.nan),
               _figures(tv_pi_r_s0=0.01, greedy_agreement_clear=0.99)]
    worst = worst_figures(history)
    assert worst["tv_pi_r_s0"] == 0.05 and worst["greedy_agreement_clear"] == 0.97
    assert math.isnan(worst_figures([_figures(greedy_agreement_clear=math.nan)])
                      ["greedy_agreement_clear"])
