"""Percentile bootstrap intervals for many off-policy estimates at once, on shared resamples.

Every estimator in :mod:`sim.ope.estimators` is a function of three per-impression columns
(:class:`Terms`)::

    V = mean(direct) + sum(correction) / sum(normaliser)

(``normaliser`` is all ones unless the estimator self-normalises). A bootstrap resample of the
impressions is a vector of multiplicities ``c`` (how often each impression was drawn), and the
resampled estimate is ``sum(c*direct)/n + sum(c*correction)/sum(c*normaliser)``. Writing it this
way lets one set of resamples serve every estimator and every target policy of an evaluation:
one ``(B, n) @ (n, 3m)`` product per chunk instead of ``m`` separate bootstraps, and intervals of
different estimators are computed on the very same resampled logs.

The interval is the percentile interval, the same as ``scipy.stats.bootstrap(...,
method="percentile")`` with the impressions resampled as pairs (``tests/ope/test_ope.py`` checks the
two agree).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Terms:
    """Per-impression pieces of one estimate; arrays of shape (n,).

    ``value = mean(direct) + sum(correction) / sum(normaliser)``.
    """

    direct: np.ndarray
    correction: np.ndarray
    normaliser: np.ndarray

    @property
    def value(self) -> float:
        den = float(self.normaliser.sum())
        # A self-normalised estimate with no support (e.g. replay with no match) is undefined.
        corr = float(self.correction.sum()) / den if den > 0 else float("nan")
        return float(self.direct.mean()) + corr


def percentile_intervals(terms: list[Terms], rng: np.random.Generator, n_bootstrap: int = 1000,
                         alpha: float = 0.05, max_cells: int = 1 << 21) -> np.ndarray:
    """Bootstrap percentile intervals of several estimates on the same resamples.

    Parameters
    ----------
    terms : list of Terms, each with arrays of shape (n,) over the same n impressions
    rng : numpy Generator that draws the resamples (the caller seeds it)
    n_bootstrap : number of resamples B
    alpha : the interval covers 1 - alpha
    max_cells : bound on the size of the (chunk, n) multiplicity matrix held in memory

    Returns
    -------
    ndarray, shape (len(terms), 2)
        Lower and upper bounds. NaN where fewer than half the resamples give a defined value
        (e.g. replay with almost no matching impressions).
    """
    if not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be an integer >= 1, got {n_bootstrap!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if not terms:
        return np.zeros((0, 2))
    n = terms[0].direct.shape[0]
    m = len(terms)
    if n == 0:
        return np.full((m, 2), np.nan)
    table, index = _unique_columns([c for t in terms for c in (t.direct, t.correction, t.normaliser)], n)
    chunk = int(max(1, min(n_bootstrap, max_cells // n)))
    values = np.empty((n_bootstrap, m))
    for lo in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - lo)
        # Multiplicities of a with-replacement resample of n impressions, b resamples at once.
        draws = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        counts = np.bincount(draws.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        # Column 0 is all zeros and column 1 all ones (its resampled sum is always n).
        sums = np.column_stack([np.zeros(b), np.full(b, float(n)), counts @ table])
        sums = sums[:, index].reshape(b, m, 3)
        direct, corr, norm = sums[:, :, 0], sums[:, :, 1], sums[:, :, 2]
        with np.errstate(invalid="ignore", divide="ignore"):
            values[lo:lo + b] = direct / n + np.where(norm > 0, corr / norm, np.nan)
    out = np.full((m, 2), np.nan)
    defined = np.isfinite(values)
    for j in range(m):
        v = values[defined[:, j], j]
        if v.size >= n_bootstrap / 2:
            out[j] = np.quantile(v, [alpha / 2, 1 - alpha / 2])
    return out


def _unique_columns(columns: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct non-constant columns as an (n, u) table, and for each input column its index in
    ``[zeros, ones, *table columns]``.

    Estimators share many columns (dr and sndr share dm's direct term; snipw and sndr the same
    normaliser; most normalisers are ones), so deduplicating shrinks the resampling product.
    """
    index, distinct, seen = [], [], {}
    for col in columns:
        col = np.asarray(col, dtype=np.float64)
        if not col.any():
            index.append(0)
        elif (col == 1.0).all():
            index.append(1)
        else:
            key = hashlib.blake2b(np.ascontiguousarray(col).tobytes(), digest_size=16).digest()
            if key not in seen:
                seen[key] = 2 + len(distinct)
                distinct.append(col)
            index.append(seen[key])
    table = np.column_stack(distinct) if distinct else np.zeros((n, 0))
    return table, np.asarray(index)
