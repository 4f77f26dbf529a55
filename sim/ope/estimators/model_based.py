"""Estimators that use a reward model ``q_hat`` (``estimated_rewards_by_reg_model``): dm, dr, sndr.

With ``q_hat(x_i, pi_e) = sum_a pi_e(a | x_i) q_hat(x_i, a)`` and ``w_i = pi_e(a_i|x_i) / pscore_i``:

=========  ===================================================================================
dm         1/n sum_i q_hat(x_i, pi_e)                           (direct method)
dr         1/n sum_i [q_hat(x_i, pi_e) + min(w_i, lambda_) (r_i - q_hat(x_i, a_i))]
sndr       1/n sum_i q_hat(x_i, pi_e) + sum_i w_i (r_i - q_hat(x_i, a_i)) / sum_i w_i
=========  ===================================================================================
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.ope.bootstrap import Terms
from sim.ope.estimators.base import OffPolicyData, OffPolicyEstimator
from sim.schema import param


@dataclass(frozen=True)
class DM(OffPolicyEstimator):
    """Direct method: ``V = 1/n sum_i sum_a pi_e(a|x_i) q_hat(x_i, a)``. Low variance, biased
    by whatever the reward model gets wrong. ``reward`` and ``action`` are only validated."""

    name = "dm"
    needs_reward_model = True
    needs_pscore = False

    def _estimate_round_rewards(self, data: OffPolicyData) -> np.ndarray:
        return data.q_target


@dataclass(frozen=True)
class DR(OffPolicyEstimator):
    """Doubly robust (Dudik et al. 2014):
    ``V = 1/n sum_i [q_hat(x_i, pi_e) + min(w_i, lambda_) (r_i - q_hat(x_i, a_i))]``.
    Unbiased if the propensities are right (whatever the model); equals dm if the model
    predicts every logged reward exactly, and ipw if the model is zero."""

    name = "dr"
    needs_reward_model = True
    lambda_: float = param(math.inf, gt=0, allow_inf=True,
                           doc="clipping threshold of the importance weight (inf: no clipping)")

    def _estimate_terms(self, data: OffPolicyData) -> Terms:
        # Kept as two terms (not their sum) so the bootstrap columns match dm's and ipw's.
        residual = data.reward - data.q_logged
        return Terms(data.q_target, np.minimum(data.weight, self.lambda_) * residual, np.ones(len(data)))


@dataclass(frozen=True)
class SNDR(OffPolicyEstimator):
    """Self-normalised doubly robust (OBP's form):
    ``V = 1/n sum_i q_hat(x_i, pi_e) + sum_i w_i (r_i - q_hat(x_i, a_i)) / sum_i w_i``."""

    name = "sndr"
    needs_reward_model = True

    def _estimate_terms(self, data: OffPolicyData) -> Terms:
        w = data.weight
        return Terms(data.q_target, w * (data.reward - data.q_logged), w)
