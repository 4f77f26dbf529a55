"""Charts of a run or a sweep: ``python -m experiments.plot <run dir | sweep dir>``.

A run directory gets ``<run>/charts/``:

* ``<metric>_over_time.png`` for every ratio metric of :mod:`sim.metrics` with ``chart = True``
  (CTR, take fraction) -- per cell, with 95 % bands (from the impression log with members as
  clusters when the run logged impressions, else binomial);
* ``lift.png`` -- lift of each cell over the control cell for every metric of ``metrics.json``
  with an interval, labelled from the metric table, with 95 % intervals;
* ``cumulative_regret.png`` -- expected quality plays lost against the oracle artwork choice;
* ``homepage.png`` -- the same titles on two members' homepages (see :mod:`experiments.page_picture`).

A sweep directory gets ``<sweep>/sweep_summary.csv`` (one row per run) and, per swept parameter,
``<sweep>/charts/sweep_<parameter>.png``: the take fraction of the policy under test and its lift
over the control cell against the parameter, one line per policy, with 95 % intervals across
seeds; a sweep over seeds only gets ``sweep_seeds.png`` instead (every cell across seeds, see
:mod:`experiments.seed_plots`). Runs of the sweep that have no charts yet get theirs.
Run charts beyond the basic ones are in :mod:`experiments.run_plots` (artwork gain, regret rate,
choice share, Lorenz curves, daily bins) and :mod:`experiments.experiment_plots` (per experiment).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from experiments.experiment_plots import experiment_charts
from experiments.plotting import finish, percent_axis, plt, save, time_line
from experiments.results import (POLICY_KEY, REPLICATE_KEY, aggregate, find_runs, interval_metrics, or_nan,
                                 is_run_dir, lift_se, load_run, metric_label, paired_differences, read_log,
                                 swept_parameters, sweep_table)
from experiments.run_plots import (artwork_gain_chart, bin_hours, choice_share_chart, lift_and_gain_panel,
                                   log_series, lorenz_chart, rebin, regret_rate_chart)
from experiments.seed_plots import seed_sweep_chart
from experiments.ctrl_c import FILES_WHOLE, one_line_on_ctrl_c
from sim.metrics import COLUMNS, METRICS, RatioMetric
from sim.outputs import write_csv


def charted_metrics() -> list[type[RatioMetric]]:
    """Ratio metrics drawn over time (``chart = True``), in the metric table's order."""
    return [m for m in METRICS.classes.values() if issubclass(m, RatioMetric) and m.chart]


def log_outcomes() -> dict[str, str]:
    """Charted per-impression metrics -> the impression-log column of their numerator."""
    source = {c.name: c.source for c in COLUMNS}
    return {m.name: source[m.numerator] for m in charted_metrics()
            if m.denominator == "impressions" and source.get(m.numerator)}


