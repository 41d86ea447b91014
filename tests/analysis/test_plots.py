"""PNG plots: training curves (losses split by kind, buffer clears, learning rates that stay
visible, fidelity and residual panels), learned vs exact (the initial state's actions named),
heat maps (every human, labelled colour bars, a difference panel, walls vs cells never
visited) -- through the figure builders and through ``rllib-empo plot``."""
import matplotlib.colors as mcolors
import numpy as np
import pytest

from conftest import small_config

from rllib_empo.analysis import plotting
from rllib_empo.analysis.progress import ProgressWriter, read_progress, write_run_info
from rllib_empo.analysis.value_plots import WALL_COLOR
from rllib_empo.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path) -> None:
    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000, path


@pytest.fixture(scope="module")
def run_dir(ray_session, tmp_path_factory):
    """A short run on rock_gate with a progress record, run.json and a checkpoint; the ramp
    start (12) and end (16) clear the buffer."""
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


def _axes_by_ylabel(fig) -> dict:
    return {ax.get_ylabel(): ax for ax in fig.axes}


def _vlines(ax) -> list:
    return sorted({line.get_xdata()[0] for line in ax.get_lines()
                   if len(set(line.get_xdata())) == 1 and line.get_linestyle() != "-"})


def test_stage_spans_and_clears(run_dir):
    run, algo = run_dir
    rows = read_progress(run)
    assert len(rows) == 6 and rows[-1]["step"] == 24
    assert "Time/training_step_s" in rows[-1]
    spans = plotting.stage_spans(rows, algo.schedule.ends)
    assert [s[0] for s in spans] == [0, 1, 3, 5, 6]
    assert spans[-1] == (6, 16, 24)
    assert plotting.stage_spans(rows) == [(1, 0, 8), (3, 8, 12), (5, 12, 16), (6, 16, 24)]
    assert plotting.clear_steps(rows, algo.schedule.clear_points) == [12, 16]
    assert plotting.clear_steps(rows) == [12, 16]          # inferred from num_buffer_clears


def test_training_curves_figure(run_dir):
    run, algo = run_dir
    rows = read_progress(run)
    fig = plotting.training_curves_figure(rows, stage_ends=algo.schedule.ends)
    axes = _axes_by_ylabel(fig)
    labels = list(axes)
    assert labels[0] == "V_h^e loss:\nbinary\ncross-entropy"      # losses split by kind
    assert labels[1] == "x_h, q_r loss:\nMSE of\nlog|value|"
    assert labels[2:] == ["beta_r", "learning rate", "error against the\nexact solution"]
    assert [line.get_label() for line in axes[labels[0]].get_lines()][0] == "v_h_e"
    for ax in fig.axes:                                            # clears on every panel
        assert _vlines(ax) == [12, 16]
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "replay buffer cleared" in legend and "Stage 5: beta_r ramp-up" in legend
    # equal learning rates stay distinguishable: other line styles and widths per network
    lr = [line for line in axes["learning rate"].get_lines() if len(set(line.get_xdata())) > 1]
    assert len(lr) == 3
    assert len({(str(line.get_linestyle()), line.get_linewidth(), line.get_marker())
                for line in lr}) == 3
    fidelity = {line.get_label() for line in axes[labels[-1]].get_lines()}
    assert {"TV of pi_r at s0", "mean TV of pi_r over states"} <= fidelity


def test_training_curves_without_exact_with_residuals(run_dir):
    run, _ = run_dir
    rows = [{k: v for k, v in r.items() if not k.startswith("Exact/")} for r in read_progress(run)]
    assert "error against the\nexact solution" not in _axes_by_ylabel(
        plotting.training_curves_figure(rows))
    for i, r in enumerate(rows):                 # the residual metrics of a later version
        r["Residual/q_r"], r["Residual/q_r_max"] = 0.5 / (i + 1), 1.0 / (i + 1)
    axes = _axes_by_ylabel(plotting.training_curves_figure(rows, value_loss="mse"))
    assert "V_h^e loss:\nMSE" in axes
    residual = next(ax for label, ax in axes.items() if label.startswith("convergence"))
    assert {line.get_label() for line in residual.get_lines()} >= {"Residual/q_r"[9:],
                                                                   "q_r_max"}


