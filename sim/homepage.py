"""The homepage: rankers that score titles for a member, and the grid layout.

A page is ``rows x columns`` titles: a *top picks* row (the ranker's best titles) followed by
genre rows (the member's strongest genres by the ranker's estimate, each holding that genre's
best titles). A title appears at most once per page. Rankers other than ``oracle`` learn only
from logged plays (or clicks, ``signal: click``), which the homepage and the artwork policy
caused: the feedback loop.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.config import RANKERS
from sim.features import observed_affinity
from sim.gather import gather_rows
from sim.kernels.layout import layout_kernel
from sim.schema import param

if TYPE_CHECKING:
    from sim.policies.base import FeedbackBatch
    from sim.world import Catalog, Members, ResponseModel

N_AFFINITY_BINS = 20


#: Rows tracked for the position-bias fit (the config allows at most 100).
MAX_ROWS = 100


def _add(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    return b if a is None else a if b is None else a + b


@dataclass
class RankerStats:
    """Additive statistics a ranker learns from: per-title impressions and plays (attributed),
    and impressions/plays binned by the member-title genre affinity the learned ranker uses.

    The optional fields feed the exploration / inverse-propensity variants (``None`` when no
    impression of the batch needed them): plays weighted by 1 / estimated attention, the
    affinity bins over explored slots only weighted by 1 / propensity, and explored impressions
    and plays per page row (to fit the position-bias exponent)."""

    title_impressions: np.ndarray   # (n_titles,)
    title_plays: np.ndarray         # (n_titles,)
    bin_impressions: np.ndarray     # (N_AFFINITY_BINS,)
    bin_plays: np.ndarray           # (N_AFFINITY_BINS,)
    title_plays_debiased: np.ndarray | None = None       # (n_titles,)  sum play / attention
    explored_bin_impressions: np.ndarray | None = None   # (N_AFFINITY_BINS,) sum 1 / p
    explored_bin_plays: np.ndarray | None = None         # (N_AFFINITY_BINS,) sum play / (p attention)
    row_explored_impressions: np.ndarray | None = None   # (MAX_ROWS,)
    row_explored_plays: np.ndarray | None = None         # (MAX_ROWS,)

    def __add__(self, other: "RankerStats") -> "RankerStats":
        return RankerStats(*(_add(getattr(self, f.name), getattr(other, f.name))
                             for f in dataclasses.fields(self)))

    @staticmethod
    def zeros(n_titles: int) -> "RankerStats":
        return RankerStats(np.zeros(n_titles), np.zeros(n_titles),
                           np.zeros(N_AFFINITY_BINS), np.zeros(N_AFFINITY_BINS))


def affinity_bin(x: np.ndarray) -> np.ndarray:
    """Bin index of a member-title affinity in [0, 1]."""
    return np.minimum((x * N_AFFINITY_BINS).astype(np.int64), N_AFFINITY_BINS - 1)


class Ranker:
    """Base ranker. ``scores`` (n, n_titles) and ``genre_affinity`` (n, n_genres) per visit.

    A ranker declares its hyperparameters once, in a frozen ``Params`` dataclass of
    :func:`sim.schema.param` fields extending :class:`Ranker.Params` (the page layout and the
    feedback-loop variants every ranker has); ``self.cfg`` holds the validated values. A subclass
    in this module that sets ``name`` is a built-in, selectable as ``ranker.name`` (and as the
    option ``ranker=<name>``); your own class is selected by ``ranker._target_``.

    The contract (what the engine calls; :func:`sim.testing.check_ranker` verifies it):

    * ``scores(member, rng)`` -> ndarray, shape (n, n_titles), finite: higher is better. The
      page is laid out from it (:func:`layout_pages`); unlaunched titles are masked by the
      layout, not by the ranker. All randomness (ties, exploration) comes from ``rng``, and
      scoring never changes the ranker.
    * ``genre_affinity(member, rng)`` -> ndarray, shape (n, n_genres), finite: the genre rows
      are the member's strongest genres by it. Default: the member's observed affinity.
    * ``statistics(feedback, pscore)`` -> additive statistics of logged impressions this ranker
      laid out: ``statistics(a) + statistics(b) == statistics(a U b)``, so shards and serving
      windows are reduced by ``+``. Default: :class:`RankerStats` counts of the ranker's
      ``signal`` (credited plays, or clicks). Override it to learn from something else.
    * ``fit(stats, now)``: retrain on newly available statistics (the sum over every shard of
      one retrain period) at simulated minute ``now``; adds them to ``stats_`` and bumps
      ``version_``. Fitting ``a`` then ``b`` at the same ``now`` equals fitting ``a + b``.
    * ``frozen``: True once the ranker takes no more data (``retrain: once`` after its first
      fit); the engine then skips ``fit``. A fresh ranker is never frozen.
    * ``cfg``: the engine reads the page settings ``rows``, ``columns`` and
      ``exploration_share`` from it; ``catalog`` and ``members`` (observable: genres, launch
      hype, play history) are set by the base constructor; ``name`` labels drift measures.

    Rankers learn only from logs: none reads the ground truth (tastes, quality, the response
    model) except reference rankers that say so in their name (``oracle``), set
    ``reads_ground_truth`` and receive the response model through ``attach_ground_truth``.
    """

    name = "base"
    reads_ground_truth = False

    @dataclass(frozen=True)
    class Params:
        rows: int = param(10, ge=1, le=100, doc="rows on the page (top picks, then genre rows)")
        columns: int = param(8, ge=1, le=100, doc="titles per row")
        exploration_share: float = param(0.0, ge=0.0, lt=1.0,
                                         doc="share of page slots filled with random launched titles")
        position_exponent: float = param(0.8, ge=0.0, le=10.0,
                                         doc="attention ~ ((row+1)(col+1))^-a until fitted from exploration")
        retrain: str = param("repeated", choices=("repeated", "once"),
                             doc="once: fitted on the first retrain's logs, then frozen")
        signal: str = param("play", choices=("play", "click"),
                            doc="attributed outcome counted as a title's success")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__ and cls.__module__.startswith("sim."):
            RANKERS.add(cls)

    def __init__(self, cfg: "Ranker.Params", catalog: "Catalog", members: "Members"):
        self.cfg, self.catalog, self.members = cfg, catalog, members
        self.stats_ = RankerStats.zeros(catalog.n_titles)
        self.version_ = 0
        # Attention exponent the inverse-propensity variant weights plays with; refitted from
        # the exploration slice when it has enough plays (see LearnedRanker.fit).
        self.position_exponent_ = cfg.position_exponent

    def attention_estimate(self, row: np.ndarray, column: np.ndarray) -> np.ndarray:
        """The ranker's estimate of P(tile looked at) up to a constant: ((row+1)(column+1))^-a.

        The shape of the curve is the one T-RECS and Chaney et al. use; only ``a`` is learned."""
        return ((row + 1.0) * (column + 1.0)) ** -self.position_exponent_

    def scores(self, member: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Title scores per visit, shape (n, n_titles), for ``member`` of shape (n,)."""
        raise NotImplementedError

    def genre_affinity(self, member: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Genre-row order per visit, shape (n, n_genres): the strongest genres come first."""
        return observed_affinity(self.members, self.catalog, member)

    def statistics(self, feedback: "FeedbackBatch", pscore: np.ndarray | None = None) -> RankerStats:
        """Additive training statistics of logged impressions this ranker laid out.

        Parameters
        ----------
        feedback : FeedbackBatch of n impressions with their credited outcomes; the ranker may
            read ``decisions.title/row/column/context`` and the outcomes, nothing else.
        pscore : ndarray, shape (n,), optional
            The ranker's propensity of each title in its slot: ``< 1`` where an exploration
            slot drew it at random, 1 elsewhere (None: no slot was explored).
        """
        return count_statistics(self.catalog, feedback, self.cfg.signal)

    @property
    def frozen(self) -> bool:
        """``retrain: once``: after its first fit the ranker takes no more data."""
        return self.cfg.retrain == "once" and self.version_ >= 1

    def fit(self, stats: RankerStats, now: float) -> None:
        """Retrain on newly available logged statistics (additive)."""
        self.stats_ = self.stats_ + stats
        self.version_ += 1


def _signal_by_bin(catalog: "Catalog", feedback: "FeedbackBatch", signal: str):
    """Title (n,), affinity bin (n,) and the counted outcome (n,) float64 of each impression."""
    title = feedback.decisions.title
    aff = np.einsum("ng,ng->n", feedback.decisions.context[:, :catalog.n_genres],
                    gather_rows(catalog.title_genres, title))
    outcome = feedback.click if signal == "click" else feedback.play
    return title, affinity_bin(aff), outcome.astype(np.float64)


def count_statistics(catalog: "Catalog", feedback: "FeedbackBatch", signal: str = "play") -> RankerStats:
    """Impressions and ``signal`` outcomes (credited plays or clicks) per title and per bin of
    the observed member-title affinity (the context's genre affinity dot the title's genres)."""
    title, b, plays = _signal_by_bin(catalog, feedback, signal)
    T = catalog.n_titles
    return RankerStats(np.bincount(title, minlength=T).astype(np.float64),
                       np.bincount(title, weights=plays, minlength=T),
                       np.bincount(b, minlength=N_AFFINITY_BINS).astype(np.float64),
                       np.bincount(b, weights=plays, minlength=N_AFFINITY_BINS))


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

    Member-independent apart from the genre rows and ties, which are broken at random per visit
    (titles with equal plays and hype are interchangeable; a fixed order would put the same one
    first on every page); it promotes what it already showed."""

    name = "popularity"

    @dataclass(frozen=True)
    class Params(Ranker.Params):
        prior_plays: float = param(1.0, gt=0, le=1e6, doc="pseudo-plays per title (times its launch hype)")
        half_life_days: float = param(7.0, gt=0, le=1e5, doc="decay of old plays")

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
        # A jitter below half the smallest gap between distinct scores reorders exact ties only.
        gaps = np.diff(np.unique(self.title_score_))
        self.tie_jitter_ = np.float32(0.5 * gaps.min() if gaps.size else 1.0)

    def scores(self, member, rng):
        jitter = rng.random((member.size, self.catalog.n_titles), dtype=np.float32)
        return self.title_score_[None, :] + self.tie_jitter_ * jitter


class LearnedRanker(Ranker):
    """``score = w * affinity(member, title) + bias_title``, fitted on logged plays.

    ``affinity`` is the member's observed genre affinity dotted with the title's genre mixture.
    ``bias_title`` is the log of the title's smoothed play rate per impression (shrunk toward a
    prior from launch hype); ``w`` is the weighted least-squares slope of log play rate across
    affinity bins. Both come from impressions the ranker itself chose: plays at the top of the
    page are inflated by attention, and titles never shown stay at their prior.

    Variants (``Params``): ``exploration_share`` fills that share of slots with random
    launched titles (in :func:`sim.serving.explore_slots`, for any ranker); ``correction: ipw``
    weights each play by 1 / estimated attention (exponent refitted from the explored slots'
    play rate by row) and fits the slope on explored slots weighted by 1 / propensity;
    ``retrain: once`` keeps the first fit (``frozen``: the engine skips later ones).
    """

    name = "learned"

    @dataclass(frozen=True)
    class Params(Ranker.Params):
        l2: float = param(1.0, gt=0, le=1e9, doc="ridge / pseudo-impressions shrinking title biases to the prior")
        correction: str = param("none", choices=("none", "ipw"),
                                doc="ipw: weight plays by 1/attention and fit the slope on explored slots")

    def __init__(self, cfg, catalog, members):
        super().__init__(cfg, catalog, members)
        self.weight_ = 15.0  # before any data: a plausible slope in log-rate per unit affinity
        self._refresh()

    def fit(self, stats, now):
        super().fit(stats, now)
        s = self.stats_
        bin_imp, bin_plays = s.bin_impressions, s.bin_plays
        if self.cfg.correction == "ipw":
            self._fit_position_exponent()
            # The slope from explored slots only: there the ranker did not pick who saw what.
            if s.explored_bin_impressions is not None and s.explored_bin_plays.sum() >= 30:
                bin_imp, bin_plays = s.explored_bin_impressions, s.explored_bin_plays
        ok = bin_imp > 0
        if ok.sum() >= 3:
            x = (np.arange(N_AFFINITY_BINS)[ok] + 0.5) / N_AFFINITY_BINS
            y = np.log((bin_plays[ok] + 0.5) / bin_imp[ok])
            wts = bin_imp[ok]
            xm = np.average(x, weights=wts)
            var = np.average((x - xm) ** 2, weights=wts)
            if var > 0:
                self.weight_ = float(max(np.average((x - xm) * (y - np.average(y, weights=wts)),
                                                    weights=wts) / var, 0.0))
        self._refresh()

    def statistics(self, feedback, pscore=None):
        """With ``correction: ipw`` also the debiasing statistics: plays weighted by 1 /
        estimated attention, and over explored slots (``pscore < 1``) the affinity bins weighted
        by 1 / propensity and impressions and plays per row (for the position-bias fit)."""
        stats = super().statistics(feedback, pscore)
        if self.cfg.correction != "ipw":
            return stats
        title, b, plays = _signal_by_bin(self.catalog, feedback, self.cfg.signal)
        row = feedback.decisions.row.astype(np.int64)
        col = feedback.decisions.column.astype(np.int64)
        inv_att = 1.0 / self.attention_estimate(row, col)
        stats.title_plays_debiased = np.bincount(title, weights=plays * inv_att, minlength=self.catalog.n_titles)
        p = np.ones(title.size) if pscore is None else pscore
        ex = p < 1.0
        stats.explored_bin_impressions = np.bincount(b[ex], weights=1.0 / p[ex], minlength=N_AFFINITY_BINS)
        stats.explored_bin_plays = np.bincount(b[ex], weights=plays[ex] * inv_att[ex] / p[ex],
                                               minlength=N_AFFINITY_BINS)
        stats.row_explored_impressions = np.bincount(row[ex], minlength=MAX_ROWS).astype(np.float64)
        stats.row_explored_plays = np.bincount(row[ex], weights=plays[ex], minlength=MAX_ROWS)
        return stats

    def _fit_position_exponent(self) -> None:
        """Least-squares slope of log play rate on log(row + 1) over explored slots.

        Explored titles are random, so their play rate by row is the attention curve times a
        constant (columns are spread alike over rows). Needs plays on at least 3 rows."""
        s = self.stats_
        if s.row_explored_impressions is None:
            return
        ok = (s.row_explored_plays > 0) & (s.row_explored_impressions > 0)
        if ok.sum() < 3 or s.row_explored_plays.sum() < 50:
            return
        x = np.log(np.arange(MAX_ROWS)[ok] + 1.0)
        y = np.log(s.row_explored_plays[ok] / s.row_explored_impressions[ok])
        wts = s.row_explored_plays[ok]          # ~ inverse variance of a log rate
        xm = np.average(x, weights=wts)
        slope = np.average((x - xm) * (y - np.average(y, weights=wts)), weights=wts) / max(
            np.average((x - xm) ** 2, weights=wts), 1e-12)
        self.position_exponent_ = float(np.clip(-slope, 0.0, 3.0))

    def _refresh(self):
        s, l2 = self.stats_, self.cfg.l2
        plays = s.title_plays
        if self.cfg.correction == "ipw" and s.title_plays_debiased is not None:
            # Position-debiased plays: what the title would earn if every tile were looked at
            # (rescaled to the logged total so the prior keeps its weight).
            plays = s.title_plays_debiased * (s.title_plays.sum() / max(s.title_plays_debiased.sum(), 1e-12))
        base_rate = (plays.sum() + 1.0) / (s.title_impressions.sum() + 100.0)
        prior_rate = base_rate * self.catalog.popularity_prior
        self.bias_ = np.log((plays + l2 * prior_rate) / (s.title_impressions + l2)).astype(np.float32)

    def affinity(self, member: np.ndarray) -> np.ndarray:
        """(n, n_titles) observed affinity of each member to each title."""
        return observed_affinity(self.members, self.catalog, member) @ self.catalog.title_genres.T

    def scores(self, member, rng):
        return self.weight_ * self.affinity(member) + self.bias_[None, :]


def build_ranker(spec, catalog, members, response) -> Ranker:
    """The ranker a spec selects (:func:`sim.config.ranker_spec`), built for this world."""
    ranker = spec.cls(spec.params, catalog, members)
    if ranker.reads_ground_truth:
        ranker.attach_ground_truth(response)
    return ranker


class GenreIndex:
    """Titles ordered by primary genre: genre ``g`` holds ``order[start[g]:start[g + 1]]``."""

    def __init__(self, catalog: "Catalog"):
        G = catalog.n_genres
        counts = np.bincount(catalog.primary_genre, minlength=G)
        self.order = np.argsort(catalog.primary_genre, kind="stable")
        self.start = np.r_[0, np.cumsum(counts)]
        self.genre_of_position = np.repeat(np.arange(G), counts)     # primary genre of order[j]
        self.n_genres = G


def layout_pages(scores: np.ndarray, genre_affinity: np.ndarray, launched: np.ndarray,
                 genre_index: GenreIndex, rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Lay out pages for v visits: a top-picks row, then the member's strongest genres.

    Each title has one primary genre, so one pass over the catalog suffices: per genre, keep
    the 2 x columns best titles (top picks take at most ``columns`` of them, so a genre row can
    always be filled from what is left); top picks are the best among the genres' leaders.
    Equal scores rank the title earlier in genre order first; equal genre affinities the lower
    genre index. Compiled (:func:`sim.kernels.layout.layout_kernel`).

    Parameters
    ----------
    scores : ndarray, shape (v, n_titles)   ranker scores (higher is better)
    genre_affinity : ndarray, shape (v, n_genres)
    launched : ndarray, shape (n_titles,), bool

    Returns
    -------
    titles : ndarray, shape (v, rows, columns), int64   ``-1`` where a row runs out of titles
    row_genre : ndarray, shape (v, rows), int64          ``-1`` for the top-picks row
    """
    scores = np.ascontiguousarray(scores)
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    affinity = np.ascontiguousarray(genre_affinity, dtype=np.float64 if genre_affinity.dtype != np.float32
                                    else np.float32)
    # Only launched titles can be shown: drop the others from the genre lists once per call.
    launched = np.asarray(launched, dtype=np.bool_)
    on = launched[genre_index.order]
    order = genre_index.order[on].astype(np.int64)
    per_genre = np.bincount(genre_index.genre_of_position[on], minlength=genre_index.n_genres)
    start = np.r_[0, np.cumsum(per_genre)].astype(np.int64)
    return layout_kernel(scores, affinity, order, start, int(rows), int(columns))
