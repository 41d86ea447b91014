"""The World protocol: what a world model must offer to be trained on or solved exactly.

A world is duck-typed (docs/DESIGN.md, "The World protocol"). This module states the protocol,
checks a world when it is first used, and validates the values a world returns, so that a
broken world fails with a message naming the world, the state and the problem instead of
a deep stack trace or a silently wrong number.

Conventions:
- agents are numbered 0..N-1; ``human_agent_indices`` and ``robot_agent_indices`` partition them;
- every agent has ``num_actions`` actions and action 0 is "stay";
- a joint action is one int per agent, indexed by agent id;
- a joint robot action is one index ``a_r = sum_i a_i * num_actions**i`` over the robots in order.
"""
from __future__ import annotations

import math
import numbers
import pickle
from typing import Any, Callable, Hashable, Protocol, Sequence, runtime_checkable

import numpy as np

# Probabilities and goal weights may sum to 1 within this tolerance. A single value within it
# below 0 or above 1 is a rounding error and is clipped to [0, 1] (so no negative probability
# reaches a table or the exact solver); anything further out is a protocol error.
PROB_TOLERANCE = 1e-6

# Members every world must have; checked by name so the error can say which one is missing.
REQUIRED_MEMBERS = (
    "human_agent_indices",
    "robot_agent_indices",
    "num_actions",
    "initial_state",
    "transition_probabilities",
    "is_terminal",
    "possible_goals",
    "encode_state",
    "encode_goal",
)
REQUIRED_METHODS = REQUIRED_MEMBERS[3:]


class WorldProtocolError(ValueError):
    """A world does not follow the protocol. The message names the world and the problem."""


def world_call(world: Any, call: Callable[[], str], fn: Callable, *args):
    """``fn(*args)``, a method of ``world`` or of one of its goals; any exception it raises
    (a plain Python error in the world's code) becomes a WorldProtocolError that names the
    world, the call with its state (and joint action), and the original error, which stays
    attached as ``__cause__``. The message alone carries everything, because only the
    message survives the trip from a remote EnvRunner to the driver."""
    try:
        return fn(*args)
    except WorldProtocolError:
        raise
    except Exception as err:
        raise WorldProtocolError(f"world {world_name(world)!r}: {call()} raised "
                                 f"{type(err).__name__}: {err}") from err


@runtime_checkable
class Goal(Protocol):
    def is_achieved(self, state: Hashable) -> bool: ...


@runtime_checkable
class World(Protocol):
    human_agent_indices: Sequence[int]
    robot_agent_indices: Sequence[int]
    num_actions: int

    def initial_state(self) -> Hashable: ...

    def transition_probabilities(self, state: Hashable, joint_action: Sequence[int]
                                 ) -> list[tuple[float, Hashable]] | None: ...

    def is_terminal(self, state: Hashable) -> bool: ...

    def possible_goals(self, state: Hashable, human: int) -> list[tuple[Goal, float]]: ...

    def encode_state(self, state: Hashable) -> np.ndarray: ...

    def encode_goal(self, goal: Goal) -> np.ndarray: ...


def world_name(world: Any) -> str:
    return getattr(world, "name", None) or type(world).__name__


MAX_REPR = 200


def short_repr(x: Any, limit: int = MAX_REPR) -> str:
    """repr(x), cut to ``limit`` characters: a state can be a large array, and an error message
    must stay readable."""
    try:
        text = repr(x)
    except Exception as err:  # a broken __repr__ must not hide the real error
        text = f"<{type(x).__name__} with failing repr: {err}>"
    return text if len(text) <= limit else text[:limit - 15] + f"... ({len(text)} chars)"


def num_agents(world: World) -> int:
    return len(world.human_agent_indices) + len(world.robot_agent_indices)


def num_robot_actions(world: World) -> int:
    """|A_r| = num_actions ** (number of robots): the size of the joint robot action space."""
    return int(world.num_actions) ** len(world.robot_agent_indices)


def decode_robot_action(a_r: int, num_actions: int, num_robots: int) -> list[int]:
    """Inverse of ``a_r = sum_i a_i * num_actions**i``."""
    out = []
    for _ in range(num_robots):
        a_r, a = divmod(a_r, num_actions)
        out.append(a)
    return out


