"""Feedback-loop measures (sim.bias) and the ranker variants that feed them."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import spearmanr

from experiments.analyses.clickbait_loop import clickbait_potential
from sim.bias import (catalog_coverage, effective_catalog_size, lorenz_band, gini, homogenization,
                      jaccard_matrix, logged_take_bias, popularity_amplification, rank_agreement)
from sim.config import ConfigError, RankerConfig, WorldConfig, experiment_config_from_dict
from sim.engine import Simulation
from sim.homepage import LearnedRanker
from sim.policies.base import Selection
from sim.serving import explore_slots, ranker_stats
from sim.streams import generator
from sim.testing import make_decision_batch, make_feedback
from sim.world import build_world


# ---- the measures on hand-computed cases ----------------------------------------------------
def test_gini_hand_values():
    assert gini(np.full(7, 3.0)) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 5.0])) == pytest.approx(0.75)       # (n-1)/n: all on one item
    assert gini(np.array([1.0, 3.0])) == pytest.approx(0.25)           # sum|xi-xj| / (2 n^2 mean)


def test_effective_catalog_size_hand_values():
    assert effective_catalog_size(np.array([0, 10.0, 0])) == pytest.approx(1.0)
    assert effective_catalog_size(np.full(25, 2.0)) == pytest.approx(25.0)
    # p sorted = (0.75, 0.25): 2 (0.75 + 0.5) - 1 = 1.5
    assert effective_catalog_size(np.array([1.0, 3.0])) == pytest.approx(1.5)


def test_coverage_and_jaccard_hand_values():
    plays = np.array([2, 0, 1, 0, 7])
    launched = np.array([True, True, True, False, False])
    assert catalog_coverage(plays, launched) == pytest.approx(2 / 3)
    sets = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0]], dtype=bool)
    j = jaccard_matrix(sets)
    assert j[0, 1] == pytest.approx(1.0) and j[0, 2] == pytest.approx(1 / 3)
    # nearest neighbours: 0<->1 (1), 1<->0 (1), 2 -> 0 or 1 (1/3)
    assert homogenization(sets) == pytest.approx((1 + 1 + 1 / 3) / 3)


def test_amplification_and_rank_agreement():
    assert popularity_amplification(np.array([8.0, 1, 1]), np.array([1.0, 1, 2]), np.array([0])) \
        == pytest.approx(0.8 / 0.25)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 30)), rng.normal(size=(5, 30))
    expected = np.mean([spearmanr(a[i], b[i]).statistic for i in range(5)])
    assert rank_agreement(a, b) == pytest.approx(expected)
    assert rank_agreement(a, 3 * a + 1) == pytest.approx(1.0)


def test_logged_take_bias_ips_hand_values():
    # Title 0 with images 0 and 1 on 4 impressions; image 0 shown 3 times with p = 0.75.
    out = logged_take_bias(artwork=np.array([0, 0, 0, 1]), title=np.zeros(4, int),
                           quality_play=np.array([1, 0, 0, 1]), expected_take=np.array([.2, .2, .5, .4]),
                           pscore=np.array([.75, .75, .75, .25]), n_artworks=3)
    assert out["naive"][0] == pytest.approx(1 / 3) and out["true_shown"][0] == pytest.approx(0.3)
    assert out["ips"][0] == pytest.approx((1 / 0.75) / 4) and out["ips"][1] == pytest.approx(4 / 4)
    assert np.isnan(out["naive"][2])


# ---- exploration slice ----------------------------------------------------------------------
def test_explore_slots_keeps_pages_valid_and_logs_propensity():
    rng = generator(0, "test-explore")
    T, v = 40, 300
    launched = np.ones(T, bool)
    launched[:5] = False
    titles = np.stack([rng.permutation(np.arange(5, T))[:12].reshape(3, 4) for _ in range(v)])
    titles[:, 2, 3] = -1                                   # a row that ran out of titles
    before = titles.copy()
    p = explore_slots(titles, launched, 0.25, rng)
    changed = titles != before
    assert (p[changed] < 1).all() and (p[~changed] == 1).all()
    assert (titles[:, 2, 3] == -1).all()
    assert launched[titles[titles >= 0]].all()
    for page in titles.reshape(v, -1):                      # still at most once per page
        shown = page[page >= 0]
        assert np.unique(shown).size == shown.size
    share = changed.sum() / (before >= 0).sum()
    assert share == pytest.approx(0.25, abs=4 * np.sqrt(0.25 * 0.75 / (before >= 0).sum()))
    # 35 launched titles, 11 on the page: each explored slot draws from 24.
    assert p[changed] == pytest.approx(0.25 / 24)


def test_ranker_variant_config_is_validated():
    base = {"world": {"name": "t", "n_members": 10, "n_titles": 10}}
    cfg = experiment_config_from_dict({**base, "ranker": {"exploration_share": 0.1, "correction": "ipw",
                                                           "retrain": "once"}})
    assert cfg.ranker.exploration_share == 0.1 and cfg.ranker.retrain == "once"
    for bad in ({"exploration_share": 1.0}, {"correction": "dr"}, {"retrain": "never"}):
        with pytest.raises(ConfigError, match="ranker."):
            experiment_config_from_dict({**base, "ranker": bad})


def test_ranker_signal_is_validated():
    base = {"world": {"name": "t", "n_members": 10, "n_titles": 10}}
    assert experiment_config_from_dict(base).ranker.signal == "play"
    assert experiment_config_from_dict({**base, "ranker": {"signal": "click"}}).ranker.signal == "click"
    with pytest.raises(ConfigError, match=r"ranker\.signal = 'quality_play' .*one of play, click"):
        experiment_config_from_dict({**base, "ranker": {"signal": "quality_play"}})


@pytest.mark.parametrize("correction", ["none", "ipw"])
def test_ranker_stats_count_the_ranker_signal(world, correction):
    """``signal: click`` puts credited clicks where ``play`` puts credited plays."""
    batch = make_decision_batch(world.catalog, 400, generator(1, "policy"), n_members=world.members.n_members)
    sel = Selection(np.zeros(400, np.int64), batch.candidates[:, 0], np.ones(400))
    fb = make_feedback(batch, sel, generator(1, "response"))
    assert fb.click.sum() > fb.play.sum() > 0          # the two signals differ on this batch
    sim, served = SimpleNamespace(world=world), SimpleNamespace(credited=fb)
    T = world.catalog.n_titles
    for signal, outcome in (("play", fb.play), ("click", fb.click)):
        # position_exponent 0: attention estimate 1 everywhere.
        ranker = LearnedRanker(RankerConfig(signal=signal, correction=correction, position_exponent=0.0),
                               world.catalog, world.members)
        stats = ranker_stats(sim, served, ranker, np.ones(400))
        expected = np.bincount(batch.title, weights=outcome, minlength=T)
        np.testing.assert_array_equal(stats.title_plays, expected)
        assert stats.bin_plays.sum() == outcome.sum()
        np.testing.assert_array_equal(stats.title_impressions, np.bincount(batch.title, minlength=T))
        if correction == "ipw":   # attention 1: the debiased counts are the raw ones
            np.testing.assert_array_equal(stats.title_plays_debiased, expected)
    # Without a ranker (or by default) the statistics count plays.
    np.testing.assert_array_equal(ranker_stats(sim, served).title_plays,
                                  np.bincount(batch.title, weights=fb.play, minlength=T))


def test_clickbait_potential_needs_unrepresentative_images():
    """The potential is >= 0, > 0 for some titles in a clickbait world, and 0 everywhere when
    images differ only in appeal and representativeness does not affect plays (then the
    most-clicked image is also the best for quality plays)."""
    base = {"n_members": 300, "n_titles": 60, "n_genres": 8}
    bait = build_world(WorldConfig.from_dict({**base, "response": {"clickbait_appeal": 1.5}}), 0, 1440.0)
    pot = clickbait_potential(bait, 0, sample=100)
    assert pot.shape == (60,) and (pot >= -1e-12).all() and (pot > 0.05).sum() >= 5
    flat = build_world(WorldConfig.from_dict({**base, "response": {
        "clickbait_appeal": 1.5, "theme_weight": 0.0, "play_representativeness_weight": 0.0,
        "quality_representativeness_weight": 0.0}}), 0, 1440.0)
    np.testing.assert_allclose(clickbait_potential(flat, 0, sample=100), 0.0, atol=1e-12)


# ---- closed-loop behaviour ------------------------------------------------------------------
def _run(ranker: dict, seed: int, world: dict | None = None, days: float = 4) -> Simulation:
    cfg = experiment_config_from_dict({
        "seed": seed,
        "world": {"name": "t", "n_members": 1500, "n_titles": 80, "n_genres": 6, "artworks_min": 2,
                  "artworks_max": 3, "launch_share": 0.0, **(world or {})},
        "engine": {"days": days, "window_minutes": 30, "ranker_retrain_hours": 12,
                   "log_impressions": False, "track_regret": False, "progress": False},
        "ranker": ranker, "policy": {"name": "fixed"}})
    sim = Simulation(cfg)
    sim.run()
    return sim


def test_oracle_ranker_shows_no_drift():
    rho = [r["spearman"] for r in _run({"name": "oracle"}, 0, days=2).drift.rows]
    assert len(rho) >= 4 and np.allclose(rho, 1.0)


def test_learned_once_is_frozen_after_first_fit():
    once = _run({"name": "learned", "retrain": "once"}, 0, days=2)
    repeated = _run({"name": "learned"}, 0, days=2)
    assert once.shared_ranker.version_ == 1 and repeated.shared_ranker.version_ == 3
    # Same world, same first day: the one fit is the repeated ranker's first fit (its scores
    # still move, with the members' histories, but what it learned does not).
    assert len(once.drift.rows) == len(repeated.drift.rows)
    assert once.drift.rows[1]["spearman"] == pytest.approx(repeated.drift.rows[1]["spearman"])


FLAT = {"response": {"fit_weight": 0.0, "title_quality_weight": 0.0, "appeal_sd": 0.05,
                     "theme_weight": 0.0, "clickbait_appeal": 0.0}}


@pytest.mark.slow
def test_exposure_concentrates_when_appeal_is_flat():
    """No title is truly better (fit and quality weights 0, near-identical images).

    * The learned ranker starts personalised (its prior affinity slope), finds no slope in its
      own logs and falls back on per-title biases learned from plays its own pages caused: the
      impression Gini must rise from day 1 to day 4 by more than 3 standard errors over seeds.
    * The popularity ranker is at that fixed point from the first page (one shared ranking by
      launch hype, then by the plays that ranking earned): its day-1 Gini already exceeds the
      learned ranker's, and it does not fall (> -3 SE).
    """
    rise, pop_rise, pop_gap = [], [], []
    for seed in range(4):
        learned = _run({"name": "learned"}, seed, FLAT).exposure.impressions[:, 0, :]      # (day, title)
        pop = _run({"name": "popularity"}, seed, FLAT).exposure.impressions[:, 0, :]
        rise.append(gini(learned[-1]) - gini(learned[0]))
        pop_rise.append(gini(pop[-1]) - gini(pop[0]))
        pop_gap.append(gini(pop[0]) - gini(learned[0]))
    for x, label in ((rise, "learned rise"), (pop_gap, "popularity - learned on day 1")):
        x = np.array(x)
        assert x.mean() > 3 * x.std(ddof=1) / np.sqrt(x.size), (label, x)
    pop_rise = np.array(pop_rise)
    assert pop_rise.mean() > -3 * max(pop_rise.std(ddof=1), 1e-3) / np.sqrt(pop_rise.size), pop_rise


#: FLAT, and no launch hype either: every title starts level for the popularity ranker too.
LEVEL = {**FLAT, "hype_spread": 0.0}


def _daily_gini(ranker: dict, seeds: range, days: float = 6) -> np.ndarray:
    """(n_seeds, n_days) Gini of the cell's impressions across titles, day by day."""
    return np.array([[gini(day) for day in _run(ranker, seed, LEVEL, days).exposure.impressions[:, 0, :]]
                     for seed in seeds])


