"""Incrementality (sim.metrics.incrementality): lifts and the cannibalization share against
their true values on synthetic members, delta-method standard errors against the spread over
independent simulated experiments, and the per-member sums read from an impression log."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sim.metrics import Z95
from sim.metrics.incrementality import (cannibalization_share, incrementality, incrementality_section,
                                        linearize, member_sums)

TILES = 20          # impressions per visit
P_OTHER = 0.004     # quality plays per impression of titles the policy cannot change


def synthetic_arm(rng, n_members, take, moved):
    """Per-member sums of one arm: visits 1 + Poisson(2), TILES varied impressions per visit,
    varied quality plays Binomial(impressions, take); a share ``moved`` of them is taken from
    other titles of the page (the page loses one play elsewhere), and other plays arrive at
    P_OTHER per impression.

    True rates: b = take, a (per visit) = TILES * (take * (1 - moved) + P_OTHER),
    per member: 3 * a."""
    visits = 1 + rng.poisson(2.0, n_members)
    imps = TILES * visits
    varied_q = rng.binomial(imps, take)
    lost = rng.binomial(varied_q, moved)
    other = rng.binomial(imps, P_OTHER)
    return {"varied_impressions": imps.astype(float), "varied_quality_plays": varied_q.astype(float),
            "visits": visits.astype(float), "quality_plays": (varied_q - lost + other).astype(float)}


def true_values(take1, take0, moved1, moved0):
    a1, a0 = (TILES * (t * (1 - m) + P_OTHER) for t, m in ((take1, moved1), (take0, moved0)))
    return {"per_impression_lift": take1 / take0 - 1, "per_visit_lift": a1 / a0 - 1,
            "cannibalization_share": 1 - (a1 / a0 - 1) / (take1 / take0 - 1)}


def test_linearize_matches_ratio_estimate():
    from sim.metrics import ratio_estimate

    rng = np.random.default_rng(0)
    n = rng.poisson(30, 500).astype(float) + 1
    y = rng.binomial(n.astype(int), 0.05).astype(float)
    r, psi = linearize(y, n)
    r2, se2 = ratio_estimate(y, n)
    assert r == pytest.approx(r2, rel=1e-12)
    assert math.sqrt(psi.var(ddof=1) / psi.size) == pytest.approx(se2, rel=1e-9)


def test_estimates_and_intervals_against_many_simulated_experiments():
    """300 independent experiments (2000 members per arm): the estimates are centred on the
    truth, the delta-method standard errors equal the spread of the estimates, and 95 %
    intervals cover the truth 95 % of the time (tolerances from the Monte Carlo error)."""
    take1, take0, moved1, moved0 = 0.024, 0.02, 0.5, 0.1
    truth = true_values(take1, take0, moved1, moved0)
    R = 300
    est = {k: np.empty(R) for k in truth}
    se = np.empty(R)
    lift_cov = np.empty((R, 3))
    covered = {k: np.empty(R, bool) for k in truth}
    for i in range(R):
        rng = np.random.default_rng([7, i])
        out = incrementality(synthetic_arm(rng, 2000, take1, moved1), synthetic_arm(rng, 2000, take0, moved0))
        for k in truth:
            est[k][i] = out[k]["estimate"]
            covered[k][i] = out[k]["ci_low"] <= truth[k] <= out[k]["ci_high"]
        se[i] = out["cannibalization_share"]["se"]
        c = out["lift_covariance"]["visit"]
        lift_cov[i] = c["var_page"], c["var_impression"], c["cov"]
    # The lifts' delta-method (co)variances against their spread over the R experiments.
    empirical = np.cov(est["per_visit_lift"], est["per_impression_lift"])
    rel = 3 / math.sqrt(2 * (R - 1))
    for got, want in zip(lift_cov.mean(axis=0), (empirical[0, 0], empirical[1, 1], empirical[0, 1])):
        assert abs(got / want - 1) <= 2 * rel, f"delta (co)variance {got:.3g} vs spread {want:.3g}"
    for k in truth:
        sd = est[k].std(ddof=1)
        assert abs(est[k].mean() - truth[k]) <= 4 * sd / math.sqrt(R), f"{k} biased"
        cover_tol = 4 * math.sqrt(0.95 * 0.05 / R)
        assert abs(covered[k].mean() - 0.95) <= cover_tol, f"{k}: coverage {covered[k].mean():.3f}"
    # The SD of R estimates has relative standard error ~ 1 / sqrt(2 (R - 1)) (about 4 %).
    sd = est["cannibalization_share"].std(ddof=1)
    rel = 3 / math.sqrt(2 * (R - 1))
    print(f"delta-method SE {se.mean():.4f}, spread {sd:.4f}")
    assert abs(se.mean() / sd - 1) <= rel, f"delta-method SE {se.mean():.4f} vs spread {sd:.4f}"
    # Negative control: the same formula without the within-arm covariance of (a, b) is far off,
    # so the check above would catch an implementation that dropped it.
    rng = np.random.default_rng([7, 0])
    arms = synthetic_arm(rng, 2000, take1, moved1), synthetic_arm(rng, 2000, take0, moved0)
    covs, rates = [], []
    for arm in arms:
        (a, pa), (b, pb) = linearize(arm["quality_plays"], arm["visits"]), \
            linearize(arm["varied_quality_plays"], arm["varied_impressions"])
        rates.append((a, b))
        covs.append(np.diag([pa.var(ddof=1) / pa.size, pb.var(ddof=1) / pb.size]))
    no_cov = cannibalization_share(*rates[0], covs[0], *rates[1], covs[1])["se"]
    assert abs(no_cov / sd - 1) > 2 * rel, f"no-covariance SE {no_cov:.4f} vs spread {sd:.4f}"


def test_one_experiment_delta_se_matches_the_member_bootstrap():
    rng = np.random.default_rng(11)
    cell, control = synthetic_arm(rng, 3000, 0.026, 0.4), synthetic_arm(rng, 3000, 0.02, 0.0)
    out = incrementality(cell, control)
    B = 400
    boot = {k: np.empty(B) for k in ("cannibalization_share", "cannibalization_share_member")}
    for i in range(B):
        pick = [rng.integers(0, 3000, 3000) for _ in range(2)]
        res = incrementality({k: v[pick[0]] for k, v in cell.items()}, {k: v[pick[1]] for k, v in control.items()})
        for k in boot:
            boot[k][i] = res[k]["estimate"]
    for k in boot:
        rel = 4 / math.sqrt(2 * (B - 1))
        assert abs(out[k]["se"] / boot[k].std(ddof=1) - 1) <= rel, k
        assert out[k]["ci_high"] - out[k]["ci_low"] == pytest.approx(2 * Z95 * out[k]["se"])


def test_no_competition_means_no_cannibalization():
    """Plays only gained (moved = 0) and every title varied: C is 0 within its interval, and
    the per-visit lift is the per-impression lift diluted by the other titles' plays."""
    rng = np.random.default_rng(3)
    out = incrementality(synthetic_arm(rng, 20000, 0.03, 0.0), synthetic_arm(rng, 20000, 0.02, 0.0))
    truth = true_values(0.03, 0.02, 0.0, 0.0)
    c = out["cannibalization_share"]
    assert c["ci_low"] <= truth["cannibalization_share"] <= c["ci_high"]
    assert c["ci_high"] - c["ci_low"] < 0.3
    assert out["per_member_lift"]["ci_low"] <= truth["per_visit_lift"] <= out["per_member_lift"]["ci_high"]


