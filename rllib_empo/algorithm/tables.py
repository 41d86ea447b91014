"""Per-transition successor tables: what the learner needs to form model-based targets.

For a state s the EnvRunner records, once per env step, a *row* of fixed-shape arrays
(K = padded successor count, H humans, G goals per human, M goals per human trained for
V_h^e, A_r joint robot actions, D = obs size, Dg = goal-encoding size):

| column          | shape            | meaning                                                     |
|-----------------|------------------|-------------------------------------------------------------|
| obs             | [D]              | encode_state(s)                                             |
| probs           | [A_r, K]         | P(s'_k | s, a_r), human goals and actions summed out (eq. 4)|
| succ_obs        | [K, D]           | encode_state(s'_k); zero padding                            |
| succ_terminal   | [K]              | 1 if s'_k is terminal                                       |
| vhe_goal        | [H, M, Dg]       | goals whose V_h^e(s, g) is trained on this row              |
| vhe_probs       | [H, M, A_r, K]   | P(s'_k | s, a_r) with human h pursuing that goal (eq. 6)    |
| vhe_achieved    | [H, M, K]        | 1{goal achieved in s'_k}                                    |
| vhe_mask        | [H, M]           | 1 for real entries, 0 for padding                           |
| goal_enc, goal_w| [H, G, Dg], [H,G]| goals at s and their weights (sum 1 per human), for X_h (7)|
| succ_goal_enc/_w| [K, H, G, Dg]... | the same at every successor (only when X_h, U_r and V_r are  |
|                 |                  | all computed directly, which needs X_h at successors)       |

Three ways to fill a row (``mode``):
- ``"sum"`` (model-based, default): every joint action is enumerated; each human's actions are
  summed out under the prior, with the goal-marginal prior pi_bar_h = sum_g w(g) pi_h(.|s,g)
  for eq. (4) and for the other humans in eq. (6). M = G: V_h^e is trained for every goal in
  the table. Depends on s only, so it is cached per state.
- ``"sampled_humans"`` (model-based, ``sum_human_actions=False``): the human actions sampled for
  this step replace the sums; M = 1 (each human's current goal). For worlds whose joint human
  action space is too large to sum over.
- ``"sampled"`` (``use_model_based_targets=False``): one observed successor, K = 1; the row's
  probabilities are one-hot on the robot action taken, and the V_h^e row is divided by the
  behaviour probability of that action (importance weighting; ``finalize_sampled_rows``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rllib_empo.worlds.protocol import (WorldProtocolError, check_goals, check_state_equality,
                                        checked_achieved, checked_encoding,
                                        checked_goal_encoding, checked_prior, checked_successors,
                                        joint_action, num_robot_actions, world_name)

COLUMNS = ("obs", "probs", "succ_obs", "succ_terminal", "vhe_goal", "vhe_probs", "vhe_achieved",
           "vhe_mask", "goal_enc", "goal_w")
SUCC_GOAL_COLUMNS = ("succ_goal_enc", "succ_goal_w")
MODES = ("sum", "sampled_humans", "sampled")
_HUMAN_LETTERS = "abcdefhijlmnopq"  # einsum axes of the humans (not g, k, r)


@dataclass(frozen=True)
class TableSpec:
    """Shapes of one row; fixed for a world and a configuration."""
    obs_dim: int
    goal_dim: int
    num_humans: int
    num_robot_actions: int
    num_actions: int
    max_successors: int       # K
    max_goals: int            # G
    mode: str
    succ_goals: bool

    @property
    def vhe_goals(self) -> int:  # M
        return self.max_goals if self.mode == "sum" else 1

    def shapes(self) -> dict[str, tuple]:
        D, Dg, H, A, K, G, M = (self.obs_dim, self.goal_dim, self.num_humans,
                                self.num_robot_actions, self.max_successors, self.max_goals,
                                self.vhe_goals)
        out = {"obs": (D,), "probs": (A, K), "succ_obs": (K, D), "succ_terminal": (K,),
               "vhe_goal": (H, M, Dg), "vhe_probs": (H, M, A, K), "vhe_achieved": (H, M, K),
               "vhe_mask": (H, M), "goal_enc": (H, G, Dg), "goal_w": (H, G)}
        if self.succ_goals:
            out |= {"succ_goal_enc": (K, H, G, Dg), "succ_goal_w": (K, H, G)}
        return out

    def bytes_per_row(self) -> int:
        return 4 * sum(int(np.prod(s)) for s in self.shapes().values())


class TableBuilder:
    """Builds rows for one world, prior and TableSpec; caches what depends on the state only.

    ``cache_size`` bounds memory on worlds whose states rarely repeat: once full, new
    entries are simply not cached.
    """

    def __init__(self, world, prior, spec: TableSpec, rng: np.random.Generator,
                 cache_size: int = 200_000):
        self.world, self.prior_fn, self.spec, self.rng = world, prior, spec, rng
        self.humans = list(world.human_agent_indices)
        self.A = int(world.num_actions)
        self.cache_size = cache_size
        self._succ_cache: dict = {}     # (state, human actions or None) -> (succ list, P)
        self._goal_cache: dict = {}     # state -> (enc [H,G,Dg], w [H,G], goals per human)
        self._row_cache: dict = {}      # state -> row (mode "sum")
        self._obs_cache: dict = {}
        self._prior_cache: dict = {}    # (state, human, goal) -> checked prior
        # Non-terminal states met as successors, for exploring starts (bounded like the caches).
        self.seen_states: list = []
        self._seen: set = set()
        if num_robot_actions(world) != spec.num_robot_actions:
            raise WorldProtocolError("TableSpec does not match the world's robot actions")

    # ---- pieces -------------------------------------------------------------------------
    def encode(self, state) -> np.ndarray:
        enc = self._obs_cache.get(state)
        if enc is None:
            enc = checked_encoding(self.world, state, self.spec.obs_dim)
            self._remember(self._obs_cache, state, enc)
        return enc

    def _remember(self, cache: dict, key, value):
        if len(cache) < self.cache_size:
            cache[key] = value

    def goal_table(self, state):
        """(enc [H,G,Dg], w [H,G], goals per human): all goals if there are at most G, else G
        goals drawn by weight with weights 1/G (an unbiased estimate of eq. 7); not cached
        then, so every visit draws afresh."""
        hit = self._goal_cache.get(state)
        if hit is not None:
            return hit
        H, G, Dg = self.spec.num_humans, self.spec.max_goals, self.spec.goal_dim
        enc, w = np.zeros((H, G, Dg), np.float32), np.zeros((H, G), np.float32)
        chosen, cacheable = [], True
        for i, h in enumerate(self.humans):
            goals = check_goals(self.world, state, h)
            if len(goals) > G:
                cacheable = False
                p = np.array([gw for _, gw in goals], float)
                pick = self.rng.choice(len(goals), size=G, p=p / p.sum())
                goals = [(goals[j][0], 1.0 / G) for j in pick]
            chosen.append([g for g, _ in goals])
            for j, (g, gw) in enumerate(goals):
                enc[i, j], w[i, j] = self.encode_goal(g), gw
        out = (enc, w, chosen)
        if cacheable:
            self._remember(self._goal_cache, state, out)
        return out

    def successors(self, state, human_actions=None):
        """Deduplicated successors and P[a_r, a_H, k] (a_H over all joint human actions, or
        the single given profile)."""
        key = (state, human_actions)
        hit = self._succ_cache.get(key)
        if hit is not None:
            return hit
        Ar, K = self.spec.num_robot_actions, self.spec.max_successors
        profiles = ([tuple(human_actions)] if human_actions is not None else
                    list(np.ndindex(*(self.A,) * len(self.humans))))
        succ, index, entries = [], {}, []
        for a_r in range(Ar):
            for j, prof in enumerate(profiles):
                for p, s2 in checked_successors(self.world, state,
                                                joint_action(self.world, a_r, prof)):
                    k = index.get(s2)
                    if k is None:
                        k = index[s2] = len(succ)
                        succ.append(s2)
                    entries.append((a_r, j, k, p))
        if len(succ) > K:
            for s2 in succ:       # states that never compare equal look like many successors
                check_state_equality(self.world, s2)
            raise WorldProtocolError(
                f"world {world_name(self.world)!r}: state {state!r} has {len(succ)} distinct "
                f"successors, more than max_successors={K}; raise max_successors in the config")
        P = np.zeros((Ar, len(profiles), K))
        for a_r, j, k, p in entries:
            P[a_r, j, k] += p
        self.remember_states(succ)
        out = (succ, P)
        self._remember(self._succ_cache, key, out)
        return out

    def transition(self, state, robot_action: int, human_actions) -> list:
        """Checked, cached ``transition_probabilities`` of one joint action."""
        key = (state, robot_action, human_actions)
        out = self._succ_cache.get(key)
        if out is None:
            out = checked_successors(self.world, state,
                                     joint_action(self.world, robot_action, human_actions))
            self._remember(self._succ_cache, key, out)
        return out

    def prior(self, state, human: int, goal) -> np.ndarray:
        """The human prior pi_h(. | state, goal), checked once and cached."""
        key = (state, human, goal)
        p = self._prior_cache.get(key)
        if p is None:
            p = checked_prior(self.world, self.prior_fn, state, human, goal)
            self._remember(self._prior_cache, key, p)
        return p

    def remember_states(self, states) -> None:
        for s in states:
            if s not in self._seen and len(self._seen) < self.cache_size \
                    and not self.world.is_terminal(s):
                self._seen.add(s)
                self.seen_states.append(s)

    def _succ_arrays(self, succ):
        K, D = self.spec.max_successors, self.spec.obs_dim
        obs, term = np.zeros((K, D), np.float32), np.zeros(K, np.float32)
        for k, s2 in enumerate(succ):
            obs[k] = self.encode(s2)
            term[k] = float(self.world.is_terminal(s2))
        return obs, term

    def _achieved(self, goals_per_human, succ, M):
        H, K = self.spec.num_humans, self.spec.max_successors
        ach, mask = np.zeros((H, M, K), np.float32), np.zeros((H, M), np.float32)
        for i, goals in enumerate(goals_per_human):
            for j, g in enumerate(goals[:M]):
                mask[i, j] = 1.0
                for k, s2 in enumerate(succ):
                    ach[i, j, k] = float(checked_achieved(self.world, g, s2))
        return ach, mask

    def _succ_goal_tables(self, row, succ):
        K, (H, G, Dg) = self.spec.max_successors, (self.spec.num_humans, self.spec.max_goals,
                                                    self.spec.goal_dim)
        enc, w = np.zeros((K, H, G, Dg), np.float32), np.zeros((K, H, G), np.float32)
        for k, s2 in enumerate(succ):
            if not self.world.is_terminal(s2):
                enc[k], w[k] = self.goal_table(s2)[:2]
        row["succ_goal_enc"], row["succ_goal_w"] = enc, w

    # ---- rows ---------------------------------------------------------------------------
    def row_sum(self, state) -> dict:
        """Mode "sum": a cached row for ``state``."""
        row = self._row_cache.get(state)
        if row is not None:
            return row
        succ, P = self.successors(state)
        enc, w, goals = self.goal_table(state)
        H, G, A, Ar, K = (self.spec.num_humans, self.spec.max_goals, self.A,
                          self.spec.num_robot_actions, self.spec.max_successors)
        P = P.reshape((Ar,) + (A,) * H + (K,))
        pi = np.zeros((H, G, A))           # pi_h(a | s, g_j), padding rows stay 0
        for i, h in enumerate(self.humans):
            for j, g in enumerate(goals[i]):
                pi[i, j] = self.prior(state, h, g)
        pibar = np.einsum("hg,hga->ha", w, pi)   # goal-marginal prior of each human
        letters = _HUMAN_LETTERS[:H]
        p_sub = "r" + letters + "k"
        probs = np.einsum(",".join([p_sub] + list(letters)) + "->rk", P, *pibar)   # eq. (4)
        vhe = np.zeros((H, G, Ar, K))
        for i in range(H):                                                          # eq. (6)
            others = [o for o in range(H) if o != i]
            subs = [p_sub, "g" + letters[i]] + [letters[o] for o in others]
            vhe[i] = np.einsum(",".join(subs) + "->grk", P, pi[i], *pibar[others])
        ach, mask = self._achieved(goals, succ, G)
        obs_s, term = self._succ_arrays(succ)
        row = {"obs": self.encode(state), "probs": probs.astype(np.float32),
               "succ_obs": obs_s, "succ_terminal": term, "vhe_goal": enc,
               "vhe_probs": vhe.astype(np.float32), "vhe_achieved": ach, "vhe_mask": mask,
               "goal_enc": enc, "goal_w": w}
        if self.spec.succ_goals:
            self._succ_goal_tables(row, succ)
        if state in self._goal_cache:       # goals were not subsampled: the row is reusable
            self._remember(self._row_cache, state, row)
        return row

    def _held_goal_rows(self, held_goals, succ, probs):
        """V_h^e entries for the goals the humans hold (M = 1), all with the same probs."""
        H, Dg = self.spec.num_humans, self.spec.goal_dim
        goal = np.zeros((H, 1, Dg), np.float32)
        for i, g in enumerate(held_goals):
            goal[i, 0] = self.encode_goal(g)
        ach, mask = self._achieved([[g] for g in held_goals], succ, 1)
        vhe_probs = np.broadcast_to(probs, (H, 1) + probs.shape).astype(np.float32)
        return {"vhe_goal": goal, "vhe_probs": vhe_probs, "vhe_achieved": ach, "vhe_mask": mask}

    def encode_goal(self, goal) -> np.ndarray:
        return checked_goal_encoding(self.world, goal, self.spec.goal_dim)

    def row_sampled_humans(self, state, human_actions, held_goals) -> dict:
        """Mode "sampled_humans": the step's sampled human actions replace the sum over them."""
        succ, P = self.successors(state, tuple(int(a) for a in human_actions))
        probs = P[:, 0, :].astype(np.float32)
        enc, w, _ = self.goal_table(state)
        obs_s, term = self._succ_arrays(succ)
        row = {"obs": self.encode(state), "probs": probs, "succ_obs": obs_s,
               "succ_terminal": term, "goal_enc": enc, "goal_w": w,
               **self._held_goal_rows(held_goals, succ, probs)}
        if self.spec.succ_goals:
            self._succ_goal_tables(row, succ)
        return row

    def row_sampled(self, state, robot_action: int, next_state, held_goals) -> dict:
        """Mode "sampled": the one observed successor (K = 1). ``finalize_sampled_rows`` later
        divides the V_h^e probabilities by the behaviour probability of ``robot_action``."""
        probs = np.zeros((self.spec.num_robot_actions, 1), np.float32)
        probs[robot_action, 0] = 1.0
        enc, w, _ = self.goal_table(state)
        obs_s, term = self._succ_arrays([next_state])
        row = {"obs": self.encode(state), "probs": probs, "succ_obs": obs_s,
               "succ_terminal": term, "goal_enc": enc, "goal_w": w,
               **self._held_goal_rows(held_goals, [next_state], probs)}
        if self.spec.succ_goals:
            self._succ_goal_tables(row, [next_state])
        return row


def stack_rows(rows: list[dict]) -> dict[str, np.ndarray]:
    """List of rows -> dict of column arrays with a leading row axis."""
    if not rows:
        return {}
    return {c: np.stack([r[c] for r in rows]) for c in rows[0]}


def finalize_sampled_rows(columns: dict, behaviour_prob: np.ndarray) -> dict:
    """Importance weighting of the sampled V_h^e target: E_mu[(pi/mu) X] = E_pi[X]."""
    columns["vhe_probs"] = columns["vhe_probs"] / np.maximum(
        behaviour_prob, 1e-8)[:, None, None, None, None].astype(np.float32)
    return columns
