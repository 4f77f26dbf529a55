"""Page-level (slate) off-policy evaluation: closed forms on hand-made pages, unbiasedness on a
synthetic slate bandit with a known value, the bias of per-tile IPS when tiles interact, page
propensities read from a simulator log, the simulator's page-level truth, and refusals."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from sim.logs import read_impressions
from sim.ope.estimators.slate import (SLATE_ESTIMATOR_NAMES, SLATE_ESTIMATORS, SlateEstimator,
                                      build_slate_estimator, estimate_slates)
from sim.ope.groundtruth import true_rewards
from sim.ope.logged import build_target, from_log, target_probabilities
from sim.config import RESPONSE_MODELS
from sim.ope.pages import (cascade_products, draw_pages, independent_page_values, page_last,
                           page_propensities, page_truth, sample_actions, slate_feedback_from_log,
                           target_slate_pscores, weight_second_moments)
from sim.ope.runs import read_visit_contexts, run_config, run_world
from sim.ope.slate_testing import check_slate_estimator, make_slate_problem
from sim.ope.validate import LogValidationError
from sim.runner import run_experiment
from sim.schema import ConfigError
from tests.conftest import tiny_run_config


# ---- hand-made pages ---------------------------------------------------------------------------------
def hand_made() -> dict:
    """Two pages, rows deliberately out of order: page 7 has 3 tiles, page 3 has 2.

    Logging: page 7 tiles 1/2, 1/4, 1/2 (page 1/16); page 3 tiles 1/3, 1/3 (page 1/9).
    Target:  page 7 tiles 1, 1/2, 1/4;             page 3 tiles 2/3, 1/2.
    """
    return dict(
        slate_id=np.array([7, 3, 7, 3, 7]), position=np.array([2, 1, 0, 0, 1]),
        reward=np.array([1.0, 0.0, 1.0, 1.0, 0.0]),
        pscore=np.array([1 / 16, 1 / 9, 1 / 16, 1 / 9, 1 / 16]),
        pscore_item_position=np.array([1 / 2, 1 / 3, 1 / 2, 1 / 3, 1 / 4]),
        pscore_cascade=np.array([1 / 16, 1 / 9, 1 / 2, 1 / 3, 1 / 8]),
        evaluation_policy_pscore=np.array([1 / 8, 1 / 3, 1 / 8, 1 / 3, 1 / 8]),
        evaluation_policy_pscore_item_position=np.array([1 / 4, 1 / 2, 1.0, 2 / 3, 1 / 2]),
        evaluation_policy_pscore_cascade=np.array([1 / 8, 1 / 3, 1.0, 2 / 3, 1 / 2]),
        action=np.array([1, 0, 0, 1, 0]),
        q_hat=np.array([[0.5, 0.1], [0.2, 0.2], [0.3, 0.9], [0.4, 0.6], [0.0, 1.0]]),
        evaluation_policy_action_dist=np.array([[0.75, 0.25], [0.5, 0.5], [1.0, 0.0], [1 / 3, 2 / 3],
                                                [0.5, 0.5]]))


# Worked by hand. Page 7: rewards at positions 0 and 2; page 3: reward at position 0.
HAND_VALUES = {
    # page weights 2 and 3: (2*1 + 2*1 + 3*1) / 2
    "sips": (2 + 2 + 3) / 2,
    # tile weights: p7 pos0 2, pos2 1/2; p3 pos0 2
    "iips": (2 + 0.5 + 2) / 2,
    # cascade weights: p7 pos0 2, pos2 2; p3 pos0 2
    "rips": (2 + 2 + 2) / 2,
    # page 7: (2+2+0.5 - 2) * 2 rewards = 5; page 3: (2 + 1.5 - 1) * 1 = 2.5
    "pi": (5 + 2.5) / 2,
}


@pytest.mark.parametrize("name", sorted(HAND_VALUES))
def test_closed_forms_on_hand_made_pages(name):
    assert build_slate_estimator(name).estimate_policy_value(**hand_made()) == pytest.approx(HAND_VALUES[name])


def test_cascade_dr_on_hand_made_pages():
    # Rows of page 7 in position order: (w_prev, w, r, q(a), sum_a pi q):
    #   pos0: (1, 2, 1, 0.3, 0.3), pos1: (2, 4, 0, 0.0, 0.5), pos2: (4, 2, 1, 0.1, 0.4)
    page7 = (2 * (1 - 0.3) + 1 * 0.3) + (4 * (0 - 0.0) + 2 * 0.5) + (2 * (1 - 0.1) + 4 * 0.4)
    # page 3: pos0: (1, 2, 1, 0.6, 1/3*0.4 + 2/3*0.6), pos1: (2, 3, 0, 0.2, 0.2)
    page3 = (2 * (1 - 0.6) + (0.4 / 3 + 1.2 / 3)) + (3 * (0 - 0.2) + 2 * 0.2)
    got = build_slate_estimator("cascade-dr").estimate_policy_value(**hand_made())
    assert got == pytest.approx((page7 + page3) / 2)


def test_cascade_dr_with_a_zero_q_function_is_rips():
    log = {**hand_made(), "q_hat": np.zeros((5, 2))}
    assert (build_slate_estimator("cascade-dr").estimate_policy_value(**log)
            == pytest.approx(HAND_VALUES["rips"]))


def test_obp_flat_q_hat_layout_is_accepted():
    log = hand_made()
    flat = {**log, "q_hat": log["q_hat"].ravel(),
            "evaluation_policy_action_dist": log["evaluation_policy_action_dist"].ravel()}
    e = build_slate_estimator("cascade-dr")
    assert e.estimate_policy_value(**flat) == e.estimate_policy_value(**log)


# ---- the contract and unbiasedness ------------------------------------------------------------------
def test_registry_lists_the_built_ins_in_table_order():
    assert SLATE_ESTIMATORS.names() == list(SLATE_ESTIMATOR_NAMES)


@pytest.mark.parametrize("name", SLATE_ESTIMATOR_NAMES)
def test_built_in_slate_estimators_pass_the_conformance_check(name):
    check_slate_estimator(name)


class LoggedPageMean(SlateEstimator):
    """Ignores the target: the mean logged page reward (biased whenever the target differs)."""

    name = "logged_mean"

    def _estimate_round_rewards(self, data):
        return data.reward


def test_the_conformance_check_catches_a_biased_estimator():
    with pytest.raises(AssertionError, match="biased under the independent model"):
        check_slate_estimator(LoggedPageMean, n_seeds=60)


def test_per_tile_ips_is_biased_when_tiles_compete_and_slate_ips_is_not():
    """Cascade pages (the member stops at the first success): an attractive image early lowers
    the chance that later tiles are reached. iips (per-tile IPS summed) credits each tile as if
    the earlier tiles were the logger's; its bias has a closed form."""
    n_logs = 300
    errors = {e: np.empty(n_logs) for e in ("sips", "iips", "rips", "cascade-dr")}
    for s in range(n_logs):
        log, truth = make_slate_problem(np.random.default_rng([5, s]), 300, model="cascade")
        for e in errors:
            errors[e][s] = build_slate_estimator(e).estimate_policy_value(**log) - truth
    # The default problem: q, logger uniform, target 0.6 on each slot's best artwork.
    L = K = 3
    q = 0.05 + 0.6 * ((np.arange(L)[:, None] + np.arange(K)[None, :]) % K) / (K - 1)
    target = np.full((L, K), 0.2)
    target[np.arange(L), q.argmax(axis=1)] = 0.6
    eq_target, eq_logger = (target * q).sum(axis=1), q.mean(axis=1)
    reach = lambda eq: np.r_[1.0, np.cumprod(1 - eq)[:-1]]  # noqa: E731
    iips_bias = float(((reach(eq_logger) - reach(eq_target)) * eq_target).sum())
    assert iips_bias > 0.1
    for e, err in errors.items():
        se = err.std(ddof=1) / math.sqrt(n_logs)
        expected = iips_bias if e == "iips" else 0.0
        assert abs(err.mean() - expected) < 4 * se, (e, err.mean(), expected, se)
    assert errors["iips"].mean() > 10 * errors["iips"].std(ddof=1) / math.sqrt(n_logs)


