"""Chaney et al.'s homogenization (sim.bias) and the feedback-loop arms over the same members
(experiments.analyses.feedback_loop_arms, configs/experiment/feedback_loop_arms.yaml)."""
from __future__ import annotations

import csv

import numpy as np
import pyarrow.parquet as pq
import pytest

from experiments.analyses.feedback_loop import analyze
from experiments.analyses.feedback_loop_arms import arm_label, check_same_visits, load_arm
from sim.bias import homogenization_change, nearest_partner, pair_jaccard, random_partner
from sim.ope.runs import run_config
from sim.runner import run_experiment
from sim.streams import generator
from tests.conftest import tiny_world


# ---- the measure on hand-built cases ------------------------------------------------------------
SETS = np.array([[1, 1, 0, 0, 0],       # member 0: {0, 1}
                 [1, 1, 1, 0, 0],       # member 1: {0, 1, 2}
                 [0, 0, 0, 1, 1],       # member 2: {3, 4}
                 [0, 0, 0, 0, 0]], bool)  # member 3: nothing


def test_pair_jaccard_hand_values():
    j = pair_jaccard(SETS, np.array([1, 2, 0, 3]))
    # |{0,1}∩{0,1,2}| / |∪| = 2/3; {0,1,2} vs {3,4}: 0/5; {3,4} vs {0,1}: 0/4; nothing vs nothing: undefined
    np.testing.assert_allclose(j[:3], [2 / 3, 0.0, 0.0])
    assert np.isnan(j[3])
    # a member with nothing against a member with something: 0, not undefined
    assert pair_jaccard(SETS, np.array([3, 0, 1, 0]))[3] == 0.0


def test_nearest_partner_is_the_most_cosine_similar_other_member():
    rep = np.array([[1.0, 0.0, 0.0],
                    [0.9, 0.1, 0.0],      # closest to 0 (cos 0.994) ahead of 2 (cos 0.707)
                    [1.0, 1.0, 0.0],
                    [0.0, 0.0, 5.0]])     # orthogonal to 0, 1, 2: every cosine 0 -> lowest index
    np.testing.assert_array_equal(nearest_partner(rep), [1, 0, 1, 0])
    np.testing.assert_array_equal(nearest_partner(rep, chunk=1), [1, 0, 1, 0])   # chunking changes nothing
    with pytest.raises(ValueError, match="at least 2 members, got 1"):
        nearest_partner(rep[:1])


def test_random_partner_is_never_oneself_and_fixed_by_its_stream():
    p = random_partner(1000, generator(3, "homogenization-partner"))
    assert (p != np.arange(1000)).all() and p.min() >= 0 and p.max() < 1000
    np.testing.assert_array_equal(p, random_partner(1000, generator(3, "homogenization-partner")))
    # uniform over the other 999: about 1000 / e members are nobody's partner (SE ~ 13)
    assert abs((np.bincount(p, minlength=1000) == 0).sum() - 1000 * (1 - 1 / 999) ** 1000) < 4 * 13


def test_homogenization_change_against_the_same_pairs_under_the_ideal_recommender():
    ideal = SETS
    arm = np.array([[1, 1, 0, 0, 0],      # 0: {0, 1}
                    [1, 1, 0, 0, 0],      # 1: {0, 1}     (pair 0-1: 1 under the arm, 2/3 ideal)
                    [1, 0, 0, 1, 0],      # 2: {0, 3}     (pair 2-0: 1/3 under the arm, 0 ideal)
                    [0, 0, 0, 0, 0]], bool)
    partner = np.array([1, 0, 0, 3])      # pair 3-3 is empty under both: left out
    h = homogenization_change(arm, ideal, partner)
    assert h["pairs"] == 3
    assert h["jaccard"] == pytest.approx((1 + 1 + 1 / 3) / 3)
    assert h["ideal_jaccard"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert h["change"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 3) / 3)
    # the ideal recommender against itself: no change
    assert homogenization_change(ideal, ideal, partner)["change"] == 0.0


# ---- the same members and visits under every arm ---------------------------------------------------
def _arm_config(ranker: dict, seed: int = 0, policy: str = "fixed") -> dict:
    return {"seed": seed, "world": tiny_world(n_members=120, n_titles=20),
            "engine": {"days": 1.0, "progress": False, "ranker_retrain_hours": 8},
            "ranker": {"rows": 3, "columns": 4, **ranker}, "policy": {"name": policy},
            "experiment": {"name": "feedback_loop_arms", "control": policy,
                           "cells": [{"name": policy, "share": 1.0, "policy": {"name": policy}}]}}


