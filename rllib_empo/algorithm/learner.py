"""EmpoTorchLearner: losses of the active networks, a learning rate per network, target copies.

The Algorithm owns every schedule (docs/DESIGN.md) and the replay memory. Rows name table
slots; the Learner reads the memory through :meth:`EmpoTorchLearner.attach_replay` (a local
Learner shares the driver's ``ReplayStore``) or :meth:`apply_replay_delta` (a remote one keeps
a ``StoreReplica``), and keeps a ``TargetCache`` of the target networks' outputs per state,
emptied at every target copy, and a ``WeightAverages`` (``rllib_empo.algorithm.averages``):
the running averages of ``ema_decay`` and the mean since the last copy that a target copy
takes (``target_copy``). One ``update()`` call runs one or more
consecutive learner updates, one per minibatch (``num_total_minibatches``), and
``timesteps["empo"]`` is an :class:`EmpoUpdate`: the ``StepPlan`` of each of them
(``rllib_empo.theory.schedule``: active networks, learning rates, beta_r, target copies) and
whether to log statistics. A call without it is an error, never a default.

Only the active networks' losses are computed, so the others get no gradient and the
optimizer (one Adam, a parameter group per network) leaves them bit-identical.
Gradient clipping follows RLlib's ``grad_clip``/``grad_clip_by``, per network;
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

from ray.rllib.core import COMPONENT_RL_MODULE
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.rl_module.apis import TargetNetworkAPI
from ray.rllib.utils.annotations import override

from rllib_empo.algorithm.averages import WeightAverages
from rllib_empo.algorithm.batch import TargetCache, expand
from rllib_empo.algorithm.nonfinite import nonfinite_networks, restore_from_target
from rllib_empo.algorithm.store import StoreReplica
from rllib_empo.algorithm.targets import compute_targets, loss_masks, residuals, value_loss
from rllib_empo.theory.params import EmpoParams
from rllib_empo.theory.schedule import StepPlan

EMPO_KEY = "empo"
OPTIMIZER = "adam"
CACHE_COMPONENT = "empo_target_cache"


@dataclass(frozen=True)
class EmpoUpdate:
    """What one learner call does: ``plans[i]`` is the i-th minibatch's update; ``log`` asks
    for per-network loss/prediction/target means of the call's last update."""

    plans: tuple[StepPlan, ...]
    log: bool = True


