"""The experimentation workflow: cell allocation, the ranker-scope switch, A/A calibration of the
reported p-values, power/MDE, and command-line sweeps with the joblib launcher (parallel jobs,
stable directory names, resume, failures)."""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as st

from sim.config import ConfigError, experiment_config_from_dict
from sim.engine import Simulation, allocate_cells
from sim.metrics import lift_interval, ratio_estimate
from sim.power import PlannedTest, design_effect, mde_from_standard_errors, pilot_icc
from tests.conftest import SWEEP_ARGS, SWEEP_RUNS, assert_readable_png, cli

REPO = Path(__file__).resolve().parents[2]


# ---- allocation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("shares", [(0.5, 0.5), (0.25, 0.25, 0.25, 0.25), (0.1, 0.3, 0.6),
                                    (0.02, 0.98), (0.2,) * 5])
@pytest.mark.parametrize("salt", ["baselines", "shared_ranker", "exp-7"])
def test_allocation_is_balanced(shares, salt):
    n = 50_000
    cells = allocate_cells(n, list(shares), salt)
    observed = np.bincount(cells, minlength=len(shares))
    # A p-value under 0.001 would be a 1-in-1000 event for a fair hash (15 cases: ~1.5 %).
    assert st.chisquare(observed, n * np.asarray(shares)).pvalue > 1e-3, observed


def test_allocation_is_stable():
    a = allocate_cells(10_000, [0.5, 0.5], "exp")
    assert np.array_equal(a, allocate_cells(10_000, [0.5, 0.5], "exp"))       # same call, same cells
    assert np.array_equal(a[:3_000], allocate_cells(3_000, [0.5, 0.5], "exp"))  # independent of n
    other = allocate_cells(10_000, [0.5, 0.5], "another experiment")
    assert 0.45 < (a != other).mean() < 0.55                                    # re-randomised by name
    # Growing a cell moves members only from the neighbouring cell, never shuffles the rest.
    grown = allocate_cells(10_000, [0.6, 0.4], "exp")
    assert np.all(grown[a == 0] == 0)


# ---- ranker scope ---------------------------------------------------------------------------------
def two_cell_config(seed: int = 0, scope: str | None = None, policy: str = "uniform", **engine) -> dict:
    experiment = {"name": "aa", "control": "a", "cells": [
        {"name": "a", "share": 0.5, "policy": {"name": "uniform"}},
        {"name": "b", "share": 0.5, "policy": {"name": policy}}]}
    if scope is not None:
        experiment["ranker_scope"] = scope
    return {"seed": seed,
            "world": {"name": "tiny", "n_members": 400, "n_titles": 40, "n_genres": 8, "artworks_min": 2,
                      "artworks_max": 6, "history_length": 16, "visits_per_day": 2.0},
            # A 60-minute serving window keeps these runs cheap (models still retrain every 6 h).
            "engine": {"days": 1, "progress": False, "log_impressions": False, "track_regret": False,
                       "window_minutes": 60, **engine},
            "experiment": experiment}


def test_ranker_scope_is_validated():
    assert experiment_config_from_dict(two_cell_config()).ranker_scope == "shared"
    with pytest.raises(ConfigError) as info:
        experiment_config_from_dict(two_cell_config(scope="global"))
    assert info.value.key == "experiment.ranker_scope" and "shared, per_cell" in str(info.value)


def test_per_cell_scope_gives_each_cell_its_own_ranker_trained_on_its_own_logs():
    cfg = two_cell_config(scope="per_cell", ranker_retrain_hours=8)
    cfg["experiment"]["cells"][1]["ranker"] = {"name": "popularity"}   # an explicit ranker stays
    sim = Simulation(experiment_config_from_dict(cfg))
    sim.run()
    a, b = (c.ranker for c in sim.cells)
    assert a.name == "learned" and b.name == "popularity" and a is not b
    assert a.version_ >= 1 and b.version_ >= 1                  # both retrained ...
    assert sim.shared_ranker.version_ == 0                      # ... and the shared one never served
    shared = Simulation(experiment_config_from_dict(two_cell_config(scope="shared", ranker_retrain_hours=8)))
    shared.run()
    assert all(c.ranker is None for c in shared.cells) and shared.shared_ranker.version_ >= 1


@pytest.mark.parametrize("scope", ["shared", "per_cell"])
def test_shared_ranker_experiment_composes(scope):
    import hydra

    from experiments.run import CONFIG_DIR, config_to_dict

    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = hydra.compose("config", overrides=["experiment=shared_ranker",
                                                 f"experiment.ranker_scope={scope}"])
    exp = experiment_config_from_dict(config_to_dict(cfg))
    assert [(c.name, c.share, c.policy["name"]) for c in exp.cells] == [("uniform", 0.5, "uniform"),
                                                                         ("oracle", 0.5, "oracle")]
    assert exp.ranker.name == "popularity" and exp.control == "uniform" and exp.ranker_scope == scope
    assert all((c.ranker is None) == (scope == "shared") for c in exp.cells)


