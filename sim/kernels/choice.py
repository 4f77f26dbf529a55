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
def argmax_counts(draws, valid):
    """How often each candidate is the best of a posterior draw, per title: shape (m, K) int64.

    valid (m, K) bool marks each title's real candidates; draws (R, D) float holds D draws of
    each of them, R = valid.sum(), in ``valid``'s row-major order (as ``rng.beta`` fills them
    for ``ids = pool[valid]``). Equal to ``np.bincount`` of ``x.argmax(axis=1)`` per title, where
    x (m, K, D) puts the draws at ``valid`` and anything below them elsewhere (ties: the first
    maximum; NaN: the first NaN, as ``argmax``; a title without candidates: index 0), without
    building x or running a strided argmax."""
    m, K = valid.shape
    D = draws.shape[1]
    wins = np.zeros((m, K), np.int64)
    r0 = 0
    for i in range(m):
        for d in range(D):
            best_k = 0
            best = 0.0
            r = r0
            found = False
            for k in range(K):
                if not valid[i, k]:
                    continue
                v = draws[r, d]
                r += 1
                if np.isnan(v):
                    best_k = k
                    break
                if not found or v > best:
                    best, best_k, found = v, k, True
            wins[i, best_k] += 1
        for k in range(K):
            if valid[i, k]:
                r0 += 1
    return wins


@kernel
def inverse_cdf(probs, r):
    """One column per row of probs (n, K) by inverse CDF, given uniforms r (n,) in [0, 1):
    shape (n,) int64. The column is how many entries of the row's running sum are <= r times
    the row's total (the running sum in column order, in probs' own precision, as
    ``np.cumsum``), capped at K - 1; when round-off lands on a zero-probability column, the last
    column with positive probability (K - 1 if none)."""
    n, K = probs.shape
    out = np.empty(n, np.int64)
    cdf = np.empty(K, probs.dtype)
    for i in range(n):
        acc = probs[i, 0]
        cdf[0] = acc
        for k in range(1, K):
            acc = acc + probs[i, k]
            cdf[k] = acc
        u = r[i] * acc
        idx = 0
        for k in range(K):
            if cdf[k] <= u:
                idx += 1
        if idx > K - 1:
            idx = K - 1
        if probs[i, idx] <= 0:
            idx = K - 1
            for k in range(K - 1, -1, -1):
                if probs[i, k] > 0:
                    idx = k
                    break
        out[i] = idx
    return out
