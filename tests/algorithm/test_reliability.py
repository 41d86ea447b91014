"""Reliability: bad input is rejected clearly, and numbers never go silently wrong.

1. Bad configuration: every bad input below is rejected by ``validate()`` (so by
   ``build_algo()`` in its first second) with a ValueError/TypeError whose message names the
   field (``env_config['horizn']``, ``replay_capacity`` ...) and what is allowed. The
   single-field range checks live in tests/test_config.py (BAD_VALUES); this file adds the
   cross-field, environment and world ones.
2. Bad worlds at run time: a world that breaks the protocol only at a later state fails in
   ``EmpoEnv`` with a WorldProtocolError naming the world, the state and the problem, in
   every row mode, and through ``algo.train()``.
3. Numerical safety: the power law and U_r stay finite over the whole accepted range, and
   corrupt replay data never reaches the weights.
"""
from __future__ import annotations

import itertools
import os
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from _faulty_worlds import FaultyWorld, Missing, NanPrior, TinyWorld, Tweaked
from conftest import acting_q_r, small_config
from ray.rllib.core import DEFAULT_MODULE_ID

from rllib_empo import EmpoConfig
from rllib_empo.theory import equations as eq
from rllib_empo.algorithm.validation import MAX_BETA_R, MAX_LOG10_U_R
from rllib_empo.algorithm.env import EmpoEnv, EnvSettings
from rllib_empo.algorithm.learner import OPTIMIZER
from rllib_empo.algorithm.targets import value_loss
from rllib_empo.worlds.protocol import WorldProtocolError, check_world

ROCK = "rllib_empo/RockGate-v0"
GENERIC = "rllib_empo/World-v0"


# ============================================================ 1. bad configuration
def _cfg(env=ROCK, env_config=None, **training):
    cfg = EmpoConfig()
    if env is not None:
        cfg = cfg.environment(env, env_config=env_config or {})
    return cfg.training(**training)


def _existing_file():
    path = os.path.abspath(__file__)
    return _cfg(tensorboard_dir=path)


