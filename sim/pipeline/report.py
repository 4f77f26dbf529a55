"""What the log and the trainers receive from one cell's served batch, faults and repairs applied.

The simulator's truth (the member's outcomes, expected take, regret) is never faulted: the
metrics read it directly. This module rebuilds what a production pipeline *reports*: impression
records (one per rendered impression, plus faults) joined with client events (click, play,
quality play -- each with a true time after the impression). Vectorized over impressions; every
draw comes from the passed-in generator, in a fixed order, and only for faults that are on.

Faults (rates of :class:`sim.pipeline.config.FaultsConfig`):

* ``unlogged``: the impression record is lost; its events find no row (dropped);
* ``unrendered``: an extra record of the impression's title and image the device never rendered
  (e.g. below the fold): a row without events, ``rendered`` false;
* ``event_loss``: an event never arrives; ``late``: it arrives ``late_scale * Lomax(late_tail)``
  minutes later, and is not credited if that is after the attribution window closes;
* ``duplicate``: an event is sent twice; the naive join then repeats the impression's row;
* ``clock_skew``: a share of devices (a stable hash of the member: no draw) stamp events
  ``clock_skew_minutes`` off (either sign); the naive join measures the attribution window from
  the server's impression time, so their events fall outside it (or before the impression);
* ``misattribution``: a play (with its click and quality play) is credited to the wrong
  impression. ``misattribution_to = tile``: to the tile before it on the page (after it, for a
  visit's first tile). In this sandbox a title appears once per page, so the issue's "another
  impression of the same title in the visit" maps to the neighbouring tile.
  ``previous_image``: to the image the member saw at their previous impression of the title
  (``decisions.last_artwork``: what the service remembered when the window was served; the
  client's event names the stale image and the join keys on member, title and image). The
  impression's row then reports that image (``artwork`` and ``action``) with the play; its
  logged propensity stays the one written at serving. Plays of a title the member had not been
  shown before, or shown with the same image, or whose previous image has left the pool, stay
  (as do plays whose event never reaches the join: lost, late or skewed out of the window).

Repairs: ``dedup`` (one row per impression id), ``join_by_id`` (events carry the impression id,
window on the device's own clock: undoes skew and misattribution), ``require_render`` (drop rows
without a render confirmation). ``rendered_propensity`` acts at serving (:mod:`.fallback`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.policies.base import FeedbackBatch
from sim.streams import stable_unit_hash

#: Counts kept per impression time bucket and cell (metrics.json ``faults`` and the time series),
#: faults first, then what each repair fixed. ``out_of_order`` is counted by the driver.
COUNTERS = ("unrendered", "unlogged", "events_lost", "events_late", "events_duplicated", "events_skewed",
            "misattributed", "fallback", "out_of_order",
            "repair_require_render", "repair_dedup", "repair_join_by_id", "repair_rendered_propensity")
_C = {name: j for j, name in enumerate(COUNTERS)}


@dataclass
class Reported:
    """The reported rows of one batch: ``rows`` (m,) index the batch's n impressions (repeats
    for duplicates and unrendered records); ``action`` / ``artwork`` (m,) the pool slot and image
    each row credits (the one served, unless misattributed to the previous image); outcomes (m,)
    bool as joined; ``counts`` (n, k)."""

    rows: np.ndarray
    action: np.ndarray
    artwork: np.ndarray
    rendered: np.ndarray
    click: np.ndarray
    play: np.ndarray
    quality_play: np.ndarray
    pscore: np.ndarray
    fallback: np.ndarray
    counts: np.ndarray

    def feedback(self, s) -> FeedbackBatch:
        """What the trainers receive (``s``: the batch's :class:`sim.serving.ServedImpressions`)."""
        r = self.rows
        return FeedbackBatch(decisions=s.decisions.subset(r), action=self.action, artwork=self.artwork,
                             propensity=self.pscore, click=self.click, play=self.play,
                             quality_play=self.quality_play)

    def log_columns(self, cols: dict, impression_id: np.ndarray) -> dict:
        """The batch's impression-log columns (n,) turned into the reported rows (m,):
        ``click``, ``play``, ``reward`` and ``pscore`` as reported, truth columns of the impression
        (``quality_play``, ``minutes`` false / 0 on an unrendered row), plus ``impression_id``,
        ``rendered`` and ``fallback``."""
        r = self.rows
        out = {k: (v[r] if isinstance(v, np.ndarray) and v.shape[:1] == impression_id.shape else v)
               for k, v in cols.items()}
        out.update(action=self.action, artwork=self.artwork,
                   click=self.click, play=self.play, reward=self.quality_play, pscore=self.pscore,
                   quality_play=out["quality_play"] & self.rendered,
                   minutes=np.where(self.rendered, out["minutes"], 0.0),
                   impression_id=impression_id[r], rendered=self.rendered, fallback=self.fallback)
        return out


def skew_minutes(member: np.ndarray, share: float, minutes: float) -> np.ndarray:
    """Per-member device clock offset (n,): ``+-minutes`` for a stable ``share`` of members, else 0."""
    skewed = stable_unit_hash(member, "clock-skew") < share
    sign = np.where(stable_unit_hash(member, "clock-skew-sign") < 0.5, -1.0, 1.0)
    return np.where(skewed, sign * minutes, 0.0)


def report(s, faults, rng: np.random.Generator, window: float, quality_threshold: float,
           fallback: np.ndarray | None = None, pscore_repaired: np.ndarray | None = None) -> Reported:
    """Apply ``faults`` (a :class:`~sim.pipeline.config.FaultsConfig`) to served impressions ``s``.

    ``window``: attribution minutes; ``quality_threshold``: minutes of watching that make a
    quality play; ``fallback`` / ``pscore_repaired`` (n,) bool from :class:`.fallback.FallbackPolicy`."""
    f = faults
    d = s.decisions
    n = d.member.size
    counts = np.zeros((n, len(COUNTERS)), np.int64)
    happened = np.column_stack([s.click, s.play, s.quality_play]).astype(bool)         # (n, 3)
    play_dt = s.play_time - d.time
    dt = np.column_stack([s.click_time - d.time, play_dt, play_dt + quality_threshold])
    # Draws: a fixed order, only for faults that are on (faults off draw nothing).
    unlogged = rng.random(n) < f.unlogged if f.unlogged else np.zeros(n, bool)
    lost = (rng.random((n, 3)) < f.event_loss) & happened if f.event_loss else np.zeros((n, 3), bool)
    extra = np.zeros((n, 3))
    if f.late:
        is_late = (rng.random((n, 3)) < f.late) & happened
        extra = np.where(is_late, f.late_scale_minutes * rng.pareto(f.late_tail, (n, 3)), 0.0)
    dup = (rng.random((n, 3)) < f.duplicate) & happened & ~lost if f.duplicate else np.zeros((n, 3), bool)
    moved = (rng.random(n) < f.misattribution) & s.play if f.misattribution else np.zeros(n, bool)
    phantom = rng.random(n) < f.unrendered if f.unrendered else np.zeros(n, bool)
    skew = skew_minutes(d.member, f.clock_skew, f.clock_skew_minutes)[:, None] if f.clock_skew else 0.0

    arrived = happened & ~lost & (dt + extra <= window)              # before the window closes
    own_clock = arrived                                              # join_by_id: skew cancels
    device = dt + skew                                               # naive: server impression time
    naive = arrived & (device >= 0) & (device <= window)
    credited = own_clock if f.join_by_id else naive
    counts[:, _C["unlogged"]] = unlogged
    counts[:, _C["events_lost"]] = lost.sum(axis=1)
    counts[:, _C["events_late"]] = (happened & ~lost & (dt <= window) & (dt + extra > window)).sum(axis=1)
    counts[:, _C["events_duplicated"]] = dup.sum(axis=1)
    counts[:, _C["events_skewed"]] = (own_clock & ~naive).sum(axis=1)

    # Misattribution to the previous image: the row keeps its events but names the image the
    # member saw before (only where there is a different one still in the title's pool).
    action, artwork = s.action, s.artwork
    to_previous = f.misattribution_to == "previous_image"
    if to_previous:
        last = d.last_artwork if d.last_artwork is not None else np.full(n, -1)
        in_pool = (d.candidates == last[:, None]) & d.mask & (last[:, None] >= 0)    # (n, K)
        moved &= in_pool.any(axis=1) & (last != s.artwork) & credited[:, 1]     # a play event to mis-join
        counts[:, _C["misattributed"]] = moved
        if moved.any() and not f.join_by_id:
            action = np.where(moved, in_pool.argmax(axis=1), s.action).astype(s.action.dtype)
            artwork = np.where(moved, last, s.artwork).astype(s.artwork.dtype)
    # Misattribution to a tile: the play's events go to the tile before it on the page (after it
    # for a visit's first tile; nowhere else to go on a one-tile page). Impressions are grouped by visit.
    target = np.arange(n)
    if moved.any() and not to_previous:
        visit = d.visit if d.visit is not None else np.arange(n)
        prev_same = np.r_[False, visit[1:] == visit[:-1]]
        next_same = np.r_[visit[:-1] == visit[1:], False]
        target = np.where(moved & prev_same, target - 1, np.where(moved & next_same, target + 1, target))
    if not to_previous:
        counts[:, _C["misattributed"]] = target != np.arange(n)
    join_fix = counts[:, _C["events_skewed"]] + counts[:, _C["misattributed"]]
    counts[:, _C["repair_join_by_id"]] = join_fix if f.join_by_id else 0
    if f.join_by_id:
        target = np.arange(n)
    joined = np.zeros((n, 3), bool)
    np.logical_or.at(joined, target, credited)                       # events OR-ed onto their row
    dup_joined = np.zeros(n, np.int64)
    np.add.at(dup_joined, target, (dup & credited).sum(axis=1))

    # Rows: a logged impression repeated once per joined duplicate (the naive join fans out),
    # then its unrendered twin.
    logged = ~unlogged
    copies = np.where(logged, 1 + (0 if f.dedup else dup_joined), 0)
    counts[:, _C["repair_dedup"]] = np.where(logged, dup_joined, 0) if f.dedup else 0
    twin = phantom & (not f.require_render)
    counts[:, _C["unrendered"]] = phantom
    counts[:, _C["repair_require_render"]] = phantom & bool(f.require_render)
    per_row = copies + twin
    rows = np.repeat(np.arange(n), per_row)
    last_copy = np.cumsum(per_row) - 1                               # a twin is its impression's last row
    rendered = np.ones(rows.size, bool)
    rendered[last_copy[twin]] = False
    fb = np.zeros(n, bool) if fallback is None else fallback
    counts[:, _C["fallback"]] = fb
    if pscore_repaired is not None:
        counts[:, _C["repair_rendered_propensity"]] = pscore_repaired
    out = joined[rows] & rendered[:, None]
    flag = fb[rows] & (not f.fallback_logged_as_policy)
    # An unrendered twin is a record of the image served, not the target of a play.
    action = np.where(rendered, action[rows], s.action[rows])
    artwork = np.where(rendered, artwork[rows], s.artwork[rows])
    return Reported(rows, action, artwork, rendered, out[:, 0], out[:, 1], out[:, 2], s.propensity[rows],
                    flag, counts)
