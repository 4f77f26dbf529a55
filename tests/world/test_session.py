"""The session response model: the scan of a page (patience, leaving, end of page), tiles that
compete, the conformance checker's page checks, and the calibration of the default world's
sessions against the published anchors (sim.sessions_report).

Statistical assertions use fixed seeds and tolerances from standard errors.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from sim.config import ResponseConfig, WorldConfig
from sim.streams import generator
from sim.testing import check_response_model, make_decision_batch
from sim.world import build_world
from sim.world.response import Outcomes, Page
from sim.world.session import END_LEAVE, END_PAGE, END_PATIENCE, END_PLAY, SessionResponse
from tests.conftest import assert_same_logs


def _world(**response):
    cfg = WorldConfig(n_members=500, n_titles=80, n_genres=8, artworks_min=2, artworks_max=6,
                      history_length=8, response=ResponseConfig("session", **response))
    return build_world(cfg, seed=3, horizon_minutes=1440.0)


@pytest.fixture(scope="module")
def world():
    return _world()


def _pages(n_pages: int, tiles: int, columns: int = 4) -> Page:
    k = np.arange(n_pages * tiles)
    return Page(k // tiles, (k % tiles) // columns, (k % tiles) % columns, k // tiles)


def test_session_model_passes_the_conformance_checker(world):
    check_response_model(world.response, world.catalog, world.members.n_members, rng_seed=4)


def test_checker_rejects_two_quality_plays_in_a_session(world):
    class TwoPlays(SessionResponse):
        def draw(self, *args, **kwargs):
            out = super().draw(*args, **kwargs)
            if kwargs.get("page") is None:             # one-tile pages stay right
                return out
            every = np.ones(out.click.size, bool)      # every tile looked at, opened and played
            return dataclasses.replace(out, look=every, click=every, play=every, quality_play=every)

    broken = TwoPlays(world.response.cfg, world.response.tastes, world.response.title_genres,
                      world.response.artwork_theme, world.response.quality, world.response.appeal,
                      world.response.representativeness, world.response.fit_mean, world.response.fit_sd)
    with pytest.raises(AssertionError, match="a session has .* quality plays"):
        check_response_model(broken, world.catalog, world.members.n_members)
    check_response_model(world.response, world.catalog, world.members.n_members)   # the unbroken one passes


def test_take_probabilities_are_per_look_with_the_session_intercepts(world):
    """Per-look probabilities equal the independent model's with the session intercepts and fit
    weight and no position attenuation (an independent implementation of the same logits)."""
    c = world.response.cfg
    same = dataclasses.replace(c, click_intercept=c.session_click_intercept, fit_weight=c.session_fit_weight,
                               play_intercept=c.session_play_intercept,
                               quality_intercept=c.session_quality_intercept,
                               row_attention_exponent=0.0, column_attention_exponent=0.0)
    r = world.response
    from sim.world.response import ResponseModel
    indep = ResponseModel(same, r.tastes, r.title_genres, r.artwork_theme, r.quality, r.appeal,
                          r.representativeness, r.fit_mean, r.fit_sd)
    batch = make_decision_batch(world.catalog, 200, generator(0, "t", 1), n_members=500)
    for a, b in zip(r.probabilities(batch), indep.probabilities(batch)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    far = dataclasses.replace(batch, row=batch.row + 7, column=batch.column + 3)
    assert all(np.array_equal(a, b) for a, b in zip(r.probabilities(batch), r.probabilities(far)))


def test_patience_ends_the_scan_at_the_time_budget():
    """Fixed 2 s looks, no detail views, an 11 s budget: looks start at 0, 2, ..., 10 s, so 6
    tiles are looked at, the session lasts 12 s and ends by patience."""
    r = _world(dwell_seconds=2.0, dwell_min_seconds=2.0, patience_seconds=11.0, patience_sigma=0.0,
               leave_probability=0.0).response
    n = 3 * 20
    zero = np.zeros(n)
    out = r.draw(zero, zero, zero, generator(0, "t", 2), 1.0, 1.0, page=_pages(3, 20))
    looks = out.look.reshape(3, 20)
    assert (looks.sum(axis=1) == 6).all() and looks[:, :6].all()
    np.testing.assert_allclose(out.look_second.reshape(3, 20)[:, :6], np.tile(np.arange(0, 12, 2), (3, 1)))
    assert np.allclose(out.session_seconds, 12.0) and (out.end_reason == END_PATIENCE).all()
    # Short pages run out first: 4 tiles take 8 s < 11 s.
    out = r.draw(np.zeros(8), np.zeros(8), np.zeros(8), generator(0, "t", 3), 1.0, 1.0, page=_pages(2, 4))
    assert out.look.all() and (out.end_reason == END_PAGE).all() and np.allclose(out.session_seconds, 8.0)


def test_leaving_and_playing_end_the_session():
    r = _world(leave_probability=1.0).response
    z = np.zeros(40)
    out = r.draw(z, z, z, generator(0, "t", 4), 1.0, 1.0, page=_pages(4, 10))
    assert (out.look.reshape(4, 10).sum(axis=1) == 1).all() and (out.end_reason == END_LEAVE).all()
    # Every look opens and commits: the first tile is played and nothing after it happens.
    r = _world(leave_probability=0.0).response
    one = np.ones(40)
    out = r.draw(one, one, one, generator(0, "t", 5), 1.0, 1.0, page=_pages(4, 10))
    q = out.quality_play.reshape(4, 10)
    assert q[:, 0].all() and not q[:, 1:].any() and not out.look.reshape(4, 10)[:, 1:].any()
    assert (out.end_reason == END_PLAY).all()
    np.testing.assert_allclose(out.session_seconds, out.play_second[np.repeat(np.arange(0, 40, 10), 10)])


def test_tiles_compete_a_compelling_first_tile_takes_plays_from_later_ones():
    """Pages of 8 equal tiles; raising the first tile's P(detail view) from 0.05 to 0.5 lowers
    the plays of tiles 2-8 (they are reached less often) while plays per page rise less than
    the first tile's plays do (cannibalization). Tolerances: 4 binomial standard errors."""
    r = _world().response
    pages, tiles = 20_000, 8
    n = pages * tiles
    base = np.full(n, 0.05)
    first = (np.arange(n) % tiles) == 0
    rates = {}
    for name, pc in (("plain", base), ("compelling", np.where(first, 0.5, base))):
        out = r.draw(pc, 0.5 * pc, 0.4 * pc, generator(0, "t", 6), 1.0, 1.0, page=_pages(pages, tiles))
        q = out.quality_play.reshape(pages, tiles)
        rates[name] = (q[:, 0].mean(), q[:, 1:].sum(axis=1).mean(), q.sum(axis=1).mean())
    (f0, l0, t0), (f1, l1, t1) = rates["plain"], rates["compelling"]
    se = math.sqrt(0.25 / pages)
    assert l1 < l0 - 4 * se, f"later tiles' quality plays per page {l1:.4f} vs {l0:.4f}: no competition"
    assert t1 - t0 < (f1 - f0) - 4 * se, "page-level gain equals the first tile's gain: no cannibalization"


