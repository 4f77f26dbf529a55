"""Power and minimum detectable effect (MDE) of an A/B test of artwork policies.

The test is the one :mod:`sim.metrics` reports: a two-sided z test on the log of the ratio of a
cell's metric to the control's, with members as the randomisation unit. For a ratio metric such as
take fraction (quality plays / impressions) one member's impressions are correlated, so the
variance is the binomial one times a *design effect* (Kish)::

    Var(R) = deff * p (1 - p) / (N * m),      deff = 1 + (m - 1) * icc

with N members, m impressions per member and icc the intra-member correlation of outcomes. The
standard error of log(R_treatment / R_control) is then ``sqrt(cv2 / N_t + cv2 / N_c)`` with
``cv2 = deff (1 - p) / (p m)``, and the smallest lift detected with probability ``power`` at
level ``alpha`` is::

    MDE = exp((z_{1 - alpha/2} + z_{power}) * se_log) - 1

(the far tail of the two-sided test is ignored, as is usual; :meth:`PlannedTest.power_at` counts
both). The icc comes from a pilot run: its delta-method standard error gives the pilot's design
effect, ``deff = se^2 / (p (1 - p) / impressions)``, and ``icc = (deff - 1) / (m - 1)``. With the
icc fixed, a longer test (larger m) helps less than more members: se_log^2 -> icc (1-p) / p * (1/N_t + 1/N_c).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.special import ndtr, ndtri   # = scipy.stats.norm.cdf / ppf, a faster import


def design_effect(icc: float, impressions_per_member: float) -> float:
    """Kish design effect of ``impressions_per_member`` correlated impressions per member."""
    return 1.0 + max(impressions_per_member - 1.0, 0.0) * icc


def pilot_icc(rate: float, se: float, impressions: float, members: float) -> tuple[float, float]:
    """(design effect, icc) of a ratio metric measured in a pilot cell.

    ``se`` is the cell's delta-method standard error (``metrics.json``: ``cells.<cell>.<metric>.se``),
    ``impressions`` and ``members`` the cell's totals.
    """
    if not (0 < rate < 1) or not se > 0 or impressions <= 0 or members <= 0:
        raise ValueError(f"pilot needs 0 < rate < 1, se > 0 and positive counts, got rate={rate}, "
                         f"se={se}, impressions={impressions}, members={members}")
    deff = se ** 2 / (rate * (1 - rate) / impressions)
    m = impressions / members
    icc = (deff - 1.0) / (m - 1.0) if m > 1 else 0.0
    return deff, min(max(icc, 0.0), 1.0)


def _z(alpha: float, power: float) -> float:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")
    return float(ndtri(1 - alpha / 2) + ndtri(power))


@dataclass(frozen=True)
class PlannedTest:
    """A planned two-cell test of a ratio metric.

    Parameters
    ----------
    baseline_rate : the control cell's rate (e.g. take fraction 0.016)
    members : members in the test, both cells together
    impressions_per_member : mean impressions per member over the test's duration
    icc : intra-member correlation of outcomes (0: independent impressions)
    treatment_share : share of the test's members in the treatment cell
    alpha : two-sided significance level
    power : probability of detecting a true lift equal to the MDE
    """

    baseline_rate: float
    members: float
    impressions_per_member: float
    icc: float = 0.0
    treatment_share: float = 0.5
    alpha: float = 0.05
    power: float = 0.8

    def __post_init__(self):
        checks = [("baseline_rate", 0 < self.baseline_rate < 1, "in (0, 1)"),
                  ("members", self.members > 0, "> 0"),
                  ("impressions_per_member", self.impressions_per_member > 0, "> 0"),
                  ("icc", 0 <= self.icc <= 1, "in [0, 1]"),
                  ("treatment_share", 0 < self.treatment_share < 1, "in (0, 1)")]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{name} must be {allowed}, got {getattr(self, name)}")
        _z(self.alpha, self.power)

    @property
    def design_effect(self) -> float:
        return design_effect(self.icc, self.impressions_per_member)

    def se_log_lift(self) -> float:
        """Standard error of log(R_treatment / R_control) under no effect."""
        p, m = self.baseline_rate, self.impressions_per_member
        cv2 = self.design_effect * (1 - p) / (p * m)
        n_t = self.members * self.treatment_share
        n_c = self.members - n_t
        return math.sqrt(cv2 / n_t + cv2 / n_c)

    def mde(self) -> float:
        """Minimum detectable relative lift (0.05 = +5 %)."""
        return math.expm1(_z(self.alpha, self.power) * self.se_log_lift())

    def power_at(self, lift: float) -> float:
        """Probability that the two-sided test rejects when the true lift is ``lift``."""
        se = self.se_log_lift()
        z = float(ndtri(1 - self.alpha / 2))
        shift = math.log1p(lift) / se
        return float(ndtr(-(z - shift)) + ndtr(-z - shift))

    def members_for(self, lift: float) -> float:
        """Members (both cells) needed to detect ``lift`` with the planned power."""
        if lift <= -1 or lift == 0:
            raise ValueError(f"lift must be > -1 and non-zero, got {lift}")
        scale = (self.se_log_lift() * _z(self.alpha, self.power) / abs(math.log1p(lift))) ** 2
        return self.members * scale


def mde_from_standard_errors(rate_control: float, se_control: float, rate_treatment: float,
                             se_treatment: float, alpha: float = 0.05, power: float = 0.8,
                             member_scale: float = 1.0) -> float:
    """MDE of a test shaped like an observed one (same metric, same duration), with
    ``member_scale`` times as many members in every cell. Works for any metric whose cells report
    an estimate and a delta-method standard error, ratio or per-member mean."""
    if not (rate_control > 0 and rate_treatment > 0 and member_scale > 0):
        return float("nan")
    se_log = math.sqrt((se_control / rate_control) ** 2 + (se_treatment / rate_treatment) ** 2)
    return math.expm1(_z(alpha, power) * se_log / math.sqrt(member_scale))
