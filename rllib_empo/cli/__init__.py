"""The ``rllib-empo`` command line: ``train``, ``solve``, ``compare``, ``plot``, ``render``.

- ``parser``: the argument parser (every EmpoConfig field is a ``train`` flag) and the
  one-line usage errors;
- ``commands``: the subcommands.

May import everything else in the package; nothing imports this folder.
"""
from __future__ import annotations

import sys
import warnings
from typing import Optional, Sequence

from rllib_empo.cli.commands import COMMANDS
from rllib_empo.cli.parser import EXIT_USAGE, PROG, UsageError, build_parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``rllib-empo`` console script. Returns the exit status."""
    # Library deprecation warnings are noise on a command line (and would precede a one-line
    # usage error); the notices of a plain run are silenced by rllib_empo.algorithm.notices.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_USAGE


__all__ = ["main", "build_parser", "UsageError"]

if __name__ == "__main__":
    sys.exit(main())
