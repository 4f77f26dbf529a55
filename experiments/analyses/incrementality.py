"""Incrementality: per-impression lift vs page-level lift, and the cannibalization share.

Reads one run, or a sweep over response models and seeds, of ``experiment=incrementality``
(cells oracle, thompson, lints, diverse_thompson against uniform). Each run's ``metrics.json``
has an ``incrementality`` section (:mod:`sim.metrics.incrementality`): per cell vs the control,
the per-impression lift (take fraction on impressions of titles with 2+ images), the per-visit
and per-member lifts of quality plays and the cannibalization share ``1 - page lift / impression
lift``, with per-member delta-method 95 % intervals.

Over seeds (independent worlds and members) the estimates are averaged per (response model,
cell); the interval of the mean combines the runs' delta-method standard errors,
``se = sqrt(sum se_i^2) / k`` (a lift's ``se_i`` is its log-scale interval's half width / Z95,
close to symmetric at these sizes). The spread between seeds is reported beside it.

    python -m experiments.run -m experiment=incrementality          # runs this per run
    python -m experiments.analyses.incrementality multirun/incrementality/<stamp>   # the sweep

Writes ``incrementality.csv`` (per run and cell), ``incrementality_summary.csv`` and
``incrementality.md`` (the table) and ``charts/incrementality.png`` into the run (or sweep)
directory, and prints the table.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from experiments.plotting import Z95, percent_axis, plt, save
from experiments.results import analysis_runs, mean_se
from sim.config import experiment_config_from_dict
from sim.outputs import atomic_write_text, write_csv

#: The quantities reported, in table order: key in metrics.json -> column label.
MEASURES = {"per_impression_lift": "per-impression lift", "per_visit_lift": "per-visit lift",
            "per_member_lift": "per-member lift", "cannibalization_share": "cannibalization share"}
#: Drawn in the chart, one panel each.
CHARTED = ("per_impression_lift", "per_visit_lift", "cannibalization_share")


def run_rows(run_dir: Path) -> list[dict]:
    """One row per non-control cell of one run: estimate, 95 % interval and se of each measure."""
    m = json.loads((Path(run_dir) / "metrics.json").read_text())
    section = m.get("incrementality") or {}
    # The validated config names the response model even where the run's config left it default.
    response = experiment_config_from_dict(m["config"]).world.response.name
    rows = []
    for cell, r in section.items():
        row = {"response_model": response, "seed": m.get("seed"), "cell": cell, "control": m["control"]}
        for key in MEASURES:
            # Undefined numbers are null in metrics.json (sim.outputs): NaN here.
            v = {k: float("nan") if x is None else float(x) for k, x in r[key].items()}
            se = v.get("se", (v["ci_high"] - v["ci_low"]) / (2 * Z95))
            row.update({key: v["estimate"], f"{key}_low": v["ci_low"], f"{key}_high": v["ci_high"],
                        f"{key}_se": se})
        rows.append(row)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per (response model, cell): mean over seeds, the combined delta-method interval, and the
    standard error between seeds."""
    out = []
    for resp, cell in sorted({(r["response_model"], r["cell"]) for r in rows},
                             key=lambda k: (k[0], _cell_order(k[1]))):
        group = [r for r in rows if r["response_model"] == resp and r["cell"] == cell]
        row = {"response_model": resp, "cell": cell, "seeds": len(group)}
        for key in MEASURES:
            est = np.array([g[key] for g in group], np.float64)
            se = np.array([g[f"{key}_se"] for g in group], np.float64)
            ok = np.isfinite(est) & np.isfinite(se)
            k = int(ok.sum())
            mean = float(est[ok].mean()) if k else float("nan")
            pooled = float(math.sqrt((se[ok] ** 2).sum()) / k) if k else float("nan")
            row.update({key: mean, f"{key}_low": mean - Z95 * pooled, f"{key}_high": mean + Z95 * pooled,
                        f"{key}_se": pooled, f"{key}_seed_se": mean_se(list(est[ok]))[1]})
        out.append(row)
    return out


