"""A page-aware artwork policy: Thompson sampling tilted away from themes already in view.

Every other built-in policy chooses each tile's image as if the tile were alone on the page. On
a real homepage the member sees a row (or a screen) at once, and two images that emphasise the
same theme compete for the same mood. :class:`DiverseThompsonPolicy` starts from Thompson
sampling's per-title choice distribution ``p0`` (:class:`sim.policies.bandits.ThompsonPolicy`)
and discounts an image by how much its theme overlaps the themes of the tiles before it in
reading order::

    load_i   = sum_{j before i in view} sum_k p0[j, k] * theme[cand[j, k]]      (G,)
    p[i, k] ~ p0[i, k] * exp(-diversity * theme[cand[i, k]] . load_i)

``theme`` is the catalog's observable artwork theme (a mixture over genres, rows sum to 1), so
the overlap of two images is in [0, 1] and ``load_i . theme`` counts how many earlier tiles in
view show "the same theme". "In view" is the same row (``scope=row``: a row is what the member
sees at once) or the whole page (``scope=page``); "before" is reading order (row, then column;
ties by batch order).

Exact propensities. The tilt of tile i depends on its neighbours' *choice distributions*
``p0[j]``, not on the images sampled for them. So ``probabilities(batch)`` is a deterministic
function of the frozen model and the page (titles, positions, candidate pools): given the page,
every tile is an independent draw from its own row of ``probabilities``, the logged per-tile
propensity is exactly the probability with which it was chosen, and the propensity of the whole
page's artwork assignment is the product of the per-tile ones. (A sequential policy conditioning
on the neighbours' *sampled* images would need the conditional probability logged instead, and
its per-tile marginals would no longer be ``probabilities(batch)``.) ``p0`` itself is Thompson's
argmax probability estimated once per deploy, as in the parent class: the policy samples from
exactly the distribution it logs.

A tile's probabilities depend on the other impressions of its page, so callers must pass whole
pages (``DecisionBatch.visit``); the engine does. On one impression alone (no neighbours) the
policy is plain Thompson sampling.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.policies.bandits import ThompsonPolicy
from sim.policies.base import DecisionBatch
from sim.schema import param

#: What "in view" means for the diversity penalty.
SCOPES = ("row", "page")


def earlier_in_view(batch: DecisionBatch, values: np.ndarray, scope: str = "row") -> np.ndarray:
    """Sum of ``values`` over the impressions before each one in reading order, in its view.

    Parameters
    ----------
    batch : DecisionBatch of n impressions (``visit``: page ids; None = one page each)
    values : ndarray, shape (n, d)
    scope : "row" (same page and row, lower column) or "page" (same page, earlier row or same
        row and lower column)

    Returns
    -------
    ndarray, shape (n, d): exclusive prefix sums within each view group (0 for the first tile).
    Vectorized: one stable sort, then a cumulative sum over the tiles of each group padded to
    the longest group. Each group is summed on its own (not as differences of one running sum
    over the batch), so a page gets bit-identical values whatever else is in the batch.
    """
    n = len(batch)
    if n == 0:
        return np.zeros_like(values, dtype=np.float64)
    page = batch.page_index()
    group = page if scope == "page" else page * (int(batch.row.max(initial=0)) + 1) + batch.row
    order = np.lexsort((np.arange(n), batch.column, batch.row, group))   # last key sorts first
    g = group[order]
    new_group = np.r_[True, g[1:] != g[:-1]]
    start = np.flatnonzero(new_group)
    gi = np.cumsum(new_group) - 1                                       # dense group index
    j = np.arange(n) - start[gi]                                        # rank inside the group
    padded = np.zeros((start.size, int(j.max()) + 1, values.shape[1]))
    padded[gi, j] = values[order]
    exclusive = np.cumsum(padded, axis=1) - padded
    out = np.empty((n, values.shape[1]))
    out[order] = exclusive[gi, j]
    return out


class DiverseThompsonPolicy(ThompsonPolicy):
    """Thompson sampling per (title, artwork), tilted against images whose theme repeats one
    already in view earlier on the page (module docstring). ``diversity=0`` is ``thompson``."""

    name = "diverse_thompson"

    @dataclass(frozen=True)
    class Params(ThompsonPolicy.Params):
        diversity: float = param(1.0, ge=0.0, le=50.0,
                                 doc="log-odds discount per earlier tile in view showing the same theme")
        scope: str = param("row", choices=SCOPES, doc="tiles in view: the same row, or the whole page")

    def candidate_themes(self, batch: DecisionBatch) -> np.ndarray:
        """Theme of every candidate, shape (n, K, G), float64 (the catalog stores float32)."""
        return self.catalog_.artwork_theme[np.maximum(batch.candidates, 0)].astype(np.float64)

    def theme_load(self, batch: DecisionBatch, base: np.ndarray, theme: np.ndarray) -> np.ndarray:
        """Expected theme mass of the earlier tiles in view, shape (n, G), under ``base`` (n, K)."""
        expected = np.einsum("nk,nkg->ng", np.where(batch.mask, base, 0.0), theme)
        return earlier_in_view(batch, expected, self.scope)

    def probabilities(self, batch: DecisionBatch) -> np.ndarray:
        base = super().probabilities(batch)
        if self.diversity == 0 or len(batch) == 0:
            return base
        theme = self.candidate_themes(batch)
        overlap = np.einsum("nkg,ng->nk", theme, self.theme_load(batch, base, theme))
        # Subtract the row's smallest penalty first: exp() of large overlaps underflows, and the
        # tilt is relative anyway.
        penalty = self.diversity * np.where(batch.mask, overlap, np.inf)
        w = np.where(batch.mask, base * np.exp(-(penalty - penalty.min(axis=1, keepdims=True))), 0.0)
        total = w.sum(axis=1, keepdims=True)
        # A tilt can only zero a row if every positive p0 underflows; fall back to p0 there.
        return np.where(total > 0, w / np.where(total > 0, total, 1.0), base)
