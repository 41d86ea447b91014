"""Tests of the pure-Python warm-up schedule (steps = learner updates)."""

import itertools
import math
from types import SimpleNamespace

import pytest
from hypothesis import given, settings, strategies as st

from rllib_empo.theory.schedule import NETWORKS, STAGE_NAMES, WarmupSchedule, stage_name

ALL_ON = dict(x_h_use_network=True, u_r_use_network=True, v_r_use_network=True)
FLAG_COMBOS = [dict(zip(("x_h_use_network", "u_r_use_network", "v_r_use_network"), bits))
               for bits in itertools.product((False, True), repeat=3)]


def test_defaults_skip_u_r_and_v_r_stages():
    s = WarmupSchedule()
    assert s.ends == (1000, 2000, 2000, 3000, 3000, 5000)
    assert s.existing_networks == {"v_h_e", "x_h", "q_r"}
    assert [s.stage(t) for t in (0, 999, 1000, 1999, 2000, 2999, 3000, 4999, 5000, 10**9)] == \
        [0, 0, 1, 1, 3, 3, 5, 5, 6, 6]
    assert s.clear_points == (3000, 5000)
    assert [step for step, _ in s.stage_transitions()] == [1000, 2000, 3000, 5000]


def test_all_networks_enabled_gives_the_spec_table():
    s = WarmupSchedule(**ALL_ON)
    assert s.ends == (1000, 2000, 3000, 4000, 5000, 7000)
    assert [s.stage(e - 1) for e in s.ends] == [0, 1, 2, 3, 4, 5]
    assert s.stage(7000) == 6
    assert s.active_networks(6999) == set(NETWORKS)
    assert s.active_mask(0) == 0b00001 and s.active_mask(7000) == 0b11111


@pytest.mark.parametrize("flags", FLAG_COMBOS, ids=lambda f: "".join("1" if v else "0" for v in f.values()))
def test_every_flag_combination(flags):
    s = WarmupSchedule(**flags)
    x, u, v = (1000 * flags[k] for k in ("x_h_use_network", "u_r_use_network", "v_r_use_network"))
    expected = list(itertools.accumulate((1000, x, u, 1000, v, 2000)))
    assert list(s.ends) == expected
    existing = {"v_h_e", "q_r"} | {n for n, k in (("x_h", "x_h_use_network"), ("u_r", "u_r_use_network"),
                                                    ("v_r", "v_r_use_network")) if flags[k]}
    assert s.existing_networks == existing
    # Each network becomes active exactly when its own stage starts.
    starts = (0,) + s.ends
    for i, net in enumerate(NETWORKS):
        if net in existing:
            assert net in s.active_networks(starts[i])
            if starts[i] > 0:
                assert net not in s.active_networks(starts[i] - 1)
        else:
            assert all(net not in s.active_networks(t) for t in (0, *s.ends))
    assert s.active_networks(s.ends[-1]) == existing
    for row in s.stage_table():
        assert row.end is None or row.end > row.start


@pytest.mark.parametrize("flags", [{}, ALL_ON])
def test_exact_values_at_every_boundary(flags):
    s = WarmupSchedule(**flags)
    ends = s.ends
    for k, e in enumerate(ends):
        if k + 1 < len(ends) and ends[k + 1] == e:
            continue  # a skipped stage; the next boundary is checked instead
        before, at, after = s.stage(e - 1), s.stage(e), s.stage(e + 1)
        assert before < at == after
        assert s.active_networks(e - 1) <= s.active_networks(e) == s.active_networks(e + 1)
    e4, e5 = ends[4], ends[5]
    assert s.effective_beta_r(e4 - 1) == 0.0 and s.effective_beta_r(e4) == 0.0
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = 10.0 * (sig(6 * (1 / 2000 - 0.5)) - sig(-3)) / (sig(3) - sig(-3))
    assert s.effective_beta_r(e4 + 1) == pytest.approx(expected, rel=1e-12) and 0 < expected < 0.01
    assert s.effective_beta_r(e5 - 1) < 10.0 and s.effective_beta_r(e5) == 10.0 == s.effective_beta_r(e5 + 1)
    assert (s.is_in_warmup(e4 - 1), s.is_in_rampup(e4 - 1), s.is_fully_trained(e4 - 1)) == (True, False, False)
    assert (s.is_in_warmup(e4), s.is_in_rampup(e4), s.is_fully_trained(e4)) == (False, True, False)
    assert (s.is_in_warmup(e5), s.is_in_rampup(e5), s.is_fully_trained(e5)) == (False, False, True)


