"""Online metric accumulators, lifts with confidence intervals, and time series.

Everything is accumulated as sums, so memory does not grow with simulated time: per-member totals
(the randomisation unit, for confidence intervals), and per-cell totals per time bucket.

Ratio metrics (CTR, play rate, take fraction) are sums over a cell's members of an outcome
divided by the sum of impressions; their variance comes from the delta method over members
(impressions of one member are correlated, members are independent)::

    R = sum_m y_m / sum_m n_m,   Var(R) ~= Var_m(y_m - R n_m) / (N * mean(n)^2)

Lift = R_cell / R_control - 1 with a 95 % interval from the log-ratio's standard error.
"""
from __future__ import annotations

import math
import numpy as np
from scipy import stats as st

#: Per-member accumulated columns.
MEMBER_COLUMNS = ("impressions", "clicks", "plays", "quality_plays", "minutes", "visits",
                  "expected_take", "uniform_take")
#: Per-cell, per-bucket accumulated columns.
SERIES_COLUMNS = ("impressions", "clicks", "plays", "quality_plays", "minutes", "visits",
                  "expected_take", "oracle_take", "uniform_take")
#: Ratio metrics reported with intervals: name -> numerator column.
RATIO_METRICS = {"ctr": "clicks", "play_rate": "plays", "take_fraction": "quality_plays"}


