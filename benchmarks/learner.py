"""Figure 2: learner throughput with all five networks active, model-based targets, rock_gate.

Configuration: ``u_r_use_network=True``, ``v_r_use_network=True`` (so q_r, v_h_e, x_h, u_r and
v_r are all networks), every warm-up duration 0 (stage 6 from the first update: every
network trains on every update), the default hidden sizes (64, 64), one torch thread,
``num_env_runners=0``. The replay buffer is filled with real rows through the EnvRunner, then
``algo._update_once()`` (buffer sample + ``learner_group.update``) is timed: the median over
repeated blocks of updates, in wall time and in CPU time of this process. The share of the
buffer sample is timed separately in the same run.

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


def measure_updates(batch_size: int, blocks: int, per_block: int, fill: int,
                    world: str = "rock_gate", hidden=(64, 64), **training) -> dict:
    algo = learner_config(batch_size, world, hidden, **training).build_algo()
    try:
        fill_buffer(algo, fill)
        active = algo._update_info(0)["active"]
        algo._update_stats = {}                     # training_step() sets it up otherwise
        for _ in range(5):                          # first updates build optimizer state
            algo._update_once()
        wall, cpu = [], []
        for _ in range(blocks):
            w, c, _ = timed_cpu(lambda: [algo._update_once() for _ in range(per_block)])
            wall.append(per_block / w)
            cpu.append(per_block / c)
        rng = np.random.default_rng(0)
        t_sample, _ = timed(lambda: [algo.buffer.sample(batch_size, rng) for _ in range(100)])
        upd = median(wall)
        return {"batch_size": batch_size, "world": world, "hidden_sizes": list(hidden),
                "active_networks": active, "updates_per_s": upd, "updates_per_s_all": wall,
                "cpu_updates_per_s": median(cpu), "buffer_rows": len(algo.buffer),
                "bytes_per_row": algo.buffer.bytes_per_row,
                "buffer_sample_ms": 10 * t_sample,      # 100 samples -> ms each
                "buffer_sample_share": (t_sample / 100) * upd}
    finally:
        algo.stop()


def run(quick: bool = False) -> dict:
    ensure_ray()
    blocks, per_block, fill = (2, 10, 256) if quick else (7, 50, 3000)
    figures, rows, details = {}, [], {}
    for B in (64, 256):
        r = measure_updates(B, blocks, per_block, fill)
        details[f"b{B}"] = r
        figures[f"learner_updates_per_s_b{B}"] = r["updates_per_s"]
        figures[f"learner_updates_per_s_b{B}_cpu"] = r["cpu_updates_per_s"]
        figures[f"learner_buffer_sample_ms_b{B}"] = r["buffer_sample_ms"]
        target, met = "", None
        if B == 64:
            target = f">= {TARGET_UPDATES_PER_S:.0f}"
            met = judge(r["updates_per_s"], r["cpu_updates_per_s"],
                        lambda v: v >= TARGET_UPDATES_PER_S)
        rows.append(row(f"learner_updates_per_s_b{B}", f"learner updates/s, batch {B}, 5 networks",
                        r["updates_per_s"], "updates/s", target, met, note=(
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
