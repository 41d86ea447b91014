"""Run the benchmark suite and write ``results.json`` and ``RESULTS.md``.

    python -m benchmarks.run_all                       # everything (about 40-60 min on 2 cores)
    python -m benchmarks.run_all --quick               # CI-sized smoke run, every row
    python -m benchmarks.run_all --only learner,sampling
    python -m benchmarks.run_all --out /tmp/bench      # write the files elsewhere
    python -m benchmarks.run_all --render              # rewrite RESULTS.md only (e.g. after a soak)

Benchmarks (one module each, ``run(quick) -> dict``): sampling, learner, fidelity
(``fidelity_time``), memory, build, threads, scaling. A run with ``--only`` updates the figures of the
benchmarks it ran and keeps the others from the previous ``results.json`` in the same
directory (each section of RESULTS.md says when and how it was measured). Every key of
``REQUIRED_KEYS`` is always present in results.json (null when never measured).

Rates are medians of repeated measurements; in-process rates also come as CPU-time rates
(steadier when the machine is shared). A target counts as "met (CPU time)" when the wall
figure misses it but the CPU-time figure meets it: the code is fast enough, the machine was
busy. Exit status 1 if a benchmark failed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from benchmarks.common import defaults_phrase, fmt_value, load_average, status

HERE = Path(__file__).resolve().parent
BENCHMARKS = {"sampling": "benchmarks.sampling", "learner": "benchmarks.learner",
              "fidelity": "benchmarks.fidelity_time", "memory": "benchmarks.memory",
              "build": "benchmarks.build", "threads": "benchmarks.threads",
              "scaling": "benchmarks.scaling"}
ALIASES = {"fidelity_time": "fidelity"}
# The headline figures (README and RESULTS.md), each with its bar where it has one.
REQUIRED_KEYS = ("sampling_env_steps_per_s_per_runner_rock_gate",
                 "sampling_env_steps_per_s_per_runner_lanes",
                 "learner_updates_per_s_b64", "learner_updates_per_s_b64_lanes",
                 "learner_lanes_over_rock_gate", "learner_updates_per_s_b64_crowd_h3",
                 "learner_rllib_time_over_plain_b64_rock_gate", "learner_updates_per_s_b256",
                 "learner_updates_per_s_defaults_rock_gate", "learner_updates_per_s_defaults_lanes",
                 "target_dedup_factor_rock_gate", "target_dedup_factor_lanes",
                 "bytes_per_transition_rock_gate", "bytes_per_transition_lanes",
                 "replay_default_capacity_max_mib", "build_s_lanes", "build_s_lanes_instance",
                 "threads_busy_over_idle", "time_to_fidelity_s_median",
                 "peak_rss_mb_default_run")
# The table row behind each headline key (for its target and status), where it differs.
HEADLINE_ROWS = {"sampling_env_steps_per_s_per_runner_rock_gate": "sampling_rock_gate_nr0_ne1",
                 "sampling_env_steps_per_s_per_runner_lanes": "sampling_lanes_nr0_ne1"}
TITLES = {"sampling": "1. Sampling throughput", "learner": "2. Learner throughput",
          "fidelity": "3. Time to fidelity", "memory": "4. Memory",
          "build": "5. Building the algorithm", "threads": "6. Threads on a shared machine",
          "scaling": "7. Scaling"}


def machine() -> dict:
    import numpy
    info = {"nproc": len(os.sched_getaffinity(0)), "cpu_model": "unknown",
            "mem_total_gib": None, "python": platform.python_version(),
            "numpy": numpy.__version__, "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu_model"] = next(l.split(":", 1)[1].strip() for l in f
                                     if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(l.split()[1]) for l in f if l.startswith("MemTotal:"))
        info["mem_total_gib"] = round(kb / 2**20, 1)
    except (OSError, StopIteration):
        pass
    for mod in ("torch", "ray", "gymnasium"):
        try:
            info[mod] = importlib.import_module(mod).__version__
        except ImportError:
            info[mod] = None
    return info


def parse_only(text: str | None) -> list[str]:
    if not text:
        return list(BENCHMARKS)
    names = [ALIASES.get(n.strip(), n.strip()) for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in BENCHMARKS]
    if bad:
        raise SystemExit(f"unknown benchmark(s) {bad}; choose from {', '.join(BENCHMARKS)}")
    return [n for n in BENCHMARKS if n in names]          # suite order


# ---------------------------------------------------------------- output
def table_lines(rows: list[dict], markdown: bool) -> list[str]:
    head = ("figure", "value", "unit", "target", "status", "notes")
    cells = [(r["label"], fmt_value(r["value"]), r["unit"], r["target"], status(r["met"]),
              r["note"]) for r in rows]
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(c.replace("|", "/") for c in cell) + " |" for cell in cells]
        return out
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(head[:-1])]
    def fmt(c):
        return "  ".join(x.ljust(w) for x, w in zip(c[:-1], widths)) + "  " + c[-1]
    return [fmt(head), fmt(tuple("-" * w for w in widths) + ("-----",))] + [fmt(c) for c in cells]


def headline_lines(results: dict) -> list[str]:
    """The markdown table of the required keys (RESULTS.md and the README both show it)."""
    meta = results["_meta"]
    lines = ["| key | value | target | status | measured |", "|---|---|---|---|---|"]
    by_key = {r["key"]: (r, name, sec) for name, sec in meta["benchmarks"].items()
              for r in sec["rows"]}
    for k in REQUIRED_KEYS:
        r, name, sec = by_key.get(HEADLINE_ROWS.get(k, k), (None, None, None))
        value = r["value"] if r is not None and results.get(k) is None else results.get(k)
        when = f"{sec['date']}{' (--quick)' if sec['quick'] else ''}" if sec else "never"
        lines.append(f"| `{k}` | {fmt_value(value)} | {r['target'] if r else ''} | "
                     f"{status(r['met']) if r else ''} | {when} |")
    return lines


def update_readme(out_dir: Path) -> None:
    """Regenerate the README's sections quoting these figures (tools.gen_docs), when the
    files written are the repository's own."""
    if out_dir.resolve() == HERE:
        from tools import gen_docs as docs
        docs.update(HERE.parent / "README.md")


