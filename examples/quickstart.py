"""Quick start: train EMPO on rock_gate with the defaults and compare with the exact solution
(`make demo`).

The robot should learn to push the rock out of the gate that shuts the human in. Only the
world and the theory parameters are set: the warm-up, networks, replay and learning rates
are the defaults. Training prints a line at every stage change and every 2,000 learner
updates (stage, beta_r, the residual of Q_r: its distance from its own fixed point), then
the learned policy's distance to the exact one, with the bars it should meet. On today's
defaults (4 envs x 50 env steps per iteration) 6,024 updates took 4 min 42 s, partly beside
the test suite (252 s of CPU), and ended at TV(pi_r, s0) 0.021, V_r error 2.6 %, mean TV
0.013: the same figures as the fidelity matrix's rock_gate seed 0 run at that update (one
env x 200 steps: 5 min 11 s beside the test suite, 283 s of CPU). Two torch threads were
tried on the 8,000-update demo: 3 min 40 s instead of 4 min 31 s on an idle machine, but
several times slower in one run beside a busy process, so the demo keeps one thread. With
RLLIB_EMPO_FAST=1 (CI) a few seconds of a shortened warm-up. Timed again 2026-12-04 on
another 2-core machine, beside one other CPU-bound process: 2 min 4 s (115 s of CPU, 583 MB
peak RSS), TV(pi_r, s0) 0.016, V_r error 0.7 %, mean TV 0.012.

The block between the markers is the README's quick start, verbatim (a test checks that
README.md and this file agree and runs this file).
"""
# --- README quickstart start ---
import os

from rllib_empo import EmpoConfig
from rllib_empo.evaluation import compare_to_exact, exact_solution_for

config = (EmpoConfig()
          .environment("rllib_empo/RockGate-v0")
          .training(beta_r=10.0, gamma_h=0.99, gamma_r=0.99)   # the theory; the rest: defaults
          .debugging(seed=0))
updates = 6_000
if os.environ.get("RLLIB_EMPO_FAST") == "1":                  # CI: a few seconds
    config.training(warmup_v_h_e_steps=10, warmup_x_h_steps=10, warmup_q_r_steps=10,
                    beta_r_rampup_steps=20)
    updates = 200
algo = config.build_algo()
next_report = 0
while algo.num_updates < updates:
    result = algo.train()
    w = result["Warmup"]
    if w["stage_transition"] or algo.num_updates >= next_report:
        next_report = (algo.num_updates // 2_000 + 1) * 2_000
        residual = (result.get("Residual") or {}).get("q_r")    # none just after a clear
        print(f"updates {w['num_updates']:6d}  stage {w['stage']}  beta_r "
              f"{w['effective_beta_r']:5.2f}  residual(q_r) "
              + ("n/a" if residual is None else f"{residual:.3f}"))
figures = compare_to_exact(algo, exact_solution_for(algo))
for name, bar in {"tv_pi_r_s0": 0.05, "v_r_s0_rel_error": 0.05, "mean_tv_pi_r": 0.05}.items():
    print(f"{name:18s} {figures[name]:.4f}   bar <= {bar}   {'met' if figures[name] <= bar else 'MISSED'}")
# --- README quickstart end ---
algo.stop()
