"""Feedback loops: how rankers trained on their own logs concentrate exposure and drift.

Reads one run (or several seeds of it) of ``experiment=feedback_loop``, whose cells are named
``<ranker arm>.<artwork policy>`` (``oracle.fixed``, ``learned.lints``, ...), each with its own
ranker trained on its own cell's logs. Per cell and simulated day it computes, with
:mod:`sim.bias`: the Gini of impressions and of plays across launched titles, the effective
catalog size (ECS, on minutes watched), catalog coverage (launched titles played that day),
popularity amplification (exposure share of the launch-hype top decile over its share of true
appeal), homogenization (Chaney et al.: Jaccard overlap of each member's played set so far with
their nearest member, minus the same in the oracle cell with the same policy, on a sample of
members), ranker drift (rank agreement with the true fit, from ``metrics.json``), take fraction
and quality plays per visit; and, per cell over the whole run, the logged-data bias of per-image
take fractions: ``selection_bias`` (true take of the images where they were shown over their
true take on every impression of their title, pooled over images, minus one: how much the
logger's choices flatter its images), ``naive_bias`` (the same with the logged take fraction:
selection plus noise) and ``ips_bias`` (the IPS estimate of each image's take on every
impression of its title, pooled, against the truth).

    python -m experiments.run experiment=feedback_loop              # runs this at the end
    python -m experiments.run -m experiment=feedback_loop seed=0,1,2
    python -m experiments.analyses.feedback_loop multirun/feedback_loop/<stamp>   # bands over seeds

The cells of one run are different members, so the homogenization above (nearest member by
played set, minus the oracle cell's) compares different people and tracks played-set size. For
Chaney et al.'s measure, run each arm as its own run over the same members and visits and give
the sweep directory: :mod:`experiments.analyses.feedback_loop_arms` pairs members across runs::

    python -m experiments.run -m experiment=feedback_loop_arms ranker=oracle,learned,popularity,random seed=0,1,2
    python -m experiments.analyses.feedback_loop multirun/feedback_loop_arms/<stamp>

Writes ``feedback_loop_daily.csv``, ``feedback_loop_summary.csv`` and
``charts/feedback_loop.png`` into the run (or sweep) directory.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from experiments.analyses.feedback_loop_arms import analyze_sweep
from experiments.plotting import band, percent_axis, plt, save
from experiments.results import analysis_runs, mean_se, metric_is_percent
from experiments.segments import read_log
from sim.bias import (catalog_coverage, effective_catalog_size, gini, homogenization, logged_take_bias,
                      popularity_amplification)
from sim.metrics import METRICS
from sim.ope.runs import run_config, run_world
from sim.outputs import write_csv
from sim.streams import generator
from sim.policies import DecisionBatch

#: Members per cell in the homogenization sample (the Jaccard matrix is sample x sample).
HOMOGENIZATION_SAMPLE = 300
#: Share of titles, by launch hype, that count as "initially most popular".
TOP_SHARE = 0.1
#: Impressions per cell used to compute every image's true take fraction (bias table).
BIAS_SAMPLE = 100_000
#: (key, panel title, y-axis label with units) of each daily metric, in chart order.
METRICS = (("gini_impressions", "Gini of impressions", "Gini of impressions (0–1)"),
           ("gini_plays", "Gini of plays", "Gini of plays (0–1)"),
           ("ecs", "effective catalog size", "ECS on minutes watched (titles)"),
           ("coverage", "catalog coverage", "coverage (titles played / titles launched)"),
           ("amplification", "popularity amplification",
            "top-decile exposure share / appeal share (ratio)"),
           ("homogenization", "homogenization vs oracle", "Δ nearest-member Jaccard (0–1 scale)"),
           ("drift", "ranker drift", "Spearman ρ with true fit (−1 to 1)"),
           ("take_fraction", "take fraction", METRICS["take_fraction"].axis_label()))


def run_with_world(run_dir: Path):
    """The run's validated config and its world, ground truth included."""
    cfg = run_config(run_dir)
    return cfg, run_world(cfg)


