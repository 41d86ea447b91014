"""Tests of EmpoConfig: defaults, training(), validate(), helpers, field table."""

import inspect
import itertools
import re

import numpy as np
import pytest

from rllib_empo.algorithm.empo import EmpoConfig
from rllib_empo.algorithm.fields import FIELD_NAMES, FIELDS, config_fields_table
from rllib_empo.theory.schedule import NETWORKS, WarmupSchedule

# The defaults, written out independently of FIELDS: the spec's (warm-up durations, beta_r,
# the decay) and those chosen by measurement (docs/DESIGN.md, section 4: lr_q_r,
# q_r_advantage_weight, hidden_sizes, ...).
SPEC_DEFAULTS = dict(
    warmup_v_h_e_steps=1000, warmup_x_h_steps=1000, warmup_u_r_steps=1000, warmup_q_r_steps=1000,
    warmup_v_r_steps=1000, beta_r_rampup_steps=2000, beta_r=10.0,
    use_sqrt_lr_decay=True, lr_constant_fraction=0.0, constant_lr_then_1_over_t=False,
    lr_q_r=3e-3, lr_v_h_e=1e-3, lr_x_h=1e-3, lr_u_r=1e-3, lr_v_r=1e-3,
    x_h_use_network=True, u_r_use_network=False, v_r_use_network=False,
    q_r_target_update_interval=100, v_r_target_update_interval=100, v_h_e_target_update_interval=100,
    x_h_target_update_interval=100, u_r_target_update_interval=100,
    use_model_based_targets=True, num_training_steps=100_000,
    gamma_h=0.99, gamma_r=0.99, zeta=2.0, xi=1.0, eta=1.1, x_h_floor=1e-3, neg_q_r_floor=1e-3,
    q_r_advantage_weight=30.0, value_loss="log", exploring_starts=0.9, exploring_starts_frontier=False, replay_capacity=100_000, updates_per_iteration=32, learning_starts=None,
    max_goals_per_human=16, sum_human_actions=True, epsilon=0.05, verbose=False, tensorboard_dir=None,
    checkpoint_replay_buffer=False, exact_eval_interval=0, exact_max_states=1_000_000, on_nonfinite="raise", torch_num_threads=None,
    ema_decay=0.999, target_copy="interval_mean", residual_rows=256, replay_sampling="mixed",
    max_nonfinite_skips=100, max_env_runner_failures=3,
    hidden_sizes={"q_r": (512, 512), "v_h_e": (256, 256), "x_h": (256, 256), "u_r": (256, 256),
                  "v_r": (256, 256)},
)

# A valid non-default value for every field.
OTHER_VALUES = dict(
    warmup_v_h_e_steps=10, warmup_x_h_steps=0, warmup_u_r_steps=7, warmup_q_r_steps=3, warmup_v_r_steps=2,
    beta_r_rampup_steps=0, beta_r=0.0, use_sqrt_lr_decay=False, lr_constant_fraction=0.8,
    constant_lr_then_1_over_t=True, lr_q_r=0.5, lr_v_h_e=0.25, lr_x_h=2e-4, lr_u_r=3e-4, lr_v_r=4e-4,
    x_h_use_network=False, u_r_use_network=True, v_r_use_network=True,
    q_r_target_update_interval=1, v_r_target_update_interval=2, v_h_e_target_update_interval=3,
    x_h_target_update_interval=4, u_r_target_update_interval=5, use_model_based_targets=False,
    num_training_steps=1, gamma_h=1.0, gamma_r=0.5, zeta=1.0, xi=3.0, eta=1.0, x_h_floor=0.5,
    neg_q_r_floor=0.01, q_r_advantage_weight=0.0, value_loss="mse", exploring_starts=0.5, exploring_starts_frontier=True,
    replay_capacity=64, updates_per_iteration=1, learning_starts=64, max_goals_per_human=1,
    sum_human_actions=False, epsilon=[(0, 1.0), (100, 0.0)], verbose=True, tensorboard_dir="/tmp/tb",
    checkpoint_replay_buffer=True, exact_eval_interval=5, exact_max_states=10, on_nonfinite="skip", torch_num_threads=2,
    ema_decay=0.5, target_copy="average", residual_rows=8, replay_sampling="transitions",
    max_nonfinite_skips=1, max_env_runner_failures=7, hidden_sizes=[8],
)