# ---- A/A: the reported p-values have the nominal false-positive rate --------------------------------
@pytest.mark.slow
def test_aa_false_positive_rate_is_nominal():
    """40 tiny A/A runs (two identical uniform cells, different seeds): the number of p < 0.05
    per metric must be plausible under Binomial(40, 0.05) (P(more than 7) = 0.0007)."""
    n_runs, alpha = 40, 0.05
    p_values = {m: [] for m in ("ctr", "play_rate", "take_fraction", "minutes_per_member")}
    for seed in range(n_runs):
        cfg = two_cell_config(seed=1000 + seed)
        summary = Simulation(experiment_config_from_dict(cfg)).run()
        for m in p_values:
            p_values[m].append(summary["lift"]["b"][m]["p_value"])
    limit = st.binom.ppf(0.999, n_runs, alpha)
    for m, ps in p_values.items():
        ps = np.asarray(ps, dtype=float)
        assert np.isfinite(ps).all(), m
        assert (ps < alpha).sum() <= limit, (m, np.sort(ps)[:8])
        assert st.kstest(ps, "uniform").pvalue > 1e-3, m    # and p-values look uniform overall


def test_delta_method_standard_error_matches_the_spread_of_the_ratio():
    """Clustered synthetic data (member rates ~ Beta, Poisson impressions): the delta-method
    standard error of the ratio agrees with its spread over 2,000 replicates, and the 95 %
    lift interval covers a true lift of zero about 95 % of the time."""
    rng = np.random.default_rng(7)
    reps, members, a, b = 2000, 400, 0.4, 19.6           # mean rate 2 %, icc = 1 / (a + b + 1)
    def draw():
        n = rng.poisson(60, size=(reps, members)) + 1
        y = rng.binomial(n, rng.beta(a, b, size=(reps, members)))
        return y, n
    y0, n0 = draw()
    y1, n1 = draw()
    r = y0.sum(1) / n0.sum(1)
    ses = np.array([ratio_estimate(y0[i], n0[i])[1] for i in range(reps)])
    assert ses.mean() / r.std(ddof=1) == pytest.approx(1.0, abs=0.06)
    covered = []
    for i in range(reps):
        lift = lift_interval(*ratio_estimate(y1[i], n1[i]), *ratio_estimate(y0[i], n0[i]))
        covered.append(lift["ci_low"] <= 0.0 <= lift["ci_high"])
    assert np.mean(covered) == pytest.approx(0.95, abs=3 * math.sqrt(0.05 * 0.95 / reps))


# ---- power / MDE ----------------------------------------------------------------------------------
def test_mde_matches_the_closed_form_on_a_hand_case():
    # 2 % baseline, 10,000 members per cell, one impression each: the textbook two-proportion case.
    test = PlannedTest(baseline_rate=0.02, members=20_000, impressions_per_member=1)
    z = st.norm.ppf(0.975) + st.norm.ppf(0.8)
    se_log = math.sqrt(2 * (1 - 0.02) / (0.02 * 10_000))
    assert test.se_log_lift() == pytest.approx(se_log)
    assert test.mde() == pytest.approx(math.exp(z * se_log) - 1)
    assert test.mde() == pytest.approx(0.3196, abs=1e-4)
    assert test.power_at(test.mde()) == pytest.approx(0.8, abs=1e-3)   # the far tail adds < 0.1 %
    assert test.members_for(test.mde()) == pytest.approx(20_000)
    assert test.power_at(0.0) == pytest.approx(0.05)


def test_mde_shrinks_with_the_square_root_of_members():
    base = PlannedTest(0.016, 20_000, 250, icc=0.05)
    for k in (4, 16, 100):
        bigger = PlannedTest(0.016, 20_000 * k, 250, icc=0.05)
        assert math.log1p(bigger.mde()) == pytest.approx(math.log1p(base.mde()) / math.sqrt(k))
    # Clustering: with icc > 0, doubling the duration helps much less than doubling the members.
    longer = PlannedTest(0.016, 20_000, 500, icc=0.05)
    wider = PlannedTest(0.016, 40_000, 250, icc=0.05)
    assert wider.mde() < longer.mde() < base.mde()
    assert PlannedTest(0.016, 20_000, 250, icc=0.0).mde() < base.mde()
    # A 90/10 split needs more members than 50/50 for the same MDE.
    assert PlannedTest(0.016, 20_000, 250, 0.05, treatment_share=0.1).mde() > base.mde()