def daily_metrics(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """Per (cell, day) feedback-loop metrics and per-cell logged-data bias of one run."""
    run_dir = Path(run_dir)
    cfg, world = run_with_world(run_dir)
    cat, resp = world.catalog, world.response
    T = cat.n_titles
    log = read_log(run_dir, ["cell", "time", "visit", "member", "title", "artwork", "row", "column",
                             "familiar", "play", "quality_play", "minutes", "expected_take", "pscore"])
    day = (log["time"] // 1440.0).astype(np.int64)
    n_days = int(np.ceil(cfg.engine.days))
    # True appeal of each title: click probability of an average member looking at it.
    rng = generator(cfg.seed, "bias-appeal")
    sample = rng.choice(world.members.n_members, size=min(500, world.members.n_members), replace=False)
    appeal = (1.0 / (1.0 + np.exp(-(cfg.world.response.click_intercept + resp.title_scores(sample))))).mean(0)
    top = np.argsort(-cat.popularity_prior, kind="stable")[:max(1, int(TOP_SHARE * T))]
    drift = json.loads((run_dir / "metrics.json").read_text()).get("ranker_drift") or []
    rows, bias_rows = [], []
    played_sets = {}
    for cell in sorted(set(log["cell"])):
        m = log["cell"] == cell
        c_day, c_title, c_member = day[m], log["title"][m], log["member"][m]
        c_play = log["play"][m].astype(np.float64)
        imp = np.zeros((n_days, T))
        np.add.at(imp, (c_day, c_title), 1.0)
        plays = np.zeros((n_days, T))
        np.add.at(plays, (c_day, c_title), c_play)
        minutes = np.zeros((n_days, T))
        np.add.at(minutes, (c_day, c_title), log["minutes"][m].astype(np.float64))
        members = np.unique(c_member)
        hs = np.sort(generator(cfg.seed, "bias-homogenization").choice(
            members, size=min(HOMOGENIZATION_SAMPLE, members.size), replace=False))
        played = log["play"][m].astype(bool) & np.isin(c_member, hs)
        sets_by_day = []
        for d in range(n_days):
            upto = played & (c_day <= d)
            s = np.zeros((hs.size, T), dtype=bool)
            s[np.searchsorted(hs, c_member[upto]), c_title[upto]] = True
            sets_by_day.append(homogenization(s))
        played_sets[cell] = sets_by_day
        c_drift = [r for r in drift if cell in r["cells"].split(",")]
        for d in range(n_days):
            launched = cat.launched((d + 1) * 1440.0)
            in_day = c_day == d
            visits = np.unique(log["visit"][m][in_day]).size
            q = log["quality_play"][m][in_day].sum()
            last = [r["spearman"] for r in c_drift if r["time_hours"] <= (d + 1) * 24.0]
            rows.append({
                "cell": cell, "day": d + 1,
                "gini_impressions": gini(imp[d][launched]), "gini_plays": gini(plays[d][launched]),
                "ecs": effective_catalog_size(minutes[d]),
                "coverage": catalog_coverage(plays[d], launched),
                "amplification": popularity_amplification(imp[d] * launched, appeal * launched, top),
                "homogenization_raw": sets_by_day[d],
                "drift": last[-1] if last else float("nan"),
                "take_fraction": q / max(in_day.sum(), 1), "quality_plays_per_visit": q / max(visits, 1)})
        bias_rows.append(_bias_row(cell, log, m, cat, resp, cfg.seed))
    for r in rows:   # homogenization relative to the oracle ranker with the same artwork policy
        ref = "oracle." + r["cell"].split(".", 1)[-1]
        r["homogenization"] = (r["homogenization_raw"] - played_sets[ref][r["day"] - 1]
                               if ref in played_sets else float("nan"))
    return rows, bias_rows


def _bias_row(cell: str, log: dict, m: np.ndarray, cat, resp, seed: int) -> dict:
    """Logged-data bias per image: naive and IPS take fractions against each image's true take
    fraction had it been shown on every logged impression of its title (a sample)."""
    idx = np.flatnonzero(m)
    b = logged_take_bias(log["artwork"][idx], log["title"][idx], log["quality_play"][idx],
                         log["expected_take"][idx], log["pscore"][idx], int(cat.pool.max()) + 1)
    sub = generator(seed, "bias-truth").choice(idx, size=min(BIAS_SAMPLE, idx.size), replace=False)
    title = log["title"][sub]
    cand = cat.pool[title]
    _, _, p_quality = resp.probabilities(DecisionBatch(
        member=log["member"][sub], title=title, candidates=cand, mask=cand >= 0, row=log["row"][sub],
        column=log["column"][sub], time=log["time"][sub], familiar=log["familiar"][sub]))
    valid = cand >= 0
    truth_sum = np.bincount(cand[valid], weights=np.asarray(p_quality, np.float64)[valid], minlength=b["naive"].size)
    truth_n = np.bincount(cand[valid], minlength=b["naive"].size)
    with np.errstate(invalid="ignore", divide="ignore"):
        true_all = truth_sum / truth_n
    # Pooled over images (one image's handful of quality plays is all noise): each estimate's
    # total over the images it covers against the same images' truth, minus one.
    ok = (b["impressions"] > 0) & (truth_n > 0)
    n, n_title = b["impressions"][ok], np.bincount(log["title"][idx])[b["title"][ok]]
    truth = true_all[ok]
    return {"cell": cell, "images": int(ok.sum()),
            "naive_bias": float((n * b["naive"][ok]).sum() / (n * truth).sum() - 1),
            "selection_bias": float((n * b["true_shown"][ok]).sum() / (n * truth).sum() - 1),
            "ips_bias": float((n_title * b["ips"][ok]).sum() / (n_title * truth).sum() - 1)}


def _write_csv(path: Path, rows: list[dict]) -> Path:
    write_csv(path, rows)
    return path


def _read_csv(path: Path) -> list[dict]:
    with open(path) as fh:
        return [{k: (v if k == "cell" else float(v) if v not in ("", "nan") else float("nan"))
                 for k, v in r.items()} for r in csv.DictReader(fh)]


def analyze(run_dir: Path) -> list[Path]:
    """One run: daily and bias tables and a chart. A sweep directory (no metrics.json, runs
    below it): every run's tables, then charts with bands over seeds."""
    run_dir = Path(run_dir)
    runs = analysis_runs(run_dir)
    if runs != [run_dir] and all(len(run_config(r).cells) == 1 for r in runs):
        # A sweep of one-cell runs (experiment=feedback_loop_arms): arms over the same members.
        return analyze_sweep(runs, run_dir)
    daily, bias, out = [], [], []
    for i, r in enumerate(runs):
        d_path, b_path = r / "feedback_loop_daily.csv", r / "feedback_loop_bias.csv"
        if not (d_path.exists() and b_path.exists()) or r == run_dir:
            rows, bias_rows = daily_metrics(r)
            out += [_write_csv(d_path, rows), _write_csv(b_path, bias_rows)]
        daily += [{**x, "seed": i} for x in _read_csv(d_path)]
        bias += [{**x, "seed": i} for x in _read_csv(b_path)]
    (run_dir / "charts").mkdir(exist_ok=True)
    out.append(_chart(daily, len(runs), run_dir / "charts" / "feedback_loop.png"))
    out.append(_write_csv(run_dir / "feedback_loop_summary.csv", _summary(daily, bias)))
    return out


def _summary(daily: list[dict], bias: list[dict]) -> list[dict]:
    """Per cell: last-day value of each metric (drift: also its change from day 1), mean over
    seeds with standard error, and the logged-data bias."""
    cells = sorted({r["cell"] for r in daily})
    last_day = max(r["day"] for r in daily)
    out = []
    for c in cells:
        row = {"cell": c}
        last = [r for r in daily if r["cell"] == c and r["day"] == last_day]
        first = {r["seed"]: r for r in daily if r["cell"] == c and r["day"] == 1}
        for key in [m[0] for m in METRICS] + ["quality_plays_per_visit"]:
            row[key], row[key + "_se"] = mean_se([r[key] for r in last])
        row["drift_change"], row["drift_change_se"] = mean_se([r["drift"] - first[r["seed"]]["drift"] for r in last])
        for key in ("naive_bias", "selection_bias", "ips_bias"):
            row[key], _ = mean_se([b[key] for b in bias if b["cell"] == c])
        out.append(row)
    return out


def _chart(daily: list[dict], n_seeds: int, path: Path) -> Path:
    from experiments.analysis_plots import feedback_loop_chart

    return feedback_loop_chart(daily, n_seeds, path, METRICS)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Feedback-loop metrics of a run or a sweep of seeds")
    ap.add_argument("run_dir", type=Path)
    args = ap.parse_args(argv)
    for p in analyze(args.run_dir):
        print(p)


if __name__ == "__main__":
    main()
