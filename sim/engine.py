"""The closed loop on a SimPy clock (unit: minutes).

Actors (SimPy processes):

* ``serving`` -- every serving window, the visits of each member block that fall in the window
  (inhomogeneous Poisson, diurnal curve in the member's local time) are served together;
  ``member_visits`` replaces it in reference mode with one process per member and one batch per
  visit;
* ``title_launches`` -- new titles become available;
* ``policy_trainer`` / ``deploy`` -- every ``retrain_hours``, each cell's policy takes the
  statistics of the logs that have arrived and deploys a new version after ``deploy_delay``;
* ``ranker_trainer`` -- every ``ranker_retrain_hours`` the rankers refit on the same logs.

Delays: an impression's outcomes (click -> play -> quality) occur later than the impression, and
are credited only inside the attribution window; the attributed record reaches the trainers
``log_delay`` after the attribution window closes. Member history changes when the click or play
happens.
"""
from __future__ import annotations

import math
import time as wallclock
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from sim.bias import RankerDrift, TitleExposure
from sim.config import ExperimentConfig
from sim.homepage import GenreIndex, Ranker, build_ranker
from sim.features import visit_context
from sim.logs import ImpressionLog, VisitLog
from sim.metrics import MetricsAccumulator
from sim.policies import ArtworkPolicy, build_policy
from sim.serving import Visits, ranker_stats, render, serve_cell
from sim.streams import generator, stable_unit_hash
from sim.world import World, build_world
from sim.world.shown import ShownArtworks

SimTime = float


@dataclass
class Cell:
    name: str
    index: int
    share: float
    policy: ArtworkPolicy
    ranker: Ranker | None          # None: the experiment's shared ranker


@dataclass
class _Queue:
    """Statistics waiting in the log pipeline: (available_at, stats), in time order.

    The trainer takes them every ``period`` minutes, so statistics that become available within
    the same period are summed as they arrive (the item keeps the latest ``available_at``): the
    queue holds a few items per cadence, not one per serving window and member block.
    """

    period: float
    items: deque = field(default_factory=deque)

    def put(self, available_at: float, stats: Any) -> None:
        if stats is None:   # a policy that does not learn
            return
        bucket = math.ceil(available_at / self.period)
        if self.items and math.ceil(self.items[-1][0] / self.period) == bucket:
            self.items[-1] = (max(available_at, self.items[-1][0]), self.items[-1][1] + stats)
        else:
            self.items.append((available_at, stats))

    def take(self, now: float):
        """Sum of every statistic available at ``now`` (None if nothing arrived)."""
        total = None
        while self.items and self.items[0][0] <= now:
            s = self.items.popleft()[1]
            total = s if total is None else total + s
        return total


def allocate_cells(n_members: int, shares: list[float], salt: str) -> np.ndarray:
    """Cell index per member from a stable hash of (member id, experiment name)."""
    u = stable_unit_hash(np.arange(n_members), salt)
    edges = np.cumsum(shares)
    edges[-1] = 1.0 + 1e-12
    return np.searchsorted(edges, u, side="right").astype(np.int64)