def _visits(run_dir) -> tuple[np.ndarray, ...]:
    t = pq.read_table(run_dir / "visit_context", columns=["visit", "member", "time"])
    order = np.argsort(t.column("visit").to_numpy())
    return tuple(t.column(c).to_numpy()[order] for c in ("visit", "member", "time"))


@pytest.fixture(scope="module")
def arm_runs(tmp_path_factory):
    """Three arms of seed 0 and the oracle arm of seed 1, one day on a tiny world (~3 s)."""
    root = tmp_path_factory.mktemp("arms")
    runs = {}
    for name, ranker, seed in (("oracle", {"name": "oracle"}, 0), ("popularity", {"name": "popularity"}, 0),
                               ("learned", {"name": "learned"}, 0), ("oracle_seed1", {"name": "oracle"}, 1)):
        run_experiment(_arm_config(ranker, seed), root / name)
        runs[name] = root / name
    return runs


def test_arms_share_members_and_visits(arm_runs):
    """Common random numbers: every arm of a seed has the identical visit log (ids, members,
    times) though the pages differ; another seed has other visits."""
    oracle = _visits(arm_runs["oracle"])
    assert oracle[0].size > 100
    for arm in ("popularity", "learned"):
        for a, b in zip(oracle, _visits(arm_runs[arm])):
            np.testing.assert_array_equal(a, b)
    titles = [pq.read_table(arm_runs[a] / "logs", columns=["title"]).column("title").to_numpy()
              for a in ("oracle", "popularity")]
    assert titles[0].size != titles[1].size or (titles[0] != titles[1]).any()    # the arms did differ
    other = _visits(arm_runs["oracle_seed1"])
    assert other[1].size != oracle[1].size or (other[1] != oracle[1]).any()
    with pytest.raises(SystemExit, match="different visit logs"):
        check_same_visits([load_arm(arm_runs["oracle"]), load_arm(arm_runs["oracle_seed1"])])


def test_arm_labels_name_the_ranker_variant():
    from sim.config import experiment_config_from_dict

    def label(ranker):
        return arm_label(experiment_config_from_dict(_arm_config(ranker)))
    assert label({"name": "learned", "retrain": "once"}) == "once.fixed"
    assert label({"name": "learned", "exploration_share": 0.1, "correction": "ipw"}) == "ipw.fixed"
    assert label({"name": "random"}) == "random.fixed"
    assert label({"_target_": "sim.homepage.RandomRanker"}) == "RandomRanker.fixed"


def test_arms_analysis_at_tiny_size(arm_runs, tmp_path):
    """The sweep analysis pairs members across the arm runs of each seed: the oracle arm's change
    is 0 by construction, each arm pairs as its ranker represents members, and the tables and the
    chart are written."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    for name in ("oracle", "popularity", "learned"):
        (sweep / name).symlink_to(arm_runs[name], target_is_directory=True)
    out = analyze(sweep)
    assert (sweep / "charts" / "feedback_loop_homogenization.png") in out
    rows = list(csv.DictReader(open(sweep / "feedback_loop_arms_summary.csv")))
    by = {r["arm"]: r for r in rows}
    assert set(by) == {"oracle.fixed", "popularity.fixed", "learned.fixed"}
    assert float(by["oracle.fixed"]["chaney"]) == 0.0
    assert {by[a]["pairing"] for a in by} == {"taste", "none", "affinity"}
    for r in rows:
        j, ideal = float(r["jaccard"]), float(r["ideal_jaccard"])
        assert float(r["chaney"]) == pytest.approx(j - ideal)
        assert 0.0 <= ideal <= 1.0 and 0.0 <= j <= 1.0
    ordering = list(csv.DictReader(open(sweep / "feedback_loop_arms_ordering.csv")))
    assert [(o["measure"], o["claim"]) for o in ordering] == [
        (m, "popularity.fixed > learned.fixed") for m in ("chaney", "random_pairs", "played_nn")]
    # on the fixed random pairs the popularity arm is paired as Chaney pairs it
    assert float(by["popularity.fixed"]["random_pairs"]) == pytest.approx(float(by["popularity.fixed"]["chaney"]))
    assert run_config(arm_runs["oracle"]).cells[0].name == "fixed"
