"""The README's generated sections equal what the code generates, and the metrics table
lists exactly the metrics a real run logs."""
from pathlib import Path

from tools import gen_docs as docs

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_sections_match_the_code():
    assert docs.update(README, check=True) == [], \
        "README is out of date: run `python -m tools.gen_docs`"


def test_metrics_table_matches_a_real_result(ray_session):
    from conftest import small_config
    from rllib_empo.algorithm.metrics import METRICS
    algo = small_config(exact_eval_interval=1).build_algo()
    try:
        result = {}
        for _ in range(8):
            result = algo.train()
    finally:
        algo.stop()
    groups = {name.split("/")[0] for name, _ in METRICS}
    logged = {f"{g}/{k}" for g in groups if isinstance(result.get(g), dict) for k in result[g]}
    nets = sorted(algo.schedule.existing_networks)
    documented = set()
    for name, _ in METRICS:
        if "<net>" in name:
            documented |= {name.replace("<net>", n) for n in nets}
        elif name.endswith("/<figure>"):
            documented |= {k for k in logged if k.startswith("Exact/")}
        else:
            documented.add(name)
    assert logged == documented