def soak_lines(path: Path) -> list[str]:
    """Section 6 from the last recorded soak run (``python -m benchmarks.soak --out
    benchmarks/soak.json``; it is too long for this suite)."""
    if not path.exists():
        return ["", "## 8. Long-run stability (soak)", "", "Not recorded yet: run "
                "`python -m benchmarks.soak --out benchmarks/soak.json`, then "
                "`python -m benchmarks.run_all --render`."]
    rec = json.loads(path.read_text())
    r, s = rec["record"], rec["summary"]
    m, t, f = s.get("memory") or {}, s.get("time_per_iteration") or {}, s["fidelity"]
    verdict = {True: "met", False: "MISSED", None: "inconclusive"}
    rows = [
        ("run", f"{r['minutes']:g} min of training", "",
         f"{s['iterations']:,} iterations, {s['final_num_updates']:,} learner updates, final stage "
         f"{s['final_stage']}; replay {r['replay_capacity']:,} rows, full after "
         + (f"{s['buffer_full_at_s']:.0f} s" if s["buffer_full_at_s"] is not None else "never")),
        ("memory after the buffer filled (driver + runners)",
         f"{m.get('growth_mb', float('nan')):+.1f} MB", verdict[m.get("flat")],
         f"{m.get('rss_start_mb', float('nan')):.0f} -> {m.get('rss_end_mb', float('nan')):.0f} MB, "
         f"slope {m.get('slope_mb_per_min', float('nan')):+.2f} MB/min, "
         f"{m.get('py_objects_growth', 0):+,} Python objects; basis: {m.get('basis', 'none')}"),
        ("time per iteration, last vs first quarter", f"x{t.get('ratio', float('nan')):.2f}",
         verdict[t.get("no_growth")],
         f"{1e3 * t.get('first_quarter_median_s', float('nan')):.0f} -> "
         f"{1e3 * t.get('last_quarter_median_s', float('nan')):.0f} ms (medians; "
         f"{t.get('basis', 'none')})"),
        ("every convergence bar, after first met",
         "first met at " + (f"{f['reached_at_updates']:,} updates ({f['reached_at_s']:.0f} s)"
                            if f.get("reached_at_s") is not None else "never"),
         verdict[f.get("no_degradation")],
         (f"{f['evaluations_after_missing_a_bar']} of {f['evaluations_after']} later "
          "evaluations miss a bar; " if f.get("reached_at_s") is not None else "")
         + "worst from then on: " + ", ".join(f"{k} {v:.4f}" for k, v in
                                              (f.get("worst_after_reaching") or {}).items())
         + f" (bars {f['bars']}); final: "
         + ", ".join(f"{k} {v:.4g}" for k, v in (f.get("final") or {}).items())),
    ]
    out = ["", "## 8. Long-run stability (soak)", "",
           f"Recorded {r.get('date', 'unknown date')} by `{r.get('command', 'benchmarks/soak.py')}` "
           f"(seed {r['seed']}, {r['num_env_runners']} remote EnvRunners; rock_gate "
           f"{defaults_phrase(r.get('fields'))}, replay capacity as recorded). Wall-clock "
           "timings on a shared machine.", "",
           "| figure | value | verdict | notes |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d.replace('|', '/')} |" for a, b, c, d in rows]
    return out