def test_all_durations_zero_means_full_training_from_the_start():
    s = WarmupSchedule(warmup_v_h_e_steps=0, warmup_x_h_steps=0, warmup_u_r_steps=0, warmup_q_r_steps=0,
                       warmup_v_r_steps=0, beta_r_rampup_steps=0, **ALL_ON)
    assert s.ends == (0,) * 6
    assert s.stage(0) == 6 and s.active_networks(0) == set(NETWORKS)
    assert s.effective_beta_r(0) == 10.0 and s.is_fully_trained(0) and not s.is_in_warmup(0)
    assert s.clear_points == () and s.stage_transitions() == []
    assert [r.stage for r in s.stage_table()] == [6]
    assert s.learning_rate("q_r", 0) == s.learning_rate("q_r", 1) == 1e-3  # t0 = 0, continuous
    assert s.learning_rate("q_r", 4) == pytest.approx(1e-3 / 2)


def test_zero_ramp_jumps_to_beta_at_e4():
    s = WarmupSchedule(beta_r_rampup_steps=0, beta_r=5.0)
    e4 = s.ends[4]
    assert s.ends[5] == e4 == 3000
    assert s.effective_beta_r(e4 - 1) == 0.0 and s.effective_beta_r(e4) == 5.0
    assert s.stage(e4 - 1) == 3 and s.stage(e4) == 6
    assert not any(s.is_in_rampup(t) for t in (e4 - 1, e4, e4 + 1))
    assert s.clear_points == (3000,)
    assert s.stage_transitions()[-1] == (3000, "Stage 3: + Q_r -> Stage 6: full training")


def test_no_warmup_but_a_ramp_clears_only_at_its_end():
    s = WarmupSchedule(warmup_v_h_e_steps=0, warmup_x_h_steps=0, warmup_q_r_steps=0, beta_r_rampup_steps=10)
    assert s.ends[4] == 0 and s.stage(0) == 5
    assert s.clear_points == (10,)
    assert s.effective_beta_r(0) == 0.0 and s.effective_beta_r(10) == 10.0