class Simulation:
    """One experiment: world, cells, engine. ``run()`` returns the summary dict."""

    def __init__(self, config: ExperimentConfig):
        self.config = config
        eng = config.engine
        self.horizon = eng.days * 1440.0
        # Build everything that can fail on bad input before the world (which is the slow part).
        specs = [(f"experiment.cells[{i}].policy", c.policy) for i, c in enumerate(config.cells)]
        # Each cell's policy gets its own seed for deploy-time Monte Carlo.
        policies = [build_policy(spec, key, seed=int(generator(config.seed, "policy-seed", i).integers(2**31)))
                    for i, (key, spec) in enumerate(specs)]
        self.world: World = build_world(config.world, config.seed, self.horizon)
        w = self.world
        self.genre_index = GenreIndex(w.catalog)
        self.launched = w.catalog.launched(0.0)
        self.shared_ranker = build_ranker(config.ranker, w.catalog, w.members, w.response)
        self.cells: list[Cell] = []
        for i, (c, policy) in enumerate(zip(config.cells, policies)):
            policy.reset(w.catalog)
            if policy.reads_ground_truth:
                policy.attach_ground_truth(w.response)
            own = None if c.ranker is None else build_ranker(c.ranker, w.catalog, w.members, w.response)
            self.cells.append(Cell(c.name, i, c.share, policy, own))
        # Remember shown images only when something reads them (memory: members x shown_memory).
        tracks_shown = (config.world.response.artwork_change_penalty > 0
                        or any(c.policy.uses_shown_artworks for c in self.cells))
        self.shown = ShownArtworks(w.members.n_members, config.world.shown_memory) if tracks_shown else None
        self.member_cell = allocate_cells(w.members.n_members, [c.share for c in self.cells], config.name)
        self.metrics = MetricsAccumulator(w.members.n_members, [c.name for c in self.cells],
                                          self.horizon, eng.snapshot_hours * 60.0)
        self.log: ImpressionLog | None = None   # set by the runner when logging to disk
        self.visit_log: VisitLog | None = None
        self.policy_queues = [_Queue(eng.retrain_hours * 60.0) for _ in self.cells]
        self.ranker_queues = {id(r): _Queue(eng.ranker_retrain_hours * 60.0) for r in self._rankers()}
        self._history = []          # pending (time, member, title, played) chunks
        self._visit_counter = 0
        self.impressions = 0
        self._block_tables = self._build_block_tables()
        self.deploys = 0
        self.exposure = TitleExposure(max(1, math.ceil(eng.days)), len(self.cells), w.catalog.n_titles)
        self.drift = RankerDrift(self, [
            ",".join(c.name for c in self.cells if self._ranker_of(c) is r) for r in self._rankers()])

    # ------------------------------------------------------------------------------------
    def _rankers(self) -> list[Ranker]:
        return [self.shared_ranker] + [c.ranker for c in self.cells if c.ranker is not None]

    def _ranker_of(self, cell: Cell) -> Ranker:
        return cell.ranker if cell.ranker is not None else self.shared_ranker

    def _build_block_tables(self):
        """Per member block and time zone: member ids and cumulative visit rates."""
        m = self.world.members
        B = self.config.engine.member_block
        tables = []
        for lo in range(0, m.n_members, B):
            ids = np.arange(lo, min(lo + B, m.n_members))
            per_tz = []
            for off in np.unique(m.utc_offset_hours[ids]):
                sel = ids[m.utc_offset_hours[ids] == off]
                per_tz.append((float(off), sel, np.cumsum(m.visit_rate[sel])))
            tables.append(per_tz)
        return tables

    def diurnal_integral(self, t0: float, t1: float, utc_offset: float) -> float:
        """Integral over [t0, t1] minutes of the diurnal multiplier (mean 1) in local time."""
        wc = self.config.world
        omega = 2 * math.pi / 1440.0
        shift = (utc_offset - wc.diurnal_peak_hour) * 60.0
        a = wc.diurnal_amplitude
        return (t1 - t0) + a / omega * (math.sin(omega * (t1 + shift)) - math.sin(omega * (t0 + shift)))

    def diurnal_rate(self, t: float, utc_offset: np.ndarray) -> np.ndarray:
        wc = self.config.world
        local_min = t + (utc_offset - wc.diurnal_peak_hour) * 60.0
        return 1.0 + wc.diurnal_amplitude * np.cos(2 * math.pi * local_min / 1440.0)

    # ---- arrivals -----------------------------------------------------------------------
    def window_arrivals(self, block: int, window: int, t0: float, t1: float) -> Visits:
        """Visits of one member block in [t0, t1): Poisson counts per time zone, members drawn
        in proportion to their rates (equivalent to independent Poisson processes per member)."""
        rng = generator(self.config.seed, "arrivals", block, window)
        members, times = [], []
        for off, ids, cum in self._block_tables[block]:
            lam = cum[-1] * self.diurnal_integral(t0, t1, off)
            n = rng.poisson(lam)
            if n == 0:
                continue
            pick = np.searchsorted(cum, rng.random(n) * cum[-1], side="right")
            members.append(ids[np.minimum(pick, ids.size - 1)])
            times.append(rng.uniform(t0, t1, n))
        if not members:
            return Visits(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64))
        member, t = np.concatenate(members), np.concatenate(times)
        order = np.argsort(t, kind="stable")
        return Visits(member[order], t[order], self._scroll_depth(rng, member.size))

    def _scroll_depth(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Rows a member would scroll through (not capped: each ranker's page has its own
        number of rows, and rendering keeps only the rows that exist)."""
        cont = self.config.world.response.scroll_continue
        if cont >= 1.0:
            return np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        return rng.geometric(1.0 - cont, size=n)

    # ---- serving --------------------------------------------------------------------------
    def serve(self, visits: Visits, keys: tuple[int, ...]) -> None:
        """Serve a batch of visits; ``keys`` key the ranker/policy/response streams."""
        if len(visits) == 0:
            return
        seed = self.config.seed
        eng = self.config.engine
        ids = np.arange(self._visit_counter, self._visit_counter + len(visits))
        self._visit_counter += len(visits)
        visit_cell = self.member_cell[visits.member]
        self.metrics.add_visits(visits.member, visit_cell, visits.time)
        visit_ctx = visit_context(self.world.members, self.world.catalog, visits.member, visits.time)
        if self.visit_log is not None:
            self.visit_log.append(ids, visits.member, visits.time, visit_ctx)
        available_at = float(visits.time.max()) + eng.attribution_minutes + eng.log_delay_minutes
        # Every ranker and cell draws from its own keyed stream, so one cell's impressions never
        # shift another cell's random numbers (common random numbers across runs).
        for r_index, ranker in enumerate(self._rankers()):
            cells = [c for c in self.cells if self._ranker_of(c) is ranker]
            if not cells:
                continue
            in_group = np.isin(visit_cell, [c.index for c in cells])
            if not in_group.any():
                continue
            sub = Visits(visits.member[in_group], visits.time[in_group], visits.rows_viewed[in_group])
            sub_ids, sub_ctx = ids[in_group], visit_ctx[in_group]
            v, row, col, title, rpscore = render(self, sub, ranker, generator(seed, "ranker", *keys, r_index),
                                                 with_pscore=True)
            imp_cell = self.member_cell[sub.member[v]]
            rstats = None
            for cell in cells:
                mine = np.flatnonzero(imp_cell == cell.index)
                if mine.size == 0:
                    continue
                served = serve_cell(self, cell, sub, sub_ids, sub_ctx, v[mine], row[mine], col[mine], title[mine],
                                    generator(seed, "policy", *keys, cell.index),
                                    generator(seed, "response", *keys, cell.index))
                self._record(cell, served, available_at)
                rs = ranker_stats(self, served, ranker, rpscore[mine])
                rstats = rs if rstats is None else rstats + rs
            if rstats is not None:
                self.ranker_queues[id(ranker)].put(available_at, rstats)

    def _record(self, cell: Cell, s, available_at: float) -> None:
        d = s.decisions
        n = d.member.size
        self.impressions += n
        self.metrics.add_impressions(d.member, cell.index, d.time, s.click, s.play, s.quality_play,
                                     s.minutes, s.expected_take, s.oracle_take, s.uniform_take)
        self.policy_queues[cell.index].put(available_at, cell.policy.sufficient_stats(s.credited))
        self.exposure.add(cell.index, d.time, d.title, s.play)
        if self.log is not None:
            cols = self.config.ranker.columns if cell.ranker is None else cell.ranker.cfg.columns
            self.log.append({
                "time": d.time, "visit": d.visit, "member": d.member, "cell": cell.name,
                "title": d.title, "artwork": s.artwork, "action": s.action,
                "n_candidates": d.mask.sum(axis=1), "familiar": d.familiar, "row": d.row, "column": d.column,
                "position": d.row.astype(np.int32) * cols + d.column, "pscore": s.propensity,
                "policy": cell.policy.name, "model_version": np.full(n, cell.policy.model_version_),
                "click": s.click, "play": s.play, "quality_play": s.quality_play,
                "minutes": s.minutes, "reward": s.credited.quality_play,
                "expected_take": s.expected_take, "uniform_take": s.uniform_take,
                "oracle_take": s.oracle_take})
        # History changes when the click (interaction) or play happens, not at the impression.
        clicked = np.flatnonzero(s.click)
        if clicked.size:
            self._history.append((np.where(s.play[clicked], s.play_time[clicked], s.click_time[clicked]),
                                  d.member[clicked], d.title[clicked], s.play[clicked]))

    def apply_history(self, now: float) -> None:
        """Apply member-history events that have happened by ``now``."""
        if not self._history:
            return
        t, m, ti, pl = (np.concatenate(x) for x in zip(*self._history))
        due = t <= now
        if due.any():
            self.world.members.record_interactions(m[due], ti[due], self.world.catalog.title_genres, pl[due])
        keep = ~due
        self._history = [(t[keep], m[keep], ti[keep], pl[keep])] if keep.any() else []

    # ---- SimPy processes --------------------------------------------------------------------
    def serving(self, env: simpy.Environment, progress):
        eng = self.config.engine
        W = eng.window_minutes
        n_windows = math.ceil(self.horizon / W)
        for w in range(n_windows):
            t0, t1 = w * W, min((w + 1) * W, self.horizon)
            self.apply_history(t0)
            for b in range(len(self._block_tables)):
                self.serve(self.window_arrivals(b, w, t0, t1), (b, w))
            if progress is not None:
                progress(t1, self.impressions)
            yield env.timeout(t1 - t0)

    def member_visits(self, env: simpy.Environment, member: int):
        """Reference mode: one member's visits by thinning, each served as its own batch."""
        rate = float(self.world.members.visit_rate[member])
        offset = float(self.world.members.utc_offset_hours[member])
        peak = rate * (1.0 + self.config.world.diurnal_amplitude)
        rng = generator(self.config.seed, "reference-arrivals", member)
        k = 0
        while True:
            gap = rng.exponential(1.0 / peak)
            if env.now + gap >= self.horizon:
                return
            yield env.timeout(gap)
            if rng.random() * peak > rate * self.diurnal_rate(env.now, np.array(offset)):
                continue
            self.apply_history(env.now)
            visits = Visits(np.array([member]), np.array([env.now]), self._scroll_depth(rng, 1))
            self.serve(visits, (member, k, 1 << 20))
            k += 1

    def title_launches(self, env: simpy.Environment):
        launch = self.world.catalog.launch_time
        for t in np.argsort(launch, kind="stable"):
            if launch[t] > env.now:
                yield env.timeout(launch[t] - env.now)
            self.launched[t] = True

    def policy_trainer(self, env: simpy.Environment, cell: Cell):
        every = self.config.engine.retrain_hours * 60.0
        while True:
            yield env.timeout(every)
            stats = self.policy_queues[cell.index].take(env.now)
            if stats is not None:
                env.process(self.deploy(env, cell, stats))

    def deploy(self, env: simpy.Environment, cell: Cell, stats):
        yield env.timeout(self.config.engine.deploy_delay_minutes)
        cell.policy.update(stats)
        self.deploys += 1

    def ranker_trainer(self, env: simpy.Environment, ranker: Ranker):
        every = self.config.engine.ranker_retrain_hours * 60.0
        self.drift.record(env.now, ranker)
        while True:
            yield env.timeout(every)
            stats = self.ranker_queues[id(ranker)].take(env.now)
            if stats is not None and not ranker.frozen:
                ranker.fit(stats, env.now)
            self.drift.record(env.now, ranker)

    # ---- run --------------------------------------------------------------------------------
    def run(self, progress=None) -> dict:
        """Run to the horizon. ``progress(sim_minutes, impressions)`` is called per window."""
        env = simpy.Environment()
        start = wallclock.perf_counter()
        if self.config.engine.mode == "batched":
            env.process(self.serving(env, progress))
        else:
            for m in range(self.world.members.n_members):
                env.process(self.member_visits(env, m))
        env.process(self.title_launches(env))
        for cell in self.cells:
            env.process(self.policy_trainer(env, cell))
        for r in self._rankers():
            env.process(self.ranker_trainer(env, r))
        # Events scheduled exactly at the horizon (a retrain at the last minute) do not run:
        # a model deployed after the end could not serve anyone.
        env.run(until=self.horizon)
        elapsed = wallclock.perf_counter() - start
        for log in (self.log, self.visit_log):
            if log is not None:
                log.close()
        summary = self.metrics.summary(self.member_cell, self.config.control)
        summary["run"] = {
            "impressions": int(self.impressions), "visits": int(self._visit_counter),
            "wall_seconds": elapsed, "impressions_per_second": self.impressions / max(elapsed, 1e-9),
            "deploys": self.deploys, "simulated_days": self.config.engine.days,
            "propensity_estimated": {c.name: bool(c.policy.propensity_is_estimated) for c in self.cells},
            "final_model_version": {c.name: int(c.policy.model_version_) for c in self.cells},
            "log_rows": 0 if self.log is None else self.log.rows_written,
        }
        summary["ranker_drift"] = self.drift.rows
        return summary