def bar_lines(results: dict) -> list[str]:
    """Every figure that has a bar, with its status (wall time; CPU time where it differs)."""
    lines = ["| figure | value | bar | status | measured |", "|---|---|---|---|---|"]
    for name, sec in results["_meta"]["benchmarks"].items():
        when = f"{sec['date']}{' (--quick)' if sec['quick'] else ''}, load {sec['load_before']:.1f}"
        for r in sec["rows"]:
            if r["target"]:
                lines.append(f"| {r['label']} | {fmt_value(r['value'])} {r['unit']} | "
                             f"{r['target']} | {status(r['met']) or 'not measured'} | {when} |")
    return lines


def profile_lines(results: dict) -> list[str]:
    """The learner profile (benchmarks.profiling.learner_parts) as tables."""
    sec = results["_meta"]["benchmarks"].get("learner")
    prof = (sec or {}).get("details", {}).get("profile_rock_gate")
    if not prof:
        return []
    out = ["", "### Where the learner's time goes (rock_gate, cProfile)", "",
           f"{prof['updates']} updates, {prof['chunk']} per learner call, batch "
           f"{prof['batch_size']}, the RLlib path and the plain-torch loop interleaved. Without "
           f"the profiler: {prof['cpu_ms_rllib']:.2f} ms CPU per update (RLlib path), "
           f"{prof['cpu_ms_plain']:.2f} ms (plain loop), x{prof['cpu_ms_rllib'] / prof['cpu_ms_plain']:.2f}. "
           f"Under the profiler (which inflates Python-heavy code): {prof['rllib_ms']:.2f} ms and "
           f"{prof['plain_ms']:.2f} ms, a difference of {prof['overhead_ms']:.2f} ms per update. "
           "What only the RLlib path does, ranked (ms per update under the profiler):", "",
           "| part | ms/update |", "|---|---|"]
    out += [f"| {p['part']} | {p['ms']:.3f} |" for p in prof["overhead_parts"]]
    out += ["", "The work both paths do, in the RLlib path (indented: inside the part above):", "",
            "| part | ms/update |", "|---|---|"]
    out += [f"| {'&nbsp;&nbsp;' if p['nested'] else ''}{p['part']} | {p['ms']:.3f} |"
            for p in prof["work"]]
    own = prof.get("own_time_ms")
    if own:
        out += ["", "Own time (cProfile tottime) by package, ms per update:", "",
                "| package | RLlib path | plain loop |", "|---|---|---|"]
        keys = sorted(set(own["rllib"]) | set(own["plain"]), key=lambda k: -own["rllib"].get(k, 0))
        out += [f"| {k} | {own['rllib'].get(k, 0):.3f} | {own['plain'].get(k, 0):.3f} |" for k in keys]
    return out