def joint_action(world: World, robot_action: int, human_actions: Sequence[int]) -> list[int]:
    """Assemble one int per agent (indexed by agent id) from a joint robot action index and
    the humans' actions (in ``human_agent_indices`` order)."""
    ja = [0] * num_agents(world)
    robots = world.robot_agent_indices
    for rid, a in zip(robots, decode_robot_action(robot_action, world.num_actions, len(robots))):
        ja[rid] = a
    for hid, a in zip(world.human_agent_indices, human_actions):
        ja[hid] = int(a)
    return ja


def _is_hashable(x: Any) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


def check_world(world: Any) -> None:
    """Check a world once, before it is used. Raises WorldProtocolError naming the problem."""
    name = world_name(world)
    missing = [m for m in REQUIRED_MEMBERS if not hasattr(world, m)]
    if missing:
        kinds = [f"{'method' if m in REQUIRED_METHODS else 'attribute'} `{m}`" for m in missing]
        raise WorldProtocolError(f"world {name!r} is missing the protocol {', '.join(kinds)} "
                                 "(see rllib_empo.worlds.World)")
    for member in REQUIRED_METHODS:
        if not callable(getattr(world, member)):
            raise WorldProtocolError(f"world {name!r}: `{member}` must be a method")
    n = world.num_actions
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise WorldProtocolError(f"world {name!r}: num_actions must be an int >= 1, got {n!r}")
    humans, robots = list(world.human_agent_indices), list(world.robot_agent_indices)
    if not humans or not robots:
        raise WorldProtocolError(f"world {name!r} needs at least one human and one robot, "
                                 f"got humans={humans}, robots={robots}")
    if sorted(humans + robots) != list(range(len(humans) + len(robots))):
        raise WorldProtocolError(f"world {name!r}: human_agent_indices {humans} and "
                                 f"robot_agent_indices {robots} must partition 0..N-1")
    s0 = world_call(world, lambda: "initial_state()", world.initial_state)
    check_state(world, s0)
    check_state_equality(world, s0)
    if world_call(world, lambda: f"is_terminal({short_repr(s0)})", world.is_terminal, s0):
        raise WorldProtocolError(f"world {name!r}: initial_state() {short_repr(s0)} is terminal; "
                                 "an episode needs at least one step")
    enc = checked_encoding(world, s0)
    if enc.size == 0:
        raise WorldProtocolError(f"world {name!r}: encode_state must return a non-empty 1-D "
                                 f"vector, got shape {enc.shape}")
    for h in humans:
        check_goals(world, s0, h)


def check_state(world: Any, state: Any) -> None:
    if not _is_hashable(state):
        raise WorldProtocolError(f"world {world_name(world)!r}: state {short_repr(state)} of type "
                                 f"{type(state).__name__} is not hashable (states are cache keys)")


def check_state_equality(world: Any, state: Any) -> None:
    """A state must equal (and hash like) a copy of itself: states are the keys of every
    cache and of the exact solver's index. A float NaN inside a state tuple, or an object
    hashed by identity (no ``__eq__``/``__hash__``), makes every successor look new, so
    the solver enumerates without end and tables overflow ``max_successors``. A pickled
    copy is a fresh object with the same value, which is exactly what such states fail on.
    States that cannot be pickled are not checked here."""
    try:
        copy = pickle.loads(pickle.dumps(state))
    except Exception:  # unpicklable states: nothing to compare against
        return
    try:
        equal = bool(copy == state) and hash(copy) == hash(state)
    except Exception as err:
        equal, why = False, f" (comparing it raised {type(err).__name__}: {err})"
    else:
        why = ""
    if not equal:
        raise WorldProtocolError(
            f"world {world_name(world)!r}: state {short_repr(state)} is not equal to a copy of "
            f"itself{why}; states must compare and hash by value (a float NaN inside the state, "
            "or an object without __eq__/__hash__, makes every visit a new state)")


def checked_achieved(world: Any, goal: Any, state: Any) -> bool:
    """``goal.is_achieved(state)``, which must return a bool (numpy bools and the ints 0
    and 1 are accepted): ``None`` or another value is a protocol error, not False."""
    out = world_call(world, lambda: f"goal {short_repr(goal)}.is_achieved({short_repr(state)})",
                     goal.is_achieved, state)
    if isinstance(out, (bool, np.bool_)):
        return bool(out)
    if isinstance(out, (int, np.integer)) and out in (0, 1):
        return bool(out)
    raise WorldProtocolError(f"world {world_name(world)!r}: goal {short_repr(goal)}.is_achieved("
                             f"{short_repr(state)}) returned {short_repr(out)}; it must return "
                             "a bool")


