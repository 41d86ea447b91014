"""EmpoTorchLearner: losses of the active networks, one optimizer per network, target copies.

The Algorithm owns every schedule (docs/DESIGN.md). One ``update()`` call runs one or more
consecutive learner updates, one per minibatch (``num_total_minibatches``), and
``timesteps["empo"]`` is an :class:`EmpoUpdate`: the ``StepPlan`` of each of them
(``rllib_empo.theory.schedule``: active networks, learning rates, beta_r, target copies) and
whether to log statistics. A call without it is an error, never a default.

Only the active networks' losses are computed, so the others get no gradient and their
optimizers (which RLlib's ``apply_gradients`` steps all of) leave them bit-identical.
Gradient clipping follows RLlib's ``grad_clip``/``grad_clip_by`` per optimizer (per network);
clipping by ``"global_norm"`` (the default) uses torch's fused ``_foreach`` kernels with
RLlib's formula, and the finiteness of the same norms decides ``on_nonfinite``.

Non-finite numbers never reach the weights (``rllib_empo.algorithm.nonfinite``). A
non-finite loss or gradient raises ``FloatingPointError`` (``on_nonfinite="raise"``) or
skips that network's update, the other networks still learning (``"skip"``). Weights found
non-finite (at the start of a learner call, or after an optimizer step that overflowed) are
restored from the network's target copy, with fresh optimizer moments; ``"raise"`` then
raises. ``max_nonfinite_skips`` updates in a row with something skipped stop training.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.learner.utils import update_target_network
from ray.rllib.core.rl_module.apis import TargetNetworkAPI
from ray.rllib.utils.annotations import override

from rllib_empo.algorithm.nonfinite import nonfinite_networks, restore_from_target
from rllib_empo.algorithm.targets import compute_targets, loss_masks, value_loss
from rllib_empo.theory.params import EmpoParams
from rllib_empo.theory.schedule import StepPlan

EMPO_KEY = "empo"


@dataclass(frozen=True)
class EmpoUpdate:
    """What one learner call does: ``plans[i]`` is the i-th minibatch's update; ``log`` asks
    for per-network loss/prediction/target means of the call's last update."""

    plans: tuple[StepPlan, ...]
    log: bool = True