def test_member_sums_from_impression_rows():
    member = np.array([5, 5, 5, 9, 9, 2])
    visit = np.array([1, 1, 2, 3, 3, 4])
    quality = np.array([1, 0, 1, 0, 1, 0], bool)
    n_cand = np.array([3, 1, 2, 1, 4, 2])
    s = member_sums(member, visit, quality, n_cand, n_members=5)
    # members in id order 2, 5, 9, then two without impressions
    assert s["visits"].tolist() == [1, 2, 1, 0, 0]
    assert s["quality_plays"].tolist() == [0, 2, 1, 0, 0]
    assert s["varied_impressions"].tolist() == [1, 2, 1, 0, 0]
    assert s["varied_quality_plays"].tolist() == [0, 2, 1, 0, 0]
    log = {"cell": np.array(["a", "a", "a", "b", "b", "b"]), "member": member, "visit": visit,
           "quality_play": quality, "n_candidates": n_cand}
    section = incrementality_section(log, "a", {"a": 1, "b": 2})
    assert list(section) == ["b"]
    assert section["b"]["rates"]["cell"]["members"] == 2
    assert section["b"]["rates"]["control"]["quality_plays_per_visit"]["estimate"] == pytest.approx(1.0)


def test_metrics_json_section_agrees_with_the_impression_log(tmp_path):
    """A tiny run: metrics.json's incrementality section (online per-member sums) equals the
    same computation from the Parquet log (every title has 2+ images here, so varied = all)."""
    import json

    from sim.logs import read_impressions
    from sim.runner import run_experiment
    from tests.conftest import tiny_config

    out = tmp_path / "run"
    run_experiment(tiny_config(["uniform", "oracle", "diverse_thompson"],
                               world={"name": "tiny", "n_members": 200, "n_titles": 12, "n_genres": 4,
                                      "artworks_min": 1, "artworks_max": 4, "history_length": 8,
                                      "visits_per_day": 3.0}, engine={"days": 0.5}), out)
    metrics = json.loads((out / "metrics.json").read_text())
    section = metrics["incrementality"]
    assert sorted(section) == ["diverse_thompson", "oracle"]
    log = {k: v.to_numpy() for k, v in read_impressions(
        out, ["cell", "member", "visit", "quality_play", "n_candidates"]).items()}
    assert (log["n_candidates"] == 1).any() and (log["n_candidates"] >= 2).any()
    members = {c: metrics["cells"][c]["members"] for c in metrics["cells"]}
    from_log = incrementality_section(log, metrics["control"], members)
    for cell in section:
        for key in ("per_impression_lift", "per_visit_lift", "per_member_lift"):
            assert section[cell][key]["estimate"] == pytest.approx(from_log[cell][key]["estimate"], rel=1e-9)
        for key in ("cannibalization_share", "cannibalization_share_member"):
            for f in ("estimate", "se"):
                assert section[cell][key][f] == pytest.approx(from_log[cell][key][f], rel=1e-6), (cell, key, f)


