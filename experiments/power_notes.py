"""Warnings for intervals too wide to support a conclusion, with the minimum detectable effect.

The run summary (``experiments.run``) and the report print them under the lift table. A lift
interval "supports no conclusion" when it is wider than the effects artwork policies have (its
half-width over :data:`WIDE_HALF_WIDTH`: a fixed image and Thompson sampling differ by a few
percent) or when it includes 0. The minimum detectable effect (MDE, 80 % power, two-sided alpha
0.05, :func:`sim.power.mde_from_standard_errors`) says how large a lift this test could have
detected, and how many times the members would bring it under :data:`WIDE_HALF_WIDTH`.
"""
from __future__ import annotations

import math

from sim.metrics import metric_class
from sim.power import mde_from_standard_errors

ALPHA, POWER = 0.05, 0.8
#: Half-width of a 95 % lift interval above which the interval cannot separate artwork policies
#: (README: the default experiment's cells differ by 3-20 % in take fraction).
WIDE_HALF_WIDTH = 0.10
#: The metric the summary's lift column shows.
SUMMARY_METRIC = "take_fraction"


def cell_mde(metrics: dict, cell: str, metric: str = SUMMARY_METRIC, member_scale: float = 1.0) -> float:
    """MDE of ``metric``'s lift of ``cell`` over the control in a test shaped like this run."""
    r0, r1 = metrics["cells"][metrics["control"]].get(metric), metrics["cells"][cell].get(metric)
    if not r0 or not r1 or None in (r0.get("estimate"), r0.get("se"), r1.get("estimate"), r1.get("se")):
        return float("nan")
    # Lifts are taken on the metric's own scale (artwork gain: before its offset of -1).
    offset = getattr(metric_class(metric), "offset", 0.0)
    return mde_from_standard_errors(r0["estimate"] - offset, r0["se"], r1["estimate"] - offset, r1["se"],
                                    ALPHA, POWER, member_scale)


def members_needed(mde: float, target: float = WIDE_HALF_WIDTH) -> float:
    """Factor on the members that brings an MDE down to ``target`` (the MDE's log scales as 1/sqrt(N))."""
    if not (math.isfinite(mde) and mde > 0):
        return float("nan")
    return (math.log1p(mde) / math.log1p(target)) ** 2


def underpowered_notes(metrics: dict, metric: str = SUMMARY_METRIC) -> list[str]:
    """One line per non-control cell whose lift interval of ``metric`` supports no conclusion
    (too wide, or including 0), with the MDE of this test; [] when every interval is conclusive."""
    out = []
    for cell, lifts in (metrics.get("lift") or {}).items():
        lift = lifts.get(metric) or {}
        if lift.get("estimate") is None or lift.get("ci_low") is None:
            continue
        lo, hi = lift["ci_low"], lift["ci_high"]
        half = (hi - lo) / 2
        wide, spans_zero = half > WIDE_HALF_WIDTH, lo <= 0 <= hi
        if not (wide or spans_zero):
            continue
        mde = cell_mde(metrics, cell, metric)
        why = (f"+-{half:.0%} wide, too wide to support a conclusion" if wide
               else "includes 0: no detectable difference")
        line = (f"warning: {cell}: {metric} lift interval [{lo:+.1%}, {hi:+.1%}] is {why}; "
                f"minimum detectable effect of this test {mde:.1%} (80 % power, alpha 0.05)")
        scale = members_needed(mde)
        if wide and math.isfinite(scale) and scale > 1:
            line += f"; about {math.ceil(scale)}x the members would detect a {WIDE_HALF_WIDTH:.0%} lift"
        out.append(line)
    if out and any(isinstance(c.get("artwork_gain"), dict) for c in metrics["cells"].values()):
        out.append("note: artwork gain (ground truth, same impressions) compares the cells' images with "
                   "much narrower intervals than realised rates")
    return out


def mde_line(metrics: dict, metric: str = SUMMARY_METRIC) -> str | None:
    """'minimum detectable effect ...' for every non-control cell, one line; None without lifts."""
    mdes = {cell: cell_mde(metrics, cell, metric) for cell in (metrics.get("lift") or {})}
    parts = [f"{cell} {mde:.1%}" for cell, mde in mdes.items() if math.isfinite(mde)]
    if not parts:
        return None
    return (f"minimum detectable {metric} lift (80 % power, alpha 0.05, this test's members): "
            + ", ".join(parts))
