"""The scalars ``Empo`` logs into every ``train()`` result, declared once.

:data:`METRICS` is the table the README's "Metrics" section is generated from (a test checks
it against a real result); :func:`log_iteration` and :func:`log_exact_fidelity` log them into
the algorithm's MetricsLogger at the end of each ``training_step``. ``<net>`` stands for each
existing network.
"""
from __future__ import annotations

METRICS = (
    ("Warmup/stage", "warm-up stage id 0-6 at the end of the iteration (skipped stages keep their ids)"),
    ("Warmup/stage_transition", "1.0 in an iteration in which the stage changed, else 0.0"),
    ("Warmup/effective_beta_r", "beta_r of the current step (0 in warm-up, ramped, then nominal)"),
    ("Warmup/is_warmup", "1.0 before the ramp starts (steps < E4)"),
    ("Warmup/is_rampup", "1.0 during the beta_r ramp"),
    ("Warmup/active_networks_mask", "bit i set when network i of (v_h_e, x_h, u_r, q_r, v_r) is trained"),
    ("Warmup/num_updates", "learner updates so far (the schedule's step)"),
    ("Warmup/num_buffer_clears", "replay-buffer clears so far"),
    ("Warmup/epsilon", "the robot's epsilon-exploration on the EnvRunners"),
    ("LearningRate/<net>", "learning rate of the last update"),
    ("Loss/<net>", "loss of the last update (iterations with an update, active networks)"),
    ("Prediction/<net>", "mean prediction of the last update's batch"),
    ("Target/<net>", "mean target of the last update's batch"),
    ("Buffer/size", "rows (transitions) in the replay memory"),
    ("Buffer/num_added", "rows ever added"),
    ("Buffer/states", "distinct states stored (visited states and their successors)"),
    ("Buffer/tables", "distinct successor tables stored"),
    ("Buffer/bytes", "bytes of the replay memory: rows, states, tables and goals"),
    ("Buffer/bytes_per_transition", "Buffer/bytes per row"),
    ("Residual/<net>", "mean |prediction - target| of the network on the residual rows "
                       "(|log(prediction / target)| for q_r, u_r, v_r, x_h): its distance from "
                       "its own fixed point, with no exact solution needed (residual_rows > 0)"),
    ("Residual/<net>_max", "the largest such residual on the residual rows"),
    ("Residual/policy_change", "mean TV on the residual rows between pi_r of the current q_r and "
                               "of the last target copy, at the nominal beta_r"),
    ("Runners/num_healthy", "remote EnvRunners in service (0 when the driver samples itself)"),
    ("Runners/num_lost", "remote EnvRunners lost for good (restart_failed_env_runners=False)"),
    ("Runners/num_restarts", "EnvRunner restarts so far (each restarted runner is reseeded)"),
    ("Runners/num_failures", "EnvRunner failures (a process that died while sampling) so far"),
    ("Exact/<figure>", "with exact_eval_interval > 0: compare_to_exact figures (tv_pi_r_s0, ...) "
                       "of the latest evaluation, made every exact_eval_interval iterations; "
                       "Exact/training_iteration says which (0 and NaN figures before the "
                       "first, so that every result has them)"),
)

_GROUPS = {"loss": "Loss", "prediction": "Prediction", "target": "Target"}


def log_iteration(metrics, schedule, counters: dict, replay, transition: bool,
                  update_stats: dict) -> None:
    """Log the Warmup/, LearningRate/, Buffer/ scalars of the current step and the
    ``update_stats`` (``loss_<net>`` ... of the iteration's last update; empty without one)."""
    t = counters["num_updates"]
    log = metrics.log_value
    for key, value in schedule.as_dict(t).items():
        log(("Warmup", key), value, reduce="item")
    log(("Warmup", "stage_transition"), float(transition), reduce="item")
    log(("Warmup", "num_updates"), t, reduce="item")
    log(("Warmup", "num_buffer_clears"), counters["num_buffer_clears"], reduce="item")
    log(("Warmup", "epsilon"), schedule.epsilon_at(t), reduce="item")
    for n in sorted(schedule.existing_networks):
        log(("LearningRate", n), schedule.learning_rate(n, max(t - 1, 0)), reduce="item")
    sizes = replay.sizes()
    log(("Buffer", "size"), sizes["rows"], reduce="item")
    log(("Buffer", "num_added"), replay.num_added, reduce="item")
    for key in ("states", "tables"):
        log(("Buffer", key), sizes[key], reduce="item")
    log(("Buffer", "bytes"), sizes["bytes_total"], reduce="item")
    log(("Buffer", "bytes_per_transition"), sizes["bytes_per_transition"], reduce="item")
    for key, value in update_stats.items():
        stat, net = key.split("_", 1)
        log((_GROUPS[stat], net), value, reduce="item")


def log_residuals(metrics, residuals) -> None:
    """The Residual/* scalars of this iteration (none while the memory is empty)."""
    for key, value in (residuals or {}).items():
        metrics.log_value(("Residual", key), value, reduce="item")


def log_exact_fidelity(metrics, figures) -> None:
    """Every result from the first evaluation on carries the latest one (a Tune metric must
    be in every result); checkpoints keep it with the counters."""
    for key, value in (figures or {}).items():
        metrics.log_value(("Exact", key), value, reduce="item")
