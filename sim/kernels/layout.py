"""The homepage grid of each visit: a top-picks row, then the member's strongest genres.

One pass over the catalog per visit keeps, per genre, the ``2 x columns`` best titles in a small
sorted buffer (ties: the title earlier in genre order first); top picks are the best
``columns`` among the genres' leaders; genre rows skip titles top picks already show.

The buffer orders titles by (score, then title id), so what it ends with does not depend on the
order titles arrive in. That order only sets the cost: each visit scans a genre's titles best
first by their summed score over the batch's visits, so the buffer fills with strong titles at
once and most of the rest fail one comparison (measured on 2,198 of the bench's pages: 16 -> 7.5 µs
per visit, sorting included).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from sim.kernels import kernel


@njit(cache=True, inline="always")
def _insert(buf_key, buf_score, row, filled, k, key, score):
    """Insert (key, score) into row ``row`` of buffers kept in descending score, then ascending
    key (``filled`` entries, capacity ``k``), unless the buffer is full and its last entry ranks
    higher. Returns the new fill. (Whole 2-D buffers and a row index, not row views: a view per
    title costs more than the comparison.)"""
    if filled == k and not (score > buf_score[row, k - 1]
                            or (score == buf_score[row, k - 1] and key < buf_key[row, k - 1])):
        return filled
    p = filled if filled < k else k - 1
    while p > 0 and (buf_score[row, p - 1] < score     # shift lower-ranked entries down one
                     or (buf_score[row, p - 1] == score and buf_key[row, p - 1] > key)):
        buf_score[row, p] = buf_score[row, p - 1]
        buf_key[row, p] = buf_key[row, p - 1]
        p -= 1
    buf_key[row, p] = key
    buf_score[row, p] = score
    return filled + 1 if filled < k else k


@njit(cache=True)
def _best_first(scores, order, start):
    """``order`` re-sorted within each genre by the titles' scores summed over the v visits,
    highest first: shape (L,). A guess at every visit's ranking, used only for speed."""
    total = np.zeros(scores.shape[1])
    for i in range(scores.shape[0]):      # row by row: contiguous, vectorized
        for t in range(scores.shape[1]):
            total[t] -= scores[i, t]
    out = np.empty_like(order)
    for g in range(start.shape[0] - 1):
        a, b = start[g], start[g + 1]
        key = np.empty(b - a)
        for q in range(b - a):
            key[q] = total[order[a + q]]
        perm = np.argsort(key)
        for q in range(b - a):
            out[a + q] = order[a + perm[q]]
    return out


@kernel
def layout_kernel(scores, genre_affinity, order, start, rows, columns):
    """Pages of v visits (see :func:`sim.homepage.layout_pages` for the contract).

    scores (v, T) float, genre_affinity (v, G), order (L,) the launched titles by primary
    genre (ascending title id within a genre), start (G + 1,) genre offsets into ``order``.
    Returns titles (v, rows, columns) int64 (-1: empty) and row_genre (v, rows) int64."""
    v = scores.shape[0]
    G = start.shape[0] - 1
    C = columns
    K = 2 * C
    titles = np.full((v, rows, C), -1, dtype=np.int64)
    row_genre = np.full((v, rows), -1, dtype=np.int64)
    lead = np.empty((G, K), dtype=np.int64)
    lead_score = np.empty((G, K), dtype=scores.dtype)
    n_lead = np.zeros(G, dtype=np.int64)
    top = np.empty((1, C), dtype=np.int64)          # keys g * K + j of lead[g, j]
    top_title = np.empty(C, dtype=np.int64)
    top_score = np.empty((1, C), dtype=scores.dtype)
    used = np.zeros(G, dtype=np.bool_)
    n_genre_rows = min(rows - 1, G)
    scan = _best_first(scores, order, start)
    for i in range(v):
        # -- per genre, the K best launched titles, best first (score, then title id)
        for g in range(G):
            filled = 0
            for j in range(start[g], start[g + 1]):
                t = scan[j]
                filled = _insert(lead, lead_score, g, filled, K, t, scores[i, t])
            n_lead[g] = filled
        # -- top picks: the best C among every genre's first C (ties: genre order, then rank,
        # so the key is the leader's place g * K + j)
        n_top = 0
        for g in range(G):
            for j in range(min(n_lead[g], C)):
                n_top = _insert(top, top_score, 0, n_top, C, g * K + j, lead_score[g, j])
        for j in range(n_top):
            top_title[j] = lead[top[0, j] // K, top[0, j] % K]
            titles[i, 0, j] = top_title[j]
        # -- genre rows: strongest genres first (ties: lower genre index), titles not in top picks
        used[:] = False
        for r in range(n_genre_rows):
            best = -1
            for g in range(G):
                if not used[g] and (best < 0 or genre_affinity[i, g] > genre_affinity[i, best]):
                    best = g
            used[best] = True
            row_genre[i, 1 + r] = best
            c = 0
            for j in range(n_lead[best]):
                if c == C:
                    break
                t = lead[best, j]
                shown = False
                for q in range(n_top):
                    if top_title[q] == t:
                        shown = True
                        break
                if not shown:
                    titles[i, 1 + r, c] = t
                    c += 1
    return titles, row_genre
