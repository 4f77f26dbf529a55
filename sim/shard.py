"""Member shards: the members' side of the closed loop (README, "Scale").

A shard owns whole member blocks (``engine.member_block`` consecutive member ids each) and
everything that belongs to those members: their visits, the pages and artworks they are shown,
their responses, their history, the images they last saw and their per-member metric sums. The
models it serves with are the driver's (:class:`sim.engine.Simulation`): shared objects when the
shard runs in the driver's process, replicas refreshed from each new version otherwise. Models
are frozen while a shard serves a step.

Shard-count invariance: every random stream is keyed by (member block, window, ...), never by
shard, and everything summed across blocks (policy and ranker statistics, metric time series)
is kept per block, so that the driver adds blocks in block order. Float sums then happen in the
same order whatever the number of shards or where they run, and results are bit-identical.
"""
from __future__ import annotations

import io
import math
import pickle
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from sim.bias import TitleExposure
from sim.features import visit_context
from sim.homepage import GenreIndex
from sim.logs import LogTarget, visit_ids
from sim.memory import peak_rss_mb, rss_mb
from sim.metrics import MEMBER_COLUMNS, MetricsAccumulator
from sim.pipeline.stage import Pipeline, impression_ids
from sim.serving import ServingContext, Visits, ranker_stats, render, serve_cell
from sim.streams import generator
from sim.world.members import block_members
from sim.world.shown import ShownArtworks


@dataclass
class Cell:
    name: str
    index: int
    share: float
    policy: Any                  # ArtworkPolicy
    ranker: Any                  # Ranker, or None: the experiment's shared ranker


def ranker_of(cell: Cell, rankers: list):
    """The ranker that lays out the cell's pages: its own, or the shared one (``rankers[0]``)."""
    return cell.ranker if cell.ranker is not None else rankers[0]


@dataclass
class BlockOutput:
    """Statistics one member block produced in one step, summed per trainer period.

    ``policy[(cell, period)]`` and ``ranker[(ranker index, period)]`` are ``[available_at,
    stats]``: the latest time any of them reaches the trainers, and their sum in window order.
    ``period`` is ``ceil(available_at / cadence)``, the retrain that will take them."""

    policy: dict = field(default_factory=dict)
    ranker: dict = field(default_factory=dict)


@dataclass
class StepResult:
    """What a shard returns after serving a step (everything the driver reduces; the shard
    wrote the step's log rows itself)."""

    blocks: dict[int, BlockOutput]
    impressions: int
    visits: int
    drift: dict                  # (ranker index, minute) -> (positions in the sample, scores rows, truth rows)
    rss_mb: float = float("nan")  # the shard's process at the end of the step (serve_step only)


@dataclass
class ShardTotals:
    """A shard's end-of-run totals: per-block metric accumulators, title exposure, and the log
    part files it wrote (``{"logs": [names], "visit_context": [names]}``) with their impression rows."""

    metrics: dict[int, MetricsAccumulator]
    exposure: TitleExposure
    log_parts: dict[str, list[str]] = field(default_factory=dict)
    log_rows: int = 0
    peak_rss_mb: float = float("nan")   # of the shard's process (the driver's, for backend local)


def trainer_period(available_at: float, every: float) -> int:
    """The retrain (``k`` of the trainer at minute ``k * every``) that takes statistics which
    reach the trainers at ``available_at``."""
    return math.ceil(available_at / every)


