"""The homepage: grid layout against a slow plain-Python reference, and the rankers.

Layout rules: a top-picks row with the C best launched titles, then one row per genre in the
order of the member's genre affinity, each holding that genre's best launched titles not already
in top picks; a title at most once per page; ``-1`` where a row runs out of titles.
"""
from __future__ import annotations

import copy
import dataclasses
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import chisquare

from sim.config import RankerConfig, WorldConfig, experiment_config_from_dict
from sim.engine import Simulation
from sim.homepage import (N_AFFINITY_BINS, RANKERS, GenreIndex, LearnedRanker, PopularityRanker,
                          RandomRanker, Ranker, RankerStats, affinity_bin, build_ranker, layout_pages,
                          observed_affinity)
from sim.streams import generator
from sim.testing import check_ranker, make_ranker_feedback
from sim.world import build_world
from tests.readme_examples import readme_block


@pytest.fixture(scope="module")
def hp_world():
    return build_world(WorldConfig(n_members=400, n_titles=150, n_genres=10, launch_share=0.2),
                       seed=5, horizon_minutes=1440 * 2)


def reference_layout(scores, affinity, launched, primary_genre, n_genres, rows, columns):
    """One page, the slow obvious way. Equal scores: the lower genre, then the lower title id."""
    titles = np.full((rows, columns), -1, dtype=np.int64)
    row_genre = np.full(rows, -1, dtype=np.int64)
    ranked = sorted((t for t in range(len(scores)) if launched[t]),
                    key=lambda t: (-scores[t], primary_genre[t], t))
    top = ranked[:columns]
    titles[0, :len(top)] = top
    genres = sorted(range(n_genres), key=lambda g: -affinity[g])    # stable: ties by genre id
    for r, g in enumerate(genres[:rows - 1], start=1):
        row_genre[r] = g
        row = [t for t in ranked if primary_genre[t] == g and t not in top][:columns]
        titles[r, :len(row)] = row
    return titles, row_genre


def _check_against_reference(primary_genre, n_genres, launched, rows, columns, n_visits, seed,
                             levels=None):
    """Pages of random scores against :func:`reference_layout`; ``levels``: scores drawn from
    that many values (float32), so that most titles tie with others."""
    index = GenreIndex(SimpleNamespace(primary_genre=primary_genre, n_genres=n_genres))
    rng = generator(seed, "ranker", 1)
    if levels is None:
        scores = rng.standard_normal((n_visits, primary_genre.size))   # float64: no ties
    else:
        scores = rng.integers(0, levels, (n_visits, primary_genre.size)).astype(np.float32)
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


@pytest.mark.parametrize("levels", [2, 5])
def test_layout_breaks_ties_by_title_whatever_order_it_scans_in(hp_world, levels):
    """The kernel scans each genre best first by the batch's summed scores, not in title order;
    with scores from a few values most titles tie, and pages must still rank equal scores by
    title id (top picks: by genre, then title), as the reference does."""
    cat = hp_world.catalog
    _check_against_reference(cat.primary_genre, cat.n_genres, cat.launched(0.0), rows=8, columns=6,
                             n_visits=40, seed=4, levels=levels)


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


# ---- the ranker contract: the conformance checker over every built-in ---------------------
def _builtin(registry) -> dict:
    """Name -> class of a registry (a plain dict or a sim.schema.Registry)."""
    return dict(getattr(registry, "classes", registry))


def make_ranker(world, name="learned", **settings):
    """The one place these tests build a ranker from its name and settings."""
    return build_ranker(RankerConfig(name=name, **settings), world.catalog, world.members, world.response)


def _fitted(ranker, world, seed=0):
    feedback, pscore = make_ranker_feedback(world.catalog, 500, generator(seed, "ranker", 8),
                                            n_members=world.members.n_members)
    ranker.fit(ranker.statistics(feedback, pscore), now=1440.0)
    return ranker


