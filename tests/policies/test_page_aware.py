"""The page-aware policy (diverse_thompson): the contract, the tilt against themes already in
view computed by brute force, exact per-tile propensities whose product is the page's."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sim.config import ConfigError
from sim.policies import build_policy
from sim.policies.page_aware import earlier_in_view
from sim.streams import generator
from sim.testing import check_policy, make_decision_batch, make_feedback


def _policy(world, **params):
    p = build_policy({"name": "diverse_thompson", **params}, seed=3)
    p.reset(world.catalog)
    # A trained model, so that p0 is not uniform and the tilt has something to move.
    batch = make_decision_batch(world.catalog, 2000, generator(5, "policy", 1))
    p.update(p.sufficient_stats(make_feedback(batch, p.select(batch, generator(5, "policy", 2)),
                                              generator(5, "response", 3))))
    return p


def _brute_force(policy, batch, scope):
    """The module docstring's formula, one tile at a time."""
    theme = policy.catalog_.artwork_theme.astype(np.float64)
    p0 = np.where(batch.mask, policy.argmax_prob_[np.maximum(batch.candidates, 0)], 0.0)
    n = len(batch)
    out = np.zeros_like(p0)
    for i in range(n):
        load = np.zeros(theme.shape[1])
        for j in range(n):
            same_view = batch.visit[j] == batch.visit[i] and (scope == "page" or batch.row[j] == batch.row[i])
            before = (batch.row[j], batch.column[j], j) < (batch.row[i], batch.column[i], i)
            if same_view and before:
                load += sum(p0[j, k] * theme[batch.candidates[j, k]] for k in range(p0.shape[1])
                            if batch.mask[j, k])
        w = np.array([p0[i, k] * np.exp(-policy.diversity * theme[batch.candidates[i, k]] @ load)
                      if batch.mask[i, k] else 0.0 for k in range(p0.shape[1])])
        out[i] = w / w.sum()
    return out


@pytest.mark.parametrize("scope", ["row", "page"])
def test_passes_the_conformance_checks(world, scope):
    policy = _policy(world, scope=scope)
    batch = make_decision_batch(world.catalog, 96, generator(0, "policy", 7), rows=3, columns=4)
    check_policy(policy, world.catalog, batch)


@pytest.mark.parametrize("scope", ["row", "page"])
def test_probabilities_match_the_formula_tile_by_tile(world, scope):
    policy = _policy(world, scope=scope, diversity=2.5)
    batch = make_decision_batch(world.catalog, 60, generator(1, "policy", 8), rows=3, columns=4)
    got = policy.probabilities(batch)
    np.testing.assert_allclose(got, _brute_force(policy, batch, scope), rtol=1e-9, atol=1e-12)
    # ... and the tilt is not a no-op on this batch.
    assert np.abs(got - policy.argmax_prob_[np.maximum(batch.candidates, 0)] * batch.mask).max() > 0.01


def test_earlier_in_view_sums_only_earlier_tiles_of_the_same_view(world):
    batch = make_decision_batch(world.catalog, 40, generator(2, "policy", 9), rows=3, columns=3)
    values = generator(2, "policy", 10).random((40, 2))
    for scope in ("row", "page"):
        got = earlier_in_view(batch, values, scope)
        for i in range(40):
            keep = [j for j in range(40) if batch.visit[j] == batch.visit[i]
                    and (scope == "page" or batch.row[j] == batch.row[i])
                    and (batch.row[j], batch.column[j], j) < (batch.row[i], batch.column[i], i)]
            np.testing.assert_allclose(got[i], values[keep].sum(axis=0), atol=1e-12)


def test_no_diversity_or_no_neighbour_is_thompson(world):
    batch = make_decision_batch(world.catalog, 80, generator(3, "policy", 11))
    diverse = _policy(world, diversity=3.0)
    plain = _policy(world, diversity=0.0)
    assert np.array_equal(plain.probabilities(batch),
                          np.where(batch.mask, plain.argmax_prob_[np.maximum(batch.candidates, 0)], 0.0))
    thompson = np.where(batch.mask, diverse.argmax_prob_[np.maximum(batch.candidates, 0)], 0.0)
    alone = dataclasses.replace(batch, visit=np.arange(len(batch)))
    np.testing.assert_allclose(diverse.probabilities(alone), thompson, atol=1e-15)


