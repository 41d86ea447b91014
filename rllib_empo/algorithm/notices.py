"""Notices of Ray, RLlib and gymnasium that a plain EMPO run prints but no EMPO user can act
on, silenced once per process (importing ``rllib_empo.algorithm`` calls :func:`silence`, so
EnvRunner and Learner actors, which import it to unpickle the EMPO classes, are quiet too).

Each one is silenced narrowly, by the exact key or message, never by lowering a logger's
level, so every other warning of these libraries still shows:

- "You are running Empo on the new API stack!": EMPO exists only on the new API stack
  (``algorithm_config.py`` logs it once per algorithm class, keyed by ``log_once``).
- "`RLModule(config=[RLModuleConfig object])` has been deprecated": RLlib 2.60's own
  ``RLModule.__init__`` builds an ``RLModuleConfig`` for backward compatibility, whatever
  constructor the caller used; EMPO builds its module with the current one
  (``RLModule(observation_space=.., action_space=.., model_config=..)``).
- "Install gputil for GPU system monitoring.": Tune's ``UtilMonitor`` says so at every
  Trainable's start on a machine without ``GPUtil``; EMPO trains on CPUs.
- gymnasium's "Overriding environment rllib-single-agent-env-v0 already in registry": each
  local EnvRunner registers that id again, so a second algorithm in one process warns.
"""
from __future__ import annotations

import logging
import warnings

#: ``ray.util.log_once`` keys of the notices RLlib logs once per process.
LOG_ONCE_KEYS = ("Empo_on_new_api_stack", "RLModule(config=[RLModuleConfig object])")
#: (logger name, message prefix) of notices logged without ``log_once``.
LOGGED_NOTICES = (("ray.tune.utils.util", "Install gputil for GPU system monitoring"),)
#: A warnings-filter regex: gymnasium colours its message, hence the leading ``.*``.
GYM_OVERRIDE = r".*Overriding environment rllib-single-agent-env-v0 already in registry"


class _DropPrefix(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


_done = False


def silence() -> None:
    """Silence the notices of the module docstring in this process (idempotent)."""
    global _done
    if _done:
        return
    _done = True
    from ray.util import log_once
    for key in LOG_ONCE_KEYS:
        log_once(key)                 # taken now: RLlib's own call then returns False
    for name, prefix in LOGGED_NOTICES:
        logging.getLogger(name).addFilter(_DropPrefix(prefix))
    warnings.filterwarnings("ignore", message=GYM_OVERRIDE, category=UserWarning)
