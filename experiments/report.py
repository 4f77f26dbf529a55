"""A report of a run or a sweep: ``python -m experiments.report <dir> [--format html|md]``.

Writes ``<dir>/report.html`` (self-contained: charts embedded as base64 PNG) or ``<dir>/report.md``
(charts linked by relative path). A run's report holds the summary table with 95 % intervals, the
lifts with intervals and p-values, the minimum detectable effect of the test, the charts and the
resolved config; a sweep's report holds one row per run, paired differences for two-valued
parameters, the sweep charts and the shared config.
"""
from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from experiments.plot import charted_metrics, plot_run, plot_sweep
from experiments.results import (REPLICATE_KEY, aggregate, find_runs, interval_metrics, is_run_dir, metric_is_percent,
                                 metric_label, paired_differences, swept_parameters, sweep_table)
from experiments.ctrl_c import FILES_WHOLE, one_line_on_ctrl_c
from sim.metrics import Z95, metric_class
from sim.outputs import atomic_write_text
from experiments.power_notes import ALPHA, POWER, cell_mde, underpowered_notes
from sim.power import pilot_icc


def chart_order() -> tuple[str, ...]:
    """Charts shown first, in this order (then any other chart of the run, by name)."""
    return ("homepage.png", "lift.png", *(f"{m.name}_over_time.png" for m in charted_metrics()),
            "cumulative_regret.png")


# ---- a tiny document model rendered to HTML or Markdown ----------------------------------------
@dataclass
class Block:
    kind: str            # heading, text, warning, table, image, code
    content: Any
    level: int = 2


def render_html(title: str, blocks: list[Block], base: Path) -> str:
    css = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
           "color:#222}table{border-collapse:collapse;margin:1em 0;font-size:14px}"
           "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}"
           "td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee;"
           "margin:0.5em 0}pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:12px}"
           ".note{color:#555;font-size:14px}.warning{color:#8a4b00;background:#fff4e0;padding:6px 10px;"
           "border-left:4px solid #e69500;font-size:14px}")
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{css}</style></head><body><h1>{html.escape(title)}</h1>"]
    for b in blocks:
        if b.kind == "heading":
            out.append(f"<h{b.level}>{html.escape(b.content)}</h{b.level}>")
        elif b.kind == "text":
            out.append(f"<p class='note'>{html.escape(b.content)}</p>")
        elif b.kind == "warning":
            out.append(f"<p class='warning'>{html.escape(b.content)}</p>")
        elif b.kind == "table":
            header, rows = b.content
            out.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows]
            out.append("</table>")
        elif b.kind == "image":
            data = base64.b64encode(Path(b.content).read_bytes()).decode("ascii")
            out.append(f"<img alt='{html.escape(Path(b.content).name)}' src='data:image/png;base64,{data}'>")
        elif b.kind == "code":
            out.append(f"<details open><summary>config.yaml</summary><pre>{html.escape(b.content)}</pre></details>")
    out.append("</body></html>")
    return "\n".join(out)


def render_markdown(title: str, blocks: list[Block], base: Path) -> str:
    out = [f"# {title}", ""]
    for b in blocks:
        if b.kind == "heading":
            out += ["#" * b.level + " " + b.content, ""]
        elif b.kind == "text":
            out += [b.content, ""]
        elif b.kind == "warning":
            out += [f"> **{b.content}**", ""]
        elif b.kind == "table":
            header, rows = b.content
            out.append("| " + " | ".join(map(str, header)) + " |")
            out.append("|" + "---|" * len(header))
            out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
            out.append("")
        elif b.kind == "image":
            rel = Path(os.path.relpath(b.content, base))
            out += [f"![{rel.name}]({rel.as_posix()})", ""]
        elif b.kind == "code":
            out += ["```yaml", b.content.rstrip(), "```", ""]
    return "\n".join(out)


# ---- formatting --------------------------------------------------------------------------------
def pct(v: float | None, digits: int = 3, sign: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:+.{digits}%}" if sign else f"{v:.{digits}%}"


