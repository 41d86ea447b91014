"""Tests of the built-in worlds (rllib_empo/worlds): the World protocol on every reachable
state of the small worlds and a few thousand of crowd, the rules of each world, and the
registry's errors."""
from __future__ import annotations

import itertools
import pickle
from collections import deque

import numpy as np
import pytest

from rllib_empo.worlds.protocol import check_goals, check_world, checked_encoding, checked_transitions
from rllib_empo.worlds import (WORLDS, CorridorWorld, CrowdWorld, RockGateWorld,
                               UnknownWorldArgument, make_world, register_world, world_kwargs)

# (id, factory, max states to explore; None = all)
CASES = [
    ("corridor-1h", lambda: make_world("corridor", num_humans=1), None),
    ("corridor-2h", lambda: make_world("corridor"), None),
    ("corridor-slip-2h", lambda: make_world("corridor", num_humans=2, slip=0.25), None),
    ("corridor-slip-1h-long", lambda: make_world("corridor", num_humans=1, length=7,
                                                 horizon=8, slip=0.1), None),
    ("rock_gate", lambda: make_world("rock_gate"), None),
    ("crowd", lambda: make_world("crowd"), 2000),
    ("crowd-2r", lambda: make_world("crowd", num_robots=2), 150),
    ("crowd-3h", lambda: make_world("crowd", num_humans=3), 150),
    ("lanes", lambda: make_world("lanes"), 2000),
    ("vault", lambda: make_world("vault"), 2000),
]
_explored: dict[str, list] = {}


def explore(case_id, world, limit):
    """Breadth-first search over every joint action, checking each transition on the way.
    Returns the visited states (cached per case)."""
    if case_id in _explored:
        return _explored[case_id]
    n = len(world.human_agent_indices) + len(world.robot_agent_indices)
    joint_actions = list(itertools.product(range(world.num_actions), repeat=n))
    dim = checked_encoding(world, world.initial_state()).shape[0]
    s0 = world.initial_state()
    seen, order, queue = {s0}, [], deque([s0])
    while queue and (limit is None or len(order) < limit):
        s = queue.popleft()
        order.append(s)
        checked_encoding(world, s, dim)
        if world.is_terminal(s):
            assert s[0] == 0
            assert world.transition_probabilities(s, [0] * n) is None
            continue
        successors = set()
        for ja in joint_actions:
            out = checked_transitions(world, s, ja)
            assert out is not None, f"{s} is not terminal but has no successors"
            succs = [t for _, t in out]
            assert len(set(succs)) == len(succs), f"duplicate successors at {s}, {ja}"
            for t in succs:
                assert t[0] == s[0] - 1
                for agent, a in enumerate(ja):
                    if a == 0:  # staying never moves an agent
                        assert t[1 + agent] == s[1 + agent]
                successors.add(t)
                if t not in seen:
                    seen.add(t)
                    queue.append(t)
    _explored[case_id] = order
    return order


@pytest.fixture(params=CASES, ids=[c[0] for c in CASES])
def case(request):
    case_id, factory, limit = request.param
    return case_id, factory(), limit


