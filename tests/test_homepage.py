"""The homepage: grid layout against a slow plain-Python reference, and the rankers.

Layout rules: a top-picks row with the C best launched titles, then one row per genre in the
order of the member's genre affinity, each holding that genre's best launched titles not already
in top picks; a title at most once per page; ``-1`` where a row runs out of titles.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import chisquare

from sim.config import RankerConfig, WorldConfig
from sim.homepage import (N_AFFINITY_BINS, GenreIndex, LearnedRanker, PopularityRanker, RankerStats,
                          affinity_bin, build_ranker, layout_pages, observed_affinity)
from sim.streams import generator
from sim.world import build_world


@pytest.fixture(scope="module")
def hp_world():
    return build_world(WorldConfig(n_members=400, n_titles=150, n_genres=10, launch_share=0.2),
                       seed=5, horizon_minutes=1440 * 2)


def reference_layout(scores, affinity, launched, primary_genre, n_genres, rows, columns):
    """One page, the slow obvious way."""
    titles = np.full((rows, columns), -1, dtype=np.int64)
    row_genre = np.full(rows, -1, dtype=np.int64)
    ranked = sorted((t for t in range(len(scores)) if launched[t]), key=lambda t: -scores[t])
    top = ranked[:columns]
    titles[0, :len(top)] = top
    genres = sorted(range(n_genres), key=lambda g: -affinity[g])    # stable: ties by genre id
    for r, g in enumerate(genres[:rows - 1], start=1):
        row_genre[r] = g
        row = [t for t in ranked if primary_genre[t] == g and t not in top][:columns]
        titles[r, :len(row)] = row
    return titles, row_genre


def _check_against_reference(primary_genre, n_genres, launched, rows, columns, n_visits, seed):
    index = GenreIndex(SimpleNamespace(primary_genre=primary_genre, n_genres=n_genres))
    rng = generator(seed, "ranker", 1)
    scores = rng.standard_normal((n_visits, primary_genre.size))   # float64: no ties
    affinity = rng.random((n_visits, n_genres))
    titles, row_genre = layout_pages(scores, affinity, launched, index, rows, columns)
    assert titles.shape == (n_visits, rows, columns) and row_genre.shape == (n_visits, rows)
    for v in range(n_visits):
        ref_titles, ref_genre = reference_layout(scores[v], affinity[v], launched, primary_genre,
                                                 n_genres, rows, columns)
        np.testing.assert_array_equal(titles[v], ref_titles, err_msg=f"visit {v}")
        np.testing.assert_array_equal(row_genre[v], ref_genre, err_msg=f"visit {v}")
    return titles, row_genre, scores


def test_layout_matches_reference_on_random_scores(hp_world):
    cat = hp_world.catalog
    launched = cat.launched(0.0)
    assert not launched.all()
    titles, row_genre, scores = _check_against_reference(
        cat.primary_genre, cat.n_genres, launched, rows=8, columns=6, n_visits=60, seed=0)
    # The invariants, stated directly as well.
    for v in range(titles.shape[0]):
        page = titles[v][titles[v] >= 0]
        assert page.size == np.unique(page).size, "a title appears twice on a page"
        assert launched[page].all(), "an unlaunched title is on the page"
        best = np.sort(np.where(launched, scores[v], -np.inf))[::-1][:6]
        np.testing.assert_array_equal(scores[v][titles[v, 0]], best)
        for r in range(1, titles.shape[1]):
            row = titles[v, r][titles[v, r] >= 0]
            assert (cat.primary_genre[row] == row_genre[v, r]).all()
            assert (np.diff(scores[v][row]) < 0).all(), "genre row not in descending score order"


def test_layout_rows_run_out_gracefully():
    # 5 genres: genre 0 has many titles, genre 1 has 2, genre 2 has 1, genre 3 has 3 of which
    # two are not launched yet, genre 4 has none. More rows than genres.
    primary = np.array([0] * 12 + [1, 1] + [2] + [3, 3, 3])
    launched = np.ones(primary.size, bool)
    launched[[15, 16]] = False
    titles, row_genre, _ = _check_against_reference(primary, 5, launched, rows=8, columns=4,
                                                    n_visits=40, seed=1)
    assert (row_genre[:, 6:] == -1).all() and (titles[:, 6:] == -1).all()   # no genre left
    assert (titles >= 0).sum(axis=(1, 2)).max() <= launched.sum()
    g4 = row_genre == 4
    assert g4.any() and (titles[g4] == -1).all()                            # empty genre row
    assert not np.isin(titles, [15, 16]).any()


def test_layout_with_fewer_launched_titles_than_columns():
    primary = np.array([0, 0, 1, 1, 1, 2])
    launched = np.array([True, False, True, False, False, True])
    titles, _, _ = _check_against_reference(primary, 3, launched, rows=4, columns=5,
                                            n_visits=10, seed=2)
    assert ((titles[:, 0] >= 0).sum(axis=1) == 3).all()
    assert (titles[:, 1:] == -1).all()      # top picks took every launched title


def test_layout_single_row_and_no_visits(hp_world):
    cat = hp_world.catalog
    _check_against_reference(cat.primary_genre, cat.n_genres, cat.launched(0.0), rows=1,
                             columns=8, n_visits=5, seed=3)
    index = GenreIndex(cat)
    titles, row_genre = layout_pages(np.zeros((0, cat.n_titles)), np.zeros((0, cat.n_genres)),
                                     cat.launched(0.0), index, 3, 4)
    assert titles.shape == (0, 3, 4) and row_genre.shape == (0, 3)


# ---- rankers -------------------------------------------------------------------------------
def test_oracle_ranker_reads_the_true_scores(hp_world):
    w = hp_world
    ranker = build_ranker(RankerConfig(name="oracle"), w.catalog, w.members, w.response)
    assert ranker.reads_ground_truth
    member = np.array([0, 3, 3, 399])
    rng = generator(0, "ranker", 2)
    np.testing.assert_array_equal(ranker.scores(member, rng),
                                  w.response.title_scores(member).astype(np.float32))
    np.testing.assert_array_equal(ranker.genre_affinity(member, rng), w.response.tastes[member])
    # title_scores is the click logit without the artwork term: fit and quality.
    c = w.response.cfg
    raw = w.response.tastes[member] @ w.catalog.title_genres.T
    expected = (c.fit_weight * (raw - w.response.fit_mean) / w.response.fit_sd
                + c.title_quality_weight * w.response.quality[None, :])
    np.testing.assert_allclose(ranker.scores(member, rng), expected, rtol=1e-5, atol=1e-5)


def test_non_oracle_rankers_do_not_read_ground_truth(hp_world):
    w = hp_world
    for name in ("popularity", "learned", "random"):
        ranker = build_ranker(RankerConfig(name=name), w.catalog, w.members, w.response)
        assert not ranker.reads_ground_truth and not hasattr(ranker, "response")


def test_popularity_ranker_promotes_titles_with_logged_plays(hp_world):
    w = hp_world
    cfg = RankerConfig(name="popularity", half_life_days=2.0)
    ranker = PopularityRanker(cfg, w.catalog, w.members)
    rng = generator(0, "ranker", 3)
    member = np.arange(20)
    before = ranker.scores(member, rng)[0]
    launched = w.catalog.launched(0.0)
    underdog = int(np.flatnonzero(launched)[np.argmin(before[launched])])
    stats = RankerStats.zeros(w.catalog.n_titles)
    stats.title_impressions[underdog] = 5000.0
    stats.title_plays[underdog] = 1000.0
    ranker.fit(stats, now=0.0)
    after = ranker.scores(member, rng)
    assert ranker.version_ == 1
    assert (after.argmax(axis=1) == underdog).all()
    others = np.arange(w.catalog.n_titles) != underdog
    # Prior unchanged, up to the tie-breaking jitter (below half the smallest score gap).
    np.testing.assert_allclose(after[0, others], before[others], rtol=0,
                               atol=ranker.tie_jitter_ + 1e-6)
    titles, _ = layout_pages(after, ranker.genre_affinity(member, rng), launched,
                             GenreIndex(w.catalog), 4, 6)
    assert (titles[:, 0, 0] == underdog).all(), "the most played title leads top picks"
    # Plays decay with the configured half-life.
    ranker.fit(RankerStats.zeros(w.catalog.n_titles), now=2.0 * 1440.0)
    assert ranker.decayed_plays_[underdog] == pytest.approx(500.0)


def test_learned_ranker_weight_follows_play_rate_by_affinity(hp_world):
    w = hp_world
    x = (np.arange(N_AFFINITY_BINS) + 0.5) / N_AFFINITY_BINS
    stats = RankerStats.zeros(w.catalog.n_titles)
    stats.bin_impressions[:] = 1e6
    stats.bin_plays[:] = 1e6 * 0.01 * np.exp(3.0 * x)            # log play rate has slope 3
    ranker = LearnedRanker(RankerConfig(name="learned"), w.catalog, w.members)
    ranker.fit(stats, now=1440.0)
    assert ranker.weight_ == pytest.approx(3.0, abs=0.05)
    # Play rate falling with affinity: the weight is clipped at 0, never negative.
    falling = RankerStats.zeros(w.catalog.n_titles)
    falling.bin_impressions[:] = 1e6
    falling.bin_plays[:] = 1e6 * 0.05 * np.exp(-3.0 * x)
    ranker2 = LearnedRanker(RankerConfig(name="learned"), w.catalog, w.members)
    ranker2.fit(falling, now=1440.0)
    assert ranker2.weight_ == 0.0
    # Title biases: more plays per impression -> higher score.
    per_title = RankerStats.zeros(w.catalog.n_titles)
    per_title.title_impressions[:] = 1000.0
    per_title.title_plays[:] = 10.0
    per_title.title_plays[7] = 200.0
    ranker3 = LearnedRanker(RankerConfig(name="learned"), w.catalog, w.members)
    ranker3.fit(per_title, now=1440.0)
    assert ranker3.bias_.argmax() == 7


def test_learned_ranker_scores_are_weight_times_affinity_plus_bias(hp_world):
    w = hp_world
    ranker = LearnedRanker(RankerConfig(name="learned"), w.catalog, w.members)
    member = np.array([1, 2, 3])
    aff = observed_affinity(w.members, w.catalog, member)
    np.testing.assert_allclose(aff.sum(axis=1), 1.0, rtol=1e-5)
    expected = ranker.weight_ * (aff @ w.catalog.title_genres.T) + ranker.bias_[None, :]
    np.testing.assert_allclose(ranker.scores(member, None), expected, rtol=1e-5)


def test_ranker_stats_are_additive(hp_world):
    T = hp_world.catalog.n_titles
    rng = generator(0, "ranker", 4)

    def rand_stats():
        return RankerStats(rng.poisson(5.0, T).astype(float), rng.poisson(1.0, T).astype(float),
                           rng.poisson(50.0, N_AFFINITY_BINS).astype(float),
                           rng.poisson(3.0, N_AFFINITY_BINS).astype(float))

    a, b = rand_stats(), rand_stats()
    s = a + b
    for f in ("title_impressions", "title_plays", "bin_impressions", "bin_plays"):
        np.testing.assert_array_equal(getattr(s, f), getattr(a, f) + getattr(b, f))
        np.testing.assert_array_equal(getattr(a + RankerStats.zeros(T), f), getattr(a, f))
    # Fitting twice on the parts equals fitting once on the sum (same time, no decay).
    for cls in (PopularityRanker, LearnedRanker):
        one = cls(RankerConfig(cls.name), hp_world.catalog, hp_world.members)
        two = cls(RankerConfig(cls.name), hp_world.catalog, hp_world.members)
        one.fit(a + b, now=600.0)
        two.fit(a, now=600.0)
        two.fit(b, now=600.0)
        m = np.arange(5)
        np.testing.assert_allclose(one.scores(m, generator(0, "t")), two.scores(m, generator(0, "t")),
                                   rtol=1e-5)
    assert (affinity_bin(np.array([0.0, 0.999, 1.0])) == [0, N_AFFINITY_BINS - 1,
                                                          N_AFFINITY_BINS - 1]).all()


def test_popularity_ranker_breaks_ties_at_random():
    """With flat hype and no plays every title ties: the leader is uniform over titles and
    differs between visits; a title with plays still leads every page, the rest stay shuffled."""
    w = build_world(WorldConfig(n_members=50, n_titles=40, n_genres=4, hype_spread=0.0),
                    seed=1, horizon_minutes=1440)
    assert np.ptp(w.catalog.popularity_prior) == 0
    ranker = PopularityRanker(RankerConfig(name="popularity"), w.catalog, w.members)
    member = np.zeros(8000, dtype=np.int64)              # one member, many visits
    lead = ranker.scores(member, generator(0, "ranker", 1)).argmax(axis=1)
    counts = np.bincount(lead, minlength=40)
    assert chisquare(counts).pvalue > 1e-3, counts      # 200 per title expected
    stats = RankerStats.zeros(40)
    stats.title_plays[7] = 1.0
    ranker.fit(stats, now=0.0)
    scores = ranker.scores(member, generator(0, "ranker", 2))
    assert (scores.argmax(axis=1) == 7).all()
    second = np.argsort(-scores, axis=1)[:, 1]
    assert np.unique(second).size == 39
