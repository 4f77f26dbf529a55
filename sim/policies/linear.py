"""Contextual artwork policies over a shared linear model of candidate features.

Every policy here scores a candidate artwork from :func:`sim.features.candidate_features` --
the member's observable context crossed with the artwork's theme -- with one weight vector
shared by all titles, so what is learned on old titles transfers to a new title's images.

Learning uses additive ridge statistics (:class:`GramStats`: ``A += X^T X``, ``b += X^T r``);
the posterior is ``N(mu, v^2 A^-1)`` with ``A = l2 I + sum x x^T`` and ``mu = A^-1 b``.

* ``lints``: linear Thompson sampling. At each deploy ``n_draws`` models are drawn from the
  posterior through its Cholesky factor (``theta = mu + v L^-T z``, so the draw does not depend on
  the BLAS); each page uses one of them, picked uniformly. The choice distribution of an
  impression is therefore the share of the ``n_draws`` models under which a candidate wins: the
  logged propensity is exact for the executed policy, which approximates ideal Thompson
  sampling with an ``n_draws``-model posterior sample (flagged ``propensity_is_estimated``).
* ``linear_epsilon_greedy`` and ``linear_softmax``: greedy / Boltzmann over ``mu`` (exact).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

from sim.kernels.choice import best_candidates
from sim.policies.hybrid import HybridPosterior, HybridStats
from sim.policies.linear_algebra import cholesky
from sim.features import (candidate_feature_width, candidate_features, interaction_scores,
                          theme_scores)
from sim.policies.base import (ArtworkPolicy, DecisionBatch, FeedbackBatch, Selection,
                               argmax_uniform_ties, uniform_probabilities)
from sim.schema import param


LINTS_MODES = ("hybrid", "shared")


@dataclass
class GramStats:
    """Additive ridge statistics over feature vectors of the chosen artworks."""

    A: np.ndarray   # (d, d)  sum x x^T
    b: np.ndarray   # (d,)    sum x r
    n: float        # impressions

    def __add__(self, other: "GramStats") -> "GramStats":
        return GramStats(self.A + other.A, self.b + other.b, self.n + other.n)

    @property
    def dim(self) -> int:
        return int(self.b.shape[0])

    @staticmethod
    def zeros(d: int) -> "GramStats":
        return GramStats(np.zeros((d, d)), np.zeros(d), 0.0)


class LinearPolicy(ArtworkPolicy):
    """Shared machinery: features, ridge statistics, the posterior mean ``mu_``."""


    @dataclass(frozen=True)
    class Params(ArtworkPolicy.Params):
        l2: float = param(1.0, gt=0.0, doc="ridge prior precision of the shared weights")

    def reset(self, catalog) -> None:
        super().reset(catalog)
        self.stats_: GramStats | None = None     # sized on first use: d depends on the context
        self.mu_: np.ndarray | None = None

    # ---- features ----------------------------------------------------------------------------
    def features(self, batch: DecisionBatch) -> np.ndarray:
        """Candidate features, shape (n, K, d)."""
        if batch.context is None:
            raise ValueError(f"policy {self.name!r} needs DecisionBatch.context (sim.features)")
        return candidate_features(batch.context, batch.candidates, self.catalog_.artwork_theme,
                                  self.catalog_.n_genres)

    def _ensure(self, d: int) -> None:
        if self.stats_ is None:
            self.stats_ = GramStats.zeros(d)
            self._deploy()

    def chosen_features(self, feedback: FeedbackBatch) -> np.ndarray:
        d = feedback.decisions
        phi = candidate_features(d.context, feedback.artwork[:, None], self.catalog_.artwork_theme,
                                 self.catalog_.n_genres)
        return phi[:, 0, :].astype(np.float64)

    def sufficient_stats(self, feedback: FeedbackBatch) -> GramStats:
        x = self.chosen_features(feedback)
        r = feedback.reward(self.reward)
        return GramStats(x.T @ x, x.T @ r, float(len(feedback)))

    def update(self, stats) -> None:
        self._ensure(stats.dim)
        self.stats_ = self.stats_ + stats
        self.model_version_ += 1   # before _deploy: its random stream is keyed by version
        self._deploy()

    def _precision(self) -> np.ndarray:
        return self.l2 * np.eye(self.stats_.b.shape[0]) + self.stats_.A

    def _fit(self) -> None:
        """Posterior from the statistics: Cholesky factor of the precision and the mean."""
        self.chol_ = cholesky(self._precision(), f"{self.name}: the Gram matrix l2*I + X^T X")
        self.mu_ = linalg.cho_solve((self.chol_, True), self.stats_.b)

    def _deploy(self) -> None:
        """Precompute what serving needs from the frozen model (called on every update)."""
        self._fit()

    def mean_scores(self, batch: DecisionBatch) -> np.ndarray:
        """Posterior-mean score per candidate, shape (n, K)."""
        phi = self.features(batch)
        self._ensure(phi.shape[2])
        return phi @ self.mu_.astype(np.float32)


class LinearEpsilonGreedy(LinearPolicy):
    """Greedy on the ridge mean with probability 1 - epsilon, uniform otherwise (exact)."""

    name = "linear_epsilon_greedy"

    @dataclass(frozen=True)
    class Params(LinearPolicy.Params):
        epsilon: float = param(0.1, ge=0.0, le=1.0, doc="share of uniform random choices")

    def probabilities(self, batch: DecisionBatch) -> np.ndarray:
        greedy = argmax_uniform_ties(self.mean_scores(batch), batch.mask, atol=1e-9)
        return self.epsilon * uniform_probabilities(batch.mask) + (1 - self.epsilon) * greedy


class LinearSoftmax(LinearPolicy):
    """Boltzmann over ridge-mean scores: ``p ~ exp(score / temperature)`` (exact)."""

    name = "linear_softmax"

    @dataclass(frozen=True)
    class Params(LinearPolicy.Params):
        temperature: float = param(0.005, gt=0.0, doc="Boltzmann temperature (reward units)")

    def probabilities(self, batch: DecisionBatch) -> np.ndarray:
        z = np.where(batch.mask, self.mean_scores(batch).astype(np.float64) / self.temperature, -np.inf)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)


class SampledPosteriorPolicy(LinearPolicy):
    """Thompson sampling with a posterior sample of ``n_draws`` models per deploy; each page
    (visit) uses one model, chosen uniformly. Subclasses define the posterior."""

    propensity_is_estimated = True

    @dataclass(frozen=True)
    class Params(LinearPolicy.Params):
        n_draws: int = param(16, ge=1, doc="posterior models drawn per deploy; each page uses one of them")

    def __init__(self, *args, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed = int(seed)   # root of the deploy-time posterior draws (set by the engine)

    def posterior_scale(self) -> float:
        """Multiplier of the posterior standard deviation (exploration)."""
        raise NotImplementedError

    def _draw_rng(self) -> np.random.Generator:
        # Keyed by model version: the posterior sample is a deterministic function of the model.
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [self.seed, 0x1175, self.model_version_])))

    def _deploy(self) -> None:
        self._fit()
        self._draw()

    def _draw(self) -> None:
        """The deploy's posterior sample (from ``mu_`` and ``chol_``) and its per-artwork table."""
        z = self._draw_rng().standard_normal((self.mu_.shape[0], self.n_draws))
        # theta = mu + s L^-T z has covariance s^2 (L L^T)^-1: the posterior, drawn through its
        # Cholesky factor so that the draws do not depend on the BLAS.
        self.draws_ = (self.mu_[:, None] + self.posterior_scale()
                       * linalg.solve_triangular(self.chol_.T, z, lower=False)).astype(np.float32)
        self._arm_table()

    def winners(self, batch: DecisionBatch) -> np.ndarray:
        """Index of the best candidate under each posterior draw, shape (n, n_draws)."""
        if batch.context is None:
            raise ValueError(f"policy {self.name!r} needs DecisionBatch.context (sim.features)")
        self._ensure(candidate_feature_width(batch.context.shape[1], self.catalog_.n_genres))
        scores = interaction_scores(batch.context, batch.candidates, self.catalog_.artwork_theme,
                                    self.catalog_.n_genres, self.draws_)         # (D, n, K)
        # Plus each candidate's per-artwork part (-inf on padding), then the argmax: compiled
        # (it does not check bounds, so the ids are checked here, as np.take did).
        cand = batch.candidates
        if cand.size and (cand.max() >= self.arm_table_.shape[1] - 1 or cand.min() < -1):
            raise IndexError(f"candidate artwork ids must be in [-1, {self.arm_table_.shape[1] - 1}), "
                             f"got [{cand.min()}, {cand.max()}]")
        return best_candidates(scores, self.arm_table_, cand)

    def _arm_table(self, per_artwork: np.ndarray | None = None) -> None:
        """Per deploy: each artwork's member-independent score under each draw, (D, A + 1).

        The theme block (and the hybrid intercepts, ``per_artwork`` (A, D)); the last column is
        -inf, so padding candidates (index -1) never win."""
        cat = self.catalog_
        table = np.full((self.n_draws, cat.n_artworks + 1), -np.inf, dtype=np.float32)
        table[:, :-1] = theme_scores(cat.artwork_theme, cat.n_genres, self.draws_)
        if per_artwork is not None:
            table[:, :-1] += per_artwork.T
        self.arm_table_ = table

    def _probabilities_from(self, winners: np.ndarray, K: int) -> np.ndarray:
        n = winners.shape[0]
        flat = (np.arange(n)[:, None] * K + winners).ravel()
        return np.bincount(flat, minlength=n * K).reshape(n, K) / self.n_draws

    def probabilities(self, batch: DecisionBatch) -> np.ndarray:
        return self._probabilities_from(self.winners(batch), batch.mask.shape[1])

    def select(self, batch: DecisionBatch, rng: np.random.Generator) -> Selection:
        win = self.winners(batch)
        probs = self._probabilities_from(win, batch.mask.shape[1])
        page = batch.page_index()
        # One posterior model per page: impressions of a page share the draw.
        model = rng.integers(0, self.n_draws, size=int(page.max()) + 1 if page.size else 0)[page]
        rows = np.arange(len(batch))
        action = win[rows, model]
        return Selection(action, batch.candidates[rows, action], probs[rows, action])


