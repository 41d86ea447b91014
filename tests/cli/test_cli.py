"""The ``rllib-empo`` command line: train / solve / compare / render (plot: test_plots.py),
and one-line errors with exit status 2."""
import json
import os
import subprocess
import sys

import pytest

from rllib_empo.cli import main

FAST_TRAIN = ["--world", "rock_gate", "--hidden-sizes", "16,16", "--train-batch-size", "16",
              "--rollout-fragment-length", "20", "--warmup-v-h-e-steps", "4",
              "--warmup-x-h-steps", "4", "--warmup-q-r-steps", "4", "--beta-r-rampup-steps", "4",
              "--updates-per-iteration", "4", "--replay-capacity", "2000"]


@pytest.mark.parametrize("argv, fragment", [
    ([], "required: COMMAND"),
    (["train", "--bogus", "1"], "unrecognized arguments: --bogus"),
    (["train", "--beta-r", "x"], "argument --beta-r: invalid float value"),
    (["train", "--beta-r", "-1"], "beta_r must be a finite float >= 0"),
    (["train", "--x-h-use-network", "maybe"], "expected true or false"),
    (["train", "--hidden-sizes", "a,b"], "comma-separated ints"),
    (["train", "--iterations", "0"], "--iterations and --updates must be >= 1"),
    (["train", "--world", "rockgate"], "did you mean 'rock_gate'"),
    (["solve", "--world-arg", "horizn=3"], "did you mean 'horizon'"),
    (["solve", "--world-arg", "horizon"], "KEY=VALUE"),
    (["solve", "--gamma-r", "1.5"], "gamma_r must be"),
    (["compare", "/no/such/checkpoint"], "does not exist"),
    (["render", "/"], "not an RLlib checkpoint"),
    (["plot", "/no/such/run"], "does not exist"),
])
def test_argument_errors_are_one_line(argv, fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                 # a failing train must not leave runs/ behind
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("rllib-empo: error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "runs").exists()


def test_console_script_error_exit_code():
    exe = os.path.join(os.path.dirname(sys.executable), "rllib-empo")
    proc = subprocess.run([exe, "solve", "--world", "nowhere"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("rllib-empo: error: --world nowhere")
    assert "Traceback" not in proc.stderr


def test_solve(capsys):
    assert main(["solve", "--world", "corridor", "--beta-r", "5"]) == 0
    out = capsys.readouterr().out
    assert "exact solution:" in out and "pi_r(s0)" in out
    assert "states: 139 reachable" in out and "time: prior" in out


def test_train_compare_render(ray_session, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *FAST_TRAIN, "--iterations", "5", "--out", str(run),
                 "--exact-eval-interval", "2", "--compare"]) == 0
    out = capsys.readouterr().out
    iteration_lines = [line for line in out.splitlines() if line.startswith("iter ")]
    assert len(iteration_lines) == 5
    assert "| stage 6 full training" in iteration_lines[-1] and "beta_r 10.000" in iteration_lines[-1]
    assert "loss q_r=" in iteration_lines[-1]
    assert "tv_pi_r_s0" in out                        # --compare
    rows = [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 8, 12, 16, 20]
    assert [r["Warmup/stage"] for r in rows] == [1, 3, 5, 6, 6]
    info = json.loads((run / "run.json").read_text())
    assert info["stage_ends"] == [4, 8, 8, 12, 12, 16] and info["world"] == "rock_gate"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    ckpt = run / "checkpoint"
    assert (ckpt / "rllib_checkpoint.json").is_file()

    assert main(["compare", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "20 learner updates, stage 6" in out
    for key in ("tv_pi_r_s0", "v_r_s0_rel_error", "mean_tv_pi_r", "argmax_agreement",
                "mean_abs_v_h_e_error"):
        assert key in out

    assert main(["compare", str(run), "--json"]) == 0          # a run dir works too
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= figures["tv_pi_r_s0"] <= 1.0

    assert main(["render", str(ckpt), "--max-steps", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- t=") == 4 and "robot action" in out
    assert "########" in out and "steps left: 7/10" in out       # the grid after 3 steps
