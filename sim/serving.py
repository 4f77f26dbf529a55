"""Serving a batch of visits: page layout, artwork choice, member response, attribution.

This is the hot path. It is vectorized over every impression of a batch (a serving window of one
member block, or a single visit in reference mode); Python loops run only over rankers, cells and
page rows. Models are frozen for the duration of a batch, as they are between deploys.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sim.config import DEVICE_VISIBLE_COLUMNS
from sim.features import impression_context
from sim.gather import gather_rows
from sim.homepage import GenreIndex, count_statistics, layout_pages
from sim.policies.base import DecisionBatch, FeedbackBatch
from sim.world.members import DEVICES
from sim.world.response import Page

if TYPE_CHECKING:
    from sim.config import EngineConfig
    from sim.world import World
    from sim.world.response import Outcomes
    from sim.world.shown import ShownArtworks

VISIBLE_COLUMNS = np.array([DEVICE_VISIBLE_COLUMNS[d] for d in DEVICES], dtype=np.int64)


@dataclass(frozen=True)
class ServingContext:
    """Everything serving reads besides the visits and the models (a shard builds it and
    replaces ``launched`` at each window's start).

    world : the ground truth: catalog, members (history, devices), response model
    engine : delays, attribution window and ``track_regret``
    genre_index : the catalog's titles grouped by genre, for the page layout
    launched : ndarray, shape (n_titles,), bool   titles on the catalog at the window's start
    shown : the image each member last saw of each title, or None when nothing reads it
    """

    world: World
    engine: EngineConfig
    genre_index: GenreIndex
    launched: np.ndarray
    shown: ShownArtworks | None


@dataclass
class Visits:
    """Visits to serve together: member (v,), time (v,) minutes, rows_viewed (v,) scroll depth."""

    member: np.ndarray
    time: np.ndarray
    rows_viewed: np.ndarray

    def __len__(self) -> int:
        return int(self.member.shape[0])


@dataclass
class ServedVisits:
    """Per-visit outcomes of one cell's visits in a batch (arrays of shape (u,), one per visit
    with at least one impression, in visit order).

    index : the visits' indices in the batch (:class:`Visits`)
    member, time : the visits' member and time (minutes)
    successful : 1.0 where the visit had a quality play (visit success), else 0
    with_play : 1.0 where the visit had a play
    first_play_seconds : seconds from page render to the visit's first play start (0 without one)
    session_seconds : session length in seconds (0 when the response model has no sessions)
    end_reason : int8 code of :data:`sim.world.response.SESSION_END_REASONS`, or None (no sessions)
    looks, detail_views, plays : counts per visit (looks: None without sessions)
    """

    index: np.ndarray
    member: np.ndarray
    time: np.ndarray
    successful: np.ndarray
    with_play: np.ndarray
    first_play_seconds: np.ndarray
    session_seconds: np.ndarray
    end_reason: np.ndarray | None
    looks: np.ndarray | None
    detail_views: np.ndarray
    plays: np.ndarray


@dataclass
class ServedImpressions:
    """Everything the engine needs after serving one batch of one cell (arrays of shape (n,)),
    the response model's raw ``outcomes`` (session fields included) and their per-visit
    aggregates ``visits``."""

    decisions: DecisionBatch
    visit: np.ndarray
    action: np.ndarray
    artwork: np.ndarray
    propensity: np.ndarray
    click: np.ndarray
    play: np.ndarray
    quality_play: np.ndarray
    minutes: np.ndarray
    click_time: np.ndarray
    play_time: np.ndarray
    credited: FeedbackBatch
    expected_take: np.ndarray
    oracle_take: np.ndarray
    uniform_take: np.ndarray
    outcomes: Outcomes
    visits: ServedVisits

    @property
    def varied(self) -> np.ndarray:
        """(n,) bool: the title has two or more images (the policy's choice can matter)."""
        return self.decisions.n_candidates() >= 2

    @property
    def varied_quality_play(self) -> np.ndarray:
        """(n,) bool: a quality play of a :attr:`varied` impression."""
        return self.quality_play & self.varied


def render(ctx: ServingContext, visits: Visits, ranker, rng: np.random.Generator, with_pscore: bool = False):
    """Lay out pages and keep the tiles the member actually rendered.

    Returns (visit_index, row, column, title), each (n,), for the rendered impressions, and with
    ``with_pscore`` a fifth array: the ranker's propensity of the title in an explored slot
    (``ranker.exploration_share`` / titles it could have drawn), 1 for the other slots.
    """
    cfg = ranker.cfg
    scores = np.asarray(ranker.scores(visits.member, rng), dtype=np.float32)
    if not scores.flags.writeable:
        scores = scores.copy()
    affinity = ranker.genre_affinity(visits.member, rng)
    titles, _ = layout_pages(scores, affinity, ctx.launched, ctx.genre_index, cfg.rows, cfg.columns)
    pscore = explore_slots(titles, ctx.launched, cfg.exploration_share, rng) if cfg.exploration_share > 0 else None
    # Only rendered tiles are impressions: rows the member scrolled to, columns the device shows.
    cols = np.minimum(VISIBLE_COLUMNS[ctx.world.members.device[visits.member]], cfg.columns)
    shown = ((np.arange(cfg.rows)[None, :, None] < visits.rows_viewed[:, None, None])
             & (np.arange(cfg.columns)[None, None, :] < cols[:, None, None])
             & (titles >= 0))
    v, r, c = np.nonzero(shown)
    if not with_pscore:
        return v, r, c, titles[v, r, c]
    return v, r, c, titles[v, r, c], (np.ones(v.size) if pscore is None else pscore[v, r, c])


def explore_slots(titles: np.ndarray, launched: np.ndarray, share: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Replace a random ``share`` of the page slots with random launched titles, in place.

    Each filled slot is explored independently with probability ``share`` and gets a title drawn
    uniformly, without replacement, from the launched titles not on the page the ranker built,
    so a title still appears at most once per page.

    Parameters
    ----------
    titles : ndarray, shape (v, rows, columns), int64   modified in place
    launched : ndarray, shape (n_titles,), bool

    Returns
    -------
    pscore : ndarray, shape (v, rows, columns)   ``share / n_available`` in explored slots
        (the probability of that title in that slot), 1 elsewhere.
    """
    v = titles.shape[0]
    pscore = np.ones(titles.shape)
    explore = (rng.random(titles.shape) < share) & (titles >= 0)
    if v == 0 or not explore.any():
        return pscore
    T = launched.size
    keys = rng.random((v, T))
    keys[:, ~launched] = -1.0
    vis, _, _ = np.nonzero(titles >= 0)
    keys[vis, titles[titles >= 0]] = -1.0                     # already on the page
    n_avail = (keys >= 0).sum(axis=1)
    k = int(explore.sum(axis=(1, 2)).max())
    k = min(k, T)
    pick = np.argpartition(-keys, k - 1, axis=1)[:, :k] if k < T else np.argsort(-keys, axis=1)
    ev, er, ec = np.nonzero(explore)                          # grouped by visit, in order
    first = np.searchsorted(ev, np.arange(v))
    j = np.arange(ev.size) - first[ev]                        # j-th explored slot of its page
    ok = j < pick.shape[1]
    new = np.full(ev.size, -1, dtype=np.int64)
    new[ok] = pick[ev[ok], j[ok]]
    ok &= new >= 0
    ok[ok] = keys[ev[ok], new[ok]] >= 0                       # the page ran out of candidates
    titles[ev[ok], er[ok], ec[ok]] = new[ok]
    pscore[ev[ok], er[ok], ec[ok]] = share / n_avail[ev[ok]]
    return pscore


def serve_cell(ctx: ServingContext, cell, visits: Visits, visit_ids: np.ndarray, visit_ctx: np.ndarray,
               v: np.ndarray, row: np.ndarray, column: np.ndarray, title: np.ndarray,
               rng_policy: np.random.Generator, rng_response: np.random.Generator) -> ServedImpressions:
    """Choose artworks for one cell's impressions and draw the members' responses.

    ``visit_ctx`` (v, d) is the observable context of each visit; ``v`` (n,) maps impressions
    to visits."""
    world, eng = ctx.world, ctx.engine
    member = visits.member[v]
    candidates = gather_rows(world.catalog.pool, title)
    mask = candidates >= 0
    familiar = world.members.has_interacted(member, title)
    last_artwork = shown_since = None
    if ctx.shown is not None:
        last_artwork, shown_since = ctx.shown.lookup(member, title)
    batch = DecisionBatch(member=member.astype(np.int32), title=title.astype(np.int32),
                          candidates=candidates, mask=mask, row=row.astype(np.int16),
                          column=column.astype(np.int16), time=visits.time[v], familiar=familiar,
                          context=impression_context(visit_ctx, v, familiar, world.catalog.n_genres),
                          visit=visit_ids[v], last_artwork=last_artwork, shown_since=shown_since)
    sel = cell.policy.select(batch, rng_policy)
    idx = np.arange(member.size)
    if eng.track_regret:
        p_click, p_play, p_quality = world.response.probabilities(batch)
        pc, pp, pq = p_click[idx, sel.action], p_play[idx, sel.action], p_quality[idx, sel.action]
        # Padding candidates have probability 0 (``probabilities``) and every probability is
        # >= 0, so plain row maxima and sums are those over the valid candidates.
        oracle = p_quality.max(axis=1)
        # Summed in float64: p is float32, and a float32 sum is off by ~1e-8 relative.
        uniform = p_quality.sum(axis=1, dtype=np.float64) / batch.n_candidates()
    else:
        p_click, p_play, p_quality = world.response.probabilities(batch, sel.artwork[:, None])
        pc, pp, pq = p_click[:, 0], p_play[:, 0], p_quality[:, 0]
        oracle = uniform = np.zeros(member.size)
    if ctx.shown is not None:
        ctx.shown.record(member, title, sel.artwork, batch.time)
    page = Page(v, batch.row, batch.column, batch.member)
    out = world.response.draw(pc, pp, pq, rng_response, eng.click_delay_minutes, eng.play_delay_minutes,
                              page=page)
    click_time = batch.time + out.click_delay
    play_time = click_time + out.play_delay
    # Attribution: an outcome is credited to the impression only if it happens inside the window
    # (a quality play is known once the member has watched past the threshold).
    win = eng.attribution_minutes
    thr = world.config.response.quality_threshold_minutes
    credited = FeedbackBatch(
        decisions=batch, action=sel.action, artwork=sel.artwork, propensity=sel.propensity,
        click=out.click & (out.click_delay <= win),
        play=out.play & (out.click_delay + out.play_delay <= win),
        quality_play=out.quality_play & (out.click_delay + out.play_delay + thr <= win))
    return ServedImpressions(batch, v, sel.action, sel.artwork, sel.propensity, out.click, out.play,
                             out.quality_play, out.minutes, click_time, play_time, credited,
                             pq, oracle, uniform, out, visit_outcomes(visits, v, out))


def visit_outcomes(visits: Visits, v: np.ndarray, out: Outcomes) -> ServedVisits:
    """Aggregate the outcomes of n impressions to their visits (``v`` (n,) visit index, sorted:
    impressions come out of :func:`render` in page order). Segment reductions, no loop."""
    if v.size and (np.diff(v) < 0).any():
        raise ValueError("visit_outcomes needs impressions grouped by visit (v sorted)")
    starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]]) if v.size else np.zeros(0, np.int64)
    index = v[starts]

    def seg_sum(x):
        return np.add.reduceat(np.asarray(x, dtype=np.float64), starts) if v.size else np.zeros(0)

    plays = seg_sum(out.play)
    if out.play_second is not None:
        play_second = out.play_second
    else:   # no session clock: the play starts click + play delay after the impression
        play_second = (out.click_delay + out.play_delay) * 60.0
    first = (np.fmin.reduceat(np.where(out.play, play_second, np.nan).astype(np.float64), starts)
             if v.size else np.zeros(0))
    sessions = out.has_sessions
    return ServedVisits(
        index=index, member=visits.member[index], time=visits.time[index],
        successful=(seg_sum(out.quality_play) > 0).astype(np.float64),
        with_play=(plays > 0).astype(np.float64),
        first_play_seconds=np.nan_to_num(first, nan=0.0),
        session_seconds=(out.session_seconds[starts].astype(np.float64) if sessions else np.zeros(index.size)),
        end_reason=out.end_reason[starts] if sessions else None,
        looks=seg_sum(out.look) if sessions else None,
        detail_views=seg_sum(out.click), plays=plays)


def ranker_stats(ctx: ServingContext, served: ServedImpressions, ranker=None,
                 ranker_pscore: np.ndarray | None = None):
    """Additive ranker statistics of served impressions, computed by the ranker itself
    (:meth:`sim.homepage.Ranker.statistics`) from their credited outcomes and the ranker
    propensity of each impression (1 for slots it did not explore). Without a ``ranker``: the
    base counts of credited plays."""
    if ranker is None:
        return count_statistics(ctx.world.catalog, served.credited)
    return ranker.statistics(served.credited, ranker_pscore)
