"""Pages of a log as page-level (slate) OPE reads them, a target policy's page probabilities, and
the simulator's page-level truth.

**Page propensities are derived at read time, exactly.** Every built-in policy except the
sampled-posterior family (``lints``, ``logistic_ts``: one posterior model per page) draws each
tile's artwork independently given the page, with the logged per-tile ``pscore`` as its
probability. The probability of the page's whole assignment is then the product of the tiles'
``pscore``, and the probability of the page up to a tile the product over the tiles before it
in reading order (row, then column) -- numbers the log already determines. Deriving them here
(:func:`page_propensities`, the same float multiplications as at serving) costs no column on
disk and no work on the hot path; :func:`slate_feedback_from_log` refuses a log whose policy
shares draws across a page, for which the product is not the page's probability.

**Truth.** :func:`page_truth` replays a target on the logged pages (same members, titles,
positions and familiarity): it draws the target's artwork for every tile and the members'
responses with the response model's own page-aware draw, ``replications`` times; the page value
is the mean over replications of the page reward (quality plays per page), with its Monte Carlo
standard error. Under ``independent`` it has a closed form (:func:`independent_page_values`),
which checks the simulation.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sim.ope.validate import LogValidationError, integer_column, numeric_column, propensity_column
from sim.world.response import Page

#: Policies whose tiles of one page share a random draw (so a page's probability is not the
#: product of its tiles' pscore): the sampled-posterior family.
SHARED_PAGE_DRAW = ("lints", "logistic_ts")


def reading_order(slate_id: np.ndarray, row: np.ndarray, column: np.ndarray) -> np.ndarray:
    """Row indices sorting the tiles by page, then row, then column, shape (n,)."""
    return np.lexsort((column, row, slate_id))


def cascade_products(slate_id: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Product of ``p`` over each row and the rows before it on its page; rows sorted by page and
    reading order, shape (n,). One vectorized step per position (not per tile or page), each the
    same multiplication a sequential product would do."""
    n = p.shape[0]
    out = np.asarray(p, dtype=np.float64).copy()
    if n == 0:
        return out
    first = np.r_[True, slate_id[1:] != slate_id[:-1]]
    rank = np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0))
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(1, int(rank.max()) + 1))
    for r, lo in enumerate(bounds, start=1):
        idx = by_rank[lo:bounds[r] if r < len(bounds) else n]
        out[idx] = out[idx - 1] * p[idx]
    return out


def page_propensities(slate_id, row, column, pscore) -> dict[str, np.ndarray]:
    """``pscore_cascade`` (the page up to each tile) and ``pscore`` (the whole page) of every
    tile, in input order, from per-tile probabilities ``pscore`` (n,)."""
    slate_id, pscore = np.asarray(slate_id), np.asarray(pscore, dtype=np.float64)
    order = reading_order(slate_id, np.asarray(row), np.asarray(column))
    sid = slate_id[order]
    cascade_sorted = cascade_products(sid, pscore[order])
    cascade, page = np.empty_like(pscore), np.empty_like(pscore)
    cascade[order], page[order] = cascade_sorted, page_last(sid, cascade_sorted)
    return {"pscore_cascade": cascade, "pscore": page}


