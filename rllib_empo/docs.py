"""README sections generated from the code, so the docs cannot drift from it.

README.md marks each generated section with ``<!-- BEGIN name -->`` / ``<!-- END name -->``.
``python -m rllib_empo.docs`` rewrites them; ``python -m rllib_empo.docs --check`` fails if
any differs (tests/test_docs.py runs the check).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path


def _stages() -> str:
    from rllib_empo.config import EmpoConfig
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
    from rllib_empo.fields import config_fields_table
    return config_fields_table()


def _metrics() -> str:
    from rllib_empo.algorithm import METRICS
    lines = ["| Metric (result key / TensorBoard tag) | Meaning |", "|---|---|"]
    lines += [f"| `{name}` | {doc} |" for name, doc in METRICS]
    return "\n".join(lines)


def _exact_rock_gate() -> str:
    from rllib_empo.exact import solve
    from rllib_empo.humans import BoltzmannHumanPrior
    from rllib_empo.worlds import make_world
    world = make_world("rock_gate")
    prior = BoltzmannHumanPrior.solve(world, beta_h=10.0, gamma_h=0.99)
    sol = solve(world, prior, beta_r=10.0, gamma_h=0.99, gamma_r=1.0, zeta=2.0, xi=1.0, eta=1.1)
    names = ["stay", "up", "down", "left", "right"]
    rows = "\n".join(f"| {a} | {n} | {q:.4f} | {p:.4f} |"
                     for a, (n, q, p) in enumerate(zip(names, sol.Q[0], sol.PI[0])))
    return (f"```\n{world.render(sol.initial_state)}\n```\n\n"
            f"{sol.num_states} reachable states. At the initial state: "
            f"V_r = {sol.V_R[0]:.4f}, U_r = {sol.U_R[0]:.4f}, X_h = {sol.X_H[0, 0]:.4f}.\n\n"
            "| a_r | robot move | Q_r(s0, a_r) | pi_r(a_r \\| s0) |\n|---|---|---|---|\n" + rows)


def _quickstart() -> str:
    path = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
    text = path.read_text()
    start, end = "# --- README quickstart start ---\n", "# --- README quickstart end ---"
    return "```python\n" + text[text.index(start) + len(start):text.index(end)] + "```"


SECTIONS = {"quickstart": _quickstart, "stages": _stages, "config": _config, "metrics": _metrics,
            "exact-rock-gate": _exact_rock_gate}


def _troubleshooting() -> str:
    from rllib_empo.troubleshooting import render
    return render()


def sections() -> dict:
    out = dict(SECTIONS)
    try:
        import rllib_empo.troubleshooting  # noqa: F401
        out["troubleshooting"] = _troubleshooting
    except ImportError:
        pass
    return out


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
