"""``rllib-empo``: train, solve, compare, plot and render from the command line.

    rllib-empo train   --world rock_gate --beta-r 10 --out runs/rg --compare
    rllib-empo solve   --world rock_gate --world-arg horizon=8
    rllib-empo compare runs/rg
    rllib-empo plot    runs/rg                      # PNGs next to the run's progress.jsonl
    rllib-empo render  runs/rg --episodes 1

``train`` takes every EmpoConfig field as a flag (``--beta-r 10``, ``--warmup-v-h-e-steps 200``,
``--x-h-use-network false``, ``--hidden-sizes 64,64``, ``--epsilon '[[0,0.5],[1000,0.05]]'``).
Without ``--updates`` or ``--iterations`` it trains a complete run: ``DEFAULT_RUN_FACTOR``
times the end of the beta_r ramp, in learner updates (20,000 with the default warm-up). It
shows one progress bar that updates in place (plain lines when stdout is not a terminal),
prints a summary at the end, and writes into ``--out``: ``progress.jsonl`` (one row per
iteration, the TensorBoard scalars), ``run.json`` (command line, world, world arguments,
imported modules, stage boundaries), ``tensorboard/`` (unless ``--tensorboard-dir none``) and
``checkpoint/`` at the end (also after Ctrl-C).

Mistakes in the arguments (an unknown flag, a value out of range, an unknown world, a missing
checkpoint, a world too large for the exact solver) print one line ``rllib-empo: error: ...``
on stderr and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from rllib_empo.algorithm.empo import EmpoConfig
from rllib_empo.algorithm.fields import FIELDS
from rllib_empo.analysis.progress_bar import MODES
from rllib_empo.theory.params import EmpoParams

PROG = "rllib-empo"
EXIT_USAGE = 2
#: ``train`` without --updates or --iterations runs this many times the end of the beta_r
#: ramp (E5): the whole warm-up, then three times as long in full training (20,000 updates
#: with the default warm-up: the fidelity matrix's budget for worlds up to 30,000 states,
#: in which the defaults converge on rock_gate and corridor; the README's fidelity table).
DEFAULT_RUN_FACTOR = 4


class UsageError(Exception):
    """A mistake in the command line: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):                       # one line, no usage block
        raise UsageError(message)


