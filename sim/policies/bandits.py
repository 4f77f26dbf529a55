"""Non-personalized bandits: one arm per (title, artwork), learned from logged rewards.

All share additive per-artwork counts (:class:`ArtworkCounts`): impressions and summed reward per
flat artwork id, so a model trained on two log shards is the model trained on their union.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.kernels.choice import argmax_counts
from sim.policies.base import (ArtworkCounts, ArtworkPolicy, DecisionBatch, FeedbackBatch,
                               argmax_uniform_ties, uniform_probabilities)
from sim.schema import param


class CountingPolicy(ArtworkPolicy):
    """Shared machinery: per-artwork counts with a Beta(prior_alpha, prior_beta) prior."""

    @dataclass(frozen=True)
    class Params(ArtworkPolicy.Params):
        prior_alpha: float = param(1.0, gt=0.0, doc="Beta prior: pseudo-rewards per artwork")
        prior_beta: float = param(50.0, gt=0.0, doc="Beta prior: pseudo-misses (weak prior near a 2 % take fraction)")

    def reset(self, catalog) -> None:
        super().reset(catalog)
        self.counts_ = ArtworkCounts.zeros(catalog.n_artworks)
        self._deploy()

    def sufficient_stats(self, feedback: FeedbackBatch) -> ArtworkCounts:
        n = self.catalog_.n_artworks
        return ArtworkCounts(
            np.bincount(feedback.artwork, minlength=n).astype(np.float64),
            np.bincount(feedback.artwork, weights=feedback.reward(self.reward), minlength=n))

    def update(self, stats: ArtworkCounts) -> None:
        self.counts_ = self.counts_ + stats
        self.model_version_ += 1   # before _deploy: its Monte Carlo stream is keyed by version
        self._deploy()

    def posterior_mean(self) -> np.ndarray:
        """Posterior mean reward per flat artwork id, shape (n_artworks,)."""
        c = self.counts_
        return (c.rewards + self.prior_alpha) / (c.shows + self.prior_alpha + self.prior_beta)

    def _deploy(self) -> None:
        """Precompute what serving needs from the frozen model (called on every update)."""

    def _gather(self, per_artwork: np.ndarray, batch: DecisionBatch) -> np.ndarray:
        return per_artwork[np.maximum(batch.candidates, 0)]


class EpsilonGreedyPolicy(CountingPolicy):
    """Greedy on the posterior mean with probability 1 - epsilon, uniform otherwise (exact)."""

    name = "epsilon_greedy"

    @dataclass(frozen=True)
    class Params(CountingPolicy.Params):
        epsilon: float = param(0.1, ge=0.0, le=1.0, doc="share of uniform random choices")

    def _deploy(self) -> None:
        self.mean_ = self.posterior_mean()

    def probabilities(self, batch: DecisionBatch) -> np.ndarray:
        greedy = argmax_uniform_ties(self._gather(self.mean_, batch), batch.mask)
        return self.epsilon * uniform_probabilities(batch.mask) + (1 - self.epsilon) * greedy


class ThompsonPolicy(CountingPolicy):
    """Beta-Bernoulli Thompson sampling per (title, artwork).

    Between deploys the posterior is frozen, so the policy's choice distribution per title is
    fixed: P(artwork is the argmax of one posterior draw). It is estimated once per deploy from
    ``n_draws`` joint posterior draws per title, and serving samples from it. The logged
    propensity is exactly the probability with which the executed policy chose; it equals
    Thompson's ideal argmax probability up to Monte Carlo error of order 1/sqrt(n_draws)
    (``propensity_is_estimated`` is recorded in metrics.json).
    """

    name = "thompson"
    propensity_is_estimated = True

    @dataclass(frozen=True)
    class Params(CountingPolicy.Params):
        n_draws: int = param(256, ge=1, doc="posterior draws per title per deploy for the choice distribution")

    def __init__(self, *args, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed = int(seed)   # root of the deploy-time Monte Carlo stream (set by the engine)

    def _deploy(self) -> None:
        cat = self.catalog_
        pool, valid = cat.pool, cat.pool >= 0
        a = self.counts_.rewards + self.prior_alpha
        b = self.counts_.shows - self.counts_.rewards + self.prior_beta
        # The deploy-time draws come from their own stream keyed by model version, so the
        # choice distribution is a deterministic function of (seed, counts).
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [self.seed, 0x7415, self.model_version_])))
        probs = np.zeros(cat.n_artworks)
        T, K = pool.shape
        chunk = max(1, (1 << 22) // (K * self.n_draws))
        for lo in range(0, T, chunk):  # title chunks: bounded memory, vectorized inside
            p, v = pool[lo:lo + chunk], valid[lo:lo + chunk]
            ids = p[v]                       # draw only real artworks, not the padding
            draws = rng.beta(a[ids][:, None], b[ids][:, None], size=(ids.size, self.n_draws))
            wins = argmax_counts(draws, v)                                    # (chunk, K)
            probs[ids] = (wins / self.n_draws)[v]
        self.argmax_prob_ = probs

    def probabilities(self, batch: DecisionBatch) -> np.ndarray:
        probs = np.where(batch.mask, self._gather(self.argmax_prob_, batch), 0.0)
        # Rows offering only part of the title's pool (e.g. logged feedback whose n_candidates
        # varies by row): the argmax is taken over the offered images only.
        partial = batch.n_candidates() < self.catalog_.pool_size[batch.title]
        if partial.any():
            probs[partial] = self._subset_probabilities(batch.candidates[partial], batch.mask[partial])
        return probs

    def _subset_probabilities(self, candidates: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """P(argmax of one posterior draw) over each row's offered images, shape (n, K).
        One Monte Carlo estimate per distinct offer (rows with the same offer share it)."""
        offers, inverse = np.unique(np.where(mask, candidates, -1), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        a = self.counts_.rewards + self.prior_alpha
        b = self.counts_.shows - self.counts_.rewards + self.prior_beta
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [self.seed, 0x7416, self.model_version_])))
        U, K = offers.shape
        out = np.zeros((U, K))
        chunk = max(1, (1 << 22) // (K * self.n_draws))
        for lo in range(0, U, chunk):
            p = offers[lo:lo + chunk]
            v = p >= 0
            ids = p[v]
            draws = rng.beta(a[ids][:, None], b[ids][:, None], size=(ids.size, self.n_draws))
            out[lo:lo + chunk] = argmax_counts(draws, v) / self.n_draws
        return out[inverse]


class UCB1Policy(CountingPolicy):
    """UCB1 per title: mean + c * sqrt(2 ln N_title / n_artwork); untried artworks first.
    Deterministic given the model; ties share probability equally (exact propensities)."""

    name = "ucb1"

    # Not CountingPolicy.Params: UCB1 uses raw means, no prior.
    @dataclass(frozen=True)
    class Params(ArtworkPolicy.Params):
        # 0.1, not the textbook 1: rewards are rare (take fraction ~2 %), and a bonus of order 1
        # would swamp the means for the whole run.
        c: float = param(0.1, ge=0.0, doc="width of the confidence bonus")

    def _deploy(self) -> None:
        c = self.counts_
        n = c.shows
        title_n = np.bincount(self.catalog_.artwork_title, weights=n, minlength=self.catalog_.n_titles)
        mean = np.divide(c.rewards, n, out=np.zeros_like(n), where=n > 0)
        bonus = self.c * np.sqrt(2.0 * np.log(np.maximum(title_n[self.catalog_.artwork_title], 1.0))
                                 / np.maximum(n, 1.0))
        self.ucb_ = np.where(n > 0, mean + bonus, np.inf)

    def probabilities(self, batch: DecisionBatch) -> np.ndarray:
        return argmax_uniform_ties(self._gather(self.ucb_, batch), batch.mask)


class SoftmaxPolicy(CountingPolicy):
    """Boltzmann exploration: p proportional to exp(posterior mean / temperature) (exact)."""

    name = "softmax"

    @dataclass(frozen=True)
    class Params(CountingPolicy.Params):
        temperature: float = param(0.005, gt=0.0, doc="Boltzmann temperature (reward units)")

    def _deploy(self) -> None:
        self.mean_ = self.posterior_mean()

    def probabilities(self, batch: DecisionBatch) -> np.ndarray:
        z = np.where(batch.mask, self._gather(self.mean_, batch) / self.temperature, -np.inf)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)
