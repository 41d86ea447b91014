"""Figure 1: sampling throughput through the real RLlib path, and the cost of the tables.

For rock_gate (model-based tables, human actions summed out, one table per state), lanes
(2 humans, 64 joint actions, 28,137 states; local EnvRunner only: every remote runner would
solve the phase-1 prior again) and crowd (heuristic prior, ``sum_human_actions=False``: a
fresh table on nearly every step), with ``num_env_runners`` in {0, 1, 2} and
``num_envs_per_env_runner`` in {1, 4}:

- build ``EmpoConfig(...).build_algo()`` and time ``local_env_runner.sample_rows()``
  (nr = 0) or ``foreach_env_runner(lambda er: er.sample_rows(), local_env_runner=False)``
  (nr > 0): the first call (cold caches) alone, then the median of the following calls;
  the env steps of a call are its sample's rows (``sample["rows"]["table"]``, one per step);
- env steps/s in total and per EnvRunner (total / nr; the local runner when nr = 0).

Then the share of table work (``TableBuilder``: successor tables, goal tables, state
entries, observation encodings, packing the sample's entries) in a step:

- in the real path (nr = 0, 1 env): the builder's methods are wrapped by a timer (about
  1 us per step of overhead), for the first call and in steady state;
- in a bare ``EmpoEnv`` stepped with uniform random actions (no RLlib): its raw step rate
  with cold and with warm caches;
- per table: a cold ``TableBuilder`` building tables (cache misses) vs the same tables again
  (hits). On rock_gate that is every reachable non-terminal state (1008 states).

Target: >= 2,000 env steps/s per EnvRunner with one env on rock_gate, including the table
work (headline: nr = 0, 1 env per runner, steady state, caches built during the run); the
lanes figure is recorded beside it.
"""
from __future__ import annotations

import time

import numpy as np

from benchmarks.common import (CASES, case_config, case_env, ensure_ray, judge, median, row,
                               timed, timed_cpu)

TARGET_STEPS_PER_S = 2000.0
WORLDS = ("rock_gate", "lanes", "crowd")
LOCAL_ONLY = ("lanes",)          # remote runners would each solve the phase-1 prior again
QUICK_SKIP = ("lanes",)          # its phase-1 prior takes 10-25 s to solve
TABLE_METHODS = ("table_sum", "table_sampled_humans", "table_sampled", "successors",
                 "goal_table", "state_entry", "encode", "entries")


def sampling_config(world: str, nr: int = 0, ne: int = 1, fragment: int = 100,
                    env_config: dict | None = None, **training):
    """The EmpoConfig the sampling figures use (``benchmarks.common.case_config``)."""
    return case_config(world, nr, ne, fragment, env_config, **training)


def sample_steps(sample) -> int:
    """Env steps in one EnvRunner sample: one row per step."""
    return len(sample["rows"]["table"]) if isinstance(sample, dict) and sample else 0


def sample_once(algo) -> int:
    """One round of sampling through the algorithm's EnvRunners; the env steps it took."""
    group = algo.env_runner_group
    if group.num_remote_env_runners() == 0:
        results = [group.local_env_runner.sample_rows()]
    else:
        results = group.foreach_env_runner(lambda er: er.sample_rows(), local_env_runner=False)
    return sum(sample_steps(sample) for sample, _ in results)


def local_envs(algo) -> list:
    """The EmpoEnvs of the local EnvRunner (nr = 0)."""
    er = algo.env_runner_group.local_env_runner
    return [e.unwrapped for e in er.env.unwrapped.envs]


class TableTimer:
    """Wraps a TableBuilder's methods (on the instance) and sums the seconds spent in the
    outermost call of any of them, so nested calls are not counted twice."""

    def __init__(self):
        self.seconds = 0.0
        self._depth = 0

    def attach(self, builder) -> "TableTimer":
        for name in TABLE_METHODS:
            if hasattr(builder, name):
                setattr(builder, name, self._wrap(getattr(builder, name)))
        return self

    def _wrap(self, fn):
        def timed_call(*args, **kwargs):
            if self._depth:
                return fn(*args, **kwargs)
            self._depth = 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                self._depth = 0
        return timed_call

    def take(self) -> float:
        out, self.seconds = self.seconds, 0.0
        return out


def cache_size(builder) -> int:
    """Tables the builder has built and kept (its table cache)."""
    return len(builder._tables)


