"""The theory parameters of EMPO phase 2, declared once.

``EmpoParams`` holds every number the equations (4)-(9) depend on. The learner's targets, the
exact solver, the config fields, the command line's ``solve`` flags and the evaluation all
take their parameters from this class, so a parameter exists in one place only.

    (4)  gamma_r         robot discount
    (5)  beta_r          concentration of the power-law policy; neg_q_r_floor bounds -Q_r below
    (6)  gamma_h         human discount
    (7)  zeta            risk aversion; x_h_floor bounds X_h below (keeps U_r finite)
    (8)  xi, eta         inequality and intertemporal aversion
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import NamedTuple, Optional

from rllib_empo.theory import equations as eq


class Range(NamedTuple):
    """An interval of allowed values: ``lo``/``hi`` (None = unbounded), each open or closed."""

    lo: float
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, v) -> bool:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            return False
        above = v > self.lo if self.lo_open else v >= self.lo
        below = self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)
        return above and below

    @property
    def text(self) -> str:
        if self.hi is None:
            return f"a finite float {'>' if self.lo_open else '>='} {self.lo:g}"
        return (f"a finite float in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}"
                f"{')' if self.hi_open else ']'}")


#: name -> (default, allowed range, one-line description), in the order of the equations.
PARAMS = {
    "beta_r": (10.0, Range(0.0), "Nominal robot policy concentration beta_r of eq. (5) (0 = uniform)."),
    "gamma_h": (0.99, Range(0.0, 1.0, lo_open=True), "Human discount factor gamma_h of eq. (6)."),
    "gamma_r": (0.99, Range(0.0, 1.0, lo_open=True), "Robot discount factor gamma_r of eq. (4)."),
    "zeta": (2.0, Range(1.0), "Risk aversion exponent zeta of eq. (7)."),
    "xi": (1.0, Range(1.0), "Inequality aversion exponent xi of eq. (8)."),
    "eta": (1.1, Range(1.0), "Intertemporal exponent eta of eq. (8)."),
    "x_h_floor": (eq.DEFAULT_X_H_FLOOR, Range(0.0, 1.0, True, True),
                  "Lower bound of X_h (keeps U_r finite); shared with the exact solver."),
    "neg_q_r_floor": (eq.DEFAULT_NEG_Q_R_FLOOR, Range(0.0, 1.0, True, True),
                      "Lower bound of -Q_r in the power law (5) (Q_r = 0 where every successor "
                      "is terminal); shared with the exact solver."),
}


@dataclass(frozen=True)
class EmpoParams:
    """The parameters of eqs. (4)-(9); every value is checked against :data:`PARAMS`
    (a ``ValueError`` names the field and its allowed range)."""

    beta_r: float = PARAMS["beta_r"][0]
    gamma_h: float = PARAMS["gamma_h"][0]
    gamma_r: float = PARAMS["gamma_r"][0]
    zeta: float = PARAMS["zeta"][0]
    xi: float = PARAMS["xi"][0]
    eta: float = PARAMS["eta"][0]
    x_h_floor: float = PARAMS["x_h_floor"][0]
    neg_q_r_floor: float = PARAMS["neg_q_r_floor"][0]

    def __post_init__(self):
        for name, (_, allowed, _) in PARAMS.items():
            value = getattr(self, name)
            if not allowed.contains(value):
                raise ValueError(f"{name} must be {allowed.text}, got {value!r}")
            object.__setattr__(self, name, float(value))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_config(cls, cfg) -> "EmpoParams":
        """From any object with the same-named attributes (an EmpoConfig, argparse args)."""
        return cls(**{n: getattr(cfg, n) for n in cls.names()})

    def as_dict(self) -> dict:
        return {n: getattr(self, n) for n in self.names()}

    def policy(self, q_r, beta_r: Optional[float] = None):
        """Eq. (5) at ``beta_r`` (default: the nominal one)."""
        return eq.power_law_policy(q_r, self.beta_r if beta_r is None else beta_r,
                                   self.neg_q_r_floor)
