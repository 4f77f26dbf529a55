"""The page-level section of ``experiments.ope_accuracy``: slate estimators against the
simulator's page-level truth, under each response model.

For each response model (``independent``, and ``session`` when the world has it) and seed, a
uniform logger serves one day on a small world whose pages hold at most ``rows x columns``
tiles. Its log gives the pages (members, titles, positions, familiarity) and their exact page
propensities (:func:`sim.ope.pages.slate_feedback_from_log`). The truth of each target on each
page is the Monte Carlo mean of its page reward (quality plays per page) over
``truth_replications`` draws of the target's images and the members' sessions
(:func:`sim.ope.pages.page_truth`). Then, for each log size, ``replicates`` logs are redrawn on
random subsets of the pages -- the logger's images and the members' responses drawn afresh from
the response model, so replicates are independent -- and every slate estimator scores every
target on them. Per (response, target, estimator, size): bias (mean error, with its standard
error over replicates), RMSE and the coverage of the 95 % page-bootstrap intervals.

The targets are the ``oracle`` artwork choice mixed with uniform (a stochastic target keeps the
page weights finite): the per-tile lift is large, so an estimator that ignores how tiles compete
is visibly biased. Cascade-dr's Q-function is the log's own cross-fitted per-tile reward model
(:mod:`sim.ope.reward_model`) summed over the rest of the page under the target
(:func:`sim.ope.pages.reward_to_go`): myopic on purpose; cascade-dr stays unbiased whatever it is.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sim.config import RESPONSE_MODELS
from sim.logs import read_impressions
from sim.ope.estimators.slate import SLATE_ESTIMATOR_NAMES, estimate_slates
from sim.ope.logged import build_target, from_log, target_probabilities
from sim.ope.pages import (cascade_products, draw_pages, page_last, page_truth, reward_to_go,
                           sample_actions, slate_feedback_from_log, target_slate_pscores,
                           weight_second_moments)
from sim.ope.reward_model import cross_fitted_rewards
from sim.ope.runs import read_visit_contexts, run_config, run_world
from sim.outputs import write_frame
from sim.runner import run_experiment
from sim.streams import generator


@dataclass
class PageSettings:
    """What the page-level section varies."""

    world: dict = field(default_factory=lambda: {
        "name": "ope-pages", "n_members": 4000, "n_titles": 120, "n_genres": 8, "visits_per_day": 1.0,
        "artworks_min": 3, "artworks_max": 4})
    rows: int = 2
    columns: int = 3
    responses: tuple[str, ...] = ("independent", "session")
    seeds: tuple[int, ...] = (0, 1, 2)
    targets: dict = field(default_factory=lambda: {
        "oracle, 50% uniform": {"name": "explore", "epsilon": 0.5, "base": {"name": "oracle"}},
        "oracle, 20% uniform": {"name": "explore", "epsilon": 0.2, "base": {"name": "oracle"}}})
    sizes: tuple[int, ...] = (300, 1_000, 3_000)
    #: Members of the default-homepage log whose page weights are measured (0: skip).
    default_pages_members: int = 3000
    replicates: int = 20
    truth_replications: int = 200
    n_bootstrap: int = 200


def _log_pages(s: PageSettings, response: str, seed: int, directory: Path) -> Path:
    world = {**copy.deepcopy(s.world), "response": {"name": response}}
    config = {"seed": seed, "world": world, "engine": {"days": 1.0, "progress": False},
              "ranker": {"name": "learned", "rows": s.rows, "columns": s.columns},
              "experiment": {"name": "ope_pages", "cells": [
                  {"name": "logger", "share": 1.0, "policy": {"name": "uniform"}}]}}
    run_experiment(config, directory, progress=False)
    return directory


def _subset_pages(page: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows of the chosen pages in reading order, their pages renumbered 0..m-1)."""
    keep = np.isin(page, chosen)
    rows = np.flatnonzero(keep)
    return rows, np.unique(page[rows], return_inverse=True)[1]


