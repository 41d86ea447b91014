"""Figure 2: learner throughput with all five networks active, model-based targets, rock_gate.

Configuration: ``u_r_use_network=True``, ``v_r_use_network=True`` (so q_r, v_h_e, x_h, u_r and
v_r are all networks), every warm-up duration 0 (stage 6 from the first update: every
network trains on every update), the default hidden sizes (64, 64), one torch thread,
``num_env_runners=0``. The replay buffer is filled with real rows through the EnvRunner, then
``algo._update_once()`` (buffer sample + ``learner_group.update``) is timed: the median over
repeated blocks of updates, in wall time and in CPU time of this process. Where the algorithm
has ``_update_chunk(n)`` (n consecutive updates in one learner call, as ``training_step``
runs them), that path is timed too with n = 8 (the default ``updates_per_iteration``); it is
the headline figure (``learner_updates_per_s_b64``), since it is what training runs, and one
update per call is reported beside it (``..._single_call``). The share of the buffer sample
is timed separately in the same run.

Target: >= 150 updates/s at batch 64 on one core.
"""
from __future__ import annotations

import numpy as np

from benchmarks.common import ensure_ray, judge, median, row, timed, timed_cpu

TARGET_UPDATES_PER_S = 150.0


def learner_config(batch_size: int, world: str = "rock_gate", hidden=(64, 64), **training):
    from benchmarks.sampling import sampling_config
    zero = dict(warmup_v_h_e_steps=0, warmup_x_h_steps=0, warmup_u_r_steps=0,
                warmup_q_r_steps=0, warmup_v_r_steps=0, beta_r_rampup_steps=0)
    return sampling_config(world, 0, 1, 200, **{
        **zero, "u_r_use_network": True, "v_r_use_network": True,
        "use_model_based_targets": True, "train_batch_size_per_learner": batch_size,
        "hidden_sizes": tuple(hidden), **training})


def fill_buffer(algo, rows: int) -> None:
    er = algo.env_runner_group.local_env_runner
    while len(algo.buffer) < rows:
        cols, _ = er.sample_rows()
        algo.buffer.add(cols)


CHUNK = 8


def update_fn(algo, chunk: int):
    """``per_block`` updates one at a time (chunk 1) or ``chunk`` per learner call."""
    if chunk == 1:
        return lambda n: [algo._update_once() for _ in range(n)]
    return lambda n: [algo._update_chunk(chunk) for _ in range(n // chunk)]


def measure_updates(batch_size: int, blocks: int, per_block: int, fill: int,
                    world: str = "rock_gate", hidden=(64, 64), chunks=(1,), **training) -> dict:
    algo = learner_config(batch_size, world, hidden, **training).build_algo()
    try:
        fill_buffer(algo, fill)
        active = sorted(algo.schedule.active_networks(0))
        algo._update_stats = {}                     # training_step() sets it up otherwise
        chunks = [c for c in chunks if c == 1 or hasattr(algo, "_update_chunk")]
        fns = {chunk: update_fn(algo, chunk) for chunk in chunks}
        for chunk, fn in fns.items():
            fn(max(chunk, 5))                       # first updates build optimizer state
        samples = {chunk: ([], []) for chunk in chunks}
        for _ in range(blocks):                     # interleaved, so both see the same load
            for chunk, fn in fns.items():
                w, c, _ = timed_cpu(lambda: fn(per_block))
                n = per_block if chunk == 1 else (per_block // chunk) * chunk
                samples[chunk][0].append(n / w)
                samples[chunk][1].append(n / c)
        rates = {c: (median(w), median(cpu), w) for c, (w, cpu) in samples.items()}
        wall = rates[1][2]
        rng = np.random.default_rng(0)
        t_sample, _ = timed(lambda: [algo.buffer.sample(batch_size, rng) for _ in range(100)])
        upd = rates[1][0]
        return {"batch_size": batch_size, "world": world, "hidden_sizes": list(hidden),
                "active_networks": active, "updates_per_s": upd, "updates_per_s_all": wall,
                "cpu_updates_per_s": rates[1][1],
                "chunked": {c: {"updates_per_s": r[0], "cpu_updates_per_s": r[1]}
                            for c, r in rates.items() if c != 1},
                "buffer_rows": len(algo.buffer),
                "bytes_per_row": algo.buffer.bytes_per_row,
                "buffer_sample_ms": 10 * t_sample,      # 100 samples -> ms each
                "buffer_sample_share": (t_sample / 100) * upd}
    finally:
        algo.stop()


def run(quick: bool = False) -> dict:
    ensure_ray()
    blocks, per_block, fill = (2, 10, 256) if quick else (7, 50, 3000)
    figures, rows, details = {}, [], {}
    per_block = max(per_block // CHUNK, 1) * CHUNK
    for B in (64, 256):
        r = measure_updates(B, blocks, per_block, fill, chunks=(1, CHUNK))
        details[f"b{B}"] = r
        # The headline figure is the training_step path (CHUNK consecutive updates per
        # learner call, CHUNK = the default updates_per_iteration); one update per call is
        # reported beside it.
        c = r["chunked"][CHUNK]
        key = f"learner_updates_per_s_b{B}"
        figures[key] = c["updates_per_s"]
        figures[key + "_cpu"] = c["cpu_updates_per_s"]
        figures[key + "_single_call"] = r["updates_per_s"]
        figures[key + "_single_call_cpu"] = r["cpu_updates_per_s"]
        figures[f"learner_buffer_sample_ms_b{B}"] = r["buffer_sample_ms"]
        target, met, met_1 = "", None, None
        if B == 64:
            target = f">= {TARGET_UPDATES_PER_S:.0f}"
            met = judge(c["updates_per_s"], c["cpu_updates_per_s"],
                        lambda v: v >= TARGET_UPDATES_PER_S)
            met_1 = judge(r["updates_per_s"], r["cpu_updates_per_s"],
                          lambda v: v >= TARGET_UPDATES_PER_S)
        rows.append(row(key, f"learner updates/s, batch {B}, 5 networks",
                        c["updates_per_s"], "updates/s", target, met, note=(
                            f"CPU-time rate {c['cpu_updates_per_s']:.0f}; the training_step "
                            f"path: {CHUNK} updates per learner call (algo._update_chunk)"),
                        quick=quick))
        rows.append(row(key + "_single_call", f"learner updates/s, batch {B}, 1 per learner call",
                        r["updates_per_s"], "updates/s", target, met_1, note=(
                            f"CPU-time rate {r['cpu_updates_per_s']:.0f}; buffer sample "
                            f"{r['buffer_sample_ms']:.2f} ms "
                            f"({100 * r['buffer_sample_share']:.0f}% of an update)"), quick=quick))
    # The fidelity benchmark's width, for reference.
    r = measure_updates(64, blocks, per_block, fill, hidden=(128, 128))
    details["b64_h128"] = r
    figures["learner_updates_per_s_b64_h128"] = r["updates_per_s"]
    rows.append(row("learner_updates_per_s_b64_h128", "learner updates/s, batch 64, hidden 128x128",
                    r["updates_per_s"], "updates/s",
                    note=f"CPU-time rate {r['cpu_updates_per_s']:.0f}", quick=quick))
    return {"figures": figures, "rows": rows, "details": details}