def test_experiment_config_composes_with_its_sweep_and_cells():
    from hydra import compose, initialize_config_dir

    from experiments import config_store  # noqa: F401
    from experiments.run import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=incrementality"], return_hydra_config=True)
    assert [c.name for c in cfg.experiment.cells] == ["uniform", "oracle", "thompson", "lints", "diverse_thompson"]
    assert cfg.experiment.control == "uniform" and list(cfg.experiment.analyses) == ["incrementality"]
    params = cfg.hydra.sweeper.params
    assert str(params["seed"]) == "0,1,2" and "world.response.name" in params


@pytest.mark.slow
def test_analysis_table_and_chart_of_two_runs(tmp_path):
    """Two tiny runs (two seeds) of the experiment's cells: the per-run rows are metrics.json's
    numbers, the summary averages the seeds with the combined interval, the chart is written."""
    import json

    from experiments.analyses import incrementality as analysis
    from sim.runner import run_experiment
    from tests.conftest import tiny_config

    for seed in (0, 1):
        cfg = tiny_config(["uniform", "oracle"], engine={"days": 0.5})
        cfg["seed"] = seed
        run_experiment(cfg, tmp_path / f"seed={seed}")
    paths = analysis.analyze(tmp_path)
    assert all(p.exists() for p in paths) and paths[-1].suffix == ".png"
    rows = analysis.run_rows(tmp_path / "seed=1")
    m = json.loads((tmp_path / "seed=1" / "metrics.json").read_text())["incrementality"]
    by = {r["cell"]: r for r in rows}
    assert by["oracle"]["per_visit_lift"] == m["oracle"]["per_visit_lift"]["estimate"]
    assert by["oracle"]["cannibalization_share_se"] == m["oracle"]["cannibalization_share"]["se"]
    all_rows = [r for d in ("seed=0", "seed=1") for r in analysis.run_rows(tmp_path / d)]
    summary = {s["cell"]: s for s in analysis.summarize(all_rows)}
    two = [r for r in all_rows if r["cell"] == "oracle"]
    assert summary["oracle"]["seeds"] == 2
    assert summary["oracle"]["per_impression_lift"] == pytest.approx(np.mean([r["per_impression_lift"] for r in two]))
    se = math.sqrt(sum(r["var_impression"] for r in two)) / 2
    assert summary["oracle"]["per_impression_lift_high"] == pytest.approx(
        summary["oracle"]["per_impression_lift"] + Z95 * se)
    # One run pooled is that run: the analysis's share formula (lifts and their covariance)
    # gives the metrics module's (gradient of the four rates) estimate and standard error.
    one = {s["cell"]: s for s in analysis.summarize(rows)}["oracle"]
    assert one["cannibalization_share"] == pytest.approx(m["oracle"]["cannibalization_share"]["estimate"], rel=1e-9)
    assert one["cannibalization_share_se"] == pytest.approx(m["oracle"]["cannibalization_share"]["se"], rel=1e-6)
    model = analysis.run_rows(tmp_path / "seed=0")[0]["response_model"]
    assert f"| {model} | oracle | 2 |" in (tmp_path / "incrementality.md").read_text()


