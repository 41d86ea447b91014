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
RESULTS = BENCHMARKS / "results.json"                 # python -m benchmarks.run_all


def _benchmarks() -> None:
    """The repository's benchmarks package (a top-level folder, not installed) is imported
    from the repository root, as this folder is."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


MATRIX = BENCHMARKS / "fidelity_matrix.json"       # python -m benchmarks.fidelity_matrix
FIGURE_NAMES = {"tv_pi_r_s0": "TV(pi_r, s0)", "v_r_s0_rel_error": "V_r(s0) error",
                "mean_tv_pi_r": "mean TV", "mean_abs_v_h_e_error": "mean \\|dV_h^e\\|",
                "mean_tv_pi_r_decision": "decision TV",
                "greedy_agreement_clear": "greedy right (clear)"}


def _every(cells) -> str:
    steps = sorted({round((c["curve"][1]["num_updates"] - c["curve"][0]["num_updates"]), -2)
                    for c in cells if len(c["curve"]) > 1})
    return " or ".join(f"{s:,.0f}" for s in steps) or "n/a"


def _fidelity() -> str:
    """The fidelity matrix (benchmarks/fidelity_matrix.json): the defaults on each world and
    seed against the exact solution, with the bars of CONVERGENCE_BARS."""
    import json
    _benchmarks()
    from benchmarks.fidelity_matrix import summary_rows
    from rllib_empo.exact.compare import CONVERGENCE_BARS
    data = json.loads(MATRIX.read_text())
    rows = summary_rows(data)

    def worst(values, key):
        vals = [v for v in values if v is not None]
        if not vals:
            return "n/a"
        v = min(vals) if CONVERGENCE_BARS[key][0] == ">=" else max(vals)
        if key in ("greedy_agreement_clear", "v_r_s0_rel_error"):
            return f"{v:.1%}"
        return f"{v:.3f}" if v >= 0.001 else f"{v:.1e}"

    head = ("| world (states) | seeds | updates (training time) | every bar first met at "
            "(per seed) | stayed after |"
            + "".join(f" {FIGURE_NAMES[k]} |" for k in CONVERGENCE_BARS) + "\n|"
            + "---|" * (5 + len(CONVERGENCE_BARS)) + "\n")
    bars = ("| *bar* | | | | |" + "".join(f" {d} {b:.0%} |" if k in ("v_r_s0_rel_error",
                                                                       "greedy_agreement_clear")
                                           else f" {d} {b} |"
                                           for k, (d, b) in CONVERGENCE_BARS.items()) + "\n")
    lines, notes = [], []
    for r in rows:
        seeds = ", ".join(map(str, r["seeds"]))
        if not r["exact"]:
            res = ", ".join(f"{k} {max(v for v in vs if v is not None):.3g}"
                            for k, vs in r["final_residual"].items() if any(vs))
            notes.append(f"{r['world']} is too large for the exact solver; its final residuals "
                         f"(worst seed): {res}.")
            continue
        first = ", ".join("not met" if f is None else f"{f:,}" for f in r["first_met"])
        stayed = ", ".join({True: "yes", False: "no", None: "-"}[s] for s in r["stayed"])
        minutes = ", ".join(f"{s / 60:.0f}" for s in r["train_s"])
        lines.append(f"| {r['world']} ({r['num_states']:,}) | {seeds} | {r['updates']:,} "
                     f"({minutes} min) | "
                     f"{first} | {stayed} |"
                     + "".join(f" {worst(r['final'][k], k)} |" for k in CONVERGENCE_BARS))
        if any(f is not None for f in r["first_met"]):
            lines.append("| *worst after first met* | | | | |" + "".join(
                f" {worst(r['worst_after'][k], k)} |" for k in CONVERGENCE_BARS))
    cells = list(data["cells"].values())
    dates = sorted(c["date"] for c in cells)
    text = (head + bars + "\n".join(lines) + "\n\n"
            "Figures at the last evaluation, the worst seed's, and below them the worst value "
            "of each figure from the first evaluation that met every bar on; \"stayed after\" says whether "
            f"every later evaluation (every {_every(cells)} updates) met every bar too; training "
            "time per seed on this shared machine, evaluations excluded. ")
    corr = [c for r in rows if r["exact"] for c in r["rank_correlation"] if c == c]
    if corr:
        text += ("Spearman's rank correlation along the runs between `Residual/q_r` (no exact "
                 f"solution needed) and the exact mean TV: {min(corr):.2f} to {max(corr):.2f}. ")
    text += (f"Recorded {dates[0]} to {dates[-1]} ({data.get('machine', 'this machine')}) by "
             "`python -m benchmarks.fidelity_matrix`: `EmpoConfig().environment(<world>)"
             ".debugging(seed=<seed>)` with nothing else set, `num_env_runners=0`.")
    from benchmarks.fidelity_matrix import SEEDS, WORLDS
    done = {(c["world"], c["seed"]) for c in cells}
    missing = [f"{w} (seeds {', '.join(str(s) for s in SEEDS if (w, s) not in done)})"
               for w in WORLDS if any((w, s) not in done for s in SEEDS)]
    if missing:
        notes.append("Not run yet: " + "; ".join(missing) + ".")
    from benchmarks.common import defaults_phrase
    stale = {}
    for c in sorted(cells, key=lambda c: (c["world"], c["seed"])):
        phrase = defaults_phrase(c.get("fields"))
        if phrase != "on the defaults":
            stale.setdefault(phrase, []).append(f"{c['world']} seed {c['seed']}")
    for phrase, which in stale.items():
        notes.append(f"{', '.join(which)}: {phrase}.")
    return text + ("\n\n" + " ".join(notes) if notes else "")


def _performance() -> str:
    """The benchmark suite's headline figures (benchmarks/results.json)."""
    import json
    _benchmarks()
    from benchmarks.common import fmt_value
    from benchmarks.run_all import headline_lines
    r = json.loads(RESULTS.read_text())
    m = r["_meta"]["machine"]

    def v(key: str, unit: str = "", prefix: str = "") -> str:
        value = r.get(key)
        return "n/a" if value is None else f"{prefix}{fmt_value(value)}{unit}"

    seeds = r.get("time_to_fidelity_s_per_seed") or []
    cap = r.get("time_to_fidelity_cap_s")
    per_seed = (", ".join(f">{cap:.0f}" if t is None else f"{t:.0f}" for t in seeds)
                + f" s of training ({len(seeds)} seed{'s' if len(seeds) != 1 else ''})"
                if seeds else "n/a")
    return ("\n".join(headline_lines(r)) + "\n\n"
            f"Measured with `python -m benchmarks.run_all` on {m['nproc']} CPUs ({m['cpu_model']}), "
            "a machine shared with other work: RESULTS.md gives the load average beside every "
            "section, CPU-time rates beside wall rates, and ratios measured within one run. Every "
            "figure, how it is measured and the scaling study are in "
            "[`benchmarks/RESULTS.md`](benchmarks/RESULTS.md). In words: an EnvRunner with one "
            f"env steps rock_gate at {v('sampling_env_steps_per_s_per_runner_rock_gate')} steps/s "
            f"including the successor tables (lanes {v('sampling_env_steps_per_s_per_runner_lanes')}); "
            "with all five networks at batch 64 the learner runs "
            f"{v('learner_updates_per_s_b64')} updates/s on rock_gate, "
            f"{v('learner_updates_per_s_b64_lanes')} on lanes ({v('learner_lanes_over_rock_gate', prefix='x')} "
            f"rock_gate's rate in the same run) and {v('learner_updates_per_s_b64_crowd_h3')} on "
            "crowd with 3 humans, taking "
            f"{v('learner_rllib_time_over_plain_b64_rock_gate', prefix='x')} the time per update of a plain-torch "
            "loop that does the same passes without RLlib (rock_gate); the target networks run "
            f"{v('target_dedup_factor_rock_gate', prefix='x')} less often than at every padded successor slot "
            f"({v('target_dedup_factor_lanes', prefix='x')} on lanes); a replay transition costs "
            f"{v('bytes_per_transition_rock_gate')} bytes on rock_gate and "
            f"{v('bytes_per_transition_lanes')} on lanes, and the default 100,000-row replay memory "
            f"takes at most {v('replay_default_capacity_max_mib')} MiB on any built-in world; "
            f"`build_algo()` takes {v('build_s_lanes', ' s')} on lanes by name and "
            f"{v('build_s_lanes_instance', ' s')} with a World instance; the demo beside a competing "
            f"CPU-bound process takes {v('threads_busy_over_idle', prefix='x')} its time without; "
            "the defaults on rock_gate meet the demo's bars (TV(pi_r, s0), V_r(s0) error and mean "
            f"TV <= 0.05) after {per_seed}." + _soak_sentence())


