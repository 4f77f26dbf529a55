"""Cold start: where does a contextual artwork policy gain over a non-personalized one?

Netflix reports the largest lift of personalized artwork where the member had no prior
interaction with the title. This analysis splits a run's impressions into new titles (launched
during the run, also by hours since launch) vs established ones, and into members who never
interacted with the title vs those who did, and charts the lift of the contextual cell over the
non-personalized cell in each segment, with 95 % intervals (members are the randomisation
unit). The main metric is the artwork gain over a random image on the same impressions (see
:mod:`experiments.segments`); the realised take fraction is shown beside it.

    python -m experiments.run experiment=cold_start          # runs this analysis at the end
    python -m experiments.analyses.cold_start <run dir>      # or on any run with both cells
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import yaml

from experiments.plotting import finish, percent_axis, plt
from experiments.segments import read_log, segment_lifts
from sim.config import experiment_config_from_dict
from sim.world import build_world

CONTEXTUAL, REFERENCE = "lints", "thompson"
#: Hours since launch for the new-title segments.
AGE_BINS = ((0, 6, "0-6 h"), (6, 24, "6-24 h"), (24, 72, "1-3 days"), (72, float("inf"), "> 3 days"))


def launch_times(run_dir: Path) -> np.ndarray:
    """Launch minute per title, rebuilt from the run's config (the world is deterministic)."""
    cfg = experiment_config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    world = build_world(cfg.world, cfg.seed, cfg.engine.days * 1440.0, cfg.engine.member_block, blocks=range(0))
    return world.catalog.launch_time          # (no member drawn: only the catalog is needed)


def analyze(run_dir: Path, cell: str = CONTEXTUAL, reference: str = REFERENCE) -> list[Path]:
    run_dir = Path(run_dir)
    log = read_log(run_dir, ["cell", "member", "title", "time", "familiar", "quality_play",
                             "expected_take", "uniform_take"])
    cells = set(np.unique(log["cell"]))
    if not {cell, reference} <= cells:
        raise SystemExit(f"error: cold_start needs cells {cell!r} and {reference!r}; this run has "
                         f"{', '.join(sorted(cells))}")
    launch = launch_times(run_dir)[log["title"]]
    new_title = launch > 0
    age_hours = (log["time"] - launch) / 60.0
    segments = {"new titles": new_title, "established titles": ~new_title,
                "never interacted": ~log["familiar"], "interacted before": log["familiar"]}
    # How the advantage evolves after a launch: the shared model knows a new image at once, a
    # per-image bandit has to learn it from that title's own impressions.
    for lo, hi, label in AGE_BINS:
        segments[f"new, {label} after launch"] = new_title & (age_hours >= lo) & (age_hours < hi)
    result = segment_lifts(log, segments, cell, reference)
    rows = []
    for seg, r in result.items():
        for kind in ("lift", "gain_lift"):
            rows.append({"segment": seg, "metric": kind, "impressions_cell": r["cell"].impressions,
                         "impressions_reference": r["reference"].impressions, **r[kind]})
    charts = run_dir / "charts"
    charts.mkdir(exist_ok=True)
    table = run_dir / "cold_start.csv"
    with open(table, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    chart = _chart(result, cell, reference, charts / "cold_start_lift.png")
    (run_dir / "cold_start.json").write_text(json.dumps(
        {seg: {k: r[k] for k in ("lift", "gain_lift")} for seg, r in result.items()}, indent=2))
    return [table, chart]


def _chart(result: dict, cell: str, reference: str, path: Path) -> Path:
    segs = list(result)
    x = np.arange(len(segs))
    fig, ax = plt.subplots(figsize=(13, 5.5))
    for j, (kind, label) in enumerate((("gain_lift", "artwork gain over a random image (true probabilities)"),
                                       ("lift", "realised take fraction"))):
        est = np.array([result[s][kind]["estimate"] for s in segs])
        lo = np.array([result[s][kind]["ci_low"] for s in segs])
        hi = np.array([result[s][kind]["ci_high"] for s in segs])
        ax.bar(x + (j - 0.5) * 0.38, est, 0.38, yerr=[est - lo, hi - est], capsize=4, label=label)
    ax.axhline(0, color="black", lw=0.8)
    percent_axis(ax)
    ax.set_xticks(x, [f"{s.replace(', ', chr(10))}\n({result[s]['cell'].impressions:,} imp.)" for s in segs],
                  fontsize=8)
    return finish(fig, ax, path, title=f"Cold start: lift of '{cell}' over '{reference}' by segment (95 % CI)",
                  xlabel="impression segment (impressions in the contextual cell)",
                  ylabel="take-fraction lift (%)", legend_title="metric", grid_axis="y")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Cold-start lift by segment")
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--cell", default=CONTEXTUAL)
    ap.add_argument("--reference", default=REFERENCE)
    args = ap.parse_args(argv)
    for p in analyze(args.run_dir, args.cell, args.reference):
        print(p)


if __name__ == "__main__":
    main()
