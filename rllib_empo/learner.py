"""EmpoTorchLearner: losses of the active networks, one optimizer per network, target copies.

The Algorithm owns every schedule (DESIGN.md). One ``update()`` call runs one or more
consecutive learner updates, one per minibatch (``num_total_minibatches``), and
``timesteps["empo"]`` carries the values of each one's warm-up step:

    {"steps": [{"active": [...networks trained now...], "lrs": {net: lr}, "beta_r": float,
                "sync": [...networks whose target copy is refreshed after this update...]},
               ...one dict per minibatch, in order...],
     "log": whether to log per-network loss/prediction/target means of the call's last
            update (the Algorithm reports only those; each logged value costs time)}

Only the active networks' losses are computed and only their optimizers step, so frozen
networks stay bit-identical. Gradient clipping follows RLlib's ``grad_clip``/``grad_clip_by``
per optimizer (per network); clipping by ``"global_norm"`` (the default) uses torch's fused
``_foreach`` kernels with RLlib's formula, and the finiteness of the same norms decides
``on_nonfinite``. A non-finite loss or gradient raises ``FloatingPointError`` or skips the
update, as ``on_nonfinite`` says; it never reaches the weights.
"""
from __future__ import annotations

import torch

from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.learner.utils import update_target_network
from ray.rllib.core.rl_module.apis import TargetNetworkAPI

from rllib_empo.targets import Theory, compute_targets, loss_masks, value_loss

EMPO_KEY = "empo"


class EmpoTorchLearner(TorchLearner):
    def build(self) -> None:
        super().build()     # builds the module and calls configure_optimizers_for_module
        self.module.foreach_module(
            lambda mid, m: m.make_target_networks() if isinstance(m, TargetNetworkAPI) else None)
        self._theory = Theory.from_config(self.config)
        self._active: tuple[str, ...] = ()
        self._beta_r = 0.0
        self._skip = False
        self._grads_finite = None      # set by postprocess_gradients_for_module (global norm)

    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        module = self._module[module_id].unwrapped()
        for name in module.network_names:
            params = self.get_parameters(module.net(name))
            self.register_optimizer(module_id=module_id, optimizer_name=name,
                                    optimizer=torch.optim.Adam(params, lr=getattr(config, f"lr_{name}"),
                                                             fused=True),
                                    params=params, lr_or_lr_schedule=None)   # lr: ours

    def before_gradient_based_update(self, *, timesteps) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        empo = timesteps.get(EMPO_KEY) or {}
        self._steps = list(empo.get("steps") or [empo])
        self._log_last = bool(empo.get("log", True))
        self._begin_step(0)

    def _begin_step(self, i: int) -> None:
        """Set the active networks, beta_r and learning rates of the call's i-th update."""
        self._step_i = i
        step = self._steps[min(i, len(self._steps) - 1)]
        for module_id in self.module.keys():
            names = self.module[module_id].unwrapped().network_names
            self._active = tuple(n for n in step.get("active", names) if n in names)
            for name, lr in (step.get("lrs") or {}).items():
                if name in names:
                    for group in self.get_optimizer(module_id, name).param_groups:
                        group["lr"] = float(lr)
        self._beta_r = float(step.get("beta_r", 0.0))
        self._log_stats = self._log_last and i == len(self._steps) - 1
        self._skip = False

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        module = self.module[module_id].unwrapped()
        targets = compute_targets(module, batch, self._active, self._beta_r, self._theory)
        masks = loss_masks(batch)
        losses = {n: value_loss(n, fwd_out[n], targets[n], masks.get(n), config.value_loss)
                  for n in self._active}
        if not losses:
            return torch.zeros((), device=batch["obs"].device)
        total = sum(losses.values())
        if not torch.isfinite(total):
            bad = [n for n, l in losses.items() if not torch.isfinite(l)]
            self._nonfinite(module_id, f"non-finite loss of {bad} (targets finite: "
                            f"{ {n: bool(torch.isfinite(targets[n]).all()) for n in bad} })")
            return torch.zeros((), device=total.device)
        for n, l in (losses.items() if self._log_stats else ()):
            self.metrics.log_value((module_id, f"loss_{n}"), l.detach(), window=1)
            self.metrics.log_value((module_id, f"prediction_{n}"), fwd_out[n].detach().mean(),
                                   window=1)
            self.metrics.log_value((module_id, f"target_{n}"), targets[n].mean(), window=1)
        return total

    def _nonfinite(self, module_id, what: str) -> None:
        if self.config.on_nonfinite == "raise":
            raise FloatingPointError(f"EMPO update stopped: {what}. Set on_nonfinite='skip' "
                                     "to skip such updates instead.")
        self._skip = True
        self.metrics.log_value((module_id, "num_nonfinite_skips"), 1, reduce="lifetime_sum")

    def postprocess_gradients_for_module(self, *, module_id, config=None, module_gradients_dict):
        """Clip each active network's gradients by their global norm, as RLlib's
        ``clip_gradients`` does (coefficient grad_clip / max(norm + 1e-6, grad_clip)), with
        one fused norm and one fused multiply per network instead of a Python loop over
        tensors; record whether every norm is finite for ``apply_gradients``. Clipping by
        "value" or "norm" is left to RLlib."""
        self._grads_finite = None
        if config.grad_clip is not None and config.grad_clip_by != "global_norm":
            return super().postprocess_gradients_for_module(
                module_id=module_id, config=config, module_gradients_dict=module_gradients_dict)
        finite = True
        for name in self._active:
            optimizer = self.get_optimizer(module_id, name)
            grads = list(self.filter_param_dict_for_optimizer(module_gradients_dict,
                                                              optimizer).values())
            if not grads:
                continue
            norms = torch.stack(torch._foreach_norm(grads))
            finite = finite and bool(torch.isfinite(norms).all())
            total = torch.linalg.vector_norm(norms.nan_to_num(neginf=-10e8, posinf=10e8))
            total = total.nan_to_num(neginf=-10e8, posinf=10e8)
            if config.grad_clip is not None:
                coeff = config.grad_clip / torch.clamp(total + 1e-6, min=config.grad_clip)
                torch._foreach_mul_(grads, torch.clamp(coeff, max=1.0))
            if self._log_stats or config.log_gradients:
                self.metrics.log_value((module_id, f"gradients_{name}_global_norm"), total,
                                       window=1)
        self._grads_finite = finite
        return dict(module_gradients_dict)

    def apply_gradients(self, gradients_dict) -> None:
        """Step only the active networks' optimizers (RLlib's default steps all of them),
        then make this update's target copies and move on to the call's next update."""
        try:
            self._step_active(gradients_dict)
            self._sync_targets(self._steps[self._step_i].get("sync") or ())
        finally:
            self._begin_step(self._step_i + 1)

    def _step_active(self, gradients_dict) -> None:
        if self._skip or not gradients_dict:
            return
        finite = self._grads_finite
        if finite is None:              # clipped by RLlib ("value"/"norm"): check here
            grads = [g for g in gradients_dict.values() if g is not None]
            finite = not grads or bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())
        if not finite:
            for module_id in self.module.keys():
                self._nonfinite(module_id, "non-finite gradient")
            return
        for pid, grad in gradients_dict.items():
            self._params[pid].grad = grad
        for module_id in self.module.keys():
            for name in self._active:
                self.get_optimizer(module_id, name).step()

    def _sync_targets(self, names) -> None:
        for module_id in self.module.keys():
            module = self.module[module_id].unwrapped()
            for name in names:
                if name in module.network_names:
                    update_target_network(main_net=module.net(name),
                                          target_net=module.net(name, target=True), tau=1.0)
