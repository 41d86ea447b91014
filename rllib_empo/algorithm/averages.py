"""Averages of the Learner's weights: the running average that evaluation and the EnvRunners
use (``ema_decay``) and the mean since the last target copy that a copy takes
(``target_copy="interval_mean"``).

Why two (docs/DESIGN.md, section 4): ``ema_decay`` cleans what is *evaluated*; the interval
mean cleans what is *bootstrapped*. A plain hard copy is a snapshot of the jittering weights,
and every target until the next copy inherits that snapshot's error. The interval mean lags
by about half an interval; the running average by about 1 / (1 - ema_decay) updates.

The running averages live in the module (``average_<net>``: they travel with its weights to
the EnvRunners and into checkpoints); this object keeps how many updates each has folded in
and the interval means, and gives the Learner both as state components.
"""
from __future__ import annotations

import torch

from ray.rllib.core.learner.utils import update_target_network

#: the Learner's state components (names kept stable: checkpoints carry them)
AVERAGE_COMPONENT = "empo_average_steps"
MEAN_COMPONENT = "empo_interval_means"


class WeightAverages:
    """What the Learner folds into after each optimizer step, and what a target copy takes."""

    def __init__(self, ema_decay: float, target_copy: str):
        self.ema_decay = ema_decay
        self.target_copy = target_copy
        self.steps: dict = {}      # network -> updates folded into its running average
        # (module_id, network) -> [mean of the weights, updates in it] since the last copy
        self.means: dict = {}

    # ---- after an optimizer step -----------------------------------------------------------
    def fold(self, module_id, module, names) -> None:
        """Fold the weights just stepped of the networks ``names`` into their averages.

        Running average: avg <- d avg + (1 - d) w with d = ema_decay after a start-up
        (d_k = min(ema_decay, (1 + k) / (10 + k)) at the network's k-th update, so that an
        average is not stuck at the initial weights). Interval mean:
        m_k = m_(k-1) + (w - m_(k-1)) / k. The weights are finite here (the Learner repaired
        them before), so the averages stay finite too."""
        with torch.no_grad():     # else each lerp joins the autograd graph: memory grows
            for name in names:
                weights = [p.detach() for p in module.net(name).parameters()]
                if self.ema_decay > 0:
                    k = self.steps.get(name, 0)
                    d = min(self.ema_decay, (1.0 + k) / (10.0 + k))
                    torch._foreach_lerp_(list(module.net(name, average=True).parameters()),
                                         weights, 1.0 - d)
                    self.steps[name] = k + 1
                if self.target_copy == "interval_mean":
                    self._fold_mean(module_id, name, weights)

    def _fold_mean(self, module_id, name, weights) -> None:
        entry = self.means.get((module_id, name))
        if entry is None:
            self.means[(module_id, name)] = [[w.clone() for w in weights], 1]
        elif entry[1] == 0:                 # the first update since a copy
            torch._foreach_copy_(entry[0], weights)
            entry[1] = 1
        else:
            entry[1] += 1
            torch._foreach_lerp_(entry[0], weights, 1.0 / entry[1])

    def restart_nonfinite(self, module, names) -> list[str]:
        """Restart from the weights the running averages among ``names`` that took in
        non-finite weights; returns them."""
        restarted = []
        if not module.has_averages():
            return restarted
        with torch.no_grad():
            for name in names:
                avg = list(module.net(name, average=True).parameters())
                if not bool(torch.isfinite(torch.stack(torch._foreach_norm(avg))).all()):
                    torch._foreach_copy_(avg, list(module.net(name).parameters()))
                    self.steps[name] = 0
                    restarted.append(name)
        return restarted

    # ---- a target copy ---------------------------------------------------------------------
    def copy_to_target(self, module_id, module, name) -> None:
        """Hard-copy into network ``name``'s target what ``target_copy`` names: the mean
        since the last copy ("interval_mean"; the latest weights when no update came in
        between), the running average ("average") or the latest weights ("latest")."""
        mean = self.means.get((module_id, name))
        if mean is not None and mean[1] > 0:
            with torch.no_grad():
                torch._foreach_copy_(list(module.net(name, target=True).parameters()), mean[0])
            mean[1] = 0
            return
        from_average = self.target_copy == "average" and module.has_averages()
        update_target_network(main_net=module.net(name, average=from_average),
                              target_net=module.net(name, target=True), tau=1.0)

    # ---- checkpoints -----------------------------------------------------------------------
    def get_state(self, want) -> dict:
        """The state components that ``want(component)`` accepts."""
        state = {}
        if want(AVERAGE_COMPONENT):
            state[AVERAGE_COMPONENT] = dict(self.steps)
        if self.means and want(MEAN_COMPONENT):
            state[MEAN_COMPONENT] = {
                module_id: {name: {"updates": k, "weights": [w.detach().cpu().numpy().copy()
                                                             for w in mean]}
                            for (mid, name), (mean, k) in self.means.items() if mid == module_id}
                for module_id in {mid for mid, _ in self.means}}
        return state

    def set_state(self, state: dict, new_weights: bool, device_of) -> None:
        """Restore from a Learner state; ``new_weights``: the state sets the module's weights,
        so a mean of the old ones is stale (when none is saved it starts afresh).
        ``device_of(module_id)`` is where that module's weights live."""
        if AVERAGE_COMPONENT in state:
            self.steps = dict(state[AVERAGE_COMPONENT])
        if MEAN_COMPONENT in state or new_weights:
            self.means = {}
        for module_id, means in state.get(MEAN_COMPONENT, {}).items():
            device = device_of(module_id)
            for name, entry in means.items():
                self.means[(module_id, name)] = [
                    [torch.as_tensor(w, device=device).clone() for w in entry["weights"]],
                    int(entry["updates"])]