def check_goals(world: Any, state: Any, human: int) -> list[tuple[Any, float]]:
    """possible_goals(state, human), checked: non-empty, finite weights >= 0 summing to 1,
    goals hashable with ``is_achieved``. Weights are returned as floats (clipped to [0, 1]
    within PROB_TOLERANCE)."""
    name = world_name(world)
    call = lambda: f"possible_goals({short_repr(state)}, {human})"  # noqa: E731
    goals = _pairs(world, world_call(world, call, world.possible_goals, state, human),
                   call, "(goal, weight)")
    if not goals:
        raise WorldProtocolError(f"world {name!r}: possible_goals({short_repr(state)}, {human}) "
                                 "is empty")
    total, out = 0.0, []
    for goal, w in goals:
        if not _is_hashable(goal) or not callable(getattr(goal, "is_achieved", None)):
            raise WorldProtocolError(f"world {name!r}: goal {short_repr(goal)} must be hashable "
                                     "and have is_achieved(state)")
        p = _probability(w)
        if p is None:
            raise WorldProtocolError(f"world {name!r}: goal weight {w!r} of {short_repr(goal)} at "
                                     f"state {short_repr(state)} is not a finite number in [0, 1]")
        total += float(w)
        out.append((goal, p))
    if abs(total - 1.0) > PROB_TOLERANCE:
        raise WorldProtocolError(f"world {name!r}: goal weights of human {human} at state "
                                 f"{short_repr(state)} sum to {total:.9g}, not 1")
    return out


def checked_transitions(world: Any, state: Any, joint_action: Sequence[int]
                        ) -> list[tuple[float, Any]] | None:
    """``world.transition_probabilities`` with its contract enforced.

    Returns None for a terminal state, else a list of (p, successor) with p a float in [0, 1]
    (any real number type is accepted, ``Fraction`` included; values within PROB_TOLERANCE
    outside [0, 1] are clipped) summing to 1 within PROB_TOLERANCE and hashable successors.
    An exception raised by the world is reported with the state and the joint action.
    Callers cache the result, so the checks run once per (state, joint action). (The exact
    solver calls this for every reachable state and joint action, so a plainly valid answer
    is recognised by a fast first pass; anything else gets the detailed checks.)
    """
    n = num_agents(world)
    if len(joint_action) != n:
        raise WorldProtocolError(f"world {world_name(world)!r}: joint action "
                                 f"{list(joint_action)} has length {len(joint_action)}, expected "
                                 f"one action per agent ({n})")
    call = lambda: f"transition_probabilities({short_repr(state)}, {list(joint_action)})"  # noqa: E731
    out = world_call(world, call, world.transition_probabilities, state, list(joint_action))
    if out is None:
        return None
    if _plainly_valid(out):
        return out
    name = world_name(world)
    out = _pairs(world, out, call, "(probability, successor)")
    if not out:
        where = short_repr(state)
        raise WorldProtocolError(f"world {name!r}: transition_probabilities({where}, "
                                 f"{list(joint_action)}) is empty; return None for terminal states")
    total, checked = 0.0, []
    for p, succ in out:
        q = _probability(p)
        if q is None:
            where = short_repr(state)
            raise WorldProtocolError(f"world {name!r}: probability {p!r} at state {where}, "
                                     f"joint action {list(joint_action)} is not finite in [0, 1]")
        if not _is_hashable(succ):
            where = short_repr(state)
            raise WorldProtocolError(f"world {name!r}: successor {short_repr(succ)} of state "
                                     f"{where} is not hashable (states are cache keys)")
        total += float(p)
        checked.append((q, succ))
    if abs(total - 1.0) > PROB_TOLERANCE:
        where = short_repr(state)
        raise WorldProtocolError(f"world {name!r}: transition probabilities at state {where}, "
                                 f"joint action {list(joint_action)} sum to {total:.9g}, not 1")
    return checked


def _plainly_valid(out) -> bool:
    """A list of (float or int probability in [0, 1], hashable successor) tuples summing to
    1: the common answer, checked in one pass. False means "check in detail", not "invalid"."""
    if type(out) is not list or not out:
        return False
    total = 0.0
    try:
        for pair in out:
            if type(pair) is not tuple or len(pair) != 2:
                return False
            p, succ = pair
            if (type(p) is not float and type(p) is not int) or not 0.0 <= p <= 1.0:
                return False
            hash(succ)
            total += p
    except TypeError:
        return False
    return abs(total - 1.0) <= PROB_TOLERANCE