def test_run_report_has_the_incrementality_table():
    from experiments.report import incrementality_blocks

    lift = {"estimate": 0.1, "ci_low": 0.05, "ci_high": 0.15, "p_value": 0.01}
    share = {"estimate": 0.25, "se": 0.1, "ci_low": 0.05, "ci_high": 0.45}
    m = {"control": "uniform", "incrementality": {"oracle": {
        "per_impression_lift": lift, "per_visit_lift": lift, "per_member_lift": lift, "cannibalization_share": share}}}
    heading, table = incrementality_blocks(m)
    assert "uniform" in heading.content
    header, rows = table.content
    assert rows == [["oracle", "+10.0% [+5.0%, +15.0%]", "+10.0% [+5.0%, +15.0%]", "+10.0% [+5.0%, +15.0%]",
                     "+25.0% [+5.0%, +45.0%]"]]
    assert incrementality_blocks({"control": "uniform"}) == []


def test_contrast_of_page_aware_and_plain_thompson_lifts():
    from experiments.analyses.incrementality import MEASURES, contrasts

    def row(cell, seed, lift, var):
        r = {"response_model": "session", "seed": seed, "cell": cell, "var_impression": var, "var_visit": var,
             "var_member": var, "cov_visit": 0.0, "cov_member": 0.0}
        r.update({k: lift for k in MEASURES})
        return r

    rows = [row("diverse_thompson", 0, 0.05, 1e-4), row("diverse_thompson", 1, 0.07, 1e-4),
            row("thompson", 0, 0.02, 4e-4), row("thompson", 1, 0.02, 4e-4), row("oracle", 0, 0.3, 1e-4)]
    (c,) = contrasts(rows)
    assert c["cell"] == "diverse_thompson - thompson" and c["seeds"] == 2
    assert c["per_visit_lift"] == pytest.approx(0.04)
    assert c["per_visit_lift_se"] == pytest.approx(math.sqrt(2e-4 / 4 + 8e-4 / 4))
    assert math.isnan(c["cannibalization_share"])
