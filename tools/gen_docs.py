"""README sections generated from the code, so the docs cannot drift from it.

README.md marks each generated section with ``<!-- BEGIN name -->`` / ``<!-- END name -->``.
``make docs`` (``python -m tools.gen_docs``) rewrites them; ``python -m tools.gen_docs
--check`` fails if any differs (tests/test_docs.py runs the check). This folder lives outside
the package: it reads the package, the examples and the benchmarks' recorded results, and
nothing in ``rllib_empo`` imports it.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path


def _stages() -> str:
    from rllib_empo.algorithm.empo import EmpoConfig
    default = EmpoConfig()
    every = EmpoConfig().training(u_r_use_network=True, v_r_use_network=True)
    return ("With the defaults (`u_r_use_network=False`, `v_r_use_network=False`, so stages 2 "
            "and 4 are skipped):\n\n" + default.format_stages_table() +
            "\n\nWith every network enabled (`u_r_use_network=True, v_r_use_network=True`):\n\n"
            + every.format_stages_table() +
            "\n\nReplay buffer cleared at steps (defaults): "
            f"{', '.join(map(str, default.schedule.clear_points))}; with every network: "
            f"{', '.join(map(str, every.schedule.clear_points))}.")


def _config() -> str:
    from rllib_empo.algorithm.fields import config_fields_table
    return config_fields_table()


def _metrics() -> str:
    from rllib_empo.algorithm.metrics import METRICS
    lines = ["| Metric (result key / TensorBoard tag) | Meaning |", "|---|---|"]
    lines += [f"| `{name}` | {doc} |" for name, doc in METRICS]
    return "\n".join(lines)


#: The rock_gate problem of the README's exact table and of its command-line example: both
#: are generated from this, so a user who runs the commands gets the table's numbers.
ROCK_GATE_PRIOR = {"prior": "boltzmann", "beta_h": 10.0}
ROCK_GATE_PARAMS = {"beta_r": 10.0, "gamma_r": 1.0, "gamma_h": 0.99, "zeta": 2.0, "xi": 1.0,
                    "eta": 1.1}


def _flags(values: dict) -> str:
    return " ".join(f"--{k.replace('_', '-')} {v:g}" if isinstance(v, float) else
                    f"--{k.replace('_', '-')} {v}" for k, v in values.items())


def rock_gate_solve_command() -> str:
    return f"rllib-empo solve --world rock_gate {_flags({**ROCK_GATE_PRIOR, **ROCK_GATE_PARAMS})}"


def _cli() -> str:
    train = (f"rllib-empo train --world rock_gate {_flags({**ROCK_GATE_PRIOR, **ROCK_GATE_PARAMS})}"
             " --out runs/rg --compare")
    return ("```bash\n"
            f"{train}\n"
            f"{rock_gate_solve_command()}\n"
            "rllib-empo compare runs/rg\n"
            "rllib-empo plot runs/rg            # training curves, learned vs exact, heat map (PNG)\n"
            "rllib-empo render runs/rg\n"
            "```")


def _exact_rock_gate() -> str:
    from rllib_empo.analysis.rollout import action_name
    from rllib_empo.exact import solve
    from rllib_empo.exact.priors import BoltzmannHumanPrior
    from rllib_empo.worlds import make_world
    world = make_world("rock_gate")
    prior = BoltzmannHumanPrior.solve(world, beta_h=ROCK_GATE_PRIOR["beta_h"],
                                      gamma_h=ROCK_GATE_PARAMS["gamma_h"])
    sol = solve(world, prior, **ROCK_GATE_PARAMS)
    rows = "\n".join(f"| {a} | {action_name(world, a)} | {q:.4f} | {p:.4f} |"
                     for a, (q, p) in enumerate(zip(sol.Q[0], sol.PI[0])))
    return (f"`{rock_gate_solve_command()}` solves it (the same problem as the command-line "
            "example below):\n\n"
            f"```\n{world.render(sol.initial_state)}\n```\n\n"
            f"{sol.num_states} reachable states. At the initial state: "
            f"V_r = {sol.V_R[0]:.4f}, U_r = {sol.U_R[0]:.4f}, X_h = {sol.X_H[0, 0]:.4f}.\n\n"
            "| a_r | robot move | Q_r(s0, a_r) | pi_r(a_r \\| s0) |\n|---|---|---|---|\n" + rows)


def _quickstart() -> str:
    path = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
    text = path.read_text()
    start, end = "# --- README quickstart start ---\n", "# --- README quickstart end ---"
    return "```python\n" + text[text.index(start) + len(start):text.index(end)] + "```"


ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
FIDELITY_RUN = BENCHMARKS / "fidelity_run.json"       # python benchmarks/fidelity.py --json ...
RESULTS = BENCHMARKS / "results.json"                 # python -m benchmarks.run_all


def _benchmarks() -> None:
    """The repository's benchmarks package (a top-level folder, not installed) is imported
    from the repository root, as this folder is."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def _fidelity() -> str:
    """The last recorded run of benchmarks/fidelity.py (its --json report)."""
    import json
    _benchmarks()
    from benchmarks.fidelity import BARS
    r = json.loads(FIDELITY_RUN.read_text())
    fin = r["final"]
    rows = "\n".join(f"| `{k}` | {fin[k]:.4f} | <= {bar} | {'met' if fin[k] <= bar else 'MISSED'} | "
                     f"{_first_met(r, k)} |" for k, bar in BARS.items())
    return (f"`python benchmarks/fidelity.py --seed {r['seed']} --budget {r['budget_s']:.0f} "
            "--save PATH --json benchmarks/fidelity_run.json` "
            f"(recorded {r.get('date', 'unknown date')}, {r.get('machine', 'this machine')}): "
            f"{fin['num_updates']:,} learner updates in {fin['train_s']:.0f} s of training, "
            f"**{r['wall_s']:.0f} s wall time** in all (building the algorithm, the exact "
            "solution and the evaluations included).\n\n"
            "| figure (against `exact.solve`) | at the end | bar | status | first met after |\n"
            "|---|---|---|---|---|\n" + rows + "\n\n"
            f"Greedy actions that agree with the exact argmax over all states: "
            f"{fin['argmax_agreement']:.1%}. The checkpoint that `--save` writes loads with "
            "`Empo.from_checkpoint(PATH)`; `rllib-empo compare PATH` re-evaluates it independently.")