class EmpoTorchLearner(TorchLearner):
    @override(TorchLearner)
    def build(self) -> None:
        if self.config.num_learners > 0:        # a remote Learner: its own process
            torch.set_num_threads(self.config.torch_threads("learner"))
        super().build()     # builds the module and calls configure_optimizers_for_module
        self.module.foreach_module(
            lambda mid, m: m.make_target_networks() if isinstance(m, TargetNetworkAPI) else None)
        if self.config.ema_decay > 0:
            self.module.foreach_module(lambda mid, m: m.unwrapped().make_average_networks())
        # the running averages' update counts and the means since the last target copy
        self._averages = WeightAverages(self.config.ema_decay, self.config.target_copy)
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
        self._view = None              # the replay memory (attach_replay / apply_replay_delta)
        self._cache = None
        self._residual_cache = None

    # ---- the replay memory ----------------------------------------------------------------
    def attach_replay(self, view) -> None:
        """Read rows from ``view`` (a ``ReplayStore`` or a ``StoreReplica``)."""
        self._view = view
        for module_id in self.module.keys():
            module = self.module[module_id].unwrapped()
            old, self._cache = self._cache, TargetCache(module, view, self._theory)
            restored = getattr(self, "_pending_cache_state", None)
            if restored is not None:         # a checkpoint's cache, for the restored memory
                self._cache.set_state(restored)
                self._pending_cache_state = None
            elif old is not None:
                self._cache.set_state(old.get_state())
            module.expand = self._expand

    def apply_replay_delta(self, delta: dict) -> None:
        """A remote Learner catches up with the driver's stores (``ReplayStore.delta``)."""
        if not isinstance(self._view, StoreReplica):
            self.attach_replay(StoreReplica(delta["mode"]))
        self._view.apply(delta)

    def _expand(self, batch):
        module = next(iter(self.module.values())).unwrapped()
        b = expand(self._view, batch["table"], batch["weight"], module.num_actions,
                   module.num_robot_actions, device=self._device)
        return b, self._active

    @property
    def target_cache(self) -> TargetCache:
        return self._cache

    def residuals(self, tables, weights, beta_r: float) -> dict:
        """``targets.residuals`` (each network's distance from its own fixed point) on the
        rows ``tables``, with targets at ``beta_r``, the current step's."""
        module = next(iter(self.module.values())).unwrapped()
        # copies: on a remote Learner the arrays arrive read-only from Ray's object store
        tables, weights = torch.tensor(tables), torch.tensor(weights)
        # a cache of its own (valid while the training cache is), so that measuring leaves
        # training exactly as it would be without
        if self._residual_cache is None or self._residual_cache.view is not self._view:
            self._residual_cache = TargetCache(module, self._view, self._theory)
        cache = self._residual_cache
        if cache.version != self._cache.version:
            cache.version = self._cache.version
        with torch.no_grad():
            b = expand(self._view, tables, weights, module.num_actions, module.num_robot_actions,
                       device=self._device)
            return residuals(cache, b, beta_r, self._theory)

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        """One fused Adam over every network, one parameter group per network (each with its
        own learning rate, set per update from the StepPlan). One optimizer step per update
        instead of five: torch's per-call overhead of Adam.step was ~11% of an update. A
        frozen network's parameters get no gradient, so Adam leaves them and their moments
        untouched."""
        module = self._module[module_id].unwrapped()
        groups, refs = [], {}
        for name in module.network_names:
            params = self.get_parameters(module.net(name))
            groups.append({"params": params, "lr": getattr(config, f"lr_{name}"), "network": name})
            refs[name] = [self.get_param_ref(p) for p in params]
        self._network_params = getattr(self, "_network_params", {})
        self._network_params[module_id] = refs
        self.register_optimizer(module_id=module_id, optimizer_name=OPTIMIZER,
                                optimizer=torch.optim.Adam(groups, fused=True),
                                params=[p for g in groups for p in g["params"]],
                                lr_or_lr_schedule=None)               # lr: ours

    def network_parameter_refs(self, module_id, name: str) -> list:
        """The parameter refs (keys of gradient dicts) of network ``name``."""
        return self._network_params[module_id][name]

    def network_learning_rates(self, module_id) -> dict:
        """{network: the learning rate its parameter group has now}."""
        return {g["network"]: g["lr"] for g in self.get_optimizer(module_id, OPTIMIZER).param_groups}

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
        lrs = dict(plan.lrs)
        for module_id in self.module.keys():
            names = self.module[module_id].unwrapped().network_names
            self._active = tuple(n for n in plan.active if n in names)
            for group in self.get_optimizer(module_id, OPTIMIZER).param_groups:
                group["lr"] = lrs[group["network"]]
        self._beta_r = plan.beta_r
        self._log_stats = self._log_last and i == len(self._plans) - 1
        self._skipped = set()

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        b = fwd_out["batch"]
        targets = compute_targets(self._cache, b, self._active, self._beta_r, self._theory)
        masks = loss_masks(b)
        losses = {n: value_loss(n, fwd_out[n], targets[n], masks.get(n), config.value_loss,
                                config.q_r_advantage_weight, self._theory.neg_q_r_floor)
                  for n in self._active}
        if not losses:
            return torch.zeros((), device=b.obs.device)
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
            restore_from_target(module, name, self.get_optimizer(module_id, OPTIMIZER))
            self.metrics.log_value((module_id, "num_nonfinite_restores"), 1,
                                   reduce="lifetime_sum")
        averages = self._averages.restart_nonfinite(module, names)
        if (bad or averages) and self.config.on_nonfinite == "raise":
            what = " and ".join(
                ([f"the weights of {bad} became non-finite (restored from their target "
                  "copies)"] if bad else []) +
                ([f"the running averages of {averages} became non-finite (restarted from "
                  "the weights)"] if averages else []))
            raise FloatingPointError(f"EMPO update stopped: {what}. Set on_nonfinite='skip' "
                                     "to go on after such a restore.")
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
            grads = [g for g in (module_gradients_dict.get(ref) for ref in
                                 self.network_parameter_refs(module_id, name)) if g is not None]
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
                    for ref in self.network_parameter_refs(module_id, name):
                        grads.pop(ref, None)
                        self._params[ref].grad = None   # backward set it: Adam must skip it
            restored = []
            if grads:
                super().apply_gradients(grads)
                for module_id in self.module.keys():
                    restored += self.repair_nonfinite(module_id, stepped)
                    self._averages.fold(module_id, self.module[module_id].unwrapped(), stepped)
            if restored:
                self._why = f"the step made the weights of {restored} non-finite"
            self._count_skips(bool(restored))
            self._sync_targets(self._plans[self._step_i].sync)
        finally:
            self._begin_step(self._step_i + 1)

    def _check_gradients(self, grads: dict) -> None:
        for module_id in self.module.keys():
            bad = []
            for n in self._active:
                net_grads = [grads[r] for r in self.network_parameter_refs(module_id, n)
                             if r in grads]
                if net_grads and not bool(torch.isfinite(
                        torch.stack(torch._foreach_norm(net_grads))).all()):
                    bad.append(n)
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

    @override(TorchLearner)
    def get_state(self, components=None, *, not_components=None, **kwargs):
        state = super().get_state(components, not_components=not_components, **kwargs)
        if self._cache is not None and self._check_component(CACHE_COMPONENT, components,
                                                             not_components):
            state[CACHE_COMPONENT] = self._cache.get_state()
        state.update(self._averages.get_state(
            lambda c: self._check_component(c, components, not_components)))
        return state

    @override(TorchLearner)
    def set_state(self, state) -> None:
        super().set_state(state)
        self._averages.set_state(
            state, new_weights=COMPONENT_RL_MODULE in state,
            device_of=lambda module_id: next(self.module[module_id].parameters()).device)
        if self._cache is not None:
            if CACHE_COMPONENT in state:
                self._pending_cache_state = None
                self._cache.set_state(state[CACHE_COMPONENT])
            else:
                self._cache.invalidate()     # the target networks may have changed
        elif CACHE_COMPONENT in state:       # restored before the replay memory is attached
            self._pending_cache_state = state[CACHE_COMPONENT]

    def _sync_targets(self, names) -> None:
        if names and self._cache is not None:
            self._cache.invalidate()
        for module_id in self.module.keys():
            module = self.module[module_id].unwrapped()
            for name in names:
                if name in module.network_names:
                    self._averages.copy_to_target(module_id, module, name)