class LinTSPolicy(SampledPosteriorPolicy):
    """Linear Thompson sampling (Agrawal & Goyal 2013), posterior scale ``v``.

    ``mode: hybrid`` (default) adds an intercept per artwork to the shared model (the hybrid
    model of :mod:`sim.policies.hybrid`): it learns what the shared features cannot see about an
    image (its appeal), while a new image starts from the shared model's prior. ``mode: shared``
    is the plain linear model ``N(mu, v^2 A^-1)``.
    """

    name = "lints"

    @dataclass(frozen=True)
    class Params(SampledPosteriorPolicy.Params):
        v: float = param(0.1, ge=0.0, doc="posterior scale: N(mu, v^2 A^-1)")
        mode: str = param("hybrid", choices=LINTS_MODES,
                          doc="hybrid: shared model + per-image intercept; shared: shared model only")
        l2_artwork: float = param(100.0, gt=0.0, doc="ridge precision of the per-image intercepts (in impressions)")

    def posterior_scale(self) -> float:
        return self.v

    def _ensure(self, d: int) -> None:
        if self.stats_ is None and self.mode == "hybrid":
            self.stats_ = HybridStats.zeros(d, self.catalog_.n_artworks)
            self._deploy()
        super()._ensure(d)

    def sufficient_stats(self, feedback: FeedbackBatch):
        if self.mode == "shared":
            return super().sufficient_stats(feedback)
        return HybridStats.from_feedback(self.chosen_features(feedback), feedback.artwork,
                                         feedback.reward(self.reward), self.catalog_.n_artworks)

    def _deploy(self) -> None:
        if self.mode == "shared":
            return super()._deploy()
        post = HybridPosterior.fit(self.stats_, self.l2, self.l2_artwork, "lints (hybrid)")
        self.mu_, self.theta_ = post.beta, post.theta
        beta, theta = post.draw(self.stats_, self.v, self.n_draws, self._draw_rng())
        self.draws_ = beta.astype(np.float32)                                   # (k, D)
        self.arm_draws_ = theta.astype(np.float32)                              # (A, D)
        self._arm_table(self.arm_draws_)


