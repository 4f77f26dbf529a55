"""Charts and reports: ``experiments.plot`` and ``experiments.report`` on a run and on sweeps
written without Hydra (the shared command-line sweep's plot and report: tests/experiments/
test_workflow.py), the homepage picture, member-clustered bands, and the sweep aggregation helpers."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from experiments.page_picture import choose_cell, find_page_pair
from experiments.plot import clustered_standard_errors, read_series
from experiments.plot import main as plot_main
from experiments.report import main as report_main
from experiments.report import write_report
from experiments.results import (aggregate, find_runs, load_run, paired_differences,
                                 swept_parameters)
from sim.config import experiment_config_from_dict
from sim.metrics import ratio_estimate
from sim.runner import run_experiment
from sim.world import build_world
from tests.conftest import assert_readable_png

CELLS = ["uniform", "fixed", "oracle", "thompson"]


def baselines_config(seed: int = 0) -> dict:
    """The baselines experiment on a 400-member, 40-title world for one day."""
    return {"seed": seed,
            "world": {"name": "tiny", "n_members": 400, "n_titles": 40, "n_genres": 8, "artworks_min": 2,
                      "artworks_max": 6, "history_length": 16, "visits_per_day": 2.0},
            "engine": {"days": 1, "progress": False},
            "policy": {"name": "thompson"},
            "experiment": {"name": "baselines", "control": "uniform",
                           "cells": [{"name": c, "share": 0.25, "policy": {"name": c}} for c in CELLS]}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    run_experiment(baselines_config(), out)
    return out


#: Every chart of a baselines run, in the order experiments.plot prints them.
RUN_CHARTS = ["ctr_over_time.png", "take_fraction_over_time.png", "visit_success_rate_over_time.png",
              "artwork_gain_over_time.png", "regret_per_1k_over_time.png", "cumulative_regret.png", "lift.png",
              "artwork_choice_share.png", "exposure_lorenz.png", "homepage.png"]


# ---- a run --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_plot_cli_on_a_run_writes_every_chart_and_the_homepage_picture(run_dir, capsys):
    plot_main([str(run_dir)])
    names = RUN_CHARTS
    assert [p.rsplit("/", 1)[-1] for p in capsys.readouterr().out.split()] == names
    for name in names:
        assert_readable_png(run_dir / "charts" / name)


def test_homepage_picture_shows_two_members_with_different_tastes_on_the_same_titles(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert choose_cell(metrics, metrics["config"]) == "oracle"
    assert choose_cell(metrics, metrics["config"], "thompson") == "thompson"
    assert choose_cell(metrics, metrics["config"], "missing") is None
    cfg = experiment_config_from_dict(metrics["config"])
    world = build_world(cfg.world, cfg.seed, cfg.engine.days * 1440, cfg.engine.member_block)
    pair = find_page_pair(run_dir, world, "oracle")
    assert pair is not None
    a, b = pair.members
    tastes = world.response.tastes
    assert a != b and tastes[a].argmax() != tastes[b].argmax()
    titles = [t for row in pair.grid for t in row]
    assert len(titles) >= 3 and len(set(titles)) == len(titles)
    for shown in pair.artwork:                 # every tile is an image of that title, shown in the visit
        assert all(world.catalog.artwork_title[shown[t]] == t for t in titles)


def test_homepage_picture_of_a_world_of_several_blocks_draws_the_first_block_only(tmp_path, monkeypatch):
    """A picture needs two members' tastes: it draws block 0's members, not a whole (10M-member)
    world, and shows two of them."""
    import experiments.page_picture as picture

    config = baselines_config()
    config["engine"]["member_block"] = 100              # 400 members: four blocks
    run_experiment(config, tmp_path / "run")
    drawn, pairs = [], []

    def build_world_spy(*args, blocks=None):
        drawn.append(blocks)
        return build_world(*args, blocks=blocks)

    def draw_spy(pair, world, path):
        pairs.append((pair, world))
        return draw_page_pair(pair, world, path)

    draw_page_pair = picture.draw_page_pair
    monkeypatch.setattr(picture, "build_world", build_world_spy)
    monkeypatch.setattr(picture, "draw_page_pair", draw_spy)
    assert picture.plot_homepage_picture(tmp_path / "run", tmp_path / "homepage.png") == tmp_path / "homepage.png"
    assert drawn == [range(1)]
    (pair, world), = pairs
    a, b = pair.members
    assert max(a, b) < 100                               # both of block 0, whose tastes were drawn
    tastes = world.response.tastes
    assert tastes[a].sum() > 0 and tastes[b].sum() > 0 and tastes[a].argmax() != tastes[b].argmax()
    assert_readable_png(tmp_path / "homepage.png")


def test_bands_use_members_as_clusters(run_dir):
    """The bands' standard error for one bucket equals the per-member delta method computed
    directly from the log, and is wider than the binomial one on average."""
    import pandas as pd

    series = read_series(run_dir)
    n_buckets = len(series["uniform"]["hour"])
    se = clustered_standard_errors(run_dir, 360.0, n_buckets)
    log = pd.read_parquet(run_dir / "logs")
    mine = log[(log["cell"] == "oracle") & (log["time"] // 360 == 2)]
    per_member = mine.groupby("member")[["quality_play"]].agg(["sum", "count"])
    _, direct = ratio_estimate(per_member.iloc[:, 0].to_numpy(float), per_member.iloc[:, 1].to_numpy(float))
    assert se["oracle"]["take_fraction"][2] == pytest.approx(direct)
    ratios = [se[c]["ctr"] / series[c]["ctr_se"] for c in CELLS]
    assert np.nanmean(ratios) > 1.0


def test_report_of_a_run_is_self_contained_html_with_table_power_and_charts(run_dir, capsys):
    report_main([str(run_dir)])
    path = run_dir / "report.html"
    assert capsys.readouterr().out.strip() == str(path)
    text = path.read_text()
    for needle in ("take fraction", "minimum detectable lift", "MDE, this test", "p = ", "Resolved config",
                   "design effect"):
        assert needle in text, needle
    images = re.findall(r"<img [^>]*src='([^']*)'", text)
    assert len(images) == len(RUN_CHARTS) and all(src.startswith("data:image/png;base64,") for src in images)
    assert "src='charts/" not in text and "http" not in text.split("<body>")[1]
    for cell in CELLS:
        assert f"<td>{cell}" in text


def test_markdown_report_links_charts_that_exist(run_dir, tmp_path):
    path = write_report(run_dir, "md")
    text = path.read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert len(links) == len(RUN_CHARTS) and all((path.parent / link).is_file() for link in links)
    elsewhere = write_report(run_dir, "md", tmp_path / "r.md")
    assert all((elsewhere.parent / link).is_file()
               for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", elsewhere.read_text()))
    assert "| oracle | CTR |" in text


@pytest.mark.parametrize("main", [report_main, plot_main])
def test_report_and_plot_refuse_a_directory_without_runs(main, tmp_path):
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path)])
    assert f"error: {tmp_path} is not a run directory (no metrics.json)" in str(info.value.code)


# ---- a sweep (plot and report on the shared sweep: tests/experiments/test_workflow.py) -------------
def test_swept_parameters_come_from_overrides_or_from_differing_configs(sweep, tmp_path):
    sweep_dir, _ = sweep
    assert swept_parameters(find_runs(sweep_dir)) == ["engine.retrain_hours"]
    # Runs written without Hydra: the keys where their configs differ.
    for seed in (0, 1):
        cfg = baselines_config(seed)
        cfg["engine"].update(days=0.25, log_impressions=False)
        run_experiment(cfg, tmp_path / f"seed{seed}")
    runs = [load_run(tmp_path / f"seed{s}") for s in (0, 1)]
    assert swept_parameters(runs) == ["seed"]


def test_aggregate_uses_seeds_when_there_are_several_and_run_intervals_otherwise():
    p = aggregate([0.010, 0.014, 0.012], [0.001] * 3, ["0", "1", "2"])
    half = 2 * 0.002 / math.sqrt(3) * 4.302652729911275 / 2    # t(0.975, 2) * sd / sqrt(3)
    assert p.method == "seeds" and p.n_seeds == 3
    assert p.mean == pytest.approx(0.012) and p.high - p.mean == pytest.approx(half)
    one = aggregate([0.010], [0.001], ["0"])
    assert one.method == "run" and one.high - one.mean == pytest.approx(1.959963984540054 * 0.001)
    same_seed = aggregate([0.010, 0.012], [0.001, 0.001], ["0", "0"])   # averaged: se / sqrt(2)
    assert same_seed.mean == pytest.approx(0.011)
    assert same_seed.high - same_seed.mean == pytest.approx(1.959963984540054 * 0.001 / math.sqrt(2))


def test_paired_differences_pair_runs_by_seed():
    rows = [{"run": f"r{s}{k}", "experiment.ranker_scope": k, "seed": str(s), "cell": "oracle",
             "lift_take_fraction": 0.15 + 0.01 * s + (0.02 + 0.001 * (-1) ** s if k == "shared" else 0.0)}
            for s in range(4) for k in ("per_cell", "shared")]
    d = paired_differences(rows, "experiment.ranker_scope", "lift_take_fraction")
    assert d["from"] == "per_cell" and d["to"] == "shared" and d["n_pairs"] == 4
    assert d["mean"] == pytest.approx(0.02) and d["ci_low"] < 0.02 < d["ci_high"] and d["p_value"] < 0.01
    assert paired_differences(rows, "seed", "lift_take_fraction") is None    # four values, not two


def test_power_plan_from_a_pilot_run(run_dir, capsys):
    from experiments.power import main, planned_test_from_pilot

    metrics = json.loads((run_dir / "metrics.json").read_text())
    control = metrics["cells"]["uniform"]
    test, info = planned_test_from_pilot(run_dir)
    assert test.baseline_rate == control["take_fraction"]["estimate"]
    assert test.members == sum(c["members"] for c in metrics["cells"].values())
    assert info["pilot_design_effect"] > 1.0
    assert test.design_effect == pytest.approx(info["pilot_design_effect"])   # same duration
    longer, _ = planned_test_from_pilot(run_dir, days=2)
    assert longer.impressions_per_member == pytest.approx(2 * test.impressions_per_member)
    main(["--pilot", str(run_dir), "--members", "100000", "--metric", "ctr"])
    out = capsys.readouterr().out
    assert "cell uniform, ctr" in out and "100,000 members" in out and "MDE at 80% power" in out


# ---- charts that answer the question (issue #18) -----------------------------------------------
def test_long_runs_are_charted_in_daily_bins_and_rebinning_keeps_the_sums():
    from experiments.run_plots import bin_hours, rebin

    assert bin_hours(1.0, 6.0) == 6.0 and bin_hours(3.0, 6.0) == 6.0
    assert bin_hours(14.0, 6.0) == 24.0 and bin_hours(14.0, 24.0) == 24.0 and bin_hours(10.0, 5.0) == 25.0
    hours = np.arange(1, 9) * 6.0                                   # 2 days of 6-hour buckets
    s = {"hour": hours, "impressions": np.full(8, 100.0), "clicks": np.arange(8.0),
         "quality_plays": np.ones(8), "expected_take": np.full(8, 2.0), "oracle_take": np.full(8, 3.0),
         "cumulative_regret": np.cumsum(np.ones(8))}
    daily = rebin({"a": s}, 6.0, 24.0)["a"]
    assert daily["hour"].tolist() == [24.0, 48.0]
    assert daily["clicks"].tolist() == [0 + 1 + 2 + 3, 4 + 5 + 6 + 7]
    assert daily["ctr"].tolist() == pytest.approx([6 / 400, 22 / 400])
    assert daily["ctr_se"][0] == pytest.approx(math.sqrt(6 / 400 * (1 - 6 / 400) / 400))
    assert daily["cumulative_regret"].tolist() == [4.0, 8.0]


def test_clustered_ratio_is_the_per_member_delta_method():
    from experiments.run_plots import clustered_ratio

    rng = np.random.default_rng(3)
    member = rng.integers(0, 40, 600)
    bucket = rng.integers(0, 3, 600)
    y, x = rng.random(600), rng.random(600) + 0.5
    ratio, se = clustered_ratio(y, x, member, bucket, 3)
    for b in range(3):                      # written out: sums per member, then the delta method
        ys = np.array([y[(member == m) & (bucket == b)].sum() for m in range(40)])
        xs = np.array([x[(member == m) & (bucket == b)].sum() for m in range(40)])
        keep = [m for m in range(40) if ((member == m) & (bucket == b)).any()]
        ys, xs = ys[keep], xs[keep]
        r = ys.sum() / xs.sum()
        k = len(keep)
        direct = math.sqrt(((ys - r * xs) ** 2).sum() * k / (k - 1)) / xs.sum()
        assert ratio[b] == pytest.approx(r) and se[b] == pytest.approx(direct)


def test_image_changes_compare_with_the_image_the_member_saw_last_for_that_title():
    from experiments.experiment_plots import image_changes

    member = np.array([0, 0, 0, 1, 0, 1])
    title = np.array([5, 5, 6, 5, 5, 5])
    time = np.array([1.0, 2.0, 3.0, 1.5, 4.0, 0.5])
    artwork = np.array([10, 11, 20, 10, 11, 10])
    repeat, changed = image_changes(member, title, time, artwork)
    assert repeat.tolist() == [False, True, False, True, True, False]
    assert changed.tolist() == [False, True, False, False, False, False]


def _metrics_with_lift(lo: float, hi: float) -> dict:
    cell = {"take_fraction": {"estimate": 0.01, "se": 0.001, "ci_low": 0.008, "ci_high": 0.012},
            "artwork_gain": {"estimate": 0.1, "se": 0.01, "ci_low": 0.08, "ci_high": 0.12}}
    return {"control": "a", "cells": {"a": cell, "b": cell},
            "lift": {"b": {"take_fraction": {"estimate": (lo + hi) / 2, "ci_low": lo, "ci_high": hi}}}}


def test_wide_or_null_intervals_are_flagged_with_the_minimum_detectable_effect():
    from experiments.power_notes import underpowered_notes

    notes = underpowered_notes(_metrics_with_lift(-0.3, 0.6))
    # MDE of two cells with relative standard error 0.1 each, by hand: (z_0.975 + z_0.8) * sqrt(0.02)
    mde = math.expm1((1.959964 + 0.841621) * math.sqrt(0.1 ** 2 + 0.1 ** 2))
    assert "too wide to support a conclusion" in notes[0] and f"{mde:.1%}" in notes[0]
    assert "includes 0" in underpowered_notes(_metrics_with_lift(-0.02, 0.05))[0]
    assert underpowered_notes(_metrics_with_lift(0.04, 0.12)) == []


def test_report_shows_artwork_gain_page_metrics_warnings_and_the_full_config(run_dir):
    from html.parser import HTMLParser

    class Outline(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack, self.headings, self.tables, self.pre = [], [], 0, ""

        def handle_starttag(self, tag, attrs):
            if tag not in ("img", "meta", "br"):
                self.stack.append(tag)
            self.tables += tag == "table"

        def handle_endtag(self, tag):
            assert self.stack and self.stack[-1] == tag, (tag, self.stack[-3:])   # well nested
            self.stack.pop()

        def handle_data(self, data):
            if self.stack and self.stack[-1] in ("h2", "h3"):
                self.headings.append(data)
            if self.stack and self.stack[-1] == "pre":
                self.pre += data

    text = write_report(run_dir).read_text()
    outline = Outline()
    outline.feed(text)
    assert outline.stack == []
    joined = "\n".join(outline.headings)
    for needle in ("Artwork gain", "page-level metrics", "Lift over uniform", "Resolved config"):
        assert needle in joined, needle
    # The tiny run's lifts are far too wide: the report says so, with the MDE.
    assert "Warnings: intervals that support no conclusion" in joined
    assert "minimum detectable effect of this test" in text
    # Every key, defaults included: keys the test's config never set are there.
    for key in ("visit_rate_sigma:", "snapshot_hours:", "session_scroll_continue:", "position_exponent:"):
        assert key in outline.pre, key
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for cell in CELLS:
        gain = metrics["cells"][cell]["artwork_gain"]["estimate"]
        assert f"<td>{gain:+.1%}" in text
    assert "<th>visit success rate</th>" in text and "<th>time to first play</th>" in text


def test_report_renders_in_a_headless_browser(run_dir, tmp_path):
    import shutil

    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless Chromium installed (chromium, chromium-browser or google-chrome on PATH)")
    import subprocess

    path = write_report(run_dir)
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}",
                           "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert dom.count("<img") == len(RUN_CHARTS) and "Artwork gain" in dom and "<table" in dom


@pytest.mark.slow
def test_a_seed_only_sweep_charts_every_cell_across_seeds(tmp_path):
    from experiments.plot import plot_sweep

    for seed in (0, 1):
        cfg = baselines_config(seed)
        cfg["engine"].update(days=0.5, log_impressions=False)
        run_experiment(cfg, tmp_path / f"seed{seed}")
    charts = plot_sweep(tmp_path)
    assert [c.name for c in charts] == ["sweep_seeds.png"]
    for seed in (0, 1):             # runs written without charts get theirs first
        assert (tmp_path / f"seed{seed}" / "charts" / "lift.png").is_file()
    assert_readable_png(charts[0])
    text = write_report(tmp_path, "md").read_text()
    assert "Every metric, every cell: mean over 2 seeds" in text
    for cell in CELLS:
        assert f"| {cell} |" in text


# ---- per-experiment charts --------------------------------------------------------------------------
@pytest.mark.parametrize("experiment", ["clickbait_trap", "stickiness"])
def test_experiment_charts_are_drawn_for_their_experiment(experiment, tmp_path, capsys):
    import hydra

    from experiments import config_store  # noqa: F401 -- registers the schema
    from experiments.run import CONFIG_DIR, config_to_dict

    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = config_to_dict(hydra.compose("config", overrides=[
            f"experiment={experiment}", "world=tiny", "engine.days=0.5", "engine.progress=false"]))
    cfg["experiment"]["analyses"] = []
    run_experiment(cfg, tmp_path / "run", progress=False)
    plot_main([str(tmp_path / "run")])
    chart = tmp_path / "run" / "charts" / f"{experiment}.png"
    assert str(chart) in capsys.readouterr().out
    assert_readable_png(chart)


def test_mde_of_artwork_gain_is_taken_before_its_offset():
    """Summary notes and the report share one MDE (experiments.power_notes.cell_mde). Artwork gain
    is a ratio minus 1, so its lift is a lift of the ratio: a gain of 0 (ratio 1) is not a zero base."""
    from experiments.power_notes import cell_mde

    cells = {"a": {"artwork_gain": {"estimate": 0.0, "se": 0.01}},
             "b": {"artwork_gain": {"estimate": 0.05, "se": 0.01}}}
    mde = cell_mde({"control": "a", "cells": cells}, "b", "artwork_gain")
    assert 0.0 < mde < 0.1            # a relative lift of a ratio near 1 with se 0.01: a few percent