# ---------------------------------------------------------------- real path
def measure_real_path(world: str, nr: int, ne: int, fragment: int, repeats: int,
                      instrument: bool) -> dict:
    """Build, then one cold call, one warm-up call and ``repeats`` timed calls of sampling.
    CPU-time rates are given for nr = 0 only (remote runners work in other processes)."""
    t_build, algo = timed(lambda: sampling_config(world, nr, ne, fragment).build_algo())
    try:
        timer = TableTimer()
        if instrument:
            for env in local_envs(algo):
                timer.attach(env._builder)
        calls = []                      # (wall s, cpu s, steps, table s) per call
        for _ in range(2 + repeats):
            wall, cpu, n = timed_cpu(lambda: sample_once(algo))
            calls.append((wall, cpu, n, timer.take()))
        cold, timed_calls = calls[0], calls[2:]
        runners = max(nr, 1)
        out = {"world": world, "num_env_runners": nr, "num_envs_per_env_runner": ne,
               "build_s": t_build, "steps_per_call": cold[2],
               "cold_steps_per_s": cold[2] / cold[0],
               "steps_per_s": median(n / w for w, _, n, _ in timed_calls),
               "steps_per_s_all": [n / w for w, _, n, _ in timed_calls]}
        out["steps_per_s_per_runner"] = out["steps_per_s"] / runners
        out["cold_steps_per_s_per_runner"] = out["cold_steps_per_s"] / runners
        if nr == 0:
            out["cpu_steps_per_s"] = median(n / c for _, c, n, _ in timed_calls)
        if instrument:
            steady = calls[1:]
            out["table_share_cold"] = cold[3] / cold[0]
            out["table_share_steady"] = sum(c[3] for c in steady) / sum(c[0] for c in steady)
            out["table_us_per_step_steady"] = 1e6 * sum(c[3] for c in steady) / sum(
                c[2] for c in steady)
            out["tables_built"] = sum(cache_size(e._builder) for e in local_envs(algo))
        return out
    finally:
        algo.stop()


# ---------------------------------------------------------------- bare env and rows
def make_env(world: str, seed: int = 0):
    """A bare EmpoEnv with the settings the algorithm's default config injects."""
    return case_env(world, seed)


def run_env(env, steps: int, rng: np.random.Generator) -> list:
    """``steps`` env steps with uniform random robot actions (resets at episode ends);
    returns the (state, human goals) each step started from."""
    seen = []
    n = env.action_space.n
    for _ in range(steps):
        seen.append((env.state, tuple(env.goals)))
        _, _, term, trunc, _ = env.step(int(rng.integers(n)))
        if term or trunc:
            env.reset()
    return seen