def read_series(run_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """timeseries.csv -> {cell: {column: array over buckets}}."""
    cols: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with open(run_dir / "timeseries.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            for k, v in row.items():
                if k != "cell":
                    cols[row["cell"]][k].append(float(v) if v not in ("", "nan") else np.nan)
    return {c: {k: np.asarray(v) for k, v in d.items()} for c, d in cols.items()}


def clustered_standard_errors(run_dir: Path, bucket_minutes: float, n_buckets: int):
    """Per cell and time bucket, the standard error of each charted per-impression metric (CTR,
    take fraction) with members as clusters (delta method, as for the run's summary), from the impression log.

    A member's impressions within a bucket are correlated (one member, usually one visit), so
    the binomial error understates the spread (by a factor of about 1.4 on the default world).
    Returns {cell: {metric: se array (n_buckets,)}} or None when the run has no log.
    """
    outcomes = log_outcomes()
    log = read_log(run_dir, ["time", "member", *outcomes.values()])
    if log is None:
        return None
    data, names = log
    bucket = np.minimum((data["time"] // bucket_minutes).astype(np.int64), n_buckets - 1)
    n_members = int(data["member"].max()) + 1 if data["member"].size else 1
    out = {}
    for ci, name in enumerate(names):
        sel = data["cell"] == ci
        cluster, inv = np.unique(bucket[sel] * n_members + data["member"][sel], return_inverse=True)
        b = cluster // n_members
        n_m = np.bincount(inv).astype(float)
        k = np.bincount(b, minlength=n_buckets).astype(float)          # members per bucket
        s_n = np.bincount(b, n_m, minlength=n_buckets)
        out[name] = {}
        for metric, column in outcomes.items():
            y_m = np.bincount(inv, data[column][sel].astype(float))
            with np.errstate(invalid="ignore", divide="ignore"):
                rate = np.bincount(b, y_m, minlength=n_buckets) / s_n
                resid2 = np.bincount(b, (y_m - rate[b] * n_m) ** 2, minlength=n_buckets)
                out[name][metric] = np.sqrt(resid2 * k / (k - 1)) / s_n
    return out


def _rate_chart(series, metric: type[RatioMetric], path: Path, clustered, bin_label: str) -> Path:
    fig, ax = plt.subplots(figsize=(9, 5))
    name = metric.name
    for cell, s in series.items():
        days = s["hour"] / 24.0
        se = clustered[cell][name] if clustered and name in clustered.get(cell, {}) else s.get(name + "_se")
        time_line(ax, days, s[name], se, cell)
    if metric.percent:
        percent_axis(ax)
    # Per-visit metrics are not in the clustered errors (computed from the impression log).
    by_member = bool(clustered) and all(name in clustered.get(c, {}) for c in series)
    band_text = ("95 % band, members as clusters" if by_member
                 else "95 % band, binomial (ignores within-member correlation)")
    return finish(fig, ax, path, title=f"{metric.label[0].upper() + metric.label[1:]} ({metric.unit}) over time, "
                  f"{bin_label} bins",
                  xlabel="simulated time (days)", ylabel=metric.axis_label(),
                  legend_title=f"cell ({band_text})", fontsize=9, title_fontsize=9)


def _lift_chart(metrics: dict, path: Path) -> Path:
    """Lift of every cell over the control per metric (left) and each cell's artwork gain (right)."""
    lifts = metrics["lift"]
    cells = list(lifts)
    # Artwork gain gets its own panel: it is already relative to a random image, not to the control.
    names = [m for m in interval_metrics(metrics) if cells and m in lifts[cells[0]] and m != "artwork_gain"]
    with_gain = any(isinstance(c.get("artwork_gain"), dict) for c in metrics["cells"].values())
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.5), width_ratios=(2.2, 1), squeeze=False) if with_gain \
        else plt.subplots(figsize=(10, 5.5), squeeze=False)
    ax = axes[0][0]
    if with_gain:
        lift_and_gain_panel(axes[0][1], metrics)
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(cells))
    for j, m in enumerate(names):
        est = np.array([or_nan(lifts[c][m]["estimate"]) for c in cells])
        lo = np.array([or_nan(lifts[c][m]["ci_low"]) for c in cells])
        hi = np.array([or_nan(lifts[c][m]["ci_high"]) for c in cells])
        ax.bar(x + (j - (len(names) - 1) / 2) * width, est, width, label=metric_label(m),
               yerr=[est - lo, hi - est], capsize=3)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, cells)
    percent_axis(ax)
    return finish(fig, ax, path, title=f"Lift over control cell '{metrics['control']}' "
                  "(95 % CI, per-member delta method)", xlabel="cell", ylabel="lift over the control (relative, %)",
                  legend_title="metric", grid_axis="y", ncol=2, fontsize=8)


def _regret_chart(series, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 5))
    for cell, s in series.items():
        ax.plot(s["hour"] / 24.0, s["cumulative_regret"], label=cell, lw=1.8)
    return finish(fig, ax, path, title="Cumulative expected regret vs the oracle artwork choice "
                  "(grows with the cell's size; regret_per_1k_over_time.png compares cells)",
                  xlabel="simulated time (days)", ylabel="expected quality plays lost (count)",
                  legend_title="cell")


