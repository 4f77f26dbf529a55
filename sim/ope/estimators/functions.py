"""The built-in estimators as functions in OBP's argument order (one call, one :class:`Estimate`).

``ipw(reward, action, pscore, action_dist, position=None, lambda_=..., rng=...)`` is
``IPW(lambda_).estimate(...)``; a new estimator needs no function here (use its class, or
:func:`sim.ope.estimators.estimate_all`).
"""
from __future__ import annotations

import math

import numpy as np

from sim.ope.estimators.base import Estimate
from sim.ope.estimators.importance import IPW, SNIPW, Replay
from sim.ope.estimators.model_based import DM, DR, SNDR


def replay(reward, action, action_dist, position=None, *, rng: np.random.Generator | None = None,
           n_bootstrap: int = 1000, alpha: float = 0.05, **_) -> Estimate:
    """:class:`~sim.ope.estimators.importance.Replay`; ``pscore`` is accepted and ignored."""
    return Replay().estimate(reward, action, action_dist, None, position, rng=rng,
                             n_bootstrap=n_bootstrap, alpha=alpha)


def ipw(reward, action, pscore, action_dist, position=None, *, lambda_: float = math.inf,
        rng: np.random.Generator | None = None, n_bootstrap: int = 1000, alpha: float = 0.05,
        **_) -> Estimate:
    """:class:`~sim.ope.estimators.importance.IPW`."""
    return IPW(lambda_).estimate(reward, action, action_dist, pscore, position, rng=rng,
                                 n_bootstrap=n_bootstrap, alpha=alpha)


def snipw(reward, action, pscore, action_dist, position=None, *,
          rng: np.random.Generator | None = None, n_bootstrap: int = 1000, alpha: float = 0.05,
          **_) -> Estimate:
    """:class:`~sim.ope.estimators.importance.SNIPW`."""
    return SNIPW().estimate(reward, action, action_dist, pscore, position, rng=rng,
                            n_bootstrap=n_bootstrap, alpha=alpha)


def dm(reward, action, action_dist, estimated_rewards_by_reg_model, position=None, *,
       rng: np.random.Generator | None = None, n_bootstrap: int = 1000, alpha: float = 0.05,
       **_) -> Estimate:
    """:class:`~sim.ope.estimators.model_based.DM`; ``pscore`` is accepted and ignored."""
    return DM().estimate(reward, action, action_dist, None, position, estimated_rewards_by_reg_model,
                         rng=rng, n_bootstrap=n_bootstrap, alpha=alpha)


def dr(reward, action, pscore, action_dist, estimated_rewards_by_reg_model, position=None, *,
       lambda_: float = math.inf, rng: np.random.Generator | None = None, n_bootstrap: int = 1000,
       alpha: float = 0.05, **_) -> Estimate:
    """:class:`~sim.ope.estimators.model_based.DR`."""
    return DR(lambda_).estimate(reward, action, action_dist, pscore, position,
                                estimated_rewards_by_reg_model, rng=rng, n_bootstrap=n_bootstrap,
                                alpha=alpha)


def sndr(reward, action, pscore, action_dist, estimated_rewards_by_reg_model, position=None, *,
         rng: np.random.Generator | None = None, n_bootstrap: int = 1000, alpha: float = 0.05,
         **_) -> Estimate:
    """:class:`~sim.ope.estimators.model_based.SNDR`."""
    return SNDR().estimate(reward, action, action_dist, pscore, position,
                           estimated_rewards_by_reg_model, rng=rng, n_bootstrap=n_bootstrap,
                           alpha=alpha)
