"""Ray Tune: the registered name "EMPO" (importing rllib_empo registers it), 2 trials x 2
iterations, Exact/* metrics as the Tune metric, EMPO's TensorBoard tags in each trial
directory, checkpoints that restore. (``tune.Tuner(Empo, ...)``, by class, runs in
examples/tune_sweep.py, which test_examples.py runs.)"""
import os

from conftest import small_config

from rllib_empo import Empo
from rllib_empo.algorithm.callbacks import TUNE_SUBDIR, read_scalars


def test_tuner_by_name_two_trials(ray_session, tmp_path):
    from ray import tune
    from ray.tune.registry import TRAINABLE_CLASS, _global_registry
    assert _global_registry.get(TRAINABLE_CLASS, "EMPO") is Empo

    param_space = small_config(exact_eval_interval=1).training(
        lr_q_r=tune.grid_search([1e-3, 3e-3]))
    results = tune.Tuner(
        "EMPO", param_space=param_space,
        tune_config=tune.TuneConfig(metric="Exact/tv_pi_r_s0", mode="min"),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="exp", verbose=0,
                                  stop={"training_iteration": 2},
                                  checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True)),
    ).fit()
    assert not results.errors
    assert len(results) == 2
    assert sorted(r.config["lr_q_r"] for r in results) == [1e-3, 3e-3]
    for r in results:
        assert r.metrics["training_iteration"] == 2
        assert r.metrics["Warmup"]["num_updates"] == 8
        assert 0.0 <= r.metrics["Exact"]["tv_pi_r_s0"] <= 1.0
        # EMPO's own tags, over learner updates, in <trial dir>/tensorboard
        scalars = read_scalars(os.path.join(r.path, TUNE_SUBDIR))
        assert [(s, v) for s, v in scalars["Warmup/stage"]] == [(4, 1.0), (8, 3.0)]
        assert [v for _, v in scalars["Warmup/stage_transition"]] == [1.0, 1.0]
        for tag in ("Warmup/effective_beta_r", "Warmup/is_warmup", "Warmup/active_networks_mask",
                    "LearningRate/q_r", "Loss/v_h_e", "Loss/x_h", "Exact/tv_pi_r_s0",
                    "Progress/num_env_steps"):
            assert tag in scalars, tag

    best = results.get_best_result()
    algo = Empo.from_checkpoint(best.checkpoint.path)
    assert algo.iteration == 2
    assert algo._empo["num_updates"] == 8
    assert algo.config.lr_q_r == best.config["lr_q_r"]
    algo.stop()
