"""The simulator's members' side, served a batch of visits at a time for an outside agent.

No second simulator: the world (:func:`sim.world.build_world`), the ranker
(:func:`sim.homepage.build_ranker`), the arrivals, history and metrics
(:class:`sim.shard.ShardServer`), the page layout (:func:`sim.serving.render`) and the members'
responses (:func:`sim.serving.serve_cell`) are the simulator's own. What differs is who chooses
the artwork: the agent, through :class:`AgentActions` (a policy that plays back the agent's
choices), and when learning happens: in the agent, between visits.

The world evolves as in the simulator: members' histories change when they click or play,
titles launch, and the ranker is retrained every ``engine.ranker_retrain_hours`` on the
statistics that have reached the trainers (after the attribution window and the log delay).

One member block holds every member, so the visits of the whole world arrive in one time-ordered
stream (the simulator's arrival process, drawn an hour at a time from streams keyed by (seed,
hour)); :meth:`VisitLoop.next_pages` takes the next ``n`` visits of it (or the next serving
window's) and lays out their pages; :meth:`VisitLoop.serve` shows the agent's images and draws
the responses.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np

from sim.config import ExperimentConfig, experiment_config_from_dict
from sim.features import context_width, visit_context
from sim.homepage import build_ranker
from sim.policies.base import ArtworkPolicy, DecisionBatch, Selection
from sim.serving import Visits, ranker_stats, render, serve_cell
from sim.logs import visit_ids
from sim.shard import BlockOutput, Cell, ShardServer, trainer_period
from sim.streams import generator
from sim.world import build_world

#: Arrivals are drawn an hour of simulated time at a time (one keyed stream per hour, the
#: simulator's Poisson process per member); visits are then served one or ``n`` at a time.
ARRIVAL_CHUNK_MINUTES = 60.0

#: Outcomes an episode's reward can count, per visit.
REWARDS = ("quality_play", "play", "click", "minutes")


class AgentActions(ArtworkPolicy):
    """Plays back the agent's choices: ``action`` (n,) candidate index per impression, set by
    :meth:`VisitLoop.serve` before serving. Propensity 1 (the agent's choice is deterministic
    given what it saw; an agent that randomises knows its own probabilities). Not registered:
    it has no ``name`` of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.action_: np.ndarray = np.zeros(0, np.int64)

    def select(self, batch: DecisionBatch, rng: np.random.Generator) -> Selection:
        rows = np.arange(len(batch))
        return Selection(self.action_, batch.candidates[rows, self.action_], np.ones(len(batch)))


@dataclass
class Pages:
    """The pages of ``v`` visits, as the agent sees them (``T = rows * columns`` tiles in
    reading order, ``K`` = most images per title, ``G`` genres, ``d`` context width).

    member, time : (v,) the visiting member and the minute of the visit
    context : (v, d) float32   observable member context (:func:`sim.features.visit_context`)
    title : (v, T) int64       title on each tile, -1 where nothing is rendered
    familiar : (v, T) int8     the member interacted with the tile's title before
    artwork : (v, T, K) int64  flat ids of the tile's candidate images, -1 padded
    mask : (v, T, K) int8      valid candidates
    artwork_theme : (v, T, K, G) float32   candidate images' features (theme over genres)
    title_genres : (v, T, G) float32       the tile's title's genre mixture
    """

    member: np.ndarray
    time: np.ndarray
    context: np.ndarray
    title: np.ndarray
    familiar: np.ndarray
    artwork: np.ndarray
    mask: np.ndarray
    artwork_theme: np.ndarray
    title_genres: np.ndarray
    # Internal: the rendered impressions (visit index, row, column, title, ranker pscore) and
    # the visits, kept for serve().
    impressions: tuple = ()
    visits: Any = None
    ids: Any = None

    def __len__(self) -> int:
        return int(self.member.shape[0])

    def visit(self, i: int) -> "Pages":
        """The page of the ``i``-th visit alone (its impressions renumbered to visit 0)."""
        v, row, col, title, pscore = self.impressions
        mine = v == i
        one = slice(i, i + 1)
        return Pages(self.member[one], self.time[one], self.context[one], self.title[one], self.familiar[one],
                     self.artwork[one], self.mask[one], self.artwork_theme[one], self.title_genres[one],
                     (v[mine] - i, row[mine], col[mine], title[mine], pscore[mine]),
                     Visits(self.visits.member[one], self.visits.time[one], self.visits.rows_viewed[one]),
                     self.ids[one])


