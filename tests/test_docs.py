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


def _flags(line: str) -> dict:
    words = line.split()
    return {w[2:]: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")
            and not words[i + 1].startswith("--")}


def test_readme_cli_example_trains_on_the_exact_table_s_problem():
    """The train and solve commands of the README's CLI example set the same theory
    parameters and prior as the exact rock_gate table, so `compare` measures against it."""
    from rllib_empo.theory.params import EmpoParams
    text = README.read_text()
    block = text[text.index("<!-- BEGIN cli -->"):text.index("<!-- END cli -->")]
    train = next(line for line in block.splitlines() if line.startswith("rllib-empo train"))
    solve = next(line for line in block.splitlines() if line.startswith("rllib-empo solve"))
    keys = {name.replace("_", "-") for name in EmpoParams.names()} | {"prior", "beta-h", "world"}
    train_flags = {k: v for k, v in _flags(train).items() if k in keys}
    solve_flags = {k: v for k, v in _flags(solve).items() if k in keys}
    assert train_flags == solve_flags
    assert train_flags["gamma-r"] == "1" and train_flags["beta-r"] == "10"
    exact = text[text.index("<!-- BEGIN exact-rock-gate -->"):]
    assert exact.split("\n", 1)[1].startswith(f"`{solve}` solves it")