def plot_run(run_dir: Path | str, picture: bool = True, picture_cell: str | None = None) -> list[Path]:
    """Write the run's charts; returns their paths."""
    run_dir = Path(run_dir)
    charts = run_dir / "charts"
    charts.mkdir(exist_ok=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    engine = metrics.get("config", {}).get("engine", {})
    snapshot = float(engine.get("snapshot_hours", 6.0))
    hours = bin_hours(float(engine.get("days", 1.0)), snapshot)
    series = rebin(read_series(run_dir), snapshot, hours)
    n_buckets = len(next(iter(series.values()))["hour"]) if series else 1
    clustered = clustered_standard_errors(run_dir, 60.0 * hours, n_buckets)
    label = "daily" if hours == 24 else f"{hours:g}-hour"
    out = [_rate_chart(series, m, charts / f"{m.name}_over_time.png", clustered, label)
           for m in charted_metrics() if series and m.name in next(iter(series.values()))]
    if series:
        from_log = log_series(run_dir, hours, n_buckets)
        out.append(artwork_gain_chart(series, from_log, charts / "artwork_gain_over_time.png", label))
        out.append(regret_rate_chart(series, from_log, charts / "regret_per_1k_over_time.png", label))
    out.append(_regret_chart(series, charts / "cumulative_regret.png"))
    if metrics.get("lift"):
        out.append(_lift_chart(metrics, charts / "lift.png"))
    focal = load_run(run_dir).focal_cell
    out += [p for p in (choice_share_chart(run_dir, focal, hours, n_buckets, charts / "artwork_choice_share.png"),
                        lorenz_chart(run_dir, int(metrics.get("config", {}).get("world", {}).get("n_titles", 0)),
                                     charts / "exposure_lorenz.png", list(metrics["cells"]))) if p is not None]
    out += experiment_charts(run_dir, metrics, charts)
    if picture:
        from experiments.page_picture import plot_homepage_picture

        page = plot_homepage_picture(run_dir, charts / "homepage.png", picture_cell)
        if page is not None:
            out.append(page)
    return out


# ---- sweeps ------------------------------------------------------------------------------------
UNITS = {"_hours": "hours", "_minutes": "minutes", "days": "days", "n_members": "members",
         "n_titles": "titles", "visits_per_day": "visits per member per day"}


def axis_label(key: str) -> str:
    unit = next((u for suffix, u in UNITS.items() if key.endswith(suffix)), None)
    return f"{key} ({unit})" if unit else key


def _x_positions(values: list[str]) -> tuple[dict[str, float], bool]:
    """Numeric parameter values keep their scale (log when they span a factor of 20 or more);
    anything else is categorical, in sorted order."""
    if not _is_numeric(values):
        return {v: float(i) for i, v in enumerate(sorted(values))}, False
    nums = {v: float(v) for v in values}
    positive = all(x > 0 for x in nums.values())
    log = positive and max(nums.values()) / min(nums.values()) >= 20
    return nums, log


def sweep_chart(rows: list[dict], key: str, path: Path) -> Path:
    """Take fraction and take-fraction lift of each run's policy under test against ``key``; for
    a two-valued ``key``, also the change in lift between its values paired by seed."""
    panels = [("take_fraction", "take fraction of the policy under test (%)")]
    if any(r["lift_take_fraction"] is not None for r in rows):
        panels.append(("lift_take_fraction", "take-fraction lift over the control cell (%)"))
    values = sorted({r[key] for r in rows})
    categorical = not _is_numeric(values)
    if not categorical:
        values.sort(key=float)
    pos, log_x = _x_positions(values)
    lines = sorted({r["cell"] for r in rows})
    paired = {line: paired_differences([r for r in rows if r["cell"] == line], key, "lift_take_fraction")
              for line in lines} if len(panels) == 2 and len(values) == 2 else {}
    paired = {k: d for k, d in paired.items() if d is not None}
    n_panels = len(panels) + bool(paired)
    fig, axes = plt.subplots(1, n_panels, figsize=(5.2 * n_panels, 5.2), squeeze=False)
    colours = {line: f"C{i}" for i, line in enumerate(lines)}
    methods, seeds_seen = set(), set()
    for ax, (metric, ylabel) in zip(axes[0], panels):
        for li, line in enumerate(lines):
            xs, ys, lo, hi = [], [], [], []
            for v in values:
                mine = [r for r in rows if r["cell"] == line and r[key] == v]
                point = aggregate([r[metric] for r in mine], [_metric_se(r, metric) for r in mine],
                                  [str(r.get(REPLICATE_KEY, "")) for r in mine])
                if point.n_seeds == 0:
                    continue
                methods.add(point.method)
                seeds_seen.add(point.n_seeds)
                # Nudge lines apart so that their error bars do not hide each other.
                offset = li - (len(lines) - 1) / 2
                if categorical:
                    xs.append(pos[v] + 0.06 * offset)
                elif log_x:
                    xs.append(pos[v] * 1.03 ** offset)
                else:
                    xs.append(pos[v] + 0.01 * offset * (max(pos.values()) - min(pos.values())))
                ys.append(point.mean)
                lo.append(point.mean - point.low)
                hi.append(point.high - point.mean)
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=4, lw=1.6, label=line,
                        color=colours[line], ls="none" if categorical else "-")
        if metric.startswith("lift"):
            ax.axhline(0, color="black", lw=0.8)
        if categorical:
            ax.set_xticks([pos[v] for v in values], values)
            ax.set_xlim(-0.5, len(values) - 0.5)
        elif log_x:
            ax.set_xscale("log")
            ax.set_xticks([pos[v] for v in values], values)
        ax.set_xlabel(axis_label(key))
        ax.set_ylabel(ylabel)
        percent_axis(ax)
        ax.grid()
    if paired:
        ax = axes[0][-1]
        for li, (line, d) in enumerate(paired.items()):
            ax.errorbar([li], [100 * d["mean"]], yerr=[[100 * (d["mean"] - d["ci_low"])],
                                                        [100 * (d["ci_high"] - d["mean"])]],
                        marker="o", capsize=4, ls="none", color=colours[line])
            p = f"p = {d['p_value']:.3f}" if math.isfinite(d["p_value"]) else "p n/a"
            ax.annotate(f"{100 * d['mean']:+.2f} pp\nn = {d['n_pairs']}, {p}", (li, 100 * d["mean"]),
                        textcoords="offset points", xytext=(10, 0), ha="left", va="center", fontsize=9)
        d0 = next(iter(paired.values()))
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(paired)), list(paired))
        ax.set_xlim(-0.6, len(paired) - 0.1)
        ax.set_xlabel("policy under test (cell)")
        ax.set_ylabel(f"lift with {d0['to']} minus lift with {d0['from']} (percentage points)")
        ax.set_title("change in lift, paired by seed (95 % t interval)", fontsize=10)
        ax.grid()
    if methods == {"seeds"}:
        n = "-".join(str(s) for s in sorted(seeds_seen))
        how = f"mean over {n} seeds, 95 % t interval across seeds"
    else:
        how = "95 % interval of each run (per-member delta method)" + \
            (" or across seeds where several" if "seeds" in methods else "")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title="policy under test (cell)", loc="lower center",
               ncol=min(len(lines), 6), fontsize=9, title_fontsize=9, frameon=False)
    fig.suptitle(f"Sweep over {key}: {how}", fontsize=12)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return save(fig, path)


