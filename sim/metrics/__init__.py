"""The metric table, online metric accumulators, lifts with confidence intervals, time series.

Everything is accumulated as sums (:data:`COLUMNS`), so memory does not grow with simulated time:
per-member totals (the randomisation unit, for confidence intervals), and per-cell totals per
time bucket. Every number of a cell in ``metrics.json``, every rate in ``timeseries.csv`` and
every metric that charts, reports and power calculations list is declared once, as a
:class:`Metric` subclass with a ``name``; declaring one registers it in :data:`METRICS`, so a new
metric is one class and touches no other file.

Modules: :mod:`~sim.metrics.table` (columns, the :class:`Metric` base classes, the registry),
:mod:`~sim.metrics.builtin` (the built-in metrics), :mod:`~sim.metrics.accumulator` (sums per
member and per time bucket, the summary written to ``metrics.json``, the time series) and
:mod:`~sim.metrics.intervals` (``Z95``, delta-method ratios, lifts).
"""
from __future__ import annotations

from sim.metrics.intervals import Z95, interval, lift_interval, ratio_estimate
from sim.metrics.table import (CELL_TOTALS, COLUMNS, MEMBER_COLUMNS, METRICS, SERIES_COLUMNS, Column,
                               MemberMean, Metric, RatioMetric, TotalMetric, TotalRatio, all_metrics,
                               build_metrics, metric_class)
from sim.metrics import builtin  # noqa: F401  (registers the built-in metrics, in metrics.json order)
from sim.metrics.accumulator import MetricsAccumulator, scatter_add_rows, undefined_reasons

__all__ = ["Z95", "interval", "lift_interval", "ratio_estimate", "CELL_TOTALS", "COLUMNS", "MEMBER_COLUMNS",
           "METRICS", "SERIES_COLUMNS", "Column", "MemberMean", "Metric", "RatioMetric", "TotalMetric",
           "TotalRatio", "all_metrics", "build_metrics", "metric_class", "MetricsAccumulator",
           "scatter_add_rows", "undefined_reasons"]
