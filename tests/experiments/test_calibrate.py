"""Calibration distances (sim.calibration), the click-model fit to logs (sim.fit_log) and the
``experiments.calibrate`` command: generated logs in the OBD and native layouts, expected values
worked out by hand or set by the generator, never taken from the code under test."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sim.bias import gini, lorenz
from sim.calibration import cooccurrence_distance, depth_matched, interaction_table, ks_distance
from sim.fit_log import _click_log, fit_clicks, read_click_log
from tests.conftest import REPO

# ---- distances ---------------------------------------------------------------------------------------


def test_ks_distance_by_hand():
    assert ks_distance([1, 2, 3], [3, 2, 1]) == 0.0
    assert ks_distance([0, 0], [1, 1]) == 1.0
    assert ks_distance([1, 2, 3, 4], [3, 4, 5, 6]) == 0.5


def test_gini_and_lorenz_by_hand():
    assert gini([5, 5, 5, 5]) == pytest.approx(0.0)
    assert gini([0, 0, 0, 8]) == pytest.approx(0.75)          # 1 - 1/n for all on one of n
    assert gini([1, 3]) == pytest.approx(0.25)                 # area: (0.5 * 0.25 + 0.5 * 1.25) / 2
    x, y = lorenz([3, 1])
    np.testing.assert_allclose(y, [0, 0.25, 1.0])
    np.testing.assert_allclose(x, [0, 0.5, 1.0])


def test_depth_matched_keeps_that_many_of_each_members_own():
    member = np.array([0, 0, 0, 0, 1, 1, 2])
    title = np.array([1, 2, 3, 4, 5, 6, 7])
    m, t = depth_matched(member, title, np.array([2, 5, 0]), np.random.default_rng(0))
    assert np.bincount(m, minlength=3).tolist() == [2, 2, 0]
    assert set(t[m == 0]) <= {1, 2, 3, 4} and set(t[m == 1]) == {5, 6}


def test_interaction_table_zero_for_identical_and_flags_a_shifted_genre():
    rng = np.random.default_rng(1)
    genres = ("a", "b", "c")
    title_genres = np.eye(3)[np.arange(30) % 3]
    member, title = rng.integers(0, 200, 4000), rng.integers(0, 30, 4000)
    same = interaction_table((member, title), (member, title), title_genres, 200, genres)
    assert all(r["distance"] == pytest.approx(0.0, abs=1e-12) for r in same)
    assert all(r["met"] in (True, None) for r in same)
    # Simulated members play only genre-a titles: every member's share of a is 1 (real ~1/3).
    shifted = interaction_table((member, title), (member, title - title % 3), title_genres, 200, genres)
    ks = {r["genre"]: r["distance"] for r in shifted if r["measure"] == "genre share KS"}
    assert ks["a"] == 1.0 and shifted[0]["met"] is False


def test_cooccurrence_distance_sees_a_reversed_correlation():
    rng = np.random.default_rng(2)
    a = rng.dirichlet([1, 1, 1, 1], size=2000)
    b = a[:, [0, 1, 2, 3]].copy()
    assert cooccurrence_distance(a, b) == pytest.approx(0.0, abs=1e-9)
    c = np.column_stack([a[:, 0] + a[:, 1], a[:, 0] + a[:, 1], a[:, 2], a[:, 3]])   # genres 0, 1 move together
    assert cooccurrence_distance(a, c) > 0.5


# ---- the click fit -------------------------------------------------------------------------------------
TRUE = {"base": -2.0, "row": 0.6, "column": 0.9}


def generated_log(n=60_000, n_items=12, seed=0, rows=3, columns=4):
    rng = np.random.default_rng(seed)
    effect = np.linspace(-0.8, 0.8, n_items)
    item, row, col = rng.integers(0, n_items, n), rng.integers(0, rows, n), rng.integers(0, columns, n)
    p = (row + 1.0) ** -TRUE["row"] * (col + 1.0) ** -TRUE["column"] / (1 + np.exp(-(TRUE["base"] + effect[item])))
    return item, row, col, (rng.random(n) < p).astype(int), effect


def test_fit_recovers_the_generating_parameters():
    item, row, col, click, effect = generated_log()
    fit = fit_clicks(_click_log(item, row, col, click, "generated"), item_prior_sd=10.0)
    assert fit.row_identified
    # Item effects are centred at 0 here, so the base rate is identified as the generator's.
    for value, se, truth in ((fit.base_logit, fit.base_logit_se, TRUE["base"]),
                             (fit.row_exponent, fit.row_exponent_se, TRUE["row"]),
                             (fit.column_exponent, fit.column_exponent_se, TRUE["column"])):
        assert abs(value - truth) < 3.5 * se, (value, se, truth)
    z = (fit.item_effect - effect) / fit.item_effect_se
    assert np.mean(np.abs(z) < 3.5) >= 11 / 12


def test_fit_with_one_position_axis_leaves_the_row_exponent_unidentified():
    item, _, col, click, _ = generated_log(rows=1)
    fit = fit_clicks(_click_log(item, np.zeros_like(col), col, click, "generated"))
    assert not fit.row_identified and np.isnan(fit.row_exponent_se)
    assert fit.row_exponent == fit.column_exponent
    assert abs(fit.column_exponent - TRUE["column"]) < 3.5 * fit.column_exponent_se


def write_obd(path: Path, item, col, click) -> Path:
    n = item.size
    pd.DataFrame({"timestamp": pd.date_range("2019-11-24", periods=n, freq="s", tz="UTC").astype(str),
                  "item_id": item, "position": col + 1, "click": click, "propensity_score": 0.0125,
                  "user_feature_0": "a", "user-item_affinity_0": 0.0}).to_csv(path)
    return path


def test_obd_and_native_layouts_give_the_same_fit(tmp_path):
    item, _, col, click, _ = generated_log(n=8000, rows=1, columns=3)
    obd = read_click_log(write_obd(tmp_path / "obd.csv", item, col, click))
    pd.DataFrame({"action": item, "position": col, "reward": click, "pscore": 0.0125}).to_csv(
        tmp_path / "native.csv", index=False)
    native = read_click_log(tmp_path / "native.csv")
    a, b = fit_clicks(obd), fit_clicks(native)
    assert obd.layout == "Open Bandit Dataset" and native.layout == "native bandit feedback"
    assert (a.n_impressions, a.n_clicks) == (8000, int(click.sum()))
    np.testing.assert_allclose([a.base_logit, a.column_exponent], [b.base_logit, b.column_exponent], rtol=1e-6)


def test_calibrate_logs_writes_a_world_the_simulator_reproduces(tmp_path):
    """The command fits, writes world/<name>.yaml + world/response/<name>.yaml, and the
    simulator's response model built from those files gives the fitted click rates; Hydra composes
    them with the documented override."""
    item, _, col, click, _ = generated_log(n=6000, n_items=15, rows=1, columns=3)
    log = write_obd(tmp_path / "log.csv", item, col, click)
    out = tmp_path / "out"
    from experiments.calibrate import main   # in-process: the command line minus a Python start
    assert main(["--logs", str(log), "--out", str(out), "--name", "mine"]) == 0
    items = pd.read_csv(out / "calibration_items.csv")
    np.testing.assert_allclose(items["simulator_rate"], items["fitted_rate"], rtol=1e-5)
    assert items["impressions"].sum() == 6000 and items["clicks"].sum() == click.sum()
    positions = pd.read_csv(out / "calibration_positions.csv")
    logged = [click[col == c].mean() for c in range(3)]
    np.testing.assert_allclose(positions["logged_rate"], logged)
    assert (out / "calibration.png").stat().st_size > 10_000
    response = yaml.safe_load((out / "world/response/mine.yaml").read_text())
    assert response["name"] == "independent" and response["fit_weight"] == 0.0

    from hydra import compose, initialize_config_dir
    from sim.config import experiment_config_from_dict
    import experiments.config_store  # noqa: F401  (registers the schema)
    from omegaconf import OmegaConf
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra.searchpath=[file://{out}]", "world=mine",
                                           "world/response=mine"])
    exp = experiment_config_from_dict(OmegaConf.to_container(cfg, resolve=True))
    assert exp.world.n_titles == 15 and exp.world.response.name == "independent"
    assert exp.world.response.params.click_intercept == pytest.approx(response["click_intercept"])


def test_calibrate_without_data_says_what_to_run(tmp_path, monkeypatch, capsys):
    if importlib.util.find_spec("obp") is not None:
        pytest.skip("obp is installed here, so the sample is always found")
    from experiments.calibrate import main
    monkeypatch.setenv("HOMEPAGE_SIM_CACHE", str(tmp_path / "empty"))
    assert main(["--data", "obd", "--out", str(tmp_path)]) == 2
    assert f"pip download --no-deps obp -d {tmp_path / 'empty'}" in capsys.readouterr().err


def test_calibrate_refuses_a_log_without_the_columns_it_needs(tmp_path, capsys):
    from experiments.calibrate import main
    pd.DataFrame({"item": [1, 2], "clicked": [0, 1]}).to_csv(tmp_path / "bad.csv", index=False)
    assert main(["--logs", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "out")]) == 2
    assert "action" in capsys.readouterr().err


def _real_obp_cache() -> Path:
    cache = Path(os.environ.get("HOMEPAGE_SIM_TEST_CACHE", Path(tempfile.gettempdir()) / "homepage-sim-cache"))
    if not sorted(cache.glob("obp-*.whl")):
        try:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "obp", "-d", str(cache)],
                           capture_output=True, timeout=90, check=True)
        except (subprocess.SubprocessError, OSError) as err:
            pytest.skip(f"the obp wheel could not be fetched ({type(err).__name__}): no network or index")
    return cache


@pytest.mark.slow
def test_obd_sample_from_the_real_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv("HOMEPAGE_SIM_CACHE", str(_real_obp_cache()))
    from experiments.calibrate import find_obd

    csv = find_obd(tmp_path)
    raw = pd.read_csv(csv)
    fit = fit_clicks(read_click_log(csv))
    assert (fit.n_impressions, fit.n_clicks) == (len(raw), int(raw["click"].sum()))
    assert sorted(raw["position"].unique()) == [1, 2, 3]


def test_wilson_interval_by_hand():
    from sim.fit_log import wilson_interval
    lo, hi = wilson_interval(0, 100)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(1.959964 ** 2 / (100 + 1.959964 ** 2))
    lo, hi = wilson_interval(50, 100)
    assert (lo + hi) / 2 == pytest.approx(0.5) and hi - lo == pytest.approx(2 * 0.09617, abs=2e-4)   # 2 z sqrt(.25/100 + z²/4e4) / (1 + z²/100)