def block_ranges(n_members: int, block: int, shards: int) -> list[range]:
    """The member blocks of each shard: contiguous and as equal as possible. More shards than
    blocks would leave some idle (each still building a world), so there are at most as many
    shards as blocks; results do not depend on the number."""
    n_blocks = math.ceil(n_members / block)
    shards = min(shards, n_blocks)
    edges = np.linspace(0, n_blocks, shards + 1).round().astype(int)
    return [range(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


# ---- model broadcast ------------------------------------------------------------------------
class _WorldPickler(pickle.Pickler):
    """Pickles models with references to the world replaced by names: each process has its own
    world (the same catalog; its own members), so a model version is a few MB, not a copy of
    every member's tastes."""

    def __init__(self, file, world):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._names = {id(world): "world", id(world.catalog): "catalog",
                       id(world.members): "members", id(world.response): "response"}

    def persistent_id(self, obj):
        return self._names.get(id(obj))


class _WorldUnpickler(pickle.Unpickler):
    def __init__(self, file, world):
        super().__init__(file)
        self._world = world

    def persistent_load(self, name):
        return self._world if name == "world" else getattr(self._world, name)


def dump_models(world, policies: list, rankers: list) -> bytes:
    """Serialize the cells' policies and the rankers (one pickle: shared references survive)."""
    buf = io.BytesIO()
    _WorldPickler(buf, world).dump((policies, rankers))
    return buf.getvalue()


def load_models(world, blob: bytes) -> tuple[list, list]:
    return _WorldUnpickler(io.BytesIO(blob), world).load()


# ---- the shard --------------------------------------------------------------------------------
class ShardServer:
    """Serves the visits of member blocks ``blocks`` (a range of block indices).

    ``cells`` and ``rankers`` (shared ranker first, then each cell's own) are the models to
    serve with; ``member_cell`` (n_members,) the cell of every member; ``log``: where the shard
    writes its log parts (None: not logged)."""

    def __init__(self, config, world, cells: list[Cell], rankers: list, member_cell: np.ndarray,
                 blocks: range, drift_sample: np.ndarray, log: LogTarget | None):
        self.config = config
        eng = config.engine
        self.world = world
        self.cells = cells
        self.rankers = rankers
        self.member_cell = member_cell
        self.blocks = blocks
        self.drift_sample = drift_sample
        self._drift_truth: np.ndarray | None = None
        # This shard's writers (they touch the disk only when they write a part).
        self.impression_log, self.visit_log = log.open(blocks.start) if log is not None else (None, None)
        self.log_enabled = log is not None
        self.horizon = eng.days * 1440.0
        n = world.members.n_members
        B = eng.member_block
        self.n_blocks = math.ceil(n / B)
        tracks_shown = (config.world.response.artwork_change_penalty > 0
                        or any(c.policy.uses_shown_artworks for c in cells)
                        or eng.faults.tracks_previous_image)      # plays misattributed to the last image
        mine = block_members(blocks, B, n)          # this shard's members
        lo, hi = mine.start, mine.stop
        shown = (ShownArtworks(max(hi - lo, 0), config.world.shown_memory, offset=lo)
                 if tracks_shown else None)
        self.context = ServingContext(world, eng, GenreIndex(world.catalog), world.catalog.launched(0.0), shown)
        self.block_tables = {b: self._block_table(b) for b in blocks}
        names = [c.name for c in cells]
        # The blocks' per-member rows are consecutive slices of one array: when this shard holds
        # every block and runs in the driver's process, the driver joins them without a copy
        # (MetricsAccumulator.combine); otherwise they are concatenated.
        sizes = [len(block_members(range(b, b + 1), B, n)) for b in blocks]
        rows = np.zeros((sum(sizes), len(MEMBER_COLUMNS)))
        starts = np.r_[0, np.cumsum(sizes)].astype(int)
        self.metrics = {b: MetricsAccumulator(size, names, self.horizon, eng.snapshot_hours * 60.0,
                                              member_offset=b * B, per_member=rows[lo:lo + size])
                        for b, size, lo in zip(blocks, sizes, starts)}
        self.exposure = TitleExposure(max(1, math.ceil(eng.days)), len(cells), world.catalog.n_titles)
        self._history: list = []        # pending (time, member, title, played) chunks
        # Statistics per block and trainer period, kept across steps until the period can get no
        # more: each period then reaches the driver once, summed in window order whatever the
        # step length (engine.sync_hours) or the number of shards.
        self._out: dict[int, BlockOutput] = {}
        # The production pipeline's faults (sim.pipeline); None: a perfect pipeline, nothing drawn.
        faults = eng.faults
        self.pipeline = (Pipeline(config.seed, faults, eng.attribution_minutes,
                                  config.world.response.quality_threshold_minutes) if faults.active else None)
        self._reset_step()

    def _reset_step(self) -> None:
        self._impressions = 0
        self._visits = 0

    def _block_table(self, b: int):
        """Member ids and cumulative visit rates of block ``b``, per time zone."""
        m = self.world.members
        B = self.config.engine.member_block
        ids = np.asarray(block_members(range(b, b + 1), B, m.n_members))
        per_tz = []
        for off in np.unique(m.utc_offset_hours[ids]):
            sel = ids[m.utc_offset_hours[ids] == off]
            per_tz.append((float(off), sel, np.cumsum(m.visit_rate[sel])))
        return per_tz

    def load_models(self, blob: bytes) -> None:
        """Replace the model replicas with a new version from the driver."""
        policies, self.rankers = load_models(self.world, blob)
        own = iter(self.rankers[1:])
        for cell, policy in zip(self.cells, policies):
            cell.policy = policy
            cell.ranker = None if cell.ranker is None else next(own)

    # ---- arrivals -----------------------------------------------------------------------
    def diurnal_integral(self, t0: float, t1: float, utc_offset: float) -> float:
        """Integral over [t0, t1] minutes of the diurnal multiplier (mean 1) in local time."""
        wc = self.config.world
        omega = 2 * math.pi / 1440.0
        shift = (utc_offset - wc.diurnal_peak_hour) * 60.0
        a = wc.diurnal_amplitude
        return (t1 - t0) + a / omega * (math.sin(omega * (t1 + shift)) - math.sin(omega * (t0 + shift)))

    def window_arrivals(self, block: int, window: int, t0: float, t1: float) -> Visits:
        """Visits of one member block in [t0, t1): Poisson counts per time zone, members drawn
        in proportion to their rates (equivalent to independent Poisson processes per member)."""
        rng = generator(self.config.seed, "arrivals", block, window)
        members, times = [], []
        for off, ids, cum in self.block_tables[block]:
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
        return Visits(member[order], t[order], self.scroll_depth(rng, member.size))

    def scroll_depth(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Rows a member would scroll through (not capped: each ranker's page has its own
        number of rows, and rendering keeps only the rows that exist)."""
        cont = self.world.response.scroll_continue
        if cont >= 1.0:
            return np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        return rng.geometric(1.0 - cont, size=n)

    # ---- a step ---------------------------------------------------------------------------
    def serve_step(self, t_start: float, t_end: float, drift_requests=()) -> StepResult:
        """Serve every window starting in [t_start, t_end) for this shard's blocks.

        ``drift_requests`` [(ranker index, minute)]: first score the drift sample's members this
        shard owns with those rankers (history applied up to ``t_start``)."""
        drift = {}
        if drift_requests:
            self.apply_history(t_start)
            drift = {(r, t): self.drift_scores(r, t) for r, t in drift_requests}
        eng = self.config.engine
        W = eng.window_minutes
        for w in range(math.ceil(t_start / W - 1e-9), math.ceil(min(t_end, self.horizon) / W - 1e-9)):
            t0, t1 = w * W, min((w + 1) * W, self.horizon)
            self.advance_to(t0)
            for b in self.blocks:
                visits = self.window_arrivals(b, w, t0, t1)
                ids = visit_ids(w * self.n_blocks + b, len(visits), f"of block {b} in one serving window",
                                "lower engine.member_block or engine.window_minutes")
                self.serve(visits, (b, w), b, ids)
        # Windows of later steps start at t_end or later, so their statistics reach the trainers
        # at t_end + attribution + log delay at the earliest: periods ending before that are done.
        result = self.take_result(drift, t_end + eng.attribution_minutes + eng.log_delay_minutes)
        result.rss_mb = rss_mb()
        return result

    def take_result(self, drift=None, closed_before: float = math.inf) -> StepResult:
        """The step's result, with the statistics of every trainer period that ends before
        ``closed_before`` (all of them by default: reference mode, one visit at a time)."""
        eng = self.config.engine
        periods = {"policy": eng.retrain_hours * 60.0, "ranker": eng.ranker_retrain_hours * 60.0}
        done: dict[int, BlockOutput] = {}
        for b, out in self._out.items():
            part = BlockOutput()
            for kind, every in periods.items():
                table = getattr(out, kind)
                for key in [k for k in table if k[1] * every < closed_before]:
                    getattr(part, kind)[key] = table.pop(key)
            if part.policy or part.ranker:
                done[b] = part
        result = StepResult(done, self._impressions, self._visits, drift or {})
        self._reset_step()
        return result

    def drift_scores(self, r_index: int, minute: float):
        """Positions (k,) in the drift sample of the members in this shard's blocks, their
        scores (k, n_titles) and their true fit (k, n_titles), both float32.

        The ranker scores the whole sample with the request's own stream, so that a random
        ranker draws the same numbers in every shard; rows of other shards' members (whose
        history and tastes this shard does not have) are dropped."""
        B = self.config.engine.member_block
        own = np.flatnonzero(np.isin(self.drift_sample // B, np.asarray(self.blocks)))
        if own.size == 0:
            empty = np.zeros((0, self.world.catalog.n_titles), np.float32)
            return own, empty, empty
        if self._drift_truth is None:       # the same (whole-sample) product in every shard
            self._drift_truth = np.asarray(self.world.response.title_scores(self.drift_sample), np.float32)
        rng = generator(self.config.seed, "bias-drift", r_index, int(round(minute)))
        scores = np.asarray(self.rankers[r_index].scores(self.drift_sample, rng), dtype=np.float32)
        return own, scores[own], self._drift_truth[own]

    def finish(self) -> ShardTotals:
        """End of the run: the last log parts written, the totals."""
        parts = {}
        for name, writer in (("logs", self.impression_log), ("visit_context", self.visit_log)):
            if writer is not None:
                writer.close()
                parts[name] = writer.part_names()
        rows = 0 if self.impression_log is None else self.impression_log.rows_written
        return ShardTotals(self.metrics, self.exposure, parts, rows, peak_rss_mb())

    # ---- serving ----------------------------------------------------------------------------
    def serve(self, visits: Visits, keys: tuple[int, ...], block: int, ids: np.ndarray) -> None:
        """Serve a batch of visits of member block ``block`` and log it: ``keys`` key the ranker,
        policy and response streams, ``ids`` (v,) number the visits. Batches come in log order
        ((window, block) in batched mode), so the shard's log parts are in it too."""
        if len(visits) == 0:
            return
        seed = self.config.seed
        eng = self.config.engine
        self._visits += len(visits)
        visit_cell = self.member_cell[visits.member]
        metrics = self.metrics[block]
        metrics.add_visits(visits.member, visit_cell, visits.time)
        visit_ctx = visit_context(self.world.members, self.world.catalog, visits.member, visits.time)
        session_cols: dict = {}      # per-visit session columns of the visit log (session models only)
        log: list | None = [] if self.log_enabled else None     # the batch's impression columns
        available_at = float(visits.time.max()) + eng.attribution_minutes + eng.log_delay_minutes
        out = self._out.setdefault(block, BlockOutput())
        # Every ranker and cell draws from its own keyed stream, so one cell's impressions never
        # shift another cell's random numbers (common random numbers across runs).
        for r_index, ranker in enumerate(self.rankers):
            cells = [c for c in self.cells if ranker_of(c, self.rankers) is ranker]
            if not cells:
                continue
            in_group = np.isin(visit_cell, [c.index for c in cells])
            if not in_group.any():
                continue
            sub = Visits(visits.member[in_group], visits.time[in_group], visits.rows_viewed[in_group])
            sub_ids, sub_ctx = ids[in_group], visit_ctx[in_group]
            v, row, col, title, rpscore = render(self.context, sub, ranker,
                                                 generator(seed, "ranker", *keys, r_index), with_pscore=True)
            imp_cell = self.member_cell[sub.member[v]]
            rstats = None
            for cell in cells:
                mine = np.flatnonzero(imp_cell == cell.index)
                if mine.size == 0:
                    continue
                serving = cell if self.pipeline is None else self.pipeline.serving_cell(cell, keys)
                served = serve_cell(self.context, serving, sub, sub_ids, sub_ctx,
                                    v[mine], row[mine], col[mine], title[mine],
                                    generator(seed, "policy", *keys, cell.index),
                                    generator(seed, "response", *keys, cell.index))
                reported = None if self.pipeline is None else self.pipeline.report(served, serving, keys)
                self._record(cell, served, metrics, out, available_at, log, reported)
                if log is not None and served.visits.end_reason is not None:
                    _session_columns(session_cols, len(visits), np.flatnonzero(in_group), served.visits)
                rs = ranker_stats(self.context, served, ranker, rpscore[mine])
                rstats = rs if rstats is None else rstats + rs
            if rstats is not None:
                _add_stats(out.ranker, (r_index, trainer_period(available_at, eng.ranker_retrain_hours * 60.0)),
                           available_at, rstats)
        if log is not None:
            if self.visit_log is not None:
                self.visit_log.append(ids, visits.member, visits.time, visit_ctx, session_cols)
            if self.impression_log is not None:
                for cols in log:
                    self.impression_log.append(cols)

    def _record(self, cell: Cell, s, metrics: MetricsAccumulator, out: BlockOutput,
                available_at: float, log, reported=None) -> None:
        """Metrics from the truth ``s``; the trainers' statistics and the log from what the
        pipeline ``reported`` (:class:`sim.pipeline.report.Reported`; None: ``s`` as served)."""
        d = s.decisions
        n = d.member.size
        self._impressions += n
        metrics.add_impressions(d.member, cell.index, d.time, s)
        metrics.add_visit_outcomes(cell.index, s.visits)
        if reported is not None:
            metrics.add_fault_counts(cell.index, d.time, reported.counts)
        stats = cell.policy.sufficient_stats(s.credited if reported is None else reported.feedback(s))
        if stats is not None:       # None: a policy that does not learn
            period = trainer_period(available_at, self.config.engine.retrain_hours * 60.0)
            _add_stats(out.policy, (cell.index, period), available_at, stats)
        self.exposure.add(cell.index, d.time, d.title, s.play)
        if log is not None:
            cols = ranker_of(cell, self.rankers).cfg.columns
            log.append({
                "time": d.time, "visit": d.visit, "member": d.member, "cell": cell.name,
                "title": d.title, "artwork": s.artwork, "action": s.action,
                "n_candidates": d.n_candidates(), "familiar": d.familiar, "row": d.row, "column": d.column,
                "position": d.row.astype(np.int32) * cols + d.column, "pscore": s.propensity,
                "policy": cell.policy.name, "model_version": np.full(n, cell.policy.model_version_),
                "click": s.click, "play": s.play, "quality_play": s.quality_play,
                "minutes": s.minutes, "reward": s.credited.quality_play,
                "expected_take": s.expected_take, "uniform_take": s.uniform_take,
                "oracle_take": s.oracle_take,
                **({"looked": s.outcomes.look, "look_second": s.outcomes.look_second,
                    "click_second": s.outcomes.click_second, "play_second": s.outcomes.play_second}
                   if s.outcomes.has_sessions else {})})
            if reported is not None:
                log[-1] = reported.log_columns(log[-1], impression_ids(d.visit, log[-1]["position"]))
        # History changes when the click (interaction) or play happens, not at the impression.
        clicked = np.flatnonzero(s.click)
        if clicked.size:
            self._history.append((np.where(s.play[clicked], s.play_time[clicked], s.click_time[clicked]),
                                  d.member[clicked], d.title[clicked], s.play[clicked]))

    def advance_to(self, now: float) -> None:
        """Bring the members' side to minute ``now`` before serving there: history events that
        have happened, titles launched."""
        self.apply_history(now)
        self.context = replace(self.context, launched=self.world.catalog.launched(now))

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


def _session_columns(cols: dict, n_visits: int, group_index: np.ndarray, served_visits) -> None:
    """Fill the visit log's session columns (``session_seconds``, ``end_reason``, ``looks``,
    ``detail_views``, ``plays``, ``first_play_second``) for one cell's visits; ``group_index``
    maps the visits of the ranker group to the batch. Visits without impressions keep NaN / -1."""
    if not cols:
        cols.update(session_seconds=np.full(n_visits, np.nan, np.float32),
                    end_reason=np.full(n_visits, -1, np.int8), looks=np.zeros(n_visits, np.int16),
                    detail_views=np.zeros(n_visits, np.int16), plays=np.zeros(n_visits, np.int16),
                    first_play_second=np.full(n_visits, np.nan, np.float32))
    i = group_index[served_visits.index]
    sv = served_visits
    cols["session_seconds"][i] = sv.session_seconds
    cols["end_reason"][i] = sv.end_reason
    cols["looks"][i] = sv.looks
    cols["detail_views"][i] = sv.detail_views
    cols["plays"][i] = sv.plays
    cols["first_play_second"][i] = np.where(sv.with_play > 0, sv.first_play_seconds, np.nan)


def _add_stats(table: dict, key, available_at: float, stats) -> None:
    item = table.get(key)
    if item is None:
        table[key] = [available_at, stats]
    else:
        item[0] = max(item[0], available_at)
        item[1] = item[1] + stats
