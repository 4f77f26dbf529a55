"""The reward model of the direct and doubly robust estimators, fitted on the logs.

A multiplicative (log-link) model of the expected reward of showing arm ``a`` in context ``x``::

    q_hat(x, a) = exp(b + sum_f beta_f[x_f] + gamma[group(a)] + theta[a])

with categorical context features ``x_f`` (in the simulator: row, column, familiar), an arm
group (the title) and the arm (the artwork). It is fitted by Poisson maximum a posteriori with a
Gamma(s, s) prior (mean 1) on every multiplier ``exp(beta)``, ``exp(gamma)``, ``exp(theta)``, by
cyclic closed-form block updates -- each level's multiplier becomes
``(observed + s) / (expected without it + s)`` -- so an artwork seen a few times stays near its
title's rate, a title seen rarely near the overall rate. With rare binary rewards (a take fraction
of ~1 %) the Poisson likelihood is the Bernoulli one to first order, and the position effect of
the simulator is exactly multiplicative (attention = (row+1)^-a (column+1)^-a).

What the model cannot see is the member: tastes are hidden ground truth and the logs hold no
member features, so q_hat is a population average per (artwork, position, familiarity). That is
what makes the direct method biased for personalised targets (the oracle) and is what doubly
robust estimation corrects.

:func:`cross_fitted_rewards` fits on all folds but one and predicts the held-out fold, so an
impression's own reward never enters its prediction (the cross-fitting OBP recommends for DR).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np


class RewardModel:
    """Multiplicative reward model; see the module docstring.

    Parameters
    ----------
    prior_strength : s > 0, pseudo-count of expected rewards in each multiplier's Gamma(s, s) prior
    n_iter : number of cycles of block updates
    max_rate : predictions are clipped to [0, max_rate] (1 for a probability)
    """

    def __init__(self, prior_strength: float = 3.0, n_iter: int = 15, max_rate: float = 1.0):
        if not prior_strength > 0:
            raise ValueError(f"prior_strength must be > 0, got {prior_strength!r}")
        if not (isinstance(n_iter, int) and n_iter >= 1):
            raise ValueError(f"n_iter must be an integer >= 1, got {n_iter!r}")
        self.prior_strength = float(prior_strength)
        self.n_iter = n_iter
        self.max_rate = float(max_rate)

    def fit(self, arm: np.ndarray, reward: np.ndarray, features: Mapping[str, np.ndarray],
            arm_group: np.ndarray | None = None) -> "RewardModel":
        """Fit on logged impressions.

        Parameters
        ----------
        arm : ndarray, shape (n,), int >= 0 -- the logged arm (flat artwork id or action)
        reward : ndarray, shape (n,), >= 0
        features : {name: ndarray, shape (n,), int >= 0} -- categorical context features
        arm_group : ndarray, shape (n_arms,), int >= 0, optional -- group of every arm (title)
        """
        arm = np.asarray(arm, dtype=np.int64)
        reward = np.asarray(reward, dtype=np.float64)
        s = self.prior_strength
        n_arms = int(arm.max()) + 1 if arm.size else 1
        if arm_group is not None:
            arm_group = np.asarray(arm_group, dtype=np.int64)
            n_arms = max(n_arms, arm_group.size)
        blocks: dict[str, np.ndarray] = {k: np.asarray(v, dtype=np.int64) for k, v in features.items()}
        if arm_group is not None:
            blocks["__group__"] = arm_group[arm]
        blocks["__arm__"] = arm
        self.effects_ = {k: np.zeros(int(v.max()) + 1 if v.size else 1) for k, v in blocks.items()}
        self.arm_group_ = arm_group
        total = reward.sum()
        # Start from the overall rate; the cycles then refine one block at a time.
        self.intercept_ = float(np.log(max(total, 1e-12) / max(reward.size, 1)))
        eta = np.full(reward.size, self.intercept_)
        for _ in range(self.n_iter):
            for name, level in blocks.items():
                beta = self.effects_[name]
                size = beta.size
                observed = np.bincount(level, weights=reward, minlength=size)
                # Expected rewards of each level with this block's own effect taken out.
                expected = np.bincount(level, weights=np.exp(eta - beta[level]), minlength=size)
                new = np.log((observed + s) / (expected + s))
                eta += (new - beta)[level]
                self.effects_[name] = new
            # The intercept carries the overall rate exactly (no prior on it).
            shift = np.log(max(total, 1e-12) / np.exp(eta).sum()) if reward.size else 0.0
            self.intercept_ += shift
            eta += shift
        return self

    def predict(self, arms: np.ndarray, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """Expected reward of each candidate arm.

        Parameters
        ----------
        arms : ndarray, shape (n, K), int -- candidate arms per impression, ``-1`` for none
        features : {name: ndarray, shape (n,)} -- the features given to :meth:`fit`

        Returns
        -------
        ndarray, shape (n, K): q_hat, 0 where ``arms`` is -1.
        """
        arms = np.asarray(arms, dtype=np.int64)
        valid = arms >= 0
        a = np.maximum(arms, 0)
        eta = np.full(arms.shape, self.intercept_)
        for name, v in features.items():
            eta += _lookup(self.effects_[name], np.asarray(v, dtype=np.int64))[:, None]
        if self.arm_group_ is not None:
            eta += _lookup(self.effects_["__group__"], self.arm_group_[np.minimum(a, self.arm_group_.size - 1)])
        eta += _lookup(self.effects_["__arm__"], a)
        return np.where(valid, np.minimum(np.exp(eta), self.max_rate), 0.0)


def _lookup(effect: np.ndarray, level: np.ndarray) -> np.ndarray:
    """``effect[level]``, 0 (the prior mean) for levels never seen in fitting."""
    seen = level < effect.size
    return np.where(seen, effect[np.minimum(level, effect.size - 1)], 0.0)


def cross_fitted_rewards(arm: np.ndarray, reward: np.ndarray, features: Mapping[str, np.ndarray],
                         candidates: np.ndarray, arm_group: np.ndarray | None = None, *,
                         n_folds: int = 2, rng: np.random.Generator | None = None,
                         model: RewardModel | None = None) -> np.ndarray:
    """``estimated_rewards_by_reg_model`` for every candidate of every impression, cross-fitted.

    Parameters
    ----------
    arm, reward : ndarray, shape (n,) -- logged arm and reward
    features : {name: ndarray, shape (n,)} -- categorical context features
    candidates : ndarray, shape (n, K) -- candidate arms per impression (``-1`` padded); column k
        is action k
    arm_group : ndarray, shape (n_arms,), optional
    n_folds : 1 fits and predicts in sample; k > 1 predicts each fold from a model fitted on
        the others
    rng : assigns impressions to folds (None: by index modulo ``n_folds``)
    model : an unfitted :class:`RewardModel` with the hyperparameters to use

    Returns
    -------
    ndarray, shape (n, K, 1): OBP's layout with ``len_list = 1`` (the candidate's position is
    one of the features, so one slot per impression suffices).
    """
    if not (isinstance(n_folds, int) and n_folds >= 1):
        raise ValueError(f"n_folds must be an integer >= 1, got {n_folds!r}")
    model = model or RewardModel()
    n = len(reward)
    out = np.zeros(np.shape(candidates), dtype=np.float64)
    if n_folds == 1 or n < 2 * n_folds:
        m = _clone(model).fit(arm, reward, features, arm_group)
        return m.predict(candidates, features)[:, :, None]
    fold = (rng.permutation(n) if rng is not None else np.arange(n)) % n_folds
    for k in range(n_folds):
        train, test = fold != k, fold == k
        m = _clone(model).fit(arm[train], reward[train], {f: v[train] for f, v in features.items()},
                              arm_group)
        out[test] = m.predict(candidates[test], {f: v[test] for f, v in features.items()})
    return out[:, :, None]


def _clone(model: RewardModel) -> RewardModel:
    return RewardModel(model.prior_strength, model.n_iter, model.max_rate)
