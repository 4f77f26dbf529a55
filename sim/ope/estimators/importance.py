"""Estimators that reweight the logged rewards: replay, ipw (IPS), snipw.

With the importance weight ``w_i = pi_e(a_i | x_i) / pscore_i``:

=========  =========================================================================
replay     sum_i pi_e(a_i|x_i) r_i / sum_i pi_e(a_i|x_i)        (Li et al. 2011)
ipw        1/n sum_i min(w_i, lambda_) r_i                      (IPS; lambda_ = inf: no clipping)
snipw      sum_i w_i r_i / sum_i w_i                            (self-normalised IPS)
=========  =========================================================================
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.ope.bootstrap import Terms
from sim.ope.estimators.base import OffPolicyData, OffPolicyEstimator
from sim.schema import param


@dataclass(frozen=True)
class Replay(OffPolicyEstimator):
    """Replay (Li, Chu, Langford, Wang 2011): the mean reward of the impressions on which the
    target would have chosen the logged action.

    ``V = sum_i pi_e(a_i|x_i) r_i / sum_i pi_e(a_i|x_i)``; for a deterministic target this is the
    mean reward over matching impressions (OBP's ``ReplayMethod``); a stochastic target weights
    each impression by its expected match. Unbiased only under uniform logging over a fixed
    number of actions. ``pscore`` is not used.
    """

    name = "replay"
    needs_pscore = False

    def _estimate_terms(self, data: OffPolicyData) -> Terms:
        pi = data.target_logged
        return Terms(np.zeros(len(data)), pi * data.reward, pi)


@dataclass(frozen=True)
class IPW(OffPolicyEstimator):
    """Inverse propensity weighting (IPS), OBP's ``InverseProbabilityWeighting``:
    ``V = 1/n sum_i min(w_i, lambda_) r_i``. Unbiased when ``lambda_ = inf`` and every action the
    target can choose has ``pscore > 0``; clipping trades variance for a downward bias."""

    name = "ipw"
    lambda_: float = param(math.inf, gt=0, allow_inf=True,
                           doc="clipping threshold of the importance weight (inf: no clipping)")

    def _estimate_round_rewards(self, data: OffPolicyData) -> np.ndarray:
        return np.minimum(data.weight, self.lambda_) * data.reward


@dataclass(frozen=True)
class SNIPW(OffPolicyEstimator):
    """Self-normalised IPW (Swaminathan & Joachims 2015): ``V = sum_i w_i r_i / sum_i w_i``.
    Biased in small samples, consistent, and never outside the range of observed rewards."""

    name = "snipw"

    def _estimate_terms(self, data: OffPolicyData) -> Terms:
        w = data.weight
        return Terms(np.zeros(len(data)), w * data.reward, w)