class VisitLoop:
    """The world serving visits in time order, ``n`` at a time, for an agent's images.

    ``config``: a plain (partial) experiment config dict as :func:`sim.runner.run_experiment`
    takes (``world``, ``engine``, ``ranker``, ``seed``); its cells are ignored (the agent is the
    only cell). ``reward``: what a visit's reward counts (:data:`REWARDS`)."""

    def __init__(self, config: Mapping[str, Any], seed: int, reward: str = "quality_play"):
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {', '.join(REWARDS)}, got {reward!r}")
        self.reward = reward
        cfg = dict(config)
        engine = {**(cfg.get("engine") or {}), "progress": False, "log_impressions": False,
                  "backend": "local", "shards": 1}
        cfg.update(seed=int(seed), engine=engine, experiment={
            "name": "gym", "control": "agent", "cells": [{"name": "agent", "share": 1.0, "policy": {"name": "uniform"}}]})
        drawn = experiment_config_from_dict(cfg)
        # The world is drawn in the configured member blocks, as the simulator draws it; the loop
        # serves the whole population as one block of arrivals.
        self.config: ExperimentConfig = replace(drawn, engine=replace(
            drawn.engine, member_block=max(drawn.world.n_members, 1)))
        self.world_block = drawn.engine.member_block
        c = self.config
        self.horizon = c.engine.days * 1440.0
        self.world = build_world(c.world, c.seed, self.horizon, self.world_block)
        w = self.world
        self.ranker = build_ranker(c.ranker, w.catalog, w.members, w.response)
        self.agent = AgentActions()
        self.agent.reset(w.catalog)
        self.cell = Cell("agent", 0, 1.0, self.agent, None)
        self.shard = ShardServer(c, w, [self.cell], [self.ranker], np.zeros(w.members.n_members, np.int64),
                                 range(1), np.zeros(0, np.int64), log=None)
        self.rows, self.columns = self.ranker.cfg.rows, self.ranker.cfg.columns
        self.tiles = self.rows * self.columns
        # Spaces must not depend on the seed: pad to the most images a title may have.
        self.max_artworks = c.world.artworks_max
        self.context_width = context_width(w.catalog.n_genres, len(w.members.countries))
        self._queue = Visits(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64))
        self._queue_ids = np.zeros(0, np.int64)
        self._window = 0
        self._batches = 0
        self._rng: np.random.Generator | None = None    # the current batch's stream (next_pages)
        # Ranker statistics in the log pipeline, summed per retrain that will take them.
        self._pending: dict[int, Any] = {}
        self._retrains = 0
        self.visits_served = 0
        self.impressions_served = 0

    # ---- arrivals ---------------------------------------------------------------------------
    def _fill(self, n: int) -> None:
        """Queue windows of arrivals until ``n`` visits wait or the horizon is reached."""
        W = ARRIVAL_CHUNK_MINUTES
        while len(self._queue) < n and self._window * W < self.horizon:
            w = self._window
            t0, t1 = w * W, min((w + 1) * W, self.horizon)
            new = self.shard.window_arrivals(0, w, t0, t1)
            ids = visit_ids(w, len(new), f"in arrival hour {w}",
                            "a smaller world.n_members or world.visits_per_day")
            q = self._queue
            self._queue = Visits(np.r_[q.member, new.member], np.r_[q.time, new.time],
                                 np.r_[q.rows_viewed, new.rows_viewed])
            self._queue_ids = np.r_[self._queue_ids, ids]
            self._window += 1

    def remaining_at_least(self, n: int) -> bool:
        """Whether ``n`` more visits arrive before the horizon."""
        self._fill(n)
        return len(self._queue) >= n

    # ---- the world between visits ------------------------------------------------------------
    def _advance(self, now: float) -> None:
        """History events and launches up to ``now``; ranker retrains due by ``now`` (each on
        the statistics that reached the trainers by its minute, as in the simulator)."""
        every = self.config.engine.ranker_retrain_hours * 60.0
        while (self._retrains + 1) * every <= now:
            self._retrains += 1
            t = self._retrains * every
            self.shard.apply_history(t)
            stats = self._pending.pop(self._retrains, None)
            if stats is not None and not self.ranker.frozen:
                self.ranker.fit(stats, t)
        self.shard.advance_to(now)

    def _queue_ranker_stats(self, available_at: float, stats: Any) -> None:
        every = self.config.engine.ranker_retrain_hours * 60.0
        # Statistics that arrive while a retrain is overdue go to the next one.
        period = max(trainer_period(available_at, every), self._retrains + 1)
        old = self._pending.get(period)
        self._pending[period] = stats if old is None else old + stats

    # ---- one batch -------------------------------------------------------------------------
    def next_pages(self, n: int | None = None) -> Pages:
        """Take the next ``n`` visits (fewer at the horizon) and lay out their pages; without
        ``n``, the visits of the next serving window that has any (``engine.window_minutes``:
        pages laid out together with the world as it was at the window's start, as the
        simulator does)."""
        if n is None:
            self._fill(1)
            q = self._queue
            if len(q):
                W = self.config.engine.window_minutes
                end = (np.floor(q.time[0] / W) + 1) * W
                self._fill_until(end)
                take = int(np.searchsorted(self._queue.time, end, side="left"))
                return self._take(take, start=float(np.floor(q.time[0] / W) * W))
            return self._take(0)
        self._fill(n)
        return self._take(min(n, len(self._queue)))

    def _fill_until(self, minute: float) -> None:
        """Queue arrival chunks until every visit before ``minute`` is queued."""
        while self._window * ARRIVAL_CHUNK_MINUTES < min(minute, self.horizon):
            self._fill(len(self._queue) + 1)

    def _take(self, take: int, start: float | None = None) -> Pages:
        q = self._queue
        visits = Visits(q.member[:take], q.time[:take], q.rows_viewed[:take])
        ids = self._queue_ids[:take]
        self._queue = Visits(q.member[take:], q.time[take:], q.rows_viewed[take:])
        self._queue_ids = self._queue_ids[take:]
        if take:
            self._advance(float(visits.time[0]) if start is None else start)
        # One keyed stream per batch (deriving a generator costs more than serving one visit):
        # the ranker draws from it first, the members' responses in serve().
        self._rng = generator(self.config.seed, "gym-batch", self._batches)
        imps = render(self.shard.context, visits, self.ranker, self._rng, with_pscore=True)
        return self._pages(visits, ids, imps)

    def _pages(self, visits: Visits, ids: np.ndarray, imps: tuple) -> Pages:
        w = self.world
        cat = w.catalog
        v, row, col, title, _ = imps
        n, T, K, G = len(visits), self.tiles, self.max_artworks, cat.n_genres
        tile = row.astype(np.int64) * self.columns + col
        grid_title = np.full((n, T), -1, np.int64)
        grid_title[v, tile] = title
        familiar = np.zeros((n, T), np.int8)
        familiar[v, tile] = w.members.has_interacted(visits.member[v], title)
        artwork = np.full((n, T, K), -1, np.int64)
        artwork[v, tile, :cat.max_artworks] = cat.pool[title]
        theme = np.zeros((n, T, K, G), np.float32)
        valid = artwork >= 0
        theme[valid] = cat.artwork_theme[artwork[valid]]
        genres = np.zeros((n, T, G), np.float32)
        genres[v, tile] = cat.title_genres[title]
        context = visit_context(w.members, cat, visits.member, visits.time)
        return Pages(visits.member.copy(), visits.time.copy(), context, grid_title, familiar, artwork,
                     valid.astype(np.int8), theme, genres, imps, visits, ids)

    def serve(self, pages: Pages, actions: np.ndarray) -> dict[str, np.ndarray]:
        """Show the agent's images on ``pages`` and draw the members' responses.

        ``actions`` (v, T) int: the candidate index per tile; an index past a title's pool
        wraps around it (so any ``MultiDiscrete`` sample is a valid page), empty tiles ignore it.
        Returns per visit ``reward`` (v,) and per tile ``tile_reward`` (v, T) of the chosen
        outcome, and ``rendered`` (v, T) bool."""
        n, T = len(pages), self.tiles
        out = {"reward": np.zeros(n), "tile_reward": np.zeros((n, T)), "rendered": pages.title >= 0}
        if n == 0:
            return out
        v, row, col, title, pscore = pages.impressions
        tile = row.astype(np.int64) * self.columns + col
        actions = np.asarray(actions, dtype=np.int64).reshape(n, T)
        pool = self.world.catalog.pool_size[title]
        self.agent.action_ = np.mod(actions[v, tile], pool)
        visits = pages.visits
        served = serve_cell(self.shard.context, self.cell, visits, pages.ids, pages.context, v, row, col, title,
                            self._rng, self._rng)      # AgentActions draws nothing
        eng = self.config.engine
        available_at = float(visits.time.max()) + eng.attribution_minutes + eng.log_delay_minutes
        metrics = self.shard.metrics[0]
        metrics.add_visits(visits.member, np.zeros(n, np.int64), visits.time)
        self.shard._record(self.cell, served, metrics, self.shard._out.setdefault(0, BlockOutput()),
                           available_at, None)
        self._queue_ranker_stats(available_at, ranker_stats(self.shard.context, served, self.ranker, pscore))
        outcome = getattr(served, self.reward)
        value = np.asarray(outcome, dtype=np.float64)
        out["tile_reward"][v, tile] = value
        out["reward"] = np.bincount(v, weights=value, minlength=n)
        self._batches += 1
        self.visits_served += n
        self.impressions_served += int(v.size)
        return out

    def summary(self) -> dict:
        """The simulator's metric summary of the visits served so far (take fraction, CTR, ...)."""
        return self.shard.metrics[0].summary(np.zeros(self.world.members.n_members, np.int64), "agent")
