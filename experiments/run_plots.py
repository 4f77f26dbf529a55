"""The charts of one run that answer "what did the artwork policy do?" (drawn by :mod:`experiments.plot`).

* time bins: the run's ``timeseries.csv`` buckets (``engine.snapshot_hours``), merged into daily
  bins for runs longer than :data:`DAILY_AFTER_DAYS` days (6-hour bins make long runs spaghetti);
* ``artwork_gain_over_time.png``: each cell's artwork gain (true take of the shown images over a
  random image's on the same impressions, minus one) per bin, 95 % band with members as clusters;
* ``regret_per_1k_over_time.png``: expected quality plays lost per 1,000 impressions against the
  oracle image, per bin (comparable across cells of any size), 95 % band;
* ``artwork_choice_share.png``: for the most shown titles of the policy under test, the share of
  each of the title's images per bin: how the bandit converges;
* ``exposure_lorenz.png``: per cell, the Lorenz curve of impressions across titles, Gini in the legend.

The bands come from the impression log (members as clusters, delta method for a ratio); a run
without a log gets the binomial band where one exists.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.plotting import band, finish, percent_axis, plt, save, time_line
from experiments.results import or_nan, read_log
from sim.bias import lorenz_band
from sim.metrics import METRICS, SERIES_COLUMNS, RatioMetric

#: Runs longer than this many simulated days are charted in daily bins.
DAILY_AFTER_DAYS = 3.0
#: Titles in the artwork choice-share chart (the most shown in the policy under test's cell).
CHOICE_TITLES = 4
#: Images per title drawn in the choice-share chart (the most shown; the rest summed as "others").
CHOICE_IMAGES = 5


# ---- time bins ---------------------------------------------------------------------------------
def bin_hours(days: float, snapshot_hours: float) -> float:
    """Width of a chart's time bin: the snapshot interval, or a day for runs longer than
    :data:`DAILY_AFTER_DAYS` (a multiple of the snapshot interval, so bins merge whole buckets)."""
    if days <= DAILY_AFTER_DAYS or snapshot_hours >= 24:
        return snapshot_hours
    return snapshot_hours * max(1, round(24 / snapshot_hours))


def rebin(series: dict[str, dict[str, np.ndarray]], snapshot_hours: float, hours: float):
    """Merge ``timeseries.csv`` buckets into bins of ``hours``: the accumulated columns are summed,
    every ratio metric is recomputed from the sums (with its binomial standard error where it has
    one), and ``hour`` is the end of each bin. Returns a series of the same shape as ``series``."""
    if hours == snapshot_hours:
        return series
    out = {}
    for cell, s in series.items():
        index = ((s["hour"] - snapshot_hours) // hours).astype(np.int64)
        n = int(index.max()) + 1 if index.size else 0
        b = {k: np.bincount(index, np.nan_to_num(s[k]), minlength=n) for k in SERIES_COLUMNS if k in s}
        b["hour"] = np.minimum((np.arange(n) + 1) * hours, s["hour"].max())
        for m in METRICS.classes.values():
            if issubclass(m, RatioMetric) and m.numerator in b and m.denominator in b:
                with np.errstate(invalid="ignore", divide="ignore"):
                    p = b[m.numerator] / b[m.denominator]
                    b[m.name] = p
                    b[m.name + "_se"] = (np.sqrt(p * (1 - p) / b[m.denominator]) if m.binomial
                                         else np.full(n, np.nan))
        if "cumulative_regret" in s:
            b["cumulative_regret"] = np.cumsum(b["oracle_take"] - b["expected_take"])
        out[cell] = b
    return out


# ---- member-clustered ratio errors from the impression log ------------------------------------
def clustered_ratio(numerator: np.ndarray, denominator: np.ndarray, member: np.ndarray,
                    bucket: np.ndarray, n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Ratio sum(numerator) / sum(denominator) per bucket and its delta-method standard error with
    members as clusters (one member's impressions within a bucket are correlated).

    All inputs have shape (n_impressions,); returns (ratio, se), each shape (n_buckets,).
    """
    n_members = int(member.max()) + 1 if member.size else 1
    cluster, inv = np.unique(bucket * n_members + member, return_inverse=True)
    b = cluster // n_members
    y = np.bincount(inv, numerator.astype(float))
    x = np.bincount(inv, denominator.astype(float))
    k = np.bincount(b, minlength=n_buckets).astype(float)            # members per bucket
    sx = np.bincount(b, x, minlength=n_buckets)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.bincount(b, y, minlength=n_buckets) / sx
        resid2 = np.bincount(b, (y - ratio[b] * x) ** 2, minlength=n_buckets)
        se = np.sqrt(resid2 * k / (k - 1)) / sx
    return ratio, se


