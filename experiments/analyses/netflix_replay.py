"""The Netflix offline comparison, and how offline replay agrees with the online A/B test.

The run logs uniform-random artwork exploration in its control cell (``uniform``) while the
other cells run the candidate policies online. Offline: each candidate is trained on the first
half of the exploration log (one deploy, then frozen) and scored on the second half by replay
(Li, Chu, Langford and Wang 2011: keep the impressions where the policy would have chosen the
logged image). The chart reproduces the ordering of the Netflix tech blog's offline comparison
(contextual > non-personalized > random) and sets each replay estimate beside the same policy's
online take fraction in the A/B test and its exact value on the same impressions.

    python -m experiments.run experiment=netflix_replay          # runs this analysis at the end
    python -m experiments.analyses.netflix_replay <run dir>
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from experiments.evaluate import evaluate, load_source
from experiments.plotting import finish, percent_axis, plt
from sim.outputs import write_csv

LOGGER = "uniform"
ESTIMATORS = ["replay", "ipw"]


def analyze(run_dir: Path, logger: str = LOGGER, n_bootstrap: int = 500) -> list[Path]:
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cells = metrics["config"]["experiment"]["cells"]
    if logger not in {c["name"] for c in cells}:
        raise SystemExit(f"error: netflix_replay needs a uniform exploration cell named {logger!r}")
    data, truth, _ = load_source(run_dir, logger, None)
    policies = [(c["name"], c["policy"]) for c in cells]
    rows = evaluate(data, policies, truth, train_fraction=0.5, estimators=ESTIMATORS,
                    lambda_=np.inf, n_bootstrap=n_bootstrap, seed=0, folds=2, online=False)
    for r in rows:
        online = metrics["cells"][r["policy"]]["take_fraction"]
        r.update(online_take_fraction=online["estimate"], online_ci_low=online["ci_low"],
                 online_ci_high=online["ci_high"])
    table = run_dir / "netflix_replay.csv"
    write_csv(table, rows)
    charts = run_dir / "charts"
    charts.mkdir(exist_ok=True)
    return [table, _chart([r for r in rows if r["estimator"] == "replay"], len(data) - rows[0]["n_impressions"],
                          rows[0]["n_impressions"], charts / "netflix_replay.png")]


def _chart(rows: list[dict], n_train: int, n_test: int, path: Path) -> Path:
    rows = sorted(rows, key=lambda r: r["estimate"])
    names = [r["policy"] for r in rows]
    pct = lambda k: np.array([r[k] for r in rows])  # noqa: E731  (fractions; percent axes)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1.2, 1]})
    x = np.arange(len(rows))
    est, lo, hi = pct("estimate"), pct("ci_low"), pct("ci_high")
    # Points with intervals, not bars: the differences are a few percent of the level.
    left.errorbar(x - 0.08, est, yerr=[est - lo, hi - est], fmt="o", capsize=5, color="tab:blue",
                  label="replay estimate (95 % CI)")
    left.scatter(x + 0.08, pct("truth"), marker="D", color="black", zorder=3,
                 label="exact value on the same impressions")
    left.set_xticks(x, names)
    left.set_xlim(-0.5, len(rows) - 0.5)
    left.set_title(f"Offline replay on uniform exploration logs\n(trained on {n_train:,}, "
                   f"scored on {n_test:,} impressions)")
    left.set_xlabel("artwork policy")
    left.set_ylabel("take fraction (%)")
    percent_axis(left)
    left.grid(axis="y")
    left.legend(loc="upper left")
    on, on_lo, on_hi = pct("online_take_fraction"), pct("online_ci_low"), pct("online_ci_high")
    for i, name in enumerate(names):
        right.errorbar(est[i], on[i], xerr=[[est[i] - lo[i]], [hi[i] - est[i]]],
                       yerr=[[on[i] - on_lo[i]], [on_hi[i] - on[i]]], fmt="o", capsize=3, label=name)
    span = [min(lo.min(), on_lo.min()) * 0.95, max(hi.max(), on_hi.max()) * 1.05]
    right.plot(span, span, color="grey", lw=1, ls="--", label="replay = online")
    percent_axis(right, "both")
    return finish(fig, right, path, title="Replay (offline) vs A/B test (online)",
                  xlabel="replay take fraction (%)", ylabel="online take fraction in the A/B test (%)",
                  legend_title="policy", fontsize=8)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Replay vs online take fraction")
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--logger", default=LOGGER, help="name of the uniform exploration cell")
    args = ap.parse_args(argv)
    for p in analyze(args.run_dir, args.logger):
        print(p)


if __name__ == "__main__":
    main()
