"""TensorBoard scalars of EmpoCallbacks (standalone; the Tune case is in test_tune.py):
exact tags, values that match the warm-up schedule, every stage transition and buffer clear
visible as TensorBoard shows the events (one point per step), no writer without a directory,
and purged steps after a restore."""
import math

import numpy as np
import pytest

from conftest import small_config
from rllib_empo.algorithm.callbacks import (EVENT_TAGS, EmpoCallbacks, IterationTimes,
                                            as_tensorboard_shows, read_scalars,
                                            scalars_from_result, tensorboard_step)

REQUIRED_TAGS = ("Warmup/stage", "Warmup/stage_transition", "Warmup/effective_beta_r",
                 "Warmup/is_warmup", "Warmup/active_networks_mask", "Buffer/size",
                 "Progress/num_env_steps")


def test_scalars_from_result_flattens_numbers_only():
    result = {"Warmup": {"stage": np.int64(3), "effective_beta_r": np.float32(0.5),
                         "note": "text", "nan": float("nan"), "none": None, "flag": True},
              "Loss": {"q_r": 0.25}, "LearningRate": {"q_r": 1e-3},
              "learners": {"default_policy": {"loss_q_r": 9.0}},
              "num_env_steps_sampled_lifetime": 120, "training_iteration": 6,
              "env_runners": {"num_episodes_lifetime": 12}}
    out = scalars_from_result(result)
    assert out == {"Warmup/stage": 3.0, "Warmup/effective_beta_r": 0.5, "Warmup/flag": 1.0,
                   "Loss/q_r": 0.25,
                   "LearningRate/q_r": 1e-3, "Progress/num_env_steps": 120.0,
                   "Progress/training_iteration": 6.0, "Progress/num_episodes": 12.0}
    assert tensorboard_step({"Warmup": {"num_updates": np.int64(40)}}) == 40
    assert tensorboard_step({"training_iteration": 7}) == 7


def test_as_tensorboard_shows_keeps_the_last_point_per_step():
    assert as_tensorboard_shows([(4, 1.0), (8, 1.0), (8, 0.0), (12, 0.5)]) == \
        [(4, 1.0), (8, 0.0), (12, 0.5)]
    assert as_tensorboard_shows([(4, 1.0), (8, 2.0), (6, 3.0)]) == [(4, 1.0), (6, 3.0)]


def test_iteration_times_invert_rllib_ema():
    times, c = IterationTimes(), 0.01
    raw = [0.5, 0.2, 0.3, 0.1]
    ema = raw[0]
    assert times({"timers": {"env_runner_sampling_timer": ema}}) == {"sampling_s": 0.5}
    for x in raw[1:]:
        ema = (1 - c) * ema + c * x
        assert times({"timers": {"env_runner_sampling_timer": ema}})["sampling_s"] \
            == pytest.approx(x, abs=1e-9)


