"""LinUCB (Li, Chu, Langford, Schapire 2010), in its two published forms.

* ``mode: hybrid`` -- a shared linear model of the candidate features
  (:func:`sim.features.candidate_features`) plus a per-artwork intercept. The hybrid posterior is
  the joint ridge solution, computed at each deploy from additive sums by the Schur complement
  (Li et al. 2010, Algorithm 2 with a one-dimensional arm feature ``x_a = 1``)::

      A0 = l2 I + S_zz - sum_a s_a s_a^T / (l2 + n_a)       s_a = sum of z over arm a
      beta = A0^-1 (S_zr - sum_a s_a r_a / (l2 + n_a))       r_a = sum of rewards of arm a
      theta_a = (r_a - s_a . beta) / (l2 + n_a)
      ucb = z . beta + theta_a + alpha * sqrt(z^T A0^-1 z - 2 c_a z^T u_a + c_a + c_a^2 s_a . u_a)
      with c_a = 1 / (l2 + n_a), u_a = A0^-1 s_a

* ``mode: disjoint`` -- an independent ridge model per artwork over the member's context
  ``x = [1, genre affinity, familiar]``. It cannot say anything about a new title's images
  until they are shown (no transfer); its per-artwork matrices make it a policy for small
  catalogs.

Both are deterministic given the model; ties share probability equally (exact propensities).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.features import candidate_features
from sim.policies.base import ArtworkPolicy, DecisionBatch, FeedbackBatch, argmax_uniform_ties
from sim.schema import param
from sim.policies.hybrid import HybridPosterior, HybridStats
from sim.policies.linear_algebra import check_conditioning

LINUCB_MODES = ("hybrid", "disjoint")


@dataclass
class DisjointStats:
    """Additive per-artwork ridge sums over context features x (d_x)."""

    xx: np.ndarray   # (n_artworks, d_x, d_x)
    xr: np.ndarray   # (n_artworks, d_x)

    def __add__(self, o: "DisjointStats") -> "DisjointStats":
        return DisjointStats(self.xx + o.xx, self.xr + o.xr)

    @property
    def dim(self) -> int:
        return int(self.xr.shape[1])


class LinUCBPolicy(ArtworkPolicy):
    """Upper-confidence artwork choice with a linear reward model (see module docstring)."""

    name = "linucb"

    @dataclass(frozen=True)
    class Params(ArtworkPolicy.Params):
        alpha: float = param(0.05, ge=0.0, doc="width of the confidence bonus")
        mode: str = param("hybrid", choices=LINUCB_MODES,
                          doc="hybrid: shared model + per-image intercept; disjoint: one model per image")
        l2: float = param(1.0, gt=0.0, doc="ridge prior precision")
        l2_artwork: float = param(100.0, gt=0.0,
                                  doc="hybrid only: ridge precision of the per-image intercepts (in impressions)")

    def reset(self, catalog) -> None:
        super().reset(catalog)
        self.stats_ = None   # sized on first use: the feature width depends on the context

    # ---- features ------------------------------------------------------------------------------
    def _z(self, context: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return candidate_features(context, candidates, self.catalog_.artwork_theme, self.catalog_.n_genres)

    def _x(self, context: np.ndarray) -> np.ndarray:
        G = self.catalog_.n_genres
        return np.column_stack([np.ones(context.shape[0], np.float32), context[:, :G + 1]])

    def _zeros(self, k: int):
        A = self.catalog_.n_artworks
        if self.mode == "hybrid":
            return HybridStats.zeros(k, A)
        return DisjointStats(np.zeros((A, k, k)), np.zeros((A, k)))

    def _ensure(self, k: int) -> None:
        if self.stats_ is None:
            self.stats_ = self._zeros(k)
            self._deploy()

    # ---- learning ------------------------------------------------------------------------------
    def sufficient_stats(self, feedback: FeedbackBatch):
        d = feedback.decisions
        r = feedback.reward(self.reward)
        art = feedback.artwork
        A = self.catalog_.n_artworks
        if self.mode == "hybrid":
            z = self._z(d.context, art[:, None])[:, 0, :].astype(np.float64)
            return HybridStats.from_feedback(z, art, r, A)
        x = self._x(d.context).astype(np.float64)
        k = x.shape[1]
        xx = np.zeros((A, k, k))
        np.add.at(xx, art, x[:, :, None] * x[:, None, :])
        xr = np.zeros((A, k))
        np.add.at(xr, art, x * r[:, None])
        return DisjointStats(xx, xr)

    def update(self, stats) -> None:
        self._ensure(stats.dim)
        self.stats_ = self.stats_ + stats
        self.model_version_ += 1
        self._deploy()

    def _deploy(self) -> None:
        s, l2 = self.stats_, self.l2
        if self.mode == "hybrid":
            post = HybridPosterior.fit(s, l2, self.l2_artwork, "linucb (hybrid)")
            self.beta_, self.theta_, self.A0_inv_, self.arm_c_ = post.beta, post.theta, post.A0_inv, post.arm_c
            # float64: the width is a difference of large terms that cancel as data accumulate.
            self.arm_u_ = s.arm_z @ post.A0_inv                              # (A, k) = (A0^-1 s_a)^T
            self.arm_su_ = (s.arm_z * self.arm_u_).sum(axis=1)
        else:
            k = s.xr.shape[1]
            A_arm = l2 * np.eye(k)[None] + s.xx
            # The context [1, genre affinity, familiar] is collinear (affinities sum to one), so
            # l2 alone keeps A_arm invertible: refuse a tiny l2 rather than serve noise.
            check_conditioning(A_arm, "linucb (disjoint): a per-artwork Gram matrix l2*I + X^T X")
            # float64: x^T A^-1 x cancels large terms when l2 is small (float32 widths were off
            # by 0.05 at l2 = 1e-6, against true widths of about 0.01).
            self.A_inv_ = np.linalg.inv(A_arm)                                   # (A, k, k)
            self.theta_arm_ = np.einsum("akl,al->ak", self.A_inv_, s.xr).astype(np.float32)

    def ucb(self, batch: DecisionBatch) -> np.ndarray:
        """Upper confidence bound per candidate, shape (n, K)."""
        if batch.context is None:
            raise ValueError("policy 'linucb' needs DecisionBatch.context (sim.features)")
        art = np.maximum(batch.candidates, 0)
        if self.mode == "hybrid":
            z = self._z(batch.context, batch.candidates).astype(np.float64)   # (n, K, k)
            self._ensure(z.shape[2])
            mean = z @ self.beta_.astype(np.float32) + self.theta_[art]
            zAz = np.einsum("nkd,nkd->nk", z @ self.A0_inv_, z)
            zu = np.einsum("nkd,nkd->nk", z, self.arm_u_[art])
            c = self.arm_c_[art]
            var = zAz - 2 * c * zu + c + c * c * self.arm_su_[art]
        else:
            x = self._x(batch.context)                                        # (n, k)
            self._ensure(x.shape[1])
            mean = np.einsum("nkd,nd->nk", self.theta_arm_[art], x)
            x64 = x.astype(np.float64)
            var = np.einsum("nd,nkde,ne->nk", x64, self.A_inv_[art], x64)
        return mean + self.alpha * np.sqrt(np.maximum(var, 0.0))

    def probabilities(self, batch: DecisionBatch) -> np.ndarray:
        return argmax_uniform_ties(self.ucb(batch), batch.mask, atol=1e-9)
