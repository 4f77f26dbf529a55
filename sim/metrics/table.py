"""The metric table: accumulated columns and the :class:`Metric` extension point.

Every number of a cell in ``metrics.json``, every rate in ``timeseries.csv`` and every metric that
charts, reports and power calculations list is declared once, as a :class:`Metric` subclass with
a ``name``; declaring it registers it in :data:`METRICS`. A new metric is one class (in a new
module of this package for a built-in, anywhere for your own) and touches no other file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping

import numpy as np

from sim.metrics.intervals import ratio_estimate
from sim.schema import Registry


# --------------------------------------------------------------------------------------------
# Accumulated columns
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """One accumulated sum, by name (what :class:`Metric` numerators and denominators name).

    ``source`` is the field of the served impressions it sums
    (:class:`sim.serving.ServedImpressions`), or for ``per_visit`` columns the field of the served
    visits (:class:`sim.serving.ServedVisits`); ``None`` counts rows: 1 per impression, or per
    visit for ``per_visit``. ``per_member``: also summed per member (what intervals need)."""

    name: str
    source: str | None = None
    per_visit: bool = False
    per_member: bool = True


#: Every accumulated column, in ``timeseries.csv`` order.
COLUMNS = (Column("impressions"), Column("clicks", "click"), Column("plays", "play"),
           Column("quality_plays", "quality_play"), Column("minutes", "minutes"),
           Column("visits", per_visit=True), Column("expected_take", "expected_take"),
           Column("oracle_take", "oracle_take", per_member=False), Column("uniform_take", "uniform_take"),
           # Per-visit sums (sources are fields of sim.serving.ServedVisits): the page-level metrics.
           Column("successful_visits", "successful", per_visit=True),
           Column("visits_with_play", "with_play", per_visit=True),
           Column("first_play_seconds", "first_play_seconds", per_visit=True),
           Column("session_seconds", "session_seconds", per_visit=True),
           # Impressions of titles with two or more images (only there can two arms differ) and
           # their quality plays: the per-impression side of sim.metrics.incrementality.
           Column("varied_impressions", "varied"), Column("varied_quality_plays", "varied_quality_play"))
#: Per-cell, per-bucket accumulated columns.
SERIES_COLUMNS = tuple(c.name for c in COLUMNS)
#: Per-member accumulated columns.
MEMBER_COLUMNS = tuple(c.name for c in COLUMNS if c.per_member)
#: Column totals written per cell in ``metrics.json`` (before the metrics), with their type.
CELL_TOTALS = {"impressions": int, "visits": int, "clicks": int, "plays": int, "quality_plays": int,
               "minutes": float, "successful_visits": int}


# --------------------------------------------------------------------------------------------
# The metric table: one class per metric
# --------------------------------------------------------------------------------------------
class Metric:
    """A per-cell metric of a run: the extension point behind ``metrics.json``, the time series,
    the lift chart, the report and the power table.

    Contract: set ``name`` (the key in ``metrics.json``), ``label`` (words for tables and
    legends), ``unit`` (for axes) and ``percent`` (shown as a percentage), and implement
    :meth:`estimate`. Each cell then gets ``{estimate, se, ci_low, ci_high}`` (95 %, normal) and
    each non-control cell a lift ``estimate / control estimate - 1`` with a 95 % interval and a
    p-value on the log scale (:func:`lift_interval`). Metrics are computed once per run from the
    accumulated columns, in the driver (never in the shards), so any backend sees a new metric.

    A subclass that sets ``name`` registers itself in :data:`METRICS`, in definition order (the
    order of ``metrics.json``: metrics with an interval first, then plain ones); :class:`RatioMetric`, :class:`MemberMean` and
    :class:`TotalMetric` cover the usual shapes with declarations only.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    unit: ClassVar[str] = ""
    percent: ClassVar[bool] = False
    #: Reported with a standard error, 95 % interval and lift (False: a plain number per cell).
    interval: ClassVar[bool] = True
    #: Added to the estimate when written (the lift is taken before: artwork gain = ratio - 1).
    offset: ClassVar[float] = 0.0
    #: Undefined in a cell without impressions (False: defined per member, e.g. minutes per member).
    needs_impressions: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            METRICS.add(cls)

    def estimate(self, members: Mapping[str, np.ndarray]) -> tuple[float, float]:
        """(estimate, standard error) of one cell.

        Parameters
        ----------
        members : column name -> ndarray, shape (n_members_in_cell,)
            The cell's per-member sums of :data:`MEMBER_COLUMNS`.
        """
        raise NotImplementedError

    def value(self, totals: Mapping[str, float]) -> float:
        """A plain per-cell number from the cell's column totals (metrics with ``interval=False``)."""
        raise NotImplementedError

    @classmethod
    def axis_label(cls) -> str:
        """``"take fraction (quality plays / impression, %)"``: label, unit, percent sign."""
        unit = ", ".join(u for u in (cls.unit, "%" if cls.percent else "") if u)
        return f"{cls.label} ({unit})" if unit else cls.label


class RatioMetric(Metric):
    """``sum numerator / sum denominator`` over a cell's members (columns of :data:`COLUMNS`),
    with the delta-method standard error over members (:func:`ratio_estimate`).

    ``binomial``: a 0/1 outcome per denominator unit, so that a bucket of the time series gets
    the binomial standard error and power planning (:mod:`sim.power`) applies; ``time_series``:
    the per-bucket ratio is a column of ``timeseries.csv`` (with ``<name>_se`` when binomial);
    ``chart``: ``experiments.plot`` draws it over time."""

    numerator: ClassVar[str]
    denominator: ClassVar[str] = "impressions"
    binomial: ClassVar[bool] = False
    time_series: ClassVar[bool] = True
    chart: ClassVar[bool] = False

    def estimate(self, members):
        return ratio_estimate(members[self.numerator], members[self.denominator])


class MemberMean(Metric):
    """Mean over a cell's members (all allocated, with or without impressions) of one column."""

    column: ClassVar[str]
    needs_impressions = False

    def estimate(self, members):
        x = members[self.column]
        se = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else float("nan")
        return (float(x.mean()) if x.size else float("nan")), se


class TotalMetric(Metric):
    """A plain number per cell from its column totals (simulator ground truth: no interval)."""

    interval = False


class TotalRatio(TotalMetric):
    """``scale * total numerator / total denominator``; undefined (NaN) when the denominator is 0."""

    numerator: ClassVar[str]
    denominator: ClassVar[str] = "impressions"

    def value(self, totals):
        d = totals[self.denominator]
        return totals[self.numerator] / (d if d > 0 else float("nan"))


#: Every metric, by name: the built-ins below and any :class:`Metric` subclass with a ``name``.
METRICS: Registry[Metric] = Registry("metric", Metric, ("sim.metrics",))


def all_metrics() -> list[Metric]:
    """One instance of every registered metric, in registration order."""
    return [cls() for cls in METRICS.classes.values()]


def build_metrics(specs: Iterable[str | Mapping[str, Any]], key: str = "metrics") -> list[Metric]:
    """Metrics selected by name or ``{_target_: my_module.MyMetric}`` (config lists)."""
    out = []
    for i, spec in enumerate(specs):
        cls, params = METRICS.resolve({"name": spec} if isinstance(spec, str) else spec, f"{key}[{i}]")
        out.append(cls(**params))
    return out


def metric_class(name: str) -> type[Metric] | None:
    """The registered metric ``name`` (None for a name only a results file knows)."""
    return METRICS.classes.get(name)
