"""The README's "Troubleshooting" section, generated from the real error messages.

    python -m tools.troubleshooting            # print the section (heading included)
    python -m tools.gen_docs                       # writes render() into README.md

Every entry triggers its error with the package's own code (config validation, the World
protocol checks, the env, the learner's non-finite guard) and captures the message, so the
README cannot drift from what users actually see. ``render()`` is the body that
``tools.gen_docs`` puts between ``<!-- BEGIN troubleshooting -->`` and
``<!-- END troubleshooting -->`` under the README's ``## Troubleshooting`` heading; its check
(tests/test_docs.py) fails when they differ. Nothing here starts Ray.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import numpy as np

HEADING = "## Troubleshooting"
INTRO = ("Every message below is the package's real output (`python -m "
         "tools.troubleshooting` regenerates this section, and a test checks that this "
         "README holds exactly what it prints). Configuration errors are raised by "
         "`config.validate()`, so `build_algo()` fails in its first second, before any "
         "EnvRunner starts; world errors name the world, the state and the problem.")


@dataclass(frozen=True)
class Case:
    title: str
    trigger: Callable[[], object]
    fix: str


# ------------------------------------------------------------------ a small world
@dataclass(frozen=True)
class _Reach:
    cell: int

    def is_achieved(self, state) -> bool:
        return state[1] == self.cell


class _LineWorld:
    """A human (agent 1) on a line of 5 cells, a robot (agent 0) that watches; 3 actions."""

    name = "my_world"
    human_agent_indices = [1]
    robot_agent_indices = [0]
    num_actions = 3

    def initial_state(self):
        return (3, 2)

    def is_terminal(self, state) -> bool:
        return state[0] == 0

    def transition_probabilities(self, state, joint_action):
        if state[0] == 0:
            return None
        cell = min(max(state[1] + (0, -1, 1)[joint_action[1]], 0), 4)
        return [(1.0, (state[0] - 1, cell))]

    def possible_goals(self, state, human):
        return [(_Reach(0), 0.5), (_Reach(4), 0.5)]

    def encode_state(self, state):
        return np.array(state, np.float32)

    def encode_goal(self, goal):
        return np.array([goal.cell], np.float32)


class _NoEncodeGoal:
    def __init__(self):
        self._w = _LineWorld()
        self.name = "my_world"

    def __getattr__(self, key):
        if key.startswith("_") or key == "encode_goal":
            raise AttributeError(key)
        return getattr(self._w, key)


class _LeakyWorld(_LineWorld):
    """Probabilities that sum to 0.9 one step after the start."""

    def transition_probabilities(self, state, joint_action):
        out = super().transition_probabilities(state, joint_action)
        return [(0.9 * p, s) for p, s in out] if out and state[0] == 2 else out


class _GrowingEncoding(_LineWorld):
    def encode_state(self, state):
        return np.zeros(2 if state[0] == 3 else 3, np.float32)


class _BadGoalWeights(_LineWorld):
    def possible_goals(self, state, human):
        return [(_Reach(0), 0.5), (_Reach(4), 0.3)]


class _Unpicklable(_LineWorld):
    def __init__(self):
        import threading
        self.lock = threading.Lock()


class _BuggyWorld(_LineWorld):
    """A plain bug one step after the start: a dictionary without the human's move 2."""

    def transition_probabilities(self, state, joint_action):
        if state[0] == 2:
            return [(1.0, (1, state[1] + {0: 0, 1: -1}[joint_action[1]]))]
        return super().transition_probabilities(state, joint_action)


class _NanWorld(_LineWorld):
    """A float NaN inside every successor state."""

    def transition_probabilities(self, state, joint_action):
        out = super().transition_probabilities(state[:2], joint_action)
        return out and [(p, s + (float("nan"),)) for p, s in out]


# ------------------------------------------------------------------ triggers
def _config(env="rllib_empo/RockGate-v0", env_config=None, **training):
    from rllib_empo.algorithm.empo import EmpoConfig
    return EmpoConfig().environment(env, env_config=env_config or {}).training(**training)


def _validate(env="rllib_empo/RockGate-v0", env_config=None, **training):
    return lambda: _config(env, env_config, **training).validate()


def _step_env(world, steps=3):
    def run():
        from rllib_empo.algorithm.env import EmpoEnv
        env = EmpoEnv({"world": world, "prior": "uniform"})
        env.reset(seed=0)
        for _ in range(steps):
            env.step(0)
    return run


def _solve(world, **kwargs):
    def run():
        from rllib_empo.exact.statespace import StateGraph
        StateGraph(world, **kwargs)
    return run