class MetricsAccumulator:
    """Sums per member and per (time bucket, cell).

    ``member_offset``: the accumulator covers members ``member_offset .. + n_members`` (one
    member block of a shard); :meth:`combine` joins consecutive blocks."""

    def __init__(self, n_members: int, cell_names: list[str], horizon_minutes: float,
                 bucket_minutes: float, member_offset: int = 0):
        self.cell_names = list(cell_names)
        self.member_offset = int(member_offset)
        self.per_member = np.zeros((n_members, len(MEMBER_COLUMNS)))
        self.bucket_minutes = float(bucket_minutes)
        n_buckets = max(1, math.ceil(horizon_minutes / bucket_minutes))
        self.series = np.zeros((n_buckets, len(self.cell_names), len(SERIES_COLUMNS)))

    @classmethod
    def combine(cls, parts: list["MetricsAccumulator"]) -> "MetricsAccumulator":
        """One accumulator from consecutive member blocks, given in block order: per-member rows
        are stacked and time series added in that order (so float sums do not depend on how
        blocks were spread over shards)."""
        first = parts[0]
        out = cls.__new__(cls)
        out.cell_names, out.member_offset = list(first.cell_names), first.member_offset
        out.bucket_minutes = first.bucket_minutes
        out.per_member = np.concatenate([p.per_member for p in parts])
        out.series = np.zeros_like(first.series)
        for p in parts:
            out.series += p.series
        return out

    def add_visits(self, member: np.ndarray, cell: np.ndarray, time: np.ndarray) -> None:
        np.add.at(self.per_member[:, 5], member - self.member_offset, 1.0)
        b = self._bucket(time)
        np.add.at(self.series[:, :, 5], (b, cell), 1.0)

    def add_impressions(self, member: np.ndarray, cell_index: int, time: np.ndarray,
                        click, play, quality, minutes, expected_take, oracle_take, uniform_take) -> None:
        """Accumulate n impressions of one cell; every array has shape (n,)."""
        vals = np.column_stack([np.ones(member.size), click, play, quality, minutes])
        scatter_add_rows(self.per_member, member - self.member_offset, np.column_stack(
            [vals, np.zeros(member.size), expected_take, uniform_take]))
        b = self._bucket(time)
        full = np.column_stack([vals, np.zeros(member.size), expected_take, oracle_take, uniform_take])
        # Buckets inside one serving window are few: sum per bucket with bincount.
        for j in range(full.shape[1]):
            self.series[:, cell_index, j] += np.bincount(b, weights=full[:, j],
                                                         minlength=self.series.shape[0])

    def _bucket(self, time: np.ndarray) -> np.ndarray:
        return np.minimum((time // self.bucket_minutes).astype(np.int64), self.series.shape[0] - 1)

    # ---- summaries ------------------------------------------------------------------------
    def summary(self, member_cell: np.ndarray, control: str) -> dict:
        """Per-cell metrics with 95 % intervals and lifts against ``control``."""
        out: dict = {"cells": {}, "lift": {}}
        totals = self.series.sum(axis=0)
        estimates = {}
        for c, name in enumerate(self.cell_names):
            pm = self.per_member[member_cell == c]
            t = dict(zip(SERIES_COLUMNS, totals[c]))
            cell = {"members": int(pm.shape[0]), "impressions": int(t["impressions"]),
                    "visits": int(t["visits"]), "clicks": int(t["clicks"]), "plays": int(t["plays"]),
                    "quality_plays": int(t["quality_plays"]), "minutes": float(t["minutes"])}
            estimates[name] = {}
            for metric, col in RATIO_METRICS.items():
                r, se = ratio_estimate(pm[:, MEMBER_COLUMNS.index(col)], pm[:, 0])
                estimates[name][metric] = (r, se)
                cell[metric] = _interval(r, se)
            # Artwork gain: true take of the shown images over a random image's, on the same
            # impressions (simulator ground truth). Member, title and position effects cancel in
            # the ratio, so it isolates the artwork policy with little noise.
            g, g_se = ratio_estimate(pm[:, MEMBER_COLUMNS.index("expected_take")],
                                     pm[:, MEMBER_COLUMNS.index("uniform_take")])
            estimates[name]["artwork_gain"] = (g, g_se)
            cell["artwork_gain"] = _interval(g - 1.0, g_se)
            mins = pm[:, MEMBER_COLUMNS.index("minutes")]
            m_se = float(mins.std(ddof=1) / math.sqrt(mins.size)) if mins.size > 1 else float("nan")
            estimates[name]["minutes_per_member"] = (float(mins.mean()) if mins.size else float("nan"), m_se)
            cell["minutes_per_member"] = _interval(*estimates[name]["minutes_per_member"])
            # Per-impression rates of a cell without impressions are undefined (NaN -> null in
            # metrics.json, with the reason under "undefined"), not 0.
            n = t["impressions"] if t["impressions"] > 0 else float("nan")
            cell["expected_take_fraction"] = t["expected_take"] / n
            cell["oracle_take_fraction"] = t["oracle_take"] / n
            cell["uniform_take_fraction"] = t["uniform_take"] / n
            cell["expected_regret"] = t["oracle_take"] - t["expected_take"]
            cell["regret_per_1k_impressions"] = 1000.0 * (t["oracle_take"] - t["expected_take"]) / n
            out["cells"][name] = cell
        base = estimates[control]
        for name in self.cell_names:
            if name == control:
                continue
            out["lift"][name] = {m: lift_interval(*estimates[name][m], *base[m]) for m in estimates[name]}
        out["undefined"] = undefined_reasons(out, control)
        return out

    def time_series(self) -> list[dict]:
        """Rows (bucket, cell) with counts, rates and cumulative expected regret."""
        rows = []
        cum_regret = np.cumsum(self.series[:, :, 7] - self.series[:, :, 6], axis=0)
        for b in range(self.series.shape[0]):
            for c, name in enumerate(self.cell_names):
                s = dict(zip(SERIES_COLUMNS, self.series[b, c]))
                n = s["impressions"]
                row = {"hour": (b + 1) * self.bucket_minutes / 60.0, "cell": name, **s}
                for metric, col in RATIO_METRICS.items():
                    p = s[col] / n if n else float("nan")
                    # Binomial standard error per bucket (ignores within-member correlation).
                    row[metric] = p
                    row[metric + "_se"] = math.sqrt(p * (1 - p) / n) if n else float("nan")
                row["cumulative_regret"] = float(cum_regret[b, c])
                rows.append(row)
        return rows


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
            if cell["members"] == 0:
                why = "no members were allocated to this cell"
            elif cell["impressions"] == 0 and metric != "minutes_per_member":
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
    """``target[rows[i], :k] += values[i]`` with repeated rows, for C-contiguous 2-D ``target``.

    A 1-D ``np.add.at`` on flat indices is several times faster than the 2-D form."""
    width, k = target.shape[1], values.shape[1]
    flat = (rows.astype(np.int64)[:, None] * width + np.arange(k)).ravel()
    np.add.at(target.reshape(-1), flat, values.ravel())


def ratio_estimate(numerator: np.ndarray, denominator: np.ndarray) -> tuple[float, float]:
    """Ratio of sums over members and its delta-method standard error."""
    keep = denominator > 0
    y, n = numerator[keep], denominator[keep]
    N = y.size
    if N == 0:
        return float("nan"), float("nan")
    r = float(y.sum() / n.sum())
    if N < 2:
        return r, float("nan")
    resid = y - r * n
    se = float(math.sqrt(resid.var(ddof=1) / N) / n.mean())
    return r, se


def _interval(estimate: float, se: float) -> dict:
    z = st.norm.ppf(0.975)
    return {"estimate": estimate, "se": se, "ci_low": estimate - z * se, "ci_high": estimate + z * se}


def lift_interval(r1: float, se1: float, r0: float, se0: float) -> dict:
    """Lift r1 / r0 - 1 with a 95 % interval and two-sided p-value on the log scale."""
    if not (r1 > 0 and r0 > 0) or not (math.isfinite(se1) and math.isfinite(se0)):
        return {"estimate": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "p_value": float("nan")}
    log_lift = math.log(r1 / r0)
    se = math.sqrt((se1 / r1) ** 2 + (se0 / r0) ** 2)
    z = st.norm.ppf(0.975)
    p = float(2 * st.norm.sf(abs(log_lift) / se)) if se > 0 else float("nan")
    return {"estimate": r1 / r0 - 1, "ci_low": math.exp(log_lift - z * se) - 1,
            "ci_high": math.exp(log_lift + z * se) - 1, "p_value": p}


