"""Off-policy estimators of a target policy's value from logged bandit feedback.

Calling convention and names follow Open Bandit Pipeline (``obp.ope``), so numbers can be compared
one for one with OBP's estimators given the same arrays:

* ``reward`` (n,) -- observed reward r_i of the logged action;
* ``action`` (n,) int -- logged action a_i in ``[0, n_actions)``;
* ``pscore`` (n,) -- the logging policy's probability pi_b(a_i | x_i) of the logged action, in (0, 1];
* ``action_dist`` (n, n_actions, len_list) -- the target policy's probabilities pi_e(a | x_i)
  at each position; rows sum to 1 over actions;
* ``position`` (n,) int or None -- the slot index of each impression (None: all at 0);
* ``estimated_rewards_by_reg_model`` (n, n_actions, len_list) -- a reward model's q_hat(x_i, a).

With the importance weight ``w_i = pi_e(a_i | x_i, p_i) / pscore_i`` and
``q_hat(x_i, pi_e) = sum_a pi_e(a | x_i, p_i) q_hat(x_i, a, p_i)``:

=========  ===================================================================================
replay     sum_i pi_e(a_i|x_i) r_i / sum_i pi_e(a_i|x_i)        (Li et al. 2011)
ipw        1/n sum_i min(w_i, lambda) r_i                       (IPS; lambda = inf: no clipping)
snipw      sum_i w_i r_i / sum_i w_i                            (self-normalised IPS)
dm         1/n sum_i q_hat(x_i, pi_e)                           (direct method)
dr         1/n sum_i [q_hat(x_i, pi_e) + min(w_i, lambda) (r_i - q_hat(x_i, a_i))]
sndr       1/n sum_i q_hat(x_i, pi_e) + sum_i w_i (r_i - q_hat(x_i, a_i)) / sum_i w_i
=========  ===================================================================================

These equal OBP's ``ReplayMethod`` (for a deterministic target), ``InverseProbabilityWeighting``,
``SelfNormalizedInverseProbabilityWeighting``, ``DirectMethod``, ``DoublyRobust`` and
``SelfNormalizedDoublyRobust`` point estimates. Two deliberate differences:

* ``replay`` for a *stochastic* target weights each impression by the probability that the
  target would have chosen the logged action (the expected match indicator); OBP counts only
  impressions where that probability is exactly 1. Replay assumes uniform logging over a
  *fixed* number of actions (Li et al.); with pools of different sizes its matches over-sample
  small pools, and under non-uniform logging it is biased -- ``experiments/ope_accuracy.py``
  shows both.
* The 95 % interval resamples impressions and recomputes the estimator (percentile bootstrap,
  :mod:`sim.ope.bootstrap`); OBP resamples per-round rewards and averages them, which is the same
  for ipw, dm and dr but not for the self-normalised estimators. The returned ``value`` is the
  estimate on the full log, not the bootstrap mean.

Every estimator returns an :class:`Estimate`. Pass a seeded ``numpy.random.Generator`` as ``rng``
to get the interval; without one the interval is NaN (point estimate only).

**One class each** (:mod:`~sim.ope.estimators.base` has the contract): the built-ins live in
:mod:`~sim.ope.estimators.importance` and :mod:`~sim.ope.estimators.model_based` and register
themselves in :data:`ESTIMATORS` by ``name``; a new built-in is one class in a module of this
package, a user's estimator one class anywhere, selected by import path::

    estimate_all(..., estimators=["ipw", "my_package.MyEstimator"])
    python -m experiments.evaluate <run dir> --policy fixed --estimators ipw,my_package.MyEstimator

``sim.testing.check_estimator`` checks one against the contract. The functions ``replay``,
``ipw``, ... are the built-ins in OBP's argument order.
"""
from __future__ import annotations

from sim.ope.estimators.base import (ESTIMATORS, Estimate, OffPolicyData, OffPolicyEstimator,
                                     build_estimator, estimate_all)
# The built-ins, imported in the order of ESTIMATOR_NAMES (tables and charts list them so);
# any other module of this package is found by the registry.
from sim.ope.estimators.importance import IPW, SNIPW, Replay
from sim.ope.estimators.model_based import DM, DR, SNDR
from sim.ope.estimators.functions import dm, dr, ipw, replay, sndr, snipw

#: Names of the built-in estimators (read from the registry).
ESTIMATOR_NAMES: tuple[str, ...] = tuple(ESTIMATORS.names())
#: Built-ins that need ``estimated_rewards_by_reg_model``.
MODEL_BASED: tuple[str, ...] = tuple(n for n, c in ESTIMATORS.classes.items() if c.needs_reward_model)

__all__ = ["DM", "DR", "ESTIMATORS", "ESTIMATOR_NAMES", "Estimate", "IPW", "MODEL_BASED",
           "OffPolicyData", "OffPolicyEstimator", "Replay", "SNDR", "SNIPW", "build_estimator", "dm",
           "dr", "estimate_all", "ipw", "replay", "sndr", "snipw"]
