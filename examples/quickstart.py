"""Quick start: train EMPO on rock_gate and compare with the exact solution (`make demo`).

The robot should learn to push the rock out of the gate that shuts the human in. Training
prints one line per warm-up stage change and every 100 iterations, then how far the learned
policy is from the exact one. Takes about 2-4 minutes on 2 cores; with
RLLIB_EMPO_FAST=1 (CI) a few seconds of training.

The block between the markers is the README's quick start, verbatim (a test checks that
README.md and this file agree and runs this file).
"""
# --- README quickstart start ---
import os

from rllib_empo import EmpoConfig
from rllib_empo.evaluation import compare_to_exact, exact_solution_for

fast = os.environ.get("RLLIB_EMPO_FAST") == "1"     # CI: a short run
n = 10 if fast else 200                              # learner updates per warm-up stage
config = (EmpoConfig()
          .environment("rllib_empo/RockGate-v0")
          .training(beta_r=10.0, warmup_v_h_e_steps=n, warmup_x_h_steps=n,
                    warmup_q_r_steps=n, beta_r_rampup_steps=2 * n)
          .debugging(seed=0))
algo = config.build_algo()
for i in range(20 if fast else 600):
    result = algo.train()
    w = result["Warmup"]
    if w["stage_transition"] or i % 100 == 0:
        losses = ", ".join(f"{k} {v:.1e}" for k, v in result.get("Loss", {}).items())
        print(f"iter {i:3d}  updates {w['num_updates']:4d}  stage {w['stage']}  "
              f"beta_r {w['effective_beta_r']:5.2f}  loss: {losses}")
for name, value in compare_to_exact(algo, exact_solution_for(algo)).items():
    print(f"{name:22s} {value:.4g}")
# --- README quickstart end ---
algo.stop()