RANKER_SPECS = {name: {"name": name} for name in _builtin(RANKERS)}
RANKER_SPECS["learned(ipw)"] = {"name": "learned", "correction": "ipw", "exploration_share": 0.1}
RANKER_SPECS["learned(once)"] = {"name": "learned", "retrain": "once"}
RANKER_SPECS["popularity(click)"] = {"name": "popularity", "signal": "click"}


@pytest.mark.parametrize("state", ["fresh", "fitted"])
@pytest.mark.parametrize("spec", RANKER_SPECS.values(), ids=RANKER_SPECS.keys())
def test_ranker_conforms(hp_world, spec, state):
    ranker = make_ranker(hp_world, **spec)
    if state == "fitted":
        _fitted(ranker, hp_world)
    version = ranker.version_
    check_ranker(ranker, hp_world.members.n_members, rng_seed=1)
    assert ranker.version_ == version, "check_ranker must not modify the ranker"


def test_ranker_statistics_count_impressions_and_the_signal(hp_world):
    """Hand-checked against bincounts of the feedback; ``ipw`` adds the debiasing fields."""
    feedback, pscore = make_ranker_feedback(hp_world.catalog, 400, generator(2, "ranker", 9),
                                            n_members=hp_world.members.n_members)
    title, T = feedback.decisions.title, hp_world.catalog.n_titles
    assert feedback.click.sum() > feedback.play.sum() > 0 and (pscore < 1).sum() > 20
    plain = make_ranker(hp_world, "popularity").statistics(feedback, pscore)
    np.testing.assert_array_equal(plain.title_impressions, np.bincount(title, minlength=T))
    np.testing.assert_array_equal(plain.title_plays, np.bincount(title, feedback.play, minlength=T))
    assert plain.bin_impressions.sum() == 400 and plain.title_plays_debiased is None
    ipw = make_ranker(hp_world, "learned", correction="ipw", position_exponent=1.0)
    s = ipw.statistics(feedback, pscore)
    row, col = feedback.decisions.row.astype(float), feedback.decisions.column.astype(float)
    np.testing.assert_allclose(s.title_plays_debiased,
                               np.bincount(title, feedback.play * (row + 1) * (col + 1), minlength=T))
    ex = pscore < 1
    assert s.explored_bin_impressions.sum() == pytest.approx((1 / pscore[ex]).sum())
    assert s.row_explored_impressions.sum() == ex.sum()


class WrongShapeRanker(LearnedRanker):
    def scores(self, member, rng):
        return super().scores(member, rng)[:, 1:]


class NaNRanker(LearnedRanker):
    def scores(self, member, rng):
        s = super().scores(member, rng)
        s[:, 0] = np.nan
        return s


class UnseededRanker(PopularityRanker):
    def scores(self, member, rng):
        return super().scores(member, np.random.default_rng())


class MeanRateRanker(LearnedRanker):
    """Ships play rates instead of counts: not additive across shards."""

    def statistics(self, feedback, pscore=None):
        s = super().statistics(feedback, pscore)
        s.title_plays = s.title_plays / np.maximum(s.title_impressions, 1.0)
        return s


class PeekingRanker(LearnedRanker):
    """Keeps the response model (set by the test) without saying it reads the ground truth."""


class ForgetfulRanker(LearnedRanker):
    """Each fit replaces the statistics instead of adding them."""

    def fit(self, stats, now):
        self.stats_ = RankerStats.zeros(self.catalog.n_titles)
        super().fit(stats, now)


class RetuningRanker(PopularityRanker):
    def fit(self, stats, now):
        super().fit(stats, now)
        self.cfg = dataclasses.replace(self.cfg, half_life_days=self.cfg.half_life_days / 2)


class AlwaysFrozenRanker(LearnedRanker):
    @property
    def frozen(self):
        return True


def _as(cls, ranker):
    """``ranker`` turned into a ``cls`` (a subclass of its class) without calling a constructor."""
    out = copy.copy(ranker)
    out.__class__ = cls
    return out