def test_learned_vs_exact_names_the_initial_state_s_actions(run_dir):
    from rllib_empo.analysis.evaluation import exact_solution_for
    _, algo = run_dir
    fig = plotting.learned_vs_exact_figure(algo, exact_solution_for(algo))
    scatter, bars = fig.axes[1], fig.axes[2]
    legend = [t.get_text() for t in scatter.get_legend().get_texts()]
    assert legend[1:] == ["s0, stay", "s0, up", "s0, down", "s0, left", "s0, right"]
    assert [t.get_text() for t in bars.get_xticklabels()] == ["stay", "up", "down", "left",
                                                              "right"]
    assert bars.get_title().startswith("pi_r at the initial state")


def test_heatmap_every_human_colour_bars_difference_walls(ray_session, run_dir):
    from rllib_empo.analysis.evaluation import exact_solution_for
    _, algo = run_dir
    solution = exact_solution_for(algo)
    fig = plotting.heatmap_figure(algo, solution.nonterminal_states, solution=solution)
    maps = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in maps] == ["exact X_h, human 1", "learned X_h, human 1",
                                               "learned - exact X_h, human 1"]
    bars = [ax for ax in fig.axes if not ax.get_title()]
    assert [ax.get_ylabel() for ax in bars] == ["X_h (mean over the states)",
                                                "learned - exact X_h"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["wall", "floor the human never occupies in these states"]
    # rock_gate's outer ring is wall: drawn in the wall colour, not as a missing value
    background = maps[0].get_images()[0].get_array()
    assert tuple(background[0, 0][:3]) == mcolors.to_rgb(WALL_COLOR)
    # the difference is learned - exact, centred on 0
    exact, learned, diff = (np.ma.filled(ax.get_images()[1].get_array(), np.nan) for ax in maps)
    assert np.allclose(diff, learned - exact, equal_nan=True)
    assert maps[2].get_images()[1].norm.vcenter == 0.0


def test_heatmap_of_a_crowd_marks_cells_never_visited(ray_session, tmp_path):
    """Every human of a two-human world; cells no state puts the human on are hatched."""
    from rllib_empo.analysis.rollout import make_env, rollout
    algo = small_config("rllib_empo/Crowd-v0", sum_human_actions=False).build_algo()
    try:
        env = make_env(algo)
        states = [s for e in range(2) for s in rollout(algo, env, seed=e, max_steps=5).states]
        fig = plotting.heatmap_figure(algo, states, quantity="v_r")
        path = plotting.plot_value_heatmap(algo, states, tmp_path / "crowd.png")
    finally:
        algo.stop()
    maps = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in maps] == ["learned V_r, human 1", "learned V_r, human 2"]
    hatched = [p for p in maps[0].patches if p.get_hatch()]
    visited = np.isfinite(np.ma.filled(maps[0].get_images()[1].get_array(), np.nan)).sum()
    assert hatched and visited + len(hatched) == 69     # the floor cells of crowd's room
    texts = [t for t in maps[0].texts]
    assert len(texts) == visited and all(len(t.get_text()) <= 5 for t in texts)
    assert_png(path)


def test_plot_command(run_dir, tmp_path, capsys):
    run, _ = run_dir
    out = tmp_path / "pngs"
    assert main(["plot", str(run), "--out", str(out), "--quantity", "v_r"]) == 0
    written = capsys.readouterr().out.split()
    names = sorted(p.split("/")[-1] for p in written)
    assert names == ["heatmap_v_r.png", "learned_vs_exact.png", "training_curves.png"]
    for path in written:
        assert_png(path)
    assert "no fidelity panel" not in " ".join(written)
    # a progress file alone gives the training curves only; without Exact/* it says why
    # there is no fidelity panel
    rows = (run / "progress.jsonl").read_text().splitlines()
    bare = tmp_path / "bare.jsonl"
    bare.write_text("\n".join(line.replace('"Exact/', '"Other/') for line in rows))
    assert main(["plot", str(bare), "--out", str(tmp_path / "only")]) == 0
    out = capsys.readouterr().out
    assert "no fidelity panel: the run logged no exact evaluation (train with --compare" in out
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