def _cpus():
    from rllib_empo.algorithm import validation
    real = validation.cluster_cpus
    validation.cluster_cpus = lambda: (2.0, "the Ray cluster has")   # the same text anywhere
    try:
        _config().env_runners(num_env_runners=3).validate()
    finally:
        validation.cluster_cpus = real


def _cycle_warning():
    import warnings

    class Loop(_LineWorld):
        def transition_probabilities(self, state, joint_action):
            cell = min(max(state[1] + (0, -1, 1)[joint_action[1]], 0), 4)
            return [(1.0, (3, cell))]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _config(GENERIC, {"world": Loop(), "prior": "uniform"}, gamma_r=1.0).validate()


def _incomplete_checkpoint():
    import os
    import tempfile
    from rllib_empo.algorithm.checkpoints import check_complete
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)                 # a relative path: the message is the same everywhere
        try:
            os.makedirs("checkpoint/learner_group")
            check_complete("checkpoint")
        finally:
            os.chdir(here)


def _skips_in_a_row():
    from rllib_empo.algorithm.learner import EmpoTorchLearner
    stub = SimpleNamespace(_skipped={"q_r"}, _skips_in_a_row=99, module={},
                           _why="non-finite loss of ['q_r'] (targets finite: {'q_r': False})",
                           config=SimpleNamespace(max_nonfinite_skips=100))
    EmpoTorchLearner._count_skips(stub, False)


def _runner_keeps_dying():
    from rllib_empo.algorithm.faults import RunnerHealth
    health = RunnerHealth(SimpleNamespace(max_env_runner_failures=3, restart_failed_env_runners=True,
                                          ignore_env_runner_failures=False, seed=0))
    health.failures_in_a_row[1], health.restarts[1] = 2, 2
    health._failed(None, 1, RuntimeError("The actor died unexpectedly before finishing this task "
                                         "(the process was killed: SIGKILL)"))


def _nonfinite_loss():
    from rllib_empo.algorithm.learner import EmpoTorchLearner
    stub = SimpleNamespace(config=SimpleNamespace(on_nonfinite="raise"))
    EmpoTorchLearner._nonfinite(stub, "default_policy",
                                "non-finite loss of ['q_r'] (targets finite: {'q_r': False})")


