"""Faults on the sampling side: world errors that surface instead of stalling, EnvRunners that
are lost or keep failing, and fresh random streams after a restart.

What RLlib 2.60 does on its own, and why each piece below exists:

- An exception inside a remote EnvRunner's ``foreach`` call makes RLlib's actor ``apply()``
  log it, sleep ``delay_between_env_runner_restarts_s`` (60 s by default) and ``sys.exit(1)``.
  With restarts on, the runner comes back and meets the same world error again, forever;
  with restarts off, the driver gets an ``ActorDiedError`` without the world's message. On
  the local EnvRunner the error arrives as an empty ``RuntimeError`` with the real one as
  ``__cause__``. So ``EmpoEnvRunner.sample_rows`` returns the error in place of its rows
  (:func:`sampling_error`), and ``Empo._sample`` raises it on the driver in the same
  iteration. :func:`world_errors` turns a plain Python error in a world's code into a
  ``WorldProtocolError`` that names the world, the state and the action.
- ``foreach_env_runner`` swallows the failures of runners whose process died (when fault
  tolerance is on) and returns the others' rows. :class:`RunnerHealth` samples through the
  actor manager itself, so it sees which runner failed and why: a runner that fails
  ``max_env_runner_failures`` times in a row (restarted in between) stops training with the
  last error; without restarts a lost runner is logged and counted in ``Runners/num_lost``,
  and training stops once every runner is lost.
- A restarted EnvRunner runs ``__init__`` again with the same config, so it would replay
  the random stream of its first fragments. :meth:`RunnerHealth.restored` reseeds it from
  the seed, its index and its restart count (:func:`restart_seed`).
"""
from __future__ import annotations

import functools
import logging
import traceback
from collections import Counter
from typing import Any, Callable

import numpy as np

from rllib_empo.worlds.protocol import WorldProtocolError, short_repr, world_name

logger = logging.getLogger(__name__)

MAX_ERROR_TEXT = 2_000      # characters of a remote error (with its traceback) kept in messages


class EnvRunnerError(RuntimeError):
    """An EnvRunner failed in a way that stops training; the message says which and why."""


# ------------------------------------------------------------------ world errors
def world_errors(method: Callable) -> Callable:
    """Decorator for ``EmpoEnv.step``/``reset``: an exception from the world's own code that
    the checked accessors (``rllib_empo.worlds.protocol``) did not already report becomes a
    ``WorldProtocolError`` naming the world, the state the env was in, the action and the
    original error (kept as ``__cause__``; the message carries it across processes)."""

    @functools.wraps(method)
    def wrapper(env, *args, **kwargs):
        state = getattr(env, "state", None)
        try:
            return method(env, *args, **kwargs)
        except WorldProtocolError:
            raise
        except Exception as err:
            if method.__name__ == "step" and state is None:
                raise                      # not the world's fault: step() before reset()
            if method.__name__ == "step":
                action = args[0] if args else kwargs.get("action")
                where = f"stepping from state {short_repr(state)} with robot action {action!r}"
            else:
                where = "resetting"
            raise WorldProtocolError(f"world {world_name(env.world)!r}: {type(err).__name__}: "
                                     f"{err} (raised while {where})") from err
    return wrapper


def sampling_error(runner, err: BaseException) -> BaseException:
    """What ``sample_rows`` returns in place of its rows when sampling raised ``err``.

    A WorldProtocolError anywhere in the chain is returned as it is (its message names the
    world, the state and the problem). Any other error from the local EnvRunner is returned
    unwrapped (RLlib's empty ``RuntimeError`` removed), so the driver re-raises it with its
    traceback; from a remote EnvRunner it becomes an :class:`EnvRunnerError` carrying the
    traceback as text, because a traceback does not survive pickling."""
    chain, e = [], err
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    world = next((e for e in chain if isinstance(e, WorldProtocolError)), None)
    if world is not None:
        return world
    inner = err
    while isinstance(inner, RuntimeError) and not str(inner) and inner.__cause__ is not None:
        inner = inner.__cause__
    index = getattr(runner, "worker_index", 0) or 0
    if index == 0:
        return inner
    text = "".join(traceback.format_exception(inner))[-MAX_ERROR_TEXT:]
    return EnvRunnerError(f"EnvRunner {index} failed while sampling: "
                          f"{type(inner).__name__}: {inner}\n{text}")


class _Guarded:
    """``call(runner)``, with any exception returned as ``(sampling_error(...), {})`` in place
    of the ``(columns, metrics)`` pair: an exception escaping a remote call would make RLlib's
    actor sleep and exit (module docstring)."""

    def __init__(self, call: Callable[[Any], Any]):
        self.call = call

    def __call__(self, runner):
        try:
            return self.call(runner)
        except Exception as err:      # noqa: BLE001 -- every error must reach the driver
            return sampling_error(runner, err), {}