def log_series(run_dir: Path, hours: float, n_bins: int):
    """Per cell and bin, artwork gain and regret per 1,000 impressions with member-clustered standard
    errors, from the impression log: {cell: {"artwork_gain": (est, se), "regret_per_1k": (est, se)}};
    None when the run wrote no log."""
    log = read_log(run_dir, ["time", "member", "expected_take", "uniform_take", "oracle_take"])
    if log is None:
        return None
    data, names = log
    bucket = np.minimum((data["time"] // (60.0 * hours)).astype(np.int64), n_bins - 1)
    out = {}
    for ci, name in enumerate(names):
        sel = data["cell"] == ci
        if not sel.any():
            continue
        member, bk = data["member"][sel], bucket[sel]
        expected, uniform = data["expected_take"][sel], data["uniform_take"][sel]
        gain, gain_se = clustered_ratio(expected, uniform, member, bk, n_bins)
        regret, regret_se = clustered_ratio(1000.0 * (data["oracle_take"][sel] - expected),
                                            np.ones(sel.sum()), member, bk, n_bins)
        out[name] = {"artwork_gain": (gain - 1.0, gain_se), "regret_per_1k": (regret, regret_se)}
    return out


# ---- charts ------------------------------------------------------------------------------------
def _over_time(series, from_log, key: str, path: Path, *, title: str, ylabel: str, percent: bool,
               series_value) -> Path:
    fig, ax = plt.subplots(figsize=(9, 5))
    clustered = from_log is not None
    for cell, s in series.items():
        days = s["hour"] / 24.0
        if clustered and cell in from_log:
            est, se = from_log[cell][key]
            est, se = est[:days.size], se[:days.size]
        else:
            est, se = series_value(s), None
        time_line(ax, days, est, se, cell)
    if percent:
        percent_axis(ax)
    ax.axhline(0, color="black", lw=0.8)
    how = "95 % band, members as clusters" if clustered else "no band: the run wrote no impression log"
    return finish(fig, ax, path, title=title, xlabel="simulated time (days, end of bin)", ylabel=ylabel,
                  legend_title=f"cell ({how})", fontsize=9, title_fontsize=9)


def artwork_gain_chart(series, from_log, path: Path, bin_label: str) -> Path:
    """Artwork gain of every cell per time bin (0 = a random image's true take)."""
    def value(s):
        with np.errstate(invalid="ignore", divide="ignore"):
            return s["expected_take"] / s["uniform_take"] - 1.0
    return _over_time(series, from_log, "artwork_gain", path, percent=True, series_value=value,
                      title=f"Artwork gain over time ({bin_label} bins): true take of the shown images "
                            "vs a random image's",
                      ylabel="artwork gain (true take / random image's - 1, %)")


def regret_rate_chart(series, from_log, path: Path, bin_label: str) -> Path:
    """Expected quality plays lost per 1,000 impressions against the oracle image, per bin."""
    def value(s):
        with np.errstate(invalid="ignore", divide="ignore"):
            return 1000.0 * (s["oracle_take"] - s["expected_take"]) / s["impressions"]
    return _over_time(series, from_log, "regret_per_1k", path, percent=False, series_value=value,
                      title=f"Regret per 1,000 impressions over time ({bin_label} bins), vs the oracle image",
                      ylabel="expected quality plays lost per 1,000 impressions")


def choice_share_chart(run_dir: Path, cell: str, hours: float, n_bins: int, path: Path) -> Path | None:
    """Share of each image of the most shown titles in ``cell``, per time bin, with binomial 95 % bands."""
    log = read_log(run_dir, ["time", "title", "artwork"])
    if log is None:
        return None
    data, names = log
    if cell not in names:
        return None
    sel = data["cell"] == names.index(cell)
    title, artwork = data["title"][sel], data["artwork"][sel]
    bucket = np.minimum((data["time"][sel] // (60.0 * hours)).astype(np.int64), n_bins - 1)
    if title.size == 0:
        return None
    top = np.argsort(-np.bincount(title), kind="stable")[:CHOICE_TITLES]
    days = (np.arange(n_bins) + 1) * hours / 24.0
    fig, axes = plt.subplots(1, len(top), figsize=(3.6 * len(top) + 1, 4.4), sharey=True, squeeze=False)
    for ax, t in zip(axes[0], top):
        mine = title == t
        shown = np.bincount(bucket[mine], minlength=n_bins).astype(float)
        images, counts = np.unique(artwork[mine], return_counts=True)
        order = images[np.argsort(-counts, kind="stable")]
        for j, a in enumerate(order[:CHOICE_IMAGES]):
            k = np.bincount(bucket[mine & (artwork == a)], minlength=n_bins).astype(float)
            with np.errstate(invalid="ignore", divide="ignore"):
                p = k / shown
                se = np.sqrt(p * (1 - p) / shown)
            line, = ax.plot(days, p, lw=1.6, label=f"image {j + 1}", color=f"C{j}")
            band(ax, days, p, se, line.get_color(), alpha=0.15)
        if order.size > CHOICE_IMAGES:
            k = np.bincount(bucket[mine & np.isin(artwork, order[CHOICE_IMAGES:])], minlength=n_bins)
            with np.errstate(invalid="ignore", divide="ignore"):
                ax.plot(days, k / shown, lw=1.2, ls=":", color="grey", label="other images")
        ax.set_title(f"title {t} ({order.size} images, {int(shown.sum()):,} impressions)", fontsize=9)
        ax.set_xlabel("simulated time (days)")
        ax.set_ylim(0, 1)
        ax.grid()
        percent_axis(ax)
    axes[0][0].set_ylabel("share of the title's impressions (%)")
    # One legend for all panels, from the panel with the most images.
    handles, labels = max((ax.get_legend_handles_labels() for ax in axes[0]), key=lambda hl: len(hl[1]))
    fig.legend(handles, labels, title="image, by impressions over the run (95 % binomial band)",
               loc="lower center", ncol=len(labels), fontsize=9, title_fontsize=9, frameon=False)
    fig.suptitle(f"Artwork choice share over time: the {len(top)} most shown titles of cell '{cell}'", fontsize=12)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return save(fig, path)


def lorenz_chart(run_dir: Path, n_titles: int, path: Path, cells: list[str] | None = None) -> Path | None:
    """Lorenz curve of impressions across the catalog per cell (every title, shown or not); cells
    in the order of ``cells`` (the run's order, so that colours match the other charts)."""
    log = read_log(run_dir, ["title", "member"])
    if log is None:
        return None
    data, names = log
    fig, ax = plt.subplots(figsize=(6.5, 6))
    n = max(n_titles, int(data["title"].max()) + 1 if data["title"].size else 1)
    rng = np.random.default_rng(0)             # the bootstrap's draws: the same chart every time
    for name in [c for c in (cells or names) if c in names]:
        mine = data["cell"] == names.index(name)
        if not mine.any():
            continue
        curve = lorenz_band(data["title"][mine], data["member"][mine], n, rng)
        line, = ax.plot(curve["x"], curve["y"], lw=1.8, label=f"{name} (Gini {curve['gini']:.3f} "
                        f"[{curve['gini_low']:.3f}, {curve['gini_high']:.3f}])")
        ax.fill_between(curve["x"], curve["low"], curve["high"], color=line.get_color(), alpha=0.2, lw=0)
    ax.plot([0, 1], [0, 1], color="black", lw=0.8, ls="--", label="equal exposure")
    percent_axis(ax, "both", 0)
    return finish(fig, ax, path, title="Exposure Lorenz curves: impressions across titles, whole run",
                  xlabel="titles, least shown first (cumulative share, %)",
                  ylabel="impressions (cumulative share, %)",
                  legend_title="cell (Gini of impressions, 95 % member bootstrap; band: 95 %)")


def lift_and_gain_panel(ax, metrics: dict) -> None:
    """Artwork gain per cell with its 95 % interval (the policy's effect, from ground truth)."""
    cells = [c for c, v in metrics["cells"].items() if isinstance(v.get("artwork_gain"), dict)]
    est = np.array([or_nan(metrics["cells"][c]["artwork_gain"]["estimate"]) for c in cells])
    lo = np.array([or_nan(metrics["cells"][c]["artwork_gain"]["ci_low"]) for c in cells])
    hi = np.array([or_nan(metrics["cells"][c]["artwork_gain"]["ci_high"]) for c in cells])
    ax.bar(np.arange(len(cells)), est, 0.6, yerr=[est - lo, hi - est], capsize=4, color="C4",
           label="artwork gain (95 % CI)")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(cells)), cells)
    ax.set_title("Artwork gain per cell (true take vs a random image, 95 % CI)", fontsize=10)
    ax.set_xlabel("cell")
    ax.set_ylabel("artwork gain (%)")
    ax.grid(axis="y")
    ax.legend()
    percent_axis(ax)


__all__ = ["DAILY_AFTER_DAYS", "artwork_gain_chart", "bin_hours", "choice_share_chart",
           "clustered_ratio", "lift_and_gain_panel", "log_series", "lorenz_chart", "rebin",
           "regret_rate_chart"]