def page_last(slate_id: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each row's value at the last row of its page (rows grouped by page), shape (n,)."""
    if slate_id.size == 0:
        return values.copy()
    last = np.r_[slate_id[1:] != slate_id[:-1], True]
    return np.repeat(values[last], np.diff(np.r_[0, np.flatnonzero(last) + 1]))


def slate_feedback_from_log(log: pd.DataFrame, reward: str = "reward") -> dict[str, Any]:
    """A simulator impression log as OBP's slate inputs, rows sorted by page and reading order.

    Returns a dict of arrays (n,): ``slate_id`` (the visit), ``position`` (the log's slot
    ``row * columns + column``), ``row``, ``column``, ``reward`` (the ``reward`` column by default:
    the attributed quality play), ``action``, ``pscore`` (the whole page),
    ``pscore_item_position`` (the tile), ``pscore_cascade``; and ``order``, the log rows they came
    from. A malformed log raises :class:`~sim.ope.validate.LogValidationError`.
    """
    need = ["visit", "row", "column", "position", "action", "pscore", reward]
    missing = [c for c in need if c not in log.columns]
    if missing:
        raise LogValidationError(missing[0], len(log), len(log), "lack it: the column is absent",
                                 hint=f"page-level OPE needs {', '.join(need)}")
    if "policy" in log.columns:
        shared = sorted(set(map(str, log["policy"].unique())) & set(SHARED_PAGE_DRAW))
        if shared:
            bad = int(log["policy"].astype(str).isin(shared).sum())
            raise LogValidationError("policy", bad, len(log), f"were logged by {', '.join(shared)}",
                                     hint="these policies use one posterior draw per page, so a page's "
                                          "probability is not the product of its tiles' pscore")
    visit = integer_column(log, "visit", 0)
    row, column = integer_column(log, "row", 0), integer_column(log, "column", 0)
    order = reading_order(visit, row, column)
    sid = visit[order]
    dup = (sid[1:] == sid[:-1]) & (row[order][1:] == row[order][:-1]) & (column[order][1:] == column[order][:-1])
    if dup.any():
        raise LogValidationError("position", int(dup.sum()), len(log), "repeat a (row, column) of their page",
                                 hint="a page shows one image per tile")
    tile = propensity_column(log, "pscore")[order]
    cascade = cascade_products(sid, tile)
    page = page_last(sid, cascade)
    return {"slate_id": sid, "position": integer_column(log, "position", 0)[order], "row": row[order],
            "column": column[order], "reward": numeric_column(log, reward)[order],
            "action": integer_column(log, "action", 0)[order], "pscore": page,
            "pscore_item_position": tile, "pscore_cascade": cascade, "order": order}


def target_slate_pscores(slate_id: np.ndarray, probabilities: np.ndarray, action: np.ndarray,
                         q_hat: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """A target's slate inputs on logged pages (rows sorted by page and reading order).

    The target draws each tile's artwork independently from ``probabilities`` (n, K) (what
    :func:`sim.ope.logged.target_probabilities` returns); ``q_hat`` (n, K), if given, is passed on
    for cascade-dr with the probabilities as ``evaluation_policy_action_dist``.
    """
    p = probabilities[np.arange(action.size), action]
    cascade = cascade_products(slate_id, p)
    page = page_last(slate_id, cascade)
    out = {"evaluation_policy_pscore": page, "evaluation_policy_pscore_item_position": p,
           "evaluation_policy_pscore_cascade": cascade}
    if q_hat is not None:
        out.update(q_hat=q_hat, evaluation_policy_action_dist=probabilities)
    return out


# ---- simulating policies on fixed pages ------------------------------------------------------------
def sample_actions(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One candidate index per row drawn from ``probabilities`` (n, K), shape (n,)."""
    cdf = np.cumsum(probabilities, axis=1)
    u = rng.random(probabilities.shape[0]) * cdf[:, -1]
    return np.minimum((cdf <= u[:, None]).sum(axis=1), probabilities.shape[1] - 1)


def draw_pages(response, decisions, slate_index: np.ndarray, action: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """True quality plays (n,) of the tiles showing candidate ``action`` on their pages.

    ``slate_index`` (n,) numbers the pages; every tile of a page is in this call, in reading
    order, and the response model's page-aware draw sees where each tile sits."""
    chosen = decisions.candidates[np.arange(action.size), action]
    p = response.probabilities(decisions, chosen[:, None])
    page = Page(visit=slate_index, row=decisions.row, column=decisions.column, member=decisions.member)
    out = response.draw(p.click[:, 0], p.play[:, 0], p.quality_play[:, 0], rng, 0.0, 0.0, page=page)
    return out.quality_play.astype(np.float64)


def page_truth(response, decisions, slate_index: np.ndarray, probabilities: np.ndarray,
               rng: np.random.Generator, replications: int = 200) -> tuple[np.ndarray, float]:
    """Monte Carlo page value of a target on the logged pages.

    Returns
    -------
    per_page : ndarray, shape (n_pages,) -- mean quality plays of each page over ``replications``
        draws of the target's artworks and the members' responses
    se : float -- Monte Carlo standard error of ``per_page.mean()`` (spread of the replication means)
    """
    n_pages = int(slate_index.max()) + 1 if slate_index.size else 0
    total = np.zeros(n_pages)
    means = np.empty(replications)
    for r in range(replications):
        reward = draw_pages(response, decisions, slate_index,
                            sample_actions(probabilities, rng), rng)
        pages = np.bincount(slate_index, weights=reward, minlength=n_pages)
        total += pages
        means[r] = pages.mean()
    se = float(means.std(ddof=1) / np.sqrt(replications)) if replications > 1 else float("nan")
    return total / replications, se


def independent_page_values(p_quality: np.ndarray, probabilities: np.ndarray,
                            slate_index: np.ndarray) -> np.ndarray:
    """Exact page values when tiles do not interact: ``sum_tiles sum_k pi(k) p_quality(k)``.

    ``p_quality`` (n, K) from :func:`sim.ope.groundtruth.true_rewards`; returns (n_pages,)."""
    per_tile = np.einsum("nk,nk->n", probabilities, p_quality)
    return np.bincount(slate_index, weights=per_tile, minlength=int(slate_index.max()) + 1)


def reward_to_go(slate_id: np.ndarray, per_tile: np.ndarray) -> np.ndarray:
    """Sum of ``per_tile`` over the *later* rows of each row's page (rows sorted by page and
    reading order), shape (n,): with per-tile target values it turns a per-tile reward model into
    the cascade Q-function ``q_hat(l, a) + sum_{l' > l} E_pi q_hat(l')`` that cascade-dr reads."""
    if slate_id.size == 0:
        return per_tile.copy()
    total = np.cumsum(per_tile)
    return page_last(slate_id, total) - total


def weight_second_moments(slate_id: np.ndarray, logger: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Exact second moments E_b[w^2 | page] of the slate estimators' importance weights, for
    policies that pick each tile independently; rows sorted by page and reading order.

    ``logger``, ``target`` : (n, K) choice probabilities (0 on padding). Returns (n,) arrays:
    ``iips`` -- the tile's own weight, ``sum_a pi_e(a)^2 / pi_b(a)``; ``rips`` -- the weight of the
    page up to the tile (the product of ``iips`` so far); ``sips`` -- the whole page's. Since
    E_b[w] = 1, ``1 / mean(E[w^2])`` is the share of the log that an on-policy log of the same
    precision would need (the effective sample size share, up to the rewards' spread)."""
    tile = np.where(logger > 0, target ** 2 / np.where(logger > 0, logger, 1.0), 0.0).sum(axis=1)
    cascade = cascade_products(slate_id, tile)
    return {"iips": tile, "rips": cascade, "sips": page_last(slate_id, cascade)}
