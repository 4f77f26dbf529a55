"""Online metric sums: per member (rows of a member block) and per (time bucket, cell).

One pass over the impressions (or visits) of a batch. Sums run in the order the NumPy code
used (``np.add.at`` row by row; per bucket a ``bincount`` from zero, then added to the series),
so results are bit-identical to it.
"""
from __future__ import annotations

import numpy as np

from sim.kernels import kernel


@kernel
def accumulate(per_member, series, cell, rows, bucket, values, member_src, member_dst, series_src, series_dst):
    """Add ``values`` (n, J) float64 into ``per_member`` (M, W) and ``series`` (B, cells, S).

    ``per_member[rows[i], member_dst[k]] += values[i, member_src[k]]``; per bucket ``b`` the
    sum over impressions ``i`` with ``bucket[i] == b`` of ``values[i, series_src[k]]`` is added
    to ``series[b, cell, series_dst[k]]``. rows, bucket (n,) int64."""
    n = values.shape[0]
    n_buckets = series.shape[0]
    by_bucket = np.zeros((n_buckets, series_src.shape[0]))
    for i in range(n):
        r = rows[i]
        for k in range(member_src.shape[0]):
            per_member[r, member_dst[k]] += values[i, member_src[k]]
        b = bucket[i]
        for k in range(series_src.shape[0]):
            by_bucket[b, k] += values[i, series_src[k]]
    for b in range(n_buckets):
        for k in range(series_src.shape[0]):
            series[b, cell, series_dst[k]] += by_bucket[b, k]


@kernel
def count_visits(per_member, series, column_member, column_series, rows, bucket, cell):
    """One visit each: ``per_member[rows[i], column_member] += 1`` and
    ``series[bucket[i], cell[i], column_series] += 1``."""
    for i in range(rows.shape[0]):
        per_member[rows[i], column_member] += 1.0
        series[bucket[i], cell[i], column_series] += 1.0


@kernel
def scatter_add(target, rows, values):
    """``target[rows[i], k] += values[i, k]`` for k < values.shape[1], i in order (repeated rows
    add up, as ``np.add.at`` does)."""
    for i in range(rows.shape[0]):
        r = rows[i]
        for k in range(values.shape[1]):
            target[r, k] += values[i, k]
