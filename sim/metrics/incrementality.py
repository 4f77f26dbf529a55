"""Incrementality: does a cell's better artwork create quality plays, or move them on the page?

For a cell against the control, from per-member sums (members are the randomisation unit):

* **per-impression lift** -- of the take fraction (quality plays / impression) on the
  *varied* impressions: impressions of titles with at least two artworks
  (``n_candidates >= 2``). Only there can the two arms show different images; a title with one
  image shows it in both arms. This is the headline number of an artwork A/B test.
* **per-visit lift** -- of quality plays per visit (all impressions of the page), and
  **per-member lift** -- of quality plays per member (every member allocated to the cell,
  visits or not).
* **cannibalization share** ``C = 1 - L_page / L_imp``: the part of the per-impression lift that
  is not found at the page level (plays moved from other titles of the page, not gained), with
  ``L_page`` the per-visit lift (``cannibalization_share``) or the per-member lift
  (``cannibalization_share_member``). Without competition between tiles (the ``independent``
  response model) and when every title has two or more images, quality plays per visit are
  impressions per visit times the take fraction, so ``C`` is ~0 (up to a change in impressions
  per visit); with single-image titles, ``C`` also counts their (unchanged) plays, which dilute
  the page-level lift. The ``independent`` world is the reference value of ``C``.

Intervals (95 %, :data:`sim.metrics.Z95`): each arm's rate is a ratio of member sums
``r = sum_m y_m / sum_m n_m`` over its N members, linearised (delta method) as
``r_hat - r ~= (1/N) sum_m psi_m`` with the influence ``psi_m = (y_m - r n_m) / nbar``. Two
ratios of the same members (the page rate ``a`` and the impression rate ``b``) therefore have
covariance::

    Var(r_hat) = Var_m(psi) / N,   Cov(a_hat, b_hat) = Cov_m(psi_a, psi_b) / N

(sample moments with ``ddof=1``; the same standard error as :func:`sim.metrics.ratio_estimate`).
The arms are disjoint member sets, hence independent. Lifts ``r1 / r0 - 1`` get the log-scale
interval of :func:`sim.metrics.lift_interval`. For ``C = 1 - (a1/a0 - 1) / (b1/b0 - 1)`` with
``L_a = a1/a0 - 1`` and ``L_b = b1/b0 - 1`` the gradient is::

    dC/da1 = -1 / (a0 L_b)            dC/da0 = a1 / (a0^2 L_b)
    dC/db1 = L_a / (b0 L_b^2)         dC/db0 = -L_a b1 / (b0^2 L_b^2)

and ``Var(C) = sum_{arm in (1, 0)} g_arm^T Sigma_arm g_arm`` with ``g_arm = (dC/da, dC/db)`` and
``Sigma_arm`` the 2 x 2 covariance of ``(a_hat, b_hat)`` of that arm. The covariance term matters:
page plays include the varied impressions' plays, so ``a`` and ``b`` move together. The normal
interval ``C +- Z95 se`` is reliable only when ``L_imp`` is several standard errors away from 0
(``C`` is a ratio of lifts); otherwise it is wide and says so.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from sim.metrics.intervals import interval, lift_interval
from sim.metrics.table import MEMBER_COLUMNS

#: Per-member sums one arm needs, shape (N,) each (zeros for members without visits).
MEMBER_SUMS = ("varied_impressions", "varied_quality_plays", "visits", "quality_plays")
#: The page-level denominators: per visit, per member (a column of ones).
PAGE_LEVELS = {"visit": "visits", "member": "members"}


def linearize(numerator: np.ndarray, denominator: np.ndarray) -> tuple[float, np.ndarray]:
    """Ratio of sums over members and each member's influence on it.

    Returns
    -------
    (r, psi): ``r = sum y / sum n``; ``psi`` (N,) with ``r_hat - r ~= mean(psi)``, so that
    ``Var(r_hat) ~= var(psi, ddof=1) / N``. NaN and an empty array if ``sum n == 0``.
    """
    y, n = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    total = n.sum()
    if y.size == 0 or total <= 0:
        return float("nan"), np.zeros(0)
    r = float(y.sum() / total)
    return r, (y - r * n) / n.mean()


def _cov(x: np.ndarray, y: np.ndarray) -> float:
    """Covariance of two mean estimates from influences (N,): cov(x, y, ddof=1) / N."""
    N = x.size
    if N < 2:
        return float("nan")
    return float(((x - x.mean()) * (y - y.mean())).sum() / (N - 1) / N)


def cannibalization_share(a1: float, b1: float, cov1: np.ndarray,
                          a0: float, b0: float, cov0: np.ndarray) -> dict:
    """``C = 1 - (a1/a0 - 1) / (b1/b0 - 1)`` with its delta-method 95 % interval.

    Parameters
    ----------
    a1, b1, a0, b0 : page-level rate ``a`` and per-impression rate ``b`` of the cell (1) and the
        control (0)
    cov1, cov0 : ndarray, shape (2, 2) -- covariance of ``(a_hat, b_hat)`` within each arm
    """
    nan = {"estimate": float("nan"), "se": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    if not all(math.isfinite(x) for x in (a1, b1, a0, b0)) or a0 <= 0 or b0 <= 0:
        return nan
    la, lb = a1 / a0 - 1.0, b1 / b0 - 1.0
    if lb == 0:
        return nan
    g1 = np.array([-1.0 / (a0 * lb), la / (b0 * lb ** 2)])
    g0 = np.array([a1 / (a0 ** 2 * lb), -la * b1 / (b0 ** 2 * lb ** 2)])
    var = float(g1 @ cov1 @ g1 + g0 @ cov0 @ g0)
    return interval(1.0 - la / lb, math.sqrt(var) if var >= 0 else float("nan"))


def _arm(sums: Mapping[str, np.ndarray]) -> dict:
    """Rates and influences of one arm: ``b`` per varied impression, ``a`` per visit/member."""
    n_members = np.asarray(sums["visits"]).size
    out = {"members": n_members, "b": linearize(sums["varied_quality_plays"], sums["varied_impressions"])}
    for level, den in PAGE_LEVELS.items():
        denominator = np.ones(n_members) if den == "members" else sums[den]
        out[level] = linearize(sums["quality_plays"], denominator)
    return out


def _se(psi: np.ndarray) -> float:
    return math.sqrt(_cov(psi, psi)) if psi.size > 1 else float("nan")


def incrementality(cell: Mapping[str, np.ndarray], control: Mapping[str, np.ndarray]) -> dict:
    """Per-impression, per-visit and per-member lifts of ``cell`` over ``control`` and the
    cannibalization shares, each with a 95 % interval (module docstring).

    Parameters
    ----------
    cell, control : per-member sums of one arm, :data:`MEMBER_SUMS` -> ndarray, shape (N,)
        (one entry per member allocated to the arm; zeros for members without visits).

    Returns
    -------
    dict with ``per_impression_lift``, ``per_visit_lift``, ``per_member_lift`` (as
    :func:`lift_interval`), ``cannibalization_share`` (per visit) and
    ``cannibalization_share_member`` (``{estimate, se, ci_low, ci_high}``),
    ``lift_covariance`` per page level (``visit``, ``member``: :func:`lift_covariance`), and the
    rates of both arms (``rates``: take fraction on varied impressions, quality plays per visit and per
    member, with standard errors).
    """
    one, zero = _arm(cell), _arm(control)
    out: dict = {"rates": {}, "lift_covariance": {}}
    for label, arm in (("cell", one), ("control", zero)):
        out["rates"][label] = {"members": arm["members"],
                               **{name: interval(arm[key][0], _se(arm[key][1]))
                                  for name, key in (("varied_take_fraction", "b"),
                                                    ("quality_plays_per_visit", "visit"),
                                                    ("quality_plays_per_member", "member"))}}
    for name, key in (("per_impression_lift", "b"), ("per_visit_lift", "visit"), ("per_member_lift", "member")):
        out[name] = lift_interval(one[key][0], _se(one[key][1]), zero[key][0], _se(zero[key][1]))
    for name, level in (("cannibalization_share", "visit"), ("cannibalization_share_member", "member")):
        covs = []
        for arm in (one, zero):
            pa, pb = arm[level][1], arm["b"][1]
            if pa.size != pb.size or pa.size < 2:
                covs.append(np.full((2, 2), np.nan))
                continue
            covs.append(np.array([[_cov(pa, pa), _cov(pa, pb)], [_cov(pa, pb), _cov(pb, pb)]]))
        out[name] = cannibalization_share(one[level][0], one["b"][0], covs[0],
                                          zero[level][0], zero["b"][0], covs[1])
        out["lift_covariance"][level] = lift_covariance(one[level][0], one["b"][0], covs[0],
                                                        zero[level][0], zero["b"][0], covs[1])
    return out


def lift_covariance(a1: float, b1: float, cov1: np.ndarray, a0: float, b0: float, cov0: np.ndarray) -> dict:
    """Delta-method (co)variances of the page lift ``L_a = a1/a0 - 1`` and the impression lift
    ``L_b = b1/b0 - 1`` (linear scale): what combining runs needs (``C`` of pooled lifts).

    ``Var(L_a) = Var(a1)/a0^2 + a1^2 Var(a0)/a0^4``, likewise ``L_b``, and
    ``Cov(L_a, L_b) = Cov(a1, b1)/(a0 b0) + a1 b1 Cov(a0, b0)/(a0^2 b0^2)``.
    """
    if not all(math.isfinite(x) for x in (a1, b1, a0, b0)) or a0 <= 0 or b0 <= 0:
        return {"var_page": float("nan"), "var_impression": float("nan"), "cov": float("nan")}
    ga, gb = (1 / a0, -a1 / a0 ** 2), (1 / b0, -b1 / b0 ** 2)
    return {"var_page": float(ga[0] ** 2 * cov1[0, 0] + ga[1] ** 2 * cov0[0, 0]),
            "var_impression": float(gb[0] ** 2 * cov1[1, 1] + gb[1] ** 2 * cov0[1, 1]),
            "cov": float(ga[0] * gb[0] * cov1[0, 1] + ga[1] * gb[1] * cov0[0, 1])}


def member_sums(member: np.ndarray, visit: np.ndarray, quality_play: np.ndarray,
                n_candidates: np.ndarray, n_members: int | None = None) -> dict[str, np.ndarray]:
    """Per-member :data:`MEMBER_SUMS` of one arm from its impressions, arrays of shape (n,).

    Members are renumbered densely; ``n_members`` (the arm's allocated members, from
    ``metrics.json``) pads zeros for members without an impression (who count in the per-member
    rate). Visits are the distinct ``visit`` ids of a member: a visit without a rendered tile is
    not counted.
    """
    ids, inv = np.unique(member, return_inverse=True)
    varied = np.asarray(n_candidates) >= 2
    q = np.asarray(quality_play, np.float64)
    _, first = np.unique(visit, return_index=True)
    sums = {"varied_impressions": np.bincount(inv, weights=varied.astype(np.float64), minlength=ids.size),
            "varied_quality_plays": np.bincount(inv, weights=q * varied, minlength=ids.size),
            "visits": np.bincount(inv[first], minlength=ids.size).astype(np.float64),
            "quality_plays": np.bincount(inv, weights=q, minlength=ids.size)}
    if n_members is not None and n_members > ids.size:
        sums = {k: np.r_[v, np.zeros(n_members - ids.size)] for k, v in sums.items()}
    return sums


def incrementality_section(log: Mapping[str, np.ndarray], control: str,
                           members_per_cell: Mapping[str, int] | None = None) -> dict:
    """``{cell: incrementality(cell, control)}`` for every non-control cell of an impression
    log (columns ``cell``, ``member``, ``visit``, ``quality_play``, ``n_candidates``, (n,))."""
    members_per_cell = members_per_cell or {}
    cells = [str(c) for c in np.unique(log["cell"])]
    if control not in cells:
        return {}
    sums = {}
    for c in cells:
        rows = log["cell"] == c
        sums[c] = member_sums(log["member"][rows], log["visit"][rows], log["quality_play"][rows],
                              log["n_candidates"][rows], members_per_cell.get(c))
    return {c: incrementality(sums[c], sums[control]) for c in cells if c != control}


def incrementality_summary(accumulator, member_cell: np.ndarray, control: str) -> dict:
    """The ``incrementality`` section of ``metrics.json``: :func:`incrementality` of every
    non-control cell, from a :class:`sim.metrics.MetricsAccumulator`'s per-member sums
    (``member_cell`` (M,): each member's cell index; every allocated member counts)."""
    names = accumulator.cell_names
    if control not in names:
        return {}
    cols = {k: MEMBER_COLUMNS.index(k) for k in MEMBER_SUMS}
    sums = {name: {k: accumulator.per_member[member_cell == c, j] for k, j in cols.items()}
            for c, name in enumerate(names)}
    return {name: incrementality(sums[name], sums[control]) for name in names if name != control}


def incrementality_undefined(section: dict) -> dict[str, str]:
    """Why each undefined (NaN, written as null) number of the ``incrementality`` section is
    undefined, keyed ``incrementality.<cell>.<key>`` (one entry per top-level key of a cell),
    for ``metrics.json``'s ``undefined`` map.

    A lift needs a positive rate in the cell and the control, a standard error needs two members
    with impressions, and the cannibalization share needs a nonzero per-impression lift; tiny
    worlds, cells without visits and titles with a single image produce these."""
    def has_nan(value) -> bool:
        if isinstance(value, dict):
            return any(has_nan(v) for v in value.values())
        return isinstance(value, float) and not math.isfinite(value)

    return {f"incrementality.{cell}.{key}":
            f"{key} is undefined: a rate is 0 or undefined in cell {cell!r} or the control (too few "
            "impressions of multi-image titles, visits or quality plays), or a lift it divides by is 0"
            for cell, parts in section.items() for key, value in parts.items() if has_nan(value)}