def interval(d: dict, digits: int = 3, percent: bool = True, sign: bool = False) -> str:
    if d.get("estimate") is None:
        return "n/a"
    if percent:
        return f"{pct(d['estimate'], digits, sign)} [{pct(d['ci_low'], digits, sign)}, {pct(d['ci_high'], digits, sign)}]"
    return f"{d['estimate']:.{digits}f} [{d['ci_low']:.{digits}f}, {d['ci_high']:.{digits}f}]"


def metric_interval(name: str, d: dict) -> str:
    """A metric's estimate and 95 % interval, formatted as the metric table says (percent or not)."""
    if metric_is_percent(name):
        return interval(d)
    if d.get("estimate") is None:
        return "n/a"
    # One decimal for counts like minutes; three significant digits for small numbers.
    fmt = ".1f" if abs(d["estimate"]) >= 10 else ".3g"
    if d.get("ci_low") is None or d.get("ci_high") is None:
        return f"{d['estimate']:{fmt}} [n/a]"
    return f"{d['estimate']:{fmt}} [{d['ci_low']:{fmt}}, {d['ci_high']:{fmt}}]"


def p_value(p: float | None) -> str:
    if p is None:
        return "p n/a"
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.4f}"


# ---- run report --------------------------------------------------------------------------------
def run_blocks(run_dir: Path) -> tuple[str, list[Block]]:
    m = json.loads((run_dir / "metrics.json").read_text())
    charts = run_dir / "charts"
    if not charts.is_dir() or not any(charts.glob("*.png")):
        plot_run(run_dir)
    control = m["control"]
    title = f"Experiment {m['experiment']} (seed {m['seed']})"
    b = [Block("text", f"{m['impressions']:,} impressions, {m['visits']:,} visits; control cell: "
                       f"{control}; ranker scope: {m['config'].get('experiment', {}).get('ranker_scope', 'shared')}; "
                       f"package {m.get('package_version')}, commit {m.get('git_commit') or 'unknown'}; "
                       f"run directory {run_dir}")]
    names = interval_metrics(m)
    page = [k for k in names if is_page_metric(k)]
    # Artwork gain has its own table (with regret): it compares images, not cells.
    per_impression = [k for k in names if k not in page and k != "artwork_gain"]
    b.append(Block("heading", "Cells: per-impression metrics (95 % intervals, members as the randomisation unit)"))
    rows = []
    for name, c in m["cells"].items():
        rows.append([name + (" (control)" if name == control else ""), f"{c['members']:,}",
                     f"{c['impressions']:,}", *(metric_interval(k, c[k]) for k in per_impression),
                     ])
    b.append(Block("table", (["cell", "members", "impressions", *map(metric_label, per_impression)], rows)))
    b += artwork_gain_blocks(m)
    if page:
        b.append(Block("heading", "Cells: page-level metrics (one visit = one session = one page; 95 % intervals)"))
        b.append(Block("table", (["cell", "visits", *map(metric_label, page)],
                                 [[name + (" (control)" if name == control else ""), f"{c.get('visits', 0):,}",
                                   *(metric_interval(k, c[k]) for k in page)] for name, c in m["cells"].items()])))
    if m.get("lift"):
        b.append(Block("heading", f"Lift over {control} (95 % CI and two-sided p-value, per-member delta method)"))
        for group, keys in (("per-impression", per_impression), ("page-level", page)):
            if not keys:
                continue
            rows = []
            for name, lifts in m["lift"].items():
                rows.append([name] + [f"{interval(lifts[k], 1, sign=True)}, {p_value(lifts[k].get('p_value'))}"
                                      if k in lifts else "n/a" for k in keys])
            b.append(Block("table", ([f"cell ({group})"] + [metric_label(k) for k in keys], rows)))
        b += warning_blocks(m)
        b += power_blocks(m)
    b += incrementality_blocks(m)
    b.append(Block("heading", "Charts"))
    order = chart_order()
    b += [Block("image", charts / n) for n in order if (charts / n).is_file()]
    b += [Block("image", p) for p in sorted(charts.glob("*.png")) if p.name not in order]
    b += config_blocks(run_dir, m, "Resolved config")
    return title, b


