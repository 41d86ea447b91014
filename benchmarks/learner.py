"""Figure 2: learner throughput, the plain-torch limit, and how often the target networks run.

**Configuration** (as the earlier rock_gate benchmark): every network is one
(``u_r_use_network=True``, ``v_r_use_network=True``: q_r, v_h_e, x_h, u_r and v_r), every
warm-up duration 0 (stage 6 from the first update: every network trains on every update),
model-based targets, hidden sizes (64, 64) (the issue's reference; the defaults, measured
separately below, are wider) and target-copy intervals (100 updates), batch 64, one torch thread (``torch_num_threads=1``), ``num_env_runners=0``.
Worlds: rock_gate, lanes (2 humans, 64 joint actions, 28,137 states) and crowd with 3 humans
(heuristic prior, ``sum_human_actions=False``), all three built in one process and measured
in the same run, their blocks interleaved so that all see the same load. The replay memory
of each is filled with ``FILL`` real rows (``benchmarks.common.step_rows``: the env of the
algorithm's own settings, uniform random robot actions as in the warm-up, packed as an
EnvRunner packs them).

**Paths**, each timed in blocks of ``PER_BLOCK`` updates (a multiple of the target-copy
interval, so every block pays the same target-cache refills), median over the blocks, in
wall time and in CPU time of this process:

- ``algo._update_chunk(8)``: 8 updates per learner call, as ``training_step`` runs them
  (the headline, ``learner_updates_per_s_b64*``), and ``_update_chunk(1)``;
- the **plain-torch loop** (:class:`PlainLoop`): the same forward and backward passes on the
  Learner's own module and the same minibatches -- rows drawn from the same replay memory
  (8 minibatches per draw), ``batch.expand``, the predictions of the active networks,
  ``targets.compute_targets`` with a ``TargetCache``, ``targets.value_loss``, backward,
  the learner's per-network global-norm clipping, one fused Adam over the same parameter
  groups with each step's learning rates, hard target copies on the schedule's steps -- and
  nothing of RLlib. Its rate is the limit of this design; RLlib's time over it is reported
  (``learner_rllib_time_over_plain_b64_<world>``), and cProfile of both paths on rock_gate
  (``benchmarks.profiling.learner_parts``) says where the rest of the time goes.

**Target evaluations** (``learner.target_cache.evaluated``, counted over the chunk-8
blocks): each distinct state's target outputs (q_r, x_h, u_r, v_r and V_h^e for each of its
H x G goal slots) are computed once between two target copies. The design before issue 11
evaluated the target networks at every padded successor slot of every row: B x K states for
Q_r / V_r and B x H x M x K (state, goal) pairs for V_h^e, with K the world's successor
bound of that design (``benchmarks.common.old_successor_slots``: 25 on rock_gate, 64 on
lanes) and M the goals trained per human (G in mode "sum", 1 otherwise). The dedup factor
is old / new per update; beside it the distinct states of one minibatch alone (what one
update evaluates without the cache across updates) and the non-padding successor slots.

Also: batch 256 on rock_gate (chunk 8), and **the defaults** (``EmpoConfig()``'s hidden
sizes per network, batch and ``updates_per_iteration`` updates per call) on rock_gate and lanes
(``learner_updates_per_s_defaults_<world>``): the rate that sets how long a default run's
20,000 updates take.

Bars: >= 300 updates/s on rock_gate; lanes >= 0.5 x rock_gate measured in the same run;
>= 50 updates/s on crowd with 3 humans.
"""
from __future__ import annotations

import numpy as np

from benchmarks.common import (CASE_LABELS, case_config, ensure_ray, judge, median,
                               old_successor_slots, row, step_rows, timed_cpu)

TARGET_ROCK_GATE = 300.0
TARGET_RATIO = 0.5
TARGET_CROWD_H3 = 50.0
WORLDS = ("rock_gate", "lanes", "crowd_h3")
QUICK_WORLDS = ("rock_gate", "crowd_h3")       # lanes' phase-1 prior takes 10-25 s
CHUNK = 8
FILL = 20_000
PER_BLOCK = 200                                 # 2 target-copy intervals
BLOCKS = 5
ZERO_WARMUP = dict(warmup_v_h_e_steps=0, warmup_x_h_steps=0, warmup_u_r_steps=0,
                   warmup_q_r_steps=0, warmup_v_r_steps=0, beta_r_rampup_steps=0)


