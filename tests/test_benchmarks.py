"""The benchmark suite runs end to end in --quick mode and writes its files (figures are not
checked against targets here: benchmarks print figures, they are not timed tests)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_run_all_quick_writes_results(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_all", "--quick", "--only", "sampling,memory",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    from benchmarks.run_all import REQUIRED_KEYS
    assert set(REQUIRED_KEYS) <= set(results)
    for key in ("sampling_env_steps_per_s_per_runner_rock_gate",
                "bytes_per_transition_rock_gate", "bytes_per_transition_crowd_h3",
                "replay_default_capacity_max_mib", "peak_rss_mb_default_run"):
        assert isinstance(results[key], (int, float)) and results[key] > 0, key
    # a quick run fills fewer rows than the default capacity and says so
    assert results["replay_default_capacity_extrapolated_rock_gate"] is True
    sections = results["_meta"]["benchmarks"]
    assert set(sections) == {"sampling", "memory"} and all(s["quick"] for s in sections.values())
    md = (tmp_path / "RESULTS.md").read_text()
    assert "nproc" in md and "torch" in md and "rock_gate: bytes per transition" in md
    assert "load average" in md
    assert "rock_gate: nr=0, 1 env(s)/runner, per runner" in proc.stdout


def test_fidelity_matrix_cell_summary_and_readme_table(ray_session, tmp_path):
    """A (short) cell of the fidelity matrix on the defaults: its curve, the bars' summary,
    the merged file, the README table and the residual plot built from it."""
    from benchmarks import fidelity_matrix as fm
    from rllib_empo import EmpoConfig
    from rllib_empo.exact.compare import CONVERGENCE_BARS
    from tools import gen_docs
    cell = fm.run_cell("corridor", 0, updates=64, every=32, verbose=False)
    assert cell["exact"] and cell["num_states"] == 139 and cell["updates"] >= 64
    assert [p["num_updates"] for p in cell["curve"]][-1] == cell["updates"]
    assert set(CONVERGENCE_BARS) <= set(cell["final"])
    assert cell["first_met"] is None and cell["stayed"] is None     # still in the warm-up
    out = tmp_path / "matrix.json"
    fm.merge(cell, out)
    assert cell["fields"]["ema_decay"] == EmpoConfig().ema_decay    # what it trained with
    from benchmarks.common import changed_defaults
    assert changed_defaults(cell["fields"]) == {}
    # a record from before RLlib's fields were recorded ran on one env per runner
    old_record = {k: v for k, v in cell["fields"].items()
                  if k not in ("rollout_fragment_length", "num_envs_per_env_runner")}
    assert changed_defaults(old_record) == {"num_envs_per_env_runner": (1, 4)}
    # ... and one of rollout_fragment_length 200 (recorded) with one env is not the default
    assert changed_defaults(dict(old_record, rollout_fragment_length=200)) == {
        "rollout_fragment_length": (200, 50), "num_envs_per_env_runner": (1, 4)}
    big = dict(cell, world="crowd", exact=False, num_states=None)  # a residual-only cell
    fm.merge(big, out)
    stale = dict(cell, seed=1, fields=dict(cell["fields"], ema_decay=0.5))
    data = fm.merge(stale, out)
    assert set(data["cells"]) == {"corridor/0", "corridor/1", "crowd/0"}
    rows = fm.summary_rows(data)
    assert [r["world"] for r in rows] == ["corridor", "crowd"]
    assert rows[0]["first_met"] == [None, None] and "final_residual" in rows[1]
    old = gen_docs.MATRIX
    gen_docs.MATRIX = out
    try:
        table = gen_docs._fidelity()
    finally:
        gen_docs.MATRIX = old
    assert "| corridor (139) | 0, 1 | 64 " in table and "not met" in table
    assert "crowd is too large for the exact solver" in table
    # only the cell that trained on other defaults is named, with what differed
    assert "corridor seed 1: on earlier defaults (ema_decay 0.5;" in table
    assert "corridor seed 0:" not in table
    assert fm.plot_residual_vs_exact(data, tmp_path / "p.png", worlds=("corridor",)).exists()
    assert fm.plot_residual_vs_exact(data, tmp_path / "q.png", worlds=("lanes",)) is None


def test_q_r_fit_learns_towards_the_exact_q_r(ray_session, tmp_path):
    """benchmarks/q_r_fit.py on corridor: the defaults' q_r, fitted to the exact Q_r*,
    gets closer to the exact log(-Q_r*) and to its advantages over 300 updates, and the file
    records the curve."""
    from benchmarks import q_r_fit
    out = tmp_path / "fit.json"
    assert q_r_fit.main(["--world", "corridor", "--variants", "defaults", "--updates", "300",
                         "--every", "100", "--out", str(out)]) == 0
    res = json.loads(out.read_text())["corridor"][q_r_fit.SHORT["defaults"]]
    assert res["hidden"] == [512, 512] and res["q_r_advantage_weight"] == 30.0
    curve = res["curve"]
    assert [p["updates"] for p in curve] == [100, 200, 300]
    assert curve[-1]["log_q_r_error"] < curve[0]["log_q_r_error"]
    assert curve[-1]["advantage_error"] < curve[0]["advantage_error"]
    assert all(0 <= p["mean_tv_pi_r"] <= 1 for p in curve)


def test_averaging_records_every_series_at_every_iteration(ray_session, tmp_path):
    """benchmarks/averaging.py on corridor with a 10-update warm-up (q_r trains from update
    20): every series has a figure per iteration, the longer averages start
    from the weights, the targets (copied every 100 updates) differ from the weights, and the recorded rock_gate runs show the mechanism the default
    rests on: the latest weights wander far above the bar, the longer average does not."""
    from benchmarks import averaging
    out = tmp_path / "avg.json"
    assert averaging.main(["--world", "corridor", "--seeds", "0", "--updates", "96",
                           "--start", "0", "--after", "0", "--warmup", "10", "--out",
                           str(out)]) == 0
    (res,) = json.loads(out.read_text()).values()
    steps = res["num_updates"]      # one read per iteration that updated (clears pause)
    assert steps == sorted(set(steps)) and steps[0] > 0 and steps[-1] >= 96
    names = {"raw", "target", "ema997", "ema999", "ema9997"}
    assert set(res["curves"]) == names == set(res["summary"])
    for c in res["curves"].values():
        assert len(c["tv_pi_r_s0"]) == len(steps) and all(0 <= x <= 1 for x in c["tv_pi_r_s0"])
    assert res["curves"]["ema999"]["tv_pi_r_s0"][0] == res["curves"]["raw"]["tv_pi_r_s0"][0]
    assert res["curves"]["target"]["tv_pi_r_s0"] != res["curves"]["raw"]["tv_pi_r_s0"]
    recorded = json.loads(averaging.OUT.read_text())
    for seed in (0, 1):
        s = recorded[f"rock_gate/{seed}/defaults/ema0.997"]["summary"]
        assert s["raw"]["max_tv_pi_r_s0"] > 0.1 and s["ema999"]["max_tv_pi_r_s0"] <= 0.03


def test_error_budget_splits_the_policy_error(ray_session, tmp_path):
    """benchmarks/error_budget.py on a short corridor run: every part is a TV in [0, 1], the
    total is at most the X_h part plus the Q_r part (the triangle inequality, state by
    state), and the file records the curve."""
    from benchmarks import error_budget
    out = tmp_path / "budget.json"
    assert error_budget.main(["--world", "corridor", "--updates", "64", "--every", "32",
                              "--out", str(out)]) == 0
    curve = json.loads(out.read_text())["corridor/0"]["curve"]
    assert [p["num_updates"] for p in curve] == [32, 64]
    for p in curve:
        for part in error_budget.PARTS:
            assert all(0.0 <= p[part][k] <= 1.0 for k in ("mean", "decision", "s0"))
        assert p["total"]["mean"] <= p["x_h"]["mean"] + p["q_r"]["mean"] + 1e-9
        assert p["total"]["s0"] <= p["x_h"]["s0"] + p["q_r"]["s0"] + 1e-9
        assert p["num_states"] > 0 and p["x_h_abs_error"]["net"] >= 0
        v = p["v_r_s0_rel_error"]     # relative errors: the triangle inequality, exactly
        assert set(v) == set(error_budget.PARTS) and all(e >= 0 for e in v.values())
        assert v["total"] <= (1 + v["x_h"]) * (1 + v["q_r"]) - 1 + 1e-9
        cov = p["coverage"]           # the states of the replay memory's rows, and the rest
        assert 0.0 < cov["trained_share"] <= 1.0
        assert all(0.0 <= v <= 1.0 for v in cov.values())
