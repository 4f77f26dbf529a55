"""Incrementality: per-impression lift vs page-level lift, and the cannibalization share.

Reads one run, or a sweep over response models and seeds, of ``experiment=incrementality``
(cells oracle, thompson, lints, diverse_thompson against uniform). Each run's ``metrics.json``
has an ``incrementality`` section (:mod:`sim.metrics.incrementality`): per cell vs the control,
the per-impression lift (take fraction on impressions of titles with 2+ images), the per-visit
and per-member lifts of quality plays and the cannibalization share ``1 - page lift / impression
lift``, with per-member delta-method 95 % intervals.

Over seeds (independent worlds and members, equal weight) the lifts are averaged per
(response model, cell), ``Lbar = mean_s L_s`` with ``se = sqrt(sum_s Var(L_s)) / k`` from the runs'
linear-scale delta-method variances, and the cannibalization share is that of the pooled lifts,
``C = 1 - Lbar_page / Lbar_imp``, with::

    Var(C) = Var(A) / B^2 + A^2 Var(B) / B^4 - 2 A Cov(A, B) / B^3,   A = Lbar_page, B = Lbar_imp

where ``Var(A) = sum_s Var(L_page,s) / k^2`` and ``Cov(A, B) = sum_s Cov_s / k^2`` (each run's
``lift_covariance`` in metrics.json). Averaging per-run shares instead would let a run whose
per-impression lift is near 0 (a share with a huge standard error) dominate. The standard error
between seeds of each run-level estimate (``<measure>_seed_se``) is reported beside it.

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
from experiments.results import analysis_runs, mean_se, or_nan
from sim.config import experiment_config_from_dict
from sim.outputs import atomic_write_text, write_csv

#: The quantities reported, in table order: key in metrics.json -> column label.
MEASURES = {"per_impression_lift": "per-impression lift", "per_visit_lift": "per-visit lift",
            "per_member_lift": "per-member lift", "cannibalization_share": "cannibalization share"}
#: Differences of lifts reported after the cells: (cell, reference cell).
CONTRASTS = (("diverse_thompson", "thompson"),)
#: Drawn in the chart, one panel each.
CHARTED = ("per_impression_lift", "per_visit_lift", "cannibalization_share")


def run_rows(run_dir: Path) -> list[dict]:
    """One row per non-control cell of one run: estimate, 95 % interval and se of each measure,
    and the (co)variances of the page and impression lifts (``var_visit``, ``var_impression``,
    ``cov_visit``, ``var_member``, ``cov_member``)."""
    m = json.loads((Path(run_dir) / "metrics.json").read_text())
    section = m.get("incrementality") or {}
    # The validated config names the response model even where the run's config left it default.
    response = experiment_config_from_dict(m["config"]).world.response.name
    rows = []
    for cell, r in section.items():
        row = {"response_model": response, "seed": m.get("seed"), "cell": cell, "control": m["control"]}
        cov = {level: {k: or_nan(x) for k, x in c.items()} for level, c in r["lift_covariance"].items()}
        row.update({"var_impression": cov["visit"]["var_impression"], "var_visit": cov["visit"]["var_page"],
                    "cov_visit": cov["visit"]["cov"], "var_member": cov["member"]["var_page"],
                    "cov_member": cov["member"]["cov"]})
        for key in MEASURES:
            # Undefined numbers are null in metrics.json (sim.outputs): NaN here.
            v = {k: or_nan(x) for k, x in r[key].items()}
            se = v["se"] if "se" in v else math.sqrt(row[LIFT_VARIANCE[key]])
            row.update({key: v["estimate"], f"{key}_low": v["ci_low"], f"{key}_high": v["ci_high"],
                        f"{key}_se": se})
        rows.append(row)
    return rows


#: Linear-scale delta-method variance of each lift (a column of :func:`run_rows`).
LIFT_VARIANCE = {"per_impression_lift": "var_impression", "per_visit_lift": "var_visit",
                 "per_member_lift": "var_member"}


def pooled_share(a: np.ndarray, b: np.ndarray, var_a: np.ndarray, var_b: np.ndarray,
                 cov: np.ndarray) -> tuple[float, float]:
    """Cannibalization share of the mean page lift ``a`` (k,) over the mean impression lift ``b``
    (k,) of k independent runs, and its delta-method standard error (module docstring)."""
    k = a.size
    A, B = a.mean(), b.mean()
    va, vb, c = var_a.sum() / k ** 2, var_b.sum() / k ** 2, cov.sum() / k ** 2
    var = va / B ** 2 + A ** 2 * vb / B ** 4 - 2 * A * c / B ** 3
    return float(1 - A / B), float(math.sqrt(var)) if var >= 0 else float("nan")


def summarize(rows: list[dict]) -> list[dict]:
    """Per (response model, cell): lifts averaged over seeds and the cannibalization share of
    the averaged lifts, each with a 95 % interval, and the standard error between seeds."""
    out = []
    for resp, cell in sorted({(r["response_model"], r["cell"]) for r in rows},
                             key=lambda k: (k[0], _cell_order(k[1]))):
        group = [r for r in rows if r["response_model"] == resp and r["cell"] == cell]
        col = {k: np.array([g[k] for g in group], np.float64) for k in group[0] if k not in
               ("response_model", "seed", "cell", "control")}
        row = {"response_model": resp, "cell": cell, "seeds": len(group)}
        for key in MEASURES:
            if key == "cannibalization_share":
                est, se = pooled_share(col["per_visit_lift"], col["per_impression_lift"], col["var_visit"],
                                       col["var_impression"], col["cov_visit"])
            else:
                est = float(col[key].mean())
                se = float(math.sqrt(col[LIFT_VARIANCE[key]].sum()) / len(group))
            row.update({key: est, f"{key}_low": est - Z95 * se, f"{key}_high": est + Z95 * se,
                        f"{key}_se": se, f"{key}_seed_se": mean_se(list(col[key]))[1]})
        out.append(row)
    return out + contrasts(rows)


def contrasts(rows: list[dict]) -> list[dict]:
    """Does page awareness change the lifts? Per response model, :data:`CONTRASTS` differences
    of the seed-averaged lifts (percentage points). The two cells share the control, which
    correlates their lifts positively; its covariance is left out, so the interval is
    conservative (too wide, never too narrow)."""
    out = []
    for resp in sorted({r["response_model"] for r in rows}):
        for a, b in CONTRASTS:
            ra = [r for r in rows if r["response_model"] == resp and r["cell"] == a]
            rb = [r for r in rows if r["response_model"] == resp and r["cell"] == b]
            if not ra or not rb:
                continue
            row = {"response_model": resp, "cell": f"{a} - {b}", "seeds": min(len(ra), len(rb))}
            for key in MEASURES:
                if key not in LIFT_VARIANCE:
                    row.update({key: float("nan"), f"{key}_low": float("nan"), f"{key}_high": float("nan"),
                                f"{key}_se": float("nan"), f"{key}_seed_se": float("nan")})
                    continue
                est = np.mean([r[key] for r in ra]) - np.mean([r[key] for r in rb])
                se = math.sqrt(sum(r[LIFT_VARIANCE[key]] for r in ra) / len(ra) ** 2
                               + sum(r[LIFT_VARIANCE[key]] for r in rb) / len(rb) ** 2)
                row.update({key: float(est), f"{key}_low": est - Z95 * se, f"{key}_high": est + Z95 * se,
                            f"{key}_se": se, f"{key}_seed_se": float("nan")})
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
    interval (seeds pooled), the seeds' own estimates as small dots."""
    summary = [s for s in summary if " - " not in s["cell"]]
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
                        capsize=4, label=f"{model}: seeds pooled, 95 % interval")
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
