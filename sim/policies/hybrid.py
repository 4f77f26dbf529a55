"""The hybrid linear model: shared weights on candidate features plus one intercept per artwork.

Li et al. (2010) call it *hybrid*: ``reward ~ z . beta + theta_a`` where ``z`` are the shared
candidate features (:func:`sim.features.candidate_features`) and ``theta_a`` is the artwork's own
effect (an id embedding of dimension one: what the shared features cannot see, such as an image's
appeal). Both LinUCB and linear Thompson sampling use it. The joint ridge posterior (penalty
``l2`` on the shared weights, ``l2_artwork`` on the intercepts) follows from additive sums by
the Schur complement::

    c_a   = 1 / (l2_artwork + n_a)          n_a: impressions of artwork a
    A0    = l2 I + S_zz - sum_a c_a s_a s_a^T   s_a: sum of z over impressions of a
    b0    = S_zr - sum_a c_a r_a s_a            r_a: summed reward of a
    beta  = A0^-1 b0,  Cov(beta) = v^2 A0^-1
    theta_a | beta ~ N(c_a (r_a - s_a . beta), v^2 c_a)

A new artwork (n_a = 0) starts at ``theta_a = 0``: its score is the shared model's, so a new
title's images get a sensible prior from their first impression. ``l2_artwork`` is in units of
impressions: an intercept moves away from zero once an image has about that many impressions.
It must be large when rewards are rare: the prior standard deviation of an intercept is
``v / sqrt(l2_artwork)``, which should match how much images really differ (a few tenths of a
percent of take fraction), not the scale of the shared weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

from sim.metrics import scatter_add_rows
from sim.policies.linear_algebra import cholesky


@dataclass
class HybridStats:
    """Additive sums for the hybrid model (k shared features, one intercept per artwork).

    Dense over every artwork: the model's accumulated state. A serving window's statistics are
    a :class:`HybridIncrement`, which touches only the artworks shown (adding one to this keeps
    it dense)."""

    zz: np.ndarray         # (k, k)
    zr: np.ndarray         # (k,)
    arm_n: np.ndarray      # (n_artworks,)
    arm_z: np.ndarray      # (n_artworks, k)
    arm_r: np.ndarray      # (n_artworks,)

    def __add__(self, o) -> "HybridStats":
        if isinstance(o, HybridIncrement):
            arm_n, arm_z, arm_r = self.arm_n.copy(), self.arm_z.copy(), self.arm_r.copy()
            arm_n[o.arms] += o.arm_n   # o.arms is unique: plain fancy-index addition is exact
            arm_z[o.arms] += o.arm_z
            arm_r[o.arms] += o.arm_r
            return HybridStats(self.zz + o.zz, self.zr + o.zr, arm_n, arm_z, arm_r)
        return HybridStats(self.zz + o.zz, self.zr + o.zr, self.arm_n + o.arm_n,
                           self.arm_z + o.arm_z, self.arm_r + o.arm_r)

    @property
    def dim(self) -> int:
        return int(self.zr.shape[0])

    @staticmethod
    def zeros(k: int, n_artworks: int) -> "HybridStats":
        return HybridStats(np.zeros((k, k)), np.zeros(k), np.zeros(n_artworks),
                           np.zeros((n_artworks, k)), np.zeros(n_artworks))

    @staticmethod
    def from_feedback(z: np.ndarray, artwork: np.ndarray, reward: np.ndarray,
                      n_artworks: int) -> "HybridIncrement":
        """Sums over impressions: ``z`` (n, k) features of the shown artworks, ``artwork`` (n,)."""
        arms, inverse = np.unique(artwork, return_inverse=True)
        arm_z = np.zeros((arms.size, z.shape[1]))
        scatter_add_rows(arm_z, inverse, z)
        return HybridIncrement(z.T @ z, z.T @ reward, arms,
                               np.bincount(inverse, minlength=arms.size).astype(np.float64),
                               arm_z, np.bincount(inverse, weights=reward, minlength=arms.size))


@dataclass
class HybridIncrement:
    """The same sums for the artworks a batch touched (sorted unique ``arms``): memory grows
    with impressions served, not with the catalog, so the log pipeline can queue many."""

    zz: np.ndarray         # (k, k)
    zr: np.ndarray         # (k,)
    arms: np.ndarray       # (m,) artwork ids, sorted, unique
    arm_n: np.ndarray      # (m,)
    arm_z: np.ndarray      # (m, k)
    arm_r: np.ndarray      # (m,)

    @property
    def dim(self) -> int:
        return int(self.zr.shape[0])

    def __add__(self, o):
        if isinstance(o, HybridStats):
            return o + self
        arms, inverse = np.unique(np.concatenate([self.arms, o.arms]), return_inverse=True)
        arm_z = np.zeros((arms.size, self.zz.shape[0]))
        scatter_add_rows(arm_z, inverse, np.concatenate([self.arm_z, o.arm_z]))
        return HybridIncrement(self.zz + o.zz, self.zr + o.zr, arms,
                               np.bincount(inverse, np.concatenate([self.arm_n, o.arm_n]), arms.size),
                               arm_z,
                               np.bincount(inverse, np.concatenate([self.arm_r, o.arm_r]), arms.size))


@dataclass
class HybridPosterior:
    beta: np.ndarray       # (k,) posterior mean of the shared weights
    chol: np.ndarray       # (k, k) lower Cholesky factor of A0
    A0_inv: np.ndarray     # (k, k)
    arm_c: np.ndarray      # (A,) 1 / (l2 + n_a)
    theta: np.ndarray      # (A,) posterior mean of the artwork intercepts

    @staticmethod
    def fit(s: HybridStats, l2: float, l2_artwork: float, what: str) -> "HybridPosterior":
        c = 1.0 / (l2_artwork + s.arm_n)
        A0 = l2 * np.eye(s.zr.shape[0]) + s.zz - (s.arm_z * c[:, None]).T @ s.arm_z
        b0 = s.zr - (s.arm_z * (c * s.arm_r)[:, None]).sum(axis=0)
        chol = cholesky(A0, f"{what}: the shared Gram matrix A0")
        beta = linalg.cho_solve((chol, True), b0)
        A0_inv = linalg.cho_solve((chol, True), np.eye(A0.shape[0]))
        return HybridPosterior(beta, chol, A0_inv, c, c * (s.arm_r - s.arm_z @ beta))

    def draw(self, s: HybridStats, scale: float, n_draws: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Joint posterior draws: shared weights (k, D) and artwork intercepts (A, D)."""
        z = rng.standard_normal((self.beta.shape[0], n_draws))
        beta = self.beta[:, None] + scale * linalg.solve_triangular(self.chol.T, z, lower=False)
        mean = self.arm_c[:, None] * (s.arm_r[:, None] - s.arm_z @ beta)
        theta = mean + scale * np.sqrt(self.arm_c)[:, None] * rng.standard_normal((self.arm_c.size, n_draws))
        return beta, theta