BAD_VALUES = [
    ("warmup_v_h_e_steps", -1), ("warmup_x_h_steps", 10.0), ("warmup_q_r_steps", True),
    ("beta_r_rampup_steps", "5"), ("warmup_v_r_steps", None), ("warmup_u_r_steps", 2.5),
    ("beta_r", -1.0), ("beta_r", float("inf")), ("beta_r", float("nan")), ("beta_r", "10"),
    ("lr_constant_fraction", -0.1), ("lr_constant_fraction", 1.5),
    ("use_sqrt_lr_decay", 1), ("constant_lr_then_1_over_t", "no"), ("x_h_use_network", None),
    ("u_r_use_network", 0), ("v_r_use_network", "True"), ("use_model_based_targets", 1.0), ("target_copy", True), ("target_copy", "mean"),
    *[(f"lr_{n}", v) for n in NETWORKS for v in (0.0, -1e-3)],
    *[(f"{n}_target_update_interval", v) for n in NETWORKS for v in (0, -5, 1.5)],
    ("num_training_steps", 0), ("gamma_h", 0.0), ("gamma_h", 1.01), ("gamma_r", -0.5), ("gamma_r", 2.0),
    ("zeta", 0.99), ("xi", 0.0), ("eta", -1.0), ("x_h_floor", 0.0), ("x_h_floor", 1.0),
    ("neg_q_r_floor", 0.0), ("neg_q_r_floor", 1.0), ("value_loss", "huber"),
    ("q_r_advantage_weight", -1.0), ("q_r_advantage_weight", float("nan")),
    ("exploring_starts", -0.1), ("exploring_starts", 1.5), ("exploring_starts_frontier", 1),
    ("replay_capacity", 0), ("updates_per_iteration", 0), ("learning_starts", 0), ("learning_starts", 1.5),
    ("max_goals_per_human", 0), ("sum_human_actions", None),
    ("epsilon", -0.1), ("epsilon", 1.1), ("epsilon", []), ("epsilon", [(0, 1.0), (-1, 0.5)]),
    ("epsilon", [(10, 1.0), (5, 0.5)]), ("epsilon", [(0, 2.0)]), ("epsilon", [(0.5, 0.1)]),
    ("epsilon", [(0, 0.1, 3)]), ("epsilon", "0.1"), ("verbose", "yes"), ("tensorboard_dir", 3),
    ("checkpoint_replay_buffer", None), ("exact_eval_interval", -1), ("exact_max_states", 0), ("torch_num_threads", 0), ("torch_num_threads", 1.5),
    ("ema_decay", 1.0), ("ema_decay", -0.1), ("residual_rows", -1), ("replay_sampling", "rows"), ("on_nonfinite", "ignore"),
    ("max_nonfinite_skips", 0), ("max_nonfinite_skips", 2.0), ("max_env_runner_failures", 0),
    ("max_env_runner_failures", None),
    ("hidden_sizes", ()), ("hidden_sizes", [64, 0]), ("hidden_sizes", 64), ("hidden_sizes", [64.0]),
]


def test_defaults_equal_the_spec():
    cfg = EmpoConfig()
    for name, value in SPEC_DEFAULTS.items():
        assert getattr(cfg, name) == value, name
    assert set(SPEC_DEFAULTS) == set(FIELD_NAMES)
    assert (cfg.train_batch_size_per_learner, cfg.grad_clip, cfg.grad_clip_by,
            cfg.num_envs_per_env_runner, cfg.rollout_fragment_length) == \
        (256, 10.0, "global_norm", 4, 50)
    cfg.validate()


def test_training_sets_every_field_and_keeps_rllib_args():
    assert set(OTHER_VALUES) == set(FIELD_NAMES)
    cfg = EmpoConfig()
    assert cfg.training(**OTHER_VALUES, grad_clip=5.0, train_batch_size_per_learner=32) is cfg
    for name, value in OTHER_VALUES.items():
        assert getattr(cfg, name) == value, name
    assert (cfg.grad_clip, cfg.train_batch_size_per_learner) == (5.0, 32)
    cfg.env_runners(num_envs_per_env_runner=2, rollout_fragment_length=32)   # 64 rows fit capacity 64
    cfg.validate()
    cfg.training()  # nothing provided: nothing changes
    assert cfg.beta_r == 0.0
    with pytest.raises(TypeError):
        cfg.training(not_a_field=1)


def test_training_signature_and_docstring_list_every_field():
    params = inspect.signature(EmpoConfig.training).parameters
    doc = EmpoConfig.training.__doc__
    for name in FIELD_NAMES:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert f"{name}:" in doc


