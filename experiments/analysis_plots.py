"""Charts of the experiment analyses (:mod:`experiments.analyses`), kept apart from their maths.

* :func:`feedback_loop_chart` (``feedback_loop.png``): small multiples, one pair of panels per
  daily metric (one panel per artwork policy, shared y axis), one line per ranker arm, one legend
  for the whole figure; shares in percent;
* :func:`clickbait_loop_chart` (``clickbait_loop.png``): per cell, each seed's value and the mean
  with its 95 % t interval across seeds, one panel per measure.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.plotting import band, percent_axis, plt, save
from experiments.results import aggregate, mean_se

#: Daily feedback-loop metrics shown in percent (shares of titles or impressions).
PERCENT_KEYS = {"coverage", "take_fraction"}


def feedback_loop_chart(daily: list[dict], n_seeds: int, path: Path,
                        metrics: tuple[tuple[str, str, str], ...]) -> Path:
    """``daily``: rows with ``cell`` (``<ranker arm>.<policy>``), ``day``, ``seed`` and each metric;
    ``metrics``: (key, panel title, y label with units) in chart order."""
    cells = sorted({r["cell"] for r in daily})
    arms = list(dict.fromkeys(c.partition(".")[0] for c in cells))
    policies = sorted({c.partition(".")[2] for c in cells})
    colors = {arm: plt.cm.tab10.colors[i % 10] for i, arm in enumerate(arms)}
    per_row = 2                                   # metrics per row of the grid
    n_rows = int(np.ceil(len(metrics) / per_row))
    n_cols = per_row * len(policies)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.4 * n_cols + 1, 3.0 * n_rows + 1.2),
                             squeeze=False, sharex=True)
    for i, (key, title, ylabel) in enumerate(metrics):
        row, first = divmod(i, per_row)
        pair = axes[row, first * len(policies):(first + 1) * len(policies)]
        for j, (ax, policy) in enumerate(zip(pair, policies)):
            for arm in arms:
                cell = f"{arm}.{policy}" if policy else arm
                days = sorted({r["day"] for r in daily if r["cell"] == cell})
                if not days:
                    continue
                stats = [mean_se([r[key] for r in daily if r["cell"] == cell and r["day"] == d]) for d in days]
                mean = np.array([s[0] for s in stats])
                ax.plot(days, mean, color=colors[arm], lw=1.6, label=arm)
                if n_seeds > 1:
                    band(ax, days, mean, np.nan_to_num(np.array([s[1] for s in stats])), colors[arm], alpha=0.12)
            ax.set_title(f"{title}: {policy or 'all'}", fontsize=9)
            if key in PERCENT_KEYS:
                percent_axis(ax, digits=0 if key == "coverage" else 2)
            ax.grid()
            ax.tick_params(labelsize=8)
            if j == 0:
                ax.set_ylabel(ylabel.replace("(titles played / titles launched)", "(% of launched titles)"),
                              fontsize=8)
            if j > 0:
                ax.sharey(pair[0])
                ax.tick_params(labelleft=False)
    for ax in axes[-1]:
        ax.set_xlabel("simulated day", fontsize=9)
    for ax in axes.ravel()[len(metrics) * len(policies):]:
        ax.set_visible(False)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    how = f"mean over {n_seeds} seeds with 95 % band" if n_seeds > 1 else "one seed, no band"
    fig.legend(handles, labels, loc="lower center", ncol=len(arms), frameon=False, fontsize=10,
               title=f"ranker arm ({how}); panels: artwork policy", title_fontsize=10)
    fig.suptitle("Feedback loop: exposure concentration, diversity and ranker drift per day, "
                 "one panel per metric and artwork policy", fontsize=12)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return save(fig, path, dpi=100)


#: (measure, panel title, y label, percent?) of the clickbait-loop chart.
CLICKBAIT_PANELS = (
    ("prone_exposure_share", "exposure share of clickbait-prone titles (last day)", "share of impressions (%)", True),
    ("exposure_potential_spearman", "rank correlation: exposure vs clickbait potential",
     "Spearman rho across titles (-1 to 1)", False),
    ("ctr", "CTR over the run", "clicks / impression (%)", True),
    ("take_fraction", "take fraction over the run", "quality plays / impression (%)", True))


def clickbait_loop_chart(rows: list[dict], path: Path) -> Path:
    """``rows``: one per (cell, seed) with the measures of :data:`CLICKBAIT_PANELS`."""
    cells = sorted({r["cell"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    fig, axes = plt.subplots(1, len(CLICKBAIT_PANELS), figsize=(4.4 * len(CLICKBAIT_PANELS), 4.8), squeeze=False)
    x = np.arange(len(cells))
    for ax, (key, title, ylabel, percent) in zip(axes[0], CLICKBAIT_PANELS):
        for si, seed in enumerate(seeds):
            ys = [next((r[key] for r in rows if r["cell"] == c and r["seed"] == seed), np.nan) for c in cells]
            ax.plot(x - 0.15 + 0.05 * si, ys, "o", ms=4, color=f"C{si % 10}", alpha=0.8, label=f"seed {seed}")
        for i, c in enumerate(cells):
            mine = [r for r in rows if r["cell"] == c]
            p = aggregate([r[key] for r in mine], [np.nan] * len(mine), [str(r["seed"]) for r in mine])
            err = [[p.mean - p.low], [p.high - p.mean]] if p.n_seeds >= 2 else None
            ax.errorbar([x[i] + 0.2], [p.mean], yerr=err, fmt="s", color="black", capsize=4, ms=5,
                        label="mean, 95 % t interval" if i == 0 else None)
        ax.set_xticks(x, cells, rotation=20)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.set_xlabel("cell (artwork.ranker signal)", fontsize=9)
        if percent:
            percent_axis(ax)
        ax.grid(axis="y")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, fontsize=9,
               title="each seed (dots) and the mean over seeds (squares)", title_fontsize=9)
    fig.suptitle("Clickbait through the ranker: does a click-trained ranker promote titles that bait artwork "
                 "dresses up?", fontsize=12)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return save(fig, path)