def test_ramp_is_a_normalised_strictly_increasing_sigmoid():
    s = WarmupSchedule(beta_r=10.0)
    e4, e5 = s.ends[4], s.ends[5]
    values = [s.effective_beta_r(t) for t in range(e4, e5 + 1)]
    assert values[0] == 0.0 and values[-1] == 10.0
    assert all(a < b for a, b in zip(values, values[1:]))
    assert s.effective_beta_r((e4 + e5) // 2) == pytest.approx(5.0)  # symmetric about the middle
    # Slow start and end, fast middle.
    assert values[1] - values[0] < values[1001] - values[1000] > values[-1] - values[-2]


@pytest.mark.parametrize("fraction, t0", [(0.0, 5000), (0.8, 80_000), (1.0, 100_000), (0.01, 5000)])
def test_lr_constant_fraction_sets_the_decay_start(fraction, t0):
    s = WarmupSchedule(lr_constant_fraction=fraction, num_training_steps=100_000)
    assert s.decay_start == t0
    assert s.learning_rate("q_r", 0) == s.learning_rate("q_r", t0 - 1) == s.learning_rate("q_r", t0) == 1e-3
    assert s.learning_rate("q_r", t0 + 1) < 1e-3
    assert s.learning_rate("q_r", 4 * t0) == pytest.approx(1e-3 / 2)


def test_decay_start_floors_without_float_noise():
    s = WarmupSchedule(warmup_v_h_e_steps=0, warmup_x_h_steps=0, warmup_q_r_steps=0, beta_r_rampup_steps=0,
                       lr_constant_fraction=0.29, num_training_steps=100)
    assert s.decay_start == 29  # 0.29 * 100 == 28.999999999999996 in floating point
    assert WarmupSchedule(lr_constant_fraction=0.5, num_training_steps=99_999).decay_start == 49_999


def test_one_over_t_versus_one_over_sqrt_t():
    sqrt = WarmupSchedule(lrs={n: 0.1 for n in NETWORKS})
    inv = WarmupSchedule(lrs={n: 0.1 for n in NETWORKS}, constant_lr_then_1_over_t=True, use_sqrt_lr_decay=False)
    t0 = 5000
    assert sqrt.learning_rate("v_h_e", 4 * t0) == pytest.approx(0.05)
    assert inv.learning_rate("v_h_e", 4 * t0) == pytest.approx(0.025)
    # 1/t wins when both flags are on.
    both = WarmupSchedule(constant_lr_then_1_over_t=True, use_sqrt_lr_decay=True)
    assert both.learning_rate("q_r", 2 * t0) == pytest.approx(1e-3 / 2)
    const = WarmupSchedule(use_sqrt_lr_decay=False)
    assert const.learning_rate("q_r", 10**9) == 1e-3


def test_lr_update_count_and_errors():
    s = WarmupSchedule(lrs={"v_h_e": 1.0, "x_h": 2.0, "u_r": 3.0, "q_r": 4.0, "v_r": 5.0})
    assert s.learning_rate("x_h", 10) == 2.0
    assert s.learning_rate("q_r", 20_000, update_count=20_000) == pytest.approx(2.0)
    assert s.learning_rate("q_r", 20_000, update_count=100) == 4.0  # clamped at t0, never above base
    assert s.learning_rate("q_r", 100, update_count=20_000) == 4.0  # constant phase is set by the step
    for bad in ("u_r", "v_r", "nope"):
        with pytest.raises(ValueError, match=bad) as err:
            s.learning_rate(bad, 0)
        assert "q_r" in str(err.value) and "v_h_e" in str(err.value)


def test_stage_names_are_never_unknown():
    names = [stage_name(k) for k in range(7)]
    assert names == list(STAGE_NAMES) and len(set(names)) == 7
    assert all("Unknown" not in n and n.startswith(f"Stage {k}:") for k, n in enumerate(names))
    assert WarmupSchedule().stage_name(5) == "Stage 5: beta_r ramp-up"
    for bad in (-1, 7, 1.5, 1.0, True, None, "1"):
        with pytest.raises(ValueError):
            stage_name(bad)
    with pytest.raises(ValueError):
        WarmupSchedule().stage(-1)


def test_transition_descriptions():
    assert WarmupSchedule().stage_transitions() == [
        (1000, "Stage 0: V_h^e only -> Stage 1: V_h^e + X_h"),
        (2000, "Stage 1: V_h^e + X_h -> Stage 3: + Q_r"),
        (3000, "Stage 3: + Q_r -> Stage 5: beta_r ramp-up"),
        (5000, "Stage 5: beta_r ramp-up -> Stage 6: full training"),
    ]


def test_epsilon_schedule():
    assert WarmupSchedule(epsilon=0.2).epsilon_at(123) == 0.2
    s = WarmupSchedule(epsilon=[(10, 1.0), (110, 0.0), (110, 0.5), (200, 0.5)])
    assert s.epsilon_at(0) == 1.0 and s.epsilon_at(10) == 1.0
    assert s.epsilon_at(60) == pytest.approx(0.5)
    assert s.epsilon_at(109) == pytest.approx(0.01)
    assert s.epsilon_at(110) == 0.5 and s.epsilon_at(10**6) == 0.5
    hash(s)  # frozen and hashable despite the list input
    for bad in ([], [(10, 0.1), (5, 0.2)]):
        with pytest.raises(ValueError):
            WarmupSchedule(epsilon=bad)


def test_tables_and_masks():
    s = WarmupSchedule()
    rows = s.stage_table()
    assert [r.stage for r in rows] == [0, 1, 3, 5, 6]
    assert rows[0].networks == ("v_h_e",) and rows[2].networks == ("v_h_e", "x_h", "q_r")
    assert [r.beta_r for r in rows] == ["0", "0", "0", "0 -> 10", "10"]
    assert rows[-1].end is None and rows[-1].start == 5000
    md = s.format_stages_table()
    assert md.count("\n") == 1 + len(rows) and "| 5 | Stage 5: beta_r ramp-up | 3000-5000 |" in md
    assert "Stage 6: full training" in s.format_stages_table(markdown=False)
    assert [s.active_mask(t) for t in (0, 1000, 2000)] == [0b1, 0b11, 0b1011]
    assert s.as_dict(4000)["stage"] == 5


def test_from_config_reads_same_named_attributes():
    cfg = SimpleNamespace(**{f: getattr(WarmupSchedule(), f) for f in WarmupSchedule.__dataclass_fields__
                             if f not in ("lrs", "target_update_intervals")})
    cfg.warmup_q_r_steps = 7
    for i, n in enumerate(NETWORKS):
        setattr(cfg, f"lr_{n}", 0.1 * (i + 1))
        setattr(cfg, f"{n}_target_update_interval", 10 * (i + 1))
    s = WarmupSchedule.from_config(cfg)
    assert s.warmup_q_r_steps == 7 and s.lrs["q_r"] == pytest.approx(0.4)
    assert s.target_update_intervals == {"v_h_e": 10, "x_h": 20, "u_r": 30, "q_r": 40, "v_r": 50}


def test_target_copies_are_derived_from_the_step():
    s = WarmupSchedule(target_update_intervals={"q_r": 3, "v_h_e": 2})
    copies = {t: s.target_copies(t) for t in range(7)}
    assert [t for t, c in copies.items() if "q_r" in c] == [2, 5]          # (t + 1) % 3 == 0
    assert [t for t, c in copies.items() if "v_h_e" in c] == [1, 3, 5]
    assert "x_h" not in s.target_copies(98)
    assert s.target_copies(99) == ("v_h_e", "x_h")     # default interval 100; u_r/v_r do not exist
    with pytest.raises(ValueError, match="q_r_target_update_interval"):
        WarmupSchedule(target_update_intervals={"q_r": 0})


def test_step_plan_of_every_stage():
    s = WarmupSchedule(warmup_v_h_e_steps=10, warmup_x_h_steps=10, warmup_q_r_steps=10,
                       beta_r_rampup_steps=20, beta_r=4.0,
                       lrs={n: 1.0 for n in NETWORKS}, target_update_intervals={"q_r": 5})
    for t in (0, 9, 10, 25, 35, 49, 50, 200):
        plan = s.plan(t)
        assert plan.step == t and plan.stage == s.stage(t)
        assert plan.active == tuple(n for n in NETWORKS if n in s.active_networks(t))
        assert plan.beta_r == s.effective_beta_r(t)
        assert dict(plan.lrs) == {n: s.learning_rate(n, t) for n in s.existing_networks}
        assert plan.sync == s.target_copies(t)
    assert s.plan(0).active == ("v_h_e",) and s.plan(50).beta_r == 4.0
    assert s.plan(4).sync == ("q_r",) and s.plan(5).sync == ()


def test_invalid_schedule_rejected():
    with pytest.raises(ValueError, match="warmup_q_r_steps"):
        WarmupSchedule(warmup_q_r_steps=-1)
    with pytest.raises(ValueError, match="lr_constant_fraction"):
        WarmupSchedule(lr_constant_fraction=1.5)


durations = st.integers(min_value=0, max_value=50)


@settings(max_examples=100, deadline=None)
@given(d=st.tuples(*[durations] * 6), flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
       fraction=st.floats(0.0, 1.0), one_over_t=st.booleans(), sqrt=st.booleans(),
       beta=st.floats(0.0, 100.0))
def test_properties(d, flags, fraction, one_over_t, sqrt, beta):
    s = WarmupSchedule(*d, beta_r=beta, x_h_use_network=flags[0], u_r_use_network=flags[1],
                       v_r_use_network=flags[2], lr_constant_fraction=fraction, num_training_steps=500,
                       constant_lr_then_1_over_t=one_over_t, use_sqrt_lr_decay=sqrt)
    e4, e5 = s.ends[4], s.ends[5]
    previous = None
    # Every step up to past the decay start (at most ~800), then a sparse tail.
    for t in [*range(0, max(e5, s.decay_start) + 3), 10**4, 10**6]:
        stage, active, b = s.stage(t), s.active_networks(t), s.effective_beta_r(t)
        lr = s.learning_rate("q_r", t)
        assert 0 <= stage <= 6 and active <= s.existing_networks and "v_h_e" in active
        if previous is not None:
            p_stage, p_active, p_b, p_lr = previous
            assert stage >= p_stage and active >= p_active and b >= p_b and lr <= p_lr
        if t < e4:
            assert b == 0.0
        if t >= e5:
            assert b == beta and stage == 6 and active == s.existing_networks
        assert lr <= 1e-3 and (lr == 1e-3 or t >= s.decay_start)
        previous = stage, active, b, lr
    transitions = [t for t, _ in s.stage_transitions()]
    assert transitions == [t for t in range(1, 2 * e5 + 2) if s.stage(t) != s.stage(t - 1)]
    assert list(s.clear_points) == sorted(set(s.clear_points))
    assert math.isfinite(s.learning_rate("v_h_e", 10**9))


def test_schedule_is_pure_python():
    import subprocess
    import sys

    from pathlib import Path
    import rllib_empo.theory.schedule as schedule
    # Load the file on its own (the package __init__ imports Ray to register the algorithm).
    code = ("import sys, importlib.util as u; "
            f"spec = u.spec_from_file_location('schedule', {str(Path(schedule.__file__))!r}); "
            "m = u.module_from_spec(spec); sys.modules['schedule'] = m; spec.loader.exec_module(m); "
            "heavy = {'ray', 'torch', 'numpy'} & {k.split('.')[0] for k in sys.modules}; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