def _cell_order(cell: str) -> tuple[int, str]:
    order = ("oracle", "thompson", "diverse_thompson", "lints")
    return (order.index(cell) if cell in order else len(order), cell)


def markdown(summary: list[dict]) -> str:
    """The table: one row per (response model, cell), each measure as ``estimate [low, high]``."""
    head = "| response model | cell | seeds | " + " | ".join(MEASURES.values()) + " |"
    lines = [head, "|" + "---|" * (3 + len(MEASURES))]
    for s in summary:
        cells = [f"{100 * s[k]:+.1f} % [{100 * s[k + '_low']:+.1f}, {100 * s[k + '_high']:+.1f}]"
                 if math.isfinite(s[k]) else "n/a" for k in MEASURES]
        lines.append(f"| {s['response_model']} | {s['cell']} | {s['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chart(rows: list[dict], summary: list[dict], control: str, path: Path) -> Path:
    """One panel per charted measure: cells on x, one marker per response model with its 95 %
    interval (combined over seeds), the seeds' own estimates as small dots."""
    models = sorted({s["response_model"] for s in summary})
    cells = sorted({s["cell"] for s in summary}, key=_cell_order)
    x = np.arange(len(cells))
    width = 0.7 / max(len(models), 1)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, len(CHARTED), figsize=(5.2 * len(CHARTED), 4.6))
    for ax, key in zip(axes, CHARTED):
        for j, model in enumerate(models):
            off = (j - (len(models) - 1) / 2) * width
            s = {r["cell"]: r for r in summary if r["response_model"] == model}
            est = np.array([s[c][key] if c in s else np.nan for c in cells])
            lo = np.array([s[c][f"{key}_low"] if c in s else np.nan for c in cells])
            hi = np.array([s[c][f"{key}_high"] if c in s else np.nan for c in cells])
            ax.errorbar(x + off, est, yerr=[est - lo, hi - est], fmt="o", color=colors[j % len(colors)],
                        capsize=4, label=f"{model}: mean of seeds, 95 % interval")
            for r in rows:
                if r["response_model"] == model and r["cell"] in cells:
                    ax.plot(x[cells.index(r["cell"])] + off + 0.08, r[key], ".", color=colors[j % len(colors)],
                            alpha=0.45, ms=5)
        ax.axhline(0.0, color="0.3", lw=0.8)
        ax.set_xticks(x, cells, rotation=15)
        percent_axis(ax)
        ax.set_xlabel("artwork policy (cell)")
        ax.grid(axis="y")
        unit = "% of the lift" if key == "cannibalization_share" else f"% vs {control}"
        ax.set_ylabel(f"{MEASURES[key]} ({unit})")
        ax.set_title(MEASURES[key])
    axes[0].plot([], [], ".", color="0.4", label="one seed")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, title="response model", loc="lower center", ncol=len(labels))
    fig.suptitle(f"Incrementality vs {control}: created or moved? (cannibalization = 1 - per-visit lift / "
                 "per-impression lift)", fontsize=11)
    fig.tight_layout(rect=(0, 0.12, 1, 0.96))
    return save(fig, path)


def analyze(run_dir: Path) -> list[Path]:
    """One run, or a sweep directory (runs below it): table, summary and chart."""
    run_dir = Path(run_dir)
    rows = [r for d in analysis_runs(run_dir) for r in run_rows(d)]
    if not rows:
        raise SystemExit(f"error: no incrementality section in the metrics.json of {run_dir}")
    summary = summarize(rows)
    table = markdown(summary)
    print(table)
    charts = run_dir / "charts"
    charts.mkdir(exist_ok=True)
    paths = [run_dir / "incrementality.csv", run_dir / "incrementality_summary.csv", run_dir / "incrementality.md"]
    write_csv(paths[0], rows)
    write_csv(paths[1], summary)
    atomic_write_text(paths[2], table)
    paths.append(chart(rows, summary, rows[0]["control"], charts / "incrementality.png"))
    return paths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Incrementality table and chart of a run or sweep")
    ap.add_argument("run_dir", type=Path)
    for p in analyze(ap.parse_args(argv).run_dir):
        print(p)


if __name__ == "__main__":
    main()