@pytest.mark.slow
def test_popularity_ranker_gini_rises_when_appeal_is_flat():
    """Rich get richer: with flat appeal and flat hype the popularity ranker starts with every
    title tied (ties broken at random per visit, so day-1 exposure is spread), then ranks by the
    plays its own pages caused and keeps promoting the titles that got them.

    Measured over 12 seeds (6 days): the popularity ranker's Gini goes 0.16 -> 0.28 -> 0.33 ->
    0.35 -> 0.37 -> 0.40 (day-to-day SD over seeds 0.02-0.04); rise first -> last day 0.236
    (SD 0.037), day 2 -> last 0.112 (SD 0.029). Controls in the same world: the random ranker,
    which learns nothing, rises 0.002 (SD 0.007); the popularity ranker frozen after its first
    fit (``retrain: once``) rises 0.045 (SD 0.021) first -> last, all on day 2, and 0.001
    (SD 0.005) day 2 -> last. The margins below sit >= 4 SE of a 4-seed mean (SD / 2) away
    from both sides, so the test fails if the rise is absent (random) or stops after one fit (once).
    """
    seeds = range(4)
    pop = _daily_gini({"name": "popularity"}, seeds)
    rand = _daily_gini({"name": "random"}, seeds)
    once = _daily_gini({"name": "popularity", "retrain": "once"}, seeds)
    rise = lambda g, first: (g[:, -1] - g[:, first]).mean()  # noqa: E731
    assert rise(pop, 0) > 0.12 > rise(rand, 0), (pop.round(3), rand.round(3))
    # After the first fit the rise continues only if the ranker keeps feeding on its own plays.
    assert rise(pop, 1) > 0.05 > rise(once, 1), (pop.round(3), once.round(3))
    assert pop[:, 0].mean() < 0.25, "day 1 exposure is spread out, not a fixed ranking"


