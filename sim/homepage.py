"""The homepage: rankers that score titles for a member, and the grid layout.

A page is ``rows x columns`` titles: a *top picks* row (the ranker's best titles) followed by
genre rows (the member's strongest genres by the ranker's estimate, each holding that genre's
best titles). A title appears at most once per page. Rankers other than ``oracle`` learn only
from logged plays, which the homepage and the artwork policy caused: the feedback loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sim.config import RankerConfig

if TYPE_CHECKING:
    from sim.world import Catalog, Members, ResponseModel

N_AFFINITY_BINS = 20


@dataclass
class RankerStats:
    """Additive statistics a ranker learns from: per-title impressions and plays (attributed),
    and impressions/plays binned by the member-title genre affinity the learned ranker uses."""

    title_impressions: np.ndarray   # (n_titles,)
    title_plays: np.ndarray         # (n_titles,)
    bin_impressions: np.ndarray     # (N_AFFINITY_BINS,)
    bin_plays: np.ndarray           # (N_AFFINITY_BINS,)

    def __add__(self, other: "RankerStats") -> "RankerStats":
        return RankerStats(self.title_impressions + other.title_impressions,
                           self.title_plays + other.title_plays,
                           self.bin_impressions + other.bin_impressions,
                           self.bin_plays + other.bin_plays)

    @staticmethod
    def zeros(n_titles: int) -> "RankerStats":
        return RankerStats(np.zeros(n_titles), np.zeros(n_titles),
                           np.zeros(N_AFFINITY_BINS), np.zeros(N_AFFINITY_BINS))


def observed_affinity(members: "Members", catalog: "Catalog", member: np.ndarray) -> np.ndarray:
    """Member-genre affinity estimated from observable history, shape (n, n_genres).

    Plays per genre smoothed toward genre popularity (two pseudo-plays), rows sum to 1."""
    plays = members.genre_plays[member]
    prior = 2.0 * catalog.genre_share.astype(np.float32)
    return (plays + prior) / (plays.sum(axis=1, keepdims=True) + 2.0)


def affinity_bin(x: np.ndarray) -> np.ndarray:
    """Bin index of a member-title affinity in [0, 1]."""
    return np.minimum((x * N_AFFINITY_BINS).astype(np.int64), N_AFFINITY_BINS - 1)


class Ranker:
    """Base ranker. ``scores`` (n, n_titles) and ``genre_affinity`` (n, n_genres) per visit."""

    name = "base"
    reads_ground_truth = False

    def __init__(self, cfg: RankerConfig, catalog: "Catalog", members: "Members"):
        self.cfg, self.catalog, self.members = cfg, catalog, members
        self.stats_ = RankerStats.zeros(catalog.n_titles)
        self.version_ = 0

    def scores(self, member: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def genre_affinity(self, member: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return observed_affinity(self.members, self.catalog, member)

    def fit(self, stats: RankerStats, now: float) -> None:
        """Retrain on newly available logged statistics (additive)."""
        self.stats_ = self.stats_ + stats
        self.version_ += 1


class RandomRanker(Ranker):
    """Random titles and random genre rows: the homepage with no opinion."""

    name = "random"

    def scores(self, member, rng):
        return rng.random((member.size, self.catalog.n_titles), dtype=np.float32)

    def genre_affinity(self, member, rng):
        return rng.random((member.size, self.catalog.n_genres), dtype=np.float32)


class OracleRanker(Ranker):
    """Ranks by the true member-title fit and quality. Reads ground truth: reference only."""

    name = "oracle"
    reads_ground_truth = True

    def attach_ground_truth(self, response: "ResponseModel") -> None:
        self.response = response

    def scores(self, member, rng):
        return self.response.title_scores(member).astype(np.float32)

    def genre_affinity(self, member, rng):
        return self.response.tastes[member]


class PopularityRanker(Ranker):
    """Scores titles by logged plays (exponentially decayed) plus a prior from launch hype.

    Member-independent apart from the genre rows; it promotes what it already showed."""

    name = "popularity"

    def __init__(self, cfg, catalog, members):
        super().__init__(cfg, catalog, members)
        self.decayed_plays_ = np.zeros(catalog.n_titles)
        self.last_fit_ = 0.0
        self._refresh()

    def fit(self, stats, now):
        decay = 0.5 ** ((now - self.last_fit_) / (self.cfg.half_life_days * 1440.0))
        self.decayed_plays_ = self.decayed_plays_ * decay + stats.title_plays
        self.last_fit_ = now
        super().fit(stats, now)
        self._refresh()

    def _refresh(self):
        prior = self.cfg.prior_plays * self.catalog.popularity_prior
        self.title_score_ = np.log(self.decayed_plays_ + prior).astype(np.float32)

    def scores(self, member, rng):
        return np.broadcast_to(self.title_score_, (member.size, self.catalog.n_titles)).copy()


class LearnedRanker(Ranker):
    """``score = w * affinity(member, title) + bias_title``, fitted on logged plays.

    ``affinity`` is the member's observed genre affinity dotted with the title's genre mixture.
    ``bias_title`` is the log of the title's smoothed play rate per impression (shrunk toward a
    prior from launch hype); ``w`` is the weighted least-squares slope of log play rate across
    affinity bins. Both come from impressions the ranker itself chose: plays at the top of the
    page are inflated by attention, and titles never shown stay at their prior.
    """

    name = "learned"

    def __init__(self, cfg, catalog, members):
        super().__init__(cfg, catalog, members)
        self.weight_ = 4.0   # before any data: a plausible slope in log-rate per unit affinity
        self._refresh()

    def fit(self, stats, now):
        super().fit(stats, now)
        s = self.stats_
        ok = s.bin_impressions > 0
        if ok.sum() >= 3:
            x = (np.arange(N_AFFINITY_BINS)[ok] + 0.5) / N_AFFINITY_BINS
            y = np.log((s.bin_plays[ok] + 0.5) / s.bin_impressions[ok])
            wts = s.bin_impressions[ok]
            xm = np.average(x, weights=wts)
            var = np.average((x - xm) ** 2, weights=wts)
            if var > 0:
                self.weight_ = float(max(np.average((x - xm) * (y - np.average(y, weights=wts)),
                                                    weights=wts) / var, 0.0))
        self._refresh()

    def _refresh(self):
        s, l2 = self.stats_, self.cfg.l2
        base_rate = (s.title_plays.sum() + 1.0) / (s.title_impressions.sum() + 100.0)
        prior_rate = base_rate * self.catalog.popularity_prior
        self.bias_ = np.log((s.title_plays + l2 * prior_rate) / (s.title_impressions + l2)).astype(np.float32)

    def affinity(self, member: np.ndarray) -> np.ndarray:
        """(n, n_titles) observed affinity of each member to each title."""
        return observed_affinity(self.members, self.catalog, member) @ self.catalog.title_genres.T

    def scores(self, member, rng):
        return self.weight_ * self.affinity(member) + self.bias_[None, :]


RANKERS: dict[str, type[Ranker]] = {c.name: c for c in (PopularityRanker, LearnedRanker,
                                                        OracleRanker, RandomRanker)}


def build_ranker(cfg: RankerConfig, catalog, members, response) -> Ranker:
    ranker = RANKERS[cfg.name](cfg, catalog, members)
    if ranker.reads_ground_truth:
        ranker.attach_ground_truth(response)
    return ranker


class GenreIndex:
    """Titles grouped by primary genre, padded: ``titles[g, j]`` (``-1`` pad)."""

    def __init__(self, catalog: "Catalog"):
        G = catalog.n_genres
        counts = np.bincount(catalog.primary_genre, minlength=G)
        self.titles = np.full((G, max(int(counts.max()), 1)), -1, dtype=np.int64)
        order = np.argsort(catalog.primary_genre, kind="stable")
        start = np.r_[0, np.cumsum(counts)[:-1]]
        g = catalog.primary_genre[order]
        self.titles[g, np.arange(order.size) - start[g]] = order


def layout_pages(scores: np.ndarray, genre_affinity: np.ndarray, launched: np.ndarray,
                 genre_index: GenreIndex, rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Lay out pages for v visits.

    Parameters
    ----------
    scores : ndarray, shape (v, n_titles)   ranker scores (higher is better); modified in place
    genre_affinity : ndarray, shape (v, n_genres)
    launched : ndarray, shape (n_titles,), bool

    Returns
    -------
    titles : ndarray, shape (v, rows, columns), int64   ``-1`` where a row runs out of titles
    row_genre : ndarray, shape (v, rows), int64          ``-1`` for the top-picks row
    """
    v, T = scores.shape
    scores[:, ~launched] = -np.inf
    titles = np.full((v, rows, columns), -1, dtype=np.int64)
    row_genre = np.full((v, rows), -1, dtype=np.int64)
    if v == 0:
        return titles, row_genre
    c = min(columns, T)
    top = _top_k(scores, c)
    titles[:, 0, :c] = np.where(np.isfinite(np.take_along_axis(scores, top, 1)), top, -1)
    # A title at most once per page: what is in top picks leaves the genre rows.
    np.put_along_axis(scores, top, -np.inf, axis=1)
    n_genre_rows = min(rows - 1, genre_affinity.shape[1])
    if n_genre_rows <= 0:
        return titles, row_genre
    genres = np.argsort(-genre_affinity, axis=1, kind="stable")[:, :n_genre_rows]
    row_genre[:, 1:1 + n_genre_rows] = genres
    for r in range(n_genre_rows):  # a loop over rows, vectorized over visits
        cand = genre_index.titles[genres[:, r]]                        # (v, L)
        s = np.where(cand >= 0, np.take_along_axis(scores, np.maximum(cand, 0), 1), -np.inf)
        k = min(columns, cand.shape[1])
        best = _top_k(s, k)
        chosen = np.take_along_axis(cand, best, 1)
        ok = np.isfinite(np.take_along_axis(s, best, 1))
        titles[:, r + 1, :k] = np.where(ok, chosen, -1)
    return titles, row_genre


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest scores per row, best first, shape (v, k)."""
    if k >= scores.shape[1]:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
    else:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)