def test_tags_values_and_stage_transitions(ray_session, tmp_path):
    """3 updates per iteration against 4-update stages: transitions fall inside iterations;
    the ramp start (12) and end (20) clear the buffer and pause learning for two iterations
    (50 rows at 20 per iteration)."""
    tb = tmp_path / "tb"
    algo = small_config(tensorboard_dir=str(tb), updates_per_iteration=3, learning_starts=50,
                        beta_r_rampup_steps=8).build_algo()
    sch = algo.schedule
    results = [algo.train() for _ in range(16)]
    cb = next(c for c in algo.callbacks if isinstance(c, EmpoCallbacks))
    assert cb.logdir == str(tb)
    algo.stop()

    scalars = read_scalars(tb)
    for tag in REQUIRED_TAGS:
        assert tag in scalars, f"missing {tag}; have {sorted(scalars)}"
    existing = sorted(sch.existing_networks)
    assert {t for t in scalars if t.startswith("LearningRate/")} == {f"LearningRate/{n}" for n in existing}
    assert {t for t in scalars if t.startswith("Loss/")} == {f"Loss/{n}" for n in existing}
    assert not [t for t in scalars if t.startswith(("ray/", "learners/"))]

    steps = [int(r["Warmup"]["num_updates"]) for r in results]
    assert [s for s, _ in scalars["Warmup/stage"]] == steps          # x-axis: learner updates
    prev = 0
    for i, t in enumerate(steps):
        row = {tag: dict(scalars[tag]).get(t) for tag in scalars}
        # Several iterations may share a step (paused after a clear): compare the i-th event.
        ev = {tag: [v for s, v in scalars[tag] if s == t] for tag in REQUIRED_TAGS}
        k = steps[:i + 1].count(t) - 1
        assert ev["Warmup/stage"][k] == sch.stage(t)
        assert ev["Warmup/effective_beta_r"][k] == pytest.approx(sch.effective_beta_r(t), rel=1e-6)
        assert ev["Warmup/is_warmup"][k] == float(sch.is_in_warmup(t))
        assert ev["Warmup/active_networks_mask"][k] == sch.active_mask(t)
        assert ev["Progress/num_env_steps"][k] == 20 * (i + 1)
        for n in existing:
            assert row[f"LearningRate/{n}"] == pytest.approx(sch.learning_rate(n, max(t - 1, 0)), rel=1e-6)
        prev = t
    # What TensorBoard shows (one point per step, the last): every stage transition and every
    # buffer clear of the schedule as a 1.0 at its own learner update, although transitions
    # fall inside iterations and the iterations after a clear repeat the step
    assert len(steps) > len(set(steps))                             # paused iterations
    shown = {tag: as_tensorboard_shows(scalars[tag]) for tag in EVENT_TAGS}
    transitions = [e for e, _ in sch.stage_transitions() if e <= steps[-1]]
    assert transitions == [4, 8, 12, 20]
    assert [s for s, v in shown["Warmup/stage_transition"] if v == 1.0] == transitions
    assert [s for s, v in shown["Warmup/buffer_clear"] if v == 1.0] == list(sch.clear_points)
    assert {v for _, v in shown["Warmup/stage_transition"]} == {0.0, 1.0}
    # the plain per-iteration tags would have hidden them: the last point at 12 is a 0
    assert dict(as_tensorboard_shows([(s, v) for s, v in zip(steps, (
        float(r["Warmup"]["stage_transition"]) for r in results))]))[12] == 0.0
    # Q_r has a loss only once it trains (from update E2 = 8 on)
    assert min(s for s, _ in scalars["Loss/q_r"]) > sch.ends[2]
    assert all(math.isfinite(v) for _, v in scalars["Loss/v_h_e"])
    # the buffer was cleared at the ramp's start and end
    assert results[-1]["Warmup"]["num_buffer_clears"] == len(sch.clear_points) == 2


def test_no_writer_without_directory(ray_session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    algo = small_config().build_algo()
    algo.train()
    cb = next(c for c in algo.callbacks if isinstance(c, EmpoCallbacks))
    assert cb.logdir is None
    algo.stop()
    assert not list(tmp_path.rglob("events.out.tfevents*"))


def test_restore_purges_later_steps(ray_session, tmp_path):
    """Restoring an earlier checkpoint reopens the writer with purge_step: TensorBoard then
    shows each step once, not the abandoned continuation."""
    tb = tmp_path / "tb"
    algo = small_config(tensorboard_dir=str(tb)).build_algo()
    for _ in range(2):
        algo.train()
    ckpt = algo.save_to_path(tmp_path / "ckpt")
    for _ in range(2):
        algo.train()                              # steps 12, 16: abandoned by the restore
    algo.restore_from_path(ckpt)
    algo.train()                                  # step 12 again
    algo.stop()
    steps = [s for s, _ in read_scalars(tb)["Warmup/num_updates"]]
    assert steps == [4, 8, 12]


def test_where_events_go(tmp_path, monkeypatch):
    """Standalone: tensorboard_dir or nothing. Under Tune: <dir>/<trial> or <trial dir>/tensorboard."""
    import types

    import pyarrow.fs

    from rllib_empo.algorithm.callbacks import TUNE_SUBDIR, resolve_tensorboard_dir

    def algo(tb, storage=None):
        return types.SimpleNamespace(config=types.SimpleNamespace(tensorboard_dir=tb),
                                     _storage=storage)

    assert resolve_tensorboard_dir(algo(None)) is None
    monkeypatch.chdir(tmp_path)
    assert resolve_tensorboard_dir(algo("tb")) == str(tmp_path / "tb")
    storage = types.SimpleNamespace(trial_dir_name="EMPO_0", trial_fs_path="/store/exp/EMPO_0",
                                    trial_working_directory="/work/EMPO_0",
                                    storage_filesystem=pyarrow.fs.LocalFileSystem())
    assert resolve_tensorboard_dir(algo(None, storage)) == f"/store/exp/EMPO_0/{TUNE_SUBDIR}"
    assert resolve_tensorboard_dir(algo("/abs/tb", storage)) == "/abs/tb/EMPO_0"
    monkeypatch.setenv("TUNE_ORIG_WORKING_DIR", "/driver/cwd")
    assert resolve_tensorboard_dir(algo("tb", storage)) == "/driver/cwd/tb/EMPO_0"