# ------------------------------------------------------------------ random streams
def restart_seed(seed: int | None, worker_index: int, restart_count: int) -> int | None:
    """The seed of EnvRunner ``worker_index`` after its ``restart_count``-th restart: a
    function of the three (reproducible), different for every restart. None without a seed
    (a restarted runner then draws from fresh OS entropy anyway)."""
    if seed is None:
        return None
    state = np.random.SeedSequence([int(seed), int(worker_index), int(restart_count)])
    return int(state.generate_state(1, dtype=np.uint32)[0] & 0x7FFF_FFFF)


# ------------------------------------------------------------------ runner health
class RunnerHealth:
    """Which remote EnvRunners delivered rows, which failed, how often each was restarted.

    ``max_failures``: failures in a row of one runner (its process died, or its actor was
    unreachable) after which training stops; a successful sample resets the count.
    """

    def __init__(self, config):
        self.max_failures = int(config.max_env_runner_failures)
        self.restart = bool(config.restart_failed_env_runners)
        self.ignore = bool(config.ignore_env_runner_failures) or self.restart
        self.seed = config.seed
        self.failures_in_a_row: Counter = Counter()
        self.restarts: Counter = Counter()
        self.lost: set = set()
        self.num_failures = 0
        self.last_error: dict[int, str] = {}

    def sample(self, group, call: Callable[[Any], Any]) -> list:
        """``call(runner)`` on the local EnvRunner when there are no remote ones, else on
        every healthy remote one (in runner order); returns the results of those that
        answered. Raises :class:`EnvRunnerError` as described in the module docstring."""
        guarded = _Guarded(call)
        if group.num_remote_env_runners() == 0:
            return [guarded(group.local_env_runner)]
        # The actor manager, unlike foreach_env_runner, says which runner failed and why
        # (RLlib's own algorithms reach it the same way).
        results = group._worker_manager.foreach_actor(guarded, healthy_only=True)
        out = []
        for res in results:
            if res.ok:
                self.failures_in_a_row[res.actor_id] = 0
                out.append(res.get())
            else:
                self._failed(group, res.actor_id, res.get())
        if self.lost and len(self.lost) >= group.num_remote_env_runners():
            raise EnvRunnerError(f"every EnvRunner is lost ({sorted(self.lost)}), so no rows "
                                 "arrive any more; the last error: "
                                 f"{self.last_error[max(self.lost)]}")
        return out

    def _failed(self, group, index: int, err: BaseException) -> None:
        text = str(err)[:MAX_ERROR_TEXT]
        self.num_failures += 1
        self.failures_in_a_row[index] += 1
        self.last_error[index] = f"{type(err).__name__}: {text}"
        if not self.ignore:
            raise EnvRunnerError(
                f"EnvRunner {index} failed while sampling, and fault tolerance is off, so "
                "training stops (.fault_tolerance(restart_failed_env_runners=True) restarts a "
                "lost EnvRunner, ignore_env_runner_failures=True goes on without it); the "
                f"error: {type(err).__name__}: {text}") from err
        n = self.failures_in_a_row[index]
        if self.restart and n >= self.max_failures:
            raise EnvRunnerError(
                f"EnvRunner {index} failed {n} times in a row (restarted {self.restarts[index]} "
                f"times in between; max_env_runner_failures={self.max_failures}), so it is not "
                f"restarted again; the last error: {type(err).__name__}: {text}") from err
        if not self.restart and index not in self.lost:
            self.lost.add(index)
            healthy = group.num_healthy_remote_env_runners()
            logger.warning("EnvRunner %d is lost (%s: %s); restart_failed_env_runners is off, "
                           "so training goes on with %d of %d EnvRunners (Runners/num_lost "
                           "in the results)", index, type(err).__name__, text[:300], healthy,
                           group.num_remote_env_runners())

    def restored(self, group, indices) -> None:
        """RLlib brought these runners back (``Algorithm.restore_env_runners``): count the
        restart and reseed each, so that it does not replay its first fragments."""
        for index in indices:
            self.restarts[index] += 1
            seed = restart_seed(self.seed, index, self.restarts[index])
            if seed is not None:
                group.foreach_env_runner(lambda er, s=seed: er.reseed(s),
                                         remote_worker_ids=[index], local_env_runner=False)

    def log(self, metrics, group) -> None:
        """``Runners/...`` scalars of the current iteration (zeros without remote runners)."""
        log = metrics.log_value
        log(("Runners", "num_healthy"), group.num_healthy_remote_env_runners(), reduce="item")
        log(("Runners", "num_lost"), len(self.lost), reduce="item")
        log(("Runners", "num_restarts"), sum(self.restarts.values()), reduce="item")
        log(("Runners", "num_failures"), self.num_failures, reduce="item")