class LogisticTSPolicy(SampledPosteriorPolicy):
    """Logistic Thompson sampling with a Laplace approximation (Chapelle & Li 2011).

    The posterior is ``N(m, Q^-1)``. Statistics are the gradient and Hessian of the log
    likelihood at the model that served the impressions, ``g = sum (r - p) x`` and
    ``H = sum p (1 - p) x x^T`` (additive); a deploy takes one Newton step from the prior,
    ``Q <- Q + H``, ``m <- m + Q^-1 g``, damped so that no coefficient moves by more than
    ``max_step`` per deploy. Statistics computed under an older model are applied as
    they are (the usual stale-gradient approximation between deploys).
    """

    name = "logistic_ts"

    @dataclass(frozen=True)
    class Params(SampledPosteriorPolicy.Params):
        exploration: float = param(1.0, ge=0.0, doc="multiplies the posterior standard deviation")
        max_step: float = param(1.0, gt=0.0, doc="largest move of a coefficient per deploy (damped Newton step)")

    def reset(self, catalog) -> None:
        super().reset(catalog)
        self.m_: np.ndarray | None = None

    def _ensure(self, d: int) -> None:
        if self.m_ is None:
            # Start at a logit near a 2 % base rate so the first gradients are informative.
            self.m_ = np.zeros(d)
            self.m_[0] = np.log(0.02 / 0.98)
        super()._ensure(d)

    def sufficient_stats(self, feedback: FeedbackBatch) -> GramStats:
        x = self.chosen_features(feedback)
        self._ensure(x.shape[1])
        r = feedback.reward(self.reward)
        p = 1.0 / (1.0 + np.exp(-(x @ self.m_)))
        w = p * (1 - p)
        # A holds the Hessian, b the gradient: both add across shards.
        return GramStats((x * w[:, None]).T @ x, x.T @ (r - p), float(len(feedback)))

    def update(self, stats: GramStats) -> None:
        # stats_.A accumulates the Hessian: the Laplace precision is l2 I + A (_precision).
        self._ensure(stats.dim)
        self.stats_ = self.stats_ + stats
        self._fit()
        step = linalg.cho_solve((self.chol_, True), stats.b)            # one Newton step
        # Damped: the curvature was taken at the serving model, which can be far from the data
        # early on (a full step from a 2 % start overshoots a 9 % truth five-fold).
        largest = np.abs(step).max()
        if largest > self.max_step:
            step *= self.max_step / largest
        self.m_ = self.m_ + step
        self.mu_ = self.m_
        self.model_version_ += 1
        self._draw()

    def posterior_scale(self) -> float:
        return self.exploration

    def _fit(self) -> None:
        self.chol_ = cholesky(self._precision(), "logistic_ts: the Laplace precision l2*I + H")
        self.mu_ = self.m_
