"""Fit the ``independent`` response model's click part to an impression log.

The model fitted (:class:`sim.world.response.ResponseModel` with no taste or artwork term)::

    P(click | item i, row r, column c) = (r + 1)^-a_r * (c + 1)^-a_c * sigmoid(b + delta_i)

``b`` is the base rate (click logit of a looked-at tile of an average item), ``a_r``, ``a_c`` the
position attention exponents and ``delta_i`` the item effects, with a Gaussian prior of sd
``item_prior_sd`` (ridge: rarely shown items shrink toward 0). Maximum penalised likelihood on
counts aggregated per (item, row, column) cell, so the cost does not grow with the log's length.
A log with one position axis (Open Bandit Dataset: ``position`` 1-3) is read as columns of one
row; ``a_r`` is then not identified, and :func:`world_config` writes ``a_c`` for both axes.

Logs read (:func:`read_click_log`): Open Bandit Dataset CSV, the native bandit-feedback layout
(:mod:`sim.ope.data`, ``reward`` as the click; ``title`` as the item when present, and
``context_row`` / ``context_column`` as the position when present), or a run's impression log
(:mod:`sim.logs`, a run directory or its ``logs`` folder: ``click`` at ``row``, ``column`` of ``title``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Prior sd of item effects (logit units) unless given.
ITEM_PRIOR_SD = 1.0


@dataclass(frozen=True)
class ClickLog:
    """Impressions with clicks. item (n,) dense 0-based, row, column (n,) 0-based, click (n,) 0/1;
    item_ids (n_items,) the log's own item ids; layout names the file layout read."""

    item: np.ndarray
    row: np.ndarray
    column: np.ndarray
    click: np.ndarray
    item_ids: np.ndarray
    layout: str

    @property
    def n_items(self) -> int:
        return int(self.item_ids.size)


def _click_log(item, row, column, click, layout) -> ClickLog:
    ids, dense = np.unique(np.asarray(item), return_inverse=True)
    return ClickLog(dense.astype(np.int64), np.asarray(row, np.int64), np.asarray(column, np.int64),
                    np.asarray(click, np.float64), ids, layout)


def read_click_log(path: Path | str) -> ClickLog:
    """Read impressions and clicks from any of the layouts in the module docstring."""
    from sim.ope.data import load_bandit_feedback

    path = Path(path)
    if path.is_dir() and ((path / "logs").is_dir() or any(path.glob("part-*.parquet"))):
        from sim.logs import read_impressions
        log = read_impressions(path, columns=["title", "row", "column", "click"])
        return _click_log(log["title"].to_numpy(), log["row"].to_numpy(), log["column"].to_numpy(),
                          log["click"].to_numpy(), "simulator impression log")
    bf = load_bandit_feedback(path)
    names = list(bf.get("context_names") or [])
    if "item_id" in _columns(path):
        return _click_log(bf["action"], np.zeros(bf["n_rounds"]), bf["position"], bf["reward"],
                          "Open Bandit Dataset")
    if "row" in names and "column" in names:
        ctx = np.asarray(bf["context"])
        row, column = ctx[:, names.index("row")], ctx[:, names.index("column")]
    else:
        row, column = np.zeros(bf["n_rounds"]), bf["position"]
    item = bf["title"] if "title" in bf else bf["action"]
    return _click_log(item, row, column, bf["reward"], "native bandit feedback")


def _columns(path: Path) -> list[str]:
    import pandas as pd
    import pyarrow.parquet as pq
    if path.suffix.lower() == ".csv":
        return list(pd.read_csv(path, nrows=0).columns)
    return list(pq.read_schema(path).names) if path.is_file() else []


@dataclass(frozen=True)
class ClickFit:
    """Fitted parameters, standard errors (from the penalised observed information) and the log's
    size. ``row_identified`` is False when every impression is in row 0."""

    base_logit: float
    row_exponent: float
    column_exponent: float
    item_effect: np.ndarray          # (n_items,)
    base_logit_se: float
    row_exponent_se: float
    column_exponent_se: float
    item_effect_se: np.ndarray       # (n_items,)
    row_identified: bool
    item_prior_sd: float
    n_impressions: int
    n_clicks: int

    def click_probability(self, item: np.ndarray, row: np.ndarray, column: np.ndarray) -> np.ndarray:
        """Fitted P(click), shape (n,)."""
        z = self.base_logit + self.item_effect[item]
        return (row + 1.0) ** -self.row_exponent * (column + 1.0) ** -self.column_exponent / (1 + np.exp(-z))


def _cells(log: ClickLog):
    key = np.stack([log.item, log.row, log.column])
    cells, inverse = np.unique(key, axis=1, return_inverse=True)
    inverse = inverse.reshape(-1)
    n = np.bincount(inverse, minlength=cells.shape[1]).astype(float)
    k = np.bincount(inverse, weights=log.click, minlength=cells.shape[1])
    return cells[0], np.log1p(cells[1].astype(float)), np.log1p(cells[2].astype(float)), n, k