def _uniform_p0(policy):
    """Thompson's choice distribution replaced by a uniform one (every image has p0 > 0)."""
    cat = policy.catalog_
    policy.argmax_prob_ = 1.0 / cat.pool_size[cat.artwork_title].astype(np.float64)


def test_an_image_repeating_the_theme_in_view_loses_exactly_its_overlap(world):
    """Two tiles in one row: the second tile's odds between two images move by
    exp(-diversity * (theme_a - theme_b) . expected theme of the first tile)."""
    policy = _policy(world, diversity=2.0)
    _uniform_p0(policy)
    cat = policy.catalog_
    many = np.flatnonzero(cat.pool_size >= 3)
    t1, t2 = many[0], many[1]
    batch = make_decision_batch(cat, 0, generator(4, "policy", 12), title=np.array([t1, t2]))
    batch = dataclasses.replace(batch, visit=np.zeros(2, np.int64), row=np.zeros(2, np.int16),
                                column=np.array([0, 1], np.int16))
    p = policy.probabilities(batch)
    p0 = np.where(batch.mask, policy.argmax_prob_[np.maximum(batch.candidates, 0)], 0.0)
    assert np.array_equal(p[0], p0[0])             # the first tile has nothing before it
    load = (p0[0][batch.mask[0]][:, None] * cat.artwork_theme[cat.pool[t1][batch.mask[0]]]).sum(axis=0)
    a, b = np.argsort(-p0[1])[:2]                  # the two likeliest images of the second tile
    ratio = (p[1, a] / p[1, b]) / (p0[1, a] / p0[1, b])
    expected = np.exp(-2.0 * (cat.artwork_theme[cat.pool[t2, a]] - cat.artwork_theme[cat.pool[t2, b]]) @ load)
    assert ratio == pytest.approx(expected, rel=1e-9)


def test_page_propensity_is_the_product_of_the_tile_propensities(world):
    """Tiles of one page are independent draws given the page: the joint frequency of the two
    tiles' images matches the product of their probabilities (chi-square, 20 000 pages)."""
    from scipy import stats

    policy = _policy(world, diversity=2.0)
    cat = policy.catalog_
    titles = np.flatnonzero(cat.pool_size >= 3)[:2]
    page = make_decision_batch(cat, 0, generator(6, "policy", 13), title=titles)
    page = dataclasses.replace(page, visit=np.zeros(2, np.int64), row=np.zeros(2, np.int16),
                               column=np.array([0, 1], np.int16))
    _uniform_p0(policy)
    p = policy.probabilities(page)                   # (2, K): uniform p0, tilted second tile
    n = 20_000
    rep = page.subset(np.tile([0, 1], n))
    rep.visit = np.repeat(np.arange(n), 2)
    sel = policy.select(rep, generator(6, "policy", 14))
    a = np.asarray(sel.action).reshape(n, 2)
    np.testing.assert_allclose(np.asarray(sel.propensity).reshape(n, 2),
                               p[[0, 1], a], rtol=0, atol=0)
    K = p.shape[1]
    observed = np.bincount(a[:, 0] * K + a[:, 1], minlength=K * K)
    expected = n * np.outer(p[0], p[1]).ravel()
    keep = expected > 0
    assert observed[~keep].sum() == 0
    chi2 = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-3, f"joint choices are not independent (chi2 {chi2:.1f})"


def test_bad_hyperparameters_name_the_key():
    with pytest.raises(ConfigError, match="policy.diversity"):
        build_policy({"name": "diverse_thompson", "diversity": -1})
    with pytest.raises(ConfigError, match="policy.scope"):
        build_policy({"name": "diverse_thompson", "scope": "screen"})
