"""Session calibration of a run against published anchors: ``python -m sim.sessions_report RUN_DIR``.

Reads a run's visit log (``visit_context/``, session columns), impression log and
``metrics.json`` and prints the table "simulated vs published" (Markdown with ``--markdown``)
that the README shows. The anchors (Gomez-Uribe & Hunt, "The Netflix Recommender System", ACM
TMIS 2015, and this project's per-impression calibration) are in :data:`ANCHORS`.

Session figures are over the control cell's visits (the members served without artwork
personalization); CTR and take fraction are the control cell's; the oracle-image lift is the
take-fraction lift of the ``oracle`` cell over the control.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.world.response import SESSION_END_REASONS


@dataclass(frozen=True)
class Anchor:
    key: str
    label: str
    low: float
    high: float
    source: str
    percent: bool = False


#: The published (or assumed) ranges each simulated figure is compared with.
ANCHORS = (
    Anchor("median_tiles_looked", "tiles looked at per session (median)", 10, 20,
           "Gomez-Uribe & Hunt 2015: 10-20 titles reviewed"),
    Anchor("mean_detail_views", "detail views per session (mean)", 1, 3,
           "Gomez-Uribe & Hunt 2015: perhaps 3 in detail"),
    Anchor("median_seconds_no_play", "session length without a play (median, s)", 60, 90,
           "Gomez-Uribe & Hunt 2015: 60-90 s, then the member leaves"),
    Anchor("play_share", "sessions ending in a play", 0.3, 0.6,
           "assumption: 30-60 % (not published; 2/3 of hours streamed are found on the homepage)",
           percent=True),
    Anchor("max_quality_plays", "quality plays per session (maximum)", 0, 1,
           "one choice per visit (no continuation modelled)"),
    Anchor("ctr", "CTR (detail views / rendered tile)", 0.01, 0.05, "project calibration: 1-5 %", percent=True),
    Anchor("take_fraction", "take fraction (quality plays / rendered tile)", 0.005, 0.02,
           "project calibration: 0.5-2 %", percent=True),
    Anchor("oracle_lift", "oracle-image lift of take fraction", 0.10, 0.40,
           "project calibration: 10-40 %", percent=True),
)


def session_figures(run_dir: Path | str, cell: str | None = None) -> dict:
    """The simulated figures of :data:`ANCHORS` (and a few more) for one run.

    ``cell``: whose sessions (default: the control cell of ``metrics.json``). Returns a dict
    with one value per anchor key, the number of sessions, the share of each end reason, the
    median time to first play and, for the oracle lift, its 95 % interval."""
    from sim.logs import read_impressions, read_visit_log

    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    control = metrics.get("control") or next(iter(metrics["cells"]))
    cell = cell or control
    imp = read_impressions(run_dir, ["visit", "quality_play"], cell=cell)
    visits = read_visit_log(run_dir, ["visit", "session_seconds", "end_reason", "looks", "detail_views",
                                      "plays", "first_play_second"])
    visits = visits[visits["visit"].isin(imp["visit"].unique()) & (visits["end_reason"] >= 0)]
    if visits.empty:
        raise ValueError(f"no sessions of cell {cell!r} in {run_dir} (a run with world.response.name=session?)")
    no_play = visits["plays"] == 0
    cells = metrics["cells"][cell]
    out = {
        "cell": cell, "sessions": int(len(visits)),
        "median_tiles_looked": float(visits["looks"].median()),
        "mean_detail_views": float(visits["detail_views"].mean()),
        "median_seconds_no_play": float(visits.loc[no_play, "session_seconds"].median()),
        "play_share": float((visits["end_reason"] == 0).mean()),
        "max_quality_plays": int(imp.groupby("visit")["quality_play"].sum().max()),
        "ctr": float(cells["ctr"]["estimate"]),
        "take_fraction": float(cells["take_fraction"]["estimate"]),
        "median_seconds_to_first_play": float(visits["first_play_second"].median()),
        "end_reasons": {name: float((visits["end_reason"] == i).mean()) for i, name in enumerate(SESSION_END_REASONS)},
    }
    lift = metrics.get("lift", {}).get("oracle", {}).get("take_fraction")
    out["oracle_lift"] = float(lift["estimate"]) if lift else math.nan
    out["oracle_lift_ci"] = (lift["ci_low"], lift["ci_high"]) if lift else None
    return out


def _fmt(value: float, percent: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.2f} %" if percent else (f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}")


def markdown_table(fig: dict) -> str:
    """The README table "simulated vs published" for :func:`session_figures`' output."""
    lines = ["| figure | simulated | published / assumed | within | source |", "|---|---|---|---|---|"]
    for a in ANCHORS:
        v = fig[a.key]
        sim = _fmt(v, a.percent)
        if a.key == "oracle_lift" and fig.get("oracle_lift_ci"):
            lo, hi = fig["oracle_lift_ci"]
            sim += f" [{100 * lo:+.1f}, {100 * hi:+.1f}]"
        ok = "yes" if a.low <= v <= a.high else "no"
        rng = f"{_fmt(a.low, a.percent)} - {_fmt(a.high, a.percent)}"
        lines.append(f"| {a.label} | {sim} | {rng} | {ok} | {a.source} |")
    ends = ", ".join(f"{k} {100 * v:.1f} %" for k, v in fig["end_reasons"].items())
    lines.append("")
    lines.append(f"{fig['sessions']} sessions of cell `{fig['cell']}`; sessions end by {ends}; "
                 f"median time to first play {fig['median_seconds_to_first_play']:.0f} s.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--cell", default=None, help="whose sessions (default: the control cell)")
    ap.add_argument("--markdown", action="store_true", help="print the README table")
    args = ap.parse_args(argv)
    fig = session_figures(args.run_dir, args.cell)
    if args.markdown:
        print(markdown_table(fig))
    else:
        print(json.dumps(fig, indent=2))
    bad = [a.key for a in ANCHORS if not a.low <= fig[a.key] <= a.high]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