@pytest.mark.parametrize("field, value", BAD_VALUES, ids=lambda x: repr(x)[:20])
def test_validate_rejects_bad_values(field, value):
    cfg = EmpoConfig()
    setattr(cfg, field, value)
    with pytest.raises(ValueError, match=field) as err:
        cfg.validate()
    assert "must be" in str(err.value)


def test_validate_message_format():
    cfg = EmpoConfig().training(beta_r=-1.0)
    with pytest.raises(ValueError, match=r"^beta_r must be a finite float >= 0, got -1\.0$"):
        cfg.validate()


def test_cross_field_checks():
    cfg = EmpoConfig().training(replay_capacity=255)  # batch is 256
    with pytest.raises(ValueError, match="replay_capacity.*train_batch_size_per_learner"):
        cfg.validate()
    cfg = EmpoConfig().training(replay_capacity=300, learning_starts=301)
    with pytest.raises(ValueError, match="learning_starts.*replay_capacity"):
        cfg.validate()
    EmpoConfig().training(replay_capacity=256, learning_starts=256).validate()
    cfg = EmpoConfig().training(ema_decay=0.0, target_copy="average")
    with pytest.raises(ValueError, match="target_copy='average'.*ema_decay in \\(0, 1\\)"):
        cfg.validate()
    EmpoConfig().training(ema_decay=0.5, target_copy="average").validate()
    EmpoConfig().training(ema_decay=0.0, target_copy="interval_mean").validate()


def test_accepts_edge_and_numpy_values():
    cfg = EmpoConfig().training(
        warmup_v_h_e_steps=np.int64(0), beta_r=5, gamma_h=1.0, lr_constant_fraction=1.0,
        epsilon=[(0, 1), (np.int64(10), 0.0), (10, 0.5)], x_h_use_network=np.bool_(False), hidden_sizes=(1,),
    )
    cfg.validate()


def test_validate_does_not_mutate_and_works_frozen():
    cfg = EmpoConfig().training(epsilon=[[0, 1.0], [10, 0.1]], hidden_sizes=[32, 32])
    before = {n: getattr(cfg, n) for n in FIELD_NAMES}
    cfg.validate()
    assert {n: getattr(cfg, n) for n in FIELD_NAMES} == before
    frozen = cfg.copy(copy_frozen=True)
    frozen.validate()
    assert frozen.get_warmup_stage(2500) == 3


@pytest.mark.parametrize("flags", itertools.product((False, True), repeat=3))
def test_every_network_combination_validates(flags):
    x, u, v = flags
    cfg = EmpoConfig().training(x_h_use_network=x, u_r_use_network=u, v_r_use_network=v)
    cfg.validate()
    expected = {"v_h_e", "q_r"} | {n for n, on in zip(("x_h", "u_r", "v_r"), flags) if on}
    assert cfg.get_active_networks(10**6) == expected


def test_helpers_agree_with_the_schedule():
    cfg = EmpoConfig().training(u_r_use_network=True, lr_constant_fraction=0.1, num_training_steps=60_000)
    s = cfg.schedule
    assert s == WarmupSchedule.from_config(cfg) and s.ends == (1000, 2000, 3000, 4000, 4000, 6000)
    for t in [0, 999, 1000, 2999, 3000, 3999, 4000, 5000, 5999, 6000, 6001, 12_000, 10**6]:
        assert cfg.is_in_warmup(t) == s.is_in_warmup(t)
        assert cfg.is_in_rampup(t) == s.is_in_rampup(t)
        assert cfg.is_fully_trained(t) == s.is_fully_trained(t)
        assert cfg.get_warmup_stage(t) == s.stage(t)
        assert cfg.get_warmup_stage_name(t) == s.stage_name(s.stage(t))
        assert cfg.get_effective_beta_r(t) == s.effective_beta_r(t)
        active = cfg.get_active_networks(t)
        assert isinstance(active, set) and active == s.active_networks(t)
        for net in s.existing_networks:
            assert cfg.get_learning_rate(net, t) == s.learning_rate(net, t)
            assert cfg.get_learning_rate(net, t, t) == s.learning_rate(net, t, t)
    assert cfg.get_stage_transition_steps() == s.stage_transitions()
    assert cfg.format_stages_table() == s.format_stages_table()
    assert cfg.get_warmup_stage_name(0) == "Stage 0: V_h^e only"
    with pytest.raises(ValueError, match="v_r"):
        cfg.get_learning_rate("v_r", 0)


