"""Observable features: the member context of a visit and the artwork features of a candidate.

Only what production could observe goes in: viewing history (plays per genre), country, device,
local hour and weekday, and whether the member interacted with the title before. Never hidden
tastes. The context of an impression is laid out as::

    [ genre affinity (n_genres) | familiar (1) | country one-hot | device one-hot | hour sin, cos | weekday sin, cos ]

Candidate features for a linear or logistic artwork model (``candidate_features``) combine the
context with the artwork's metadata (its theme over genres). The interaction block
``n_genres * affinity * theme`` is shared across titles, so a model learned on old titles gives a
new title's images a sensible prior from their first impression: that is cold start.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from sim.gather import gather_rows

if TYPE_CHECKING:
    from sim.world import Catalog, Members

N_DEVICES = 4  # tv, web, tablet, mobile (sim.world.members.DEVICES)
TIME_FEATURES = 4


def observed_affinity(members: "Members", catalog: "Catalog", member: np.ndarray) -> np.ndarray:
    """Member-genre affinity estimated from observable history, shape (n, n_genres).

    Plays per genre smoothed toward genre popularity (two pseudo-plays), rows sum to 1."""
    plays = members.genre_plays[member]
    prior = 2.0 * catalog.genre_share.astype(np.float32)
    return (plays + prior) / (plays.sum(axis=1, keepdims=True) + 2.0)


def context_width(n_genres: int, n_countries: int) -> int:
    return n_genres + 1 + n_countries + N_DEVICES + TIME_FEATURES


def context_names(n_genres: int, countries: tuple[str, ...]) -> list[str]:
    """Column names of the context vector, for logs and exports."""
    from sim.world.members import DEVICES

    return ([f"affinity_{g}" for g in range(n_genres)] + ["familiar"]
            + [f"country_{c}" for c in countries] + [f"device_{d}" for d in DEVICES]
            + ["hour_sin", "hour_cos", "weekday_sin", "weekday_cos"])


def visit_context(members: "Members", catalog: "Catalog", member: np.ndarray,
                  time: np.ndarray) -> np.ndarray:
    """Context of visits without the per-title ``familiar`` flag (zero there), shape (v, d)."""
    G, nc = catalog.n_genres, len(members.countries)
    v = member.shape[0]
    ctx = np.zeros((v, context_width(G, nc)), dtype=np.float32)
    ctx[:, :G] = observed_affinity(members, catalog, member)
    rows = np.arange(v)
    # Column indices in the platform's index type: country and device are stored as int8, and
    # ``G + 1 + int8`` stays int8 under NumPy's promotion rules (it wrapped for n_genres > 120).
    ctx[rows, G + 1 + members.country[member].astype(np.intp)] = 1.0
    ctx[rows, G + 1 + nc + members.device[member].astype(np.intp)] = 1.0
    local_hours = time / 60.0 + members.utc_offset_hours[member]
    hour = 2 * math.pi * (local_hours % 24.0) / 24.0
    # Day 0 of the simulation is a Monday; weekday as an angle on a 7-day circle.
    weekday = 2 * math.pi * ((local_hours // 24.0) % 7.0) / 7.0
    t = G + 1 + nc + N_DEVICES
    ctx[:, t] = np.sin(hour)
    ctx[:, t + 1] = np.cos(hour)
    ctx[:, t + 2] = np.sin(weekday)
    ctx[:, t + 3] = np.cos(weekday)
    return ctx


def impression_context(visit_ctx: np.ndarray, v: np.ndarray, familiar: np.ndarray,
                       n_genres: int) -> np.ndarray:
    """Context per impression (n, d): its visit's context with the title's ``familiar`` flag."""
    ctx = visit_ctx[v]
    ctx[:, n_genres] = familiar
    return ctx


def candidate_feature_width(context_dim: int, n_genres: int) -> int:
    return 1 + (context_dim - n_genres) + 2 * n_genres + 1


def candidate_features(context: np.ndarray, candidates: np.ndarray, artwork_theme: np.ndarray,
                       n_genres: int) -> np.ndarray:
    """Features of every (impression, candidate artwork) pair, shape (n, K, d).

    ``[1 | context without affinity | theme_a | G * affinity * theme_a | familiar * match_a]``
    (the artwork-dependent block last, see :func:`artwork_scores`)
    where ``match_a = affinity . theme_a``. Padding candidates (``-1``) get the features of
    artwork 0; mask them out of any argmax.
    """
    G = n_genres
    n, K = candidates.shape
    theme = gather_rows(artwork_theme, np.maximum(candidates, 0))      # (n, K, G)
    affinity = context[:, :G]
    rest = context[:, G:]                                              # familiar, country, ...
    d = candidate_feature_width(context.shape[1], G)
    out = np.empty((n, K, d), dtype=np.float32)
    out[:, :, 0] = 1.0
    out[:, :, 1:1 + rest.shape[1]] = rest[:, None, :]
    j = 1 + rest.shape[1]
    out[:, :, j:j + G] = theme
    inter = theme * (G * affinity)[:, None, :]
    out[:, :, j + G:j + 2 * G] = inter
    out[:, :, j + 2 * G] = context[:, G][:, None] * inter.sum(axis=2) / G
    return out


def artwork_scores(context: np.ndarray, candidates: np.ndarray, artwork_theme: np.ndarray,
                   n_genres: int, theta: np.ndarray) -> np.ndarray:
    """Scores of every candidate under each of D weight vectors, shape (D, n, K).

    Only the artwork-dependent block of :func:`candidate_features` (the last ``2G + 1``
    columns) enters: the context-only columns add the same amount to every candidate of an
    impression, so they never change which candidate wins. ``theta`` has shape (d, D) over the
    full feature vector. Computed without materialising the (n, K, d) feature tensor, as
    :func:`theme_scores` (per artwork) plus :func:`interaction_scores` (per impression).
    """
    table = theme_scores(artwork_theme, n_genres, theta)                    # (D, A)
    return interaction_scores(context, candidates, artwork_theme, n_genres, theta) \
        + np.take(table, np.maximum(candidates, 0), axis=1)


def theme_scores(artwork_theme: np.ndarray, n_genres: int, theta: np.ndarray) -> np.ndarray:
    """The theme block's score of every artwork under each weight vector, shape (D, n_artworks).

    It does not depend on the member, so a policy computes it once per deploy."""
    G = n_genres
    return (theta[-(2 * G + 1):-(G + 1)].T @ artwork_theme.T).astype(np.float32)


def interaction_scores(context: np.ndarray, candidates: np.ndarray, artwork_theme: np.ndarray,
                       n_genres: int, theta: np.ndarray) -> np.ndarray:
    """The member-dependent part of :func:`artwork_scores`, shape (D, n, K):
    ``G * affinity * theme_a`` and ``familiar * (affinity . theme_a)`` weighted by ``theta``."""
    G = n_genres
    n, K = candidates.shape
    weighted = gather_rows(artwork_theme, np.maximum(candidates, 0))        # (n, K, G)
    weighted *= context[:, None, :G]                                        # affinity * theme
    w_inter = (G * theta[-(G + 1):-1]).astype(np.float32)                   # (G, D)
    scores = (w_inter.T @ weighted.reshape(n * K, G).T).reshape(-1, n, K)   # (D, n, K)
    familiar = np.flatnonzero(context[:, G])
    if familiar.size:   # familiar * (affinity . theme), only a few percent of impressions
        match = weighted[familiar].sum(axis=2)                              # (f, K)
        scores[:, familiar, :] += theta[-1][:, None, None] * match[None]
    return scores
