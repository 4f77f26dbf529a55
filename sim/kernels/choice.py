"""The best candidate of each impression under each posterior draw (sampled-posterior policies).

``(scores + np.take(table, candidates, axis=1)).argmax(axis=2).T`` in one pass, without the
(D, n, K) temporary of the gathered table and the sum: float32 + float32 rounds the same
compiled as in NumPy, and ties and NaN go as ``argmax`` sends them (the first maximum; the
first NaN, as NumPy treats NaN as the largest value).
"""
from __future__ import annotations

import numpy as np

from sim.kernels import kernel


@kernel
def best_candidates(scores, table, candidates):
    """scores (D, n, K) float32 or float64, table (D, A + 1) of the same kind (column ``-1``, the
    last, scores the padding ``-1``), candidates (n, K), K >= 1, integer artwork ids in [0, A)
    or -1 (not checked here: the caller checks, as indexing would have).
    Returns (n, D) int64: per impression and draw, the index of the best candidate."""
    D, n, K = scores.shape
    A1 = table.shape[1]
    out = np.empty((n, D), np.int64)
    for d in range(D):                  # draw by draw: scores[d] and table[d] are contiguous
        for i in range(n):
            best_k = 0
            best = np.float32(0.0)
            for k in range(K):
                c = candidates[i, k]
                v = scores[d, i, k] + table[d, c if c >= 0 else A1 + c]
                if k == 0:
                    best = v
                    if np.isnan(v):
                        break
                elif np.isnan(v):           # NumPy's argmax stops at the first NaN
                    best_k = k
                    break
                elif v > best:
                    best, best_k = v, k
            out[i, d] = best_k
    return out


@kernel
def argmax_counts(draws):
    """draws (m, K, D) float: D posterior draws of K candidates for m titles (padding below
    every real draw). Returns (m, K) int64: how often each candidate is the best of a draw,
    ``np.bincount`` of ``draws.argmax(axis=1)`` per title, without the strided argmax (ties: the
    first maximum; NaN: the first NaN, as ``argmax``)."""
    m, K, D = draws.shape
    wins = np.zeros((m, K), np.int64)
    for i in range(m):
        for d in range(D):
            best_k = 0
            best = draws[i, 0, d]
            if not np.isnan(best):
                for k in range(1, K):
                    v = draws[i, k, d]
                    if np.isnan(v):
                        best_k = k
                        break
                    if v > best:
                        best, best_k = v, k
            wins[i, best_k] += 1
    return wins
