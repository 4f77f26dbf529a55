"""How wrong is each off-policy estimator? ``python -m experiments.ope_accuracy``.

For each logging policy (uniform, and Thompson sampling with 5 % uniform exploration) and seed,
the simulator logs a few days of impressions on a small world. The first third of each log
trains the learning targets (thompson, epsilon_greedy; one deploy, then frozen); the other two
thirds are the evaluation pool. Subsamples of the pool of several sizes are scored by every
estimator for every target (fixed, oracle, thompson, epsilon_greedy), and each estimate is
compared with the truth: the target's exact expected take fraction on the *same* impressions,
from the simulator's true probabilities. A third view (uniform logger) groups titles by the
number of artworks in their pool and, keeping the logged contexts, redraws the logger's choices
and the rewards from the true probabilities, to isolate what pool size costs each estimator.

Writes into ``--out`` (default ``outputs/ope_accuracy/<time>``) and prints where:

* ``relative_error_vs_log_size.png`` -- |relative error| vs log size, log-log, one panel per
  (logger, target), median over seeds and subsamples with an interquartile band;
* ``bias_at_full_log.png`` -- signed relative error on the largest log (mean over seeds, 95 % CI);
* ``relative_error_vs_pool_size.png`` -- error inflation over an on-policy log and effective
  sample size, by pool size;
* ``ope_accuracy_runs.csv`` (one row per estimate), ``ope_accuracy_summary.csv`` (per logger,
  target, estimator and log size: median and quartiles of |relative error|, RMSE, mean signed
  error with its standard error over seeds, coverage of the 95 % intervals, effective sample
  size, replay matches) and ``ope_accuracy_by_pool_size.csv``.

Defaults take two to three minutes on two cores; ``--quick`` is a smoke test (seconds).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.ope_pages import PageSettings, run_page_section
from experiments.units import UnitStore
from sim.ope.estimators import estimate_all
from sim.ope.groundtruth import expected_values, true_rewards
from sim.ope.logged import LoggedData, build_target, from_log, target_probabilities, train_target
from sim.logs import read_impressions
from sim.ope.runs import read_visit_contexts, run_config, run_world
from sim.outputs import write_frame
from sim.runner import run_experiment
from sim.streams import generator


@dataclass
class Settings:
    """Everything the experiment varies; the command line overrides a few."""

    world: dict = field(default_factory=lambda: {
        "name": "ope", "n_members": 4000, "n_titles": 150, "n_genres": 8, "visits_per_day": 1.0})
    days: float = 4.0
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    loggers: dict = field(default_factory=lambda: {
        "uniform": {"name": "uniform"},
        "thompson + 5% uniform": {"name": "explore", "epsilon": 0.05, "base": {"name": "thompson"}}})
    targets: dict = field(default_factory=lambda: {
        "fixed": {"name": "fixed"}, "oracle": {"name": "oracle"}, "thompson": {"name": "thompson"},
        "epsilon_greedy": {"name": "epsilon_greedy", "epsilon": 0.1}})
    train_fraction: float = 1 / 3
    sizes: tuple[int, ...] = (1_000, 3_000, 10_000, 30_000, 100_000, 300_000)
    replicates: int = 6            # subsamples per seed and size (at most pool size // size)
    n_bootstrap: int = 200         # for the coverage of the 95 % intervals
    pool_size_n: int = 20_000      # log size of the pool-size view ...
    pool_replicates: int = 8       # ... and redrawn logs per pool-size group and seed
    pool_groups: tuple[tuple[int, int], ...] = ((3, 4), (5, 6), (7, 8), (9, 10), (11, 12))


def log_run(settings: Settings, logger: dict, seed: int, directory: Path) -> Path:
    """Simulate ``settings.days`` days with ``logger`` on every member; returns the run directory."""
    config = {"seed": seed, "world": copy.deepcopy(settings.world),
              "engine": {"days": settings.days, "progress": False},
              "ranker": {"name": "learned"},
              "experiment": {"name": "ope_accuracy", "cells": [
                  {"name": "logger", "share": 1.0, "policy": copy.deepcopy(logger)}]}}
    run_experiment(config, directory, progress=False)
    return directory


def score(sub: LoggedData, dists: dict, values: dict, rng: np.random.Generator, n_bootstrap: int) -> list[dict]:
    """Every estimator for every target on ``sub``; one row per estimate with its truth."""
    q_hat = sub.estimated_rewards(rng, n_folds=2)
    res = estimate_all(sub.reward, sub.action, sub.pscore, {t: d[:, :, None] for t, d in dists.items()},
                       None, q_hat, rng=rng if n_bootstrap else None, n_bootstrap=max(n_bootstrap, 1))
    rows = []
    for target, by_est in res.items():
        truth = float(values[target].mean())
        w = dists[target][np.arange(len(sub)), sub.action] / sub.pscore
        for e, est in by_est.items():
            rows.append({"target": target, "estimator": e, "estimate": est.value, "truth": truth,
                         "relative_error": (est.value - truth) / truth,
                         "covered": bool(est.ci_low <= truth <= est.ci_high),
                         "effective_sample_size": float(w.sum() ** 2 / max((w ** 2).sum(), 1e-300)),
                         "replay_matches": float(dists[target][np.arange(len(sub)), sub.action].sum())})
    return rows


def evaluate_log(settings: Settings, run_dir: Path, seed: int,
                 uniform_logger: bool = False) -> tuple[list[dict], list[dict]]:
    """(rows by log size, rows by pool size -- uniform logger only) for one logged run."""
    cfg = run_config(run_dir)
    world = run_world(cfg)
    data = from_log(read_impressions(run_dir, time_order=True), world.catalog, read_visit_contexts(run_dir))
    train, pool = data.split(settings.train_fraction)
    truth_p = true_rewards(world.response, pool.decisions)
    dists, values = {}, {}
    for i, (name, spec) in enumerate(settings.targets.items()):
        policy = build_target(spec, world.catalog, seed=seed * 100 + i, response=world.response)
        train_target(policy, train)
        dists[name] = target_probabilities(policy, pool.decisions)
        values[name] = expected_values(dists[name], truth_p)
    rng = generator(seed, "bootstrap", 4)
    by_size = []
    for size in settings.sizes:
        n = min(size, len(pool))
        reps = max(1, min(settings.replicates, len(pool) // n))
        for rep in range(reps):
            idx = np.sort(rng.choice(len(pool), n, replace=False))
            rows = score(pool.subset(idx), {t: d[idx] for t, d in dists.items()},
                         {t: v[idx] for t, v in values.items()}, rng, settings.n_bootstrap)
            by_size += [{"size": n, "replicate": rep, **r} for r in rows]
        if n == len(pool):
            break
    by_pool = pool_size_view(settings, pool, dists, values, truth_p, rng) if uniform_logger else []
    return by_size, by_pool


def pool_size_view(settings: Settings, pool: LoggedData, dists: dict, values: dict,
                   truth_p: np.ndarray, rng: np.random.Generator) -> list[dict]:
    """Titles grouped by pool size K, ``pool_size_n`` impressions per group, many replicates.

    Only the sandbox can do this: the group's logged contexts are kept and the uniform logger's
    choices and the rewards are drawn afresh from the true probabilities for every replicate,
    so replicates are independent and the truth (on those contexts) is exact and fixed.
    """
    rows_out = []
    k = pool.decisions.mask.sum(axis=1)
    for lo, hi in settings.pool_groups:
        members = np.flatnonzero((k >= lo) & (k <= hi))
        if members.size < settings.pool_size_n:
            continue
        idx = np.sort(rng.choice(members, settings.pool_size_n, replace=False))
        sub, kk, p = pool.subset(idx), k[idx], truth_p[idx]
        for rep in range(settings.pool_replicates):
            action = (rng.random(idx.size) * kk).astype(np.int64)
            reward = (rng.random(idx.size) < p[np.arange(idx.size), action]).astype(np.float64)
            fresh = dataclasses.replace(sub, action=action, pscore=1.0 / kk, reward=reward)
            rows = score(fresh, {t: d[idx] for t, d in dists.items()}, {t: v[idx] for t, v in values.items()},
                         rng, 0)
            rows_out += [{"pool_size": f"{lo}-{hi}", "mean_pool_size": float(kk.mean()),
                          "replicate": rep, **r} for r in rows]
    return rows_out


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (logger, target, estimator, size): spread of |relative error|, bias, coverage."""
    def stats(g: pd.DataFrame) -> pd.Series:
        a = g["relative_error"].abs()
        per_seed = g.groupby("seed")["relative_error"].mean()   # seeds are the independent units
        return pd.Series({
            "estimates": len(g), "median_abs_relative_error": a.median(),
            "q25_abs_relative_error": a.quantile(0.25), "q75_abs_relative_error": a.quantile(0.75),
            "rmse_relative": math.sqrt((g["relative_error"] ** 2).mean()),
            "mean_relative_error": per_seed.mean(),
            "se_mean_relative_error": per_seed.std(ddof=1) / math.sqrt(len(per_seed)) if len(per_seed) > 1 else math.nan,
            "ci_coverage": g["covered"].mean(), "effective_sample_size": g["effective_sample_size"].mean(),
            "replay_matches": g["replay_matches"].mean(), "truth": g["truth"].mean()})
    keys = ["logger", "target", "estimator", "size"]
    return runs.groupby(keys, sort=False).apply(stats, include_groups=False).reset_index()