def _is_numeric(values: list[str]) -> bool:
    try:
        [float(v) for v in values]
        return True
    except ValueError:
        return False


def _metric_se(row: dict, metric: str) -> float:
    if metric.startswith("lift_"):
        est = row[metric]
        se_log = lift_se({"ci_low": row[f"{metric}_ci_low"], "ci_high": row[f"{metric}_ci_high"]})
        return float("nan") if est is None else (1 + est) * se_log
    se = row.get(f"{metric}_se")
    return float("nan") if se is None else se


def sweep_axes(params: list[str]) -> list[str]:
    """Parameters to put on an x axis: everything swept but the seed and the policy (which get
    intervals and lines); the policy itself when nothing else is swept."""
    axes = [k for k in params if k not in (REPLICATE_KEY, POLICY_KEY)]
    return axes or [POLICY_KEY]


def plot_sweep(sweep_dir: Path | str) -> list[Path]:
    """Write ``sweep_summary.csv`` and one chart per swept parameter; returns the chart paths."""
    sweep_dir = Path(sweep_dir)
    runs = find_runs(sweep_dir)
    if not runs:
        raise FileNotFoundError(f"{sweep_dir} holds no complete run")
    for r in runs:
        if not (r.path / "charts").is_dir():
            plot_run(r.path)
    params = swept_parameters(runs)
    rows = sweep_table(runs, params)
    write_csv(sweep_dir / "sweep_summary.csv", rows)
    charts = sweep_dir / "charts"
    charts.mkdir(exist_ok=True)
    out = []
    if params == [REPLICATE_KEY]:
        # Seeds only: every cell across seeds (no parameter to put on an axis, and no one cell
        # stands for the experiment).
        return [seed_sweep_chart(runs, charts / "sweep_seeds.png")]
    for key in sweep_axes(params):
        if key == POLICY_KEY and key not in params:
            for r in rows:
                r[POLICY_KEY] = r["cell"]
        safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in key)
        out.append(sweep_chart(rows, key, charts / f"sweep_{safe}.png"))
    return out


@one_line_on_ctrl_c(FILES_WHOLE)
def main(argv: list[str] | None = None) -> None:
    from experiments.cli_help import prog
    ap = argparse.ArgumentParser(prog=prog("experiments.plot"), description=__doc__.splitlines()[0])
    ap.add_argument("directory", type=Path, help="a run directory or a sweep directory")
    ap.add_argument("--no-picture", action="store_true", help="skip the homepage picture (runs)")
    ap.add_argument("--picture-cell", help="cell whose pages the homepage picture shows "
                                           "(default: oracle if present, else the policy under test)")
    args = ap.parse_args(argv)
    import pyarrow as pa
    import yaml

    try:
        if is_run_dir(args.directory):
            paths = plot_run(args.directory, not args.no_picture, args.picture_cell)
        elif args.directory.is_dir() and find_runs(args.directory):
            paths = plot_sweep(args.directory)
            print(args.directory / "sweep_summary.csv")
        else:
            raise SystemExit(f"error: {args.directory} is not a run directory (no metrics.json) "
                             "nor a sweep directory (no complete */metrics.json)")
    except (OSError, ValueError, KeyError, pa.ArrowException, yaml.YAMLError) as err:
        # A corrupt or truncated file of the run (Parquet part, metrics.json, config.yaml).
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SystemExit(f"error: {args.directory} cannot be plotted: {type(err).__name__}: {text}") from None
    for p in paths:
        print(p)


if __name__ == "__main__":
    main()