def _soak_sentence() -> str:
    import json
    from benchmarks.common import defaults_phrase
    path = BENCHMARKS / "soak.json"
    if not path.exists():
        return ""
    rec = json.loads(path.read_text())
    r, s = rec["record"], rec["summary"]
    m, t, f = s["memory"], s["time_per_iteration"], s["fidelity"]
    return (f" A {r['minutes']:g}-minute soak run ({s['final_num_updates']:,} updates"
            f"{', ' + rec['record']['date'] if rec['record'].get('date') else ''}): memory "
            + {True: "flat", False: "GREW", None: "inconclusive"}[m.get("flat")]
            + f" once the buffer was full ({m['growth_mb']:+.1f} MB), time per iteration "
            + ("steady" if t.get("no_growth") else "GREW")
            + f" (x{t['ratio']:.2f} from the first to the last quarter)"
            + (f", and never met every convergence bar (final mean TV over states "
               f"{f['final']['mean_tv_pi_r']:.4f})" if f["reached_at_iteration"] is None else
               f", and after first meeting every convergence bar at "
               f"{f['reached_at_updates']:,} updates ({f['reached_at_s']:.0f} s) "
               f"{f['evaluations_after_missing_a_bar']} of its {f['evaluations_after']} later "
               f"evaluations missed a bar (worst TV(pi_r, s0) {f['worst_after_reaching']['tv_pi_r_s0']:.3f}, "
               f"worst mean TV {f['worst_after_reaching']['mean_tv_pi_r']:.3f})")
            + f", {defaults_phrase(r.get('fields'))}; section 8 of RESULTS.md.")