GENERIC = "rllib_empo/World-v0"
CASES = (
    Case("A misspelled world name", _validate(GENERIC, {"world": "rokc_gate"}),
         "Use a registered name (`rllib_empo.worlds.WORLDS`), register yours with "
         "`rllib_empo.worlds.register_world(name, cls)`, or pass a World instance."),
    Case("A misspelled world argument", _validate(env_config={"horizn": 5}),
         "Every `env_config` key is either an env setting (`world`, `prior`, `beta_h`, "
         "`gamma_h`) or an argument of the world's constructor."),
    Case("An unknown human prior", _validate(env_config={"prior": "boltzman"}),
         "Use one of the listed priors, or pass a callable `factory(world) -> prior`."),
    Case("Two worlds named at once", _validate(env_config={"world": "corridor"}),
         "An id such as `rllib_empo/RockGate-v0` fixes the world; to choose it in "
         "`env_config`, use `rllib_empo/World-v0`."),
    Case("An env that is not an EmpoEnv", _validate("CartPole-v1"),
         "EMPO needs a World (transition probabilities, goals); wrap yours in an EmpoEnv."),
    Case("A custom world that lacks a protocol method",
         _validate(GENERIC, {"world": _NoEncodeGoal()}),
         "Implement every member of the World protocol (`rllib_empo.worlds.World`)."),
    Case("Transition probabilities that do not sum to 1", _step_env(_LeakyWorld()),
         "Return `[(probability, successor), ...]` summing to 1 for every non-terminal state "
         "and joint action (and `None` for terminal states)."),
    Case("Goal weights that do not sum to 1", _validate(GENERIC, {"world": _BadGoalWeights()}),
         "`possible_goals(state, h)` must return `[(goal, weight), ...]` with weights summing "
         "to 1: they are the weights of X_h (eq. 7)."),
    Case("An encoding whose length changes", _step_env(_GrowingEncoding()),
         "`encode_state` must return vectors of one fixed length for every state."),
    Case("A replay buffer smaller than a batch", _validate(replay_capacity=32),
         "`replay_capacity` must hold at least one training batch."),
    Case("Learning that could never start", _validate(replay_capacity=100, learning_starts=200),
         "`learning_starts` counts buffered rows, so it cannot exceed `replay_capacity`."),
    Case("Exponents that overflow U_r", _validate(xi=15.0),
         "U_r = -(mean_h X_h^-xi)^eta is largest where X_h sits at `x_h_floor`; keep "
         "`xi * eta * log10(1 / x_h_floor)` within the bound."),
    Case("A world that cannot travel to remote EnvRunners",
         lambda: _config(GENERIC, {"world": _Unpicklable()}).env_runners(num_env_runners=2).validate(),
         "Make the world picklable, or register its class by name and pass the name."),
    Case("Recreating failed sub-environments",
         lambda: _config().fault_tolerance(restart_failed_sub_environments=True).validate(),
         "Fix the world instead; `restart_failed_env_runners=True` (lost processes) is fine."),
    Case("A value out of range", _validate(beta_r=-1.0),
         "Every field's allowed range is in the configuration table (`config_fields_table()`)."),
    Case("A bug in the world's own code", _step_env(_BuggyWorld()),
         "The world's exception, with the state and the joint action it was called with, is "
         "raised by `train()` from any EnvRunner, local or remote; fix the world there."),
    Case("States that are not equal to themselves", _solve(_NanWorld()),
         "States are dictionary keys: make them compare and hash by value (tuples of ints, "
         "frozen dataclasses); replace NaN by a sentinel value."),
    Case("A world too large for the exact solver", _solve(_LineWorld(), max_states=2),
         "Raise the limit if the machine has the memory, or compare with rollouts instead."),
    Case("RLlib's `lr` or `gamma`", _validate(lr=1e-4),
         "EMPO has a learning rate per network and two discount factors; set those fields."),
    Case("A bad value of one of RLlib's own fields", _validate(train_batch_size_per_learner=0),
         "RLlib's fields that EMPO uses are checked like its own: see the allowed range."),
    Case("More EnvRunners than CPUs", _cpus,
         "Lower `num_env_runners`, give each a fraction of a CPU, or sample in the driver."),
    Case("A replay buffer smaller than one iteration",
         lambda: _config(replay_capacity=100).env_runners(rollout_fragment_length=200).validate(),
         "The buffer must hold at least the rows one `train()` samples."),
    Case("An undiscounted robot on a world with cycles", _cycle_warning,
         "A warning: if every policy leaves the cycle the values stay finite, otherwise use "
         "`gamma_r < 1` or put the steps left into the state."),
    Case("A checkpoint whose save did not finish", _incomplete_checkpoint,
         "Restore an older checkpoint, or save again; a save never leaves a half-written "
         "checkpoint under the name you gave it (see Fault tolerance)."),
    Case("Non-finite updates that do not stop", _skips_in_a_row,
         "With `on_nonfinite='skip'` a network whose loss or gradient is non-finite is skipped; "
         "`max_nonfinite_skips` updates in a row of that means training will not recover."),
    Case("An EnvRunner that keeps dying", _runner_keeps_dying,
         "Its process dies (a crash in native code, the memory limit, ...) right after every "
         "restart; `max_env_runner_failures` bounds the restarts. Look at the runner's log."),
    Case("A non-finite loss", _nonfinite_loss,
         "Usually a world or prior that returns NaN, or extreme `beta_r`/`xi`/`eta`; fix the "
         "cause, or set `on_nonfinite='skip'` to skip that network's update while the others "
         "learn (counted in `learners/default_policy/num_nonfinite_skips`)."),
)


def capture(case: Case) -> str:
    """``Type: message`` of the error ``case`` raises; RuntimeError if it raises none."""
    try:
        case.trigger()
    except Exception as err:  # the point is to catch whatever the user would see
        return f"{type(err).__name__}: {err}"
    raise RuntimeError(f"troubleshooting case {case.title!r} raised no error")


def render() -> str:
    """The section's body (what goes between the README markers), ending with a newline."""
    import logging
    logging.getLogger("ray.rllib").setLevel(logging.ERROR)   # the config's API-stack warning
    parts = [textwrap.fill(INTRO, 92), ""]
    for case in CASES:
        parts += [f"### {case.title}", "", "```text", capture(case), "```", "",
                  textwrap.fill(f"Fix: {case.fix}", 92), ""]
    return "\n".join(parts).rstrip("\n") + "\n"


def markdown() -> str:
    """The whole section: heading and body."""
    return f"{HEADING}\n\n{render()}"


def main(argv=None) -> int:
    argparse.ArgumentParser(description="Print the README's Troubleshooting section "
                            "(`python -m tools.gen_docs` writes it into README.md).").parse_args(argv)
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