def _first_met(report: dict, key: str) -> str:
    t = report["first_met_s"].get(key)
    return "not met" if t is None else f"{t:.0f} s of training"


def _performance() -> str:
    """The benchmark suite's headline figures (benchmarks/results.json)."""
    import json
    _benchmarks()
    from benchmarks.run_all import headline_lines
    r = json.loads(RESULTS.read_text())
    m = r["_meta"]["machine"]
    per_seed = ", ".join(f"{t:.0f}" for t in r["time_to_fidelity_s_per_seed"])
    return ("\n".join(headline_lines(r)) + "\n\n"
            f"Measured with `python -m benchmarks.run_all` on {m['nproc']} CPUs ({m['cpu_model']}); "
            "every figure, how it is measured and the scaling study are in "
            "[`benchmarks/RESULTS.md`](benchmarks/RESULTS.md). In words: an EnvRunner with one "
            f"env steps rock_gate at {r['sampling_env_steps_per_s_per_runner_rock_gate']:,.0f} "
            f"steps/s including the successor tables ({r['sampling_rock_gate_nr0_ne4_per_runner']:,.0f} "
            "with 4 envs per runner); the learner runs "
            f"{r['learner_updates_per_s_b64']:.0f} updates/s at batch 64 with all five networks; "
            f"the fidelity bars at s0 are reached after {per_seed} s (3 seeds); a 100,000-row "
            f"rock_gate buffer takes {r['buffer_rss_mb_100k_rock_gate']:,.0f} MiB; the exact "
            f"solver needs {r['exact_1e5_states_s_rock_gate']:.0f} s for the first rock_gate "
            "variant with more than 10^5 states." + _soak_sentence())


def _soak_sentence() -> str:
    import json
    path = BENCHMARKS / "soak.json"
    if not path.exists():
        return ""
    rec = json.loads(path.read_text())
    r, s = rec["record"], rec["summary"]
    m, t, f = s["memory"], s["time_per_iteration"], s["fidelity"]
    return (f" A {r['minutes']:g}-minute soak run ({s['final_num_updates']:,} updates) kept "
            f"memory flat once the buffer was full ({m['growth_mb']:+.1f} MB), time per "
            f"iteration steady (x{t['ratio']:.2f} from the first to the last quarter), and after "
            f"first meeting the s0 fidelity bars at {f['reached_at_s']:.0f} s its s0 figures "
            f"stayed at most {max(f['worst_after_reaching'].values()):.3f} (final mean TV over "
            f"states {f['final']['mean_tv_pi_r']:.4f}); section 6 of RESULTS.md.")


