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
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.ope.bootstrap import Terms, percentile_intervals

ESTIMATOR_NAMES = ("replay", "ipw", "snipw", "dm", "dr", "sndr")
#: Estimators that need ``estimated_rewards_by_reg_model``.
MODEL_BASED = ("dm", "dr", "sndr")


@dataclass(frozen=True)
class Estimate:
    """One estimate of a target policy's value (mean reward per impression)."""

    estimator: str
    value: float
    ci_low: float
    ci_high: float

    def as_obp_interval(self, alpha: float = 0.05) -> dict[str, float]:
        """OBP's ``estimate_interval`` layout: ``{'mean', '95.0% CI (lower)', '95.0% CI (upper)'}``."""
        level = 100 * (1 - alpha)
        return {"mean": self.value, f"{level}% CI (lower)": self.ci_low,
                f"{level}% CI (upper)": self.ci_high}


# ---- input checks ------------------------------------------------------------------------------
def _check(reward, action, pscore, action_dist, position, q_hat=None, need_pscore=True):
    """Validate shapes and ranges; return float/int arrays and the position index (n,)."""
    action_dist = np.asarray(action_dist, dtype=np.float64)
    if action_dist.ndim != 3:
        raise ValueError("action_dist must have shape (n_rounds, n_actions, len_list), "
                         f"got shape {action_dist.shape}")
    n, n_actions, len_list = action_dist.shape
    reward = np.asarray(reward, dtype=np.float64)
    action = np.asarray(action)
    for name, arr in (("reward", reward), ("action", action)):
        if arr.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) like action_dist's first axis, "
                             f"got {arr.shape}")
    if not np.issubdtype(action.dtype, np.integer):
        raise ValueError(f"action must hold integers, got dtype {action.dtype}")
    if n and (action.min() < 0 or action.max() >= n_actions):
        raise ValueError(f"action must be in [0, {n_actions}) (n_actions = action_dist.shape[1])")
    if not np.isfinite(reward).all():
        raise ValueError(f"reward has {int((~np.isfinite(reward)).sum())} non-finite values")
    position = np.zeros(n, dtype=np.int64) if position is None else np.asarray(position)
    if position.shape != (n,) or not np.issubdtype(position.dtype, np.integer):
        raise ValueError(f"position must be integers of shape ({n},), got {position.dtype} {position.shape}")
    if n and (position.min() < 0 or position.max() >= len_list):
        raise ValueError(f"position must be in [0, {len_list}) (len_list = action_dist.shape[2])")
    sums = action_dist[np.arange(n), :, position].sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-6):
        raise ValueError("action_dist must sum to 1 over actions at each impression's position; "
                         f"{int((~np.isclose(sums, 1.0, atol=1e-6)).sum())} rows do not")
    if need_pscore:
        pscore = np.asarray(pscore, dtype=np.float64)
        if pscore.shape != (n,):
            raise ValueError(f"pscore must have shape ({n},), got {pscore.shape}")
        bad = ~((pscore > 0) & (pscore <= 1))
        if bad.any():
            raise ValueError(f"pscore must be in (0, 1]; {int(bad.sum())} values are not")
    if q_hat is not None:
        q_hat = np.asarray(q_hat, dtype=np.float64)
        if q_hat.shape != action_dist.shape:
            raise ValueError("estimated_rewards_by_reg_model must have the shape of action_dist "
                             f"{action_dist.shape}, got {q_hat.shape}")
    return reward, action.astype(np.int64), pscore, action_dist, position.astype(np.int64), q_hat


# ---- per-impression terms ----------------------------------------------------------------------
def estimator_terms(name: str, reward, action, pscore, action_dist, position=None,
                    estimated_rewards_by_reg_model=None, lambda_: float = np.inf) -> Terms:
    """The per-impression :class:`Terms` of estimator ``name`` (see the module docstring).

    Parameters
    ----------
    name : one of ``ESTIMATOR_NAMES``
    reward, action, pscore : ndarray, shape (n,)
    action_dist, estimated_rewards_by_reg_model : ndarray, shape (n, n_actions, len_list)
    position : ndarray, shape (n,), or None
    lambda_ : clipping threshold of the importance weight (ipw and dr only), > 0
    """
    _check_name(name, lambda_)
    q_hat = estimated_rewards_by_reg_model
    if name in MODEL_BASED and q_hat is None:
        raise ValueError(f"estimator {name!r} needs estimated_rewards_by_reg_model")
    arrays = _check(reward, action, pscore, action_dist, position, q_hat,
                    need_pscore=name not in ("replay", "dm"))
    return _terms(name, *arrays, lambda_)