def fit_clicks(log: ClickLog, item_prior_sd: float = ITEM_PRIOR_SD) -> ClickFit:
    """Maximum penalised likelihood fit of (b, a_r, a_c, delta) to ``log`` (module docstring)."""
    from scipy.optimize import minimize

    if log.click.size == 0 or log.click.sum() == 0:
        raise ValueError("the log has no clicks: base rate and position attention cannot be fitted")
    item, lr, lc, n, k = _cells(log)
    I, lam = log.n_items, 1.0 / item_prior_sd ** 2
    row_identified = bool((lr > 0).any())

    def nll(theta):
        b, ar, ac, d = theta[0], theta[1], theta[2], theta[3:]
        z = b + d[item]
        s = 1.0 / (1.0 + np.exp(-z))
        p = np.clip(np.exp(-ar * lr - ac * lc) * s, 1e-12, 1 - 1e-12)
        value = -(k * np.log(p) + (n - k) * np.log1p(-p)).sum() + 0.5 * lam * d @ d
        e = k - (n - k) * p / (1 - p)        # d loglik / d log p
        g_z = -e * (1 - s)
        grad = np.concatenate([[g_z.sum(), (e * lr).sum(), (e * lc).sum()],
                               np.bincount(item, weights=g_z, minlength=I) + lam * d])
        return value, grad

    rate = k.sum() / n.sum()
    theta0 = np.concatenate([[np.log(rate / (1 - rate)), 0.5, 0.5], np.zeros(I)])
    bounds = [(-30, 30), (0, 10) if row_identified else (0.5, 0.5), (0, 10)] + [(-30, 30)] * I
    res = minimize(nll, theta0, jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": 5000, "ftol": 1e-13, "gtol": 1e-9})
    theta = res.x
    se = _standard_errors(nll, theta, row_identified)
    ar = theta[1] if row_identified else theta[2]
    return ClickFit(float(theta[0]), float(ar), float(theta[2]), theta[3:].copy(), float(se[0]),
                    float(se[1]) if row_identified else float("nan"), float(se[2]), se[3:].copy(),
                    row_identified, float(item_prior_sd), int(n.sum()), int(k.sum()))


def _standard_errors(nll, theta, row_identified: bool) -> np.ndarray:
    """sqrt(diag(H^-1)) of the penalised negative log-likelihood; H by central differences of the
    gradient (2 x n_params gradient calls, each over the aggregated cells)."""
    P = theta.size
    free = np.ones(P, dtype=bool)
    free[1] = row_identified
    H = np.zeros((P, P))
    for j in np.flatnonzero(free):
        h = 1e-5 * max(1.0, abs(theta[j]))
        up, down = theta.copy(), theta.copy()
        up[j] += h
        down[j] -= h
        H[:, j] = (nll(up)[1] - nll(down)[1]) / (2 * h)
    H = 0.5 * (H + H.T)[np.ix_(free, free)]
    se = np.full(P, np.nan)
    try:
        se[free] = np.sqrt(np.clip(np.diag(np.linalg.inv(H)), 0, None))
    except np.linalg.LinAlgError:
        pass
    return se


def rate_table(log: ClickLog, fit: ClickFit, by: str) -> list[dict]:
    """Logged vs fitted click rate per ``by`` ("position": (row, column) pairs; "item").

    Rows ``{by, impressions, clicks, logged_rate, logged_se, fitted_rate, z}``; the fitted rate is
    the mean fitted probability over the same impressions; z = (logged - fitted) / logged SE."""
    p = fit.click_probability(log.item, log.row, log.column)
    if by == "position":
        key = np.stack([log.row, log.column])
        groups, inv = np.unique(key, axis=1, return_inverse=True)
        labels = [f"row {r} column {c}" if fit.row_identified else f"position {c + 1}" for r, c in groups.T]
    else:
        inv = log.item
        labels = [str(i) for i in log.item_ids]
    inv = np.asarray(inv).reshape(-1)
    G = len(labels)
    n = np.bincount(inv, minlength=G).astype(float)
    k = np.bincount(inv, weights=log.click, minlength=G)
    f = np.bincount(inv, weights=p, minlength=G) / np.maximum(n, 1)
    rows = []
    for g in range(G):
        if n[g] == 0:
            continue
        rate = k[g] / n[g]
        se = np.sqrt(max(f[g] * (1 - f[g]), 1e-12) / n[g])   # SE under the fitted rate (0 clicks is common)
        lo, hi = wilson_interval(k[g], n[g])
        rows.append({by: labels[g], "impressions": int(n[g]), "clicks": int(k[g]), "logged_rate": rate,
                     "logged_low95": lo, "logged_high95": hi, "logged_se": float(se),
                     "fitted_rate": float(f[g]), "z": float((rate - f[g]) / se)})
    return rows


def wilson_interval(k: float, n: float, z: float = 1.959963984540054) -> tuple[float, float]:
    """95 % Wilson score interval of a rate k / n (stays inside [0, 1], also for 0 clicks)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(centre - half, 0.0)), float(min(centre + half, 1.0))


def world_config(fit: ClickFit, name: str) -> tuple[dict, dict]:
    """The fitted world as two config mappings: ``world/<name>.yaml`` (titles = the log's items,
    ``title_quality`` = item effects) and ``world/response/<name>.yaml`` (independent model:
    base rate, attention; taste and artwork terms off, since the log does not identify them)."""
    world = {"name": name, "n_titles": int(fit.item_effect.size),
             "title_quality": [round(float(d), 6) for d in fit.item_effect]}
    response = {"name": "independent", "click_intercept": round(fit.base_logit, 6),
                "row_attention_exponent": round(fit.row_exponent, 6),
                "column_attention_exponent": round(fit.column_exponent, 6),
                "title_quality_weight": 1.0, "fit_weight": 0.0, "theme_weight": 0.0,
                "appeal_sd": 0.0, "clickbait_appeal": 0.0}
    return world, response