def test_protocol_and_all_transitions(case):
    case_id, world, limit = case
    check_world(world)
    states = explore(case_id, world, limit)
    assert len(states) > 1
    for s in states[:: max(1, len(states) // 50)]:
        for h in world.human_agent_indices:
            goals = check_goals(world, s, h)
            encs = {world.encode_goal(g).shape for g, _ in goals}
            assert encs == {(world.goal_dim,)}
            for g, _ in goals:
                assert g.is_achieved(s) == (world.human_cell(s, h) == world.goal_cell(g))
                assert g.human == h and str(g.cell) in repr(g)


def test_all_stay_keeps_everything(case):
    _, world, _ = case
    s = world.initial_state()
    n = len(world.human_agent_indices) + len(world.robot_agent_indices)
    assert world.transition_probabilities(s, [0] * n) == [(1.0, (s[0] - 1, *s[1:]))]


def test_render_shows_the_grid(case):
    _, world, _ = case
    text = world.render(world.initial_state())
    width, height = world.grid_shape
    rows = text.splitlines()
    assert all(len(r) == width for r in rows[:height]) and rows[0] == "#" * width
    assert "R" in text and f"steps left: {world.horizon}" in rows[height]


def test_worlds_and_goals_pickle(case):
    _, world, _ = case
    copy = pickle.loads(pickle.dumps(world))
    s = world.initial_state()
    h = world.human_agent_indices[0]
    assert copy.possible_goals(s, h) == world.possible_goals(s, h)
    assert np.array_equal(copy.encode_state(s), world.encode_state(s))


def test_reachable_state_counts():
    assert 20 <= len(explore("corridor-1h", make_world("corridor", num_humans=1), None)) <= 500
    assert 20 <= len(explore("corridor-2h", make_world("corridor"), None)) <= 500
    states = explore("rock_gate", make_world("rock_gate"), None)
    assert 500 <= len(states) <= 2000
    assert len(states) == 1008  # the figure rock_gate's docstring states


def test_reachable_state_counts_of_the_larger_worlds():
    """The figures the docstrings of lanes and vault state (a 2-human world with >= 20,000
    states and 64 joint actions; a world with >= 10^5 states)."""
    from rllib_empo.exact.statespace import StateGraph
    lanes = StateGraph(make_world("lanes"))
    assert lanes.num_states == 28_137 and lanes.J == 64
    assert StateGraph(make_world("vault", horizon=10)).num_states == 12_723


@pytest.mark.slow
def test_vault_has_more_than_1e5_states():
    from rllib_empo.exact.statespace import StateGraph
    assert StateGraph(make_world("vault")).num_states == 208_995


def test_lanes_rules():
    w = make_world("lanes")
    s = w.initial_state()
    steps, robot, h1, h2, rock = s
    cell = w.grid.cells
    assert cell[robot] == (5, 1) and cell[rock] == (6, 1)
    stay, left, right, switch = range(4)
    # the robot pushes the rock right along lane 1 and follows it
    (p, s1), = w.transition_probabilities(s, [right, stay, stay])
    assert p == 1.0 and cell[s1[4]] == (7, 1) and cell[s1[1]] == (6, 1)
    # a human cannot push it: human 2 walking left into the rock fails
    s2 = (steps, robot, h1, w.grid.cell_id[(7, 1)], rock)
    (_, s3), = w.transition_probabilities(s2, [stay, stay, left])
    assert s3[3] == s2[3]
    # switching lanes into the wall of the one-lane stretch fails; elsewhere it works
    (_, s4), = w.transition_probabilities(s, [switch, switch, stay])
    assert s4[1] == robot and cell[s4[2]] == (1, 2)
    # a rock pushed against the far wall does not move, nor does the robot
    end = (steps, w.grid.cell_id[(9, 1)], h1, w.grid.cell_id[(1, 2)], w.grid.cell_id[(10, 1)])
    (_, s5), = w.transition_probabilities(end, [right, stay, stay])
    assert s5[1:] == end[1:]
    assert w.num_actions ** 3 == 64 and w.action_names == ("stay", "left", "right", "switch")


def test_vault_rules():
    w = make_world("vault")
    s = w.initial_state()
    cell, cid = w.grid.cells, w.grid.cell_id
    steps, robot, human, r1, r2 = s
    assert (cell[robot], cell[human], cell[r1], cell[r2]) == ((9, 2), (3, 2), (6, 2), (4, 4))
    stay, up, down, left, right = range(5)
    # next to rock 1 the robot pushes it west into the human's room and steps into the doorway
    at = (steps, cid[(7, 2)], human, r1, r2)
    (_, s1), = w.transition_probabilities(at, [left, stay])
    assert cell[s1[3]] == (5, 2) and cell[s1[1]] == (6, 2)
    # a rock does not move into another agent: with the human just west of it, nothing moves
    blocked = (steps, cid[(7, 2)], cid[(5, 2)], r1, r2)
    (_, s2), = w.transition_probabilities(blocked, [left, stay])
    assert s2[1:] == blocked[1:]
    # the human cannot push rocks
    (_, s3), = w.transition_probabilities((steps, robot, cid[(4, 3)], r1, r2), [stay, down])
    assert cell[s3[2]] == (4, 3)


def test_state_encodings_are_injective():
    for case_id, factory in [("rock_gate", RockGateWorld), ("corridor-2h", CorridorWorld)]:
        world = factory()
        states = explore(case_id, world, None)
        codes = {world.encode_state(s).tobytes() for s in states}
        assert len(codes) == len(states)


# --- corridor ---------------------------------------------------------------------------------
def test_corridor_slip_probabilities():
    world = CorridorWorld(num_humans=2, slip=0.3)
    s = world.initial_state()  # humans at both ends, robot in the middle
    robot_down = 2
    out = dict((t, p) for p, t in world.transition_probabilities(s, [robot_down, 4, 3]))
    assert len(out) == 4 and abs(sum(out.values()) - 1) < 1e-12
    assert sorted(round(p, 6) for p in out.values()) == [0.09, 0.21, 0.21, 0.49]
    # A move into a wall fails whether or not it slips: one successor, probability 1.
    assert world.transition_probabilities(s, [0, 3, 0]) == [(1.0, (s[0] - 1, *s[1:]))]


def test_corridor_robot_blocks_until_it_steps_into_the_niche():
    world = CorridorWorld(num_humans=1, length=5, horizon=6)
    robot_cell = world.grid.cells[world.initial_state()[1]]
    niche = (robot_cell[0], 2)
    s = world.initial_state()
    for _ in range(4):  # the human walks right but the robot stays in the corridor
        (_, s), = world.transition_probabilities(s, [0, 4])
    assert world.human_cell(s, 1) == (robot_cell[0] - 1, 1)
    (_, s), = world.transition_probabilities(s, [2, 4])  # robot into the niche, human follows
    assert world.grid.cells[s[1]] == niche and world.human_cell(s, 1) == robot_cell
    # The niche is the robot's alone: with the robot moved aside to the right, a human
    # standing above the empty niche cannot step down into it.
    s = world.initial_state()
    for ja in [(4, 0), (0, 4), (0, 4), (0, 2)]:
        (_, s), = world.transition_probabilities(s, list(ja))
    assert world.human_cell(s, 1) == robot_cell


# --- rock_gate --------------------------------------------------------------------------------
STAY, UP, DOWN, LEFT, RIGHT = range(5)


def _run(world, s, actions):
    for ja in actions:
        (p, s), = world.transition_probabilities(s, list(ja))
        assert p == 1.0
    return s


def _robot_cell(world, s):
    return world.grid.cells[s[1]]


def test_rock_gate_human_stays_in_pocket_while_rock_is_unmoved():
    world = RockGateWorld()
    s0 = world.initial_state()
    seen, stack = {s0}, [s0]
    while stack:
        s = stack.pop()
        assert world.human_cell(s, 1) == (3, 3) and world.gate_blocked(s)
        if world.is_terminal(s):
            continue
        for ja in itertools.product(range(5), repeat=2):
            (_, t), = world.transition_probabilities(s, list(ja))
            if world.gate_blocked(t) and t not in seen:  # only paths that never move the rock
                seen.add(t)
                stack.append(t)
    assert len(seen) > 50


def test_rock_gate_robot_can_free_the_human():
    world = RockGateWorld()
    plan = [(UP, UP), (LEFT, UP), (LEFT, UP),  # the third step pushes the rock out
            (STAY, UP), (STAY, RIGHT), (STAY, RIGHT), (STAY, RIGHT)]
    s = _run(world, world.initial_state(), plan[:2])
    assert world.human_cell(s, 1) == (3, 3)  # blocked by the rock so far
    s = _run(world, s, plan[2:3])
    assert world.rock_cell(s) == (2, 2) and _robot_cell(world, s) == (4, 2)
    assert world.human_cell(s, 1) == (3, 2)  # the robot moves first, so the human follows
    s = _run(world, s, plan[3:])
    assert world.human_cell(s, 1) == (6, 1) and s[0] == world.horizon - len(plan)
    far, = [g for g, _ in world.possible_goals(s, 1) if g.cell == (6, 1)]
    assert far.is_achieved(s)


def test_rock_gate_push_rules():
    world = RockGateWorld()
    s = world.initial_state()
    # Pushing down from (3,1) fails: the human fills the cell behind the rock.
    s1 = _run(world, s, [(UP, STAY), (UP, STAY), (LEFT, STAY), (LEFT, STAY), (DOWN, UP)])
    assert _robot_cell(world, s1) == (3, 1) and world.gate_blocked(s1)
    assert world.human_cell(s1, 1) == (3, 3)  # and the human cannot push it either
    # Pushing right from (2,2) frees the gate; the robot may not follow into it.
    s2 = _run(world, s1, [(LEFT, STAY), (DOWN, STAY), (RIGHT, STAY)])
    assert world.rock_cell(s2) == (4, 2) and _robot_cell(world, s2) == (2, 2)
    assert _run(world, s2, [(RIGHT, STAY)])[1] == s2[1]
    assert world.encode_state(s2)[-1] == 0.0 and world.encode_state(s)[-1] == 1.0
    assert "h" in world.render(s2).splitlines()[2]  # the empty gate is drawn


def test_goal_distance_after_hand_checked():
    world = RockGateWorld()
    g = world.grid
    s = (5, g.id_of((5, 3)), g.id_of((3, 1)), g.id_of((2, 2)))  # human just outside the gate
    goals = {goal.cell: goal for goal, _ in world.possible_goals(s, 1)}
    # Rock and robot count as passable; the gate is floor for the human.
    assert world.goal_distance_after(s, 1, goals[(1, 1)]).tolist() == [2, 2, 3, 1, 3]
    assert world.goal_distance_after(s, 1, goals[(6, 1)]).tolist() == [3, 3, 4, 4, 2]
    assert world.goal_distance_after(s, 1, goals[(3, 3)]).tolist() == [2, 2, 1, 3, 3]
    corridor = CorridorWorld(num_humans=1, length=5)
    c = corridor.initial_state()  # human at (1, 1)
    far = [goal for goal, _ in corridor.possible_goals(c, 1) if goal.cell == (5, 1)][0]
    assert corridor.goal_distance_after(c, 1, far).tolist() == [4, 4, 4, 4, 3]


# --- crowd ------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_humans,num_robots", [(2, 1), (2, 2), (3, 1), (3, 2)])
def test_crowd_has_more_than_a_million_states(num_humans, num_robots):
    assert CrowdWorld(num_humans, num_robots).reachable_states_lower_bound() > 10**6


@pytest.mark.parametrize("num_robots", [1, 2])
def test_crowd_lower_bound_below_exact_layer_sizes(num_robots):
    world = CrowdWorld(num_robots=num_robots)
    n = world.num_agents
    layer = {world.initial_state()}
    bounds = world.layer_lower_bounds()
    for j in range(1, 3):
        layer = {t for s in layer for ja in itertools.product(range(5), repeat=n)
                 for _, t in world.transition_probabilities(s, ja)}
        assert bounds[j] <= len(layer)
    assert bounds[2] < bounds[5] < bounds[10]


# --- registry ---------------------------------------------------------------------------------
def test_registry_builds_worlds_with_kwargs():
    assert {"corridor", "rock_gate", "crowd"} <= set(WORLDS)
    assert world_kwargs("rock_gate") == {"horizon": 10}
    assert world_kwargs("corridor") == {"length": 5, "num_humans": 2, "horizon": 6, "slip": 0.0}
    assert make_world("rock_gate", horizon=7).initial_state()[0] == 7
    w = make_world("crowd", num_robots=2)
    assert len(w.robot_agent_indices) == 2 and w.name == "crowd"


def test_registry_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"unknown world 'rokc_gate'.*rock_gate"):
        make_world("rokc_gate")
    with pytest.raises(TypeError, match=r"'horizn' is not accepted by world 'rock_gate'.*allowed keys: horizon"):
        make_world("rock_gate", horizn=5)
    with pytest.raises(UnknownWorldArgument, match=r"length, num_humans, horizon, slip"):
        make_world("corridor", size=3)
    with pytest.raises(ValueError, match="num_humans"):
        make_world("corridor", num_humans=3)
    with pytest.raises(ValueError, match="slip"):
        make_world("corridor", slip=1.0)
    with pytest.raises(ValueError, match="horizon"):
        make_world("rock_gate", horizon=0)
    with pytest.raises(ValueError, match="already registered"):
        register_world("rock_gate", CorridorWorld)


def test_register_world_adds_a_user_world():
    class Tiny(CorridorWorld):
        name = "tiny"

        def __init__(self, horizon: int = 2):
            super().__init__(length=3, num_humans=1, horizon=horizon)

    register_world("tiny_test_world", Tiny)
    try:
        assert make_world("tiny_test_world", horizon=3).horizon == 3
        assert world_kwargs("tiny_test_world") == {"horizon": 2}
    finally:
        del WORLDS["tiny_test_world"]


# --- the protocol's value checks (reliability, issue 13) -------------------------------------
from fractions import Fraction  # noqa: E402

from rllib_empo.worlds.protocol import (PROB_TOLERANCE, WorldProtocolError,  # noqa: E402
                                        check_state_equality, checked_achieved, checked_prior)


class _Line:
    """A robot (agent 0) and a human (agent 1) on a line of 3 cells; state (steps, cell)."""
    name = "line"
    human_agent_indices = [1]
    robot_agent_indices = [0]
    num_actions = 2

    def initial_state(self):
        return (2, 1)

    def is_terminal(self, s):
        return s[0] == 0

    def transition_probabilities(self, s, ja):
        if s[0] == 0:
            return None
        return [(0.5, (s[0] - 1, s[1])), (0.5, (s[0] - 1, min(s[1] + ja[1], 2)))]

    def possible_goals(self, s, h):
        return [(_AtCell(0), 0.5), (_AtCell(2), 0.5)]

    def encode_state(self, s):
        return np.array(s, np.float32)

    def encode_goal(self, g):
        return np.array([g.cell], np.float32)


class _AtCell:
    def __init__(self, cell):
        self.cell = cell

    def __eq__(self, other):
        return isinstance(other, _AtCell) and other.cell == self.cell

    def __hash__(self):
        return hash(self.cell)

    def is_achieved(self, s):
        return s[1] == self.cell


def test_a_plain_error_in_the_world_names_world_state_joint_action_and_error():
    class Broken(_Line):
        def transition_probabilities(self, s, ja):
            return {(2, 1): [(1.0, (1, 1))]}[s] if s[0] == 2 else {}[s]   # KeyError at (1, 1)

    w = Broken()
    assert checked_transitions(w, (2, 1), [0, 1]) == [(1.0, (1, 1))]
    with pytest.raises(WorldProtocolError, match=r"^world 'line': transition_probabilities\(\(1, 1\), "
                                                 r"\[0, 1\]\) raised KeyError: \(1, 1\)$") as err:
        checked_transitions(w, (1, 1), [0, 1])
    assert isinstance(err.value.__cause__, KeyError)


def test_is_achieved_returning_none_is_a_protocol_error():
    class Lazy(_AtCell):
        def is_achieved(self, s):
            if s[1] == self.cell:
                return True                 # forgets the False branch: returns None

    w = _Line()
    assert checked_achieved(w, _AtCell(1), (2, 1)) is True
    assert checked_achieved(w, _AtCell(1), (2, 0)) is False
    assert checked_achieved(w, Lazy(1), (2, 1)) is True
    with pytest.raises(WorldProtocolError, match=r"is_achieved\(\(2, 0\)\) returned None; it must "
                                                 r"return a bool"):
        checked_achieved(w, Lazy(1), (2, 0))


def test_fraction_probabilities_and_weights_are_accepted_as_floats():
    class Exact(_Line):
        def transition_probabilities(self, s, ja):
            out = super().transition_probabilities(s, ja)
            return out and [(Fraction(1, 2), t) for _, t in out]

        def possible_goals(self, s, h):
            return [(_AtCell(0), Fraction(1, 3)), (_AtCell(2), Fraction(2, 3))]

    w = Exact()
    check_world(w)
    out = checked_transitions(w, (2, 1), [0, 1])
    assert [p for p, _ in out] == [0.5, 0.5] and all(type(p) is float for p, _ in out)
    goals = check_goals(w, (2, 1), 1)
    assert [wt for _, wt in goals] == [pytest.approx(1 / 3), pytest.approx(2 / 3)]
    assert all(type(wt) is float for _, wt in goals)


@pytest.mark.parametrize("low, high", [(-5e-7, 1 + 5e-7), (-PROB_TOLERANCE, 1 + PROB_TOLERANCE)])
def test_probabilities_within_the_tolerance_are_clipped_to_0_and_1(low, high):
    """Decision: a value within PROB_TOLERANCE outside [0, 1] is a rounding error and is clipped,
    so no negative probability reaches a table or the solver; further out it is an error."""
    class Rounding(_Line):
        def transition_probabilities(self, s, ja):
            if s[0] == 0:
                return None
            return [(low, (s[0] - 1, 0)), (high, (s[0] - 1, 2))]

    out = checked_transitions(Rounding(), (2, 1), [0, 0])
    assert [p for p, _ in out] == [0.0, 1.0]
    prior = checked_prior(_Line(), lambda s, h, g: np.array([low, high]), (2, 1), 1, _AtCell(0))
    assert prior.tolist() == [0.0, 1.0]


@pytest.mark.parametrize("value", [-2e-6, 1 + 2e-6, float("nan"), "0.5", True])
def test_probabilities_beyond_the_tolerance_are_rejected(value):
    class Off(_Line):
        def transition_probabilities(self, s, ja):
            if s[0] == 0:
                return None
            rest = 1.0 - value if isinstance(value, float) else 0.5
            return [(value, (s[0] - 1, 0)), (rest, (s[0] - 1, 2))]

    with pytest.raises(WorldProtocolError, match=r"probability .* is not finite in \[0, 1\]"):
        checked_transitions(Off(), (2, 1), [0, 0])


class _Token:
    """Hashed by identity: two tokens never compare equal."""


@pytest.mark.parametrize("state", [(3, float("nan")), (3, _Token())], ids=["nan", "identity"])
def test_states_that_are_not_equal_to_a_copy_of_themselves_are_detected(state):
    assert state == state                   # Python compares identical objects as equal ...
    with pytest.raises(WorldProtocolError, match=r"is not equal to a copy of itself; states must "
                                                 r"compare and hash by value"):
        check_state_equality(_Line(), state)  # ... but a copy of the value is not


def test_state_equality_accepts_value_states_and_skips_unpicklable_ones():
    for state in [(3, 1), ("a", (1, 2)), frozenset({1, 2}), np.int64(4), (1.5, None)]:
        check_state_equality(_Line(), state)
    check_state_equality(_Line(), (1, lambda: 0))     # cannot be copied: not judged


def test_check_world_refuses_an_initial_state_with_nan():
    class NanStart(_Line):
        def initial_state(self):
            return (2, float("nan"))

    with pytest.raises(WorldProtocolError, match=r"state \(2, nan\) is not equal to a copy"):
        check_world(NanStart())