def learner_config(batch_size: int = 64, world: str = "rock_gate", hidden=(64, 64), **training):
    return case_config(world, 0, 1, 200, **{
        **ZERO_WARMUP, "u_r_use_network": True, "v_r_use_network": True,
        "use_model_based_targets": True, "train_batch_size_per_learner": batch_size,
        "hidden_sizes": hidden if isinstance(hidden, dict) else tuple(hidden),
        "torch_num_threads": 1, **training})


def _sizes_text(hidden: dict) -> str:
    """"q_r (512, 512), the others (256, 256)" for {network: sizes}."""
    from collections import Counter
    common = Counter(tuple(v) for v in hidden.values()).most_common(1)[0][0]
    odd = [f"{n} {tuple(v)}" for n, v in hidden.items() if tuple(v) != common]
    return ", ".join(odd + [f"the others {common}" if odd else f"{common}"])


def local_learner(algo):
    return algo.learner_group._learner


def empo_module(algo):
    from ray.rllib.core import DEFAULT_MODULE_ID
    return local_learner(algo).module[DEFAULT_MODULE_ID].unwrapped()


def fill_replay(algo, rows: int, seed: int = 0) -> None:
    """Fill the algorithm's replay memory with ``rows`` real rows (module docstring): an env
    of the algorithm's own world, env_config and settings, stepped outside RLlib."""
    from rllib_empo.algorithm.env import EmpoEnv, env_ids
    cfg = algo.config
    env = EmpoEnv({**dict(cfg.env_config), "world": env_ids()[cfg.env],
                   "empo": cfg.empo_env_settings()})
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    while len(algo.replay) < rows:
        algo.replay.add(step_rows(env, min(1000, rows - len(algo.replay)), rng))


