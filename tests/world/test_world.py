"""The world: catalog and member invariants, the member-history ring buffer, the response model
(ordering of probabilities, outcome draws, clickbait) and the calibration the README promises.

Statistical assertions use fixed seeds and tolerances of a few standard errors derived from the
counts, so they fail when the effect they test is absent, not by chance.
"""
from __future__ import annotations

import copy
import dataclasses
import sys

import numpy as np
import pytest

from sim.config import ResponseConfig, WorldConfig, experiment_config_from_dict
from sim.engine import Simulation
from sim.streams import generator
from sim.testing import check_response_model, make_decision_batch
from sim.world import ResponseModel, build_world
from sim.world.response import REPRESENTATIVENESS_CENTER
from tests.readme_examples import readme_block

HORIZON = 1440.0 * 3


@pytest.fixture(scope="module")
def small_world():
    """A private world (tests here may mutate member history on copies only)."""
    cfg = WorldConfig(n_members=1000, n_titles=200, n_genres=12, launch_share=0.2,
                      artworks_min=2, artworks_max=9, history_length=8)
    return build_world(cfg, seed=7, horizon_minutes=HORIZON)


def _world_arrays(world) -> dict[str, np.ndarray]:
    """Every array of a world (catalog, members, hidden truth), by dotted name."""
    out = {}
    for part in ("catalog", "members"):
        obj = getattr(world, part)
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if isinstance(value, np.ndarray):
                out[f"{part}.{f.name}"] = value
    r = world.response
    for name in ("tastes", "title_genres", "artwork_theme", "quality", "appeal", "representativeness"):
        out[f"response.{name}"] = getattr(r, name)
    out["response.fit"] = np.array([r.fit_mean, r.fit_sd])
    return out


