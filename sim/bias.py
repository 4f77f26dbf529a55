"""Feedback-loop measures: how a ranker trained on its own logs concentrates and drifts.

Pure functions on arrays, so they can be fed from online accumulators or from a run's Parquet
log alike (``experiments.analyses.feedback_loop`` reads the log). The measures and where they
come from (see /work/shared/DOMAIN.md):

* :func:`gini` of exposure (impressions) or consumption (plays) across titles;
* :func:`effective_catalog_size` -- Netflix's ECS = 2 sum_i p_i i - 1 over titles sorted by
  descending share of hours (Gomez-Uribe and Hunt 2015): 1 for a single title, N for uniform;
* :func:`catalog_coverage` -- share of launched titles with at least one play;
* homogenization as Chaney, Stewart and Engelhardt (2018) define it: each member is paired with
  the most similar member *as the recommender represents members* (:func:`nearest_partner` on
  that representation, or :func:`random_partner` for a recommender with none), the Jaccard
  overlap of the pair's consumed sets is taken (:func:`pair_jaccard`), and its change from the
  same pairs' overlap under the ideal recommender is reported (:func:`homogenization_change`).
  It needs the same members under every recommender (common random numbers);
* :func:`homogenization` -- the secondary, played-set variant: mean Jaccard overlap between each
  member's played set and that of their nearest member *by played set*. It tracks the size of
  played sets as much as their likeness (a member with one play scores 1 against anyone who
  played only that title), so compare it only between arms with similar set sizes;
* :func:`popularity_amplification` -- exposure share of the initially most popular titles over
  their share of true appeal (in the spirit of Mansoury et al. 2020): 1 means exposure follows
  appeal, > 1 that the ranker over-exposes what was popular;
* :func:`rank_agreement` -- mean per-member Spearman correlation between a ranker's scores and
  the true member-title fit: ranker drift is how this moves over time (Jiang et al. 2019);
* :func:`logged_take_bias` -- per artwork, the naive take fraction in the logs against its true
  take fraction and the IPS-corrected estimate.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from sim.metrics.intervals import Z95
from sim.streams import generator

if TYPE_CHECKING:
    from sim.homepage import Ranker


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0: all equal, -> 1: all on one item).

    ``counts`` shape (n_items,); items with zero count are included (they are unequal)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = x.size, x.sum()
    if n == 0 or total <= 0:
        return float("nan")
    i = np.arange(1, n + 1)
    return float((2.0 * (i * x).sum()) / (n * total) - (n + 1.0) / n)


def lorenz(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lorenz curve of ``counts`` (n,): cumulative share of items (n+1,) and of their counts
    (n+1,), items from least to most counted."""
    c = np.sort(np.asarray(counts, float))
    total = c.sum()
    y = np.concatenate([[0.0], np.cumsum(c) / (total if total > 0 else 1.0)])
    return np.linspace(0.0, 1.0, c.size + 1), y


def lorenz_band(title: np.ndarray, member: np.ndarray, n_titles: int, rng: np.random.Generator,
                groups: int = 200, replicates: int = 200) -> dict:
    """Lorenz curve and Gini of events (impressions, plays) across titles, with a pointwise 95 % band and a Gini
    interval from a bootstrap over members (the randomisation unit, so the impressions of one
    member move together). Members are put in ``groups`` groups by id (``member % groups``) and
    the groups are resampled with replacement: one bincount of the log, then each replicate is a
    weighted sum of the groups' title counts. The bands are normal (estimate +- z x the
    replicates' standard deviation): resampling with replacement makes every replicate a little
    more unequal than the sample, so percentile bands would sit off the curve.

    ``title``, ``member`` shape (n_events,). Returns ``x``, ``y``, ``low``, ``high``
    (n_titles+1,) and ``gini``, ``gini_low``, ``gini_high``."""
    title, member = np.asarray(title, np.int64), np.asarray(member, np.int64)
    per_group = np.bincount((member % groups) * n_titles + title,
                            minlength=groups * n_titles).reshape(groups, n_titles).astype(np.float64)
    weights = rng.multinomial(groups, np.full(groups, 1.0 / groups), size=replicates)     # (R, groups)
    counts = weights @ per_group                                                           # (R, n_titles)
    curve_sd = np.array([lorenz(c)[1] for c in counts]).std(axis=0, ddof=1)
    gini_sd = float(np.std([gini(c) for c in counts], ddof=1))
    x, y = lorenz(per_group.sum(axis=0))
    g = gini(per_group.sum(axis=0))
    return {"x": x, "y": y, "low": np.clip(y - Z95 * curve_sd, 0.0, 1.0), "high": np.clip(y + Z95 * curve_sd, 0.0, 1.0),
            "gini": g, "gini_low": g - Z95 * gini_sd, "gini_high": g + Z95 * gini_sd}


