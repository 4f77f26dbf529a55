"""Charts of ``experiments.ope_accuracy`` (kept apart so the experiment reads as an experiment)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter

from experiments.plotting import Z95, percent_formatter, plt, save
from sim.ope.estimators import ESTIMATOR_NAMES

COLORS = dict(zip(ESTIMATOR_NAMES, plt.get_cmap("tab10").colors))
PERCENT = percent_formatter()


def log_log_axes(ax, sizes) -> None:
    """Log-log axes of an error-vs-size panel: the sizes as ticks, written out ("1,000", not
    mathtext powers of ten, which are slow to lay out), errors in percent, a grid on both."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sizes, [f"{int(x):,}" for x in sizes])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(PERCENT)
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3, which="both", lw=0.5)


def error_vs_size_chart(runs: pd.DataFrame, path: Path) -> Path:
    """|relative error| vs log size, log-log: rows = loggers, columns = targets; median over seeds
    and subsamples with an interquartile band."""
    loggers, targets = list(runs["logger"].unique()), list(runs["target"].unique())
    fig, axes = plt.subplots(len(loggers), len(targets), figsize=(4.2 * len(targets), 3.6 * len(loggers) + 1),
                             sharex=True, sharey=True, squeeze=False)
    a = runs.assign(abs_error=runs["relative_error"].abs())
    for i, logger in enumerate(loggers):
        for j, target in enumerate(targets):
            ax = axes[i, j]
            g = a[(a["logger"] == logger) & (a["target"] == target)]
            for e in ESTIMATOR_NAMES:
                q = g[g["estimator"] == e].groupby("size")["abs_error"].quantile([0.25, 0.5, 0.75]).unstack()
                if q.empty:
                    continue
                ax.plot(q.index, q[0.5], marker="o", ms=3, color=COLORS[e], label=e)
                ax.fill_between(q.index, q[0.25], q[0.75], color=COLORS[e], alpha=0.12, lw=0)
            ipw = g[g["estimator"] == "ipw"].groupby("size")["abs_error"].median()
            if len(ipw):
                n0, y0 = ipw.index[0], ipw.iloc[0]
                ns = np.array(sorted(g["size"].unique()), dtype=float)
                ax.plot(ns, y0 * np.sqrt(n0 / ns), color="grey", ls="--", lw=1, label="∝ 1/√n")
            log_log_axes(ax, sorted(g["size"].unique()))
            truth = g["truth"].mean()
            ax.set_title(f"logger: {logger}\ntarget: {target} (true value ≈ {truth:.2%})", fontsize=9)
            if i == len(loggers) - 1:
                ax.set_xlabel("log size (impressions)")
            if j == 0:
                ax.set_ylabel("|relative error| (%)")
    return _finish(fig, axes, path, "estimator: median over seeds and subsamples, band = interquartile range",
                   "Off-policy estimates vs the simulator's exact value on the same impressions",
                   rect=(0, 0.08, 1, 0.97))



def _signed_errors_by_target(ax, g: pd.DataFrame, colors: dict[str, str], value_and_se) -> None:
    """One panel of a bias chart: per target, one dot per estimator (offset side by side) with a
    95 % interval; ``value_and_se(rows of one estimator, indexed by target)`` -> (value, se)."""
    targets = list(g["target"].unique())
    width = 0.8 / len(colors)
    for k, (e, color) in enumerate(colors.items()):
        value, se = value_and_se(g[g["estimator"] == e].set_index("target").reindex(targets))
        x = np.arange(len(targets)) + (k - (len(colors) - 1) / 2) * width
        ax.errorbar(x, value, yerr=Z95 * se.fillna(0), fmt="o", color=color, capsize=3, label=e)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(targets)), targets)

def bias_chart(summary: pd.DataFrame, path: Path) -> Path:
    """Signed relative error on the largest log per logger: mean over seeds with a 95 % interval."""
    loggers = list(summary["logger"].unique())
    fig, axes = plt.subplots(1, len(loggers), figsize=(6.5 * len(loggers), 4.8), sharey=True, squeeze=False)
    for ax, logger in zip(axes[0], loggers):
        g = summary[summary["logger"] == logger]
        g = g[g["size"] == g["size"].max()]
        _signed_errors_by_target(ax, g, {e: COLORS[e] for e in ESTIMATOR_NAMES},
                                 lambda ge: (ge["mean_relative_error"], ge["se_mean_relative_error"]))
        ax.yaxis.set_major_formatter(PERCENT)
        ax.set_xlabel("target policy")
        ax.set_title(f"logger: {logger}, {int(g['size'].max()):,} impressions", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel("relative error, estimate / truth − 1 (%)")
    return _finish(fig, axes, path, "estimator: mean over seeds with 95 % CI",
                   "Bias: signed relative error on the full evaluation log", rect=(0, 0.1, 1, 1))


def _finish(fig, axes, path: Path, legend_title: str, title: str, rect, ncol: int | None = None) -> Path:
    """One legend for the whole figure (the estimators of the first panel), title, save, close."""
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=ncol or len(labels), fontsize=9, title=legend_title)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=rect)
    return save(fig, path, dpi=100)