def error_tables(runs: pd.DataFrame) -> str:
    """Median |relative error| per estimator and log size (over targets, seeds, subsamples), one
    table per logger, as printed."""
    lines = []
    for logger, g in runs.groupby("logger", sort=False):
        lines += ["", f"logger {logger}: median |relative error| over targets, seeds and subsamples; "
                      "coverage of the 95 % intervals at the largest size"]
        sizes = sorted(g["size"].unique())
        med = g.assign(a=g["relative_error"].abs()).groupby(["estimator", "size"])["a"].median()
        cov = g[g["size"] == sizes[-1]].groupby("estimator")["covered"].mean()
        lines.append(f"{'estimator':<10}" + "".join(f"{s:>10,}" for s in sizes) + f"{'coverage':>10}")
        for e in g["estimator"].unique():      # every estimator scored, in table order
            lines.append(f"{e:<10}" + "".join(f"{med.get((e, s), math.nan):>10.1%}" for s in sizes)
                         + f"{cov.get(e, math.nan):>10.0%}")
    return "\n".join(lines) + "\n"


def tile_section(s: Settings, tmp: Path, out: Path) -> list[Path]:
    """The per-impression section: log, evaluate, summarise, chart; returns the written files."""
    by_size, by_pool = [], []
    # Finished (logger, seed) units are kept in out/units: a killed run resumes with --out <out>.
    units = UnitStore(out / "units", s)
    print(f"finished units are kept in {out / 'units'}; to resume, re-run with --out {out}", flush=True)
    for logger_name, logger in s.loggers.items():
        for seed in s.seeds:
            t0 = time.perf_counter()
            unit = units.get(f"{logger_name}-seed{seed}")
            if unit is None:
                run = log_run(s, logger, seed, tmp / f"{len(by_size)}")
                unit = evaluate_log(s, run, seed, uniform_logger=logger == {"name": "uniform"})
                units.put(f"{logger_name}-seed{seed}", unit)
            rows, pool_rows = unit
            by_size += [{"logger": logger_name, "seed": seed, **r} for r in rows]
            by_pool += [{"logger": logger_name, "seed": seed, **r} for r in pool_rows]
            print(f"logger {logger_name!r}, seed {seed}: evaluated up to {max(r['size'] for r in rows):,} impressions "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)
    runs = pd.DataFrame(by_size)
    summary = summarise(runs)
    files = [out / "ope_accuracy_summary.csv", out / "ope_accuracy_runs.csv", out / "ope_accuracy_by_pool_size.csv"]
    # Each file whole or absent (through a temporary name), whenever the run is stopped.
    write_frame(files[1], runs)
    write_frame(files[0], summary)
    pool = pd.DataFrame(by_pool)
    write_frame(files[2], pool)
    from experiments.ope_plots import bias_chart, error_vs_pool_size_chart, error_vs_size_chart

    files += [error_vs_size_chart(runs, out / "relative_error_vs_log_size.png"),
              bias_chart(summary, out / "bias_at_full_log.png")]
    if len(pool):
        files.append(error_vs_pool_size_chart(pool, s.pool_size_n, out / "relative_error_vs_pool_size.png"))
    print(error_tables(runs), end="")
    return files


