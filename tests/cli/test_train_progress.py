"""``rllib-empo train``'s console: one bar that updates in place on a terminal (a pty), plain
lines otherwise, a summary, the convergence residual when the results log it, and a complete
run when no run length is given."""
import io
import json
import math
import os
import pty
import re
import struct
import subprocess
import sys

from _cli import FAST_TRAIN, address, cli_env, run_cli
from rllib_empo.analysis.progress import CONVERGENCE_METRIC
from rllib_empo.cli.parser import DEFAULT_RUN_FACTOR
from rllib_empo.analysis.progress_bar import TrainingProgress, describe


def result(updates: int, stage: int = 6, beta_r: float = 10.0, transition: float = 0.0,
           residual=None) -> dict:
    r = {"Warmup": {"num_updates": updates, "stage": stage, "effective_beta_r": beta_r,
                    "stage_transition": transition, "num_buffer_clears": 2},
         "Loss": {"v_h_e": 0.021, "q_r": 0.0123, "x_h": math.nan},
         "num_env_steps_sampled_lifetime": 5 * updates}
    if residual is not None:
        group, key = CONVERGENCE_METRIC.split("/")
        r[group] = {key: residual}
    return r


def test_describe_shows_stage_beta_losses_and_the_residual_when_logged():
    text = describe(result(100, stage=5, beta_r=3.21, residual=0.031))
    assert text == "stage 5 ramp-up | beta_r 3.21 | loss v_h_e 0.021 q_r 0.012 | residual 0.031"
    assert "residual" not in describe(result(100))              # not logged: not shown
    assert CONVERGENCE_METRIC == "Residual/q_r"


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_bar_on_a_terminal_lines_otherwise():
    tty = FakeTerminal()
    with TrainingProgress(100, stream=tty) as progress:
        for u in (10, 50, 100):
            progress.update(result(u, residual=0.5))
    assert progress.mode == "bar"
    frames = tty.getvalue()
    assert "\r" in frames and frames.count("\n") <= 1           # redrawn in place
    assert "100%|" in frames and "100/100" in frames and "residual 0.5" in frames

    log = io.StringIO()
    with TrainingProgress(1000, stream=log, line_every=0.25) as progress:
        for u in range(0, 1001, 50):
            progress.update(result(u, transition=float(u == 450)))
    lines = log.getvalue().splitlines()
    assert progress.mode == "lines"
    assert [int(re.match(r"\[\s*(\d+)%\]", line).group(1)) for line in lines] == \
        [0, 25, 45, 50, 75, 100]                              # 45%: a stage transition
    assert "updates 250/1,000" in lines[1] and "left | stage 6 full training" in lines[1]
    summary = progress.summary()
    assert summary[0].startswith("done: 1,000 learner updates in 21 iterations")
    assert "5,000 env steps, 2 buffer clear(s)" in summary[0]
    assert summary[1] == "final: " + describe(result(1000))


def test_train_without_a_run_length_runs_the_warmup_and_as_long_again(ray_session, tmp_path):
    """stdout is a pipe here: plain lines, then the summary."""
    run = tmp_path / "run"
    out = run_cli(["train", "--world", "rock_gate", *FAST_TRAIN, "--out", run,
                   *address(ray_session)]).stdout
    n = DEFAULT_RUN_FACTOR * 16
    assert (f"run: {n} learner updates (default: {DEFAULT_RUN_FACTOR} x the end of the beta_r "
            "ramp at 16") in out
    progress = [line for line in out.splitlines() if re.match(r"\[\s*\d+%\]", line)]
    assert 5 <= len(progress) <= n // 4 + 4 and progress[-1].startswith(f"[100%] updates {n}/{n}")
    assert "\r" not in out
    assert f"done: {n} learner updates in" in out and "final: stage 6 full training" in out
    rows = [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == n and rows[-1]["Warmup/stage"] == 6


def test_train_on_a_terminal_draws_one_bar(ray_session, tmp_path):
    import fcntl
    import termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "rllib_empo.cli", "train", "--world",
                             "rock_gate", *FAST_TRAIN, "--updates", "40", "--out",
                             str(tmp_path / "run"), *address(ray_session)],
                            stdout=slave, stderr=slave, env=cli_env(), close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:                          # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=300) == 0
    out = b"".join(chunks).decode(errors="replace")
    bar_lines = [line for line in out.split("\n") if "%|" in line]
    assert len(bar_lines) == 1, bar_lines          # one line, redrawn with carriage returns
    frames = bar_lines[0].split("\r")
    assert len(frames) >= 3
    last = frames[-1] if "%|" in frames[-1] else next(f for f in reversed(frames) if "%|" in f)
    assert re.search(r"train 100%\|.*\| 40/40 \[\d\d:\d\d<00:00\], stage 6 full training \| "
                     r"beta_r 10 \| loss v_h_e \S+ x_h \S+ q_r \S+", last), last
    assert "done: 40 learner updates" in out
    assert not re.search(r"^\[\s*\d+%\]", out, re.M)                # no plain lines