def measure_bare_env(world: str, chunk: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    env = make_env(world)
    timer = TableTimer().attach(env._builder)
    t_cold, _ = timed(lambda: run_env(env, chunk, rng))
    env.take_sample()
    table_cold = timer.take()
    rows_cold = cache_size(env._builder)
    warm_rates, cpu_rates, warm_share = [], [], []
    for _ in range(repeats):
        # a sample's entries are packed once per chunk, as sample_rows does
        dt, cpu, _ = timed_cpu(lambda: (run_env(env, chunk, rng), env.take_sample()))
        warm_rates.append(chunk / dt)
        cpu_rates.append(chunk / cpu)
        warm_share.append(timer.take() / dt)
    return {"cold_steps_per_s": chunk / t_cold, "cold_table_share": table_cold / t_cold,
            "cold_tables_built": rows_cold, "steps_per_s": median(warm_rates),
            "cpu_steps_per_s": median(cpu_rates), "table_share": median(warm_share),
            "chunk": chunk}


def measure_row_cost(world: str, max_states: int) -> dict:
    """Seconds per table of a cold TableBuilder (cache misses) and of a warm one (hits)."""
    from rllib_empo.algorithm.tables import TableBuilder
    env = make_env(world)
    rng = np.random.default_rng(1)
    if world == "rock_gate":
        from rllib_empo.exact.statespace import StateGraph
        g = StateGraph(env.world)
        items = [(s, None) for s, t in zip(g.states, g.terminal) if not t][:max_states]
    else:
        items = [(s, goals) for s, goals in run_env(env, max_states, rng)]
    builder = TableBuilder(env.world, env.prior, env.table_spec, np.random.default_rng(2))
    A, H = env.A, len(env.humans)
    actions = [tuple(int(a) for a in rng.integers(A, size=H)) for _ in items]
    if env.settings.mode == "sum":
        def build():
            out = [builder.table_sum(s) for s, _ in items]
            builder.take_pending()
            return out
    else:
        def build():
            out = [builder.table_sampled_humans(s, a, goals)
                   for (s, goals), a in zip(items, actions)]
            builder.take_pending()
            return out
    t_miss, _ = timed(build)
    t_hit, _ = timed(build)
    return {"rows": len(items), "miss_us": 1e6 * t_miss / len(items),
            "hit_us": 1e6 * t_hit / len(items)}


# ---------------------------------------------------------------- the figure
def run(quick: bool = False) -> dict:
    ensure_ray()
    fragment, repeats = (50, 3) if quick else (100, 7)
    configs = [(w, nr, ne) for w in WORLDS for nr in (0, 1, 2) for ne in (1, 4)
               if nr == 0 or w not in LOCAL_ONLY]
    rows, details, figures = [], {"real_path": [], "bare_env": {}, "table_cost": {}}, {}
    for world, nr, ne in configs:
        key = f"sampling_{world}_nr{nr}_ne{ne}"
        label = f"{world}: nr={nr}, {ne} env(s)/runner, per runner"
        if quick and (nr > 0 or ne > 1 or world in QUICK_SKIP):   # a smoke run: nr = 0, 1 env
            figures[key + "_per_runner"] = None
            rows.append(row(key, label, None, "steps/s", note="not run in --quick", quick=quick))
            continue
        r = measure_real_path(world, nr, ne, fragment, repeats, instrument=(nr == 0 and ne == 1))
        details["real_path"].append(r)
        figures[key + "_per_runner"] = r["steps_per_s_per_runner"]
        figures[key + "_total"] = r["steps_per_s"]
        note = f"first call {r['cold_steps_per_s_per_runner']:,.0f}; build {r['build_s']:.1f} s"
        if nr > 0:
            note = f"total {r['steps_per_s']:,.0f}; " + note
        if "cpu_steps_per_s" in r:
            figures[key + "_cpu"] = r["cpu_steps_per_s"]
            note = f"CPU-time rate {r['cpu_steps_per_s']:,.0f}; " + note
        target, met = "", None
        if world == "rock_gate" and ne == 1:
            target = f">= {TARGET_STEPS_PER_S:,.0f}"
            met = judge(r["steps_per_s_per_runner"], r.get("cpu_steps_per_s"),
                        lambda v: v >= TARGET_STEPS_PER_S)
        rows.append(row(key, label, r["steps_per_s_per_runner"], "steps/s", target, met, note,
                        quick))
        if nr == 0 and ne == 1:
            figures[f"sampling_table_share_steady_{world}"] = r["table_share_steady"]
            figures[f"sampling_table_share_first_call_{world}"] = r["table_share_cold"]
            rows.append(row(f"sampling_table_share_{world}",
                            f"{world}: share of a real-path step in table work",
                            100 * r["table_share_steady"], "%", note=(
                                f"after the first call; first call "
                                f"{100 * r['table_share_cold']:.0f}%; "
                                f"{r['table_us_per_step_steady']:.0f} us/step; "
                                f"{r['tables_built']} tables built in the run"), quick=quick))
    by = {(r["world"], r["num_env_runners"], r["num_envs_per_env_runner"]): r
          for r in details["real_path"]}
    for world in WORLDS:
        head = by.get((world, 0, 1))
        key = f"sampling_env_steps_per_s_per_runner_{world}"
        figures[key] = head and head["steps_per_s_per_runner"]
        figures[key + "_cpu"] = head and head["cpu_steps_per_s"]
        figures[key + "_first_call"] = head and head["cold_steps_per_s"]

    chunk, env_repeats = (300, 2) if quick else (2000, 5)
    for world in WORLDS:
        if quick and world != "rock_gate":
            continue
        b = measure_bare_env(world, chunk, env_repeats)
        details["bare_env"][world] = b
        figures[f"raw_env_steps_per_s_{world}"] = b["steps_per_s"]
        figures[f"raw_env_steps_per_s_{world}_cpu"] = b["cpu_steps_per_s"]
        rows.append(row(f"raw_env_steps_per_s_{world}", f"{world}: bare EmpoEnv.step (no RLlib)",
                        b["steps_per_s"], "steps/s", note=(
                            f"CPU-time rate {b['cpu_steps_per_s']:,.0f}; table work "
                            f"{100 * b['table_share']:.0f}% when warm; first {b['chunk']} steps "
                            f"{b['cold_steps_per_s']:,.0f}/s with "
                            f"{100 * b['cold_table_share']:.0f}% table work"), quick=quick))
        c = measure_row_cost(world, 200 if quick else 2000)
        details["table_cost"][world] = c
        figures[f"table_miss_us_{world}"] = c["miss_us"]
        figures[f"table_hit_us_{world}"] = c["hit_us"]
        rows.append(row(f"table_miss_us_{world}", f"{world}: build one table (cache miss)",
                        c["miss_us"], "us",
                        note=f"cache hit {c['hit_us']:.1f} us; {c['rows']} tables",
                        quick=quick))
    return {"figures": figures, "rows": rows, "details": details}