def _check_name(name: str, lambda_: float) -> None:
    if name not in ESTIMATOR_NAMES:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATOR_NAMES)}, got {name!r}")
    if not lambda_ > 0:
        raise ValueError(f"lambda_ must be > 0, got {lambda_!r}")


def _terms(name, reward, action, pscore, action_dist, position, q_hat, lambda_) -> Terms:
    """Terms of estimator ``name`` on validated arrays (see :func:`_check`)."""
    n = reward.shape[0]
    rows = np.arange(n)
    pi_logged = action_dist[rows, action, position]             # pi_e(a_i | x_i)
    zeros, ones = np.zeros(n), np.ones(n)
    if name == "replay":
        return Terms(zeros, pi_logged * reward, pi_logged)
    if name in MODEL_BASED:
        pi_all = action_dist[rows, :, position]                 # (n, n_actions)
        q_all = q_hat[rows, :, position]
        direct = (pi_all * q_all).sum(axis=1)                   # q_hat(x_i, pi_e)
        if name == "dm":
            return Terms(direct, zeros, ones)
    w = pi_logged / pscore
    if name == "ipw":
        return Terms(zeros, np.minimum(w, lambda_) * reward, ones)
    if name == "snipw":
        return Terms(zeros, w * reward, w)
    residual = reward - q_hat[rows, action, position]           # r_i - q_hat(x_i, a_i)
    if name == "dr":
        return Terms(direct, np.minimum(w, lambda_) * residual, ones)
    return Terms(direct, w * residual, w)                       # sndr


def _estimate(name, reward, action, pscore, action_dist, position, q_hat, lambda_, rng,
              n_bootstrap, alpha) -> Estimate:
    terms = estimator_terms(name, reward, action, pscore, action_dist, position, q_hat, lambda_)
    ci = (percentile_intervals([terms], rng, n_bootstrap, alpha)[0] if rng is not None
          else (np.nan, np.nan))
    return Estimate(name, terms.value, float(ci[0]), float(ci[1]))


# ---- the estimators ------------------------------------------------------------------------------
def replay(reward, action, action_dist, position=None, *, rng: np.random.Generator | None = None,
           n_bootstrap: int = 1000, alpha: float = 0.05, **_) -> Estimate:
    """Replay (Li, Chu, Langford, Wang 2011): the mean reward of the impressions on which the
    target would have chosen the logged action.

    ``V = sum_i pi_e(a_i|x_i) r_i / sum_i pi_e(a_i|x_i)``; for a deterministic target this is the
    mean reward over matching impressions. Unbiased only under uniform logging over a fixed
    number of actions. ``pscore`` is not used (accepted and ignored, like OBP's ``**kwargs``).
    """
    return _estimate("replay", reward, action, None, action_dist, position, None, np.inf, rng,
                     n_bootstrap, alpha)


def ipw(reward, action, pscore, action_dist, position=None, *, lambda_: float = np.inf,
        rng: np.random.Generator | None = None, n_bootstrap: int = 1000, alpha: float = 0.05,
        **_) -> Estimate:
    """Inverse propensity weighting (IPS): ``V = 1/n sum_i min(w_i, lambda_) r_i`` with
    ``w_i = pi_e(a_i|x_i) / pscore_i``. Unbiased when ``lambda_ = inf`` and every action the
    target can choose has ``pscore > 0``; clipping trades variance for a downward bias."""
    return _estimate("ipw", reward, action, pscore, action_dist, position, None, lambda_, rng,
                     n_bootstrap, alpha)


def snipw(reward, action, pscore, action_dist, position=None, *,
          rng: np.random.Generator | None = None, n_bootstrap: int = 1000, alpha: float = 0.05,
          **_) -> Estimate:
    """Self-normalised IPW (Swaminathan & Joachims 2015): ``V = sum_i w_i r_i / sum_i w_i``.
    Biased in small samples, consistent, and never outside the range of observed rewards."""
    return _estimate("snipw", reward, action, pscore, action_dist, position, None, np.inf, rng,
                     n_bootstrap, alpha)


