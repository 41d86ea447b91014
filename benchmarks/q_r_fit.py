"""How precisely can a q_r network fit the exact Q_r*? The evidence behind q_r's defaults.

pi_r = softmax(-beta_r log(-Q_r)) depends on the differences of log(-Q_r) between actions to
about 0.005 at beta_r = 10. This benchmark takes the RL dynamics out: it fits the q_r head of
``EmpoRLModule`` (its own ``-exp`` head, hidden sizes per variant) directly to the exact
``Q_r*`` of every reachable non-terminal state of a world, with the learner's own loss
(``targets.value_loss``, ``value_loss="log"``, ``q_r_advantage_weight``), Adam, the learner's
global-norm clipping (10), minibatches drawn uniformly over the states, the learning rate
constant for ``DECAY_AFTER`` updates and then decaying as 1/sqrt(t) (as the schedule decays it
from E5 on, 3,000 updates after q_r starts training), and a running average of the weights
(decay ``EMA_DECAY`` = 0.997, fixed so that the recorded figures do not move with
``ema_decay``'s default, with the learner's start-up), which is what is evaluated. Every ``--every`` updates it reports, for
pi_r of the averaged network against the exact pi_r*: mean TV over the states, mean TV on the
decision states, and the greedy agreement on the clear states (``exact.compare``), with the
mean |error| of log(-Q_r) and of its advantages.

If a variant cannot reach the bars here, with the exact targets given, no RL run with it
can: the supervised fit is a lower bound of the RL run's error.

    python -m benchmarks.q_r_fit                          # lanes, every variant (~10 min)
    python -m benchmarks.q_r_fit --world rock_gate --variants defaults --updates 4000

Writes ``benchmarks/q_r_fit.json`` (merged per world and variant).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "q_r_fit.json"
DECAY_AFTER = 3_000
#: the running average's decay (the learner's default when q_r_fit.json was recorded)
EMA_DECAY = 0.997
#: variant -> (hidden sizes, lr, q_r_advantage_weight, batch); "defaults" is EmpoConfig's
VARIANTS = {
    "before (256x256, lr 1e-3, plain log loss)": ((256, 256), 1e-3, 0.0, 256),
    "advantage weight 30": ((256, 256), 1e-3, 30.0, 256),
    "advantage weight 30, lr 3e-3": ((256, 256), 3e-3, 30.0, 256),
    "batch 1024 (256x256, lr 1e-3, plain)": ((256, 256), 1e-3, 0.0, 1024),
}
SHORT = {"before": "before (256x256, lr 1e-3, plain log loss)",
         "adv": "advantage weight 30", "adv_lr": "advantage weight 30, lr 3e-3",
         "defaults": "defaults", "batch": "batch 1024 (256x256, lr 1e-3, plain)"}


def variant(name: str, cfg) -> tuple:
    """(hidden sizes, lr, q_r_advantage_weight, batch) of ``name``."""
    if name == "defaults":
        return (cfg.hidden_sizes_by_network()["q_r"], cfg.lr_q_r, cfg.q_r_advantage_weight,
                cfg.train_batch_size_per_learner)
    return VARIANTS[name]


def exact_data(world: str):
    """(obs [N, D], Q_r* [N, A_r], pi_r* [N, A_r]) over the reachable non-terminal states."""
    import numpy as np
    import torch
    from benchmarks.common import CASES, ensure_ray
    from rllib_empo import EmpoConfig
    from rllib_empo.algorithm.values import LearnedValues
    ensure_ray()
    env, env_config, training = CASES[world]
    cfg = EmpoConfig().environment(env, env_config=env_config).training(**training)
    algo = cfg.build_algo()
    try:
        sol = algo.exact_solution()
    finally:
        algo.stop()
    g = sol.graph
    idx = np.flatnonzero(~g.terminal)
    obs = LearnedValues(cfg).obs([g.states[i] for i in idx])
    return (obs, torch.tensor(sol.Q[idx], dtype=torch.float32),
            torch.tensor(sol.PI[idx], dtype=torch.float32), cfg)


def fit(obs, q_star, pi_star, cfg, hidden, lr, weight, batch, updates, every, seed=0):
    """Fit one variant; the curve of its figures every ``every`` updates."""
    import gymnasium as gym
    import numpy as np
    import torch
    from rllib_empo.algorithm.module import EmpoRLModule
    from rllib_empo.algorithm.targets import value_loss
    from rllib_empo.exact.compare import CLEAR_LEAD, DECISION_TOLERANCE
    from rllib_empo.theory.params import EmpoParams
    torch.manual_seed(seed)
    th = EmpoParams.from_config(cfg)
    spec = cfg.table_spec()
    mc = {**cfg.model_config,
          "hidden_sizes": {**cfg.model_config["hidden_sizes"], "q_r": tuple(hidden)}}
    module = EmpoRLModule(observation_space=gym.spaces.Box(-np.inf, np.inf, (spec.obs_dim,),
                                                           np.float32),
                          action_space=gym.spaces.Discrete(spec.num_robot_actions),
                          model_config=mc)
    net = module.q_r
    avg = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    top = pi_star.sort(-1, descending=True).values
    clear = (top[:, 0] - top[:, 1]) > CLEAR_LEAD
    decision = (pi_star.max(-1).values - pi_star.min(-1).values) > DECISION_TOLERANCE
    log_star = torch.log((-q_star).clamp_min(th.neg_q_r_floor))
    gen = torch.Generator().manual_seed(seed + 1)
    curve, start = [], time.process_time()
    for t in range(updates):
        for group in opt.param_groups:
            group["lr"] = lr if t < DECAY_AFTER else lr * math.sqrt(DECAY_AFTER / t)
        i = torch.randint(0, len(obs), (batch,), generator=gen)
        pred = -torch.exp(net(obs[i]).clamp(-30, 30))
        loss = value_loss("q_r", pred, q_star[i], None, "log", weight, th.neg_q_r_floor)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():          # the learner's running average, start-up included
            d = min(EMA_DECAY, (1.0 + t) / (10.0 + t))
            for a, p in zip(avg.parameters(), net.parameters()):
                a.lerp_(p, 1 - d)
        if (t + 1) % every == 0:
            with torch.no_grad():
                q = -torch.exp(avg(obs).clamp(-30, 30))
                pi = th.policy(q)
                tv = 0.5 * (pi - pi_star).abs().sum(-1)
                d = torch.log((-q).clamp_min(th.neg_q_r_floor)) - log_star
                adv = d - d.mean(-1, keepdim=True)
                curve.append({
                    "updates": t + 1, "cpu_s": round(time.process_time() - start, 1),
                    "mean_tv_pi_r": float(tv.mean()),
                    "mean_tv_pi_r_decision": float(tv[decision].mean()),
                    "greedy_agreement_clear": float((pi.argmax(-1) == pi_star.argmax(-1))[clear]
                                                    .float().mean()),
                    "log_q_r_error": float(d.abs().mean()), "advantage_error": float(adv.abs().mean())})
    return {"hidden": list(hidden), "lr": lr, "q_r_advantage_weight": weight, "batch": batch,
            "ema_decay": EMA_DECAY,
            "num_states": len(obs), "num_decision_states": int(decision.sum()),
            "num_clear_states": int(clear.sum()), "curve": curve}


def main(argv=None) -> int:
    import torch
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default="lanes")
    ap.add_argument("--variants", default=",".join(SHORT),
                    help=f"comma-separated among {', '.join(SHORT)}")
    ap.add_argument("--updates", type=int, default=12_000)
    ap.add_argument("--every", type=int, default=2_000)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    obs, q_star, pi_star, cfg = exact_data(args.world)
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    for short in args.variants.split(","):
        name = SHORT[short]
        res = fit(obs, q_star, pi_star, cfg, *variant(name, cfg), args.updates, args.every)
        data.setdefault(args.world, {})[name] = res
        args.out.write_text(json.dumps(data, indent=1) + "\n")
        for p in res["curve"]:
            print(f"{args.world} {name:42s} {p['updates']:6d} mean TV {p['mean_tv_pi_r']:.4f} "
                  f"decision TV {p['mean_tv_pi_r_decision']:.4f} greedy "
                  f"{p['greedy_agreement_clear']:.3f} log err {p['log_q_r_error']:.4f} "
                  f"adv err {p['advantage_error']:.4f} ({p['cpu_s']:.0f} s CPU)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