def evaluate_pages(s: PageSettings, run_dir: Path, response: str, seed: int) -> tuple[list[dict], list[dict]]:
    """(one row per estimate, one row per target's truth) for one logged run."""
    world = run_world(run_config(run_dir))
    log = read_impressions(run_dir)
    slate = slate_feedback_from_log(log)
    data = from_log(log.iloc[slate["order"]].reset_index(drop=True), world.catalog, read_visit_contexts(run_dir))
    d = data.decisions
    page = np.unique(slate["slate_id"], return_inverse=True)[1]
    n_pages = int(page.max()) + 1
    logger = d.mask / d.mask.sum(axis=1, keepdims=True)
    rng = generator(seed, "ope_pages", 1)
    probs, truth, truths = {}, {}, []
    logger_truth, logger_se = page_truth(world.response, d, page, logger, rng, s.truth_replications)
    for i, (name, spec) in enumerate(s.targets.items()):
        policy = build_target(spec, world.catalog, seed=seed * 100 + i, response=world.response)
        probs[name] = target_probabilities(policy, d)
        truth[name], se = page_truth(world.response, d, page, probs[name], rng, s.truth_replications)
        truths.append({"response": response, "seed": seed, "target": name, "pages": n_pages,
                       "truth": truth[name].mean(), "truth_mc_se": se,
                       "logger_truth": logger_truth.mean(), "logger_truth_mc_se": logger_se,
                       "logged_page_reward": float(slate["reward"].sum() / n_pages)})
    rows = []
    for size in s.sizes:
        m = min(size, n_pages)
        for rep in range(s.replicates):
            chosen = np.sort(rng.choice(n_pages, m, replace=False))
            idx, sub_page = _subset_pages(page, chosen)
            sub = d.subset(idx)
            action = sample_actions(logger[idx], rng)                  # the uniform logger, redrawn
            reward = draw_pages(world.response, sub, sub_page, action, rng)
            tile_p = logger[idx, action]
            cascade = cascade_products(sub_page, tile_p)
            logged = {"slate_id": sub_page, "position": slate["position"][idx], "reward": reward,
                      "action": action, "pscore": page_last(sub_page, cascade),
                      "pscore_item_position": tile_p, "pscore_cascade": cascade}
            q_tile = cross_fitted_rewards(
                sub.candidates[np.arange(idx.size), action].astype(np.int64), reward,
                {"row": sub.row.astype(np.int64), "column": sub.column.astype(np.int64),
                 "familiar": sub.familiar.astype(np.int64)},
                sub.candidates, world.catalog.artwork_title, n_folds=2, rng=rng)[:, :, 0]
            targets = {}
            for name, p in probs.items():
                later = reward_to_go(sub_page, (p[idx] * q_tile).sum(axis=1))
                targets[name] = target_slate_pscores(sub_page, p[idx], action, q_tile + later[:, None])
            res = estimate_slates(logged, targets, rng=rng if s.n_bootstrap else None,
                                  n_bootstrap=max(s.n_bootstrap, 1))
            for name, by_est in res.items():
                v = float(truth[name][chosen].mean())
                w_page = targets[name]["evaluation_policy_pscore"] / logged["pscore"]
                first = np.r_[True, sub_page[1:] != sub_page[:-1]]
                ess = w_page[first].sum() ** 2 / (w_page[first] ** 2).sum()
                for e, est in by_est.items():
                    rows.append({"response": response, "seed": seed, "size": m, "replicate": rep,
                                 "target": name, "estimator": e, "estimate": est.value, "truth": v,
                                 "error": est.value - v, "covered": bool(est.ci_low <= v <= est.ci_high),
                                 "page_weight_ess": float(ess)})
    return rows, truths