# ------------------------------------------------------------------ value parsers
def _bool(text: str) -> bool:
    t = str(text).strip().lower()
    if t in ("1", "true", "yes", "on", "y"):
        return True
    if t in ("0", "false", "no", "off", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _none_or(parse):
    def p(text: str):
        return None if str(text).strip().lower() in ("none", "null", "") else parse(text)
    p.__name__ = getattr(parse, "__name__", "value")
    return p


def _int_tuple(text: str) -> tuple:
    try:
        return tuple(int(x) for x in str(text).replace(" ", "").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints like 64,64, got {text!r}")


def _epsilon(text: str):
    try:
        return float(text)
    except ValueError:
        pass
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(
            f"expected a float or a JSON list of [step, value] pairs, got {text!r}")
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError(f"expected a float or a JSON list, got {text!r}")
    return [tuple(p) if isinstance(p, list) else p for p in value]


def _literal(text: str) -> Any:
    """World arguments: JSON values (3, 0.5, true, "x", [1,2]); anything else is a str."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _field_parser(field):
    d = field.default
    if field.name == "epsilon":
        return _epsilon
    if field.name == "hidden_sizes":
        return _int_tuple
    if field.name == "tensorboard_dir":
        return str                                  # "none" disables (see _fields)
    if isinstance(d, bool):
        return _bool
    if isinstance(d, int):
        return int
    if isinstance(d, float):
        return float
    if d is None:                                   # learning_starts, max_successors
        return _none_or(int)
    return str


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# ------------------------------------------------------------------ arguments
EQUATION_FIELDS = EmpoParams.names()      # the flags of ``solve``


def _int_at_least(low: int):
    """An int >= ``low`` (argparse reports anything else as a one-line error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int >= {low}, got {text!r}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}, got {value}")
        return value
    parse.__name__ = f"int >= {low}"
    return parse


def _human(text: str):
    return "all" if str(text).strip().lower() == "all" else _int_at_least(0)(text)


#: The exact solver's default limit, shared by ``solve --max-states`` and the config field
#: ``exact_max_states`` that ``train --compare``, ``compare`` and ``plot`` use.
DEFAULT_MAX_STATES = next(f.default for f in FIELDS if f.name == "exact_max_states")


def _add_world_args(p) -> None:
    g = p.add_argument_group("world")
    g.add_argument("--world", default="rock_gate",
                   help="world name (rock_gate, corridor, crowd, or one registered by --import)")
    g.add_argument("--world-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="world constructor argument, e.g. horizon=8 (repeatable)")
    g.add_argument("--prior", default=None, choices=("boltzmann", "uniform", "heuristic"),
                   help="human prior (default: the world's default)")
    g.add_argument("--beta-h", type=float, default=None,
                   help="concentration beta_h of the human prior (default 10)")
    _add_import_arg(g)


def _add_import_arg(g) -> None:
    g.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first, e.g. one that calls register_world (repeatable; "
                        "the current directory is searched too)")


def _add_field_args(p, names=None) -> None:
    g = p.add_argument_group("EmpoConfig fields (defaults: see `rllib-empo train --help`)")
    for f in FIELDS:
        if names is not None and f.name not in names:
            continue
        extra = dict(nargs="?", const=True, metavar="BOOL") if isinstance(f.default, bool) \
            else dict(metavar="V")
        g.add_argument(_flag(f.name), dest=f"field_{f.name}", type=_field_parser(f),
                       default=None, help=f"{f.doc} Default {f.default!r}.".replace("%", "%%"),
                       **extra)


def _add_ray_args(p) -> None:
    g = p.add_argument_group("ray")
    g.add_argument("--address", default=None,
                   help="Ray cluster address (default: start a local Ray)")
    g.add_argument("--num-cpus", type=_int_at_least(1), default=None,
                   help="CPUs of a local Ray (default: all of this machine's)")


def _add_checkpoint_args(p, what: str) -> None:
    p.add_argument("checkpoint", help=f"{what}: a checkpoint directory, or the run directory "
                                      "of `rllib-empo train` (its checkpoint/)")
    g = p.add_argument_group("custom worlds")
    _add_import_arg(g)


def _add_exact_limit(p) -> None:
    p.add_argument("--exact-max-states", type=_int_at_least(1), default=None, metavar="N",
                   help="largest world (reachable states) the exact solver enumerates (default: "
                        "the checkpoint's exact_max_states)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="EMPO phase 2 on RLlib: train, solve, compare, plot, "
                                       "render.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    t = sub.add_parser("train", help="train on a world; progress, TensorBoard, checkpoint")
    _add_world_args(t)
    g = t.add_argument_group("run")
    g.add_argument("--updates", type=_int_at_least(1), default=None, metavar="N",
                   help="stop once N learner updates are done (default: a complete run, "
                        f"{DEFAULT_RUN_FACTOR} x the end of the beta_r ramp: "
                        f"{DEFAULT_RUN_FACTOR * EmpoConfig().schedule.ends[-1]} updates with "
                        "the default warm-up)")
    g.add_argument("--iterations", type=_int_at_least(1), default=None, metavar="N",
                   help="stop after N train() calls instead (each runs up to "
                        "updates_per_iteration learner updates)")
    g.add_argument("--out", default=None, help="output directory (default runs/<world>-<time>)")
    g.add_argument("--num-env-runners", type=_int_at_least(0), default=0, metavar="N",
                   help="remote EnvRunner processes (default 0: sample in this process)")
    defaults = EmpoConfig()
    g.add_argument("--num-envs-per-env-runner", type=_int_at_least(1), default=None, metavar="N",
                   help="envs each EnvRunner steps together "
                        f"(default {defaults.num_envs_per_env_runner})")
    g.add_argument("--rollout-fragment-length", type=_int_at_least(1), default=None,
                   metavar="N", help="env steps per env, EnvRunner and train() call "
                                     f"(default {defaults.rollout_fragment_length})")
    g.add_argument("--train-batch-size", type=_int_at_least(1), default=None, metavar="N",
                   help="train_batch_size_per_learner "
                        f"(default {defaults.train_batch_size_per_learner})")
    g.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="seed of the run: networks, sampling, minibatches (default 0)")
    g.add_argument("--compare", action="store_true",
                   help="solve the world exactly before training (a world too large stops at "
                        "once), log the fidelity about 20 times during the run (unless "
                        "--exact-eval-interval is given) and compare at the end")
    g.add_argument("--progress", choices=MODES, default="auto",
                   help="a bar that updates in place, plain lines, or nothing (default auto: "
                        "a bar on a terminal, lines otherwise)")
    g.add_argument("--quiet", action="store_true",
                   help="no progress display (same as --progress none; the summary still prints)")
    _add_ray_args(t)
    _add_field_args(t)

    s = sub.add_parser("solve", help="exact solution of a small world")
    _add_world_args(s)
    s.add_argument("--max-states", type=_int_at_least(1), default=DEFAULT_MAX_STATES,
                   metavar="N", help="largest world (reachable states) to enumerate, whichever "
                                     f"the prior (default {DEFAULT_MAX_STATES}, the default of "
                                     "the config field exact_max_states)")
    _add_field_args(s, EQUATION_FIELDS)

    c = sub.add_parser("compare", help="a checkpoint against the exact solution")
    _add_checkpoint_args(c, "what to compare")
    c.add_argument("--json", action="store_true", help="print the figures as JSON")
    _add_exact_limit(c)
    _add_ray_args(c)

    pl = sub.add_parser("plot", help="PNG plots of a run")
    pl.add_argument("run", help="run directory (with progress.jsonl) or a progress.jsonl file")
    pl.add_argument("--checkpoint", default=None,
                    help="checkpoint for the learned-vs-exact and heat-map plots "
                         "(default: <run>/checkpoint if present)")
    pl.add_argument("--out", default=None, help="directory for the PNGs (default: the run's)")
    pl.add_argument("--quantity", default="x_h", choices=("x_h", "v_r"),
                    help="heat map of X_h, each human's aggregate power (default), or of V_r, "
                         "the robot's value")
    pl.add_argument("--human", type=_human, default="all", metavar="I|all",
                    help="whose X_h: a position in human_agent_indices, or all (default)")
    pl.add_argument("--episodes", type=_int_at_least(1), default=50,
                    help="rollouts for the heat map when the world is too large to solve "
                         "(default 50)")
    g = pl.add_argument_group("custom worlds")
    _add_import_arg(g)
    _add_exact_limit(pl)
    _add_ray_args(pl)

    r = sub.add_parser("render", help="text frames of a rollout of the learned policy")
    _add_checkpoint_args(r, "whose policy to play")
    r.add_argument("--episodes", type=_int_at_least(1), default=1,
                   help="episodes to play (default 1)")
    r.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="seed of the first episode; episode i uses seed + i (default 0)")
    r.add_argument("--max-steps", type=_int_at_least(1), default=200,
                   help="stop an episode after this many steps (default 200)")
    _add_ray_args(r)
    return p
