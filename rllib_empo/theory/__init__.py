"""The theory: EMPO phase 2's equations, its parameters and the staged warm-up schedule.

- ``equations``: eqs. (4)-(9) as pure tensor functions (the learner and the exact solver
  share them);
- ``params``: ``EmpoParams``, the theory parameters (beta_r, gamma_h, gamma_r, zeta, xi, eta
  and the two floors), declared once;
- ``schedule``: ``WarmupSchedule`` and the typed per-update ``StepPlan`` (standard library
  only).

May import: the standard library and torch, nothing else of the package. Nothing here starts
Ray or keeps state; the tests of this folder run in milliseconds. (This file imports nothing,
so that ``rllib_empo.theory.schedule`` loads without torch.)
"""
