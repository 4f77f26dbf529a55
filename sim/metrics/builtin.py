"""The built-in metrics, in ``metrics.json`` order (see :class:`sim.metrics.Metric`)."""
from __future__ import annotations

from sim.metrics.table import MemberMean, RatioMetric, TotalMetric, TotalRatio


class ClickThroughRate(RatioMetric):
    name, label, unit = "ctr", "CTR", "clicks / impression"
    numerator, percent, binomial, chart = "clicks", True, True, True


class PlayRate(RatioMetric):
    name, label, unit = "play_rate", "play rate", "plays / impression"
    numerator, percent, binomial = "plays", True, True


class TakeFraction(RatioMetric):
    name, label, unit = "take_fraction", "take fraction", "quality plays / impression"
    numerator, percent, binomial, chart = "quality_plays", True, True, True


class ArtworkGain(RatioMetric):
    """True take of the shown images over a random image's, on the same impressions (simulator
    ground truth), minus one. Member, title and position effects cancel in the ratio, so it
    isolates the artwork policy with little noise."""

    name, label, unit = "artwork_gain", "artwork gain", "true take vs a random image"
    numerator, denominator, percent, offset, time_series = "expected_take", "uniform_take", True, -1.0, False


class MinutesPerMember(MemberMean):
    name, label, unit, column = "minutes_per_member", "minutes per member", "minutes", "minutes"


class ExpectedTakeFraction(TotalRatio):
    name, label, unit, numerator, percent = ("expected_take_fraction", "expected take fraction",
                                             "true quality-play probability / impression", "expected_take", True)


class OracleTakeFraction(TotalRatio):
    name, label, unit, numerator, percent = ("oracle_take_fraction", "oracle take fraction",
                                             "with the best image / impression", "oracle_take", True)


class UniformTakeFraction(TotalRatio):
    name, label, unit, numerator, percent = ("uniform_take_fraction", "uniform take fraction",
                                             "with a random image / impression", "uniform_take", True)


class ExpectedRegret(TotalMetric):
    name, label, unit = "expected_regret", "expected regret", "quality plays lost vs the oracle"

    def value(self, totals):
        return totals["oracle_take"] - totals["expected_take"]


class RegretPer1kImpressions(TotalMetric):
    name, label, unit = "regret_per_1k_impressions", "regret / 1k impressions", "quality plays lost"

    def value(self, totals):
        n = totals["impressions"] if totals["impressions"] > 0 else float("nan")
        return 1000.0 * (totals["oracle_take"] - totals["expected_take"]) / n
