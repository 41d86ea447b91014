"""PNG plots: training curves with stage bands, learned vs exact, heat maps -- through the
plotting functions and through ``rllib-empo plot``."""
import pytest

from conftest import small_config

from rllib_empo.cli import main
from rllib_empo.analysis.progress import ProgressWriter, read_progress, write_run_info

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path) -> None:
    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000, path


@pytest.fixture(scope="module")
def run_dir(ray_session, tmp_path_factory):
    """A short run on rock_gate with a progress record, run.json and a checkpoint."""
    run = tmp_path_factory.mktemp("run")
    config = small_config(exact_eval_interval=2)
    algo = config.build_algo()
    write_run_info(run, config, world="rock_gate")
    with ProgressWriter(run / "progress.jsonl") as progress:
        for _ in range(6):
            progress.write(algo.train())
    algo.save_to_path(run / "checkpoint")
    yield run, algo
    algo.stop()


def test_plot_functions(run_dir, tmp_path):
    from rllib_empo.analysis import plotting
    from rllib_empo.analysis.evaluation import exact_solution_for
    run, algo = run_dir
    rows = read_progress(run)
    assert len(rows) == 6 and rows[-1]["step"] == 24
    assert "Time/training_step_s" in rows[-1]
    spans = plotting.stage_spans(rows, algo.schedule.ends)
    assert [s[0] for s in spans] == [0, 1, 3, 5, 6]
    assert spans[-1] == (6, 16, 24)
    assert plotting.stage_spans(rows) == [(1, 0, 8), (3, 8, 12), (5, 12, 16), (6, 16, 24)]

    assert_png(plotting.plot_training_curves(rows, tmp_path / "curves.png",
                                             stage_ends=algo.schedule.ends))
    solution = exact_solution_for(algo)
    assert_png(plotting.plot_learned_vs_exact(algo, solution, tmp_path / "exact.png"))
    states = solution.nonterminal_states
    assert_png(plotting.plot_value_heatmap(algo, states, tmp_path / "x_h.png", solution=solution))
    assert_png(plotting.plot_value_heatmap(algo, states[:50], tmp_path / "v_r.png", quantity="v_r"))
    with pytest.raises(ValueError, match="quantity"):
        plotting.plot_value_heatmap(algo, states, tmp_path / "bad.png", quantity="u")


def test_plot_command(run_dir, tmp_path, capsys):
    run, _ = run_dir
    out = tmp_path / "pngs"
    assert main(["plot", str(run), "--out", str(out), "--quantity", "v_r"]) == 0
    written = capsys.readouterr().out.split()
    names = sorted(p.split("/")[-1] for p in written)
    assert names == ["heatmap_v_r.png", "learned_vs_exact.png", "training_curves.png"]
    for path in written:
        assert_png(path)
    # a progress file alone gives the training curves only
    assert main(["plot", str(run / "progress.jsonl"), "--out", str(tmp_path / "only")]) == 0
    assert_png(tmp_path / "only" / "training_curves.png")
    assert main(["plot", str(run), "--human", "3", "--out", str(tmp_path / "x")]) == 2


def test_plotting_leaves_the_global_backend_alone():
    import subprocess
    import sys
    code = ("import matplotlib; matplotlib.use('svg'); "
            "import rllib_empo.analysis.plotting as p; from rllib_empo.cli import main; "
            "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend(); "
            "import sys; assert 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
