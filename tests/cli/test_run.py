"""A run directory end to end: files, metrics, logs, determinism, charts and the CLIs."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

import sim
import sim.logs
from sim.runner import run_experiment
from tests.conftest import cli

CELLS = ["uniform", "fixed", "oracle", "thompson"]
COLUMNS = 8


def documented_log_columns() -> set[str]:
    """The column list in sim/logs.py's docstring (the block after ``vocabulary::``)."""
    block = sim.logs.__doc__.split("::", 1)[1].split("\n\n")[1]
    return {name.strip() for name in block.split(",")}


def baselines_config(seed: int = 0, **engine) -> dict:
    """configs/experiment/baselines.yaml on a 300-member, 40-title world for one day (visits
    raised to 2 a day so that every cell has quality plays and every lift an interval)."""
    return {
        "seed": seed,
        "world": {"name": "tiny", "n_members": 300, "n_titles": 40, "n_genres": 8,
                  "artworks_min": 2, "artworks_max": 6, "history_length": 16,
                  "visits_per_day": 2.0},
        "engine": {"days": 1, "progress": False, **engine},
        "ranker": {"name": "learned", "rows": 10, "columns": COLUMNS},
        "policy": {"name": "thompson"},
        "experiment": {"name": "baselines", "control": "uniform",
                       "cells": [{"name": c, "share": 0.25, "policy": {"name": c}} for c in CELLS]},
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run directory, returned summary) of one tiny baselines run (seed 0)."""
    out = tmp_path_factory.mktemp("baselines") / "run"
    return out, run_experiment(baselines_config(), out)


@pytest.fixture(scope="module")
def metrics(run):
    return json.loads((run[0] / "metrics.json").read_text())


@pytest.fixture(scope="module")
def log(run):
    return pd.read_parquet(run[0] / "logs")


# ---- the run directory ------------------------------------------------------------------------
def test_run_directory_holds_every_output(run):
    out, _ = run
    for name in ("config.yaml", "metrics.json", "timeseries.csv", "run_info.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert sorted((out / "logs").glob("part-*.parquet"))
    assert yaml.safe_load((out / "config.yaml").read_text()) == baselines_config()
    assert not list(out.rglob("*.tmp"))


def test_metrics_json_is_complete(run, metrics):
    _, returned = run
    assert metrics == json.loads(json.dumps(returned))
    assert metrics["complete"] is True
    assert metrics["package_version"] == sim.__version__
    # metrics.json keeps the config minus how the run executed (config.yaml has all of it).
    given = baselines_config()
    assert metrics["seed"] == 0 and metrics["config"] == {
        **given, "engine": {k: v for k, v in given["engine"].items() if k != "progress"}}
    assert metrics["experiment"] == "baselines" and metrics["control"] == "uniform"
    assert sorted(metrics["cells"]) == sorted(CELLS)
    assert metrics["impressions"] == sum(c["impressions"] for c in metrics["cells"].values()) > 0
    for name, cell in metrics["cells"].items():
        tf = cell["take_fraction"]
        assert tf["ci_low"] <= tf["estimate"] <= tf["ci_high"], name
        assert tf["estimate"] == pytest.approx(cell["quality_plays"] / cell["impressions"])
        assert tf["se"] > 0
    assert metrics["cells"]["oracle"]["expected_regret"] == pytest.approx(0.0, abs=1e-9)
    assert set(metrics["lift"]) == set(CELLS) - {"uniform"}
    for name, lift in metrics["lift"].items():
        for metric in ("ctr", "play_rate", "take_fraction", "minutes_per_member"):
            m = lift[metric]
            assert None not in m.values(), (name, metric, m)
            assert m["ci_low"] <= m["estimate"] <= m["ci_high"], (name, metric)
            assert 0.0 <= m["p_value"] <= 1.0, (name, metric)
    assert metrics["propensity_estimated"] == {"uniform": False, "fixed": False, "oracle": False,
                                               "thompson": True}


def test_run_info(run, metrics):
    info = json.loads((run[0] / "run_info.json").read_text())
    assert info["impressions"] == info["log_rows"] == metrics["impressions"]
    assert info["visits"] == metrics["visits"] > 0
    assert info["simulated_days"] == 1 and info["wall_seconds"] > 0
    assert info["final_model_version"]["thompson"] >= 1   # retrained every 6 h within the day


def test_timeseries_has_one_row_per_bucket_and_cell(run, metrics):
    with open(run[0] / "timeseries.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    n_buckets = 24 // 6   # one day at the default snapshot_hours = 6
    assert len(rows) == n_buckets * len(CELLS)
    assert sorted({(float(r["hour"]), r["cell"]) for r in rows}) == sorted(
        (6.0 * (b + 1), c) for b in range(n_buckets) for c in CELLS)
    for c in CELLS:
        mine = [r for r in rows if r["cell"] == c]
        assert sum(float(r["impressions"]) for r in mine) == metrics["cells"][c]["impressions"]
        assert sum(float(r["quality_plays"]) for r in mine) == metrics["cells"][c]["quality_plays"]


# ---- the impression log -------------------------------------------------------------------------
def test_log_reads_in_one_call_with_documented_columns(log, metrics):
    documented = documented_log_columns()
    assert {"action", "pscore", "position", "reward", "quality_play", "cell"} <= documented
    assert documented == set(sim.logs.NUMERIC_COLUMNS) | set(sim.logs.LABEL_COLUMNS)
    assert set(log.columns) == documented
    assert len(log) == metrics["impressions"]
    counts = log["cell"].astype(str).value_counts().to_dict()
    assert counts == {c: metrics["cells"][c]["impressions"] for c in CELLS}
    assert (log["policy"].astype(str) == log["cell"].astype(str)).all()


def test_log_propensities(log):
    assert ((log["pscore"] > 0) & (log["pscore"] <= 1)).all()
    assert (log["action"] >= 0).all() and (log["action"] < log["n_candidates"]).all()
    uniform = log[log["cell"] == "uniform"]
    assert len(uniform) and (uniform["pscore"] == 1.0 / uniform["n_candidates"]).all()
    fixed = log[log["cell"] == "fixed"]
    assert len(fixed) and (fixed["action"] == 0).all() and (fixed["pscore"] == 1.0).all()


def test_log_outcomes_and_positions_are_consistent(log):
    assert (~log["reward"] | log["quality_play"]).all()
    assert (~log["quality_play"] | log["play"]).all() and (~log["play"] | log["click"]).all()
    assert (log["position"] == log["row"].astype(int) * COLUMNS + log["column"]).all()
    assert (log["column"] < COLUMNS).all() and (log["row"] < 10).all()
    assert log["n_candidates"].between(2, 6).all()


# ---- determinism ----------------------------------------------------------------------------------
def test_same_seed_gives_identical_results(run, log, tmp_path):
    out, _ = run
    again = tmp_path / "again"
    run_experiment(baselines_config(), again)
    assert (again / "metrics.json").read_bytes() == (out / "metrics.json").read_bytes()
    assert (again / "timeseries.csv").read_bytes() == (out / "timeseries.csv").read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(again / "logs"), log)


def test_other_seed_gives_different_results(run, tmp_path):
    other = tmp_path / "other"
    run_experiment(baselines_config(seed=1), other)
    a = json.loads((run[0] / "metrics.json").read_text())
    b = json.loads((other / "metrics.json").read_text())
    assert b["seed"] == 1
    assert a["cells"] != b["cells"] and a["impressions"] != b["impressions"]


def test_small_log_chunks_write_several_parts_with_the_same_rows(log, tmp_path):
    out = tmp_path / "chunked"
    run_experiment(baselines_config(log_chunk_rows=500), out)
    parts = sorted((out / "logs").glob("part-*.parquet"))
    assert len(parts) >= 3
    assert not list(out.rglob("*.tmp"))
    assert sum(len(pd.read_parquet(p)) for p in parts) == len(log)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "logs"), log)


def test_plot_cli_refuses_a_directory_that_is_not_a_run(tmp_path):
    # Its charts of a run: the plot command's main() in tests/experiments/test_plot_report.py,
    # the command itself in the README test.
    (tmp_path / "not_a_run").mkdir()
    bad = cli("experiments.plot", str(tmp_path / "not_a_run"))
    assert bad.returncode != 0
    assert "not a run directory (no metrics.json)" in bad.stderr
    assert "Traceback" not in bad.stderr


# ---- the run CLI ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_run_cli_runs_then_skips_a_completed_directory(tmp_path):
    out = tmp_path / "cli"
    args = ("experiments.run", "world=tiny", "engine.days=0.5", "engine.progress=false",
            f"hydra.run.dir={out}")
    done = cli(*args, "engine.charts=false")
    assert done.returncode == 0, done.stderr
    assert f"results: {out}/metrics.json" in done.stdout and "charts:  not drawn (engine.charts=false" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] is True and sorted(metrics["cells"]) == sorted(CELLS)
    assert "charts" not in metrics["config"]["engine"]          # an execution key, as progress
    assert not (out / "charts").exists()
    before = (out / "metrics.json").read_bytes()
    # Complete: skipped. (A skipped run draws the charts it lacks: checked by the sweep re-run
    # in tests/experiments/test_workflow.py and the chart-drawing kill in test_interruption.py.)
    again = cli(*args, "engine.charts=false")
    assert again.returncode == 0, again.stderr
    assert "skipping" in again.stdout and "results:" not in again.stdout
    assert (out / "metrics.json").read_bytes() == before


def test_run_cli_refuses_a_bad_override_cleanly(tmp_path):
    out = tmp_path / "bad"
    done = cli("experiments.run", "world=tiny", "world.n_members=-1", "engine.progress=false",
               f"hydra.run.dir={out}")
    assert done.returncode != 0
    assert "world.n_members" in done.stderr and "-1" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not list(tmp_path.rglob("metrics.json")) and not list(tmp_path.rglob("*.parquet"))


def test_run_cli_refusal_keeps_files_it_did_not_write(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    done = cli("experiments.run", "world=tiny", "world.n_members=-1", f"hydra.run.dir={out}")
    assert done.returncode != 0
    assert (out / "notes.txt").read_text() == "keep me"
