"""``python -m rllib_empo.cli``: the ``rllib-empo`` command."""
import sys

from rllib_empo.cli import main

sys.exit(main())
