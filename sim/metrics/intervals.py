"""95 % intervals: the z quantile, ratio estimates over members (delta method), lifts.

Ratio metrics are sums over a cell's members of an outcome divided by the sum of a denominator;
their variance comes from the delta method over members (impressions of one member are
correlated, members are independent)::

    R = sum_m y_m / sum_m n_m,   Var(R) ~= Var_m(y_m - R n_m) / (N * mean(n)^2)

Lift = R_cell / R_control - 1 with a 95 % interval from the log-ratio's standard error.
"""
from __future__ import annotations

import math

import numpy as np
# scipy.special, not scipy.stats: the same normal quantile and tail (scipy.stats.norm calls
# these), at a third of the import time every run and worker process pays.
from scipy.special import ndtr, ndtri

#: The two-sided 95 % normal quantile z_{0.975} = 1.95996...: every 95 % interval uses it.
Z95 = float(ndtri(0.975))


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



def interval(estimate: float, se: float) -> dict:
    """``{estimate, se, ci_low, ci_high}`` with a normal 95 % interval."""
    return {"estimate": estimate, "se": se, "ci_low": estimate - Z95 * se, "ci_high": estimate + Z95 * se}


def lift_interval(r1: float, se1: float, r0: float, se0: float) -> dict:
    """Lift r1 / r0 - 1 with a 95 % interval and two-sided p-value on the log scale."""
    if not (r1 > 0 and r0 > 0) or not (math.isfinite(se1) and math.isfinite(se0)):
        return {"estimate": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "p_value": float("nan")}
    log_lift = math.log(r1 / r0)
    se = math.sqrt((se1 / r1) ** 2 + (se0 / r0) ** 2)
    z = Z95
    p = float(2 * ndtr(-abs(log_lift) / se)) if se > 0 else float("nan")
    return {"estimate": r1 / r0 - 1, "ci_low": math.exp(log_lift - z * se) - 1,
            "ci_high": math.exp(log_lift + z * se) - 1, "p_value": p}