def test_estimate_slates_shares_page_resamples_and_skips_what_a_target_cannot_feed():
    log, _ = make_slate_problem(np.random.default_rng(1), 200)
    targets = {"with q": {k: log.pop(k) for k in list(log) if k.startswith("evaluation") or k == "q_hat"}}
    targets["no q"] = {k: v for k, v in targets["with q"].items()
                       if k not in ("q_hat", "evaluation_policy_action_dist")}
    log.pop("action")
    targets["with q"]["action"] = make_slate_problem(np.random.default_rng(1), 200)[0]["action"]
    res = estimate_slates(log, targets, rng=np.random.default_rng(0), n_bootstrap=100)
    assert list(res["with q"]) == list(SLATE_ESTIMATOR_NAMES)
    assert "cascade-dr" not in res["no q"]
    for e in res["no q"]:
        assert res["no q"][e].value == res["with q"][e].value
        assert res["no q"][e].ci_low <= res["no q"][e].value <= res["no q"][e].ci_high
    # Same resamples for every (target, estimator): identical terms give identical intervals.
    assert res["no q"]["sips"] == res["with q"]["sips"]


# ---- refusals ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(pscore=np.r_[d["pscore"][:4], 0.5]), "same on every row of a slate"),
    (lambda d: d.update(pscore_cascade=d["pscore_item_position"] * np.r_[1, 1, 1, 1, 4]),
     "cannot grow along a slate"),
    (lambda d: d.update(position=np.array([2, 1, 0, 0, 0])), "must be unique"),
    (lambda d: d.update(pscore_item_position=np.r_[0.0, d["pscore_item_position"][1:]]), "in (0, 1]"),
    (lambda d: d.update(reward=np.r_[np.nan, d["reward"][1:]]), "reward has 1 non-finite"),
    (lambda d: d.update(slate_id=d["slate_id"].astype(float)), "slate_id must be integers"),
    (lambda d: d.update(reward=d["reward"][:4]), "reward must have shape (5,)"),
    (lambda d: d.update(q_hat=d["q_hat"][:, :1]), "must have the same shape"),
    (lambda d: d.update(evaluation_policy_action_dist=d["evaluation_policy_action_dist"] * 2),
     "summing to 1"),
    (lambda d: d.pop("q_hat"), "missing: q_hat"),
])
def test_malformed_slate_inputs_are_refused_with_a_clear_message(edit, message):
    log = hand_made()
    edit(log)
    # Every given array is validated, whichever estimator reads it.
    with pytest.raises(ValueError, match=re.escape(message)):
        build_slate_estimator("cascade-dr").estimate_policy_value(**log)


