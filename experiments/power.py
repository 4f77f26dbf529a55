"""Minimum detectable effect of a planned A/B test: ``python -m experiments.power``.

From explicit numbers::

    python -m experiments.power --baseline-rate 0.016 --members 40000 --impressions-per-member 250 --icc 0.05

or from a pilot run (baseline rate and intra-member correlation of the control cell; members and
impressions per member default to the pilot's, scaled by ``--days`` if given)::

    python -m experiments.power --pilot outputs/baselines/<run> --members 200000 --days 28

Prints the MDE at the chosen power and level, the MDE for other test sizes, and, with
``--lift``, the power at that lift and the members needed. See :mod:`sim.power` for the model.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments.ctrl_c import PRINTS_ONLY, one_line_on_ctrl_c
from sim.metrics import METRICS, RatioMetric
from sim.power import PlannedTest, pilot_icc


def plannable_metrics() -> list[str]:
    """Metrics a test can be planned on from a pilot: per-impression ratios of a 0/1 outcome
    (``binomial``), whose variance model :mod:`sim.power` uses; in the metric table's order."""
    return [m.name for m in METRICS.classes.values()
            if issubclass(m, RatioMetric) and m.binomial and m.denominator == "impressions"]


def planned_test_from_pilot(run_dir: Path, cell: str | None = None, metric: str = "take_fraction",
                            members: float | None = None, days: float | None = None,
                            **kwargs) -> tuple[PlannedTest, dict]:
    """A :class:`PlannedTest` whose baseline rate and icc come from a pilot run's cell."""
    allowed = plannable_metrics()
    if metric not in allowed:
        raise ValueError(f"metric must be one of {', '.join(allowed)}, got {metric!r}")
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    cell = cell or metrics["control"]
    if cell not in metrics["cells"]:
        raise ValueError(f"cell must be one of {', '.join(metrics['cells'])}, got {cell!r}")
    c = metrics["cells"][cell]
    rate, se = c[metric]["estimate"], c[metric]["se"]
    deff, icc = pilot_icc(rate, se, c["impressions"], c["members"])
    pilot_days = float(metrics["config"].get("engine", {}).get("days", 14))
    per_member = c["impressions"] / c["members"] * ((days / pilot_days) if days else 1.0)
    total_members = members or sum(x["members"] for x in metrics["cells"].values())
    info = {"pilot": str(run_dir), "cell": cell, "metric": metric, "pilot_rate": rate, "pilot_se": se,
            "pilot_design_effect": deff, "pilot_impressions_per_member": c["impressions"] / c["members"],
            "pilot_days": pilot_days}
    return PlannedTest(rate, total_members, per_member, icc, **kwargs), info


def report(test: PlannedTest, lift: float | None = None) -> str:
    lines = [f"baseline rate {test.baseline_rate:.4%}, {test.members:,.0f} members "
             f"({test.treatment_share:.0%} in treatment), {test.impressions_per_member:,.1f} impressions "
             f"per member, icc {test.icc:.4f} (design effect {test.design_effect:.2f})",
             f"MDE at {test.power:.0%} power, two-sided alpha {test.alpha:g}: {test.mde():+.2%} relative lift",
             "", f"{'members':>12}  {'MDE':>8}"]
    for scale in (0.25, 0.5, 1, 2, 4, 10):
        t = PlannedTest(test.baseline_rate, test.members * scale, test.impressions_per_member, test.icc,
                        test.treatment_share, test.alpha, test.power)
        lines.append(f"{t.members:>12,.0f}  {t.mde():>+8.2%}")
    if lift is not None:
        lines += ["", f"power at a true lift of {lift:+.1%}: {test.power_at(lift):.1%}; members needed "
                      f"for {test.power:.0%} power: {test.members_for(lift):,.0f}"]
    return "\n".join(lines)


@one_line_on_ctrl_c(PRINTS_ONLY)
def main(argv: list[str] | None = None) -> None:
    from experiments.cli_help import prog
    ap = argparse.ArgumentParser(prog=prog("experiments.power"), description=__doc__.splitlines()[0])
    ap.add_argument("--pilot", type=Path, help="run directory of a pilot run")
    ap.add_argument("--cell", help="pilot cell giving the baseline (default: the control cell)")
    ap.add_argument("--metric", default="take_fraction", choices=plannable_metrics())
    ap.add_argument("--days", type=float, help="planned duration; scales the pilot's impressions per member")
    ap.add_argument("--baseline-rate", type=float, help="control rate, e.g. 0.016 (without --pilot)")
    ap.add_argument("--members", type=float, help="members in the test, all cells")
    ap.add_argument("--impressions-per-member", type=float)
    ap.add_argument("--icc", type=float, default=0.0, help="intra-member correlation (without --pilot)")
    ap.add_argument("--treatment-share", type=float, default=0.5)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--power", type=float, default=0.8)
    ap.add_argument("--lift", type=float, help="a lift to plan for, e.g. 0.05")
    args = ap.parse_args(argv)
    common = dict(treatment_share=args.treatment_share, alpha=args.alpha, power=args.power)
    if args.days is not None and not 0 < args.days <= 3650:   # NaN fails too
        raise SystemExit(f"error: --days = {args.days} is not allowed: a number of days in (0, 3650]")
    try:
        if args.pilot is not None:
            if not (args.pilot / "metrics.json").is_file():
                raise ValueError(f"--pilot {args.pilot} is not a run directory (no metrics.json)")
            test, info = planned_test_from_pilot(args.pilot, args.cell, args.metric, args.members,
                                                 args.days, **common)
            print(f"pilot {info['pilot']}, cell {info['cell']}, {info['metric']}: "
                  f"{info['pilot_rate']:.4%} (se {info['pilot_se']:.4%}), design effect "
                  f"{info['pilot_design_effect']:.2f} over {info['pilot_impressions_per_member']:.1f} "
                  f"impressions per member in {info['pilot_days']:g} days")
        else:
            missing = [f"--{k.replace('_', '-')}" for k in ("baseline_rate", "members", "impressions_per_member")
                       if getattr(args, k) is None]
            if missing:
                raise ValueError("without --pilot, give " + ", ".join(missing))
            test = PlannedTest(args.baseline_rate, args.members, args.impressions_per_member, args.icc,
                               **common)
        print(report(test, args.lift))
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