def _table_cost() -> str:
    """Per-row cost of the successor tables, from benchmarks/results.json."""
    import json
    r = json.loads(RESULTS.read_text())
    lines = ["| world | bytes per row (= per env step shipped) | replay buffer at 100,000 rows | "
             "bandwidth per EnvRunner (1 env) | build a table / cached | table work in a step |",
             "|---|---|---|---|---|---|"]
    for w in ("rock_gate", "crowd"):
        b, rate = r[f"bytes_per_transition_{w}"], r[f"sampling_{w}_nr0_ne1_per_runner"]
        lines.append(
            f"| {w} | {b:,} B | {r[f'replay_buffer_default_capacity_mb_{w}']:,.0f} MiB | "
            f"{b * rate / 1e6:.1f} MB/s at {rate:,.0f} steps/s | "
            f"{r[f'table_row_miss_us_{w}']:.0f} us / {r[f'table_row_hit_us_{w}']:.1f} us | "
            f"{r[f'sampling_table_share_steady_{w}']:.1%} once warm "
            f"({r[f'sampling_table_share_first_call_{w}']:.0%} in the first call) |")
    return ("\n".join(lines) + "\n\n"
            "Measured by `python -m benchmarks.run_all` (sampling and memory; the details are in "
            "`benchmarks/RESULTS.md`). rock_gate sums the human's actions out exactly "
            "(`sum_human_actions=True`); the crowd benchmark (10^6+ states, 2 humans) uses the "
            "step's sampled human actions instead (`sum_human_actions=False`), and its rows keep "
            "many more successor slots. The replay buffer's memory is `replay_capacity` x bytes "
            "per row once full: on crowd the default 100,000 rows would need "
            f"{r['replay_buffer_default_capacity_mb_crowd'] / 1024:.0f} GiB, so lower "
            "`replay_capacity` there "
            "(a buffer that cannot fit in RAM is refused at the first add, one over half the RAM "
            "logs a warning).")


def _first_line(path: Path) -> str:
    import ast
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    line = doc.strip().split("\n\n")[0].replace("\n", " ")
    line = re.sub(r":(mod|func|class|data):", "", re.sub(r"``?([^`]*)``?", r"\1", line))
    return line if len(line) <= 84 else line[:81].rsplit(" ", 1)[0] + " ..."


def _layout() -> str:
    """The package tree, each module with the first paragraph of its docstring."""
    pkg = ROOT / "rllib_empo"
    lines = ["rllib_empo/"]
    layers = ("theory", "worlds", "exact", "algorithm", "analysis", "cli")   # the import order
    entries = sorted(p for p in pkg.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists())
    for entry in sorted(entries, key=lambda p: (p.is_dir(), layers.index(p.name) if p.is_dir() else 0, p.name)):
        if entry.is_dir():
            lines.append(f"  {entry.name + '/':<17} {_first_line(entry / '__init__.py')}")
            for mod in sorted(entry.glob("*.py")):
                if mod.name not in ("__init__.py", "__main__.py"):
                    lines.append(f"    {mod.name:<17} {_first_line(mod)}")
        else:
            lines.append(f"  {entry.name:<19} {_first_line(entry)}")
    lines += ["docs/DESIGN.md       the design: maths, layers, data flow, decisions",
              "tools/               README generators (make docs); not installed",
              "examples/  tests/ (mirrors the sub-packages)  benchmarks/"]
    return "```\n" + "\n".join(lines) + "\n```"


SECTIONS = {"quickstart": _quickstart, "layout": _layout, "stages": _stages, "config": _config, "metrics": _metrics,
            "exact-rock-gate": _exact_rock_gate, "cli": _cli, "fidelity": _fidelity,
            "performance": _performance, "table-cost": _table_cost}


def _troubleshooting() -> str:
    from tools.troubleshooting import render
    return render()


def sections() -> dict:
    return {**SECTIONS, "troubleshooting": _troubleshooting}


def update(readme: Path, check: bool = False) -> list[str]:
    """Rewrite (or, with ``check``, compare) every generated section; return the names that
    differ (or are missing from the README)."""
    text = readme.read_text()
    differ = []
    for name, make in sections().items():
        pattern = re.compile(rf"(<!-- BEGIN {re.escape(name)} -->\n)(.*?)(<!-- END {re.escape(name)} -->)",
                             re.S)
        m = pattern.search(text)
        if m is None:
            differ.append(f"{name} (missing)")
            continue
        body = make().rstrip("\n") + "\n"
        if m.group(2) != body:
            differ.append(name)
            text = text[:m.start(2)] + body + text[m.end(2):]
    if not check:
        readme.write_text(text)
    return differ


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="fail if a section differs")
    ap.add_argument("--readme", default=str(Path(__file__).resolve().parents[1] / "README.md"))
    args = ap.parse_args(argv)
    differ = update(Path(args.readme), check=args.check)
    if differ:
        print(("differs: " if args.check else "updated: ") + ", ".join(differ))
    return 1 if (args.check and differ) else 0


if __name__ == "__main__":
    sys.exit(main())