def test_draw_is_deterministic_and_independent_of_input_order(world):
    r = world.response
    rng = generator(0, "t", 7)
    n = 600
    pc = rng.uniform(0, 0.3, n)
    pp, pq = pc * 0.5, pc * 0.3
    page = _pages(50, 12)
    a = r.draw(pc, pp, pq, generator(1, "r"), 1.0, 1.0, page=page)
    perm = generator(0, "t", 8).permutation(n)
    b = r.draw(pc[perm], pp[perm], pq[perm], generator(1, "r"), 1.0, 1.0, page=Page(*(x[perm] for x in page)))
    for f in dataclasses.fields(Outcomes):
        x = getattr(a, f.name)
        assert np.array_equal(x[perm], getattr(b, f.name), equal_nan=x.dtype.kind == "f"), f.name
    c = r.draw(pc, pp, pq, generator(2, "r"), 1.0, 1.0, page=page)
    assert not np.array_equal(a.look_second, c.look_second, equal_nan=True), "another seed, same sessions"


@pytest.mark.slow
def test_default_world_sessions_meet_the_published_anchors(tmp_path):
    """A smaller default-like world (the default catalog and homepage, fewer members and days)
    with the default session parameters lands in every anchor range of sim.sessions_report, up
    to 2 standard errors (medians: the share below / above the range's ends, binomial errors;
    means and rates: their standard errors; the oracle lift: its 95 % interval must overlap)."""
    import pandas as pd

    from sim.runner import run_experiment
    from sim.sessions_report import ANCHORS, session_figures

    cells = [{"name": p, "share": 0.5, "policy": {"name": p}} for p in ("uniform", "oracle")]
    config = {"seed": 0, "world": {"n_members": 6000, "n_titles": 600, "response": {"name": "session"}},
              "engine": {"days": 2, "progress": False},
              "experiment": {"name": "session-calibration", "control": "uniform", "cells": cells}}
    run_experiment(config, tmp_path)
    fig = session_figures(tmp_path)
    visits = pd.read_parquet(tmp_path / "visit_context")
    visits = visits[visits["end_reason"] >= 0]
    n = fig["sessions"]
    assert n > 2000
    half = 2 * math.sqrt(0.25 / n)
    anchors = {a.key: a for a in ANCHORS}
    for key, column, rows in (("median_tiles_looked", "looks", slice(None)),
                              ("median_seconds_no_play", "session_seconds", visits["plays"] == 0)):
        x = visits.loc[rows, column].to_numpy()
        lo, hi = anchors[key].low, anchors[key].high
        half_k = 2 * math.sqrt(0.25 / x.size)
        assert (x < lo).mean() < 0.5 + half_k and (x > hi).mean() < 0.5 + half_k, (key, float(np.median(x)))
    dv = visits["detail_views"].to_numpy()
    se = dv.std() / math.sqrt(dv.size)
    assert 1 - 2 * se <= dv.mean() <= 3 + 2 * se, dv.mean()
    assert fig["max_quality_plays"] <= 1
    ps = fig["play_share"]
    assert anchors["play_share"].low - half <= ps <= anchors["play_share"].high + half, ps
    metrics = __import__("json").loads((tmp_path / "metrics.json").read_text())
    for key in ("ctr", "take_fraction"):
        m = metrics["cells"]["uniform"][key]
        assert anchors[key].low - 2 * m["se"] <= m["estimate"] <= anchors[key].high + 2 * m["se"], (key, m)
    lift = metrics["lift"]["oracle"]["take_fraction"]
    assert lift["ci_high"] >= anchors["oracle_lift"].low and lift["ci_low"] <= anchors["oracle_lift"].high, lift