def test_schedule_follows_config_edits():
    cfg = EmpoConfig()
    cfg.training(warmup_v_h_e_steps=5)
    assert cfg.get_warmup_stage(5) == 1
    cfg.lr_q_r = 0.5
    assert cfg.get_learning_rate("q_r", 0) == 0.5


def test_fields_table_lists_every_field_with_its_default():
    table = config_fields_table()
    lines = table.splitlines()
    assert len(lines) == 2 + len(FIELDS)
    for f in FIELDS:
        assert f"| `{f.name}` | `{f.default!r}` |" in table
        assert f.default == SPEC_DEFAULTS[f.name]


def test_survives_the_tune_dict_round_trip():
    cfg = EmpoConfig().training(beta_r=3.0, hidden_sizes=(16,), learning_starts=100)
    restored = EmpoConfig().update_from_dict(cfg.to_dict())
    for name in FIELD_NAMES:
        assert getattr(restored, name) == getattr(cfg, name), name
    restored.validate()
    assert EmpoConfig.from_dict(cfg.to_dict()).beta_r == 3.0


def test_pickles_and_restores_from_state():
    import pickle

    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    cfg = EmpoConfig().training(beta_r=2.0, epsilon=[(0, 1.0), (10, 0.1)])
    assert pickle.loads(pickle.dumps(cfg)).epsilon == [(0, 1.0), (10, 0.1)]
    restored = AlgorithmConfig.from_state(cfg.get_state())
    assert type(restored) is EmpoConfig and restored.beta_r == 2.0




# ------------------------------------------------ RLlib's own fields (issue 13)
# (field, bad value): each used to crash deep inside RLlib or the learner, or pass silently.
BAD_RLLIB_VALUES = [
    ("train_batch_size_per_learner", 0), ("train_batch_size_per_learner", -5),
    ("train_batch_size_per_learner", "16"), ("train_batch_size_per_learner", 16.0),
    ("grad_clip", "1.0"), ("grad_clip", 0.0), ("grad_clip", float("nan")),
    ("grad_clip_by", "l2"), ("seed", "0"), ("seed", -1), ("seed", 2**40), ("seed", 1.5),
    ("num_env_runners", -1), ("num_env_runners", "2"), ("num_envs_per_env_runner", 0),
    ("rollout_fragment_length", 0), ("rollout_fragment_length", "10"),
    ("num_cpus_per_env_runner", -1), ("num_learners", -1), ("sample_timeout_s", 0),
    ("restart_failed_env_runners", "yes"), ("max_num_env_runner_restarts", -1),
    ("delay_between_env_runner_restarts_s", -1.0),
]


@pytest.mark.parametrize("field, value", BAD_RLLIB_VALUES, ids=lambda x: repr(x)[:24])
def test_validate_rejects_bad_rllib_values_naming_the_field_and_the_range(field, value):
    cfg = EmpoConfig()
    setattr(cfg, field, value)
    with pytest.raises(ValueError, match=rf"^{field} must be .+, got {re.escape(repr(value))}$"):
        cfg.validate()


@pytest.mark.parametrize("kwargs, instead", [
    (dict(lr=1e-4), r"lr is not used by EMPO .* set lr_q_r, lr_v_h_e, lr_x_h"),
    (dict(lr=[[0, 1e-3], [100, 1e-4]]), r"lr is not used by EMPO"),
    (dict(gamma=0.9), r"gamma is not used by EMPO .* set gamma_r .* and gamma_h"),
    (dict(num_epochs=3), r"num_epochs is not used by EMPO .* updates_per_iteration"),
    (dict(minibatch_size=32), r"minibatch_size is not used by EMPO .* train_batch_size_per_learner"),
])
def test_rllib_fields_that_empo_ignores_are_an_error_naming_the_fields_to_use(kwargs, instead):
    cfg = EmpoConfig().training(**kwargs)
    with pytest.raises(ValueError, match=instead):
        cfg.validate()


def test_rllib_defaults_and_good_values_of_its_fields_validate():
    batch = EmpoConfig().train_batch_size_per_learner
    EmpoConfig().training(lr=0.001, gamma=0.99, num_epochs=1, minibatch_size=batch,
                          grad_clip=None, grad_clip_by="value").validate()
    (EmpoConfig().debugging(seed=0)
     .env_runners(rollout_fragment_length="auto", num_cpus_per_env_runner=0.5,
                  sample_timeout_s=None)).validate()
    EmpoConfig().debugging(seed=np.int64(2**31 - 1)).validate()