def update_fn(algo, chunk: int):
    """``n`` updates, ``chunk`` per learner call (``n`` a multiple of ``chunk``)."""
    return lambda n: [algo._update_chunk(chunk) for _ in range(n // chunk)]


# ---------------------------------------------------------------- the plain-torch limit
class PlainLoop:
    """The learner's work on the Learner's own module, without RLlib (module docstring)."""

    def __init__(self, algo, seed: int = 1):
        import torch
        from rllib_empo.algorithm.batch import TargetCache
        from rllib_empo.theory.params import EmpoParams
        cfg = algo.config
        self.cfg, self.view, self.schedule = cfg, algo.replay, algo.schedule
        self.module = m = empo_module(algo)
        self.theory = EmpoParams.from_config(cfg)
        self.cache = TargetCache(m, self.view, self.theory)
        self.names = m.network_names
        self.opt = torch.optim.Adam([{"params": list(m.net(n).parameters()), "lr": 1e-3,
                                      "network": n} for n in self.names], fused=True)
        self.rng = np.random.default_rng(seed)
        self.t = 0
        self.B = cfg.train_batch_size_per_learner

    def run(self, n: int, chunk: int = CHUNK) -> None:
        import torch
        for _ in range(n // chunk):
            rows = self.view.sample(chunk * self.B, self.rng, by=self.cfg.replay_sampling)
            tables, weights = torch.from_numpy(rows["table"]), torch.from_numpy(rows["weight"])
            for i in range(chunk):
                sl = slice(i * self.B, (i + 1) * self.B)
                self.update(tables[sl], weights[sl])

    def update(self, tables, weights) -> None:
        import torch
        from rllib_empo.algorithm.batch import expand
        from rllib_empo.algorithm.targets import compute_targets, loss_masks, value_loss
        m, cfg, plan = self.module, self.cfg, self.schedule.plan(self.t)
        active = tuple(n for n in plan.active if n in self.names)
        b = expand(self.view, tables, weights, m.num_actions, m.num_robot_actions)
        pred = {}
        if "q_r" in active:
            pred["q_r"] = m.q_r_values(b.obs)
        if "v_h_e" in active:
            pred["v_h_e"] = m.v_h_e_values(b.obs[:, None, None, :], m.goal_inputs(b.goal_enc))
        for name in ("x_h", "u_r", "v_r"):
            if name in active:
                pred[name] = getattr(m, f"{name}_values")(b.obs)
        targets = compute_targets(self.cache, b, active, plan.beta_r, self.theory)
        masks = loss_masks(b)
        loss = sum(value_loss(n, pred[n], targets[n], masks.get(n), cfg.value_loss,
                              cfg.q_r_advantage_weight, self.theory.neg_q_r_floor)
                   for n in active)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        finite = self.clip(active)
        lrs = dict(plan.lrs)
        for group in self.opt.param_groups:
            group["lr"] = lrs[group["network"]]
        if finite:
            self.opt.step()
        if plan.sync:
            self.sync(plan.sync)
        self.t += 1

    def clip(self, active) -> bool:
        """The learner's clipping: by the global norm of each active network's gradients
        (RLlib's formula); whether every norm is finite."""
        import torch
        finite = True
        for name in active:
            grads = [p.grad for p in self.module.net(name).parameters() if p.grad is not None]
            if not grads:
                continue
            norms = torch.stack(torch._foreach_norm(grads))
            finite = finite and bool(torch.isfinite(norms).all())
            total = torch.linalg.vector_norm(norms)
            coeff = self.cfg.grad_clip / torch.clamp(total + 1e-6, min=self.cfg.grad_clip)
            torch._foreach_mul_(grads, torch.clamp(coeff, max=1.0))
        return finite

    def sync(self, names) -> None:
        """Hard target copies (and a fresh target cache)."""
        import torch
        self.cache.invalidate()
        m = self.module
        with torch.no_grad():
            for name in names:
                if name in self.names:
                    torch._foreach_copy_(list(m.net(name, target=True).parameters()),
                                         list(m.net(name).parameters()))


# ---------------------------------------------------------------- target evaluations
def batch_slots(algo, batches: int = 20, seed: int = 2) -> dict:
    """Per minibatch of B rows (no cache across updates): distinct states the targets need
    (the rows' states and their successors), non-padding successor slots, and (state, goal)
    pairs V_h^e is read at; means over ``batches`` minibatches."""
    import torch
    from rllib_empo.algorithm.batch import _g, expand
    m, view, B = empo_module(algo), algo.replay, algo.config.train_batch_size_per_learner
    rng = np.random.default_rng(seed)
    distinct, valid, missing, missing_term, K = [], [], [], [], []
    for _ in range(batches):
        rows = view.sample(B, rng)
        b = expand(view, torch.from_numpy(rows["table"]), torch.from_numpy(rows["weight"]),
                   m.num_actions, m.num_robot_actions)
        distinct.append(torch.unique(torch.cat([b.s, b.succ[b.succ_valid]])).numel())
        valid.append(int(b.succ_valid.sum()))
        K.append(b.succ.shape[1])
        # V_h^e pairs not among the successor's own goals are evaluated outside the cache,
        # unless eq. (6) multiplies them by 0 (TargetCache.v_h_e_at_successors)
        goals_next = _g(view, "states", "goals", b.succ)
        match = goals_next.permute(0, 2, 1, 3)[:, :, None] == b.goal[..., None, None]
        found = match.any(-1) & (b.goal >= 0)[..., None]
        miss_all = (~found) & (b.goal >= 0)[..., None] & b.succ_valid[:, None, None, :]
        needed = (b.succ_valid & (b.succ_terminal == 0))[:, None, None, :] & (b.achieved == 0)
        missing.append(int((miss_all & needed).sum()))
        missing_term.append(int((miss_all & ~needed).sum()))
    return {"distinct_states": float(np.mean(distinct)), "valid_slots": float(np.mean(valid)),
            "batch_K": float(np.mean(K)), "vhe_outside_cache": float(np.mean(missing)),
            "vhe_outside_cache_skipped": float(np.mean(missing_term))}


def dedup(algo, world: str, evaluated: int, updates: int) -> dict:
    """Old design's target evaluations per update vs the TargetCache's (module docstring)."""
    spec = algo.config.table_spec()
    B = algo.config.train_batch_size_per_learner
    H = spec.num_humans
    M = spec.max_goals if spec.mode == "sum" else 1
    G = algo.replay.states.col("goals").shape[2]
    from rllib_empo.algorithm.env import world_for_config
    K_old = old_successor_slots(world_for_config(algo.config.env, algo.config.env_config))
    per_update = evaluated / max(updates, 1)
    slots = batch_slots(algo)
    old_q, old_vhe = B * K_old, B * H * M * K_old
    new_vhe = per_update * H * G + slots["vhe_outside_cache"]
    return {"K_old": K_old, "B": B, "H": H, "M": M, "G": G,
            "old_q_r_evals_per_update": old_q, "old_v_h_e_evals_per_update": old_vhe,
            "state_evals_per_update": per_update, "v_h_e_evals_per_update": new_vhe,
            # None when no target copy fell in the counted blocks (--quick's 16 updates)
            "dedup_factor_q_r": old_q / per_update if per_update else None,
            "dedup_factor_v_h_e": old_vhe / max(new_vhe, 1e-9),
            "within_update_distinct_states": slots["distinct_states"],
            "within_update_factor_q_r": old_q / slots["distinct_states"],
            "valid_successor_slots": slots["valid_slots"], "batch_K": slots["batch_K"],
            "v_h_e_outside_cache_per_update": slots["vhe_outside_cache"],
            "v_h_e_outside_cache_skipped_per_update": slots["vhe_outside_cache_skipped"],
            "replay_rows": len(algo.replay), "replay_states": len(algo.replay.states),
            "evaluated": evaluated, "updates": updates}


# ---------------------------------------------------------------- the measurement
def build(world: str, batch_size: int, fill: int, hidden=(64, 64)):
    algo = learner_config(batch_size, world, hidden=hidden).build_algo()
    fill_replay(algo, fill)
    algo._update_stats = {}                  # training_step() sets it up otherwise
    return algo


def measure(worlds, blocks: int, per_block: int, fill: int, batch_size: int = 64,
            plain: bool = True, chunks=(CHUNK, 1), hidden=(64, 64)) -> dict:
    """Rates of every path on every world, blocks interleaved (module docstring)."""
    algos = {w: build(w, batch_size, fill, hidden) for w in worlds}
    try:
        paths = {}
        for w, algo in algos.items():
            for c in chunks:
                paths[(w, f"rllib{c}")] = update_fn(algo, c)
            if plain:
                loop = PlainLoop(algo)
                paths[(w, "plain")] = loop.run
        for fn in paths.values():          # first updates build optimizer state, caches
            fn(max(CHUNK, 16))
        samples = {k: ([], []) for k in paths}
        evaluated = {w: 0 for w in worlds}
        for _ in range(blocks):
            for (w, p), fn in paths.items():
                cache = local_learner(algos[w]).target_cache
                e0 = cache.evaluated
                wall, cpu, _ = timed_cpu(lambda: fn(per_block))
                if p == f"rllib{chunks[0]}":
                    evaluated[w] += cache.evaluated - e0
                samples[(w, p)][0].append(per_block / wall)
                samples[(w, p)][1].append(per_block / cpu)
        out = {}
        for w, algo in algos.items():
            r = {"world": w, "batch_size": batch_size,
                 "active_networks": sorted(algo.schedule.active_networks(0)),
                 "replay": algo.replay.sizes()}
            for (w2, p), (wall, cpu) in samples.items():
                if w2 == w:
                    r[p] = {"updates_per_s": median(wall), "cpu_updates_per_s": median(cpu),
                            "updates_per_s_all": wall, "cpu_updates_per_s_all": cpu}
            if f"rllib{CHUNK}" in r and chunks[0] == CHUNK:
                r["dedup"] = dedup(algo, w, evaluated[w], blocks * per_block)
            out[w] = r
        return out
    finally:
        for algo in algos.values():
            algo.stop()


def run(quick: bool = False) -> dict:
    ensure_ray()
    blocks, per_block, fill = (1, 16, 1_000) if quick else (BLOCKS, PER_BLOCK, FILL)
    worlds = QUICK_WORLDS if quick else WORLDS
    res = measure(worlds, blocks, per_block, fill)
    details = {"b64": res, "blocks": blocks, "per_block": per_block, "fill": fill}
    figures, rows = {}, []
    base = res["rock_gate"]
    for w in WORLDS:
        r = res.get(w)
        suffix = "" if w == "rock_gate" else f"_{w}"
        key = f"learner_updates_per_s_b64{suffix}"
        label = CASE_LABELS[w]
        if r is None:
            figures[key] = None
            rows.append(row(key, f"{label}: learner updates/s, batch 64, 8 per call", None,
                            "updates/s", note="not run in --quick", quick=quick))
            continue
        c, one, pl = r[f"rllib{CHUNK}"], r["rllib1"], r["plain"]
        figures[key] = c["updates_per_s"]
        figures[key + "_cpu"] = c["cpu_updates_per_s"]
        figures[key + "_single_call"] = one["updates_per_s"]
        figures[key + "_single_call_cpu"] = one["cpu_updates_per_s"]
        figures[f"learner_plain_torch_updates_per_s_b64_{w}"] = pl["updates_per_s"]
        figures[f"learner_plain_torch_updates_per_s_b64_{w}_cpu"] = pl["cpu_updates_per_s"]
        ratio = pl["updates_per_s"] / c["updates_per_s"]
        ratio_cpu = pl["cpu_updates_per_s"] / c["cpu_updates_per_s"]
        figures[f"learner_rllib_time_over_plain_b64_{w}"] = ratio
        figures[f"learner_rllib_time_over_plain_b64_{w}_cpu"] = ratio_cpu
        bar = {"rock_gate": TARGET_ROCK_GATE, "crowd_h3": TARGET_CROWD_H3}.get(w)
        target = f">= {bar:.0f}" if bar else ""
        met = judge(c["updates_per_s"], c["cpu_updates_per_s"],
                    lambda v: v >= bar) if bar else None
        rows.append(row(key, f"{label}: learner updates/s, batch 64, 8 per call",
                        c["updates_per_s"], "updates/s", target, met, note=(
                            f"CPU-time rate {c['cpu_updates_per_s']:.0f}; the training_step "
                            f"path (algo._update_chunk(8)); 5 networks; "
                            f"{r['replay']['rows']:,} replay rows, "
                            f"{r['replay']['states']:,} states"), quick=quick))
        rows.append(row(key + "_single_call", f"{label}: learner updates/s, 1 per call",
                        one["updates_per_s"], "updates/s", target,
                        judge(one["updates_per_s"], one["cpu_updates_per_s"],
                              lambda v: v >= bar) if bar else None,
                        note=f"CPU-time rate {one['cpu_updates_per_s']:.0f}", quick=quick))
        rows.append(row(f"learner_rllib_time_over_plain_b64_{w}",
                        f"{label}: RLlib time per update / plain-torch loop's", ratio, "x",
                        note=(f"CPU time x{ratio_cpu:.2f}; plain torch {pl['updates_per_s']:.0f} "
                              f"updates/s (CPU-time {pl['cpu_updates_per_s']:.0f}) on the same "
                              "module and minibatches"), quick=quick))
        d = r["dedup"]
        figures[f"target_dedup_factor_{w}"] = d["dedup_factor_q_r"]
        figures[f"target_dedup_factor_v_h_e_{w}"] = d["dedup_factor_v_h_e"]
        figures[f"target_state_evals_per_update_{w}"] = d["state_evals_per_update"]
        figures[f"target_dedup_factor_within_update_{w}"] = d["within_update_factor_q_r"]
        rows.append(row(f"target_dedup_factor_{w}",
                        f"{label}: target evaluations, old design / TargetCache",
                        d["dedup_factor_q_r"], "x", note=(
                            f"Q_r/V_r: {d['old_q_r_evals_per_update']:,} padded successor "
                            f"slots (B={d['B']} x K={d['K_old']}) per update before, "
                            f"{d['state_evals_per_update']:.1f} state evaluations now; "
                            f"V_h^e: {d['old_v_h_e_evals_per_update']:,} (B x H={d['H']} x "
                            f"M={d['M']} x K) before, {d['v_h_e_evals_per_update']:.0f} now "
                            f"(x{d['dedup_factor_v_h_e']:,.0f}); one minibatch alone needs "
                            f"{d['within_update_distinct_states']:.0f} distinct states "
                            f"(x{d['within_update_factor_q_r']:.1f}), "
                            f"{d['valid_successor_slots']:.0f} non-padding successor slots; "
                            f"V_h^e now includes {d['v_h_e_outside_cache_per_update']:.0f} "
                            f"evaluations outside the cache (goals a successor does not list), "
                            f"and skips {d['v_h_e_outside_cache_skipped_per_update']:.0f} such "
                            f"pairs where eq. (6) multiplies them by 0 (terminal successors, "
                            f"achieved goals); target copies every 100 updates"),
                        quick=quick))
    if "lanes" in res:
        ratio = res["lanes"][f"rllib{CHUNK}"]["updates_per_s"] / base[f"rllib{CHUNK}"]["updates_per_s"]
        ratio_cpu = (res["lanes"][f"rllib{CHUNK}"]["cpu_updates_per_s"]
                     / base[f"rllib{CHUNK}"]["cpu_updates_per_s"])
        figures["learner_lanes_over_rock_gate"] = ratio
        figures["learner_lanes_over_rock_gate_cpu"] = ratio_cpu
        rows.append(row("learner_lanes_over_rock_gate", "lanes / rock_gate learner rate (same run)",
                        ratio, "x", f">= {TARGET_RATIO}", judge(ratio, ratio_cpu,
                                                               lambda v: v >= TARGET_RATIO),
                        note=f"CPU-time ratio {ratio_cpu:.2f}; 8 updates per call",
                        quick=quick))
    else:
        figures["learner_lanes_over_rock_gate"] = None
        rows.append(row("learner_lanes_over_rock_gate", "lanes / rock_gate learner rate (same run)",
                        None, "x", note="not run in --quick", quick=quick))

    # batch 256 (rock_gate, the training_step path only)
    r = measure(("rock_gate",), blocks, per_block, fill, batch_size=256, plain=False,
                chunks=(CHUNK,))["rock_gate"]
    details["b256"] = r
    c = r[f"rllib{CHUNK}"]
    figures["learner_updates_per_s_b256"] = c["updates_per_s"]
    figures["learner_updates_per_s_b256_cpu"] = c["cpu_updates_per_s"]
    rows.append(row("learner_updates_per_s_b256", "rock_gate: learner updates/s, batch 256",
                    c["updates_per_s"], "updates/s",
                    note=f"CPU-time rate {c['cpu_updates_per_s']:.0f}; 8 per call", quick=quick))

    # the defaults: EmpoConfig()'s networks, batch and updates per call (rock_gate and lanes)
    from rllib_empo import EmpoConfig
    d = EmpoConfig()
    hidden, batch, per_call = (d.hidden_sizes_by_network(), d.train_batch_size_per_learner,
                               d.updates_per_iteration)
    dworlds = ("rock_gate",) if quick else ("rock_gate", "lanes")
    r = measure(dworlds, blocks, max(per_block, per_call), fill, batch_size=batch, plain=False,
                chunks=(per_call,), hidden=hidden)
    details["defaults"] = r
    for w in dworlds:
        c = r[w][f"rllib{per_call}"]
        key = f"learner_updates_per_s_defaults_{w}"
        figures[key], figures[key + "_cpu"] = c["updates_per_s"], c["cpu_updates_per_s"]
        rows.append(row(key, f"{CASE_LABELS[w]}: learner updates/s with the defaults",
                        c["updates_per_s"], "updates/s", note=(
                            f"CPU-time rate {c['cpu_updates_per_s']:.0f}; hidden sizes "
                            f"{_sizes_text(hidden)}, batch {batch}, {per_call} updates per call; "
                            f"20,000 updates take {20_000 / c['updates_per_s'] / 60:.0f} min "
                            "of learner time"), quick=quick))

    # where RLlib's extra time goes (cProfile, rock_gate)
    from benchmarks.profiling import learner_parts
    prof = learner_parts("rock_gate", updates=48 if quick else 400, fill=fill)
    details["profile_rock_gate"] = prof
    figures["learner_profile_overhead_ms_per_update_rock_gate"] = prof["overhead_ms"]
    top = "; ".join(f"{p['part']} {p['ms']:.2f} ms" for p in prof["overhead_parts"][:6])
    rows.append(row("learner_profile_overhead_rock_gate",
                    "rock_gate: RLlib's time beyond the plain loop, under cProfile",
                    prof["overhead_ms"], "ms/update", note=(
                        f"RLlib path {prof['rllib_ms']:.2f} ms, plain loop "
                        f"{prof['plain_ms']:.2f} ms per update under the profiler; largest "
                        f"parts: {top}"), quick=quick))
    return {"figures": figures, "rows": rows, "details": details}