def test_pilot_icc_round_trip_and_simulated_power():
    """A pilot's design effect gives back its icc; and a test at the MDE (clustered synthetic data
    analysed with sim.metrics) is detected about 80 % of the time."""
    deff, icc = pilot_icc(rate=0.02, se=0.0008, impressions=500_000, members=5_000)
    assert deff == pytest.approx(0.0008 ** 2 / (0.02 * 0.98 / 500_000))
    assert design_effect(icc, 100) == pytest.approx(deff)
    rng = np.random.default_rng(3)
    a, b, m, members = 0.4, 19.6, 40, 2_000           # icc = 1 / 21, mean rate 2 %
    test = PlannedTest(0.02, 2 * members, m, icc=1 / (a + b + 1))
    lift, reps = test.mde(), 600
    rejected = 0
    for _ in range(reps):
        y0 = rng.binomial(m, rng.beta(a, b, members))
        p1 = np.minimum(rng.beta(a, b, members) * (1 + lift), 1.0)
        y1 = rng.binomial(m, p1)
        n = np.full(members, m)
        rejected += lift_interval(*ratio_estimate(y1, n), *ratio_estimate(y0, n))["p_value"] < 0.05
    assert rejected / reps == pytest.approx(0.8, abs=3 * math.sqrt(0.8 * 0.2 / reps) + 0.02)


def test_mde_from_an_observed_test_scales_with_members():
    one = mde_from_standard_errors(0.016, 0.0004, 0.017, 0.0004)
    four = mde_from_standard_errors(0.016, 0.0004, 0.017, 0.0004, member_scale=4)
    assert math.log1p(four) == pytest.approx(math.log1p(one) / 2)
    with pytest.raises(ValueError, match="power must be in"):
        PlannedTest(0.02, 1000, 10, power=1.5)
    with pytest.raises(ValueError, match="baseline_rate must be in"):
        PlannedTest(0.0, 1000, 10)


def test_power_cli(capsys):
    from experiments.power import main

    main(["--baseline-rate", "0.02", "--members", "20000", "--impressions-per-member", "1", "--lift", "0.3"])
    out = capsys.readouterr().out
    assert "+31.96% relative lift" in out and "members needed" in out
    with pytest.raises(SystemExit) as info:
        main(["--members", "10"])
    assert "give --baseline-rate, --impressions-per-member" in str(info.value.code)


# ---- sweeps from the command line ----------------------------------------------------------------
def test_sweep_runs_every_job_in_parallel_into_stable_self_contained_directories(sweep):
    sweep_dir, done = sweep
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=-1" in done.stdout + done.stderr       # the joblib launcher ran them
    assert sorted(p.name for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()) == SWEEP_RUNS
    for name in SWEEP_RUNS:
        run = sweep_dir / name
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["complete"] is True
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["engine"]["retrain_hours"] == float(name.split("retrain_hours=")[1].split(",")[0])
        assert not (run / "charts").exists()        # engine.charts=false: the re-run test draws them
        assert sorted((run / "logs").glob("part-*.parquet"))
        assert not (run / "error.txt").exists()
    n = len(SWEEP_RUNS)
    assert f"sweep {sweep_dir}: {n} of {n} runs complete, 0 failed" in done.stdout
    assert f"charts:  not drawn (engine.charts=false; python -m experiments.plot {sweep_dir}" in done.stdout
    assert not (sweep_dir / "charts").exists()


