"""Offline (off-policy) evaluation of artwork policies on logged impressions, checked against the
simulator's ground truth.

Modules, one idea each:

* :mod:`~sim.ope.estimators` -- one class per estimator (replay, ipw, snipw, dm, dr, sndr, or
  your own subclass of :class:`~sim.ope.estimators.OffPolicyEstimator`) in Open Bandit
  Pipeline's calling convention, each with a bootstrap 95 % interval (:mod:`~sim.ope.bootstrap`);
* :mod:`~sim.ope.estimators.slate` -- page-level (slate) estimators in OBP's slate convention
  (sips, iips, rips, cascade-dr, pi), bootstrap over pages; :mod:`~sim.ope.pages` -- a log's
  pages with their exact page propensities, a target's page probabilities and the simulator's
  page-level truth; :mod:`~sim.ope.slate_testing` -- a synthetic slate bandit with a known value
  and ``check_slate_estimator``;
* :mod:`~sim.ope.reward_model` -- the cross-fitted reward model behind dm, dr and sndr;
* :mod:`~sim.ope.data` -- logs in and out as OBP's ``bandit_feedback`` dict (simulator runs,
  native CSV/Parquet, the Open Bandit Dataset layout), refusing malformed logs
  (:mod:`~sim.ope.validate`);
* :mod:`~sim.ope.runs` -- a run directory's config, world and impression log;
* :mod:`~sim.ope.logged` -- a log as OPE uses it, and target policies built, trained and queried on it;
* :mod:`~sim.ope.groundtruth` -- a policy's exact expected value on the logged contexts, and its
  online value in the closed loop.

Quick start::

    from sim.ope import load_bandit_feedback, ipw
    bf = load_bandit_feedback("random/all/all.csv")        # Open Bandit Dataset layout
    action_dist = ...                                      # (n, n_actions, len_list), your policy
    est = ipw(bf["reward"], bf["action"], bf["pscore"], action_dist, bf["position"],
              rng=np.random.default_rng(0))
    est.value, est.ci_low, est.ci_high

or, on a simulator run, ``python -m experiments.evaluate <run dir> --policy fixed --policy thompson``.
"""
from sim.ope.data import (bandit_feedback_from_log, export_bandit_feedback, load_bandit_feedback,
                          save_bandit_feedback)
from sim.ope.estimators import (ESTIMATOR_NAMES, ESTIMATORS, Estimate, OffPolicyEstimator,
                                build_estimator, dm, dr, estimate_all, ipw, replay, sndr, snipw)
from sim.ope.estimators.slate import (SLATE_ESTIMATOR_NAMES, SLATE_ESTIMATORS, SlateEstimator,
                                      build_slate_estimator, estimate_slates)
from sim.ope.validate import LogValidationError

__all__ = ["ESTIMATOR_NAMES", "ESTIMATORS", "Estimate", "LogValidationError", "OffPolicyEstimator",
           "SLATE_ESTIMATORS", "SLATE_ESTIMATOR_NAMES", "SlateEstimator", "build_slate_estimator",
           "estimate_slates",
           "bandit_feedback_from_log", "build_estimator", "dm", "dr", "estimate_all",
           "export_bandit_feedback", "ipw",
           "load_bandit_feedback", "replay", "save_bandit_feedback", "sndr", "snipw"]
