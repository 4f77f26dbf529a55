"""Charts that answer one experiment's own question, drawn with a run's charts (``experiment.name``).

* ``clickbait_trap.png``: the click learner's lift over the quality-play learner for CTR, take
  fraction and quality plays per visit, next to the mean representativeness of the images each
  cell shows over time (the mechanism: clicks pull towards unrepresentative, appealing images);
* ``stickiness.png``: each cell's artwork gain (95 % CI), next to the share of repeat impressions
  (a member seeing a title again) that show a different image than last time, over time.

A new experiment's chart is one function ``(run_dir, metrics, charts_dir) -> path`` registered in
:data:`EXPERIMENT_CHARTS` under the experiment's name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from experiments.plotting import band, percent_axis, plt, save
from experiments.results import metric_label, read_log
from experiments.run_plots import bin_hours, clustered_ratio, lift_and_gain_panel

#: Metrics whose lift the clickbait chart shows: what the click learner buys and what it costs.
CLICKBAIT_METRICS = ("ctr", "take_fraction", "quality_plays_per_visit")


def _bins(metrics: dict, time: np.ndarray) -> tuple[np.ndarray, int, float]:
    engine = metrics.get("config", {}).get("engine", {})
    hours = bin_hours(float(engine.get("days", 1.0)), float(engine.get("snapshot_hours", 6.0)))
    n = max(1, int(np.ceil(float(engine.get("days", 1.0)) * 24 / hours)))
    return np.minimum((time // (60.0 * hours)).astype(np.int64), n - 1), n, hours


def _lift_bars(ax, metrics: dict, names: tuple[str, ...]) -> None:
    lifts = metrics.get("lift", {})
    cells = list(lifts)
    width = 0.8 / max(len(cells), 1)
    for j, cell in enumerate(cells):
        d = [lifts[cell].get(m) or {} for m in names]
        est = np.array([np.nan if x.get("estimate") is None else x["estimate"] for x in d])
        lo = np.array([np.nan if x.get("ci_low") is None else x["ci_low"] for x in d])
        hi = np.array([np.nan if x.get("ci_high") is None else x["ci_high"] for x in d])
        ax.bar(np.arange(len(names)) + (j - (len(cells) - 1) / 2) * width, est, width,
               yerr=[est - lo, hi - est], capsize=4, label=f"{cell} vs {metrics['control']}")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(names)), [metric_label(m) for m in names])
    ax.set_ylabel("lift over the control cell (%)")
    ax.grid(axis="y")
    ax.legend(title="cell (95 % CI, per-member delta method)")
    percent_axis(ax)


def clickbait_trap_chart(run_dir: Path, metrics: dict, charts: Path) -> Path | None:
    from sim.ope.runs import run_config, run_world

    log = read_log(run_dir, ["time", "member", "artwork"])
    if log is None:
        return None
    data, names = log
    world = run_world(run_config(run_dir), blocks=range(0))        # the catalog's truth, no member
    representativeness = np.asarray(world.response.representativeness, float)
    bucket, n, hours = _bins(metrics, data["time"])
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    _lift_bars(axes[0], metrics, CLICKBAIT_METRICS)
    axes[0].set_title("What the click learner buys and costs", fontsize=11)
    def shown(sel):              # representativeness of each impression's image, every impression
        return representativeness[data["artwork"][sel]], np.ones(sel.sum(), bool)

    _cell_lines(axes[1], data, names, bucket, n, hours, shown)
    axes[1].set_title("Representativeness of the images shown (1 = shows what the title is)", fontsize=11)
    axes[1].set_ylabel("mean representativeness of shown images (0-1)")
    fig.suptitle("Clickbait trap: a bandit trained on clicks vs one trained on quality plays", fontsize=12)
    fig.tight_layout()
    return save(fig, charts / "clickbait_trap.png")


def _cell_lines(ax, data: dict, names: list[str], bucket: np.ndarray, n: int, hours: float, values) -> None:
    """One line per cell over time with its 95 % band (members as clusters): ``values(sel)`` gives,
    for the impressions of a cell (boolean mask ``sel``), their values and which of them count
    (both shape (sel.sum(),)); the line is the mean of the counted values per bin."""
    days = (np.arange(n) + 1) * hours / 24
    for ci, name in enumerate(names):
        sel = data["cell"] == ci
        value, counted = values(sel)
        mean, se = clustered_ratio(value[counted], np.ones(counted.sum()), data["member"][sel][counted],
                                   bucket[sel][counted], n)
        line, = ax.plot(days, mean, lw=1.8, label=name)
        band(ax, days, mean, se, line.get_color())
    ax.set_xlabel("simulated time (days, end of bin)")
    ax.grid()
    ax.legend(title="cell (95 % band, members as clusters)")


def image_changes(member: np.ndarray, title: np.ndarray, time: np.ndarray, artwork: np.ndarray):
    """Per impression: whether the member saw the title before in the log (``repeat``) and whether
    the image differs from the one they saw last time (``changed``); both shape (n,)."""
    order = np.lexsort((time, title, member))
    m, t, a = member[order], title[order], artwork[order]
    same = np.zeros(order.size, bool)
    same[1:] = (m[1:] == m[:-1]) & (t[1:] == t[:-1])
    changed = np.zeros(order.size, bool)
    changed[1:] = same[1:] & (a[1:] != a[:-1])
    repeat, diff = np.empty_like(same), np.empty_like(changed)
    repeat[order], diff[order] = same, changed
    return repeat, diff


def stickiness_chart(run_dir: Path, metrics: dict, charts: Path) -> Path | None:
    log = read_log(run_dir, ["time", "member", "title", "artwork"])
    if log is None:
        return None
    data, names = log
    bucket, n, hours = _bins(metrics, data["time"])
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    lift_and_gain_panel(axes[0], metrics)
    def changed_image(sel):      # per repeat impression: a different image than last time
        repeat, changed = image_changes(data["member"][sel], data["title"][sel], data["time"][sel],
                                        data["artwork"][sel])
        return changed, repeat

    _cell_lines(axes[1], data, names, bucket, n, hours, changed_image)
    percent_axis(axes[1])
    axes[1].set_title("Image changed since the member last saw the title", fontsize=11)
    axes[1].set_ylabel("share of repeat impressions with a new image (%)")
    fig.suptitle("Stickiness: keeping a member's image vs re-choosing it under a change penalty", fontsize=12)
    fig.tight_layout()
    return save(fig, charts / "stickiness.png")


#: experiment name -> its chart.
EXPERIMENT_CHARTS: dict[str, Callable[[Path, dict, Path], Path | None]] = {
    "clickbait_trap": clickbait_trap_chart, "stickiness": stickiness_chart}


def experiment_charts(run_dir: Path, metrics: dict, charts: Path) -> list[Path]:
    """The charts registered for the run's experiment (none for most experiments)."""
    draw = EXPERIMENT_CHARTS.get(str(metrics.get("experiment")))
    path = draw(Path(run_dir), metrics, charts) if draw else None
    return [path] if path is not None else []