def _session_run(tmp_path, name: str, seed: int = 5, **engine):
    from sim.runner import run_experiment

    cells = [{"name": p, "share": 0.5, "policy": {"name": p}} for p in ("uniform", "thompson")]
    config = {"seed": seed,
              "world": {"name": "tiny", "n_members": 500, "n_titles": 60, "n_genres": 8, "artworks_max": 6,
                        "visits_per_day": 2.0, "response": {"name": "session"}},
              "engine": {"days": 0.3, "member_block": 64, "retrain_hours": 3, "progress": False, **engine},
              "experiment": {"name": "session-shards", "control": "uniform", "cells": cells}}
    out = tmp_path / name
    run_experiment(config, out, progress=False)
    return out


@pytest.mark.slow
def test_sessions_are_identical_for_any_shard_count(tmp_path):
    from sim.logs import read_visit_log

    one, three = _session_run(tmp_path, "one"), _session_run(tmp_path, "three", shards=3)
    assert (one / "metrics.json").read_bytes() == (three / "metrics.json").read_bytes()
    assert (one / "timeseries.csv").read_bytes() == (three / "timeseries.csv").read_bytes()
    assert_same_logs(one, three)
    visits = read_visit_log(one)
    assert {"session_seconds", "end_reason", "looks"} <= set(visits.columns) and (visits["end_reason"] >= 0).all()
