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


# ---- page level: per visit (one visit = one session = one page) ----------------------------
class PlaysPerVisit(RatioMetric):
    name, label, unit = "plays_per_visit", "plays per visit", "plays / visit"
    numerator, denominator = "plays", "visits"


class QualityPlaysPerVisit(RatioMetric):
    """What a member gains from a page: under the session model at most one per visit, so a
    compelling image that only moves the play from a neighbouring tile does not raise it."""

    name, label, unit = "quality_plays_per_visit", "quality plays per visit", "quality plays / visit"
    numerator, denominator = "quality_plays", "visits"


class VisitSuccessRate(RatioMetric):
    name, label, unit = "visit_success_rate", "visit success rate", "visits with a quality play / visit"
    numerator, denominator, percent, binomial, chart = "successful_visits", "visits", True, True, True


class MinutesPerVisit(RatioMetric):
    name, label, unit = "minutes_per_visit", "watch minutes per visit", "minutes / visit"
    numerator, denominator = "minutes", "visits"


class TimeToFirstPlay(RatioMetric):
    """Seconds from page render to the first play start, over visits with a play (session
    model: the member's scan clock; independent model: click + play delay)."""

    name, label, unit = "time_to_first_play", "time to first play", "seconds"
    numerator, denominator = "first_play_seconds", "visits_with_play"


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
