"""The ``rllib-empo`` command line: one-line errors with exit status 2, help for every option,
solve, and train / compare / render in this process (plot: test_plots.py; the progress
display, custom worlds and large worlds: the other files here, in their own processes)."""
import argparse
import json
import os
import subprocess
import sys

import pytest

from _cli import FAST_TRAIN
from rllib_empo.cli import build_parser, main


@pytest.mark.parametrize("argv, fragment", [
    ([], "required: COMMAND"),
    (["train", "--bogus", "1"], "unrecognized arguments: --bogus"),
    (["train", "--beta-r", "x"], "argument --beta-r: invalid float value"),
    (["train", "--beta-r", "-1"], "beta_r must be a finite float >= 0"),
    (["train", "--x-h-use-network", "maybe"], "expected true or false"),
    (["train", "--hidden-sizes", "a,b"], "comma-separated ints"),
    (["train", "--iterations", "0"], "argument --iterations: must be an int >= 1, got 0"),
    (["train", "--updates", "-5"], "argument --updates: must be an int >= 1, got -5"),
    (["train", "--num-env-runners", "-1"], "argument --num-env-runners: must be an int >= 0"),
    (["train", "--num-envs-per-env-runner", "0"], "must be an int >= 1"),
    (["train", "--seed", "x"], "argument --seed: expected an int >= 0, got 'x'"),
    (["train", "--progress", "fancy"], "argument --progress: invalid choice"),
    (["train", "--world", "rockgate"], "did you mean 'rock_gate'"),
    (["train", "--import", "no_such_module_xyz"], "--import no_such_module_xyz"),
    (["solve", "--world-arg", "horizn=3"], "did you mean 'horizon'"),
    (["solve", "--world-arg", "horizon"], "KEY=VALUE"),
    (["solve", "--gamma-r", "1.5"], "gamma_r must be"),
    (["solve", "--max-states", "0"], "argument --max-states: must be an int >= 1"),
    (["compare", "/no/such/checkpoint"], "does not exist"),
    (["compare", "/", "--exact-max-states", "0"], "must be an int >= 1"),
    (["render", "/"], "not an RLlib checkpoint"),
    (["render", "/", "--episodes", "0"], "argument --episodes: must be an int >= 1"),
    (["plot", "/no/such/run"], "does not exist"),
    (["plot", "/", "--human", "first"], "argument --human"),
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


def _options(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((f"{name} {o}", a) for o, a in _options(sub))
        elif not isinstance(action, argparse._HelpAction):
            yield "/".join(action.option_strings) or action.dest, action


def test_every_option_has_help():
    options = dict(_options(build_parser()))
    for name in ("solve --max-states", "plot --quantity", "train --seed", "render --seed",
                 "render --episodes", "plot --episodes", "train --num-env-runners",
                 "compare --import", "render --import", "plot --import"):
        assert name in options, sorted(options)
    missing = [name for name, action in options.items()
               if not action.help or action.help == argparse.SUPPRESS]
    assert missing == []


def test_train_without_runner_flags_keeps_the_configs_defaults():
    """Unset --num-envs-per-env-runner, --rollout-fragment-length and --train-batch-size
    leave EmpoConfig's defaults, which their help names; set, they are used."""
    from rllib_empo import EmpoConfig
    from rllib_empo.cli.commands import build_config
    defaults, parser = EmpoConfig(), build_parser()
    config = build_config(parser.parse_args(["train"]))
    fields = ("num_envs_per_env_runner", "rollout_fragment_length", "train_batch_size_per_learner")
    assert [getattr(config, f) for f in fields] == [getattr(defaults, f) for f in fields]
    options = dict(_options(parser))
    for option, field in zip(("--num-envs-per-env-runner", "--rollout-fragment-length",
                              "--train-batch-size"), fields):
        assert f"(default {getattr(defaults, field)})" in options[f"train {option}"].help
    config = build_config(parser.parse_args(["train", "--num-envs-per-env-runner", "2",
                                             "--rollout-fragment-length", "30"]))
    assert (config.num_envs_per_env_runner, config.rollout_fragment_length) == (2, 30)


def test_console_script_error_exit_code():
    exe = os.path.join(os.path.dirname(sys.executable), "rllib-empo")
    proc = subprocess.run([exe, "solve", "--world", "nowhere"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("rllib-empo: error: --world nowhere")
    assert "Traceback" not in proc.stderr


def test_solve_prints_pi_r_by_action_name(capsys):
    assert main(["solve", "--world", "rock_gate", "--beta-r", "10", "--gamma-r", "1"]) == 0
    out = capsys.readouterr().out
    assert "########" in out and "exact solution: 1008 reachable states" in out
    rows = {line.split()[1]: line.split() for line in out.splitlines()
            if line.strip()[:1].isdigit() and len(line.split()) == 4}
    assert list(rows) == ["stay", "up", "down", "left", "right"]
    assert rows["up"][0] == "1" and rows["up"][3] == "0.4691"      # the README's table
    assert "states: 1008 reachable, 751 non-terminal" in out


def test_solve_a_world_without_action_names(capsys):
    assert main(["solve", "--world", "corridor", "--beta-r", "5"]) == 0
    out = capsys.readouterr().out
    assert "states: 139 reachable" in out and "robot action" in out


def test_train_compare_render(ray_session, tmp_path, capsys, monkeypatch):
    from rllib_empo import Empo
    stopped = []
    stop = Empo.stop
    monkeypatch.setattr(Empo, "stop", lambda self: (stopped.append(self), stop(self))[1])
    run = tmp_path / "run"
    assert main(["train", "--world", "rock_gate", *FAST_TRAIN, "--iterations", "5", "--out",
                 str(run), "--exact-eval-interval", "2", "--compare", "--progress", "lines"]) == 0
    out = capsys.readouterr().out
    assert len(stopped) == 1                          # train --compare stops its algorithm
    assert "run: 5 iterations (--iterations)" in out
    assert "tv_pi_r_s0" in out                        # --compare
    assert "done: 20 learner updates in 5 iterations" in out
    assert "final: stage 6 full training | beta_r 10 | loss v_h_e" in out
    rows = [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 8, 12, 16, 20]
    assert [r["Warmup/stage"] for r in rows] == [1, 3, 5, 6, 6]
    info = json.loads((run / "run.json").read_text())
    assert info["stage_ends"] == [4, 8, 8, 12, 12, 16] and info["world"] == "rock_gate"
    assert info["run_length"] == {"iterations": 5} and info["imports"] == []
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
    assert len(stopped) == 4                                     # compare x2, render


def test_compare_honours_exact_max_states(ray_session, tmp_path, capsys):
    """The exact solver's limit, from the command line: one line naming the flag."""
    from conftest import small_config
    algo = small_config().build_algo()
    algo.train()
    algo.save_to_path(tmp_path / "ckpt")
    algo.stop()
    assert main(["compare", str(tmp_path / "ckpt"), "--exact-max-states", "100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "world 'rock_gate' has more than 100 reachable states" in err[0]
    assert "too large for the exact solver" in err[0] and "--exact-max-states N" in err[0]
    assert main(["compare", str(tmp_path / "ckpt"), "--exact-max-states", "1008"]) == 0