def is_page_metric(name: str) -> bool:
    """Page-level metrics are the ones per visit (denominator ``visits``, or over visits with a play)."""
    cls = metric_class(name)
    return cls is not None and getattr(cls, "denominator", None) in ("visits", "visits_with_play")


def artwork_gain_blocks(m: dict) -> list[Block]:
    """Each cell's artwork gain (ground truth: the shown images' true take over a random image's on
    the same impressions) and regret per 1,000 impressions against the oracle image."""
    cells = {n: c for n, c in m["cells"].items() if isinstance(c.get("artwork_gain"), dict)}
    if not cells:
        return []
    rows = [[n, interval(c["artwork_gain"], 1, sign=True),
             "n/a" if c.get("regret_per_1k_impressions") is None else f"{c['regret_per_1k_impressions']:.3f}"]
            for n, c in cells.items()]
    return [Block("heading", "Artwork gain (true take of the shown images vs a random image's, 95 % CI)"),
            Block("table", (["cell", "artwork gain", "regret per 1,000 impressions (quality plays)"], rows)),
            Block("text", "Ground truth only a simulator has: member, title and position effects cancel in the "
                          "ratio, so it separates artwork policies with much narrower intervals than realised "
                          "take fractions compared across cells.")]


def warning_blocks(m: dict) -> list[Block]:
    """Lift intervals too wide (or spanning 0) to support a conclusion, with the test's MDE."""
    notes = underpowered_notes(m)
    return [Block("heading", "Warnings: intervals that support no conclusion"),
            *(Block("warning", n) for n in notes)] if notes else []


def config_blocks(run_dir: Path, m: dict, heading: str) -> list[Block]:
    """The run's full resolved config: every key with the value the run used, defaults included
    (the validated config rebuilt from ``config.yaml``, which for a run started from Python holds
    only the keys given); the file as it is when it does not validate."""
    from sim.config import to_dict
    from sim.ope.runs import run_config

    try:
        text = yaml.safe_dump(to_dict(run_config(run_dir)), sort_keys=False)
    except (OSError, ValueError, TypeError):
        path = run_dir / "config.yaml"
        text = path.read_text() if path.is_file() else yaml.safe_dump(m.get("config", {}), sort_keys=False)
    keys = sum(1 for line in text.splitlines() if line.strip() and not line.lstrip().startswith("-"))
    return [Block("heading", f"{heading} ({keys} keys, defaults included)"), Block("code", text)]


def incrementality_blocks(m: dict) -> list[Block]:
    """metrics.json's ``incrementality`` section (:mod:`sim.metrics.incrementality`) as a table."""
    section = m.get("incrementality") or {}
    if not section:
        return []
    keys = {"per_impression_lift": "per-impression lift (titles with 2+ images)",
            "per_visit_lift": "per-visit lift (quality plays)", "per_member_lift": "per-member lift",
            "cannibalization_share": "cannibalization share (1 - per-visit / per-impression lift)"}
    rows = [[name] + [interval(r[k], 1, sign=True) for k in keys] for name, r in section.items()]
    return [Block("heading", f"Incrementality vs {m['control']}: created or moved? (95 % CI, per-member delta method)"),
            Block("table", (["cell", *keys.values()], rows))]


def power_blocks(m: dict) -> list[Block]:
    """Minimum detectable effect of this test's design, and with more members."""
    control = m["control"]
    base = m["cells"][control]
    b = [Block("heading", f"Power: minimum detectable lift ({POWER:.0%} power, two-sided alpha {ALPHA:g})")]
    scales = (1, 2, 4, 10)
    rows = []
    for name in m["lift"]:
        for metric in interval_metrics(m):
            mdes = [cell_mde(m, name, metric, s) for s in scales]
            if math.isnan(mdes[0]):
                continue
            rows.append([name, metric_label(metric)] + [pct(x, 1) for x in mdes])
    b.append(Block("table", (["cell vs " + control, "metric"]
                             + [f"MDE, {s}x members" if s > 1 else "MDE, this test" for s in scales], rows)))
    tf = base["take_fraction"]
    if tf["estimate"] and tf["se"]:
        deff, icc = pilot_icc(tf["estimate"], tf["se"], base["impressions"], base["members"])
        b.append(Block("text", f"Same duration, same impressions per member; the MDE shrinks with the square "
                               f"root of the members. The control's take fraction has a design effect of {deff:.1f} "
                               f"(intra-member correlation {icc:.3f} over {base['impressions'] / base['members']:.0f} "
                               "impressions per member), so a longer test helps much less than more members. "
                               "Plan another test from this run: python -m experiments.power --pilot <this run "
                               "directory> --members N --days D."))
    return b