class EmpoTorchLearner(TorchLearner):
    @override(TorchLearner)
    def build(self) -> None:
        super().build()     # builds the module and calls configure_optimizers_for_module
        self.module.foreach_module(
            lambda mid, m: m.make_target_networks() if isinstance(m, TargetNetworkAPI) else None)
        self._theory = EmpoParams.from_config(self.config)
        self._plans: tuple[StepPlan, ...] = ()
        self._step_i = 0
        self._log_last = True
        self._log_stats = False
        self._active: tuple[str, ...] = ()
        self._beta_r = 0.0
        self._skipped: set[str] = set()     # networks whose update is skipped (non-finite)
        self._why = ""                      # what the last skip was about
        self._skips_in_a_row = 0
        self._grads_checked = False     # set by postprocess_gradients_for_module (global norm)

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        module = self._module[module_id].unwrapped()
        for name in module.network_names:
            params = self.get_parameters(module.net(name))
            self.register_optimizer(module_id=module_id, optimizer_name=name,
                                    optimizer=torch.optim.Adam(params, lr=getattr(config, f"lr_{name}"),
                                                               fused=True),
                                    params=params, lr_or_lr_schedule=None)   # lr: ours

    @override(TorchLearner)
    def before_gradient_based_update(self, *, timesteps) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        update = timesteps.get(EMPO_KEY)
        if not isinstance(update, EmpoUpdate) or not update.plans:
            raise ValueError(f"EmpoTorchLearner.update needs timesteps[{EMPO_KEY!r}] = EmpoUpdate "
                             f"with one StepPlan per minibatch, got {update!r}")
        self._plans, self._log_last = update.plans, update.log
        for module_id in self.module.keys():    # weights corrupted since the last call
            module = self.module[module_id].unwrapped()
            self.repair_nonfinite(module_id, module.network_names)
        self._begin_step(0)

    def _begin_step(self, i: int) -> None:
        """Set the active networks, beta_r and learning rates of the call's i-th update."""
        self._step_i = i
        if i >= len(self._plans):
            return                      # past the call's last update: nothing left to set
        plan = self._plans[i]
        for module_id in self.module.keys():
            names = self.module[module_id].unwrapped().network_names
            self._active = tuple(n for n in plan.active if n in names)
            for name, lr in plan.lrs:
                for group in self.get_optimizer(module_id, name).param_groups:
                    group["lr"] = lr
        self._beta_r = plan.beta_r
        self._log_stats = self._log_last and i == len(self._plans) - 1
        self._skipped = set()

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        module = self.module[module_id].unwrapped()
        targets = compute_targets(module, batch, self._active, self._beta_r, self._theory)
        masks = loss_masks(batch)
        losses = {n: value_loss(n, fwd_out[n], targets[n], masks.get(n), config.value_loss)
                  for n in self._active}
        if not losses:
            return torch.zeros((), device=batch["obs"].device)
        total = sum(losses.values())
        bad = []
        if not torch.isfinite(total):      # one sync on the common path
            bad = [n for n, l in losses.items() if not torch.isfinite(l)]
            self._nonfinite(bad, f"non-finite loss of {bad} (targets finite: "
                            f"{ {n: bool(torch.isfinite(targets[n]).all()) for n in bad} })")
        # the skipped networks' (non-finite) figures are logged too, not left stale
        for n, l in (losses.items() if self._log_stats else ()):
            self.metrics.log_value((module_id, f"loss_{n}"), l.detach(), window=1)
            self.metrics.log_value((module_id, f"prediction_{n}"), fwd_out[n].detach().mean(),
                                   window=1)
            self.metrics.log_value((module_id, f"target_{n}"), targets[n].mean(), window=1)
        if bad:
            losses = {n: l for n, l in losses.items() if n not in bad}
            if not losses:
                return torch.zeros((), device=total.device)
            total = sum(losses.values())
        return total

    def _nonfinite(self, networks, what: str) -> None:
        """Networks ``networks`` had a non-finite loss or gradient: raise, or skip them."""
        if self.config.on_nonfinite == "raise":
            raise FloatingPointError(f"EMPO update stopped: {what}. Set on_nonfinite='skip' "
                                     "to skip such updates instead.")
        self._skipped.update(networks)
        self._why = what

    def repair_nonfinite(self, module_id, names) -> list[str]:
        """Restore the networks among ``names`` whose weights are non-finite from their
        target copies (``nonfinite.restore_from_target``); returns them. With
        ``on_nonfinite="raise"`` this then raises FloatingPointError."""
        module = self.module[module_id].unwrapped()
        bad = nonfinite_networks(module, names)
        for name in bad:
            restore_from_target(module, name, self.get_optimizer(module_id, name))
            self.metrics.log_value((module_id, "num_nonfinite_restores"), 1,
                                   reduce="lifetime_sum")
        if bad and self.config.on_nonfinite == "raise":
            raise FloatingPointError(f"EMPO update stopped: the weights of {bad} became "
                                     "non-finite (restored from their target copies). Set "
                                     "on_nonfinite='skip' to go on after such a restore.")
        return bad

    @override(TorchLearner)
    def postprocess_gradients_for_module(self, *, module_id, config=None, module_gradients_dict):
        """Clip each active network's gradients by their global norm, as RLlib's
        ``clip_gradients`` does (coefficient grad_clip / max(norm + 1e-6, grad_clip)), with
        one fused norm and one fused multiply per network instead of a Python loop over
        tensors; record whether every norm is finite for ``apply_gradients``. Clipping by
        "value" or "norm" is left to RLlib."""
        self._grads_checked = False
        if config.grad_clip is not None and config.grad_clip_by != "global_norm":
            return super().postprocess_gradients_for_module(
                module_id=module_id, config=config, module_gradients_dict=module_gradients_dict)
        bad = []
        for name in self._active:
            optimizer = self.get_optimizer(module_id, name)
            grads = [g for g in self.filter_param_dict_for_optimizer(module_gradients_dict,
                                                                     optimizer).values()
                     if g is not None]
            if not grads:
                continue
            norms = torch.stack(torch._foreach_norm(grads))
            if not bool(torch.isfinite(norms).all()):
                bad.append(name)
            total = torch.linalg.vector_norm(norms.nan_to_num(neginf=-10e8, posinf=10e8))
            total = total.nan_to_num(neginf=-10e8, posinf=10e8)
            if config.grad_clip is not None:
                coeff = config.grad_clip / torch.clamp(total + 1e-6, min=config.grad_clip)
                torch._foreach_mul_(grads, torch.clamp(coeff, max=1.0))
            if self._log_stats or config.log_gradients:
                self.metrics.log_value((module_id, f"gradients_{name}_global_norm"), total,
                                       window=1)
        if bad:
            self._nonfinite(bad, f"non-finite gradient of {bad}")
        self._grads_checked = True
        return dict(module_gradients_dict)

    @override(TorchLearner)
    def apply_gradients(self, gradients_dict) -> None:
        """RLlib's step of the optimizers for the networks not skipped (non-finite loss or
        gradient), a check that the step left their weights finite, then this update's
        target copies, and on to the call's next update. Parameters without a gradient
        (frozen or skipped networks) are left out: their optimizers skip them."""
        try:
            grads = {pid: g for pid, g in gradients_dict.items() if g is not None}
            if grads and not self._grads_checked:      # clipped by RLlib ("value"/"norm")
                self._check_gradients(grads)
            stepped = [n for n in self._active if n not in self._skipped]
            for module_id in self.module.keys():
                for name in self._skipped:
                    for pid in self.filter_param_dict_for_optimizer(
                            grads, self.get_optimizer(module_id, name)):
                        grads.pop(pid, None)
            restored = []
            if grads:
                super().apply_gradients(grads)
                for module_id in self.module.keys():
                    restored += self.repair_nonfinite(module_id, stepped)
            if restored:
                self._why = f"the step made the weights of {restored} non-finite"
            self._count_skips(bool(restored))
            self._sync_targets(self._plans[self._step_i].sync)
        finally:
            self._begin_step(self._step_i + 1)

    def _check_gradients(self, grads: dict) -> None:
        for module_id in self.module.keys():
            bad = [n for n in self._active
                   if not all(bool(torch.isfinite(g).all()) for g in
                              self.filter_param_dict_for_optimizer(
                                  grads, self.get_optimizer(module_id, n)).values())]
            if bad:
                self._nonfinite(bad, f"non-finite gradient of {bad}")

    def _count_skips(self, restored: bool) -> None:
        """Count an update in which something was skipped or restored; too many in a row
        stop training."""
        if not self._skipped and not restored:
            self._skips_in_a_row = 0
            return
        for module_id in self.module.keys():
            self.metrics.log_value((module_id, "num_nonfinite_skips"), 1, reduce="lifetime_sum")
        self._skips_in_a_row += 1
        limit = self.config.max_nonfinite_skips
        if self._skips_in_a_row >= limit:
            raise FloatingPointError(
                f"EMPO: {self._skips_in_a_row} learner updates in a row had non-finite values "
                f"(on_nonfinite='skip', max_nonfinite_skips={limit}); the last: {self._why}. "
                "Training stops, since it is not going to recover: look for NaN in the "
                "world's encodings or the prior, or lower the learning rates or beta_r")

    def _sync_targets(self, names) -> None:
        for module_id in self.module.keys():
            module = self.module[module_id].unwrapped()
            for name in names:
                if name in module.network_names:
                    update_target_network(main_net=module.net(name),
                                          target_net=module.net(name, target=True), tau=1.0)