def effective_catalog_size(hours: np.ndarray) -> float:
    """ECS = 2 sum_i p_i i - 1 with p sorted descending, i from 1 (1 for one title, N for uniform).

    ``hours`` shape (n_titles,): hours (or minutes, or plays) consumed per title."""
    h = np.asarray(hours, dtype=np.float64)
    total = h.sum()
    if total <= 0:
        return float("nan")
    p = np.sort(h)[::-1] / total
    return float(2.0 * (p * np.arange(1, p.size + 1)).sum() - 1.0)


def catalog_coverage(plays: np.ndarray, launched: np.ndarray) -> float:
    """Share of launched titles with at least one play. Both shape (n_titles,)."""
    launched = np.asarray(launched, dtype=bool)
    if not launched.any():
        return float("nan")
    return float((np.asarray(plays)[launched] > 0).mean())


def jaccard_matrix(sets: np.ndarray) -> np.ndarray:
    """Pairwise Jaccard similarity of boolean rows ``sets`` (n, n_items) -> (n, n).

    Two empty sets have similarity 0 (they share nothing)."""
    s = np.asarray(sets, dtype=np.float64)
    inter = s @ s.T
    size = s.sum(axis=1)
    union = size[:, None] + size[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def homogenization(sets: np.ndarray) -> float:
    """Mean over members of the Jaccard overlap with their most similar other member *by
    played set* (the secondary measure; :func:`homogenization_change` is Chaney et al.'s).

    ``sets`` (n_members, n_titles) bool: titles each member played. Members who played nothing
    are left out (their overlap is undefined). Confounded by set size: small sets find an
    identical or nested neighbour easily, so an arm whose members play fewer titles scores
    higher without being more alike. Cost O(n^2 n_titles): pass a sample of members."""
    s = np.asarray(sets, dtype=bool)
    s = s[s.any(axis=1)]
    if s.shape[0] < 2:
        return float("nan")
    j = jaccard_matrix(s)
    np.fill_diagonal(j, -1.0)
    return float(j.max(axis=1).mean())


def nearest_partner(representation: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Each member's most similar other member by cosine similarity of ``representation``.

    ``representation`` (n, d): how a recommender represents members (true tastes, a learned
    ranker's genre affinities, latent factors). Returns (n,) int64 partner indices, never the
    member itself; ties go to the lowest index, and a zero row is equally (0) similar to all.
    Memory ``chunk`` x n, not n x n."""
    x = np.asarray(representation, np.float64)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"nearest_partner needs at least 2 members, got {n}")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    partner = np.empty(n, np.int64)
    for lo in range(0, n, chunk):
        sim = unit[lo:lo + chunk] @ unit.T
        rows = np.arange(sim.shape[0])
        sim[rows, lo + rows] = -np.inf          # never oneself
        partner[lo:lo + chunk] = sim.argmax(axis=1)
    return partner


def random_partner(n: int, rng: np.random.Generator) -> np.ndarray:
    """A fixed random partner for each of ``n`` members, uniform over the others: (n,) int64.

    For recommenders with no member representation (popularity, random)."""
    if n < 2:
        raise ValueError(f"random_partner needs at least 2 members, got {n}")
    return (np.arange(n) + rng.integers(1, n, size=n)) % n


def pair_jaccard(sets: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """Jaccard overlap of each member's set with their partner's, (n,) float64.

    ``sets`` (n, n_items) bool, ``partner`` (n,) indices. NaN where both sets are empty (the
    overlap of nothing with nothing is undefined)."""
    s = np.asarray(sets, dtype=bool)
    t = s[np.asarray(partner)]
    inter = (s & t).sum(axis=1)
    union = (s | t).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def homogenization_change(sets: np.ndarray, ideal_sets: np.ndarray, partner: np.ndarray) -> dict[str, float]:
    """Chaney et al.'s homogenization of one recommender against the ideal one.

    ``sets`` and ``ideal_sets`` (n, n_items) bool: what the *same* n members consumed under the
    recommender and under the ideal recommender; ``partner`` (n,): each member's partner as the
    recommender represents members. Over the pairs defined under both (a non-empty union):
    ``jaccard`` (mean overlap under the recommender), ``ideal_jaccard`` (the same pairs under the
    ideal recommender), ``change`` (their difference: > 0 means the recommender makes paired
    members consume more alike than the ideal one does) and ``pairs``."""
    j = pair_jaccard(sets, partner)
    j_ideal = pair_jaccard(ideal_sets, partner)
    ok = np.isfinite(j) & np.isfinite(j_ideal)
    if not ok.any():
        return {"jaccard": float("nan"), "ideal_jaccard": float("nan"), "change": float("nan"), "pairs": 0}
    return {"jaccard": float(j[ok].mean()), "ideal_jaccard": float(j_ideal[ok].mean()),
            "change": float((j[ok] - j_ideal[ok]).mean()), "pairs": int(ok.sum())}


def popularity_amplification(exposure: np.ndarray, appeal: np.ndarray, top: np.ndarray) -> float:
    """Exposure share of the titles in ``top`` divided by their share of true appeal.

    ``exposure`` and ``appeal`` shape (n_titles,) (restrict both to launched titles by zeroing
    the rest); ``top`` bool or index array of the initially most popular titles."""
    e, a = np.asarray(exposure, np.float64), np.asarray(appeal, np.float64)
    if e.sum() <= 0 or a.sum() <= 0:
        return float("nan")
    return float((e[top].sum() / e.sum()) / (a[top].sum() / a.sum()))


def average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..m along each row of ``a`` (n, m), ties sharing their mean rank: what
    ``scipy.stats.rankdata(a, axis=1)`` returns, exactly (ranks are integers or halves), without
    importing scipy.stats (two seconds of start-up for every run and worker process)."""
    n, m = a.shape
    order = np.argsort(a, axis=1, kind="mergesort")
    ordered = np.take_along_axis(a, order, axis=1)
    new_value = np.ones((n, m), dtype=bool)
    new_value[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = np.cumsum(new_value, axis=1) - 1 + (np.arange(n) * m)[:, None]   # tie group, unique per row
    position = np.broadcast_to(np.arange(1, m + 1, dtype=np.float64), (n, m))
    mean_rank = (np.bincount(group.ravel(), weights=position.ravel(), minlength=n * m)
                 / np.maximum(np.bincount(group.ravel(), minlength=n * m), 1))
    ranks = np.empty((n, m), dtype=np.float64)
    np.put_along_axis(ranks, order, mean_rank[group], axis=1)
    return ranks


def rank_agreement(scores: np.ndarray, truth: np.ndarray) -> float:
    """Mean over rows of the Spearman correlation between ``scores`` and ``truth``, (n, m) each.

    Rows with a constant vector (no ranking) count as 0. Equals scipy.stats.spearmanr per row.
    NaN when there are fewer than two items (nothing launched yet) or no rows."""
    if np.shape(scores)[0] == 0 or np.shape(scores)[1] < 2:
        return float("nan")
    rs = average_ranks(np.asarray(scores, np.float64))
    rt = average_ranks(np.asarray(truth, np.float64))
    rs -= rs.mean(axis=1, keepdims=True)
    rt -= rt.mean(axis=1, keepdims=True)
    denom = np.sqrt((rs ** 2).sum(axis=1) * (rt ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(denom > 0, (rs * rt).sum(axis=1) / denom, 0.0)
    return float(rho.mean()) if rho.size else float("nan")


def logged_take_bias(artwork: np.ndarray, title: np.ndarray, quality_play: np.ndarray,
                     expected_take: np.ndarray, pscore: np.ndarray, n_artworks: int) -> dict[str, np.ndarray]:
    """Per artwork: the naive logged take fraction against the truth and the IPS estimate.

    All inputs shape (n,) over logged impressions (``artwork`` are global artwork ids).

    * ``naive`` -- quality plays / impressions where the image was shown;
    * ``true_shown`` -- mean true quality-play probability (``expected_take``) over the same
      impressions: what the naive estimate targets, up to noise;
    * ``ips`` -- sum(r / p) over the image's impressions / all impressions of its title: an
      estimate of its take fraction had it been shown on *every* impression of the title, the
      quantity a policy needs. The naive estimate confuses the two when the logger shows the
      image selectively (to the members it suits).

    Returns a dict of arrays of shape (n_artworks,), NaN where the image was never shown, plus
    ``title`` (the title of each artwork seen, -1 otherwise)."""
    a = np.asarray(artwork, np.int64)
    t = np.asarray(title, np.int64)
    n = np.bincount(a, minlength=n_artworks).astype(np.float64)
    r = np.asarray(quality_play, np.float64)
    q = np.bincount(a, weights=r, minlength=n_artworks)
    e = np.bincount(a, weights=np.asarray(expected_take, np.float64), minlength=n_artworks)
    w = np.bincount(a, weights=r / np.asarray(pscore, np.float64), minlength=n_artworks)
    title_of = np.full(n_artworks, -1, dtype=np.int64)
    title_of[a] = t
    per_title = np.bincount(t).astype(np.float64)
    n_title = np.where(title_of >= 0, per_title[np.maximum(title_of, 0)], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"impressions": n, "title": title_of, "naive": np.where(n > 0, q / n, np.nan),
                "true_shown": np.where(n > 0, e / n, np.nan),
                "ips": np.where(n > 0, w / n_title, np.nan)}


class TitleExposure:
    """Online per (day, cell, title) impressions and plays: memory days x cells x titles.

    The engine adds every served batch; the measures above take one day's row."""

    def __init__(self, n_days: int, n_cells: int, n_titles: int):
        self.impressions = np.zeros((n_days, n_cells, n_titles))
        self.plays = np.zeros((n_days, n_cells, n_titles))

    def add(self, cell: int, time: np.ndarray, title: np.ndarray, play: np.ndarray) -> None:
        D, _, T = self.impressions.shape
        if title.size == 0:
            return
        day = np.minimum((np.asarray(time) // 1440.0).astype(np.int64), D - 1)
        # A serving batch spans one or two days: count only those rows, not all D.
        d0, d1 = int(day.min()), int(day.max()) + 1
        flat = (day - d0) * T + title
        n = (d1 - d0) * T
        self.impressions[d0:d1, cell, :] += np.bincount(flat, minlength=n).reshape(-1, T)
        self.plays[d0:d1, cell, :] += np.bincount(flat, weights=np.asarray(play, np.float64),
                                                  minlength=n).reshape(-1, T)


class RankerDrift:
    """Rank agreement between each ranker's scores and the true member-title fit, over time.

    Recorded at the start and after every ranker retrain on a fixed sample of members (the
    ``bias-sample`` stream) over the launched titles: ``spearman`` is the mean per-member
    Spearman correlation (:func:`sim.bias.rank_agreement`). The oracle stays at 1; a ranker
    that learns from its own exposure drifts away from the truth or converges to it slowly.

    The sample's scores and true fit are computed where the members' history and tastes live
    (the shards) and handed to :meth:`record`."""

    SAMPLE = 200

    def __init__(self, members: np.ndarray, cells_of_ranker: list[str]):
        self.members = members                  # :meth:`sample`
        self.cells = cells_of_ranker            # per ranker index: the cells it serves ("" = none)
        self.rows: list[dict] = []

    @classmethod
    def sample(cls, seed: int, n_members: int) -> np.ndarray:
        rng = generator(seed, "bias-sample")
        return np.sort(rng.choice(n_members, size=min(cls.SAMPLE, n_members), replace=False))

    def wanted(self, r_index: int) -> bool:
        return bool(self.cells[r_index])       # a shared ranker no cell uses is not tracked

    def record(self, now: float, r_index: int, ranker: Ranker, scores: np.ndarray, truth: np.ndarray,
               launched: np.ndarray) -> None:
        """``scores``, ``truth`` (sample size, n_titles): the ranker's scores of the sample
        members and their true fit (``response.title_scores``)."""
        rho = rank_agreement(scores[:, launched], truth[:, launched])
        if not math.isfinite(rho):
            return          # fewer than two launched titles: no ranking to compare (no nulls in metrics.json)
        self.rows.append({"time_hours": now / 60.0, "cells": self.cells[r_index], "ranker": ranker.name,
                          "version": int(ranker.version_), "spearman": rho})
