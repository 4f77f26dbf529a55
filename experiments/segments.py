"""Metrics of a run per segment of impressions, read back from its Parquet log.

A segment is any boolean split of impressions (new vs established titles, members who
interacted with the title before or not, ...). Take fractions are ratios over members (the
randomisation unit), with delta-method intervals from :mod:`sim.metrics`; lifts compare two cells
on the same segment. Two metrics:

* the realised take fraction (quality plays per impression);
* the *artwork gain*: the true quality-play probability of the shown images over that of a
  uniformly random image on the same impressions (``expected_take / uniform_take``, both logged
  by the simulator), minus one. Member, title and position effects cancel in the ratio, so it
  isolates what the artwork policy did, with far less noise than comparing take fractions
  across cells whose members differ.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.logs import read_impressions
from sim.metrics import METRICS, lift_interval


def read_log(run_dir: Path | str, columns: list[str]) -> dict[str, np.ndarray]:
    """Columns of a run's impression log (:func:`sim.logs.read_impressions`) as NumPy arrays,
    ``cell`` and ``policy`` as arrays of names."""
    return {name: values.to_numpy() for name, values in read_impressions(run_dir, columns).items()}


@dataclass
class SegmentEstimate:
    impressions: int
    members: int
    take_fraction: tuple[float, float]            # (estimate, standard error)
    artwork_gain: tuple[float, float]             # expected / uniform take, (estimate, se)


def estimate(member: np.ndarray, quality: np.ndarray, expected: np.ndarray,
             uniform: np.ndarray) -> SegmentEstimate:
    """Member-clustered estimates of the run's take-fraction and artwork-gain metrics
    (:mod:`sim.metrics`, the same definitions as ``metrics.json``) for one (cell, segment)
    subset; arrays of shape (n,)."""
    ids, inverse = np.unique(member, return_inverse=True)
    members = {"impressions": np.bincount(inverse).astype(np.float64)}
    for column, values in (("quality_plays", quality), ("expected_take", expected), ("uniform_take", uniform)):
        members[column] = np.bincount(inverse, weights=values.astype(np.float64))
    return SegmentEstimate(int(member.size), int(ids.size), METRICS["take_fraction"]().estimate(members),
                           METRICS["artwork_gain"]().estimate(members))


def segment_lifts(log: dict[str, np.ndarray], segments: dict[str, np.ndarray], cell: str,
                  reference: str) -> dict[str, dict]:
    """Lift of ``cell`` over ``reference`` within each segment (mask over log rows).

    Returns ``{segment: {"cell": SegmentEstimate, "reference": SegmentEstimate,
    "lift": {...}, "gain_lift": {...}}}`` with lifts as in :func:`sim.metrics.lift_interval`:
    ``lift`` of the realised take fraction, ``gain_lift`` of the artwork gain (the ratio of the
    two cells' expected-over-uniform take).
    """
    out = {}
    for name, mask in segments.items():
        est = {}
        for label, c in (("cell", cell), ("reference", reference)):
            rows = mask & (log["cell"] == c)
            est[label] = estimate(log["member"][rows], log["quality_play"][rows],
                                  log["expected_take"][rows], log["uniform_take"][rows])
        a, b = est["cell"], est["reference"]
        out[name] = {**est, "lift": lift_interval(*a.take_fraction, *b.take_fraction),
                     "gain_lift": lift_interval(*a.artwork_gain, *b.artwork_gain)}
    return out