# ---- sweep report ------------------------------------------------------------------------------
def sweep_blocks(sweep_dir: Path) -> tuple[str, list[Block]]:
    charts = plot_sweep(sweep_dir)
    runs = find_runs(sweep_dir)
    params = swept_parameters(runs)
    rows = sweep_table(runs, params)
    title = f"Sweep {sweep_dir.name}: {len(runs)} runs"
    values = {k: sorted({r[k] for r in rows}) for k in params}
    b = [Block("text", f"sweep directory {sweep_dir}; swept: "
                       + "; ".join(f"{k} = {', '.join(v)}" for k, v in values.items())
                       + ". Each row is the policy under test (the cell running `policy`) against the "
                         "run's control cell.")]
    b.append(Block("heading", "Runs (95 % intervals, per-member delta method)"))
    table = []
    for r in rows:
        tf = {"estimate": r["take_fraction"], "ci_low": _ci(r, "take_fraction", -1),
              "ci_high": _ci(r, "take_fraction", 1)}
        lift = {"estimate": r["lift_take_fraction"], "ci_low": r["lift_take_fraction_ci_low"],
                "ci_high": r["lift_take_fraction_ci_high"]}
        table.append([*(r[k] for k in params), r["cell"], r["control"], interval(tf),
                      interval(lift, 1, sign=True), p_value(r["lift_take_fraction_p_value"])])
    b.append(Block("table", ([*params, "cell", "control", "take fraction", "take-fraction lift", "p-value"], table)))
    diffs = [d for k in params if k != REPLICATE_KEY
             for d in [paired_differences(rows, k, "lift_take_fraction")] if d]
    if diffs:
        b.append(Block("heading", "Paired differences (same seed and other parameters)"))
        b.append(Block("table", (["parameter", "change", "metric", "pairs", "mean difference (95 % t CI)", "p-value"],
                                 [[d["key"], f"{d['from']} -> {d['to']}", "take-fraction lift", d["n_pairs"],
                                   f"{d['mean']:+.2%} [{d['ci_low']:+.2%}, {d['ci_high']:+.2%}]",
                                   p_value(d["p_value"])] for d in diffs])))
        b.append(Block("text", "Differences in percentage points of lift, paired by seed (common random "
                               "numbers: the same world, members and visits), t interval across pairs."))
    first = json.loads((runs[0].path / "metrics.json").read_text())
    if first.get("lift"):
        b += power_blocks(first)[:2]
        b.append(Block("text", f"For one run of this sweep ({runs[0].path.name}); with n seeds, the "
                               "across-seed mean has about 1/sqrt(n) of this MDE when the world varies little."))
    b += every_metric_blocks(runs, rows, params)
    b += analysis_blocks(sweep_dir)
    b.append(Block("heading", "Charts"))
    b += [Block("image", c) for c in charts]
    drawn = {Path(c).name for c in charts}
    b += [Block("image", p) for p in sorted((sweep_dir / "charts").glob("*.png")) if p.name not in drawn]
    b += config_blocks(runs[0].path, first, f"Resolved config of {runs[0].path.name} (the other runs "
                                            f"differ in: {', '.join(params)})")
    return title, b