def test_a_missing_input_is_named_with_the_estimator():
    log = hand_made()
    del log["evaluation_policy_pscore_cascade"]
    with pytest.raises(ValueError, match="'rips' needs .*missing: evaluation_policy_pscore_cascade"):
        build_slate_estimator("rips").estimate_policy_value(**log)
    with pytest.raises(ConfigError, match="rips"):
        build_slate_estimator("ripps")


# ---- page propensities and truth from a simulator run ------------------------------------------------
def small_page_run(directory, cells, response: str, **response_params):
    """A one-day run of ``cells`` on pages of at most 2 x 3 tiles under ``response``."""
    cfg = tiny_run_config(tuple(c if isinstance(c, str) else c["name"] for c in cells))
    cfg["experiment"]["cells"] = [
        {"name": c if isinstance(c, str) else c["name"], "share": 1 / len(cells),
         "policy": {"name": c} if isinstance(c, str) else c["policy"]} for c in cells]
    cfg["world"]["response"] = {"name": response, **response_params}
    cfg["ranker"] = {"name": "learned", "rows": 2, "columns": 3}
    run_experiment(cfg, directory)
    return directory


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Uniform, epsilon-greedy-like and lints cells, independent response model."""
    explore = {"name": "explore", "policy": {"name": "explore", "epsilon": 0.5, "base": {"name": "thompson"}}}
    return small_page_run(tmp_path_factory.mktemp("slate") / "run", ["uniform", explore, "lints"], "independent")


@pytest.mark.parametrize("cell", ["uniform", "explore"])
def test_page_propensities_are_the_products_of_the_logged_tile_pscores(run, cell):
    log = read_impressions(run, cell=cell)
    shuffled = log.sample(frac=1.0, random_state=0)
    slate = slate_feedback_from_log(shuffled)
    # Independent computation: pandas' cumulative product per visit in (row, column) order.
    by_hand = shuffled.sort_values(["visit", "row", "column"])
    cum = by_hand.groupby("visit")["pscore"].cumprod().to_numpy()
    page = by_hand.groupby("visit")["pscore"].transform("prod").to_numpy()
    assert np.array_equal(slate["slate_id"], by_hand["visit"].to_numpy())
    np.testing.assert_allclose(slate["pscore_cascade"], cum, rtol=1e-12)
    np.testing.assert_allclose(slate["pscore"], page, rtol=1e-12)
    assert np.array_equal(shuffled["pscore"].to_numpy()[slate["order"]], slate["pscore_item_position"])
    again = page_propensities(shuffled["visit"].to_numpy(), shuffled["row"].to_numpy(),
                              shuffled["column"].to_numpy(), shuffled["pscore"].to_numpy())
    np.testing.assert_allclose(again["pscore_cascade"][slate["order"]], cum, rtol=1e-12)
    if cell == "uniform":
        np.testing.assert_allclose(slate["pscore_item_position"], 1.0 / by_hand["n_candidates"], rtol=1e-12)


def test_a_log_with_one_posterior_draw_per_page_is_refused(run):
    with pytest.raises(LogValidationError, match="'policy'.*lints.*one posterior draw per page"):
        slate_feedback_from_log(read_impressions(run, cell="lints"))


def test_cascade_products_match_a_per_page_loop():
    rng = np.random.default_rng(0)
    sid = np.sort(rng.integers(0, 30, 200))
    p = rng.uniform(0.1, 1.0, 200)
    expected = np.concatenate([np.cumprod(p[sid == s]) for s in np.unique(sid)])
    np.testing.assert_array_equal(cascade_products(sid, p), expected)


def test_on_policy_slate_estimates_on_a_run_are_its_mean_page_reward(run):
    log = read_impressions(run, cell="explore")
    slate = slate_feedback_from_log(log)
    logged = {k: slate[k] for k in ("slate_id", "position", "reward", "pscore", "pscore_item_position",
                                    "pscore_cascade")}
    target = {"evaluation_policy_" + k: slate[k] for k in ("pscore", "pscore_item_position", "pscore_cascade")}
    res = estimate_slates(logged, {"logger": target}, estimators=["sips", "iips", "rips", "pi"])
    mean_page = log.groupby("visit")["reward"].sum().mean()
    for e in res["logger"].values():
        assert e.value == pytest.approx(mean_page, rel=1e-9)


def test_page_truth_matches_the_closed_form_of_the_independent_model(run):
    log = read_impressions(run, cell="uniform")
    slate = slate_feedback_from_log(log)
    world = run_world(run_config(run))
    data = from_log(log.iloc[slate["order"]].reset_index(drop=True), world.catalog, read_visit_contexts(run))
    page = np.unique(slate["slate_id"], return_inverse=True)[1]
    oracle = target_probabilities(build_target({"name": "oracle"}, world.catalog, response=world.response),
                                  data.decisions)
    uniform = data.decisions.mask / data.decisions.mask.sum(axis=1, keepdims=True)
    probs = 0.5 * oracle + 0.5 * uniform
    per_page, se = page_truth(world.response, data.decisions, page, probs, np.random.default_rng(3), 100)
    exact = independent_page_values(true_rewards(world.response, data.decisions), probs, page)
    assert per_page.shape == exact.shape and se > 0
    assert abs(per_page.mean() - exact.mean()) < 4 * se
    tg = target_slate_pscores(slate["slate_id"], probs, slate["action"])
    assert np.all(tg["evaluation_policy_pscore_cascade"] <= tg["evaluation_policy_pscore_item_position"] + 1e-15)


def logged_pages(run_dir, cell="uniform"):
    """(world, decisions in reading order, page index (n,), slate arrays) of one cell."""
    log = read_impressions(run_dir, cell=cell)
    slate = slate_feedback_from_log(log)
    world = run_world(run_config(run_dir))
    data = from_log(log.iloc[slate["order"]].reset_index(drop=True), world.catalog, read_visit_contexts(run_dir))
    return world, data.decisions, np.unique(slate["slate_id"], return_inverse=True)[1], slate


@pytest.mark.slow
@pytest.mark.skipif("session" not in RESPONSE_MODELS, reason="no session response model")
def test_under_sessions_per_tile_ips_is_biased_and_reward_interaction_ips_is_not(tmp_path):
    """Members scan the page and stop at their first quality play: the cascade assumption holds
    (a tile's outcome depends on the tiles read before it, never after), per-tile independence
    does not. Logs redrawn on the same pages are independent; the truth is simulated. Members
    here open tiles often (detail-view intercept -2 instead of -4.3), so that on these small
    pages most sessions end in a play and tiles compete hard."""
    world, d, page, slate = logged_pages(small_page_run(tmp_path / "run", ["uniform"], "session",
                                                        session_click_intercept=-2.0))
    oracle = target_probabilities(build_target({"name": "oracle"}, world.catalog, response=world.response), d)
    logger = d.mask / d.mask.sum(axis=1, keepdims=True)
    target = 0.5 * oracle + 0.5 * logger
    rng = np.random.default_rng(11)
    per_page, truth_se = page_truth(world.response, d, page, target, rng, 400)
    assert per_page.max() <= 1.0          # at most one quality play per session
    truth = per_page.mean()
    n_logs = 150
    errors = {"iips": np.empty(n_logs), "rips": np.empty(n_logs), "sips": np.empty(n_logs)}
    for i in range(n_logs):
        action = sample_actions(logger, rng)
        reward = draw_pages(world.response, d, page, action, rng)
        tile = logger[np.arange(page.size), action]
        cascade = cascade_products(page, tile)
        logged = {"slate_id": page, "position": slate["position"], "reward": reward, "pscore": page_last(page, cascade),
                  "pscore_item_position": tile, "pscore_cascade": cascade}
        res = estimate_slates(logged, {"t": target_slate_pscores(page, target, action)}, estimators=list(errors))
        for e in errors:
            errors[e][i] = res["t"][e].value - truth
    se = {e: math.hypot(err.std(ddof=1) / math.sqrt(n_logs), truth_se) for e, err in errors.items()}
    assert abs(errors["rips"].mean()) < 4 * se["rips"], (errors["rips"].mean(), se["rips"])
    assert abs(errors["sips"].mean()) < 4 * se["sips"], (errors["sips"].mean(), se["sips"])
    # Per-tile IPS credits each tile as if the earlier tiles were the logger's: better images
    # early end more sessions, which it does not see, so it overstates the target.
    assert errors["iips"].mean() > 5 * se["iips"], (errors["iips"].mean(), se["iips"])


class ProductRIPS(SlateEstimator):
    """The README's example: rips from per-tile probabilities only."""

    name = "product_rips"
    requires = ("pscore_item_position", "evaluation_policy_pscore_item_position")
    assumption = "cascade"

    def _estimate_round_rewards(self, data):
        w = data.evaluation_policy_pscore_item_position / data.pscore_item_position
        return cascade_products(data.slate, w) * data.reward


def test_a_user_slate_estimator_passes_the_check_and_runs_by_import_path():
    check_slate_estimator(ProductRIPS, n_seeds=100)
    log = hand_made()
    res = estimate_slates({k: log[k] for k in ("slate_id", "position", "reward", "pscore_item_position")},
                          {"t": {"evaluation_policy_pscore_item_position": log["evaluation_policy_pscore_item_position"]}},
                          estimators=["tests.ope.test_slate.ProductRIPS", "iips"])
    # Independent logging in the hand-made pages: the product of tile weights is the cascade weight.
    assert res["t"]["product_rips"].value == pytest.approx(HAND_VALUES["rips"])
    assert res["t"]["iips"].value == pytest.approx(HAND_VALUES["iips"])


def test_weight_second_moments_in_closed_form_and_by_simulation():
    # Page 0: two tiles of 2 images; logger uniform; target (1, 0) then (0.5, 0.5).
    # Page 1: one tile of 3 images (the 4th column is padding); target (0.5, 0.5, 0).
    sid = np.array([0, 0, 1])
    logger = np.array([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [1 / 3, 1 / 3, 1 / 3, 0]])
    target = np.array([[1.0, 0, 0, 0], [0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0]])
    m2 = weight_second_moments(sid, logger, target)
    np.testing.assert_allclose(m2["iips"], [2.0, 1.0, 1.5])
    np.testing.assert_allclose(m2["rips"], [2.0, 2.0, 1.5])
    np.testing.assert_allclose(m2["sips"], [2.0, 2.0, 1.5])
    # By simulation: the mean squared page weight of page 0 under the logger.
    rng = np.random.default_rng(0)
    a = np.stack([sample_actions(np.repeat(logger[:2], 1, axis=0), rng) for _ in range(20_000)])
    w = (target[[0, 1], a] / logger[[0, 1], a]).prod(axis=1)
    assert abs((w ** 2).mean() - 2.0) < 4 * (w ** 2).std() / math.sqrt(w.size)
