"""Charts of a run directory: ``python -m experiments.plot <run dir>``.

Writes into ``<run dir>/charts``:

* ``take_fraction_over_time.png`` and ``ctr_over_time.png`` -- per cell, with 95 % bands;
* ``lift.png`` -- lift of each cell over the control cell per metric, with 95 % intervals;
* ``cumulative_regret.png`` -- expected quality plays lost against the oracle artwork choice.
"""
from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

Z95 = 1.959963984540054
METRIC_LABELS = {"ctr": "CTR", "play_rate": "play rate", "take_fraction": "take fraction",
                 "minutes_per_member": "minutes per member"}


def read_series(run_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """timeseries.csv -> {cell: {column: array over buckets}}."""
    cols: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with open(run_dir / "timeseries.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            for k, v in row.items():
                if k != "cell":
                    cols[row["cell"]][k].append(float(v) if v not in ("", "nan") else np.nan)
    return {c: {k: np.asarray(v) for k, v in d.items()} for c, d in cols.items()}


def _rate_chart(series, metric: str, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 5))
    for cell, s in series.items():
        days = s["hour"] / 24.0
        p, se = s[metric] * 100, s[metric + "_se"] * 100
        line, = ax.plot(days, p, label=cell, lw=1.8)
        ax.fill_between(days, p - Z95 * se, p + Z95 * se, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_title(title)
    ax.set_xlabel("simulated time (days)")
    ax.set_ylabel(f"{METRIC_LABELS[metric]} per impression (%)")
    ax.grid(alpha=0.3)
    ax.legend(title="cell (95 % band)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _lift_chart(metrics: dict, path: Path) -> Path:
    lifts = metrics["lift"]
    cells = list(lifts)
    names = [m for m in METRIC_LABELS if cells and m in lifts[cells[0]]]
    fig, ax = plt.subplots(figsize=(9, 5))
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(cells))
    for j, m in enumerate(names):
        est = np.array([(lifts[c][m]["estimate"] or np.nan) * 100 for c in cells])
        lo = np.array([(lifts[c][m]["ci_low"] or np.nan) * 100 for c in cells])
        hi = np.array([(lifts[c][m]["ci_high"] or np.nan) * 100 for c in cells])
        ax.bar(x + (j - (len(names) - 1) / 2) * width, est, width, label=METRIC_LABELS[m],
               yerr=[est - lo, hi - est], capsize=3)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, cells)
    ax.set_title(f"Lift over control cell '{metrics['control']}' (95 % CI, per-member delta method)")
    ax.set_xlabel("cell")
    ax.set_ylabel("lift (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="metric")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _regret_chart(series, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 5))
    for cell, s in series.items():
        ax.plot(s["hour"] / 24.0, s["cumulative_regret"], label=cell, lw=1.8)
    ax.set_title("Cumulative expected regret vs the oracle artwork choice")
    ax.set_xlabel("simulated time (days)")
    ax.set_ylabel("expected quality plays lost (count)")
    ax.grid(alpha=0.3)
    ax.legend(title="cell")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_run(run_dir: Path | str) -> list[Path]:
    """Write the run's charts; returns their paths."""
    run_dir = Path(run_dir)
    charts = run_dir / "charts"
    charts.mkdir(exist_ok=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    series = read_series(run_dir)
    out = [_rate_chart(series, "take_fraction", "Take fraction (quality plays per impression) over time",
                       charts / "take_fraction_over_time.png"),
           _rate_chart(series, "ctr", "Click-through rate over time", charts / "ctr_over_time.png"),
           _regret_chart(series, charts / "cumulative_regret.png")]
    if metrics.get("lift"):
        out.append(_lift_chart(metrics, charts / "lift.png"))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    args = ap.parse_args(argv)
    if not (args.run_dir / "metrics.json").is_file():
        raise SystemExit(f"error: {args.run_dir} is not a run directory (no metrics.json)")
    for p in plot_run(args.run_dir):
        print(p)


if __name__ == "__main__":
    main()