@pytest.mark.slow
def test_rerunning_a_sweep_skips_complete_runs_and_redoes_an_interrupted_one_then_plot_and_report(sweep, capsys):
    sweep_dir, first = sweep
    assert first.returncode == 0, first.stderr[-3000:]
    before = {n: (sweep_dir / n / "metrics.json").read_bytes() for n in SWEEP_RUNS}
    # An interrupted run: its results were never marked complete.
    interrupted = sweep_dir / SWEEP_RUNS[0]
    (interrupted / "metrics.json").unlink()
    # Same sweep, overrides in another order and charts on (the shared sweep ran with
    # engine.charts=false, an execution key): the job directories are the same. In this process
    # (basic launcher): the sweep above ran on the joblib launcher, and starting its workers again
    # would only add time.
    again = cli("experiments.run", "-m", *reversed(SWEEP_ARGS), f"hydra.sweep.dir={sweep_dir}",
                "hydra/launcher=basic")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipping") == len(SWEEP_RUNS) - 1 and again.stdout.count("done ") == 1
    assert f"done {interrupted}:" in again.stdout
    after = {n: (sweep_dir / n / "metrics.json").read_bytes() for n in SWEEP_RUNS}
    assert after == before          # the re-done run reproduces its result exactly (same seed)
    # Every job's charts: drawn by the re-done run, and for the skipped complete runs, which
    # had none, by the re-run; then the sweep's own charts.
    for name in SWEEP_RUNS:
        assert len(list((sweep_dir / name / "charts").glob("*.png"))) == 10   # nine charts and the homepage picture
        assert (sweep_dir / name / "charts" / "DONE").is_file()
    assert (sweep_dir / "charts" / "sweep_engine.retrain_hours.png").stat().st_size > 10_000
    assert (sweep_dir / "sweep_summary.csv").is_file()
    # Then plot and report the sweep, as a user would (here, after the re-run, its jobs have their
    # charts: the plot redraws the sweep's own; plot_sweep drawing missing job charts is checked
    # in tests/experiments/test_plot_report.py). The commands' main() in this process: the README
    # test runs both commands on a sweep as typed.
    from experiments.plot import main as plot_main
    from experiments.report import main as report_main

    (sweep_dir / "sweep_summary.csv").unlink()
    for chart in (sweep_dir / "charts").glob("sweep_*.png"):
        chart.unlink()
    capsys.readouterr()
    plot_main([str(sweep_dir)])
    chart = sweep_dir / "charts" / "sweep_engine.retrain_hours.png"
    assert str(chart) in capsys.readouterr().out
    assert_readable_png(chart)
    with open(sweep_dir / "sweep_summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["run"] for r in rows) == SWEEP_RUNS
    assert {r["cell"] for r in rows} == {"thompson"}
    assert all(r["control"] == "uniform" and float(r["take_fraction"]) >= 0 for r in rows)
    report_main([str(sweep_dir)])
    text = (sweep_dir / "report.html").read_text()
    assert "engine.retrain_hours" in text and "data:image/png;base64," in text
    assert text.count("<tr>") >= 1 + len(SWEEP_RUNS)


BOOM = '''
from sim.policies import ArtworkPolicy


class Boom(ArtworkPolicy):
    name = "boom"

    def probabilities(self, batch):
        raise RuntimeError("boom: this policy always fails")
'''


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep_and_fails_it_at_the_end(tmp_path):
    (tmp_path / "boom_policy.py").write_text(BOOM)
    sweep = tmp_path / "sweep"
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    args = ("experiments.run", "-m", "world=tiny", "engine.days=0.25", "experiment=single",
            "policy=uniform", "+policy._target_=boom_policy.Boom,sim.policies.baselines.UniformPolicy",
            "world.n_members=50,-1", f"hydra.sweep.dir={sweep}", "engine.charts=false")
    # The joblib launcher with one job at a time, in the sweep's process (no worker start-up): a
    # job that raised out of its function would stop joblib's loop there as it stops the pool.
    done = cli(*args, "hydra.launcher.n_jobs=1", env_extra=env)
    assert done.returncode == 1, done.stdout + done.stderr
    jobs = {p.name: p for p in sweep.iterdir() if (p / ".hydra").is_dir()}
    assert len(jobs) == 4
    good = [n for n, p in jobs.items() if (p / "metrics.json").is_file()]
    assert len(good) == 1 and "UniformPolicy" in good[0] and "n_members=50" in good[0]
    crashed = next(p for n, p in jobs.items() if "Boom" in n and "n_members=50" in n)
    assert "RuntimeError: boom" in (crashed / "error.txt").read_text()
    refused = next(p for n, p in jobs.items() if "UniformPolicy" in n and "n_members=-1" in n)
    assert "world.n_members = -1 is not allowed" in (refused / "error.txt").read_text()
    assert "1 of 4 runs complete, 3 failed" in done.stdout
    assert done.stderr.count("FAILED  ") == 3 and "hydra.sweep.dir=" in done.stderr
    # Re-running retries only the failed jobs (which fail again) and keeps the complete one; in
    # this process (basic launcher), because worker start-up would only add time here.
    again = cli(*args, "hydra/launcher=basic", env_extra=env)
    assert again.returncode == 1 and again.stdout.count("skipping") == 1


def test_a_skipped_run_warns_when_its_saved_config_differs(tmp_path):
    from omegaconf import OmegaConf

    from experiments.run import config_drift

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "engine": {"days": 1}}))
    assert config_drift(OmegaConf.create({"seed": 0, "engine": {"days": 1}}), tmp_path) == ""
    warning = config_drift(OmegaConf.create({"seed": 0, "engine": {"days": 2}, "policy": {}}), tmp_path)
    assert "differs from the current config in engine.days, policy" in warning
    assert "delete the directory to re-run it" in warning