def checked_successors(world: Any, state: Any, joint_action: Sequence[int]) -> list[tuple[float, Any]]:
    """:func:`checked_transitions` of a state the caller knows is not terminal: ``None``
    (the terminal answer) is a protocol error here."""
    out = checked_transitions(world, state, joint_action)
    if out is None:
        raise WorldProtocolError(
            f"world {world_name(world)!r}: transition_probabilities({short_repr(state)}, "
            f"{list(joint_action)}) returned None for a state that is_terminal says is not "
            "terminal")
    return out


def checked_encoding(world: Any, state: Any, expected_dim: int | None = None) -> np.ndarray:
    """encode_state as float32, checked for a fixed length and finite values."""
    return _checked_vector(world, world.encode_state, state, expected_dim,
                           "encode_state", "the initial state")


def checked_goal_encoding(world: Any, goal: Any, expected_dim: int | None = None) -> np.ndarray:
    """encode_goal as float32, checked for a fixed length and finite values."""
    return _checked_vector(world, world.encode_goal, goal, expected_dim,
                           "encode_goal", "the first goal")


def checked_prior(world: Any, prior: Any, state: Any, human: int, goal: Any) -> np.ndarray:
    """``prior(state, human, goal)``: a finite distribution over ``num_actions`` actions."""
    name, n = world_name(world), int(world.num_actions)
    call = f"human prior({short_repr(state)}, {human}, {short_repr(goal)})"
    out = world_call(world, lambda: call, prior, state, human, goal)
    try:
        p = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise WorldProtocolError(f"world {name!r}: {call} is not an array of numbers: {err}") from err
    if p.shape != (n,):
        raise WorldProtocolError(f"world {name!r}: {call} has shape {p.shape}, expected ({n},) "
                                 "(one probability per action)")
    if not np.all(np.isfinite(p)) or np.any(p < -PROB_TOLERANCE):
        raise WorldProtocolError(f"world {name!r}: {call} = {short_repr(p.tolist())} is not finite "
                                 "and >= 0")
    if np.any(p > 1 + PROB_TOLERANCE):
        raise WorldProtocolError(f"world {name!r}: {call} = {short_repr(p.tolist())} has "
                                 "probabilities above 1")
    if abs(float(p.sum()) - 1.0) > PROB_TOLERANCE:
        raise WorldProtocolError(f"world {name!r}: {call} sums to {float(p.sum()):.9g}, not 1")
    return np.clip(p, 0.0, 1.0)


def _checked_vector(world, fn, x, expected_dim, what, like) -> np.ndarray:
    out = world_call(world, lambda: f"{what}({short_repr(x)})", fn, x)
    try:
        enc = np.asarray(out, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise WorldProtocolError(f"world {world_name(world)!r}: {what}({short_repr(x)}) is not a "
                                 f"vector of numbers: {err}") from err
    if enc.ndim != 1 or (expected_dim is not None and enc.shape[0] != expected_dim):
        expected = f"({expected_dim},) like {like}" if expected_dim is not None else "a 1-D vector"
        raise WorldProtocolError(f"world {world_name(world)!r}: {what}({short_repr(x)}) has shape "
                                 f"{enc.shape}, expected {expected}")
    if not np.all(np.isfinite(enc)):
        raise WorldProtocolError(f"world {world_name(world)!r}: {what}({short_repr(x)}) contains "
                                 "non-finite values")
    return enc


def _is_number(x: Any) -> bool:
    """Any real number (int, float, Fraction, numpy scalars), but not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def _probability(x: Any) -> float | None:
    """``x`` as a float in [0, 1] (clipped within PROB_TOLERANCE), or None if it is not a
    finite real number in [-PROB_TOLERANCE, 1 + PROB_TOLERANCE]."""
    if not _is_number(x):
        return None
    p = float(x)
    if not math.isfinite(p) or p < -PROB_TOLERANCE or p > 1 + PROB_TOLERANCE:
        return None
    return min(max(p, 0.0), 1.0)


def _pairs(world: Any, out: Any, call: Callable[[], str], pair: str) -> list:
    """``list(out)``, checked to be a sequence of 2-tuples (``call()`` describes the call in
    the error message; formatted only on error)."""
    try:
        items = list(out)
        bad = next((x for x in items if not (isinstance(x, (tuple, list)) and len(x) == 2)), None)
    except TypeError:
        items, bad = None, out
    if items is None or bad is not None:
        raise WorldProtocolError(f"world {world_name(world)!r}: {call()} must return a list of "
                                 f"{pair} pairs, got {short_repr(out if items is None else bad)}"
                                 f"{'' if items is None else ' among them'}")
    return items