def test_average_ranks_equal_scipy_rankdata():
    """The NumPy ranks that spare every run the scipy.stats import are scipy's, bit for bit,
    with and without ties."""
    from scipy.stats import rankdata

    from sim.bias import average_ranks

    rng = np.random.default_rng(0)
    for shape, levels in [((50, 7), 3), ((200, 40), 5), ((3, 500), 500), ((10, 2), 1)]:
        tied = rng.integers(0, levels, shape).astype(np.float64)
        np.testing.assert_array_equal(average_ranks(tied), rankdata(tied, axis=1))
        distinct = rng.random(shape)
        np.testing.assert_array_equal(average_ranks(distinct), rankdata(distinct, axis=1))


def _clustered_exposure(rng: np.random.Generator, members: int = 2000, per_member: int = 20, titles: int = 50):
    """Impressions of members who each see their own favourite title 70 % of the time (strongly
    clustered: a member's impressions are far from independent) and a uniform title otherwise."""
    favourite = np.minimum(rng.zipf(1.6, members) - 1, titles - 1)
    member = np.repeat(np.arange(members), per_member)
    title = np.where(rng.random(member.size) < 0.7, favourite[member], rng.integers(0, titles, member.size))
    return title, member


def test_exposure_gini_interval_matches_its_spread_over_independent_member_samples():
    """The band is a bootstrap over members: its standard error matches the Gini's standard
    deviation across 40 independent samples of members (the ratio's own noise is about 12 %, so
    [0.7, 1.4] is about three standard errors). A bootstrap over impressions would ignore that a
    member's 20 impressions share a favourite title and come out about three times too narrow."""
    rng = np.random.default_rng(7)
    spread = np.std([gini(np.bincount(_clustered_exposure(rng)[0], minlength=50)) for _ in range(40)], ddof=1)
    title, member = _clustered_exposure(rng)
    curve = lorenz_band(title, member, 50, np.random.default_rng(8))
    se = (curve["gini_high"] - curve["gini_low"]) / (2 * 1.959964)
    assert 0.7 < se / spread < 1.4, (se, spread)
    assert curve["gini"] == pytest.approx(gini(np.bincount(title, minlength=50)))
    assert np.all(curve["low"] <= curve["y"] + 1e-12) and np.all(curve["y"] <= curve["high"] + 1e-12)
    assert curve["low"][0] == 0 and curve["high"][-1] == pytest.approx(1.0)
    # Treating impressions as independent (every impression its own member) narrows it several-fold.
    naive = lorenz_band(title, np.arange(title.size), 50, np.random.default_rng(8))
    assert (naive["gini_high"] - naive["gini_low"]) < 0.6 * (curve["gini_high"] - curve["gini_low"])