def main(argv: list[str] | None = None) -> int:
    from experiments.cli_help import prog
    ap = argparse.ArgumentParser(prog=prog("experiments.ope_accuracy"), description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5, help="number of seeds (independent logs per logger)")
    ap.add_argument("--days", type=float, default=4.0)
    ap.add_argument("--members", type=int, default=4000)
    ap.add_argument("--n-bootstrap", type=int, default=200, help="resamples per estimate (0: no intervals)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 seeds, 1 day, 1,500 members")
    ap.add_argument("--out", type=Path, help="output directory")
    ap.add_argument("--sections", default="tiles,pages",
                    help="comma-separated: tiles (per-impression estimators), pages (slate estimators)")
    args = ap.parse_args(argv)
    sections = {x.strip() for x in args.sections.split(",") if x.strip()}
    if not sections or sections - {"tiles", "pages"}:
        ap.error(f"--sections must list tiles and/or pages, got {args.sections!r}")
    s = Settings(seeds=tuple(range(args.seeds)), days=args.days, n_bootstrap=args.n_bootstrap)
    s.world["n_members"] = args.members
    if args.quick:
        s.seeds, s.days, s.replicates = (0, 1), 1.0, 1
        s.world["n_members"], s.sizes, s.pool_size_n, s.pool_replicates = 1500, (1_000, 3_000, 10_000), 3_000, 1
    pages = PageSettings(n_bootstrap=args.n_bootstrap)
    if args.quick:
        pages.seeds, pages.sizes, pages.replicates, pages.truth_replications = (0,), (150, 400), 2, 10
        pages.world["n_members"], pages.world["n_titles"] = 500, 60
        pages.default_pages_members = 0
    out = args.out or Path("outputs/ope_accuracy") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    files: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "tiles" in sections:
            files += tile_section(s, Path(tmp), out)
        if "pages" in sections:
            files += run_page_section(pages, Path(tmp), out)
    print(f"\n{time.perf_counter() - start:.0f} s. tables: " + ", ".join(str(f) for f in files if f.suffix == ".csv"))
    print("charts: " + ", ".join(str(f) for f in files if f.suffix == ".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