TABLE_COST_WORLDS = (("rock_gate", "rock_gate", "1,008 states, 1 human"),
                     ("corridor", "corridor", "2 humans"),
                     ("lanes", "lanes", "28,137 states, 2 humans, 64 joint actions"),
                     ("vault", "vault", "208,995 states, 1 human"),
                     ("crowd", "crowd", "> 10^6 states, 2 humans, sampled human actions"),
                     ("crowd_h3", "crowd, 3 humans", "sampled human actions"))


def _table_cost() -> str:
    """What the replay memory, the build and the learner cost per built-in world, from
    benchmarks/results.json."""
    import json
    _benchmarks()
    from benchmarks.common import fmt_value
    r = json.loads(RESULTS.read_text())

    def v(key: str, scale: float = 1.0, unit: str = "") -> str:
        value = r.get(key)
        return "n/a" if value is None else f"{fmt_value(value * scale)}{unit}"

    lines = ["| world | bytes per transition | of which the stores, at 100,000 rows | replay "
             "memory at 100,000 rows | `build_algo()` | env steps/s (1 EnvRunner, 1 env) | "
             "learner updates/s (B=64, 5 networks) |", "|---|---|---|---|---|---|---|"]
    for case, name, what in TABLE_COST_WORLDS:
        extrapolated = " (extrapolated)" if r.get(f"replay_default_capacity_extrapolated_{case}") else ""
        learner = "learner_updates_per_s_b64" + ("" if case == "rock_gate" else f"_{case}")
        lines.append(
            f"| {name} ({what}) | {v(f'bytes_per_transition_{case}', unit=' B')}{extrapolated} | "
            f"{v(f'store_bytes_{case}', 2 ** -20, ' MiB')} | "
            f"{v(f'replay_default_capacity_mib_{case}', unit=' MiB')} | "
            f"{v(f'build_s_{case}', unit=' s')} | "
            f"{v(f'sampling_env_steps_per_s_per_runner_{case}')} | {v(learner)} |")
    return ("\n".join(lines) + "\n\n"
            "Measured by `python -m benchmarks.run_all` (memory, build, sampling, learner; the "
            "details and the load average are in `benchmarks/RESULTS.md`). A replay row is 12 "
            "bytes (table slot, weight); every distinct goal, state and successor table is stored "
            "once and shared by the rows that reach it, so a transition costs the ring's 12 bytes "
            "plus the stores' bytes shared out over the rows. The memory is filled with 100,000 "
            "rows of uniform random robot actions (the warm-up's behaviour policy); "
            "\"extrapolated\" marks a world filled to fewer rows, scaled linearly (an upper bound: "
            "revisited states add nothing). crowd uses the heuristic prior and the step's sampled "
            "human actions (`sum_human_actions=False`): a fresh successor table on nearly every "
            "step. `build_algo()` includes solving the exact phase-1 human prior on the "
            "enumerable worlds.")


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