# (id, config factory, regex the message must match). Every regex names the field and
# the allowed values (or the bound).
BAD_CONFIGS = [
    # --- environment: world name, keys and arguments
    ("unknown_world_name", lambda: _cfg(GENERIC, {"world": "rokc_gate"}),
     r"env_config\['world'\] must be one of corridor, crowd, lanes, rock_gate, vault or a World instance, "
     r"got 'rokc_gate' \(did you mean 'rock_gate'\?\)"),
    ("world_missing_for_generic_id", lambda: _cfg(GENERIC, {}),
     r"env_config\['world'\] is required .* one of corridor, crowd, lanes, rock_gate, vault, or a World instance"),
    ("world_conflicts_with_env_id", lambda: _cfg(ROCK, {"world": "corridor"}),
     r"env_config\['world'\] must be 'rock_gate' or absent with env 'rllib_empo/RockGate-v0', "
     r"got 'corridor'"),
    ("unknown_env_config_key", lambda: _cfg(ROCK, {"horizn": 5}),
     r"env_config\['horizn'\] is not accepted by world 'rock_gate' \(did you mean 'horizon'\?\); "
     r"allowed keys: horizon .* world, prior, beta_h, gamma_h"),
    ("bad_world_argument_value", lambda: _cfg(ROCK, {"horizon": 0}),
     r"env_config: world 'rock_gate' rejected its arguments \(horizon=0\): .*horizon must be an int >= 1"),
    ("extra_key_with_world_instance", lambda: _cfg(GENERIC, {"world": TinyWorld(), "horizon": 3}),
     r"env_config\['horizon'\] is not allowed when env_config\['world'\] is a World instance.*"
     r"allowed keys: world, prior, beta_h, gamma_h"),
    ("reserved_empo_key", lambda: _cfg(ROCK, {"empo": {"gamma_h": 0.5}}),
     r"env_config\['empo'\] is reserved.*Allowed env_config keys: world, prior, beta_h, gamma_h"),
    # --- environment: the human prior
    ("unknown_prior_name", lambda: _cfg(ROCK, {"prior": "boltzman"}),
     r"env_config\['prior'\] must be one of 'boltzmann', 'uniform', 'heuristic' or a callable.*"
     r"got 'boltzman' \(did you mean 'boltzmann'\?\)"),
    ("heuristic_prior_without_distances", lambda: _cfg(GENERIC, {"world": TinyWorld(), "prior": "heuristic"}),
     r"env_config\['prior'\] is 'heuristic', which needs world 'tiny' to have a method "
     r"goal_distance_after.*allowed for this world: 'boltzmann', 'uniform'"),
    ("negative_beta_h", lambda: _cfg(ROCK, {"beta_h": -1.0}),
     r"env_config\['beta_h'\] must be a finite float >= 0, got -1\.0"),
    ("gamma_h_above_one", lambda: _cfg(ROCK, {"gamma_h": 1.5}),
     r"env_config\['gamma_h'\] must be a finite float in \(0, 1\], got 1\.5"),
    # --- environment: a custom World instance that breaks the protocol
    ("world_class_instead_of_instance", lambda: _cfg(GENERIC, {"world": TinyWorld}),
     r"env_config\['world'\] must be a registered world name or a World instance, got the class "
     r"TinyWorld; pass TinyWorld\(\.\.\.\)"),
    ("world_missing_encode_goal", lambda: _cfg(GENERIC, {"world": Missing("encode_goal")}),
     r"env_config\['world'\]: world 'missing_encode_goal' is missing the protocol method `encode_goal`"),
    ("model_based_targets_without_transition_probabilities",
     lambda: _cfg(GENERIC, {"world": Missing("transition_probabilities")}, use_model_based_targets=True),
     r"env_config\['world'\]: world 'missing_transition_probabilities' is missing the protocol "
     r"method `transition_probabilities`"),
    ("sampled_targets_without_transition_probabilities",  # the env samples from them too
     lambda: _cfg(GENERIC, {"world": Missing("transition_probabilities")}, use_model_based_targets=False),
     r"missing the protocol method `transition_probabilities`"),
    ("world_missing_attribute", lambda: _cfg(GENERIC, {"world": Missing("num_actions")}),
     r"missing the protocol attribute `num_actions`"),
    ("num_actions_zero", lambda: _cfg(GENERIC, {"world": Tweaked(num_actions=0)}),
     r"env_config\['world'\]: world 'tweaked': num_actions must be an int >= 1, got 0"),
    ("agent_ids_do_not_partition", lambda: _cfg(GENERIC, {"world": Tweaked(robot_agent_indices=[1])}),
     r"human_agent_indices \[1\] and robot_agent_indices \[1\] must partition 0\.\.N-1"),
    ("terminal_initial_state", lambda: _cfg(GENERIC, {"world": Tweaked(initial_state=lambda: (0, 2))}),
     r"initial_state\(\) \(0, 2\) is terminal"),
    ("initial_probabilities_do_not_sum_to_1", lambda: _cfg(GENERIC, {"world": FaultyWorld("probs_sum", at=4)}),
     r"env_config\['world'\]: world 'faulty_probs_sum': transition probabilities at state "
     r"\(4, 2\), joint action \[\d, \d\] sum to 0\.9, not 1"),
    ("initial_goal_weights_do_not_sum_to_1",
     lambda: _cfg(GENERIC, {"world": FaultyWorld("goal_weights_sum", at=4)}),
     r"env_config\['world'\]: world 'faulty_goal_weights_sum': goal weights of human 1 at state "
     r"\(4, 2\) sum to 0\.8, not 1"),
    ("unpicklable_world_for_remote_runners",
     lambda: _cfg(GENERIC, {"world": Tweaked(lock=__import__("threading").Lock())})
     .env_runners(num_env_runners=2),
     r"env_config\['world'\] must be picklable to reach the remote EnvRunners \(num_env_runners=2\)"),
    ("gym_env_that_is_not_an_empo_env", lambda: _cfg("CartPole-v1"),
     r"env must be an EmpoEnv id or class, got 'CartPole-v1' \(CartPoleEnv\).*"
     r"rllib_empo/RockGate-v0.*rllib_empo/World-v0"),
    # --- table widths
    # --- numerics: beta_r * log(-Q_r) and U_r must be representable in float32
    ("beta_r_overflows_float32", lambda: _cfg(beta_r=1e31),
     r"beta_r must be <= 1e\+30 \(beta_r \* log\(-Q_r\) must stay finite in float32"),
    ("u_r_overflows_float32", lambda: _cfg(xi=15.0),
     r"xi \* eta \* log10\(1 / x_h_floor\) must be <= 30 with value_loss='log', got xi=15\.0, "
     r"eta=1\.1, x_h_floor=0\.001"),
    ("u_r_overflows_with_mse", lambda: _cfg(xi=5.0, value_loss="mse"),
     r"xi \* eta \* log10\(1 / x_h_floor\) must be <= 15 with value_loss='mse'"),
    ("u_r_overflows_with_tiny_floor", lambda: _cfg(x_h_floor=1e-30),
     r"must be <= 30 .*x_h_floor=1e-30"),
    # --- replay sizes
    ("batch_larger_than_replay", lambda: _cfg(replay_capacity=32, train_batch_size_per_learner=64),
     r"replay_capacity \(32\) must be >= the total train batch size "
     r"\(train_batch_size_per_learner=64"),
    ("learning_starts_above_replay", lambda: _cfg(replay_capacity=100, learning_starts=101,
                                                  train_batch_size_per_learner=64),
     r"learning_starts \(101\) must be <= replay_capacity \(100\)"),
    ("replay_smaller_than_one_iteration",
     lambda: _cfg(replay_capacity=100, train_batch_size_per_learner=64).env_runners(
         rollout_fragment_length=60, num_envs_per_env_runner=2),
     r"replay_capacity \(100\) must be >= the rows one iteration samples \(120 = 1 EnvRunner\(s\) x "
     r"num_envs_per_env_runner=2 x rollout_fragment_length=60\)"),
    # --- fault tolerance
    ("restart_failed_sub_environments",
     lambda: _cfg().fault_tolerance(restart_failed_sub_environments=True),
     r"restart_failed_sub_environments must be False for EMPO, got True"),
    # --- output
    ("tensorboard_dir_not_a_string", lambda: _cfg(tensorboard_dir=3),
     r"tensorboard_dir must be a non-empty str path or None, got 3"),
    ("tensorboard_dir_empty", lambda: _cfg(tensorboard_dir=""),
     r"tensorboard_dir must be a non-empty str path or None, got ''"),
    ("tensorboard_dir_is_a_file", _existing_file,
     r"tensorboard_dir must be a directory path or None, got .*which is an existing file"),
    # --- epsilon schedule nonsense
    *[(f"epsilon_{name}", (lambda v: lambda: _cfg(epsilon=v))(value),
       r"epsilon must be a float in \[0, 1\] or a non-empty list of \(step, value\) pairs")
      for name, value in [("nan_value", [(0, float("nan"))]), ("dict", {0: 1.0}),
                          ("flat_pair", (0, 1.0)), ("short_pair", [(0, 1.0), (10,)]),
                          ("bool_step", [(True, 0.5)]), ("array", np.array([[0, 1.0]])),
                          ("decreasing_steps", [(10, 0.5), (0, 1.0)]), ("inf", float("inf"))]],
]