def summarise_pages(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (response, target, estimator, size): bias with its standard error, RMSE, relative
    RMSE, coverage of the 95 % intervals."""
    def stats(g: pd.DataFrame) -> pd.Series:
        err = g["error"]
        return pd.Series({"estimates": len(g), "truth": g["truth"].mean(), "bias": err.mean(),
                          "se_bias": err.std(ddof=1) / math.sqrt(len(g)) if len(g) > 1 else math.nan,
                          "relative_bias": err.mean() / g["truth"].mean(),
                          "rmse": math.sqrt((err ** 2).mean()),
                          # delta method: se(RMSE) = se(MSE) / (2 RMSE)
                          "se_rmse": ((err ** 2).std(ddof=1) / math.sqrt(len(g))
                                      / (2 * max(math.sqrt((err ** 2).mean()), 1e-300))) if len(g) > 1 else math.nan,
                          "relative_rmse": math.sqrt((err ** 2).mean()) / g["truth"].mean(),
                          "sd": err.std(ddof=1), "ci_coverage": g["covered"].mean(),
                          "page_weight_ess": g["page_weight_ess"].mean()})
    keys = ["response", "target", "estimator", "size"]
    return runs.groupby(keys, sort=False).apply(stats, include_groups=False).reset_index()


def page_tables(summary: pd.DataFrame, truths: pd.DataFrame) -> str:
    """Bias, RMSE and coverage per estimator on the largest logs, as printed."""
    lines = []
    for (response, target), g in summary.groupby(["response", "target"], sort=False):
        g = g[g["size"] == g["size"].max()]
        t = truths[(truths["response"] == response) & (truths["target"] == target)]
        se = math.sqrt((t["truth_mc_se"] ** 2).sum()) / len(t)
        lift = t["truth"].mean() / t["logger_truth"].mean() - 1
        lines += ["", f"page level, response {response}, target {target}: true value {t['truth'].mean():.4f} "
                      f"quality plays per page (Monte Carlo se {se:.5f}; uniform logger "
                      f"{t['logger_truth'].mean():.4f}, true page-level lift {lift:+.1%}); "
                      f"{int(g['size'].iloc[0]):,} pages per log, {int(g['estimates'].iloc[0])} logs"]
        lines.append(f"{'estimator':<12}{'bias':>10}{'± se':>9}{'rel. bias':>11}{'RMSE':>9}{'rel. RMSE':>11}"
                     f"{'coverage':>10}")
        for e in SLATE_ESTIMATOR_NAMES:
            r = g[g["estimator"] == e]
            if len(r):
                r = r.iloc[0]
                lines.append(f"{e:<12}{r['bias']:>10.4f}{r['se_bias']:>9.4f}{r['relative_bias']:>11.1%}"
                             f"{r['rmse']:>9.4f}{r['relative_rmse']:>11.1%}{r['ci_coverage']:>10.0%}")
    return "\n".join(lines) + "\n"


def page_weights_text(table: pd.DataFrame) -> str:
    """The effective-sample-size shares on the default homepage (:func:`default_page_weights`), as printed."""
    lines = [f"variance cost on the default homepage ({int(table['pages'].iloc[0]):,} pages, "
             f"{table['tiles_per_page'].iloc[0]:.1f} tiles per page): effective sample size share 1 / E[w^2]"]
    for name, g in table.groupby("target", sort=False):
        lines.append(f"  {name}: " + "; ".join(
            f"{r.estimator}{'' if r.slot in ('page', 'tile') else ' slot ' + r.slot} {r.ess_share:.2g}"
            for r in g.itertuples()))
    return "\n".join(lines) + "\n"


def default_page_weights(s: PageSettings, tmp: Path) -> pd.DataFrame:
    """The variance cost on the *default* homepage (~30 tiles per page, 3-12 artworks): the exact
    effective sample size share ``1 / E_b[w^2]`` of each estimator's weights for each target,
    on half a day of uniform logging under ``session`` (the weights do not depend on the
    response model). One row per (target, estimator, slot)."""
    run = tmp / "pages-default"
    run_experiment({"seed": 0, "world": {"n_members": s.default_pages_members, "response": {"name": "session"}},
                    "engine": {"days": 0.5, "progress": False}, "ranker": {"name": "learned"},
                    "experiment": {"name": "ope_pages_default", "cells": [
                        {"name": "logger", "share": 1.0, "policy": {"name": "uniform"}}]}}, run, progress=False)
    world = run_world(run_config(run))
    log = read_impressions(run)
    slate = slate_feedback_from_log(log)
    d = from_log(log.iloc[slate["order"]].reset_index(drop=True), world.catalog, read_visit_contexts(run)).decisions
    sid = slate["slate_id"]
    first = np.r_[True, sid[1:] != sid[:-1]]
    rank = np.arange(sid.size) - np.maximum.accumulate(np.where(first, np.arange(sid.size), 0))
    logger = d.mask / d.mask.sum(axis=1, keepdims=True)
    rows = []
    for i, (name, spec) in enumerate(s.targets.items()):
        target = target_probabilities(build_target(spec, world.catalog, seed=i, response=world.response), d)
        m2 = weight_second_moments(sid, logger, target)
        base = {"target": name, "pages": int(first.sum()), "tiles_per_page": sid.size / first.sum()}
        rows.append({**base, "estimator": "sips", "slot": "page", "ess_share": 1 / m2["sips"][first].mean()})
        rows.append({**base, "estimator": "iips", "slot": "tile", "ess_share": 1 / m2["iips"].mean()})
        for slot in (1, 5, 10, 20, 30):
            at = rank == slot - 1
            if at.sum() >= 10:
                rows.append({**base, "estimator": "rips", "slot": str(slot), "ess_share": 1 / m2["rips"][at].mean()})
    table = pd.DataFrame(rows)
    print("\n" + page_weights_text(table), end="")
    return table


def run_page_section(s: PageSettings, tmp: Path, out: Path) -> list[Path]:
    """Log, evaluate, summarise, chart; returns the written files."""
    rows, truths = [], []
    responses = [r for r in s.responses if r in RESPONSE_MODELS]
    for response in responses:
        for seed in s.seeds:
            t0 = time.perf_counter()
            run = _log_pages(s, response, seed, tmp / f"pages-{response}-{seed}")
            r, t = evaluate_pages(s, run, response, seed)
            rows += r
            truths += t
            print(f"pages: response {response!r}, seed {seed}: {t[0]['pages']:,} logged pages "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)
    runs, truth = pd.DataFrame(rows), pd.DataFrame(truths)
    summary = summarise_pages(runs)
    # Each file whole or absent (through a temporary name), whenever the run is stopped.
    write_frame(out / "page_ope_runs.csv", runs)
    write_frame(out / "page_ope_summary.csv", summary)
    write_frame(out / "page_ope_truth.csv", truth)
    print(page_tables(summary, truth), end="")
    extra = []
    if s.default_pages_members:
        extra.append(out / "page_weights_default_homepage.csv")
        write_frame(extra[0], default_page_weights(s, tmp))
    from experiments.ope_plots import page_bias_chart, page_error_vs_size_chart

    return [out / "page_ope_summary.csv", out / "page_ope_runs.csv", out / "page_ope_truth.csv", *extra,
            page_error_vs_size_chart(summary, out / "page_error_vs_log_size.png"),
            page_bias_chart(summary, out / "page_bias.png")]
