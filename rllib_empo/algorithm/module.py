"""EmpoRLModule: the five EMPO networks, their target copies, and the robot policy (5).

Networks (only the enabled ones exist; ``q_r`` and ``v_h_e`` always do), with output ranges
enforced by their heads:

| name   | input                    | output                     | head                           |
|--------|--------------------------|----------------------------|--------------------------------|
| q_r    | obs                      | Q_r(s, .) < 0, [A_r]       | -exp(z)                        |
| v_h_e  | obs, goal, one-hot human | 0 <= V_h^e(s, g) <= 1      | sigmoid                        |
| x_h    | obs                      | x_h_floor <= X_h(s) <= 1,[H]| floor ** sigmoid(z)           |
| u_r    | obs                      | U_r(s) <= -1               | -exp(softplus(z))              |
| v_r    | obs                      | V_r(s) < 0                 | -exp(z)                        |

The negative-valued networks output z = log(-value), and X_h lives on a log scale between
its floor and 1: these values span orders of magnitude (U_r = -X_h^(-xi*eta) reaches
-x_h_floor^(-xi*eta) when a human has no power left), the power law (5) depends on Q_r only
through log(-Q_r), and the learner can regress in log space (``value_loss``).

EnvRunners build the module with ``inference_only=True`` and keep only ``q_r``
(InferenceOnlyAPI). Their policy is pi_r ∝ (-Q_r)^(-beta_r) mixed with epsilon-uniform
exploration, where ``beta_r`` and ``epsilon`` are plain attributes set by the driver
(``set_exploration``): a registered buffer would be overwritten by every weight sync.
Target copies exist only on the Learner (TargetNetworkAPI).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, TargetNetworkAPI
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override

from rllib_empo.theory import equations as eq
from rllib_empo.theory.schedule import NETWORKS
TARGET_PREFIX = "target_"
AVERAGE_PREFIX = "average_"
LOG_RANGE = 30.0   # |log(-value)| bound of the negative heads: keeps exp() finite in float32


def mlp(in_dim: int, out_dim: int, hidden: tuple[int, ...]) -> nn.Sequential:
    layers, d = [], in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class GoalValueNet(nn.Module):
    """V_h^e's trunk. The first layer is split into a state part and a (goal, human) part so
    that the state part is computed once per successor and broadcast over goals, instead of
    once per (successor, goal) pair."""

    def __init__(self, obs_dim: int, goal_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.obs_in = nn.Linear(obs_dim, hidden[0])
        self.goal_in = nn.Linear(goal_dim, hidden[0], bias=False)
        self.rest = mlp(hidden[0], 1, tuple(hidden[1:]))

    def forward(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """obs [..., D] and goal [..., Dg + H] broadcast against each other; returns logits."""
        return self.rest(F.relu(self.obs_in(obs) + self.goal_in(goal))).squeeze(-1)


class EmpoRLModule(TorchRLModule, TargetNetworkAPI, InferenceOnlyAPI):
    """model_config keys: hidden_sizes (sizes, or {network: sizes}), num_humans, goal_dim, x_h_use_network,
    u_r_use_network, v_r_use_network, x_h_floor, neg_q_r_floor (filled in by EmpoConfig)."""

    @override(RLModule)
    def setup(self):
        mc = self.model_config
        hs = mc.get("hidden_sizes", (64, 64))
        hidden = (lambda n: tuple(hs[n])) if isinstance(hs, dict) else (lambda n: tuple(hs))
        obs_dim = int(self.observation_space.shape[0])
        self.num_robot_actions = int(self.action_space.n)
        self.num_humans = int(mc.get("num_humans", 1))
        self.num_actions = int(mc.get("num_actions", 1))      # per agent
        self.x_h_floor = float(mc.get("x_h_floor", eq.DEFAULT_X_H_FLOOR))
        self.neg_q_r_floor = float(mc.get("neg_q_r_floor", eq.DEFAULT_NEG_Q_R_FLOOR))
        self.q_r = mlp(obs_dim, self.num_robot_actions, hidden("q_r"))
        self.v_h_e = GoalValueNet(obs_dim, int(mc.get("goal_dim", 1)) + self.num_humans,
                                  hidden("v_h_e"))
        if mc.get("x_h_use_network", True):
            self.x_h = mlp(obs_dim, self.num_humans, hidden("x_h"))
        if mc.get("u_r_use_network", False):
            self.u_r = mlp(obs_dim, 1, hidden("u_r"))
        if mc.get("v_r_use_network", False):
            self.v_r = mlp(obs_dim, 1, hidden("v_r"))
        # Plain attributes (not buffers), pushed by the driver; see the module docstring.
        self.beta_r = 0.0
        self.epsilon = 0.0
        # Set by the Learner: rows (table slots) -> (Batch, networks trained now).
        self.expand = None

    # ---- which networks exist ----------------------------------------------------------
    @property
    def network_names(self) -> tuple[str, ...]:
        return tuple(n for n in NETWORKS if isinstance(getattr(self, n, None), nn.Module))

    def net(self, name: str, target: bool = False, average: bool = False) -> nn.Module:
        return getattr(self, (TARGET_PREFIX if target else AVERAGE_PREFIX if average else "") + name)

    def set_exploration(self, beta_r: float, epsilon: float) -> None:
        self.beta_r, self.epsilon = float(beta_r), float(epsilon)

    # ---- value heads (output ranges of the docstring table) -----------------------------
    def q_r_values(self, obs, target: bool = False):
        return -torch.exp(self.net("q_r", target)(obs).clamp(-LOG_RANGE, LOG_RANGE))

    def v_h_e_values(self, obs, goal_and_human, target: bool = False):
        return torch.sigmoid(self.net("v_h_e", target)(obs, goal_and_human))

    def x_h_values(self, obs, target: bool = False):
        log_floor = torch.log(torch.tensor(self.x_h_floor))
        x = torch.exp(log_floor * torch.sigmoid(self.net("x_h", target)(obs)))
        return x.clamp(self.x_h_floor, 1.0)   # exp(log(floor)) may round below the floor

    def u_r_values(self, obs, target: bool = False):
        z = self.net("u_r", target)(obs).squeeze(-1)
        return -torch.exp(F.softplus(z).clamp_max(LOG_RANGE))

    def v_r_values(self, obs, target: bool = False):
        return -torch.exp(self.net("v_r", target)(obs).squeeze(-1).clamp(-LOG_RANGE, LOG_RANGE))

    def goal_inputs(self, goal: torch.Tensor) -> torch.Tensor:
        """Append each human's one-hot id to goal encodings shaped [..., H, M, Dg]."""
        eye = torch.eye(self.num_humans, dtype=goal.dtype, device=goal.device)
        eye = eye.view(self.num_humans, 1, self.num_humans).expand(*goal.shape[:-1],
                                                                   self.num_humans)
        return torch.cat([goal, eye], dim=-1)

    # ---- RLModule forward passes --------------------------------------------------------
    def _policy(self, obs: torch.Tensor, epsilon: float) -> torch.Tensor:
        pi = eq.power_law_policy(self.q_r_values(obs), self.beta_r, self.neg_q_r_floor)
        return eq.epsilon_mix(pi, epsilon) if epsilon > 0 else pi

    def _act(self, batch: dict, epsilon: float) -> dict[str, Any]:
        with torch.no_grad():
            probs = self._policy(batch[Columns.OBS], epsilon)
            # inverse-CDF sampling, one uniform per row scaled by the row total (so an action
            # of probability 0 is never drawn); torch.multinomial took ~46 us per call on
            # rock_gate, a large share of an EnvRunner step, which runs this once per step
            c = probs.cumsum(-1)
            u = torch.rand(probs.shape[:-1] + (1,), dtype=c.dtype, device=c.device) * c[..., -1:]
            actions = (c <= u).sum(-1)
            logp = probs.gather(-1, actions[:, None]).squeeze(-1).clamp_min(1e-30).log()
        return {Columns.ACTIONS: actions, Columns.ACTION_LOGP: logp}

    # No layer here behaves differently in train and eval mode, so the per-call eval()/train()
    # toggles of TorchRLModule.forward_exploration/forward_inference (about a tenth of an
    # EnvRunner step on rock_gate) are skipped.
    @override(TorchRLModule)
    def forward_exploration(self, batch: dict, **kwargs) -> dict[str, Any]:
        return self._forward_exploration(batch, **kwargs)

    @override(TorchRLModule)
    def forward_inference(self, batch: dict, **kwargs) -> dict[str, Any]:
        return self._forward_inference(batch, **kwargs)

    @override(RLModule)
    def _forward_exploration(self, batch: dict, **kwargs) -> dict[str, Any]:
        return self._act(batch, self.epsilon)

    @override(RLModule)
    def _forward_inference(self, batch: dict, **kwargs) -> dict[str, Any]:
        """Samples from pi_r itself (no epsilon): the EMPO policy is stochastic by definition."""
        return self._act(batch, 0.0)

    @override(TorchRLModule)
    def forward_train(self, batch: dict, **kwargs) -> dict[str, Any]:
        # TorchRLModule.forward_train calls self.train() on every call (a recursive walk over
        # every submodule, ~5% of an update); nothing here ever leaves training mode.
        if self.inference_only:
            raise RuntimeError("forward_train on an inference-only EmpoRLModule")
        return self._forward_train(batch, **kwargs)

    @override(RLModule)
    def _forward_train(self, batch: dict, **kwargs) -> dict[str, Any]:
        """Predictions at the rows' states of the networks trained now. Rows name table slots
        of the replay memory; ``self.expand`` (set by the Learner, which holds the memory)
        turns them into a ``Batch``, returned under ``"batch"`` for the targets."""
        if self.expand is None:
            raise RuntimeError("EmpoRLModule.forward_train needs the Learner's replay memory "
                               "(EmpoTorchLearner sets module.expand)")
        b, active = self.expand(batch)
        out = {"batch": b}
        if "q_r" in active:
            out["q_r"] = self.q_r_values(b.obs)
        if "v_h_e" in active:
            out["v_h_e"] = self.v_h_e_values(b.obs[:, None, None, :], self.goal_inputs(b.goal_enc))
        for name in ("x_h", "u_r", "v_r"):
            if name in active:
                out[name] = getattr(self, f"{name}_values")(b.obs)
        return out

    # ---- TargetNetworkAPI / InferenceOnlyAPI --------------------------------------------
    @override(TargetNetworkAPI)
    def make_target_networks(self) -> None:
        for name in self.network_names:
            setattr(self, TARGET_PREFIX + name, make_target_network(getattr(self, name)))

    def make_average_networks(self) -> None:
        """Running averages of the networks (Learner only; ``ema_decay``): what evaluation
        reads and what the EnvRunners act with (see :meth:`get_state`)."""
        for name in self.network_names:
            setattr(self, AVERAGE_PREFIX + name, make_target_network(getattr(self, name)))

    def has_averages(self) -> bool:
        return hasattr(self, AVERAGE_PREFIX + "q_r")

    @override(TorchRLModule)
    def get_state(self, components=None, *, not_components=None, inference_only: bool = False,
                  **kwargs):
        """RLlib's state; the inference-only state (what EnvRunners receive) carries the
        *averaged* q_r, when there is one, under q_r's own names."""
        state = super().get_state(components, not_components=not_components,
                                  inference_only=inference_only, **kwargs)
        if inference_only and not self.inference_only and self.has_averages():
            prefix = AVERAGE_PREFIX + "q_r."
            avg = {k[len(AVERAGE_PREFIX):]: v for k, v in
                   super().get_state(components, not_components=not_components).items()
                   if k.startswith(prefix)}
            state.update(avg)
        return state

    @override(TargetNetworkAPI)
    def get_target_network_pairs(self):
        return [(getattr(self, n), getattr(self, TARGET_PREFIX + n)) for n in self.network_names]

    @override(TargetNetworkAPI)
    def forward_target(self, batch: dict, **kwargs) -> dict[str, Any]:
        return {"q_r": self.q_r_values(batch[Columns.OBS], target=True)}

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        learner_only = [n for n in NETWORKS if n != "q_r"]
        return learner_only + [TARGET_PREFIX + n for n in NETWORKS] + [AVERAGE_PREFIX + n
                                                                       for n in NETWORKS]
