"""EnvRunners on another node of a Ray cluster: their rows and the states and tables they
mention reach the driver's replay memory, and training runs on them."""
import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_env_runners_on_a_second_node_fill_the_memory_and_train():
    script = Path(__file__).with_name("_cluster_run.py")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(report["runner_nodes"]) == 2
    assert all(n != report["driver_node"] for n in report["runner_nodes"])   # the second node
    rows = [s["rows"] for s in report["sizes"]]
    assert rows == [40, 80, 120]             # 2 runners x 20 steps per iteration
    assert all(s["states"] > 0 and s["tables"] > 0 for s in report["sizes"])
    assert report["num_updates"] == 12 and report["loss"]