def write_markdown(path: Path, results: dict) -> None:
    meta = results["_meta"]
    m = meta["machine"]
    lines = ["# Benchmark results", "",
             "Written by `python -m benchmarks.run_all` (see `benchmarks/run_all.py` for what each "
             "figure means; each module's docstring says how it is measured).", "",
             f"- last run: {meta['date']} (`{meta['command']}`)",
             f"- machine: {m['nproc']} CPU(s) (`nproc`), {m['cpu_model']}, "
             f"{m['mem_total_gib']} GiB RAM; {m['platform']}",
             f"- software: Python {m['python']}, torch {m['torch']}, ray {m['ray']}, "
             f"gymnasium {m['gymnasium']}, numpy {m['numpy']}",
             "- rates are medians of repeated runs; \"CPU-time rate\" counts this process's CPU "
             "seconds only, the steadier figure when other work shares the cores; "
             "\"met (CPU time)\" = missed in wall time, met in CPU time", ""]
    lines += ["## Headline figures", ""] + headline_lines(results)
    lines += ["", "## Every figure with a bar", ""] + bar_lines(results)
    for name, sec in meta["benchmarks"].items():
        lines += ["", f"## {TITLES.get(name, name)}", "",
                  f"Measured {sec['date']}, {'--quick' if sec['quick'] else 'full'} run, "
                  f"{sec['wall_s']:.0f} s; load average {sec['load_before']:.1f} before, "
                  f"{sec['load_after']:.1f} after (on {m['nproc']} CPUs).", ""]
        lines += table_lines(sec["rows"], markdown=True)
        if name == "learner":
            lines += profile_lines(results)
    lines += soak_lines(path.parent / "soak.json")
    for name, err in meta.get("errors", {}).items():
        lines += ["", f"## {TITLES.get(name, name)}: the last run FAILED ({err['date']})", "",
                  "The figures above (if any) are from the previous successful run.", "",
                  "```", err["error"].strip()[-2000:], "```"]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized smoke run (< 1 min idle)")
    ap.add_argument("--only", default=None, help="comma-separated subset: " + ",".join(BENCHMARKS))
    ap.add_argument("--out", default=str(HERE), help="directory for results.json / RESULTS.md")
    ap.add_argument("--exact-limit-s", type=float, default=None,
                    help="scaling: stop growing an exact-solver family when the next size "
                         "would take longer (default 120 s; 600 for the 10-minute figure)")
    ap.add_argument("--fidelity-clock", choices=("wall", "cpu"), default=None,
                    help="fidelity: training clock (default wall; cpu = this process's CPU "
                         "seconds, for a machine shared with other work)")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite RESULTS.md from results.json (and soak.json)")
    args = ap.parse_args(argv)
    names = parse_only(args.only)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    res_path = out_dir / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}
    meta = results.setdefault("_meta", {})
    meta.setdefault("benchmarks", {})
    if args.render:
        write_markdown(out_dir / "RESULTS.md", results)
        update_readme(out_dir)
        print(f"wrote {out_dir / 'RESULTS.md'}")
        return 0

    from benchmarks.common import ensure_ray
    ensure_ray()
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta.update(date=date, machine=machine(),
                command="python -m benchmarks.run_all " + " ".join(argv if argv is not None
                                                                    else sys.argv[1:]))
    failed = []
    for name in names:
        mod = importlib.import_module(BENCHMARKS[name])
        print(f"\n=== {TITLES[name]} {'(--quick)' if args.quick else ''}", flush=True)
        load0, t0 = load_average(), time.perf_counter()
        try:
            kwargs = ({"exact_limit_s": args.exact_limit_s} if name == "scaling" else
                      {"clock": args.fidelity_clock} if name == "fidelity" else {})
            out = mod.run(quick=args.quick, **kwargs)
            error = None
        except Exception:                         # keep the other figures
            error = traceback.format_exc()
            print(error, file=sys.stderr)
            failed.append(name)
            out = {"figures": {}, "rows": [], "details": {}}
        sec = {"quick": args.quick, "date": date, "wall_s": time.perf_counter() - t0,
               "load_before": load0, "load_after": load_average(), "rows": out["rows"],
               "figures": out["figures"], "details": out.get("details", {})}
        errors = meta.setdefault("errors", {})
        errors.pop(name, None)
        if error:       # keep the previous figures of this benchmark, say it failed now
            errors[name] = {"date": date, "quick": args.quick, "error": error}
        else:
            old = meta["benchmarks"].get(name, {})
            for k in old.get("figures", {}):          # figures of the previous run of it
                results.pop(k, None)
            meta["benchmarks"][name] = sec
            results.update(out["figures"])
        for line in table_lines(out["rows"], markdown=False):
            print(line)
        print(f"({sec['wall_s']:.0f} s)", flush=True)
        # write after every benchmark, so a long run keeps what it measured
        meta["benchmarks"] = {n: meta["benchmarks"][n] for n in BENCHMARKS
                              if n in meta["benchmarks"]}
        for k in REQUIRED_KEYS:
            results.setdefault(k, None)
        res_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
        write_markdown(out_dir / "RESULTS.md", results)
        update_readme(out_dir)

    print("\n=== all figures")
    rows = [r for n in BENCHMARKS if n in meta["benchmarks"] for r in meta["benchmarks"][n]["rows"]]
    for line in table_lines(rows, markdown=False):
        print(line)
    print(f"\nwrote {res_path} and {out_dir / 'RESULTS.md'}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
