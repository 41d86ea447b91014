"""Where the policy's error comes from: X_h's error, or the fit of Q_r (issue 10, lanes).

pi_r is the power law of Q_r, and Q_r's fixed point depends on the humans only through U_r,
which eq. (8) computes from X_h. So the robot's exact fixed point *given the learned X_h*
(``exact.solve(..., x_h=<learned X_h>)``) splits the distance of the learned pi_r from the
exact pi_r* in two:

- ``x_h``: TV(pi_r of that fixed point, pi_r*), the error X_h alone causes (a Q_r learned
  perfectly on these X_h would still be this far off);
- ``q_r``: TV(learned pi_r, pi_r of that fixed point), the error of Q_r's own fit (its
  bootstrapped targets given the X_h it sees);
- ``v_h_e``: the same as ``x_h`` for X_h computed by eq. (7) from the learned V_h^e, to tell
  the X_h network's own error from V_h^e's;
- ``total``: TV(learned pi_r, pi_r*), what ``compare_to_exact`` reports (at most the sum of
  the first two, state by state).

``v_r_s0_rel_error`` splits V_r(s0)'s relative error the same way: ``x_h`` and ``v_h_e``
compare the fixed point's V_r(s0) with V_r*(s0), ``q_r`` the learned V_r(s0) with the fixed
point's (relative to it), ``total`` the learned with V_r*(s0).

Each is a mean over the reachable non-terminal states, over the decision states (where pi_r*
is not uniform) and at s0.

    python -m benchmarks.error_budget --world lanes --seeds 0 --updates 20000 --every 4000
    python -m benchmarks.error_budget --world lanes --set q_r_target_update_interval=300
    python -m benchmarks.error_budget --checkpoints DIR [DIR ...]   # saved Empo checkpoints
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "error_budget.json"
PARTS = ("total", "x_h", "v_h_e", "q_r")


def _tv(p, q) -> np.ndarray:
    return 0.5 * np.abs(p - q).sum(-1)


def learned_x_h(algo, graph) -> dict:
    """[num_states, H] X_h over ``graph.states`` (terminal rows at the floor): ``"net"`` from
    the X_h network (or what the algorithm uses in its place), ``"v_h_e"`` by eq. (7) from
    the learned V_h^e over the goals possible at each state."""
    import torch
    from rllib_empo.theory import equations as eq
    th = algo.config.params
    idx = np.flatnonzero(~graph.terminal)
    states = [graph.states[i] for i in idx]
    net = np.full((graph.num_states, len(graph.humans)), th.x_h_floor)
    net[idx] = algo.values(states, need=("x_h",))["x_h"]
    from_v = np.full_like(net, th.x_h_floor)
    for pos, h in enumerate(graph.humans):
        goals, W, _ = graph.goal_space(h)
        items, where = [], []
        for i in idx:
            for g in np.flatnonzero(W[i] > 0):
                items.append((graph.states[i], pos, goals[g]))
                where.append((i, g))
        V = np.zeros(W.shape)
        if items:
            rows, cols = map(np.array, zip(*where))
            V[rows, cols] = algo.v_h_e_values(items)
        from_v[idx, pos] = eq.x_h_from_v_h_e(torch.from_numpy(V[idx]), torch.from_numpy(W[idx]),
                                             th.zeta, th.x_h_floor).numpy()
    return {"net": net, "v_h_e": from_v}


def trained_states(algo, states) -> np.ndarray | None:
    """Which of ``states`` the learner trains on now: those with a successor table in the
    replay memory (a row's state); None without a memory (a restore without the buffer)."""
    from rllib_empo.worlds.keys import state_key
    replay = getattr(algo, "replay", None)
    if replay is None or len(replay) == 0:
        return None
    tables = replay.tables
    live = tables.live_slots()
    slots = replay.states.slots_of([state_key(algo.world, s) for s in states])
    return np.isin(slots, tables.col("state")[live]) & (slots >= 0)


def error_budget(algo, solution=None) -> dict:
    """The split of the module docstring for ``algo`` (an Empo) against ``solution`` (default
    ``algo.exact_solution()``): {part: {"mean", "decision", "s0"}}, with the counts."""
    from rllib_empo.algorithm.env import prior_from_env_config
    from rllib_empo.exact import solve
    from rllib_empo.exact.compare import DECISION_TOLERANCE
    solution = solution or algo.exact_solution()
    graph, cfg = solution.graph, algo.config
    prior = prior_from_env_config(algo.world, cfg.env_config, cfg.gamma_h)
    idx = np.flatnonzero(~graph.terminal)
    s0 = int(np.flatnonzero(idx == 0)[0])
    states = [graph.states[i] for i in idx]
    pi_exact = solution.PI[idx]
    learned = algo.values(states, need=("pi_r", "v_r"))
    pi_learned = learned["pi_r"]
    x = learned_x_h(algo, graph)
    fixed_solutions = {k: solve(algo.world, prior, cfg.params, graph=graph, max_states=None,
                                x_h=v) for k, v in x.items()}
    fixed = {k: sol.PI[idx] for k, sol in fixed_solutions.items()}
    tvs = {"total": _tv(pi_learned, pi_exact), "x_h": _tv(fixed["net"], pi_exact),
           "v_h_e": _tv(fixed["v_h_e"], pi_exact), "q_r": _tv(pi_learned, fixed["net"])}
    decision = pi_exact.max(-1) - pi_exact.min(-1) > DECISION_TOLERANCE
    out = {k: {"mean": float(t.mean()), "s0": float(t[s0]),
               "decision": float(t[decision].mean()) if decision.any() else 0.0}
           for k, t in tvs.items()}
    trained = trained_states(algo, states)
    if trained is not None:     # the replay memory is there (not after a restore without it)
        out["coverage"] = {
            "trained_share": float(trained.mean()),
            **{f"{k}_{where}": float(tvs[k][m].mean()) if m.any() else 0.0
               for k in ("total", "q_r") for where, m in (("trained", trained),
                                                          ("untrained", ~trained))}}
    out["x_h_abs_error"] = {k: float(np.abs(v[idx] - solution.X_H[idx]).mean())
                            for k, v in x.items()}
    # the same split of V_r(s0)'s relative error (compare_to_exact's v_r_s0_rel_error)
    rel = lambda a, b: float(abs(a - b) / abs(b))                          # noqa: E731
    v0, v0_learned = solution.V_R[0], float(learned["v_r"][s0])
    out["v_r_s0_rel_error"] = {
        "total": rel(v0_learned, v0),
        "x_h": rel(fixed_solutions["net"].V_R[0], v0),
        "v_h_e": rel(fixed_solutions["v_h_e"].V_R[0], v0),
        "q_r": rel(v0_learned, fixed_solutions["net"].V_R[0])}
    out["num_states"], out["num_decision_states"] = int(len(idx)), int(decision.sum())
    return out


def _line(tag: str, b: dict) -> str:
    return (f"{tag}: " + "  ".join(f"{k} mean {b[k]['mean']:.4f} dec {b[k]['decision']:.4f} "
                                   f"s0 {b[k]['s0']:.4f}" for k in PARTS)
            + f"  |dX_h| net {b['x_h_abs_error']['net']:.4f} v_h_e {b['x_h_abs_error']['v_h_e']:.4f}"
            + "  V_r(s0) rel " + " ".join(f"{k} {v:.4f}" for k, v in b["v_r_s0_rel_error"].items())
            + ("" if "coverage" not in b else "  coverage " + " ".join(
                f"{k} {v:.4f}" for k, v in b["coverage"].items())))


def run(world: str, seed: int, updates: int, every: int, training: dict | None = None,
        save=None) -> dict:
    """Train ``world`` on the defaults (``num_env_runners=0``), with the config fields
    ``training`` changed (EMPO's or RLlib's), and split the error every ``every`` learner updates."""
    from rllib_empo import EmpoConfig
    from rllib_empo.algorithm.env import env_id
    config = (EmpoConfig().environment(env_id(world)).env_runners(num_env_runners=0)
              .debugging(seed=seed))
    algo = config.update_from_dict(dict(training or {})).build_algo()
    curve, t0, nxt = [], time.perf_counter(), every
    try:
        solution = algo.exact_solution()
        while algo.num_updates < updates:
            algo.train()
            if algo.num_updates >= nxt or algo.num_updates >= updates:
                nxt += every
                b = error_budget(algo, solution)
                curve.append({"num_updates": algo.num_updates,
                              "train_s": round(time.perf_counter() - t0, 1), **b})
                print(_line(f"{world} s{seed} {algo.num_updates}", b), flush=True)
                if save is not None:
                    save(_result(world, seed, training, curve))
    finally:
        algo.stop()
    return _result(world, seed, training, curve)


def _result(world, seed, training, curve) -> dict:
    return {"world": world, "seed": seed, "training": training or {}, "curve": list(curve),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def from_checkpoints(paths) -> list:
    from rllib_empo import Empo
    out = []
    for p in paths:
        algo = Empo.from_checkpoint(str(p))
        try:
            b = error_budget(algo)
            out.append({"checkpoint": str(p), "num_updates": algo.num_updates, **b})
            print(_line(f"{p} {algo.num_updates}", b), flush=True)
        finally:
            algo.stop()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default="lanes")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--updates", type=int, default=20_000)
    ap.add_argument("--every", type=int, default=4_000)
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="config fields to change from the defaults (values read as JSON)")
    ap.add_argument("--checkpoints", nargs="*", type=Path, default=None,
                    help="split the error of saved checkpoints instead of training")
    ap.add_argument("--key", default=None, help="the entry of --out to write (default: "
                                                "world/seed, or 'checkpoints')")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    from benchmarks.common import ensure_ray
    ensure_ray(num_cpus=2)
    training = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    if args.checkpoints is not None:
        _write(args.out, args.key or "checkpoints", from_checkpoints(args.checkpoints))
        return 0
    suffix = "".join(f" {k}={v}" for k, v in training.items())
    for seed in map(int, args.seeds.split(",")):
        key = args.key or f"{args.world}/{seed}{suffix}"
        save = lambda res, key=key: _write(args.out, key, res)   # noqa: E731
        save(run(args.world, seed, args.updates, args.every, training, save))
    return 0


def _write(out: Path, key: str, res: dict) -> None:
    data = json.loads(out.read_text()) if out.exists() else {}
    data[key] = res
    out.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