def dm(reward, action, action_dist, estimated_rewards_by_reg_model, position=None, *,
       rng: np.random.Generator | None = None, n_bootstrap: int = 1000, alpha: float = 0.05,
       **_) -> Estimate:
    """Direct method: ``V = 1/n sum_i sum_a pi_e(a|x_i) q_hat(x_i, a)``. Low variance, biased
    by whatever the reward model gets wrong. ``reward`` and ``action`` are only validated."""
    return _estimate("dm", reward, action, None, action_dist, position,
                     estimated_rewards_by_reg_model, np.inf, rng, n_bootstrap, alpha)


def dr(reward, action, pscore, action_dist, estimated_rewards_by_reg_model, position=None, *,
       lambda_: float = np.inf, rng: np.random.Generator | None = None, n_bootstrap: int = 1000,
       alpha: float = 0.05, **_) -> Estimate:
    """Doubly robust (Dudik et al. 2014):
    ``V = 1/n sum_i [q_hat(x_i, pi_e) + min(w_i, lambda_) (r_i - q_hat(x_i, a_i))]``.
    Unbiased if the propensities are right (whatever the model); equals dm if the model
    predicts every logged reward exactly, and ipw if the model is zero."""
    return _estimate("dr", reward, action, pscore, action_dist, position,
                     estimated_rewards_by_reg_model, lambda_, rng, n_bootstrap, alpha)


def sndr(reward, action, pscore, action_dist, estimated_rewards_by_reg_model, position=None, *,
         rng: np.random.Generator | None = None, n_bootstrap: int = 1000, alpha: float = 0.05,
         **_) -> Estimate:
    """Self-normalised doubly robust (OBP's form):
    ``V = 1/n sum_i q_hat(x_i, pi_e) + sum_i w_i (r_i - q_hat(x_i, a_i)) / sum_i w_i``."""
    return _estimate("sndr", reward, action, pscore, action_dist, position,
                     estimated_rewards_by_reg_model, np.inf, rng, n_bootstrap, alpha)


ESTIMATORS = {"replay": replay, "ipw": ipw, "snipw": snipw, "dm": dm, "dr": dr, "sndr": sndr}


def estimate_all(reward, action, pscore, action_dists: dict[str, np.ndarray], position=None,
                 estimated_rewards_by_reg_model=None, *, estimators=ESTIMATOR_NAMES,
                 lambda_: float = np.inf, rng: np.random.Generator | None = None,
                 n_bootstrap: int = 1000, alpha: float = 0.05) -> dict[str, dict[str, Estimate]]:
    """Every estimator for every target policy, intervals on one shared set of resamples.

    Parameters
    ----------
    action_dists : {policy name: ndarray, shape (n, n_actions, len_list)}
    estimated_rewards_by_reg_model : ndarray, shape (n, n_actions, len_list), or None to skip
        the model-based estimators
    estimators : names to compute, a subset of ``ESTIMATOR_NAMES``
    lambda_ : clipping threshold of the importance weight for ipw and dr

    Returns
    -------
    {policy name: {estimator name: Estimate}}
    """
    names = [e for e in estimators if estimated_rewards_by_reg_model is not None or e not in MODEL_BASED]
    for e in names:
        _check_name(e, lambda_)
    keys, terms = [], []
    for policy, dist in action_dists.items():
        # Validate once per policy, then compute every estimator's terms from the same arrays.
        arrays = _check(reward, action, pscore, dist, position, estimated_rewards_by_reg_model)
        for e in names:
            keys.append((policy, e))
            terms.append(_terms(e, *arrays, lambda_))
    cis = (percentile_intervals(terms, rng, n_bootstrap, alpha) if rng is not None
           else np.full((len(terms), 2), np.nan))
    out: dict[str, dict[str, Estimate]] = {p: {} for p in action_dists}
    for (policy, e), t, ci in zip(keys, terms, cis):
        out[policy][e] = Estimate(e, t.value, float(ci[0]), float(ci[1]))
    return out
