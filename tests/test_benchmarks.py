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
