"""Degenerate worlds and extreme settings: every run finishes, metrics.json is strict JSON with
no NaN or inf, and every null in it is explained under ``undefined`` (see :mod:`sim.outputs`).

Each case runs through :func:`sim.runner.run_experiment` on a 60-member, 12-title world for one
simulated day with ten policies side by side (about 0.2 s a case).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from sim.config import WorldConfig
from sim.policies import build_policy
from sim.runner import run_experiment
from sim.streams import generator
from sim.testing import make_decision_batch, make_feedback
from sim.world import build_world
from tests.conftest import tiny_config, tiny_world




def same_artworks() -> dict:
    """Every artwork of a title has the same click, play and quality probabilities: no appeal
    spread, no clickbait, no theme effect and no representativeness effect (sim/world/response.py)."""
    return {"appeal_sd": 0.0, "clickbait_appeal": 0.0, "theme_weight": 0.0,
            "play_representativeness_weight": 0.0, "quality_representativeness_weight": 0.0}


CASES = {
    "one_member": tiny_config(world=tiny_world(n_members=1)),
    "one_title": tiny_config(world=tiny_world(n_titles=1)),
    "one_artwork_per_title": tiny_config(world=tiny_world(artworks_min=1, artworks_max=1)),
    "no_visits": tiny_config(world=tiny_world(visits_per_day=1e-6)),
    "almost_no_visits": tiny_config(world=tiny_world(visits_per_day=0.05)),
    "epsilon_0": tiny_config(["uniform", "epsilon_greedy"], params={"epsilon_greedy": {"epsilon": 0.0}}),
    "epsilon_1": tiny_config(["uniform", "epsilon_greedy"], params={"epsilon_greedy": {"epsilon": 1.0}}),
    "identical_artworks": tiny_config(world=tiny_world(response=same_artworks())),
    "no_history": tiny_config(world=tiny_world(initial_plays=0.0)),
    "retrain_longer_than_run": tiny_config(engine={"retrain_hours": 1000, "ranker_retrain_hours": 1000}),
    "never_updating_policies": tiny_config(["uniform", "fixed"]),
    "every_title_launches_later": tiny_config(world=tiny_world(launch_share=1.0)),
    "clicks_almost_never": tiny_config(world=tiny_world(response={"click_intercept": -20.0})),
    "clicks_almost_always": tiny_config(world=tiny_world(response={"click_intercept": 20.0})),
    "tiny_propensities": tiny_config(
        ["uniform", "epsilon_greedy", "softmax"], world=tiny_world(artworks_min=64, artworks_max=64),
        params={"epsilon_greedy": {"epsilon": 1e-9}, "softmax": {"temperature": 1e-9}}),
    "one_genre": tiny_config(world=tiny_world(n_genres=1)),
    "reference_engine": tiny_config(world=tiny_world(n_members=20), engine={"mode": "reference"}),
}


def null_paths(obj, path=""):
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in null_paths(v, f"{path}.{k}" if path else k)]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in null_paths(v, f"{path}[{i}]")]
    return [path] if obj is None else []


@pytest.fixture(scope="module", params=list(CASES))
def edge_run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param) / "run"
    run_experiment(CASES[request.param], out)
    return request.param, out


def test_metrics_are_strict_json_and_every_null_is_explained(edge_run):
    name, out = edge_run
    text = (out / "metrics.json").read_text()
    m = json.loads(text, parse_constant=lambda c: pytest.fail(f"{name}: {c} in metrics.json"))
    assert m["complete"] is True
    undefined = m["undefined"]
    for path in null_paths(m):
        if path == "git_commit" or path.startswith("config."):
            continue
        assert any(path == k or path.startswith(k + ".") for k in undefined), (name, path)
    assert all(isinstance(why, str) and why for why in undefined.values())
    for cell in m["cells"].values():
        for key in ("ctr", "play_rate", "take_fraction"):
            est = cell[key]["estimate"]
            assert est is None or 0.0 <= est <= 1.0
        assert cell["expected_regret"] >= -1e-6     # nothing beats the oracle's choice


def test_logged_propensities_are_positive_probabilities(edge_run):
    name, out = edge_run
    if not any((out / "logs").glob("*.parquet")):
        assert json.loads((out / "metrics.json").read_text())["impressions"] == 0
        return
    log = pd.read_parquet(out / "logs")
    assert (log.pscore > 0).all() and (log.pscore <= 1).all(), name
    assert np.isfinite(log.expected_take).all()


def test_case_specific_numbers():
    """A few cases whose numbers are known exactly."""
    runs = {}
    for name in ("no_visits", "epsilon_1", "identical_artworks", "one_artwork_per_title"):
        runs[name] = CASES[name]
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        res = {n: run_experiment(c, Path(d) / n) for n, c in runs.items()}
        logs = {n: pd.read_parquet(Path(d) / n / "logs") for n in res if res[n]["impressions"]}
    # No visits: no impressions; rates are undefined (null), not 0.
    assert res["no_visits"]["impressions"] == 0
    assert all(math.isnan(c["take_fraction"]["estimate"]) for c in res["no_visits"]["cells"].values())
    # epsilon = 1 is uniform: propensity 1/K exactly.
    eg = logs["epsilon_1"].query("cell == 'epsilon_greedy'")
    np.testing.assert_allclose(eg.pscore, 1.0 / eg.n_candidates)
    # Identical artworks: the oracle cannot beat uniform choice -- no regret anywhere.
    for c in res["identical_artworks"]["cells"].values():
        assert abs(c["regret_per_1k_impressions"]) < 1e-6
    # One artwork per title: every policy shows it with propensity 1.
    assert (logs["one_artwork_per_title"].pscore == 1.0).all()


def test_tiny_propensities_stay_positive():
    """epsilon_greedy with 64 artworks and epsilon 1e-9 logs propensities ~1.6e-11 for explored
    images (never 0: no clipping needed); softmax with temperature 1e-9 is greedy (propensity 1
    or a tie share)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        run_experiment(CASES["tiny_propensities"], Path(d) / "r")
        log = pd.read_parquet(Path(d) / "r" / "logs")
    assert (log.pscore > 0).all()
    assert log.query("cell == 'epsilon_greedy'").pscore.min() >= 1e-9 / 64 * (1 - 1e-9)


