"""Online accumulators of the metric table's columns, per member and per (time bucket, cell).

Everything is accumulated as sums, so memory does not grow with simulated time: per-member totals
(the randomisation unit, for confidence intervals), and per-cell totals per time bucket. The
summary and the time series are computed from them by the registered metrics.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from sim.kernels.accumulate import accumulate, count_visits, scatter_add
from sim.metrics.intervals import interval, lift_interval
from sim.metrics.table import (CELL_TOTALS, COLUMNS, MEMBER_COLUMNS, SERIES_COLUMNS, Metric, RatioMetric,
                               all_metrics, metric_class)


class MetricsAccumulator:
    """Sums of :data:`COLUMNS` per member and per (time bucket, cell).

    ``member_offset``: the accumulator covers members ``member_offset .. + n_members`` (one
    member block of a shard); :meth:`combine` joins consecutive blocks. ``per_member``: the
    zeroed (n_members, len(MEMBER_COLUMNS)) rows to accumulate into, e.g. a block's slice of
    one array for all of a shard's blocks (default: a new array)."""

    def __init__(self, n_members: int, cell_names: list[str], horizon_minutes: float,
                 bucket_minutes: float, member_offset: int = 0, per_member: np.ndarray | None = None):
        self.cell_names = list(cell_names)
        self.member_offset = int(member_offset)
        shape = (n_members, len(MEMBER_COLUMNS))
        if per_member is not None and (per_member.shape != shape or per_member.dtype != np.float64):
            raise ValueError(f"per_member must have shape {shape} and dtype float64, not "
                             f"{per_member.shape} {per_member.dtype}")
        self.per_member = np.zeros(shape) if per_member is None else per_member
        self.bucket_minutes = float(bucket_minutes)
        n_buckets = max(1, math.ceil(horizon_minutes / bucket_minutes))
        self.series = np.zeros((n_buckets, len(self.cell_names), len(SERIES_COLUMNS)))
        #: (n_buckets, n_cells, len(sim.pipeline.report.COUNTERS)) fault and repair counts, or
        #: None while the pipeline reported none (engine.faults off): no columns then.
        self.fault_counts: np.ndarray | None = None
        self.fault_names: tuple[str, ...] = ()

    @classmethod
    def combine(cls, parts: list["MetricsAccumulator"]) -> "MetricsAccumulator":
        """One accumulator from consecutive member blocks, given in block order: per-member rows
        are stacked and time series added in that order (so float sums do not depend on how
        blocks were spread over shards)."""
        first = parts[0]
        out = cls.__new__(cls)
        out.cell_names, out.member_offset = list(first.cell_names), first.member_offset
        out.bucket_minutes = first.bucket_minutes
        out.per_member = _joined_rows([p.per_member for p in parts])
        out.series = np.zeros_like(first.series)
        for p in parts:
            out.series += p.series
        counted = [p.fault_counts for p in parts if getattr(p, "fault_counts", None) is not None]
        out.fault_counts = sum(counted[1:], counted[0].copy()) if counted else None   # integers: exact
        out.fault_names = ()
        return out

    def add_fault_counts(self, cell_index: int, time: np.ndarray, counts: np.ndarray) -> None:
        """Add the pipeline's fault and repair counts of n impressions: time (n,) minutes,
        counts (n, k) integers (:data:`sim.pipeline.report.COUNTERS`)."""
        if self.fault_counts is None:
            self.fault_counts = np.zeros(self.series.shape[:2] + (counts.shape[1],), np.int64)
        np.add.at(self.fault_counts, (self._bucket(time), cell_index), counts)

    def fault_totals(self, names: tuple[str, ...]) -> dict:
        """``{"total": {name: count}, "cells": {cell: {name: count}}}`` (zeros without counts)."""
        fc = (np.zeros(self.series.shape[:2] + (len(names),), np.int64) if self.fault_counts is None
              else self.fault_counts)
        per_cell = fc.sum(axis=0)
        return {"total": dict(zip(names, map(int, per_cell.sum(axis=0)))),
                "cells": {c: dict(zip(names, map(int, per_cell[i]))) for i, c in enumerate(self.cell_names)}}

    def add_visits(self, member: np.ndarray, cell: np.ndarray, time: np.ndarray) -> None:
        """Count visits: member (v,), cell index (v,), time (v,) minutes."""
        count_visits(self.per_member, self.series, _MEMBER_VISITS, _SERIES_VISITS,
                     (member - self.member_offset).astype(np.int64), self._bucket(time),
                     np.asarray(cell, dtype=np.int64))

    def add_impressions(self, member: np.ndarray, cell_index: int, time: np.ndarray, served: Any) -> None:
        """Accumulate n impressions of one cell: member (n,), time (n,) minutes, and ``served``
        with one (n,) array per :attr:`Column.source` (a :class:`sim.serving.ServedImpressions`)."""
        n = member.size
        full = np.empty((n, len(COLUMNS)))
        for j, c in enumerate(COLUMNS):
            full[:, j] = 0.0 if c.per_visit else 1.0 if c.source is None else getattr(served, c.source)
        accumulate(self.per_member, self.series, int(cell_index), (member - self.member_offset).astype(np.int64),
                   self._bucket(time), full, _MEMBER_IN_SERIES, _ALL_MEMBER_COLUMNS, _ALL_SERIES, _ALL_SERIES)

    def add_visit_outcomes(self, cell_index: int, visits: Any) -> None:
        """Accumulate the per-visit columns of u visits of one cell: ``visits`` has ``member``
        and ``time`` (u,) and one (u,) array per per-visit :attr:`Column.source` (a
        :class:`sim.serving.ServedVisits`). Visits themselves are counted by :meth:`add_visits`."""
        if visits.member.size == 0:
            return
        values = np.empty((visits.member.size, len(_VISIT_SOURCES)))
        for k, (_, _, src) in enumerate(_VISIT_SOURCES):
            values[:, k] = getattr(visits, src)
        accumulate(self.per_member, self.series, int(cell_index),
                   (visits.member - self.member_offset).astype(np.int64), self._bucket(visits.time), values,
                   _VISIT_MEMBER_SRC, _VISIT_MEMBER_DST, np.arange(len(_VISIT_SOURCES)), _VISIT_SERIES_DST)

    def _bucket(self, time: np.ndarray) -> np.ndarray:
        return np.minimum((time // self.bucket_minutes).astype(np.int64), self.series.shape[0] - 1)

    # ---- summaries ------------------------------------------------------------------------
    def summary(self, member_cell: np.ndarray, control: str, metrics: list[Metric] | None = None) -> dict:
        """Per-cell totals and metrics (default: every registered one) with 95 % intervals, and
        lifts against ``control``."""
        metrics = all_metrics() if metrics is None else metrics
        with_interval = [m for m in metrics if m.interval]
        out: dict = {"cells": {}, "lift": {}}
        totals = self.series.sum(axis=0)
        estimates = {}
        for c, name in enumerate(self.cell_names):
            in_cell = member_cell == c
            # A cell of every member (one-cell runs) reads the rows in place: a masked copy
            # would double the largest array of the run at its very end.
            if in_cell.all():
                pm = self.per_member.view()
                pm.flags.writeable = False      # metrics (an extension point) only read their columns
            else:
                pm = self.per_member[in_cell]
            members = {col: pm[:, j] for j, col in enumerate(MEMBER_COLUMNS)}
            t = dict(zip(SERIES_COLUMNS, totals[c]))
            cell = {"members": int(pm.shape[0]), **{k: kind(t[k]) for k, kind in CELL_TOTALS.items()}}
            estimates[name] = {}
            for m in with_interval:
                r, se = m.estimate(members)
                estimates[name][m.name] = (r, se)
                cell[m.name] = interval(r + m.offset if m.offset else r, se)
            # Per-impression rates of a cell without impressions are undefined (NaN -> null in
            # metrics.json, with the reason under "undefined"), not 0.
            for m in metrics:
                if not m.interval:
                    cell[m.name] = m.value(t)
            out["cells"][name] = cell
        base = estimates[control]
        for name in self.cell_names:
            if name == control:
                continue
            out["lift"][name] = {m: lift_interval(*estimates[name][m], *base[m]) for m in estimates[name]}
        out["undefined"] = undefined_reasons(out, control)
        return out

    def time_series(self, metrics: list[Metric] | None = None, fault_names: tuple[str, ...] | None = None) -> list[dict]:
        """Rows (bucket, cell) with column sums, the rate of every time-series ratio metric (with
        its binomial standard error when ``binomial``) and cumulative expected regret; with
        ``fault_names`` (default :attr:`fault_names`, set by the engine when engine.faults is on)
        also ``fault_<name>`` counts."""
        fault_names = self.fault_names if fault_names is None else fault_names
        if fault_names and self.fault_counts is None:
            self.fault_counts = np.zeros(self.series.shape[:2] + (len(fault_names),), np.int64)
        metrics = all_metrics() if metrics is None else metrics
        rates = [m for m in metrics if isinstance(m, RatioMetric) and m.time_series]
        rows = []
        col = {name: j for j, name in enumerate(SERIES_COLUMNS)}
        cum_regret = np.cumsum(self.series[:, :, col["oracle_take"]] - self.series[:, :, col["expected_take"]],
                               axis=0)
        for b in range(self.series.shape[0]):
            for c, name in enumerate(self.cell_names):
                s = dict(zip(SERIES_COLUMNS, self.series[b, c]))
                row = {"hour": (b + 1) * self.bucket_minutes / 60.0, "cell": name, **s}
                for m in rates:
                    n = s[m.denominator]
                    p = s[m.numerator] / n if n else float("nan")
                    row[m.name] = p
                    if m.binomial:   # ignores within-member correlation (experiments.plot has the clustered one)
                        row[m.name + "_se"] = math.sqrt(p * (1 - p) / n) if n else float("nan")
                row["cumulative_regret"] = float(cum_regret[b, c])
                if fault_names:     # engine.faults on: counts per bucket (sim.pipeline)
                    row.update({f"fault_{k}": int(v) for k, v in zip(fault_names, self.fault_counts[b, c])})
                rows.append(row)
        return rows


_MEMBER_VISITS = MEMBER_COLUMNS.index("visits")
_SERIES_VISITS = SERIES_COLUMNS.index("visits")
_MEMBER_IN_SERIES = np.array([SERIES_COLUMNS.index(c) for c in MEMBER_COLUMNS], dtype=np.int64)
_ALL_MEMBER_COLUMNS = np.arange(len(MEMBER_COLUMNS))
_ALL_SERIES = np.arange(len(SERIES_COLUMNS))
#: (per-member index or None, series index, ServedVisits field) of every per-visit column with a source.
_VISIT_SOURCES = [(MEMBER_COLUMNS.index(c.name) if c.per_member else None, SERIES_COLUMNS.index(c.name), c.source)
                  for c in COLUMNS if c.per_visit and c.source is not None]
_VISIT_MEMBER_SRC = np.array([k for k, (m, _, _) in enumerate(_VISIT_SOURCES) if m is not None], dtype=np.int64)
_VISIT_MEMBER_DST = np.array([m for m, _, _ in _VISIT_SOURCES if m is not None], dtype=np.int64)
_VISIT_SERIES_DST = np.array([j for _, j, _ in _VISIT_SOURCES], dtype=np.int64)


def _joined_rows(blocks: list[np.ndarray]) -> np.ndarray:
    """The per-member rows of consecutive blocks as one array: the array they are slices of,
    when they tile it in order (one shard's blocks, :class:`sim.shard.ShardServer`), without a
    copy; otherwise concatenated (blocks that came from other processes)."""
    base = blocks[0].base
    if isinstance(base, np.ndarray) and base.ndim == 2 and base.flags.c_contiguous and \
            base.dtype == blocks[0].dtype and base.shape[1:] == blocks[0].shape[1:] and \
            sum(b.shape[0] for b in blocks) == base.shape[0]:
        at = base.ctypes.data
        for b in blocks:
            if b.base is not base or b.ctypes.data != at or not b.flags.c_contiguous:
                break
            at += b.nbytes
        else:
            return base
    return np.concatenate(blocks)


def undefined_reasons(summary: dict, control: str) -> dict[str, str]:
    """Why each undefined (NaN, written as null) number of ``summary`` is undefined.

    Keys are dotted paths (``cells.<cell>.<metric>`` or ``lift.<cell>.<metric>``); a metric is
    listed once for all its fields (estimate, se, ci_low, ci_high, p_value). Tiny worlds, cells
    without visits, or click probabilities near 0 produce these; nothing else should.
    """
    reasons: dict[str, str] = {}
    cells = summary["cells"]
    for name, cell in cells.items():
        for metric, value in cell.items():
            fields = value if isinstance(value, dict) else {"value": value}
            if all(isinstance(v, (int, float)) and math.isfinite(v) for v in fields.values()):
                continue
            needs_impressions = getattr(metric_class(metric), "needs_impressions", True)
            if cell["members"] == 0:
                why = "no members were allocated to this cell"
            elif cell["impressions"] == 0 and needs_impressions:
                why = "the cell had no impressions"
            elif isinstance(value, dict) and math.isfinite(value["estimate"]):
                why = "fewer than 2 members with impressions: no standard error"
            else:
                why = "the cell had no impressions"
            reasons[f"cells.{name}.{metric}"] = why
    for name, lifts in summary["lift"].items():
        for metric, value in lifts.items():
            if all(math.isfinite(v) for v in value.values()):
                continue
            rates = [cells[name][metric]["estimate"], cells[control][metric]["estimate"]]
            ses = [cells[name][metric]["se"], cells[control][metric]["se"]]
            if not all(math.isfinite(r) for r in rates):
                why = f"{metric} is undefined in this cell or in the control ({control})"
            elif not all(r > 0 for r in rates):
                why = f"{metric} is 0 in this cell or in the control ({control}): a ratio is undefined"
            elif not all(math.isfinite(se) for se in ses):
                why = f"no standard error of {metric} in this cell or in the control ({control})"
            else:
                why = "standard errors are 0 (every member identical): no p-value"
            reasons[f"lift.{name}.{metric}"] = why
    return reasons


def scatter_add_rows(target: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
    """``target[rows[i], :k] += values[i]`` with repeated rows, for C-contiguous 2-D ``target``
    (compiled; rows added in order, as ``np.add.at`` does)."""
    scatter_add(target, np.asarray(rows, dtype=np.int64), np.ascontiguousarray(values))
