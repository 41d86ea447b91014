"""How close a learned solution is to the exact one.

``compare_to_exact(learned, solution)`` takes anything that evaluates learned values on raw
world states (an ``Empo`` algorithm, or any object with the same two methods):

- ``learned.values(states)`` -> dict of arrays ``q_r`` [N, A_r], ``pi_r`` [N, A_r] (at the
  nominal beta_r), ``v_r`` [N], ``x_h`` [N, H];
- ``learned.v_h_e_values(items)`` -> array [N] for ``(state, human position, goal)`` triples.

and reports, over the reachable non-terminal states of ``solution``:

- ``tv_pi_r_s0``: total-variation distance of pi_r at the initial state;
- ``v_r_s0_rel_error``: |V_r - V_r*| / |V_r*| at the initial state;
- ``mean_tv_pi_r`` / ``max_tv_pi_r``: TV of pi_r over the states;
- ``argmax_agreement``: share of the states with a unique exact best action where the learned
  policy's most likely action is the exact one (NaN when no state has a unique best action);
- ``mean_abs_v_h_e_error``: mean |V_h^e - V_h^e*| over (state, human, possible goal);
- ``mean_abs_x_h_error`` and ``q_r_s0_max_rel_error``; ``num_states``;
- on the *decision states*, where the exact pi_r is not uniform (mean TV alone hides them
  among the many states where every action ties): ``num_decision_states``,
  ``mean_tv_pi_r_decision``; and on the states where the exact best action leads the second
  by more than 0.05 (``num_clear_states``), ``greedy_agreement_clear``: the share where the
  learned policy's most likely action is the exact best one (NaN when there is none).

:data:`CONVERGENCE_BARS` states what a converged run reaches; :func:`bars_met` and
:func:`worst_figures` read figures against them.
"""
from __future__ import annotations

import numpy as np

#: What "converged" means against an exact solution: figure -> (direction, bound). A run meets
#: the bars when every figure is on the right side of its bound (a NaN figure, such as
#: greedy_agreement_clear on a world without clear states, has nothing to miss).
CONVERGENCE_BARS = {
    "tv_pi_r_s0": ("<=", 0.03),
    "v_r_s0_rel_error": ("<=", 0.03),
    "mean_tv_pi_r": ("<=", 0.03),
    "mean_abs_v_h_e_error": ("<=", 0.02),
    "mean_tv_pi_r_decision": ("<=", 0.05),
    "greedy_agreement_clear": (">=", 0.95),
}


def bars_met(figures: dict, bars: dict = CONVERGENCE_BARS) -> dict:
    """{figure: whether it meets its bar} for the figures of ``bars``."""
    out = {}
    for name, (direction, bound) in bars.items():
        v = float(figures[name])
        out[name] = bool(np.isnan(v) or (v <= bound if direction == "<=" else v >= bound))
    return out


def worst_figures(history: list, bars: dict = CONVERGENCE_BARS) -> dict:
    """The worst value of each figure of ``bars`` over the evaluations ``history`` (the
    largest for an upper bound, the smallest for a lower bound; NaN values skipped)."""
    out = {}
    for name, (direction, _) in bars.items():
        vals = [float(f[name]) for f in history if not np.isnan(float(f[name]))]
        out[name] = (max(vals) if direction == "<=" else min(vals)) if vals else float("nan")
    return out


#: pi_r differs between actions by more than this at a decision state.
DECISION_TOLERANCE = 1e-6
#: the exact best action leads the second by more than this at a "clear" state.
CLEAR_LEAD = 0.05
#: The keys of ``compare_to_exact``'s result, in order.
FIGURES = ("tv_pi_r_s0", "v_r_s0_rel_error", "mean_tv_pi_r", "max_tv_pi_r", "argmax_agreement",
           "mean_abs_v_h_e_error", "mean_abs_x_h_error", "q_r_s0_max_rel_error", "num_states",
           "num_decision_states", "mean_tv_pi_r_decision", "num_clear_states",
           "greedy_agreement_clear")


def compare_to_exact(learned, solution) -> dict:
    """Fidelity of ``learned`` against ``exact.solve(...)`` (module docstring)."""
    graph = solution.graph
    idx = np.flatnonzero(~graph.terminal)
    states = [graph.states[i] for i in idx]
    values = learned.values(states)
    pi_exact = solution.PI[idx]
    tv = 0.5 * np.abs(values["pi_r"] - pi_exact).sum(-1)
    s0 = int(np.flatnonzero(idx == 0)[0])
    srt = np.sort(pi_exact, axis=-1)
    unique = srt[:, -1] - srt[:, -2] > 1e-9 if pi_exact.shape[1] > 1 else np.ones(len(idx), bool)
    agree = values["pi_r"].argmax(-1) == pi_exact.argmax(-1)
    items, exact_v = [], []
    for pos, h in enumerate(graph.humans):
        _, W, _ = graph.goal_space(h)
        for i in idx:
            for g in np.flatnonzero(W[i] > 0):
                items.append((graph.states[i], pos, solution.goals[h][g]))
                exact_v.append(solution.V_HE[h][i, g])
    v_err = np.abs(learned.v_h_e_values(items) - np.array(exact_v))
    q0, q0_exact = values["q_r"][s0], solution.Q[0]
    decision = pi_exact.max(-1) - pi_exact.min(-1) > DECISION_TOLERANCE
    clear = (srt[:, -1] - srt[:, -2] > CLEAR_LEAD) if pi_exact.shape[1] > 1 else np.zeros(len(idx), bool)
    return {
        "tv_pi_r_s0": float(tv[s0]),
        "v_r_s0_rel_error": float(abs(values["v_r"][s0] - solution.V_R[0]) / abs(solution.V_R[0])),
        "mean_tv_pi_r": float(tv.mean()),
        "max_tv_pi_r": float(tv.max()),
        "argmax_agreement": float(agree[unique].mean()) if unique.any() else float("nan"),
        "mean_abs_v_h_e_error": float(v_err.mean()),
        "mean_abs_x_h_error": float(np.abs(values["x_h"] - solution.X_H[idx]).mean()),
        "q_r_s0_max_rel_error": float(np.max(np.abs(q0 - q0_exact) / np.abs(q0_exact))),
        "num_states": int(len(idx)),
        "num_decision_states": int(decision.sum()),
        "mean_tv_pi_r_decision": float(tv[decision].mean()) if decision.any() else 0.0,
        "num_clear_states": int(clear.sum()),
        "greedy_agreement_clear": float(agree[clear].mean()) if clear.any() else float("nan"),
    }
