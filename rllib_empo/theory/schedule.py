"""The staged warm-up of EMPO phase 2, as pure arithmetic.

This module is the single source of warm-up truth: the config helpers, the algorithm's
training loop, the console messages, the metrics and the docs all read from
:class:`WarmupSchedule`. It imports nothing but the standard library, so it can be
tested (and reasoned about) without Ray or torch.

Units: a *step* ``t`` is the number of learner updates done so far (an int >= 0).

Stages have fixed ids 0..6 (never renumbered); a disabled or zero-length stage is simply
skipped. With cumulative ends ``E0..E5`` (see :attr:`WarmupSchedule.ends`)::

    stage 0  [0,  E0)  V_h^e only             beta_r = 0
    stage 1  [E0, E1)  + X_h   (if network)   beta_r = 0
    stage 2  [E1, E2)  + U_r   (if network)   beta_r = 0
    stage 3  [E2, E3)  + Q_r                  beta_r = 0
    stage 4  [E3, E4)  + V_r   (if network)   beta_r = 0
    stage 5  [E4, E5)  beta_r ramp-up         0 -> beta_r (normalised sigmoid)
    stage 6  [E5, oo)  full training          beta_r, learning rates may decay

:meth:`WarmupSchedule.plan` turns a step into a :class:`StepPlan`, the typed contract between
the algorithm (which counts steps) and the learner (which executes one update per plan).
Target copies are derived from the step: network n's target is refreshed after the updates
t with ``(t + 1) % interval_n == 0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

#: Network names in stage order; bit ``i`` of the active-networks mask is ``NETWORKS[i]``.
#: ``NETWORKS[i]`` is the network introduced in stage ``i`` (for i <= 4).
NETWORKS = ("v_h_e", "x_h", "u_r", "q_r", "v_r")

STAGE_NAMES = (
    "Stage 0: V_h^e only",
    "Stage 1: V_h^e + X_h",
    "Stage 2: + U_r",
    "Stage 3: + Q_r",
    "Stage 4: + V_r",
    "Stage 5: beta_r ramp-up",
    "Stage 6: full training",
)
FINAL_STAGE = 6

EpsilonSpec = Union[float, Sequence[Tuple[float, float]]]


def stage_name(stage_id: int) -> str:
    """Readable name of stage ``stage_id`` (0..6); ValueError for any other id."""
    # __index__ admits numpy ints but not floats (1.0 in range(7) would be True).
    if isinstance(stage_id, bool) or not hasattr(type(stage_id), "__index__") or not 0 <= stage_id <= FINAL_STAGE:
        raise ValueError(f"stage id must be an int in 0..{FINAL_STAGE}, got {stage_id!r}")
    return STAGE_NAMES[stage_id]


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass(frozen=True)
class StepPlan:
    """What learner update number ``step`` (0-based) does; built by :meth:`WarmupSchedule.plan`.

    Every field is required: the learner has no defaults to fall back on.
    """

    step: int
    stage: int
    active: Tuple[str, ...]          # networks trained in this update, in NETWORKS order
    beta_r: float                    # beta_r of pi_r inside the targets
    lrs: Tuple[Tuple[str, float], ...]  # (network, learning rate) for every existing network
    sync: Tuple[str, ...]            # networks whose target copy is refreshed after the update


class StageRow(NamedTuple):
    """One row of :meth:`WarmupSchedule.stage_table` (steps = learner updates)."""

    stage: int
    name: str
    start: int
    end: Optional[int]  # exclusive; None for the open-ended final stage
    networks: Tuple[str, ...]  # active networks, in NETWORKS order
    beta_r: str  # "0", "0 -> 10" or "10"
    learning_rate: str


@dataclass(frozen=True)
class WarmupSchedule:
    """Stage boundaries, active networks, beta_r ramp, learning rates, buffer clears.

    The ``warmup_*_steps`` fields are *durations* (not cumulative). A network whose
    ``*_use_network`` flag is False has no stage of its own: its duration counts as 0
    (the spec's ``__post_init__`` zeroing, done here without mutating the fields).
    All methods are O(1) in ``t``.
    """

    warmup_v_h_e_steps: int = 1000
    warmup_x_h_steps: int = 1000
    warmup_u_r_steps: int = 1000
    warmup_q_r_steps: int = 1000
    warmup_v_r_steps: int = 1000
    beta_r_rampup_steps: int = 2000
    beta_r: float = 10.0
    x_h_use_network: bool = True
    u_r_use_network: bool = False
    v_r_use_network: bool = False
    use_sqrt_lr_decay: bool = True
    lr_constant_fraction: float = 0.0
    constant_lr_then_1_over_t: bool = False
    num_training_steps: int = 100_000
    lrs: Mapping[str, float] = field(default_factory=lambda: {n: 1e-3 for n in NETWORKS}, hash=False)
    epsilon: EpsilonSpec = 0.05
    target_update_intervals: Mapping[str, int] = field(
        default_factory=lambda: {n: 100 for n in NETWORKS}, hash=False)

    def __post_init__(self):
        for name in ("warmup_v_h_e_steps", "warmup_x_h_steps", "warmup_u_r_steps",
                     "warmup_q_r_steps", "warmup_v_r_steps", "beta_r_rampup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.lr_constant_fraction <= 1.0:
            raise ValueError(f"lr_constant_fraction must be in [0, 1], got {self.lr_constant_fraction!r}")
        # Private copies, so that later edits of the caller's dict/list cannot move the
        # schedule, and so that the epsilon spec is hashable.
        object.__setattr__(self, "lrs", dict(self.lrs))
        object.__setattr__(self, "target_update_intervals",
                           {**{n: 100 for n in NETWORKS}, **dict(self.target_update_intervals)})
        for net, interval in self.target_update_intervals.items():
            if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
                raise ValueError(f"{net}_target_update_interval must be an int >= 1, got {interval!r}")
        if not isinstance(self.epsilon, (int, float)):
            points = tuple((float(s), float(v)) for s, v in self.epsilon)
            if not points or any(b[0] < a[0] for a, b in zip(points, points[1:])):
                raise ValueError(f"epsilon schedule must be non-empty with non-decreasing steps, got {self.epsilon!r}")
            object.__setattr__(self, "epsilon", points)

    @classmethod
    def from_config(cls, cfg) -> "WarmupSchedule":
        """Build from any object with the same-named attributes (e.g. an EmpoConfig);
        base learning rates come from ``cfg.lr_v_h_e``, ``cfg.lr_x_h``, ... ."""
        names = [f for f in cls.__dataclass_fields__ if f not in ("lrs", "target_update_intervals")]
        kwargs = {name: getattr(cfg, name) for name in names}
        return cls(lrs={n: getattr(cfg, f"lr_{n}") for n in NETWORKS},
                   target_update_intervals={n: getattr(cfg, f"{n}_target_update_interval")
                                            for n in NETWORKS}, **kwargs)

    @property
    def durations(self) -> Tuple[int, int, int, int, int, int]:
        """Effective lengths of stages 0..5 (disabled networks' stages are 0)."""
        return (self.warmup_v_h_e_steps, self.warmup_x_h_steps if self.x_h_use_network else 0,
                self.warmup_u_r_steps if self.u_r_use_network else 0, self.warmup_q_r_steps,
                self.warmup_v_r_steps if self.v_r_use_network else 0, self.beta_r_rampup_steps)

    @property
    def ends(self) -> Tuple[int, int, int, int, int, int]:
        """Cumulative (exclusive) ends E0..E5 of stages 0..5."""
        d = self.durations
        return tuple(sum(d[: k + 1]) for k in range(len(d)))

    def stage(self, t: int) -> int:
        """Stage id (0..6) at step ``t``: the first k with t < E_k, else 6."""
        if t < 0:
            raise ValueError(f"step must be >= 0, got {t!r}")
        for k, end in enumerate(self.ends):
            if t < end:
                return k
        return FINAL_STAGE

    stage_name = staticmethod(stage_name)  # readable name of a stage id, as a method too

    def is_in_warmup(self, t: int) -> bool:
        """True before the beta_r ramp starts (t < E4)."""
        return t < self.ends[4]

    def is_in_rampup(self, t: int) -> bool:
        """True during the beta_r ramp (E4 <= t < E5)."""
        return self.ends[4] <= t < self.ends[5]

    def is_fully_trained(self, t: int) -> bool:
        """True once warm-up and ramp are over (t >= E5)."""
        return t >= self.ends[5]

    @property
    def existing_networks(self) -> frozenset:
        """Networks that exist at all: v_h_e and q_r always, the others per flag."""
        flags = {"x_h": self.x_h_use_network, "u_r": self.u_r_use_network, "v_r": self.v_r_use_network}
        return frozenset(n for n in NETWORKS if flags.get(n, True))

    def networks_of_stage(self, stage_id: int) -> frozenset:
        """Existing networks trained in stage ``stage_id`` (each stage adds NETWORKS[id])."""
        stage_name(stage_id)  # validates the id
        return frozenset(NETWORKS[: min(stage_id, 4) + 1]) & self.existing_networks

    def active_networks(self, t: int) -> frozenset:
        """Existing networks introduced at or before ``stage(t)``."""
        return self.networks_of_stage(self.stage(t))

    def active_mask(self, t: int) -> int:
        """Bitmask of :meth:`active_networks` (bit i for NETWORKS[i])."""
        active = self.active_networks(t)
        return sum(1 << i for i, n in enumerate(NETWORKS) if n in active)

    def effective_beta_r(self, t: int) -> float:
        """0 before E4, nominal beta_r from E5 on, a normalised sigmoid in between.

        With x = (t - E4) / T: f(x) = (s(6(x - 1/2)) - s(-3)) / (s(3) - s(-3)), s the
        logistic function -- exactly 0 at E4, strictly increasing, reaching 1 at E5.
        A ramp of 0 steps jumps to beta_r at E4.
        """
        e4, e5 = self.ends[4], self.ends[5]
        if t < e4:
            return 0.0
        if t >= e5:
            return float(self.beta_r)
        x = (t - e4) / self.beta_r_rampup_steps
        lo, hi = _logistic(-3.0), _logistic(3.0)
        return float(self.beta_r) * (_logistic(6.0 * (x - 0.5)) - lo) / (hi - lo)

    @property
    def decays(self) -> bool:
        """Whether learning rates decay at all (from :attr:`decay_start` on)."""
        return bool(self.use_sqrt_lr_decay or self.constant_lr_then_1_over_t)

    @property
    def decay_start(self) -> int:
        """t0 = max(E5, floor(lr_constant_fraction * num_training_steps))."""
        # Rounding first keeps e.g. 0.29 * 100 = 28.999999999999996 from flooring to 28.
        return max(self.ends[5], math.floor(round(self.lr_constant_fraction * self.num_training_steps, 6)))

    def learning_rate(self, net: str, t: int, update_count: Optional[int] = None) -> float:
        """Learning rate of ``net`` at step ``t``.

        Constant (the base rate ``lrs[net]``) for t < t0 or without decay; from t0 on,
        ``base * (max(t0, 1) / max(u, 1)) ** p`` with u = max(update_count, t0) (u = t
        when ``update_count`` is None). In this implementation ``t`` and
        ``update_count`` both count learner updates, so callers pass only ``t``;
        ``update_count`` exists for the spec's signature (a caller that counts
        per-network updates may pass it; clamping it at t0 keeps the rate <= base).
        Continuous at t0 and never increasing in t.
        """
        if net not in self.existing_networks:
            raise ValueError(f"network {net!r} does not exist in this configuration; "
                             f"existing networks: {sorted(self.existing_networks)}")
        base = float(self.lrs[net])
        t0 = self.decay_start
        if not self.decays or t < t0:
            return base
        u = max(t if update_count is None else update_count, t0)
        p = 1.0 if self.constant_lr_then_1_over_t else 0.5
        return base * (max(t0, 1) / max(u, 1)) ** p

    def target_copies(self, t: int) -> Tuple[str, ...]:
        """Existing networks whose target copy is refreshed after update ``t``:
        those with ``(t + 1) % interval == 0``."""
        return tuple(n for n in NETWORKS if n in self.existing_networks
                     and (t + 1) % self.target_update_intervals[n] == 0)

    def plan(self, t: int) -> StepPlan:
        """The :class:`StepPlan` of learner update ``t``."""
        active = self.active_networks(t)
        return StepPlan(step=t, stage=self.stage(t),
                        active=tuple(n for n in NETWORKS if n in active),
                        beta_r=self.effective_beta_r(t),
                        lrs=tuple((n, self.learning_rate(n, t)) for n in NETWORKS
                                  if n in self.existing_networks),
                        sync=self.target_copies(t))

    @property
    def clear_points(self) -> Tuple[int, ...]:
        """Steps at which the replay buffer is cleared: E4 if some warm-up came before
        the ramp (E4 > 0), and E5 if the ramp has positive length (E5 > E4)."""
        e4, e5 = self.ends[4], self.ends[5]
        return tuple(p for p, keep in ((e4, e4 > 0), (e5, e5 > e4)) if keep)

    def stage_transitions(self) -> List[Tuple[int, str]]:
        """(step, "old name -> new name") for every step t >= 1 where the stage changes;
        these are exactly the distinct positive ends."""
        steps = sorted({e for e in self.ends if e > 0})
        return [(e, f"{stage_name(self.stage(e - 1))} -> {stage_name(self.stage(e))}") for e in steps]

    def epsilon_at(self, t: float) -> float:
        """Robot exploration epsilon at step ``t``: a constant, or piecewise-linear
        interpolation of the (step, value) points, constant outside them."""
        if isinstance(self.epsilon, (int, float)):
            return float(self.epsilon)
        points = self.epsilon
        if t <= points[0][0]:
            return points[0][1]
        for (a, va), (b, vb) in zip(points, points[1:]):
            if a <= t < b:
                return va + (t - a) / (b - a) * (vb - va)
        return points[-1][1]

    def stage_table(self) -> List[StageRow]:
        """One row per stage of positive length (the open-ended stage 6 always)."""
        starts = (0,) + self.ends
        beta = f"{self.beta_r:g}"
        rows = []
        for k in range(FINAL_STAGE + 1):
            end = self.ends[k] if k < FINAL_STAGE else None
            if end is not None and end <= starts[k]:
                continue
            nets = tuple(n for n in NETWORKS if n in self.networks_of_stage(k))
            beta_text = "0" if k < 5 else (f"0 -> {beta}" if k == 5 else beta)
            rows.append(StageRow(k, STAGE_NAMES[k], starts[k], end, nets, beta_text, self._lr_text(k)))
        return rows

    def _lr_text(self, stage_id: int) -> str:
        if stage_id < FINAL_STAGE or not self.decays:
            return "constant"
        decay = "1/t" if self.constant_lr_then_1_over_t else "1/sqrt(t)"
        return f"constant until {self.decay_start}, then {decay}"

    def format_stages_table(self, markdown: bool = True) -> str:
        """The :meth:`stage_table` as a markdown table (or aligned plain text)."""
        header = ("Stage", "Name", "Steps", "Active networks", "beta_r", "Learning rate")
        body = [(str(r.stage), r.name, f"{r.start}+" if r.end is None else f"{r.start}-{r.end}",
                 ", ".join(r.networks), r.beta_r, r.learning_rate) for r in self.stage_table()]
        if markdown:
            lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])
        widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header] + body)

    def as_dict(self, t: int) -> Dict[str, float]:
        """Scalars describing step ``t`` (stage, beta_r, mask, flags), for metrics."""
        return {
            "stage": self.stage(t),
            "effective_beta_r": self.effective_beta_r(t),
            "active_networks_mask": self.active_mask(t),
            "is_warmup": float(self.is_in_warmup(t)),
            "is_rampup": float(self.is_in_rampup(t)),
        }
