"""The closed loop on a SimPy clock (unit: minutes).

Actors (SimPy processes):

* ``serving`` -- step by step (at most ``sync_hours`` long, and a new step wherever a model
  changes: it waits on ``any_of`` a timeout and a catch-up event), the member shards
  (:mod:`sim.shard`, placed by :mod:`sim.backends`) serve every serving window of the step:
  the visits of each member block that fall in the window (inhomogeneous Poisson, diurnal curve
  in the member's local time) are served together; the driver then reduces what the shards
  return in block order. ``member_visits`` replaces it in
  reference mode with one process per member and one batch per visit;
* ``policy_trainer`` / ``deploy`` -- every ``retrain_hours``, each cell's policy takes the
  statistics of the logs that have arrived and deploys a new version after ``deploy_delay``;
* ``ranker_trainer`` -- every ``ranker_retrain_hours`` the rankers refit on the same logs.

SimPy owns the schedule: only these processes know when models change. A trainer waits until
serving has served every window that starts before its minute (it reads the logs those windows
wrote), and a deploy or ranker retrain waits for the same before it changes a model, so a model
that changes at minute t serves every window that starts at or after t and no earlier one. Same-
instant changes keep their event order (each waits in turn). Titles launched by a window's start
are on that window's pages.

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
from types import SimpleNamespace
from typing import Any

import numpy as np
import simpy

from sim.backends import LocalBackend, ProcessBackend, RayBackend
from sim.bias import RankerDrift, TitleExposure
from sim.config import ConfigError, ExperimentConfig, to_dict
from sim.homepage import Ranker, build_ranker
from sim.logs import LogTarget
from sim.metrics import MetricsAccumulator
from sim.metrics.incrementality import incrementality_summary, incrementality_undefined
from sim.pipeline.report import COUNTERS as FAULT_COUNTERS
from sim.pipeline.stage import batch_delay
from sim.policies import build_policy
from sim.serving import Visits
from sim.shard import Cell, ShardServer, StepResult, block_ranges, dump_models, ranker_of, trainer_period
from sim.streams import generator, stable_unit_hash
from sim.world import World, build_world
from sim.world.members import block_members

__all__ = ["Cell", "Simulation", "allocate_cells", "build_loop", "build_shard"]

#: Simulated time in minutes (the SimPy clock).
SimTime = float


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
        bucket = trainer_period(available_at, self.period)
        if self.items and trainer_period(self.items[-1][0], self.period) == bucket:
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


def allocate_cells(n_members: int, shares: list[float], salt: str, rows: range | None = None) -> np.ndarray:
    """Cell index per member (n_members,) from a stable hash of (member id, experiment name).

    ``rows``: allocate only these members (a shard's); the others stay 0, in pages the
    operating system does not back (see :func:`sim.world.build_world`)."""
    ids = np.arange(n_members) if rows is None else np.arange(rows.start, rows.stop)
    edges = np.cumsum(shares)
    edges[-1] = 1.0 + 1e-12
    cell = np.searchsorted(edges, stable_unit_hash(ids, salt), side="right").astype(np.int64)
    if rows is None:
        return cell
    out = np.zeros(n_members, dtype=np.int64)
    out[rows.start:rows.stop] = cell
    return out


def build_loop(config: ExperimentConfig, blocks: range | None = None, shard: bool = False) -> SimpleNamespace:
    """World, cells (policies, rankers) and cell allocation: a pure function of the config.

    ``blocks``: the member blocks whose members are drawn (None: all; :func:`sim.world.build_world`);
    ``shard``: the cells of those members only (the driver needs every member's, for the summary).
    Policies are built first: they fail on bad input faster than the world is drawn."""
    horizon = config.engine.days * 1440.0
    specs = [(f"experiment.cells[{i}].policy", c.policy) for i, c in enumerate(config.cells)]
    # Each cell's policy gets its own seed for deploy-time Monte Carlo.
    policies = [build_policy(spec, key, seed=int(generator(config.seed, "policy-seed", i).integers(2**31)))
                for i, (key, spec) in enumerate(specs)]
    world: World = build_world(config.world, config.seed, horizon, config.engine.member_block, blocks)
    shared = build_ranker(config.ranker, world.catalog, world.members, world.response)
    cells = []
    for i, (c, policy) in enumerate(zip(config.cells, policies)):
        policy.reset(world.catalog)
        if policy.reads_ground_truth:
            policy.attach_ground_truth(world.response)
        own = None if c.ranker is None else build_ranker(c.ranker, world.catalog, world.members, world.response)
        cells.append(Cell(c.name, i, c.share, policy, own))
    rankers = [shared] + [c.ranker for c in cells if c.ranker is not None]
    M, B = world.members.n_members, config.engine.member_block
    rows = block_members(blocks, B, M) if shard else None
    member_cell = allocate_cells(M, [c.share for c in cells], config.name, rows)
    return SimpleNamespace(world=world, cells=cells, shared_ranker=shared, rankers=rankers,
                           member_cell=member_cell,
                           drift_sample=RankerDrift.sample(config.seed, world.members.n_members))


def build_shard(config: ExperimentConfig, blocks: range, log: LogTarget | None) -> ShardServer:
    """A shard built from the config alone: what worker processes and Ray actors run (handed to
    the backends, which do not import this module). It draws only its own blocks' members and
    writes its own log parts to ``log``."""
    loop = build_loop(config, blocks, shard=True)
    return ShardServer(config, loop.world, loop.cells, loop.rankers, loop.member_cell, blocks,
                       loop.drift_sample, log)


class Simulation:
    """One experiment: the driver of the closed loop. ``run()`` returns the summary dict.

    The driver owns the models (it trains and deploys them) and the log pipeline queues;
    member shards (``engine.shards``, placed by ``engine.backend``) serve and write the logs."""

    def __init__(self, config: ExperimentConfig, log: LogTarget | None = None):
        """``log``: where the shards write the impression and visit-context logs (None: not
        logged). Nothing touches the disk before a shard writes a part (:mod:`sim.logs`)."""
        self.config = config
        eng = config.engine
        self.horizon: SimTime = eng.days * 1440.0
        if eng.backend == "ray":
            try:
                import ray  # noqa: F401
            except ImportError:
                raise ConfigError("engine.backend", "ray", "local or processes: Ray is not installed "
                                  "(pip install -e '.[ray]')") from None
            from sim.backends import check_ray_address

            check_ray_address(eng.ray_address)     # fail fast, before the world is built
        # The driver draws the members only when its shards run in its process (backend local):
        # other backends' shards draw their own, and the driver trains from their statistics.
        loop = build_loop(config, None if eng.backend == "local" else range(0))
        self.world: World = loop.world
        self.cells: list[Cell] = loop.cells
        self.shared_ranker: Ranker = loop.shared_ranker
        self.rankers: list[Ranker] = loop.rankers
        self.member_cell = loop.member_cell
        w = self.world
        n_members = w.members.n_members
        self.metrics: MetricsAccumulator | None = None       # the shards' accumulators, after run()
        self.exposure = TitleExposure(max(1, math.ceil(eng.days)), len(self.cells), w.catalog.n_titles)
        self.log = log
        self.log_rows = 0           # impression rows the shards wrote, after run()
        self.shard_peak_rss_mb: list[float] = []     # each shard's process, after run()
        self.shard_rss_mb: list[float] = []          # each shard's process, after the last step
        self.policy_queues = [_Queue(eng.retrain_hours * 60.0) for _ in self.cells]
        self.ranker_queues = [_Queue(eng.ranker_retrain_hours * 60.0) for _ in self.rankers]
        self.drift = RankerDrift(loop.drift_sample, [
            ",".join(c.name for c in self.cells if ranker_of(c, self.rankers) is r) for r in self.rankers])
        # In-process shards (backend local); other backends start theirs in run().
        self.shards: list[ShardServer] = []
        if eng.backend == "local":
            self.shards = [ShardServer(config, w, self.cells, self.rankers, self.member_cell, blocks,
                                       loop.drift_sample, log)
                           for blocks in block_ranges(n_members, eng.member_block, eng.shards)]
        self.impressions = 0
        self.visits = 0
        self.deploys = 0
        self.out_of_order: list[tuple[str, int, int]] = []    # (trainer, queue, period) held back
        self._models_changed = True
        self._drift_requests: list[tuple[int, SimTime]] = []
        # Serving's progress: every window that starts before ``_served_to`` has been served.
        # ``_catch_up`` wakes the serving process early; ``_waiting`` are the events of the
        # processes waiting for it (fired in the order they asked).
        self._served_to: SimTime = 0.0
        self._catch_up: simpy.Event | None = None
        self._waiting: list[simpy.Event] = []

    # ---- reduction (driver) -------------------------------------------------------------------
    def _reduce(self, results: list[StepResult]) -> None:
        """Fold the shards' step results in: statistics per trainer period summed in block
        order (the shards wrote their log rows)."""
        for kind, queues in (("policy", self.policy_queues), ("ranker", self.ranker_queues)):
            merged: dict = {}
            for res in results:
                for b, out in res.blocks.items():
                    for key, item in getattr(out, kind).items():
                        merged.setdefault(key, {})[b] = item
            for key in sorted(merged):
                total, available = None, -math.inf
                for b in self.block_order(merged[key]):
                    a, stats = merged[key][b]
                    total = stats if total is None else total + stats
                    available = max(available, a)
                queues[key[0]].put(available + self._batch_delay(kind, key, queues[key[0]].period), total)
        self.impressions += sum(r.impressions for r in results)
        self.visits += sum(r.visits for r in results)

    def _batch_delay(self, kind: str, key: tuple[int, int], every: float) -> float:
        """engine.faults.out_of_order: a log batch held back one retrain (0 when off)."""
        faults = self.config.engine.faults
        if not faults.out_of_order:
            return 0.0
        delay = batch_delay(self.config.seed, faults, int(kind == "ranker"), key[0], key[1], every)
        if delay:
            self.out_of_order.append((kind, key[0], key[1]))
        return delay

    @staticmethod
    def block_order(blocks) -> list[int]:
        """Blocks in the order their statistics are added: ascending, whatever shard sent them."""
        return sorted(blocks)

    def _record_drift(self, requests, parts: list[dict]) -> None:
        """Ranker drift from the sample members' scores and true fit, assembled from the shards
        that own them (``parts``: each shard's {(ranker index, minute): (sample positions,
        scores rows, truth rows)})."""
        shape = (self.drift.members.size, self.world.catalog.n_titles)
        for r_index, minute in requests:
            scores, truth = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
            filled = np.zeros(shape[0], np.int64)
            for part in parts:
                rows, values, true = part[(r_index, minute)]
                scores[rows], truth[rows] = values, true
                filled[rows] += 1
            if not (filled == 1).all():     # a sample member no shard owns, or two shards own
                raise RuntimeError(f"ranker drift: the shards returned {int(filled.sum())} rows for "
                                   f"{shape[0]} sample members, not each exactly once")
            self.drift.record(minute, r_index, self.rankers[r_index], scores, truth,
                              self.world.catalog.launched(minute))

    def _model_blob(self) -> bytes:
        return dump_models(self.world, [c.policy for c in self.cells], self.rankers)

    # ---- SimPy processes --------------------------------------------------------------------
    def serving(self, env: simpy.Environment, backend, progress):
        """Serve step by step. A step ends after ``sync_hours``, or as soon as a trainer, a deploy
        or a ranker retrain needs the windows before now served (:meth:`served`); its windows are
        then served together, with the models frozen since the step began (nothing changes a
        model before serving has caught up). The last step ends at the horizon (:meth:`run`)."""
        sync = self.config.engine.sync_hours * 60.0
        while True:
            self._catch_up = env.event()
            yield env.any_of([env.timeout(sync), self._catch_up])
            self._serve_until(env.now, backend, progress)

    def served(self, env: simpy.Environment) -> simpy.Event:
        """An event that fires once every window starting before ``env.now`` has been served.

        A trainer waits for it before it reads the logs; a deploy or a ranker retrain before it
        changes a model, which then serves from the next step on."""
        done = env.event()
        if self.config.engine.mode == "reference" or self._served_to >= env.now:
            return done.succeed()           # each visit is served when it happens / caught up
        self._waiting.append(done)
        if not self._catch_up.triggered:
            self._catch_up.succeed()
        return done

    def _serve_until(self, t_end: SimTime, backend, progress) -> None:
        """The shards serve every window starting in [served_to, t_end); the driver reduces."""
        t_start = self._served_to
        if t_end > t_start:
            requests, self._drift_requests = self._drift_requests, []
            models = None
            if backend.needs_models and self._models_changed:
                models, self._models_changed = self._model_blob(), False
            results = backend.step(t_start, t_end, requests, models)
            self._reduce(results)
            self._record_drift(requests, [r.drift for r in results])
            self._served_to = t_end
            self.shard_rss_mb = [r.rss_mb for r in results]
            if progress is not None:
                progress(t_end, self.impressions)
        waiting, self._waiting = self._waiting, []
        for done in waiting:
            done.succeed()

    def member_visits(self, env: simpy.Environment, member: int):
        """Reference mode: one member's visits by thinning, each served as its own batch."""
        shard = self.shards[0]
        rate = float(self.world.members.visit_rate[member])
        offset = float(self.world.members.utc_offset_hours[member])
        peak = rate * (1.0 + self.config.world.diurnal_amplitude)
        rng = generator(self.config.seed, "reference-arrivals", member)
        block = member // self.config.engine.member_block
        k = 0
        while True:
            gap = rng.exponential(1.0 / peak)
            if env.now + gap >= self.horizon:
                return
            yield env.timeout(gap)
            if rng.random() * peak > rate * self.diurnal_rate(env.now, np.array(offset)):
                continue
            shard.advance_to(env.now)
            visits = Visits(np.array([member]), np.array([env.now]), shard.scroll_depth(rng, 1))
            # Keys (member, k-th visit, 2**20): never the (block, window) keys of batched mode.
            shard.serve(visits, (member, k, 1 << 20), block, np.array([self.visits]))
            self._reduce([shard.take_result()])
            k += 1

    def diurnal_rate(self, t: float, utc_offset: np.ndarray) -> np.ndarray:
        wc = self.config.world
        local_min = t + (utc_offset - wc.diurnal_peak_hour) * 60.0
        return 1.0 + wc.diurnal_amplitude * np.cos(2 * math.pi * local_min / 1440.0)

    def policy_trainer(self, env: simpy.Environment, cell: Cell):
        every = self.config.engine.retrain_hours * 60.0
        k = 0
        while True:
            k += 1
            yield env.timeout(k * every - env.now)
            yield self.served(env)          # the logs of every window before now are written
            stats = self.policy_queues[cell.index].take(env.now)
            if stats is not None:
                env.process(self.deploy(env, cell, stats))

    def deploy(self, env: simpy.Environment, cell: Cell, stats):
        yield env.timeout(self.config.engine.deploy_delay_minutes)
        yield self.served(env)              # windows before now keep the old model
        cell.policy.update(stats)
        self.deploys += 1
        self._models_changed = True

    def ranker_trainer(self, env: simpy.Environment, r_index: int):
        ranker = self.rankers[r_index]
        every = self.config.engine.ranker_retrain_hours * 60.0
        self._request_drift(r_index, env.now)
        k = 0
        while True:
            k += 1
            yield env.timeout(k * every - env.now)
            yield self.served(env)
            stats = self.ranker_queues[r_index].take(env.now)
            if stats is not None and not ranker.frozen:
                ranker.fit(stats, env.now)
                self._models_changed = True
            self._request_drift(r_index, env.now)

    def _request_drift(self, r_index: int, now: float) -> None:
        if not self.drift.wanted(r_index):
            return
        if self.config.engine.mode == "batched":
            self._drift_requests.append((r_index, now))     # scored by the shards at the next step
        else:
            shard = self.shards[0]
            shard.apply_history(now)
            self._record_drift([(r_index, now)], [{(r_index, now): shard.drift_scores(r_index, now)}])

    def _fault_summary(self) -> dict:
        """metrics.json ``faults``: the configured faults and repairs and the count of each
        (totals and per cell; the time series has them per bucket as ``fault_<name>``). Held-back
        log batches are counted in the bucket of their trainer period, policy batches per cell."""
        m = self.metrics
        m.fault_names = FAULT_COUNTERS
        if m.fault_counts is None:
            m.fault_counts = np.zeros(m.series.shape[:2] + (len(FAULT_COUNTERS),), np.int64)
        j = FAULT_COUNTERS.index("out_of_order")
        for kind, queue, period in self.out_of_order:
            every = self.config.engine.retrain_hours if kind == "policy" else self.config.engine.ranker_retrain_hours
            bucket = min(int(period * every * 60.0 // m.bucket_minutes), m.series.shape[0] - 1)
            m.fault_counts[max(bucket - 1, 0), queue if kind == "policy" else 0, j] += 1
        return {"config": to_dict(self.config.engine.faults), **m.fault_totals(FAULT_COUNTERS)}

    def _check_log_parts(self, totals) -> None:
        """Every log part a shard wrote is where the driver reads the run: a shard on another
        machine (Ray) writes to that machine's disk, so the run directory must be on a file
        system every node mounts."""
        if self.log is None:
            return
        for i, t in enumerate(totals):
            for name, files in t.log_parts.items():
                directory = self.log.impressions if name == "logs" else self.log.visits
                missing = [f for f in files if not (directory / f).is_file()]
                if missing:
                    raise RuntimeError(
                        f"shard {i} wrote {len(missing)} log part(s) that this process cannot see "
                        f"(e.g. {directory / missing[0]}): with Ray on several machines, the run "
                        "directory must be on a file system every node mounts (NFS, a shared disk)")

    # ---- run --------------------------------------------------------------------------------
    def _backend(self):
        eng = self.config.engine
        if eng.backend == "local":
            return LocalBackend(self.shards)
        if eng.backend == "processes":
            return ProcessBackend(self.config, self.log, build_shard)
        return RayBackend(self.config, self.log, build_shard)

    def run(self, progress=None) -> dict:
        """Run to the horizon. ``progress(sim_minutes, impressions)`` is called per step."""
        env = simpy.Environment()
        start = wallclock.perf_counter()
        backend = None
        try:
            backend = self._backend()
            startup = wallclock.perf_counter() - start     # remote shards build their worlds
            if self.config.engine.mode == "batched":
                env.process(self.serving(env, backend, progress))
            else:
                for m in range(self.world.members.n_members):
                    env.process(self.member_visits(env, m))
            for cell in self.cells:
                env.process(self.policy_trainer(env, cell))
            for r in range(len(self.rankers)):
                env.process(self.ranker_trainer(env, r))
            # Events scheduled exactly at the horizon (a retrain at the last minute) do not run:
            # a model deployed after the end could not serve anyone. The last step ends there.
            env.run(until=self.horizon)
            if self.config.engine.mode == "batched":
                self._serve_until(self.horizon, backend, progress)
            totals = backend.finish()
        finally:
            if backend is not None:
                backend.close()
        elapsed = wallclock.perf_counter() - start
        self._check_log_parts(totals)
        self.log_rows = sum(t.log_rows for t in totals)
        # Not in the summary (it differs from run to run): the bench reports it per shard.
        self.shard_peak_rss_mb = [t.peak_rss_mb for t in totals]
        per_block = {b: m for t in totals for b, m in t.metrics.items()}
        self.metrics = MetricsAccumulator.combine([per_block[b] for b in self.block_order(per_block)])
        for t in totals:        # integer-valued counts: exact in any order
            self.exposure.impressions += t.exposure.impressions
            self.exposure.plays += t.exposure.plays
        summary = self.metrics.summary(self.member_cell, self.config.control)
        if self.config.engine.faults.active:
            summary["faults"] = self._fault_summary()
        summary["incrementality"] = incrementality_summary(self.metrics, self.member_cell, self.config.control)
        summary["undefined"].update(incrementality_undefined(summary["incrementality"]))
        summary["run"] = {
            "impressions": int(self.impressions), "visits": int(self.visits),
            "wall_seconds": elapsed, "impressions_per_second": self.impressions / max(elapsed, 1e-9),
            "deploys": self.deploys, "simulated_days": self.config.engine.days,
            "backend": self.config.engine.backend, "shards": len(totals),   # at most one per block
            "shard_startup_seconds": startup,
            "propensity_estimated": {c.name: bool(c.policy.propensity_is_estimated) for c in self.cells},
            "final_model_version": {c.name: int(c.policy.model_version_) for c in self.cells},
            "log_rows": self.log_rows,
        }
        summary["ranker_drift"] = self.drift.rows
        return summary
