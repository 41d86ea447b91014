"""Every example runs end to end in fast mode (RLLIB_EMPO_FAST=1), each in its own Python
process. The four processes start together (module fixture) and the tests wait for their own:
on 2 cores this halves the wall time, since much of each run is start-up latency. The
examples that sample locally join the test session's Ray cluster (RAY_ADDRESS), as a script
on a cluster would; cluster_rollouts starts its own local Ray, so that its EnvRunner actor
and the Tune sweep's two trials do not wait for each other's CPUs. The README's quick start
must be the block between the markers in examples/quickstart.py."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
START, END = "# --- README quickstart start ---", "# --- README quickstart end ---"
TIMEOUT_S = 300


def quickstart_snippet(text: str) -> str:
    match = re.search(re.escape(START) + r"\n(.*?)" + re.escape(END), text, re.S)
    assert match, "quick-start markers not found"
    return match.group(1)


@pytest.fixture(scope="module")
def examples(ray_session, tmp_path_factory):
    """name -> running process of every example (fast mode)."""
    storage = tmp_path_factory.mktemp("tune")
    base = dict(os.environ, RLLIB_EMPO_FAST="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    base.pop("RAY_ADDRESS", None)
    joined = dict(base, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address)
    runs = {"quickstart.py": ([], joined), "custom_world.py": ([], joined),
            "tune_sweep.py": (["--storage", str(storage)], joined),
            "cluster_rollouts.py": (["--iterations", "3"], base)}
    procs = {name: subprocess.Popen([sys.executable, str(EXAMPLES / name), *args], cwd=ROOT,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
             for name, (args, env) in runs.items()}
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


ERRORS = {}             # name -> stderr of the finished example


def finish(examples, name) -> str:
    try:
        out, err = examples[name].communicate(timeout=TIMEOUT_S)
        ERRORS[name] = err
    except subprocess.TimeoutExpired:
        examples[name].kill()
        out, err = examples[name].communicate()
        pytest.fail(f"{name} took longer than {TIMEOUT_S} s:\n{out[-3000:]}\n{err[-3000:]}")
    assert examples[name].returncode == 0, f"{name} failed:\n{out[-3000:]}\n{err[-5000:]}"
    return out


def test_quickstart(examples):
    out = finish(examples, "quickstart.py")
    stages = [int(m) for m in re.findall(r"stage (\d)", out)]
    assert stages[0] == 0 and stages[-1] == 6 and stages == sorted(stages)
    for name in ("tv_pi_r_s0", "v_r_s0_rel_error", "mean_tv_pi_r"):
        assert re.search(rf"{name}\s+\d\.\d+\s+bar <= 0\.05\s+(met|MISSED)", out), name
    assert re.search(r"residual\(q_r\) (\d|nan)", out)


def test_quickstart_snippet_is_self_contained():
    """The snippet needs nothing from the rest of the file (the README shows it alone)."""
    snippet = quickstart_snippet((EXAMPLES / "quickstart.py").read_text())
    compile(snippet, "README quick start", "exec")
    assert snippet.startswith("import os\n") and "build_algo()" in snippet


def test_custom_world(examples):
    out = finish(examples, "custom_world.py")
    assert "exact solution: 30 reachable states" in out
    assert "pi_r at the start: do nothing" in out and "TV distance to the exact policy" in out


def test_tune_sweep(examples):
    """The full mode's code path: every 2nd iteration evaluates, so the first result has no
    evaluation, and Tune's metric check must still pass."""
    out = finish(examples, "tune_sweep.py")
    assert re.search(r"2 trials, 4 iterations each, \d+ s, ranked by Exact/tv_pi_r_s0", out)
    ranking = re.findall(r"^  (\d\.\d{4})  lr ", out, re.M)
    assert len(ranking) == 2 and ranking == sorted(ranking)
    assert "best trial: lr" in out and re.search(r"tv_pi_r_s0\s+\d\.\d+", out)
    assert re.search(r"training_iteration\s+4\b", out)
    assert "sample_from functions that take a spec dict are deprecated" not in ERRORS["tune_sweep.py"]
    ckpt = re.search(r"checkpoint: (\S+)", out).group(1)
    assert (Path(ckpt) / "rllib_checkpoint.json").is_file()
    trial = Path(ckpt).parent
    assert list((trial / "tensorboard").glob("events.out.tfevents.*"))


def test_cluster_rollouts(examples):
    out = finish(examples, "cluster_rollouts.py")
    assert "built with 1 EnvRunner(s)" in out
    assert re.search(r"env steps/s, whole train\(\) calls:\s+[\d,]+", out)
    assert re.search(r"replay memory: +[\d,]+ rows, [\d,]+ states, [\d,]+ tables", out)
    assert re.search(r"sampling \d+%, learning \d+%", out)


def test_tune_sweep_ranking_metric_falls_back_gracefully():
    """Without an exact solution the sweep ranks by the convergence residual once the results
    log it (one constant, CONVERGENCE_METRIC), and by the Q_r loss until then."""
    import importlib.util
    import types
    from rllib_empo.analysis.progress import CONVERGENCE_METRIC
    spec = importlib.util.spec_from_file_location("tune_sweep", EXAMPLES / "tune_sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    group, key = CONVERGENCE_METRIC.split("/")
    with_residual = [types.SimpleNamespace(metrics={group: {key: 0.1}, "Loss": {"q_r": 1.0}})]
    without = [types.SimpleNamespace(metrics={"Loss": {"q_r": 1.0}})]
    assert sweep.ranking_metric(with_residual, exact=True) == "Exact/tv_pi_r_s0"
    assert sweep.ranking_metric(with_residual, exact=False) == CONVERGENCE_METRIC
    assert sweep.ranking_metric(with_residual + without, exact=False) == sweep.FALLBACK_METRIC