@pytest.mark.parametrize("make, pattern", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_rejected_by_validate(make, pattern):
    cfg = make()
    with pytest.raises((ValueError, TypeError), match=pattern):
        cfg.validate()


def test_there_are_at_least_20_distinct_bad_configs():
    assert len({c[0] for c in BAD_CONFIGS}) == len(BAD_CONFIGS) >= 20


def test_world_errors_keep_their_type_and_cause():
    """Callers that catch WorldProtocolError (or TypeError for a bad keyword) still can."""
    with pytest.raises(WorldProtocolError) as err:
        _cfg(GENERIC, {"world": Missing("encode_goal")}).validate()
    assert isinstance(err.value.__cause__, WorldProtocolError)
    with pytest.raises(TypeError):
        _cfg(ROCK, {"horizn": 5}).validate()


def test_bad_config_fails_fast_in_build_algo(ray_session):
    """build_algo() validates before it starts anything (well under a second)."""
    import time
    t = time.perf_counter()
    with pytest.raises(TypeError, match=r"env_config\['horizn'\]"):
        small_config().environment(ROCK, env_config={"horizn": 3}).build_algo()
    assert time.perf_counter() - t < 1.0


def test_non_empo_env_creator_is_rejected_at_build(ray_session):
    """An env creator registered with Ray Tune cannot be checked without calling it: it is
    rejected when the algorithm is built, before any EnvRunner starts."""
    import gymnasium as gym
    from ray.tune.registry import register_env
    register_env("test_reliability/cartpole", lambda cfg: gym.make("CartPole-v1"))
    cfg = small_config().environment("test_reliability/cartpole")
    cfg.validate()
    with pytest.raises(ValueError, match=r"env 'test_reliability/cartpole' is not an EmpoEnv"):
        cfg.build_algo()


def test_more_env_runners_than_cpus_fail_fast_saying_what_to_set(ray_session):
    """On 2 CPUs, 3 EnvRunners of 1 CPU each were never placed: build_algo() waited for ever
    without a word. Now validate() says so in its first second."""
    import time
    cfg = small_config().env_runners(num_env_runners=3)
    with pytest.raises(ValueError, match=r"^num_env_runners=3 x num_cpus_per_env_runner=1 needs 3 CPUs, "
                                         r"but the Ray cluster has 2: .*Set num_env_runners <= 2, or a "
                                         r"fractional num_cpus_per_env_runner \(<= 0\.667\)"):
        cfg.validate()
    t = time.perf_counter()
    with pytest.raises(ValueError, match="needs 3 CPUs"):
        cfg.build_algo()
    assert time.perf_counter() - t < 2.0
    small_config().env_runners(num_env_runners=3, num_cpus_per_env_runner=0.5).validate()


def test_the_cpu_check_without_ray_counts_this_machine(monkeypatch):
    from rllib_empo.algorithm import validation
    monkeypatch.setattr(validation, "cluster_cpus", lambda: (4.0, "this machine has"))
    _cfg().env_runners(num_env_runners=4).validate()
    with pytest.raises(ValueError, match=r"num_env_runners=2 x num_cpus_per_env_runner=1 \+ "
                                         r"num_learners=3 x num_cpus_per_learner=auto needs 5 CPUs, "
                                         r"but this machine has 4"):
        _cfg().env_runners(num_env_runners=2).learners(num_learners=3).validate()


class _Loop(TinyWorld):
    """TinyWorld without the clock in its state: the human walks back and forth for ever."""
    name = "loop"

    def initial_state(self):
        return (1, self.cells // 2)

    def transition_probabilities(self, state, joint_action):
        out = super().transition_probabilities((2, state[1]), joint_action)
        return [(p, (1, s[1])) for p, s in out]

    def encode_state(self, state):
        return np.array([state[1] / (self.cells - 1)], np.float32)


def test_gamma_r_1_on_a_world_with_cycles_warns_and_says_why():
    from rllib_empo.algorithm.validation import UndiscountedCycleWarning
    with pytest.warns(UndiscountedCycleWarning, match=r"gamma_r = 1 on world 'loop', which has a "
                                                      r"cycle .* V_r adds U_r <= -1 for every step"):
        _cfg(GENERIC, {"world": _Loop(), "prior": "uniform"}, gamma_r=1.0).validate()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndiscountedCycleWarning)
        _cfg(GENERIC, {"world": _Loop(), "prior": "uniform"}, gamma_r=0.99).validate()
        _cfg(GENERIC, {"world": TinyWorld(), "prior": "uniform"}, gamma_r=1.0).validate()
        t = __import__("time").perf_counter()
        _cfg(ROCK, gamma_r=1.0).validate()           # acyclic (steps left in the state)
        assert __import__("time").perf_counter() - t < 1.0


def test_unknown_network_names_are_rejected():
    cfg = EmpoConfig()
    with pytest.raises(ValueError, match=r"network 'q_x' does not exist.*existing networks: "
                                         r"\['q_r', 'v_h_e', 'x_h'\]"):
        cfg.get_learning_rate("q_x", 0)
    with pytest.raises(TypeError, match="lr_q_x"):
        cfg.training(lr_q_x=1e-3)


def test_valid_environments_validate_fast():
    import time
    cases = [(ROCK, {}), (ROCK, {"world": "rock_gate", "horizon": 6, "prior": "uniform"}),
             ("rllib_empo/Corridor-v0", {"slip": 0.25, "beta_h": 2.0, "gamma_h": 1.0}),
             ("rllib_empo/Crowd-v0", {"prior": "heuristic"}),
             (GENERIC, {"world": "corridor", "num_humans": 1}),
             (GENERIC, {"world": TinyWorld(), "prior": "uniform"}),
             (GENERIC, {"world": TinyWorld(), "prior": NanPrior})]   # factories are not called
    for env, env_config in cases:
        cfg = _cfg(env, env_config)
        t = time.perf_counter()
        cfg.validate()
        assert time.perf_counter() - t < 0.2, (env, env_config)
    # with validation switched off, the environment is not looked at
    _cfg(GENERIC, {"world": "rokc_gate"}).experimental(_validate_config=False).validate()


@pytest.mark.parametrize("flags", itertools.product((False, True), repeat=2))
def test_network_mode_combinations_all_valid_with_an_environment(flags):
    x, u = flags
    cfg = _cfg(x_h_use_network=x, u_r_use_network=u)
    cfg.validate()
    assert cfg.table_spec().mode == "sum"
    names = {"v_h_e", "q_r"} | ({"x_h"} if x else set()) | ({"u_r"} if u else set())
    assert set(cfg.schedule.existing_networks) == names


@pytest.mark.parametrize("sum_human_actions", [True, False])
def test_sum_human_actions_is_irrelevant_without_model_based_targets(sum_human_actions):
    """Decision: allowed and ignored (not an error). Without model-based targets every
    expectation is sampled, humans included, so both values give the same rows; erroring
    would break Tune grids over the two flags. The field's doc says what it applies to."""
    cfg = _cfg(use_model_based_targets=False, sum_human_actions=sum_human_actions)
    cfg.validate()
    assert EnvSettings(**cfg.empo_env_settings()).mode == "sampled"
    assert cfg.table_spec().joint_actions == 1


# ======================================================= 2. bad worlds at run time
def _step_until_error(env, steps=5):
    env.reset(seed=0)
    for _ in range(steps):
        _, _, terminated, _, _ = env.step(1)
        if terminated:
            env.reset()


RUNTIME_FAULTS = {   # fault -> the problem the message must state
    "probs_sum": r"transition probabilities at state \(3, 2\), joint action \[\d, \d\] sum to 0\.9, not 1",
    "prob_nan": r"probability nan at state \(3, 2\), joint action \[\d, \d\] is not finite in \[0, 1\]",
    "prob_negative": r"probability -0\.5 at state \(3, 2\).* is not finite in \[0, 1\]",
    "not_pairs": r"transition_probabilities\(\(3, 2\), \[\d, \d\]\) must return a list of "
                 r"\(probability, successor\) pairs",
    "unhashable_successor": r"successor \[2, \d\] of state \(3, 2\) is not hashable",
    "none_for_nonterminal": r"transition_probabilities\(\(3, 2\), \[\d, \d\]\) returned None for a state that "
                            r"is_terminal says is not terminal",
    "encode_nan": r"encode_state\(\(3, \d\)\) contains non-finite values",
    "encode_length": r"encode_state\(\(3, \d\)\) has shape \(3,\), expected \(2,\) like the initial state",
    "encode_text": r"encode_state\(\(3, \d\)\) is not a vector of numbers",
    "goal_weights_sum": r"goal weights of human 1 at state \(3, \d\) sum to 0\.8, not 1",
    "goal_weight_nan": r"goal weight nan of ReachCell\(cell=0\) at state \(3, \d\) is not a finite number",
    "goal_not_pairs": r"possible_goals\(\(3, \d\), 1\) must return a list of \(goal, weight\) pairs",
}
MODES = {"sum": {}, "sampled_humans": {"sum_human_actions": False},
         "sampled": {"use_model_based_targets": False}}
SUM_ONLY: set = set()


def _runtime_cases():
    for fault, mode in itertools.product(RUNTIME_FAULTS, MODES):
        if fault in SUM_ONLY and mode == "sampled":
            continue                  # a sampled row holds one successor
        yield pytest.param(fault, mode, id=f"{fault}-{mode}")


@pytest.mark.parametrize("fault, mode", _runtime_cases())
def test_bad_world_fails_in_the_env_naming_world_state_and_problem(fault, mode):
    world = FaultyWorld(fault)
    check_world(world)                      # the initial state is fine: only run time can tell
    env = EmpoEnv({"world": world, "prior": "uniform", "empo": MODES[mode]})
    with pytest.raises(WorldProtocolError, match=rf"^world 'faulty_{fault}': {RUNTIME_FAULTS[fault]}"):
        _step_until_error(env)


def test_huge_states_are_shortened_in_messages():
    class Big(TinyWorld):
        name = "big"

        def initial_state(self):
            return (self.horizon, self.cells // 2) + tuple(range(10_000))

        def transition_probabilities(self, state, joint_action):
            return [(0.5, state[:2] + state[2:])]

    env = EmpoEnv({"world": Big(), "prior": "uniform"})
    env.reset(seed=0)
    with pytest.raises(WorldProtocolError, match="sum to 0.5") as err:
        env.step(0)
    assert len(str(err.value)) < 600 and "chars)" in str(err.value)


@pytest.mark.parametrize("mode", MODES)
def test_nan_human_prior_is_rejected(mode):
    env = EmpoEnv({"world": TinyWorld(), "prior": NanPrior, "empo": MODES[mode]})
    with pytest.raises(WorldProtocolError, match=r"world 'tiny': human prior\(\(4, 2\), 1, .*not finite"):
        _step_until_error(env)


@pytest.mark.parametrize("mode", MODES)
def test_nan_goal_encoding_is_rejected(mode):
    env = EmpoEnv({"world": FaultyWorld("goal_encoding_nan"), "prior": "uniform",
                   "empo": MODES[mode]})
    with pytest.raises(WorldProtocolError, match=r"encode_goal\(ReachCell\(cell=0\)\) contains non-finite"):
        _step_until_error(env)


def _train_bad_world(fault="probs_sum", **runners):
    cfg = small_config().environment(GENERIC, env_config={"world": FaultyWorld(fault),
                                                          "prior": "uniform"})
    algo = cfg.env_runners(**runners).build_algo() if runners else cfg.build_algo()
    try:
        with pytest.raises(Exception) as err:
            for _ in range(3):
                algo.train()
    finally:
        algo.stop()
    return err.value


def _chain(err):
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


def test_bad_world_stops_train_and_the_traceback_names_the_problem(ray_session):
    """Through a real ``algo.train()`` (local EnvRunner): training stops at the first bad
    state, and the world's error -- world, state, problem -- is in the exception chain (RLlib
    wraps it; see the next test)."""
    err = _train_bad_world()
    causes = [e for e in _chain(err) if isinstance(e, WorldProtocolError)]
    assert causes, f"no WorldProtocolError in the chain of {err!r}"
    assert re.search(r"world 'faulty_probs_sum': transition probabilities at state \(3, \d\).*sum to 0\.9",
                     str(causes[0]))


def test_bad_world_error_message_reaches_the_caller(ray_session):
    err = _train_bad_world()
    assert isinstance(err, WorldProtocolError)
    assert "transition probabilities at state (3, " in str(err) and "sum to 0.9" in str(err)


def test_a_plain_error_in_the_world_reaches_train_with_world_state_joint_action_and_error(ray_session):
    """A KeyError in the world's own code, on the local EnvRunner: RLlib used to raise an
    empty ``RuntimeError`` with the real error only as ``__cause__``."""
    err = _train_bad_world("raises")
    assert isinstance(err, WorldProtocolError) and isinstance(err.__cause__, KeyError)
    assert re.fullmatch(r"world 'faulty_raises': transition_probabilities\(\(3, \d\), \[\d, \d\]\) "
                        r"raised KeyError: \(\d, \d\)", str(err)), str(err)


@pytest.mark.parametrize("mode", ["sum", "sampled_humans"])
def test_states_that_never_compare_equal_are_blamed_not_max_successors(mode):
    """Successors with a NaN inside look like ever new states, so the table overflows
    max_successors; the error says why instead of blaming max_successors."""
    env = EmpoEnv({"world": FaultyWorld("nan_successors"), "prior": "uniform", "empo": MODES[mode]})
    with pytest.raises(WorldProtocolError, match=r"state \(2, \d, nan\) is not equal to a copy of "
                                                 r"itself"):
        _step_until_error(env)


def test_a_world_error_in_a_goal_names_the_goal_and_state():
    class Goal:
        cell = 0

        def is_achieved(self, state):
            return 1 / (state[0] - 3) > 0            # ZeroDivisionError at steps_left == 3

        def __hash__(self):
            return 0

        def __eq__(self, other):
            return isinstance(other, Goal)

        def __repr__(self):
            return "Goal()"

    world = Tweaked("goal_bug", possible_goals=lambda s, h: [(Goal(), 1.0)])
    env = EmpoEnv({"world": world, "prior": "uniform"})
    with pytest.raises(WorldProtocolError, match=r"world 'goal_bug': goal Goal\(\)\.is_achieved\(\(3, "
                                                 r"\d\)\) raised ZeroDivisionError: division by zero"):
        _step_until_error(env)


# ============================================================ 3. numerical safety
finite_q = st.floats(min_value=-1e8, max_value=0.0, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(q=st.lists(finite_q, min_size=1, max_size=8),
       beta=st.one_of(st.just(0.0), st.just(1e6), st.floats(0.0, 1e6, allow_nan=False)))
def test_power_law_is_finite_normalised_and_monotone(q, beta):
    qt = torch.tensor([q], dtype=torch.float32)
    pi = eq.power_law_policy(qt, beta)[0]
    assert torch.isfinite(pi).all() and (pi >= 0).all()
    assert abs(pi.sum().item() - 1.0) < 1e-5
    neg = [max(-x, eq.DEFAULT_NEG_Q_R_FLOOR) for x in qt[0].tolist()]
    for i, j in itertools.permutations(range(len(q)), 2):
        if neg[i] < neg[j]:           # better (less negative) Q: never less likely
            assert pi[i] >= pi[j]
        elif neg[i] == neg[j]:        # exact ties: exactly equal
            assert pi[i] == pi[j]


def test_power_law_at_float32_resolution_and_mixed_magnitudes():
    base = torch.tensor(-0.5, dtype=torch.float32)
    ulp = torch.nextafter(base, torch.tensor(0.0)) - base
    q = torch.stack([base, base + ulp, base - ulp, base]).unsqueeze(0)
    q = torch.cat([q, torch.tensor([[-1e-3, -1e-3 * (1 + 1e-6), -1e8, -1e-12]])])
    for beta in (1.0, 1e3, 1e6):
        pi = eq.power_law_policy(q, beta)
        assert torch.isfinite(pi).all()
        assert torch.allclose(pi.sum(-1), torch.ones(2), atol=1e-5)
        assert pi[0, 0] == pi[0, 3]


def test_power_law_is_finite_up_to_the_largest_accepted_beta():
    """validate() caps beta_r at MAX_BETA_R = 1e30, where beta_r * log(-Q_r) is still finite
    in float32 for any float32 Q_r (|log(-Q_r)| < 89)."""
    EmpoConfig().training(beta_r=MAX_BETA_R).validate()
    with pytest.raises(ValueError, match=r"beta_r must be <= 1e\+30 .*got 1e\+31"):
        EmpoConfig().training(beta_r=1e31).validate()
    fmax = torch.finfo(torch.float32).max
    q = torch.tensor([[-1e-3, -1.0, -1e8, -fmax], [-0.5, -0.25, -0.75, -fmax], [-fmax] * 4])
    pi = eq.power_law_policy(q, MAX_BETA_R)
    assert torch.isfinite(pi).all()
    assert torch.allclose(pi.sum(-1), torch.ones(3))
    assert torch.equal(pi.argmax(-1)[:2], torch.tensor([0, 1]))


@pytest.mark.parametrize("beta", [1e38, 3e38])
def test_power_law_extreme_beta_is_finite(beta):
    q = torch.tensor([[-1e-3, -1.0, -1e30], [-0.5, -0.25, -0.75]])
    pi = eq.power_law_policy(q, beta)
    assert torch.isfinite(pi).all()
    assert torch.equal(pi.argmax(-1), torch.tensor([0, 1]))


@pytest.mark.parametrize("space", sorted(MAX_LOG10_U_R))
def test_u_r_stays_finite_at_the_largest_accepted_exponents(space):
    """Exactly at validate()'s bound, U_r at the X_h floor, a horizon of 100 such values, and
    the loss of such a target are all finite in float32."""
    floor = 1e-3
    xi = MAX_LOG10_U_R[space] / 3.0        # xi * eta * log10(1 / floor) == the bound, eta = 1
    cfg = EmpoConfig().training(xi=xi, eta=1.0, x_h_floor=floor, value_loss=space)
    cfg.validate()
    x = torch.tensor([[0.0, floor], [floor, floor], [1.0, 0.0]], dtype=torch.float32)
    u = eq.u_r_from_x_h(x, xi, 1.0, floor)
    assert torch.isfinite(u).all() and (u <= -1).all()
    v = u * 100                             # V_r accumulates U_r over a horizon
    assert torch.isfinite(v).all()
    loss = value_loss("v_r", torch.full_like(v, -1.0), v, None, space)
    assert torch.isfinite(loss)
    # ... and one step beyond the bound is rejected
    with pytest.raises(ValueError, match="xi \\* eta"):
        EmpoConfig().training(xi=xi * 1.01, eta=1.0, x_h_floor=floor, value_loss=space).validate()


def _corrupt_kernels(algo, restore=None):
    """NaN transition probabilities in every stored successor table (the targets of q_r and
    v_h_e read them, x_h's does not); returns the clean ones, which ``restore`` puts back."""
    kernel_p = algo.replay.tables.cols["kernel_p"]
    if restore is not None:
        kernel_p[...] = restore
        return restore
    good = kernel_p.copy()
    kernel_p[kernel_p > 0] = np.nan
    return good


def _learner_state(algo, nets=None):
    """Weights and Adam moments of the local Learner (of the networks ``nets`` only)."""
    learner = algo.learner_group._learner
    module = learner.module[DEFAULT_MODULE_ID]
    mine = (lambda k: nets is None or k.split(".")[0].removeprefix("target_")
            .removeprefix("average_") in nets)
    weights = {k: v.detach().clone() for k, v in module.state_dict().items() if mine(k)}
    names = nets or module.unwrapped().network_names
    params = [p for n in names for p in module.unwrapped().net(n).parameters()]
    adam = [t.clone() for opt in learner._named_optimizers.values() for p in params
            for t in opt.state.get(p, {}).values() if torch.is_tensor(t)]
    return weights, adam


@pytest.mark.parametrize("on_nonfinite", ["raise", "skip"])
def test_corrupt_replay_data_never_reaches_the_weights(ray_session, on_nonfinite):
    """End to end: NaN successor encodings in the replay buffer (a corrupt world encoding,
    bit rot ...) make the losses of q_r and v_h_e non-finite (their targets read the
    successors); 'raise' stops with FloatingPointError, 'skip' skips those networks' updates
    and counts them, and in both cases their weights, targets and Adam moments stay
    bit-identical and every weight stays finite. With 'skip', x_h (whose target reads only
    the state itself) goes on learning."""
    algo = small_config(on_nonfinite=on_nonfinite, warmup_v_h_e_steps=0, warmup_x_h_steps=0,
                        warmup_q_r_steps=0, beta_r_rampup_steps=0).build_algo()
    frozen = ("q_r", "v_h_e")
    try:
        algo.train()
        _corrupt_kernels(algo)
        before, adam_before = _learner_state(algo, frozen)
        assert adam_before                  # they have learned: there are moments to compare
        x_h_before, _ = _learner_state(algo, ("x_h",))
        if on_nonfinite == "raise":
            with pytest.raises(FloatingPointError, match="non-finite loss"):
                algo.train()
        else:
            t0 = algo._empo["num_updates"]
            result = algo.train()
            assert result["Warmup"]["num_updates"] == t0 + algo.config.updates_per_iteration
            assert result["learners"][DEFAULT_MODULE_ID]["num_nonfinite_skips"] == \
                algo.config.updates_per_iteration
            loss = result["Loss"]                  # the skipped networks report their NaN
            assert np.isnan(loss["q_r"]) and np.isnan(loss["v_h_e"]) and np.isfinite(loss["x_h"])
            x_h_after, _ = _learner_state(algo, ("x_h",))
            assert not torch.equal(x_h_before["x_h.0.weight"], x_h_after["x_h.0.weight"])
        after, adam_after = _learner_state(algo, frozen)
        for k in before:
            assert torch.equal(before[k], after[k]), k
        assert all(torch.equal(a, b) for a, b in zip(adam_before, adam_after))
        everything, _ = _learner_state(algo)
        assert all(torch.isfinite(v).all() for v in everything.values())
    finally:
        algo.stop()


def _module(algo):
    return algo.learner_group._learner.module[DEFAULT_MODULE_ID].unwrapped()


def _poison(algo, name: str, target: bool = False, average: bool = False) -> None:
    with torch.no_grad():
        next(_module(algo).net(name, target, average).parameters()).fill_(float("nan"))


def _net_weights(module_or_state, prefix: str) -> dict:
    sd = module_or_state if isinstance(module_or_state, dict) else module_or_state.state_dict()
    return {k[len(prefix):]: v.detach().clone() for k, v in sd.items() if k.startswith(prefix)}


def _acting(algo) -> dict:
    """The q_r the runners should act with, keyed as :func:`_runner_q_r`."""
    return {k.removeprefix("q_r."): v for k, v in acting_q_r(algo).items()}


def _runner_q_r(algo) -> dict:
    return _net_weights(algo.env_runner_group.local_env_runner.module, "q_r.")


NO_WARMUP = dict(warmup_v_h_e_steps=0, warmup_x_h_steps=0, warmup_q_r_steps=0,
                 beta_r_rampup_steps=0, q_r_target_update_interval=1000,
                 v_h_e_target_update_interval=1000)


def test_nan_in_q_r_is_restored_from_its_target_and_never_reaches_the_runners(ray_session):
    """The probe's case: a NaN in q_r's weights used to make every later update skip (the
    schedule advancing) while the NaN q_r went to the EnvRunners, which then always chose
    action 0. Now q_r is put back to its target copy and training goes on."""
    algo = small_config(on_nonfinite="skip", **NO_WARMUP).build_algo()
    try:
        algo.train()
        target = _net_weights(_module(algo), "target_q_r.")
        _poison(algo, "q_r")
        result = algo.train()
        learner_q_r = _net_weights(_module(algo), "q_r.")
        assert all(torch.isfinite(v).all() for v in learner_q_r.values())
        assert not all(torch.equal(learner_q_r[k], target[k]) for k in target)   # learned on
        assert result["learners"][DEFAULT_MODULE_ID]["num_nonfinite_restores"] == 1
        runner, acting = _runner_q_r(algo), _acting(algo)      # the running average's
        assert all(torch.isfinite(v).all() for v in acting.values())
        assert all(torch.equal(runner[k], acting[k]) for k in acting)
        obs = torch.zeros(5, algo.env_runner_group.local_env_runner.module.observation_space.shape[0])
        pi = eq.power_law_policy(algo.env_runner_group.local_env_runner.module.q_r_values(obs), 10.0)
        assert torch.isfinite(pi).all()
    finally:
        algo.stop()


@pytest.mark.parametrize("poisoned", ["weights", "average", "both"])
@pytest.mark.parametrize("on_nonfinite", ["raise", "skip"])
def test_non_finite_weights_are_never_pushed_to_the_runners(ray_session, on_nonfinite, poisoned):
    """While learning waits for rows, no learner update runs, but the weights are pushed
    every iteration: they are checked on the way. The runners act with q_r's running average
    (ema_decay); a NaN in q_r reaches it at the next update, a NaN in the average reaches the
    runners at once: it is checked on the way. 'skip' repairs q_r from its target copy and
    restarts the average from q_r; 'raise' raises and the runners keep their finite q_r."""
    algo = small_config(on_nonfinite=on_nonfinite, learning_starts=1000, **NO_WARMUP).build_algo()
    try:
        algo.train()
        assert algo._empo["num_updates"] == 0
        before = _runner_q_r(algo)
        if poisoned in ("weights", "both"):
            _poison(algo, "q_r")
        if poisoned in ("average", "both"):
            _poison(algo, "q_r", average=True)
        if poisoned == "weights":          # not what the runners act with: nothing to push
            algo.train()                     # (the next learner update repairs q_r)
            assert all(torch.equal(before[k], v) for k, v in _runner_q_r(algo).items())
        elif on_nonfinite == "raise":
            what = {"average": r"running averages of \['q_r'\] became non-finite",
                    "both": r"weights of \['q_r'\] became non-finite.* and the running "
                            r"averages of \['q_r'\]"}[poisoned]
            with pytest.raises(FloatingPointError, match=what):
                algo.train()
            after = _runner_q_r(algo)
            assert all(torch.equal(before[k], after[k]) for k in before)
        else:
            algo.train()
            after, acting = _runner_q_r(algo), _acting(algo)
            learner = _net_weights(_module(algo), "q_r.")
            assert all(torch.isfinite(v).all() for v in [*after.values(), *learner.values()])
            assert all(torch.equal(after[k], acting[k]) for k in acting)
    finally:
        algo.stop()


def test_nan_in_v_h_e_does_not_freeze_q_r(ray_session):
    """A NaN in V_h^e's weights used to make the whole update non-finite, so Q_r froze too."""
    algo = small_config(on_nonfinite="skip", **NO_WARMUP).build_algo()
    try:
        algo.train()
        q_r = _net_weights(_module(algo), "q_r.")
        _poison(algo, "v_h_e")
        algo.train()
        module = _module(algo)
        assert all(torch.isfinite(v).all() for v in _net_weights(module, "v_h_e.").values())
        assert not all(torch.equal(q_r[k], v) for k, v in _net_weights(module, "q_r.").items())
    finally:
        algo.stop()


def test_a_step_that_overflows_the_weights_is_undone_from_the_target(ray_session):
    """Finite loss and gradients, but the optimizer step leaves inf in q_r (an overflow):
    'skip' restores q_r from its target copy after every such step and counts it."""
    algo = small_config(on_nonfinite="skip", **NO_WARMUP).build_algo()
    try:
        algo.train()
        opt = algo.learner_group._learner.get_optimizer(DEFAULT_MODULE_ID, OPTIMIZER)
        real = opt.step
        q_r_group = next(g for g in opt.param_groups if g["network"] == "q_r")

        def overflowing_step(*args, **kwargs):
            out = real(*args, **kwargs)
            with torch.no_grad():
                q_r_group["params"][0].mul_(float("inf"))
            return out

        opt.step = overflowing_step
        result = algo.train()
        module = _module(algo)
        q_r, target = _net_weights(module, "q_r."), _net_weights(module, "target_q_r.")
        assert all(torch.equal(q_r[k], target[k]) for k in q_r)           # the last restore
        n = algo.config.updates_per_iteration
        assert result["learners"][DEFAULT_MODULE_ID]["num_nonfinite_restores"] == n
        assert result["learners"][DEFAULT_MODULE_ID]["num_nonfinite_skips"] == n
    finally:
        algo.stop()


def test_a_non_finite_target_too_stops_training(ray_session):
    algo = small_config(on_nonfinite="skip", **NO_WARMUP).build_algo()
    try:
        algo.train()
        _poison(algo, "q_r")
        _poison(algo, "q_r", target=True)
        with pytest.raises(FloatingPointError, match=r"the weights of q_r and of its target copy are "
                                                     r"both non-finite"):
            algo.train()
    finally:
        algo.stop()


def test_training_stops_after_max_nonfinite_skips_updates_in_a_row(ray_session):
    algo = small_config(on_nonfinite="skip", max_nonfinite_skips=3, **NO_WARMUP).build_algo()
    try:
        algo.train()
        _corrupt_kernels(algo)
        with pytest.raises(FloatingPointError, match=r"3 learner updates in a row had non-finite "
                                                     r"values \(on_nonfinite='skip', "
                                                     r"max_nonfinite_skips=3\); the last: non-finite loss"):
            algo.train()
    finally:
        algo.stop()


def test_the_skip_count_restarts_after_a_clean_update(ray_session):
    """Two bad iterations with a clean one between them stay under max_nonfinite_skips=6."""
    algo = small_config(on_nonfinite="skip", max_nonfinite_skips=6, **NO_WARMUP).build_algo()
    try:
        algo.train()
        for _ in range(2):
            good = _corrupt_kernels(algo)
            algo.train()                                    # 4 skips in a row
            _corrupt_kernels(algo, good)                    # clean tables again
            algo.train()                                    # clean: the count restarts
    finally:
        algo.stop()


# ======================================================= 4. memory of one iteration
def test_learner_calls_are_chunked_so_memory_does_not_grow_with_updates_per_iteration(
        ray_session, monkeypatch):
    """updates_per_iteration = 10**6 used to sample every update's minibatch in one learner
    call (memory ~ updates x batch x row size). Calls now hold at most LEARNER_CALL_BYTES of
    rows; here a bound of 5 updates' worth splits an iteration of 40 updates into 8 calls."""
    from rllib_empo.algorithm import resources
    algo = small_config(updates_per_iteration=40, warmup_v_h_e_steps=1000).build_algo()
    try:
        algo.train()
        row = algo.replay.rows.bytes_per_row
        batch = algo.config.total_train_batch_size
        monkeypatch.setattr(resources, "LEARNER_CALL_BYTES", 5 * batch * row)
        calls, real = [], algo.learner_group.update

        def update(*, batch, **kwargs):
            calls.append(len(batch[DEFAULT_MODULE_ID]))
            return real(batch=batch, **kwargs)

        algo.learner_group.update = update
        t0 = algo.num_updates
        algo.train()
        assert algo.num_updates - t0 == 40
        assert calls == [5 * batch] * 8
        assert max(calls) * row <= resources.LEARNER_CALL_BYTES
    finally:
        algo.stop()


# ============================================================ README: Troubleshooting
def test_troubleshooting_section_comes_from_real_errors():
    from tools import troubleshooting as ts
    text = ts.render()
    assert text == ts.render()                     # deterministic: no addresses, no timings
    assert " at 0x" not in text and ts.markdown() == f"{ts.HEADING}\n\n{text}"
    for case in ts.CASES:
        assert f"### {case.title}\n\n```text\n{ts.capture(case)}\n```" in text
    # the messages are those of the checks tested above
    assert "env_config['horizn'] is not accepted by world 'rock_gate'" in text
    assert "transition probabilities at state (2, 2), joint action [0, 0] sum to 0.9" in text


def test_readme_troubleshooting_section_is_the_generated_one():
    """README.md holds exactly ``render()`` between its troubleshooting markers (as
    ``tools.gen_docs`` writes it)."""
    from pathlib import Path

    from tools import troubleshooting as ts
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    m = re.search(r"<!-- BEGIN troubleshooting -->\n(.*?)<!-- END troubleshooting -->", text, re.S)
    assert ts.HEADING in text and m is not None, "README.md lacks the troubleshooting section"
    assert m.group(1) == ts.render(), ("README.md's Troubleshooting section differs from "
                                       "tools.troubleshooting.render(): run "
                                       "`python -m tools.gen_docs`")
