"""The pipeline stage a shard and the driver call (see :mod:`sim.pipeline`)."""
from __future__ import annotations

import dataclasses

import numpy as np

from sim.pipeline.config import FAULT_NAMES, REPAIR_NAMES, REPAIR_OF, FaultsConfig
from sim.pipeline.fallback import FallbackPolicy
from sim.pipeline.report import COUNTERS, Reported, report
from sim.streams import generator

#: Impression ids: visit id * POSITIONS + position on the page (pages have fewer tiles).
POSITIONS = 4096


def impression_ids(visit: np.ndarray, position: np.ndarray) -> np.ndarray:
    """A unique id per impression (n,) int64, from its visit id and page position."""
    return visit.astype(np.int64) * POSITIONS + position.astype(np.int64)


class Pipeline:
    """The faults of one run (``seed``, ``faults``, attribution ``window`` and quality
    ``threshold`` in minutes), applied batch by batch in the shards."""

    def __init__(self, seed: int, faults: FaultsConfig, window: float, threshold: float):
        self.seed, self.faults, self.window, self.threshold = seed, faults, window, threshold

    def serving_cell(self, cell, keys: tuple[int, ...]):
        """The cell to serve with: its policy wrapped for timeouts when ``fallback`` is on."""
        f = self.faults
        if not f.fallback and not (f.rendered_propensity and f.fallback_logged_as_policy):
            return cell
        rng = generator(self.seed, "faults-fallback", *keys, cell.index)
        return dataclasses.replace(cell, policy=FallbackPolicy(cell.policy, f.fallback, f.fallback_logged_as_policy,
                                                               f.rendered_propensity, rng))

    def report(self, served, serving_cell, keys: tuple[int, ...]) -> Reported:
        """What the log and the trainers receive from one cell's served batch."""
        rng = generator(self.seed, "faults", *keys, serving_cell.index)
        wrapped = serving_cell.policy if isinstance(serving_cell.policy, FallbackPolicy) else None
        return report(served, self.faults, rng, self.window, self.threshold,
                      None if wrapped is None else wrapped.fallback,
                      None if wrapped is None else wrapped.pscore_changed)


def batch_delay(seed: int, faults: FaultsConfig, kind: int, queue: int, period: int, every: float) -> float:
    """Extra minutes before a log batch (trainer ``kind`` 0 policy / 1 ranker, ``queue`` cell or
    ranker index, trainer ``period``) reaches its trainer: one period (``every`` minutes) for an
    ``out_of_order`` share of batches, so later batches overtake it; 0 otherwise."""
    if not faults.out_of_order:
        return 0.0
    late = generator(seed, "faults-batches", kind, queue, period).random() < faults.out_of_order
    return every if late else 0.0
