"""The chart of a sweep over seeds only: every cell's metrics across seeds, not one cell as "policy".

``charts/sweep_seeds.png``: one panel per metric (take fraction, artwork gain, quality plays per
visit, take-fraction lift over the control); each cell's value in every seed (dots) and its mean
over seeds with a 95 % t interval (bar), so that the spread between seeds is visible next to the
interval it gives.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.plotting import percent_axis, plt, save
from experiments.results import REPLICATE_KEY, Run, aggregate, metric_is_percent, metric_label, parameter_value

#: Panels of the chart: (metric, from the lift section?) when the runs report it.
PANELS = (("take_fraction", False), ("artwork_gain", False), ("quality_plays_per_visit", False),
          ("take_fraction", True))


def cell_values(runs: list[Run], metric: str, lift: bool) -> dict[str, list[tuple[str, float]]]:
    """{cell: [(seed, value), ...]} over the runs, cells in the first run's order."""
    out: dict[str, list[tuple[str, float]]] = {}
    for r in runs:
        seed = parameter_value(r, REPLICATE_KEY)
        section = r.metrics.get("lift", {}) if lift else r.metrics["cells"]
        for cell, d in section.items():
            v = (d.get(metric) or {}).get("estimate")
            if v is not None:
                out.setdefault(cell, []).append((seed, float(v)))
    return out


def seed_sweep_chart(runs: list[Run], path: Path) -> Path:
    """Every cell's metrics across the sweep's seeds, with the mean and its 95 % t interval."""
    panels = [(m, lift) for m, lift in PANELS if cell_values(runs, m, lift)]
    seeds = sorted({parameter_value(r, REPLICATE_KEY) for r in runs}, key=lambda s: (len(s), s))
    cells = list(runs[0].metrics["cells"])
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(9, 0.75 * len(cells) + 4), 3.4 * len(panels)),
                             squeeze=False, sharex=True)
    x = np.arange(len(cells))
    for ax, (metric, lift) in zip(axes[:, 0], panels):
        values = cell_values(runs, metric, lift)
        for si, seed in enumerate(seeds):
            xs, ys = zip(*[(x[i] - 0.18, v) for i, c in enumerate(cells) for s, v in values.get(c, []) if s == seed]
                          or [(np.nan, np.nan)])
            ax.plot(np.asarray(xs) + 0.06 * si, ys, "o", ms=4, color=f"C{si % 10}", alpha=0.8,
                    label=f"seed {seed}")
        for i, c in enumerate(cells):
            pts = values.get(c, [])
            if not pts:
                continue
            p = aggregate([v for _, v in pts], [np.nan] * len(pts), [s for s, _ in pts])
            if p.n_seeds >= 2:
                ax.errorbar([x[i] + 0.18], [p.mean], yerr=[[p.mean - p.low], [p.high - p.mean]], fmt="s",
                            color="black", capsize=4, ms=5, label="mean, 95 % t interval" if i == 0 else None)
            else:
                ax.plot([x[i] + 0.18], [p.mean], "s", color="black", ms=5)
        if lift or metric == "artwork_gain":
            ax.axhline(0, color="black", lw=0.8)
        label = metric_label(metric)
        ax.set_ylabel(f"{label} lift over control (%)" if lift
                      else f"{label} (%)" if metric_is_percent(metric) else label, fontsize=9)
        if lift or metric_is_percent(metric):
            percent_axis(ax)
        ax.grid(axis="y")
    axes[-1, 0].set_xticks(x, cells, rotation=30 if len(cells) > 6 else 0, ha="right" if len(cells) > 6 else "center")
    axes[-1, 0].set_xlabel("cell")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=9, frameon=False,
               title="each seed's value (dots) and the mean over seeds (squares)", title_fontsize=9)
    fig.suptitle(f"Sweep over seeds only: {len(seeds)} seeds of experiment "
                 f"'{runs[0].metrics.get('experiment')}', every cell", fontsize=12)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(labels) > 8), 1, 1))
    return save(fig, path)