# ---- catalog ------------------------------------------------------------------------------
def test_catalog_mixtures_sum_to_one(small_world):
    cat = small_world.catalog
    np.testing.assert_allclose(cat.title_genres.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(cat.artwork_theme.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(cat.genre_share.sum(), 1.0, atol=1e-12)
    assert (cat.title_genres >= 0).all() and (cat.artwork_theme >= 0).all()
    assert np.array_equal(cat.primary_genre, cat.title_genres.argmax(axis=1))


def test_catalog_pools_are_padded_and_consistent(small_world):
    cat, cfg = small_world.catalog, small_world.config
    assert ((cat.pool_size >= cfg.artworks_min) & (cat.pool_size <= cfg.artworks_max)).all()
    assert cat.max_artworks == cat.pool_size.max()
    k = np.arange(cat.max_artworks)[None, :]
    inside = k < cat.pool_size[:, None]
    assert (cat.pool[inside] >= 0).all(), "a pool has padding inside its first pool_size slots"
    assert (cat.pool[~inside] == -1).all(), "pools must be padded with -1"
    ids = cat.pool[inside]
    assert np.array_equal(np.sort(ids), np.arange(cat.n_artworks)), "every artwork in exactly one pool"
    t, slot = np.nonzero(inside)
    assert np.array_equal(cat.artwork_title[cat.pool[t, slot]], t)
    assert np.array_equal(cat.artwork_slot[cat.pool[t, slot]], slot)
    assert np.array_equal(np.bincount(cat.artwork_title, minlength=cat.n_titles), cat.pool_size)


def test_launch_share_of_titles_launch_during_the_run(small_world):
    cat, cfg = small_world.catalog, small_world.config
    new = cat.launch_time > 0
    assert new.sum() == round(cfg.launch_share * cat.n_titles)
    assert (cat.launch_time[new] < HORIZON).all()
    assert (cat.launch_time[~new] == 0).all()
    assert np.array_equal(cat.launched(0.0), ~new)
    assert cat.launched(HORIZON).all()


# ---- members ------------------------------------------------------------------------------
def test_member_tastes_and_initial_history(small_world):
    m, cat, cfg = small_world.members, small_world.catalog, small_world.config
    np.testing.assert_allclose(small_world.response.tastes.sum(axis=1), 1.0, atol=1e-5)
    # Each play adds a genre mixture summing to 1.
    np.testing.assert_allclose(m.genre_plays.sum(axis=1), m.n_plays, rtol=1e-5, atol=1e-4)
    assert abs(m.n_plays.mean() - cfg.initial_plays) < 4 * np.sqrt(cfg.initial_plays / m.n_members)
    seen = m.recent_titles[m.recent_titles >= 0]
    assert seen.size > 0
    assert (cat.launch_time[seen] <= 0).all(), "initial history holds a title not yet launched"
    H = cfg.history_length
    assert np.array_equal((m.recent_titles >= 0).sum(axis=1), np.minimum(m.n_plays, H))
    assert np.array_equal(m.history_cursor, m.n_plays % H)
    assert set(np.unique(m.country)) <= set(range(len(cfg.countries)))
    assert (m.visit_rate > 0).all()


def _reference_record(recent, cursor, genre_plays, n_plays, member, title, title_genres, played):
    """Plain-Python ring buffer: events applied one by one in the given order."""
    H = recent.shape[1]
    for m, t, p in zip(member.tolist(), title.tolist(), played.tolist()):
        recent[m, cursor[m]] = t
        cursor[m] = (cursor[m] + 1) % H
        if p:
            genre_plays[m] += title_genres[t]
            n_plays[m] += 1


def test_record_interactions_matches_plain_python_ring_buffer(small_world):
    members = dataclasses.replace(small_world.members)  # shallow: copy the arrays we mutate
    for name in ("recent_titles", "history_cursor", "genre_plays", "n_plays"):
        setattr(members, name, getattr(small_world.members, name).copy())
    ref = {name: getattr(members, name).copy()
           for name in ("recent_titles", "history_cursor", "genre_plays", "n_plays")}
    tg = small_world.catalog.title_genres
    H = members.recent_titles.shape[1]
    rng = generator(0, "world", 99)
    for call in range(5):
        n = 300
        member = rng.integers(0, 40, size=n)           # a few members, many repeats
        member[:3 * H] = 5                             # member 5: more events than the ring holds
        rng.shuffle(member)
        title = rng.integers(0, small_world.catalog.n_titles, size=n)
        played = rng.random(n) < 0.4
        members.record_interactions(member, title, tg, played)
        _reference_record(ref["recent_titles"], ref["history_cursor"], ref["genre_plays"],
                          ref["n_plays"], member, title, tg, played)
        assert np.array_equal(members.recent_titles, ref["recent_titles"]), f"ring differs (call {call})"
        assert np.array_equal(members.history_cursor, ref["history_cursor"])
        assert np.array_equal(members.n_plays, ref["n_plays"])
        np.testing.assert_allclose(members.genre_plays, ref["genre_plays"], rtol=1e-5, atol=1e-5)
    # The ring holds exactly the last H titles of member 5, in ring order.
    assert np.array_equal(np.sort(members.recent_titles[5]), np.sort(ref["recent_titles"][5]))
    assert members.has_interacted(np.array([5]), members.recent_titles[5, :1]).all()
    members.record_interactions(np.zeros(0, np.int64), np.zeros(0, np.int64), tg, np.zeros(0, bool))
    assert np.array_equal(members.recent_titles, ref["recent_titles"])


# ---- determinism --------------------------------------------------------------------------
def test_same_seed_same_world_different_seed_different_world():
    cfg = WorldConfig(n_members=400, n_titles=80, n_genres=8, launch_share=0.2)
    a = _world_arrays(build_world(cfg, seed=11, horizon_minutes=HORIZON))
    b = _world_arrays(build_world(cfg, seed=11, horizon_minutes=HORIZON))
    c = _world_arrays(build_world(cfg, seed=12, horizon_minutes=HORIZON))
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), f"{k} differs between two builds with the same seed"
    differ = [k for k in a if a[k].shape != c[k].shape or not np.array_equal(a[k], c[k])]
    for k in ("catalog.title_genres", "catalog.pool_size", "catalog.launch_time", "members.visit_rate",
              "members.recent_titles", "response.tastes", "response.appeal", "response.quality"):
        assert k in differ, f"{k} is identical under a different seed"


def test_a_shard_draws_only_its_blocks_and_draws_them_as_the_whole_world_does():
    """Shard-local worlds: members of blocks 2-3 drawn alone equal those rows of the whole world
    (catalog and hidden title truth too); the rows of blocks it does not draw stay zero."""
    cfg = WorldConfig(n_members=500, n_titles=80, n_genres=8, launch_share=0.2, history_length=6)
    whole = _world_arrays(build_world(cfg, seed=5, horizon_minutes=HORIZON, member_block=100))
    part = _world_arrays(build_world(cfg, seed=5, horizon_minutes=HORIZON, member_block=100,
                                     blocks=range(2, 4)))
    own = slice(200, 400)
    for k, value in whole.items():
        if k.startswith("members.") or k == "response.tastes":
            np.testing.assert_array_equal(part[k][own], value[own], err_msg=k)
            assert not part[k][:200].any() and not part[k][400:].any(), f"{k}: rows of other blocks drawn"
        else:
            np.testing.assert_array_equal(part[k], value, err_msg=k)
    # Blocks 1.. have their own streams: a block's members are not a copy of another block's.
    assert not np.array_equal(whole["response.tastes"][100:200], whole["response.tastes"][200:300])
    one_block = _world_arrays(build_world(cfg, seed=5, horizon_minutes=HORIZON, member_block=500))
    np.testing.assert_array_equal(one_block["response.tastes"][:100], whole["response.tastes"][:100])


def test_members_a_process_does_not_draw_take_no_memory():
    """Shard-local memory: a world of 2M members of which only block 0 is drawn grows this
    process's resident memory by far less than its member arrays' size (untouched zero pages are
    not backed); drawing every row would grow it by at least that size."""
    from sim.memory import rss_mb

    cfg = WorldConfig(n_members=2_000_000, n_titles=200, n_genres=16, history_length=32)
    # First the same draw in a one-block world, so that the draw's temporaries (freed, but kept
    # by the allocator) are in this process before the measurement.
    build_world(dataclasses.replace(cfg, n_members=65_536), seed=1, horizon_minutes=HORIZON)
    before = rss_mb()
    world = build_world(cfg, seed=1, horizon_minutes=HORIZON, member_block=65_536, blocks=range(1))
    grown = rss_mb() - before
    arrays = [v for v in vars(world.members).values() if isinstance(v, np.ndarray)] + [world.response.tastes]
    member_mb = sum(a.nbytes for a in arrays) / 2**20
    assert member_mb > 500
    assert grown < 0.25 * member_mb, f"RSS grew {grown:.0f} MB for {member_mb:.0f} MB of member arrays"
    assert world.members.visit_rate[:65_536].all() and not world.members.visit_rate[65_536:].any()


# ---- response model -----------------------------------------------------------------------
def _random_impressions(world, n, seed):
    rng = generator(seed, "response", 5)
    cat = world.catalog
    member = rng.integers(0, world.members.n_members, size=n)
    title = rng.integers(0, cat.n_titles, size=n)
    row, col = rng.integers(0, 10, size=n), rng.integers(0, 8, size=n)
    familiar = rng.random(n) < 0.3
    return member, title, cat.pool[title], row, col, familiar


def test_take_probabilities_are_nested_under_attention(small_world):
    r = small_world.response
    member, title, arts, row, col, familiar = _random_impressions(small_world, 5000, 0)
    p_click, p_play, p_quality = r.take_probabilities(member, title, arts, row, col, familiar)
    valid = arts >= 0
    att = np.broadcast_to(r.attention(row, col)[:, None], arts.shape)
    for name, p in (("p_click", p_click), ("p_play", p_play), ("p_quality", p_quality)):
        assert p.shape == arts.shape, name
        assert np.isfinite(p[valid]).all() and (p[valid] >= 0).all(), name
    assert (p_quality[valid] <= p_play[valid]).all()
    assert (p_play[valid] <= p_click[valid]).all()
    assert (p_click[valid] <= att[valid] * (1 + 1e-6)).all()
    # Attention falls with row and column.
    a = r.attention(np.array([0, 1, 0, 5]), np.array([0, 0, 1, 5]))
    assert a[0] == pytest.approx(1.0) and a[1] < a[0] and a[2] < a[0] and a[3] < min(a[1], a[2])
    # Familiar titles: the artwork matters less (smaller spread of log p_click across the pool).
    spread = {}
    for fam in (False, True):
        p = r.take_probabilities(member, title, arts, row, col, np.full(familiar.shape, fam))[0]
        log_p = np.log(np.where(valid, p, np.nan))
        spread[fam] = np.nanmax(log_p, axis=1) - np.nanmin(log_p, axis=1)
    multi = valid.sum(axis=1) > 1
    assert (spread[True][multi] < spread[False][multi] + 1e-6).all()
    assert spread[True][multi].mean() < 0.5 * spread[False][multi].mean()


def test_draw_frequencies_match_probabilities():
    """Nested outcome draws: frequencies within 4 SE of the given probabilities, per bin."""
    cfg = ResponseConfig()
    r = ResponseModel(cfg, *([None] * 6), fit_mean=0.0, fit_sd=1.0)
    rng = generator(1, "response", 6)
    n = 200_000
    p_click = rng.uniform(0.0, 0.6, n)
    p_play = p_click * rng.uniform(0.0, 1.0, n)
    p_quality = p_play * rng.uniform(0.0, 1.0, n)
    out = r.draw(p_click, p_play, p_quality, generator(2, "response", 7), click_delay_mean=3.0,
                 play_delay_mean=7.0)
    assert not (out.play & ~out.click).any() and not (out.quality_play & ~out.play).any()
    bins = np.digitize(p_click, [0.15, 0.3, 0.45])
    for b in range(4):
        sel = bins == b
        for name, p, drawn in (("click", p_click, out.click), ("play", p_play, out.play),
                               ("quality_play", p_quality, out.quality_play)):
            expected, got = p[sel].sum(), drawn[sel].sum()
            se = np.sqrt((p[sel] * (1 - p[sel])).sum())
            assert abs(got - expected) < 4 * se, f"{name} bin {b}: {got} vs {expected:.0f} +- {se:.0f}"
    thr, mean_q = cfg.quality_threshold_minutes, cfg.mean_quality_minutes
    assert (out.minutes[~out.play] == 0).all()
    assert (out.minutes[out.play & ~out.quality_play] < thr).all()
    extra = out.minutes[out.quality_play] - thr
    assert (extra >= 0).all()
    assert abs(extra.mean() - mean_q) < 4 * mean_q / np.sqrt(extra.size)   # exponential: sd = mean
    for got, mean in ((out.click_delay, 3.0), (out.play_delay, 7.0)):
        assert (got >= 0).all()
        assert abs(got.mean() - mean) < 4 * mean / np.sqrt(n)


def test_clickbait_constructed_case():
    """Same title and theme: low representativeness + high appeal -> more clicks, but a lower
    share of clicks turns into quality plays."""
    cfg = ResponseConfig()
    theme = np.array([[0.5, 0.5], [0.5, 0.5]], dtype=np.float32)
    rep = np.array([0.9, 0.2], dtype=np.float32)               # artwork 1 is unrepresentative
    appeal = (cfg.clickbait_appeal * (1 - rep)).astype(np.float32)
    r = ResponseModel(cfg, tastes=np.array([[0.7, 0.3]], np.float32),
                      title_genres=np.array([[0.6, 0.4]], np.float32), artwork_theme=theme,
                      quality=np.zeros(1, np.float32), appeal=appeal, representativeness=rep,
                      fit_mean=0.5, fit_sd=0.1)
    z = np.zeros(1, np.int64)
    pc, pp, pq = r.take_probabilities(z, z, np.array([[0, 1]]), z, z, np.zeros(1, bool))
    assert pc[0, 1] > pc[0, 0]
    assert pq[0, 1] / pc[0, 1] < pq[0, 0] / pc[0, 0]
    assert pp[0, 1] / pc[0, 1] < pp[0, 0] / pc[0, 0]
    assert REPRESENTATIVENESS_CENTER == pytest.approx(3 / 4.5)


def test_clickbait_in_a_drawn_world():
    """Per title, its least representative artwork (when it is also the more appealing one)
    is clicked more on average than its most representative one, yet converts clicks into
    quality plays less often for every member."""
    world = build_world(WorldConfig(n_members=500, n_titles=200), seed=3, horizon_minutes=HORIZON)
    r, cat = world.response, world.catalog
    rep, appeal = r.representativeness, r.appeal
    # Clickbait appeal makes appeal and representativeness clearly anti-correlated.
    corr = np.corrcoef(rep, appeal)[0, 1]
    assert corr < -4 / np.sqrt(rep.size), corr
    M = world.members.n_members
    members, z = np.arange(M), np.zeros(M, np.int64)
    log_ratio = []
    for t in range(cat.n_titles):
        arts = cat.pool[t, :cat.pool_size[t]]
        lo, hi = arts[np.argmin(rep[arts])], arts[np.argmax(rep[arts])]
        if not (rep[lo] < 0.45 and rep[hi] > 0.8 and appeal[lo] > appeal[hi]):
            continue
        pc, _, pq = r.take_probabilities(members, np.full(M, t), np.tile([lo, hi], (M, 1)), z, z,
                                         np.zeros(M, bool))
        assert (pq[:, 0] / pc[:, 0] < pq[:, 1] / pc[:, 1]).all()
        log_ratio.append(np.log(pc[:, 0].mean() / pc[:, 1].mean()))
    log_ratio = np.array(log_ratio)
    assert log_ratio.size >= 30
    t_stat = log_ratio.mean() / (log_ratio.std(ddof=1) / np.sqrt(log_ratio.size))
    assert t_stat > 4, f"clickbait artworks are not clicked more (t = {t_stat:.2f})"


# ---- calibration ----------------------------------------------------------------------------
def test_default_world_calibration():
    """README: uniform artwork choice gives CTR 1-5 % and take fraction 0.5-2 %; the oracle
    artwork beats uniform by 10-40 % in expected take fraction (true probabilities of the
    impressions a short run actually rendered)."""
    cfg = experiment_config_from_dict({
        "seed": 0, "world": {"n_members": 3000},     # WorldConfig defaults otherwise
        "engine": {"days": 1, "log_impressions": False, "progress": False},
        "policy": {"name": "uniform"}})
    assert cfg.world.n_titles == WorldConfig().n_titles
    summary = Simulation(cfg).run()
    cell = summary["cells"]["uniform"]
    assert cell["impressions"] > 20_000
    ctr = cell["ctr"]
    assert 0.01 < ctr["ci_low"] and ctr["ci_high"] < 0.05, ctr
    # Expected take fractions have no outcome noise; the realized one agrees with them.
    uniform, oracle = cell["uniform_take_fraction"], cell["oracle_take_fraction"]
    assert 0.005 < uniform < 0.02, uniform
    tf = cell["take_fraction"]
    assert abs(tf["estimate"] - cell["expected_take_fraction"]) < 4 * tf["se"]
    assert abs(cell["expected_take_fraction"] - uniform) < 4 * tf["se"]
    assert 0.10 < oracle / uniform - 1 < 0.40, oracle / uniform - 1


def test_summary_take_fractions_are_true_probabilities_of_logged_impressions(tmp_path):
    """expected/oracle/uniform take fractions in metrics.json are means of take_probabilities
    over the impressions actually rendered (recomputed here from the Parquet log)."""
    pd = pytest.importorskip("pandas")
    from sim.runner import run_experiment

    config = {"seed": 2, "world": {"n_members": 500, "n_titles": 80, "n_genres": 8},
              "engine": {"days": 1, "progress": False}, "ranker": {"name": "popularity"},
              "policy": {"name": "thompson"}}
    summary = run_experiment(config, tmp_path / "run", progress=False)
    logs = pd.read_parquet(tmp_path / "run" / "logs")
    if "familiar" not in logs.columns:
        pytest.skip("impression log has no 'familiar' column")
    cfg = experiment_config_from_dict(config)
    world = build_world(cfg.world, cfg.seed, cfg.engine.days * 1440.0, cfg.engine.member_block)
    title = logs["title"].to_numpy()
    arts = world.catalog.pool[title]
    _, _, p_quality = world.response.take_probabilities(
        logs["member"].to_numpy(), title, arts, logs["row"].to_numpy(), logs["column"].to_numpy(),
        logs["familiar"].to_numpy())
    valid = arts >= 0
    action = logs["action"].to_numpy().astype(np.int64)
    rows = np.arange(len(logs))
    assert np.array_equal(arts[rows, action], logs["artwork"].to_numpy())
    cell = summary["cells"]["thompson"]
    assert cell["impressions"] == len(logs)
    np.testing.assert_allclose(p_quality[rows, action].mean(), cell["expected_take_fraction"], rtol=1e-6)
    np.testing.assert_allclose(np.where(valid, p_quality, -np.inf).max(axis=1).mean(),
                               cell["oracle_take_fraction"], rtol=1e-6)
    np.testing.assert_allclose((np.where(valid, p_quality, 0).sum(axis=1) / valid.sum(axis=1)).mean(),
                               cell["uniform_take_fraction"], rtol=1e-6)
    # The realized quality plays agree with their expectation.
    q = logs["quality_play"].to_numpy()
    p = p_quality[rows, action]
    assert abs(q.sum() - p.sum()) < 4 * np.sqrt((p * (1 - p)).sum())


# ---- the response-model contract: the conformance checker -----------------------------------
def _builtin(registry) -> dict:
    """Name -> class of a registry (a plain dict or a sim.schema.Registry)."""
    return dict(getattr(registry, "classes", registry))


def _as(cls, model):
    """``model`` turned into a ``cls`` (a subclass of its class) without calling a constructor."""
    out = copy.copy(model)
    out.__class__ = cls
    return out


def _response_classes() -> dict:
    try:
        from sim.world.response import RESPONSE_MODELS   # the registry, where it exists
    except ImportError:
        return {"default": ResponseModel}
    return _builtin(RESPONSE_MODELS)


@pytest.mark.parametrize("settings", [{}, {"artwork_change_penalty": 0.4}, {"clickbait_appeal": 1.5},
                                      {"row_attention_exponent": 0.0, "column_attention_exponent": 0.0}],
                         ids=["default", "penalty", "clickbait", "no-position-bias"])
@pytest.mark.parametrize("name", list(_response_classes()))
def test_response_model_conforms(name, settings):
    world = build_world(WorldConfig.from_dict({"n_members": 300, "n_titles": 60, "n_genres": 8,
                                               "response": settings}), seed=4, horizon_minutes=1440.0)
    model = world.response
    if type(model) is not _response_classes()[name]:
        model = _as(_response_classes()[name], model)
    # The session model has no per-tile attention factor (position acts through its scan of the
    # page, tests/world/test_session.py), so it never claims one.
    per_tile_attention = name != "session"
    assert model.position_bias == (per_tile_attention and settings.get("row_attention_exponent", 1) > 0)
    assert model.uses_last_artwork == ("artwork_change_penalty" in settings)
    check_response_model(model, world.catalog, world.members.n_members, rng_seed=2)


def test_probabilities_assemble_take_probabilities(small_world):
    """``probabilities(batch)`` = take_probabilities of the batch's fields (last image included),
    padding set to 0; ``candidates`` replaces the batch's images."""
    r = small_world.response
    batch = make_decision_batch(small_world.catalog, 500, generator(3, "response", 12),
                                n_members=small_world.members.n_members)
    assert (~batch.mask).any() and (batch.last_artwork >= 0).any()
    p = r.probabilities(batch)
    raw = r.take_probabilities(batch.member, batch.title, batch.candidates, batch.row, batch.column,
                               batch.familiar, batch.last_artwork)
    for got, want in zip(p, raw):
        np.testing.assert_array_equal(got, np.where(batch.mask, want, 0.0))
    assert p.click is p[0] and p.quality_play is p[2]
    chosen = batch.candidates[:, :1]
    one = r.probabilities(batch, chosen)
    np.testing.assert_array_equal(one.play, r.take_probabilities(
        batch.member, batch.title, chosen, batch.row, batch.column, batch.familiar, batch.last_artwork)[1])


class UnboundedClickModel(ResponseModel):
    """Forgets attention: P(click) above P(looked at)."""

    def take_probabilities(self, *args, **kwargs):
        p_click, p_play, p_quality = super().take_probabilities(*args, **kwargs)
        return p_click / self.attention(args[3], args[4])[:, None], p_play, p_quality


class PlayWithoutClickModel(ResponseModel):
    def take_probabilities(self, *args, **kwargs):
        p_click, p_play, p_quality = super().take_probabilities(*args, **kwargs)
        return p_click, np.minimum(2 * p_play + 0.01, 1.0), p_quality


class CompetingImagesModel(ResponseModel):
    """Normalises clicks over the candidates: an image's probability depends on the others."""

    def take_probabilities(self, member, title, artworks, *args, **kwargs):
        p_click, p_play, p_quality = super().take_probabilities(member, title, artworks, *args, **kwargs)
        share = p_click / np.where(artworks >= 0, p_click, 0.0).sum(axis=1, keepdims=True)
        return p_click * share, p_play * share, p_quality * share


class HiddenPenaltyModel(ResponseModel):
    """Uses the last image shown but does not say so (the engine would not track it)."""

    def take_probabilities(self, member, title, artworks, row, column, familiar, last_artwork=None):
        p = super().take_probabilities(member, title, artworks, row, column, familiar, last_artwork)
        if last_artwork is None:
            return p
        keep = np.where((last_artwork[:, None] >= 0) & (artworks != last_artwork[:, None]), 0.5, 1.0)
        return tuple(x * keep for x in p)


class BottomFirstModel(ResponseModel):
    def attention(self, row, column):
        return super().attention(9 - np.asarray(row), column)


class UnseededDrawModel(ResponseModel):
    def draw(self, p_click, p_play, p_quality, rng, *args):
        return super().draw(p_click, p_play, p_quality, np.random.default_rng(), *args)


class UnnestedDrawModel(ResponseModel):
    def draw(self, *args):
        out = super().draw(*args)
        out.quality_play = ~out.play
        return out


class BiasedDrawModel(ResponseModel):
    def draw(self, p_click, p_play, p_quality, rng, *args):
        return super().draw(np.minimum(1.3 * p_click, 1.0), p_play, p_quality, rng, *args)


@pytest.mark.parametrize("cls, message", [
    (UnboundedClickModel, "attention"), (PlayWithoutClickModel, "nested"),
    (CompetingImagesModel, "one candidate differs"), (HiddenPenaltyModel, "uses_last_artwork is False"),
    (BottomFirstModel, "rises with the row"), (UnseededDrawModel, "identically seeded"),
    (UnnestedDrawModel, "not nested"), (BiasedDrawModel, "frequency of click"),
])
def test_check_response_model_catches_broken_models(small_world, cls, message):
    model = _as(cls, small_world.response)
    with pytest.raises(AssertionError, match=message):
        check_response_model(model, small_world.catalog, small_world.members.n_members)


# The README's "Writing your own response model" class, exactly as printed.
RESPONSE_EXAMPLE = readme_block("# my_response.py")


def test_readme_response_example(tmp_path, monkeypatch, small_world):
    """The example conforms, and its click probabilities no longer fall down the page."""
    (tmp_path / "my_response.py").write_text(RESPONSE_EXAMPLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_response", raising=False)
    from my_response import NoPositionBias

    model = _as(NoPositionBias, small_world.response)
    check_response_model(model, small_world.catalog, small_world.members.n_members)
    batch = make_decision_batch(small_world.catalog, 50, generator(5, "response", 13),
                                n_members=small_world.members.n_members)
    top, low = (dataclasses.replace(batch, row=np.full(50, r, np.int16), column=np.zeros(50, np.int16))
                for r in (0, 9))
    np.testing.assert_array_equal(model.probabilities(top).click, model.probabilities(low).click)
    assert (small_world.response.probabilities(low).click[batch.mask]
            < small_world.response.probabilities(top).click[batch.mask]).all()