LINEAR = [{"name": "lints"}, {"name": "lints", "mode": "shared"}, {"name": "linucb"},
          {"name": "linucb", "mode": "disjoint"}, {"name": "logistic_ts"},
          {"name": "linear_epsilon_greedy"}, {"name": "linear_softmax"}]


@pytest.mark.parametrize("spec", LINEAR, ids=lambda s: "-".join(map(str, s.values())))
def test_singular_gram_matrix_is_refused_with_a_clear_error(spec):
    """Constant features and l2 = 1e-12: a singular Gram matrix. Each linear policy refuses it
    with a FloatingPointError naming itself and the fix, instead of serving noise."""
    world = build_world(WorldConfig(n_members=50, n_titles=10, n_genres=3, artworks_min=2,
                                    artworks_max=4), 0, 1440)
    batch = make_decision_batch(world.catalog, 2000, generator(0, "edge", 1), n_members=50)
    batch.context[:] = batch.context[0]
    policy = build_policy({**spec, "l2": 1e-12})
    policy.reset(world.catalog)
    feedback = make_feedback(batch, policy.select(batch, generator(0, "edge", 2)), generator(0, "edge", 3))
    with pytest.raises(FloatingPointError, match=f"{spec['name']}.*increase the policy's l2"):
        for _ in range(3):
            policy.update(policy.sufficient_stats(feedback))
    # The default regularisation handles the same data.
    policy = build_policy(dict(spec))
    policy.reset(world.catalog)
    for _ in range(3):
        policy.update(policy.sufficient_stats(feedback))
    probs = policy.probabilities(batch)
    assert np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1.0)


def test_a_refused_gram_matrix_stops_the_run_before_metrics_are_written(tmp_path):
    config = tiny_config(["uniform", "lints"], params={"lints": {"l2": 1e-12, "mode": "shared"}})
    with pytest.raises(FloatingPointError, match="lints"):
        run_experiment(config, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()
