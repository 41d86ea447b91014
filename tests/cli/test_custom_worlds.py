"""A custom world through every command, each in its own process: ``train --import`` in the
directory of the module that registers the world, then ``compare``, ``plot`` and ``render``
from another directory without ``--import`` (run.json recorded the module and where it was
found), and with ``--import`` given again."""
import json

import pytest

from _cli import DOOR_WORLD_MODULE, FAST_TRAIN, address, run_cli


@pytest.fixture(scope="module")
def door_run(ray_session, tmp_path_factory):
    base = tmp_path_factory.mktemp("custom")
    mods, elsewhere = base / "mods", base / "elsewhere"
    mods.mkdir()
    elsewhere.mkdir()
    (mods / "door_world.py").write_text(DOOR_WORLD_MODULE)
    run = base / "runs" / "door"
    proc = run_cli(["train", "--import", "door_world", "--world", "door",
                    "--world-arg", "horizon=3", "--prior", "boltzmann", *FAST_TRAIN,
                    "--updates", "12", "--out", run, "--compare", *address(ray_session)],
                   cwd=mods)
    return run, elsewhere, proc.stdout


def test_train_records_imports_and_world_arguments(door_run):
    run, _, out = door_run
    assert "training EMPO on door" in out and "compared with the exact solution" in out
    info = json.loads((run / "run.json").read_text())
    assert info["world"] == "door" and info["world_args"] == {"horizon": 3}
    assert info["prior"] == "boltzmann"
    assert info["imports"] == [{"module": "door_world", "path": str(run.parents[1] / "mods")}]


def test_compare_plot_render_reuse_the_imports(door_run, ray_session):
    run, elsewhere, _ = door_run
    out = run_cli(["compare", run, "--json", *address(ray_session)], cwd=elsewhere).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["num_states"] > 0 and 0.0 <= figures["tv_pi_r_s0"] <= 1.0

    out = run_cli(["plot", run, "--out", elsewhere / "pngs", *address(ray_session)],
                  cwd=elsewhere).stdout
    names = sorted(line.rsplit("/", 1)[-1] for line in out.split() if line.endswith(".png"))
    assert names == ["learned_vs_exact.png", "training_curves.png"]   # not a grid: no heat map

    out = run_cli(["render", run / "checkpoint", "--max-steps", "2", *address(ray_session)],
                  cwd=elsewhere).stdout
    assert out.count("--- t=") == 3 and "steps left 3" in out
    assert "robot action" in out and ("(open)" in out or "(close)" in out or "(nothing)" in out)


def test_import_is_accepted_by_every_checkpoint_command(door_run, ray_session, tmp_path):
    from rllib_empo.cli import build_parser
    for command in (["compare", "ckpt"], ["render", "ckpt"], ["plot", "run"]):
        args = build_parser().parse_args([*command, "--import", "a", "--import", "b.c"])
        assert args.imports == ["a", "b.c"]
    run, _, _ = door_run                      # and works: a copy of the module, found in cwd
    (tmp_path / "door_world.py").write_text(DOOR_WORLD_MODULE)
    run_cli(["plot", run, "--out", tmp_path / "p", "--import", "door_world",
             *address(ray_session)], cwd=tmp_path)
    assert (tmp_path / "p" / "learned_vs_exact.png").is_file()


def test_a_world_nobody_imports_is_a_one_line_error(door_run, ray_session, tmp_path):
    """Without run.json (a checkpoint copied elsewhere) the world is unknown: say so, and
    how to fix it."""
    import shutil
    run, _, _ = door_run
    shutil.copytree(run / "checkpoint", tmp_path / "ckpt")
    proc = run_cli(["compare", tmp_path / "ckpt", *address(ray_session)], cwd=tmp_path,
                   check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("rllib-empo: error: cannot load") and "--import MODULE" in last
    assert "Traceback" not in proc.stderr