def error_vs_pool_size_chart(pool: pd.DataFrame, n: int, path: Path,
                             targets: tuple[str, ...] = ("fixed", "oracle")) -> Path:
    """Uniform logger, ``n`` impressions per estimate, titles grouped by pool size K.

    Left: error inflation -- the root-mean-square of each estimate's error divided by the
    standard error an on-policy log of the same size would have, ``sqrt(V (1 - V) / n)`` (V the
    true value). Dividing by it removes the groups' different take fractions, leaving the cost
    of estimating off-policy; for a deterministic target under uniform logging, replay and IPS
    keep about n/K impressions, so their inflation is about sqrt(K). Right: effective sample size.
    """
    g = pool[pool["logger"] == pool["logger"].iloc[0]]
    det = g[g["target"].isin(targets)]
    det = det.assign(z=det["relative_error"] / np.sqrt((1 - det["truth"]) / (n * det["truth"])))
    x = det.groupby("pool_size")["mean_pool_size"].mean().sort_values()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for e in ESTIMATOR_NAMES:
        rms = det[det["estimator"] == e].groupby("pool_size")["z"].apply(lambda z: np.sqrt(np.mean(z ** 2)))
        ax.plot(x.values, rms.reindex(x.index).values, marker="o", color=COLORS[e], label=e)
    k = np.linspace(x.values.min(), x.values.max(), 50)
    ax.plot(k, np.sqrt(k), color="grey", ls="--", lw=1, label="√K")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("artworks in the title's pool, K (mean of the group)")
    ax.set_ylabel("RMS error / on-policy standard error (ratio)")
    ax.set_title(f"Error inflation at {n:,} impressions; targets: {', '.join(targets)}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(title="estimator (over seeds and subsamples)", fontsize=8, title_fontsize=8)
    ess = g[g["estimator"] == "ipw"]
    for target, gt in ess.groupby("target", sort=False):
        s = gt.groupby("pool_size")[["mean_pool_size", "effective_sample_size"]].mean().sort_values("mean_pool_size")
        ax2.plot(s["mean_pool_size"], s["effective_sample_size"] / n, marker="o", label=target)
    ax2.set_ylim(bottom=0)
    ax2.set_xlabel("artworks in the title's pool, K (mean of the group)")
    ax2.set_ylabel("effective sample size (share of impressions)")
    ax2.yaxis.set_major_formatter(PERCENT)
    ax2.set_title("(Σw)² / Σw² of the importance weights: about 1/K for a deterministic target", fontsize=10)
    ax2.grid(alpha=0.3)
    ax2.legend(title="target policy", fontsize=8, title_fontsize=8)
    fig.suptitle(f"More artworks, fewer matches (logger: {g['logger'].iloc[0]})", fontsize=12)
    fig.tight_layout()
    return save(fig, path, dpi=100)


# ---- page level (slate estimators) ------------------------------------------------------------------
def _slate_colors():
    from sim.ope.estimators.slate import SLATE_ESTIMATOR_NAMES

    return dict(zip(SLATE_ESTIMATOR_NAMES, plt.get_cmap("Set1").colors))


def page_error_vs_size_chart(summary: pd.DataFrame, path: Path) -> Path:
    """Relative RMSE of each slate estimator vs the number of logged pages, log-log; rows =
    response models, columns = targets; band = 95 % interval of the RMSE (delta method over
    replicate logs); dotted = |bias|."""
    colors = _slate_colors()
    responses, targets = list(summary["response"].unique()), list(summary["target"].unique())
    fig, axes = plt.subplots(len(responses), len(targets), figsize=(5.2 * len(targets), 3.9 * len(responses) + 1),
                             sharex=True, sharey=True, squeeze=False)
    for i, response in enumerate(responses):
        for j, target in enumerate(targets):
            ax = axes[i, j]
            g = summary[(summary["response"] == response) & (summary["target"] == target)]
            for e, color in colors.items():
                ge = g[g["estimator"] == e].sort_values("size")
                if ge.empty:
                    continue
                truth = ge["truth"].to_numpy()
                rel = ge["rmse"].to_numpy() / truth
                half = Z95 * ge["se_rmse"].to_numpy() / truth
                ax.plot(ge["size"], rel, marker="o", ms=3, color=color, label=f"{e} RMSE")
                ax.fill_between(ge["size"], np.maximum(rel - half, 1e-4), rel + half, color=color, alpha=0.15, lw=0)
                ax.plot(ge["size"], np.maximum(ge["bias"].abs().to_numpy() / truth, 1e-4), ls=":", color=color,
                        lw=1.2, label=f"{e} |bias|")
            log_log_axes(ax, sorted(g["size"].unique()))
            ax.set_title(f"response: {response}\ntarget: {target} (true ≈ {g['truth'].mean():.3f} quality plays/page)",
                         fontsize=9)
            if i == len(responses) - 1:
                ax.set_xlabel("log size (pages)")
            if j == 0:
                ax.set_ylabel("error / true page value (%)")
    return _finish(fig, axes, path, "slate estimator: relative RMSE (band: 95 % CI) and |bias| (dotted)",
                   "Page-level off-policy estimates vs the simulator's page value", rect=(0, 0.12, 1, 0.97),
                   ncol=5)


def page_bias_chart(summary: pd.DataFrame, path: Path) -> Path:
    """Signed relative bias on the largest logs with 95 % intervals (over replicate logs): one
    panel per response model, estimators grouped by target."""
    colors = _slate_colors()
    responses = list(summary["response"].unique())
    fig, axes = plt.subplots(1, len(responses), figsize=(6.5 * len(responses), 4.8), sharey=True, squeeze=False)
    for ax, response in zip(axes[0], responses):
        g = summary[summary["response"] == response]
        g = g[g["size"] == g["size"].max()]
        _signed_errors_by_target(ax, g, colors,
                                 lambda ge: (ge["bias"] / ge["truth"], ge["se_bias"] / ge["truth"]))
        ax.yaxis.set_major_formatter(PERCENT)
        ax.set_xlabel("target policy")
        ax.set_title(f"response: {response}, {int(g['size'].max()):,} pages per log", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel("bias / true page value (%)")
    return _finish(fig, axes, path, "slate estimator: mean error over replicate logs, 95 % CI",
                   "Page-level bias: which estimators survive competing tiles", rect=(0, 0.1, 1, 1))