def every_metric_blocks(runs, rows: list[dict], params: list[str]) -> list[Block]:
    """Every metric with an interval, per run: the policy under test's estimate and its lift (a
    sweep over parameters), or every cell's mean over seeds with a 95 % t interval (seeds only)."""
    names = interval_metrics(runs[0].metrics)
    if params == [REPLICATE_KEY]:
        table = []
        for cell in runs[0].metrics["cells"]:
            line = [cell]
            for k in names:
                vals = [r.metrics["cells"][cell][k]["estimate"] for r in runs if cell in r.metrics["cells"]]
                p = aggregate([v for v in vals], [float("nan")] * len(vals), [str(i) for i in range(len(vals))])
                line.append("n/a" if p.n_seeds == 0 else
                            (f"{pct(p.mean)} [{pct(p.low)}, {pct(p.high)}]" if metric_is_percent(k)
                             else f"{p.mean:.3g} [{p.low:.3g}, {p.high:.3g}]"))
            table.append(line)
        return [Block("heading", f"Every metric, every cell: mean over {len(runs)} seeds (95 % t interval across seeds)"),
                Block("table", (["cell", *map(metric_label, names)], table))]
    table, lifts = [], []
    for r in rows:
        table.append([*(r[k] for k in params), r["cell"],
                      *(metric_interval(k, {"estimate": r[k], "ci_low": _ci(r, k, -1), "ci_high": _ci(r, k, 1)})
                        if r.get(k) is not None else "n/a" for k in names)])
        lifts.append([*(r[k] for k in params), r["cell"],
                      *(interval({"estimate": r[f"lift_{k}"], "ci_low": r[f"lift_{k}_ci_low"],
                                  "ci_high": r[f"lift_{k}_ci_high"]}, 1, sign=True) for k in names)])
    return [Block("heading", "Every metric of the policy under test (95 % intervals, per-member delta method)"),
            Block("table", ([*params, "cell", *map(metric_label, names)], table)),
            Block("heading", "Every metric's lift over the control cell (95 % CI)"),
            Block("table", ([*params, "cell", *map(metric_label, names)], lifts))]


def _ci(row: dict, metric: str, side: int) -> float | None:
    """One end of a 95 % normal interval from the row's estimate and standard error (None if either is)."""
    se, est = row.get(f"{metric}_se"), row.get(metric)
    return None if se is None or est is None else est + side * Z95 * se


def analysis_blocks(directory: Path) -> list[Block]:
    """The tables an experiment's analysis wrote into the directory (``*_summary.csv``)."""
    out = []
    for path in sorted(p for p in directory.glob("*_summary.csv") if p.name != "sweep_summary.csv"):
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        if len(rows) >= 2:
            out += [Block("heading", f"Analysis: {path.name}"), Block("table", (rows[0], rows[1:]))]
    return out


def write_report(directory: Path | str, fmt: str = "html", out: Path | str | None = None) -> Path:
    """Write the report of a run or sweep directory; returns its path."""
    directory = Path(directory)
    if is_run_dir(directory):
        title, blocks = run_blocks(directory)
    elif directory.is_dir() and find_runs(directory):
        title, blocks = sweep_blocks(directory)
    else:
        raise FileNotFoundError(f"{directory} is not a run directory (no metrics.json) "
                                "nor a sweep directory (no complete */metrics.json)")
    path = Path(out) if out else directory / f"report.{'md' if fmt == 'md' else 'html'}"
    render = render_markdown if fmt == "md" else render_html
    atomic_write_text(path, render(title, blocks, path.parent))
    return path


@one_line_on_ctrl_c(FILES_WHOLE)
def main(argv: list[str] | None = None) -> None:
    from experiments.cli_help import prog
    ap = argparse.ArgumentParser(prog=prog("experiments.report"), description=__doc__.splitlines()[0])
    ap.add_argument("directory", type=Path, help="a run directory or a sweep directory")
    ap.add_argument("--format", choices=("html", "md"), default="html")
    ap.add_argument("-o", "--output", type=Path, help="report path (default: <dir>/report.<format>)")
    args = ap.parse_args(argv)
    try:
        print(write_report(args.directory, args.format, args.output))
    except FileNotFoundError as err:
        raise SystemExit(f"error: {err}") from None
    except (OSError, ValueError, KeyError) as err:   # a corrupt file of the run (UnicodeDecodeError, JSON)
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise SystemExit(f"error: {args.directory}: {type(err).__name__}: {text}") from None


if __name__ == "__main__":
    main()
