"""Worlds too large for the exact solver, on the command line: ``solve``, ``train --compare``
(it stops before training and still stops its algorithm) and the ``--max-states`` limit with
every prior -- one line ``rllib-empo: error: ...`` naming the flag that raises the limit."""
import time

import pytest

from _cli import FAST_TRAIN
from rllib_empo.cli import main


def one_line_error(capsys) -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rllib-empo: error: "), err
    return lines[0]


def test_solve_crowd_says_it_is_too_large_at_once(capsys):
    t0 = time.perf_counter()
    assert main(["solve", "--world", "crowd"]) == 2
    assert time.perf_counter() - t0 < 10
    line = one_line_error(capsys)
    assert "world 'crowd' has more than 1,000,000 reachable states" in line
    assert "too large for the exact solver" in line and "--max-states N" in line


@pytest.mark.parametrize("prior", [None, "boltzmann", "uniform", "heuristic"])
def test_solve_honours_max_states_with_every_prior(prior, capsys):
    argv = ["solve", "--world", "rock_gate", "--max-states", "500"]
    argv += ["--prior", prior] if prior else []     # None: the world's default (boltzmann)
    assert main(argv) == 2
    assert "more than 500 reachable states" in one_line_error(capsys)
    assert main([*argv[:-2], "--max-states", "1008"] if prior is None else
                [*argv[:3], "--max-states", "1008", *argv[5:]]) == 0


def test_train_compare_on_crowd_stops_before_training(ray_session, tmp_path, capsys,
                                                      monkeypatch):
    from rllib_empo import Empo
    stopped = []
    cleanup = Empo.cleanup          # what Empo.stop runs; setup runs it when it fails
    monkeypatch.setattr(Empo, "cleanup", lambda self: (stopped.append(self), cleanup(self))[1])
    t0 = time.perf_counter()
    assert main(["train", "--world", "crowd", *FAST_TRAIN, "--sum-human-actions", "false",
                 "--out", str(tmp_path / "run"), "--compare"]) == 2
    assert time.perf_counter() - t0 < 60
    line = one_line_error(capsys)
    assert "world 'crowd' has more than 1,000,000 reachable states" in line
    assert "--exact-max-states N (the config field exact_max_states)" in line
    assert len(stopped) == 1           # the half-built algorithm released its EnvRunners
    assert not (tmp_path / "run").exists()        # nothing trained, nothing written