@pytest.mark.parametrize("cls, message", [
    (WrongShapeRanker, "shape"), (NaNRanker, "NaN"), (UnseededRanker, "identically seeded"),
    (MeanRateRanker, "not additive"), (PeekingRanker, "holds the response model"),
    (ForgetfulRanker, r"fit\(a\); fit\(b\)"), (RetuningRanker, r"hyperparameters \['cfg'\]"),
    (AlwaysFrozenRanker, "never fitted is frozen"),
])
def test_check_ranker_catches_broken_rankers(hp_world, cls, message):
    ranker = _as(cls, make_ranker(hp_world, cls.__mro__[1].name))
    if cls is PeekingRanker:
        ranker.response = hp_world.response
    with pytest.raises(AssertionError, match=message):
        check_ranker(ranker, hp_world.members.n_members)


def test_check_ranker_wants_oracle_in_the_name_of_a_ground_truth_reader(hp_world):
    ranker = make_ranker(hp_world, "oracle")
    check_ranker(ranker, hp_world.members.n_members)
    ranker.name = "best"
    with pytest.raises(AssertionError, match="'oracle' is not in its name"):
        check_ranker(ranker, hp_world.members.n_members)


class ClicksPerTitleRanker(Ranker):
    """A ranker with statistics of its own (an array of credited clicks per title)."""

    def statistics(self, feedback, pscore=None):
        return np.bincount(feedback.decisions.title, feedback.click, minlength=self.catalog.n_titles)

    def fit(self, stats, now):
        self.clicks_ = getattr(self, "clicks_", 0.0) + stats
        self.version_ += 1

    def scores(self, member, rng):
        clicks = getattr(self, "clicks_", np.zeros(self.catalog.n_titles))
        return np.tile(np.log1p(clicks).astype(np.float32), (member.size, 1))


def test_engine_trains_a_ranker_on_its_own_statistics(monkeypatch):
    """Serving asks the ranker for its statistics: a ranker with its own needs no engine edit."""
    import sim.engine

    built = []

    def build(cfg, catalog, members, response):
        built.append(_as(ClicksPerTitleRanker, LearnedRanker(cfg, catalog, members)))
        return built[-1]

    monkeypatch.setattr(sim.engine, "build_ranker", build)
    cfg = experiment_config_from_dict({
        "seed": 3, "world": {"n_members": 300, "n_titles": 40, "n_genres": 5},
        "engine": {"days": 2, "log_impressions": False, "progress": False},
        "policy": {"name": "uniform"}})
    Simulation(cfg).run()
    ranker = built[0]
    assert ranker.version_ >= 1 and ranker.clicks_.shape == (40,) and ranker.clicks_.sum() > 0
    check_ranker(ranker, 300)


# The README's "Writing your own ranker" class, exactly as printed.
RANKER_EXAMPLE = readme_block("# my_rankers.py")


def test_readme_ranker_example(tmp_path, monkeypatch, hp_world):
    """The example conforms, and in a run it learns from the plays the engine credited: its best
    title is the one with the highest smoothed play rate."""
    (tmp_path / "my_rankers.py").write_text(RANKER_EXAMPLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_rankers", raising=False)
    from my_rankers import PlayRateRanker

    check_ranker(_as(PlayRateRanker, make_ranker(hp_world, "random")), hp_world.members.n_members)
    import sim.engine

    built = []
    monkeypatch.setattr(sim.engine, "build_ranker", lambda cfg, cat, mem, resp: built.append(
        _as(PlayRateRanker, RandomRanker(cfg, cat, mem))) or built[-1])
    cfg = experiment_config_from_dict({
        "seed": 4, "world": {"n_members": 400, "n_titles": 40, "n_genres": 5},
        "engine": {"days": 2, "log_impressions": False, "progress": False},
        "policy": {"name": "uniform"}})
    Simulation(cfg).run()
    ranker = built[0]
    assert ranker.version_ >= 1 and ranker.stats_.title_plays.sum() > 0
    s = ranker.stats_
    rate = (s.title_plays + 1.0) / (s.title_impressions + 50.0)
    assert np.ptp(rate) > 1e-3, "the logged plays did not separate the titles"
    top = ranker.scores(np.zeros(1, np.int64), generator(0, "t"))[0].argmax()
    assert rate[top] >= rate.max() - 1e-6
