"""README figures of experiments and their analyses: the contextual artwork experiments (Netflix
replay, cold start, exploration cost, clickbait trap, stickiness), incrementality, pipeline faults
and clickbait through the ranker (sources for ``make figures``: see :mod:`experiments.figures`).
The other feedback-loop figures quote an earlier release's runs and have no source yet."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from experiments.figures import OUT, commands, source

SWEEP = f"{OUT}/sweep"
ONE_JOB = "hydra.launcher.n_jobs=1"     # one heavy process at a time on a shared machine


def _sweep(experiment: str, *overrides: str) -> tuple[str, ...]:
    """An ``experiments.run`` multirun of ``experiment`` into ``{out}/sweep``, one job at a time."""
    return ("experiments.run", "-m", f"experiment={experiment}", *overrides, ONE_JOB,
            f"hydra.sweep.dir={SWEEP}", "engine.progress=false")


def _pct(x: float, signed: bool = True) -> str:
    """A fraction as the README writes percentages: ``+12.3 %``."""
    return f"{100 * x:{'+' if signed else ''}.1f} %"


def _interval(est: dict, signed_bounds: bool = True) -> str:
    """``+12.3 % [+11.8, +12.8]`` (or ``[11.8, 12.8]``) from an ``{estimate, ci_low, ci_high}``
    dict of fractions."""
    s = "+" if signed_bounds else ""
    return f"{_pct(est['estimate'])} [{100 * est['ci_low']:{s}.1f}, {100 * est['ci_high']:{s}.1f}]"


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _per_cell(m: dict, cells: list[str], value) -> str:
    """``value`` of each cell, as ``a / b / c``."""
    return " / ".join(value(m["cells"][c]) for c in cells)


@source("netflix_replay", "experiment=netflix_replay")
def netflix_replay(run_dir: Path) -> dict[str, str]:
    """Replay estimates, exact values on the same impressions and online take fractions
    (``netflix_replay.csv`` of the run's analysis), uniform / thompson / linucb / lints."""
    rows = {r["policy"]: r for r in csv.DictReader(open(run_dir / "netflix_replay.csv"))
            if r["estimator"] == "replay"}
    order = ["uniform", "thompson", "linucb", "lints"]
    col = lambda k: " / ".join(f"{100 * float(rows[p][k]):.2f}" for p in order) + " %"  # noqa: E731
    return {"netflix_replay.replay": col("estimate"), "netflix_replay.exact": col("truth"),
            "netflix_replay.online": col("online_take_fraction")}


def _regret(cell: dict) -> str:
    return f"{cell['regret_per_1k_impressions']:.2f}"


@source("exploration_cost", "experiment=exploration_cost")
def exploration_cost(run_dir: Path) -> dict[str, str]:
    """Regret per 1,000 impressions of each cell."""
    m = _metrics(run_dir)
    return {"exploration_cost.regret_epsilons": _per_cell(m, ["eps_0.01", "eps_0.05", "eps_0.2", "eps_0.5"], _regret),
            "exploration_cost.regret_lints": _regret(m["cells"]["lints"]),
            "exploration_cost.regret_linucb": _regret(m["cells"]["linucb"])}


@source("stickiness", "experiment=stickiness")
def stickiness(run_dir: Path) -> dict[str, str]:
    """Artwork gain and regret of always re-choosing, keeping 24 h and keeping 7 days."""
    m = _metrics(run_dir)
    cells = ["lints", "sticky_24h", "sticky_7d"]
    out = {f"stickiness.gain.{c}": _pct(m["cells"][c]["artwork_gain"]["estimate"], False) for c in cells}
    out["stickiness.regret"] = _per_cell(m, cells, _regret)
    return out


@source("cold_start", "experiment=cold_start")
def cold_start(run_dir: Path) -> dict[str, str]:
    """Artwork-gain lift of lints over thompson by segment (the run's ``cold_start.json``)."""
    seg = json.loads((run_dir / "cold_start.json").read_text())
    gain = lambda s: seg[s]["gain_lift"]  # noqa: E731
    return {"cold_start.new_0_6h": _interval(gain("new, 0-6 h after launch"), False),
            "cold_start.new_6_24h": _pct(gain("new, 6-24 h after launch")["estimate"]),
            "cold_start.new_1_3d": _pct(gain("new, 1-3 days after launch")["estimate"]),
            "cold_start.new_later": _pct(gain("new, > 3 days after launch")["estimate"]),
            "cold_start.never_interacted": _interval(gain("never interacted"), False),
            "cold_start.interacted": _interval(gain("interacted before"), False)}


@source("clickbait_trap", "experiment=clickbait_trap")
def clickbait_trap(run_dir: Path) -> dict[str, str]:
    """The click learner against the quality-play learner: CTR and take-fraction lifts, artwork gains."""
    m = _metrics(run_dir)
    lift = m["lift"]["click"]
    return {"clickbait_trap.ctr_lift": _interval(lift["ctr"]),
            "clickbait_trap.take_lift": _interval(lift["take_fraction"]),
            "clickbait_trap.gain_click": _pct(m["cells"]["click"]["artwork_gain"]["estimate"]),
            "clickbait_trap.gain_quality": _pct(m["cells"]["quality_play"]["artwork_gain"]["estimate"])}


#: Cells of the incrementality table the README's prose quotes: response model, cell, column, key
#: (``_estimate``: without the interval).
INCREMENTALITY_QUOTED = (
    ("independent", "oracle", "per-impression lift", "impression_estimate"),
    ("independent", "oracle", "per-visit lift", "visit_estimate"),
    ("independent", "oracle", "cannibalization share", "share"),
    ("session", "oracle", "per-impression lift", "impression_estimate"),
    ("session", "oracle", "per-visit lift", "visit_estimate"),
    ("session", "oracle", "cannibalization share", "share"),
    ("session", "lints", "cannibalization share", "share"),
    ("session", "thompson", "cannibalization share", "share"),
    ("session", "thompson", "per-visit lift", "visit_estimate"),
    ("session", "diverse_thompson", "per-visit lift", "visit"),
    ("session", "diverse_thompson", "cannibalization share", "share"),
    ("session", "diverse_thompson - thompson", "per-visit lift", "visit"),
)


def markdown_cells(table: str) -> dict[tuple[str, ...], dict[str, str]]:
    """A markdown table an analysis wrote, as ``{(first column, second column): {header: text}}``."""
    lines = [line.strip().strip("|").split("|") for line in table.strip().splitlines()]
    head = [h.strip() for h in lines[0]]
    return {tuple(c.strip() for c in row[:2]): dict(zip(head, (c.strip() for c in row)))
            for row in lines[2:]}


@commands("incrementality", _sweep("incrementality"), ("experiments.analyses.incrementality", SWEEP))
def incrementality(out: Path) -> dict[str, str]:
    """The analysis's table (``incrementality.md``), the cells the prose quotes, and the control's
    visit success under ``session`` (range over seeds)."""
    from experiments.results import analysis_runs
    from sim.config import experiment_config_from_dict

    table = (out / "sweep" / "incrementality.md").read_text()
    cells = markdown_cells(table)
    figs = {"incrementality.table": table}
    for response, cell, column, short in INCREMENTALITY_QUOTED:
        text = cells[response, cell][column]
        key = f"incrementality.{response}.{cell.replace(' - ', '_minus_')}.{short}"
        figs[key] = text.split(" [")[0] if short.endswith("_estimate") else text
    success = []
    for run in analysis_runs(out / "sweep"):
        m = _metrics(run)
        if experiment_config_from_dict(m["config"]).world.response.name == "session":
            success.append(100 * m["cells"][m["control"]]["visit_success_rate"]["estimate"])
    figs["incrementality.session.control_visit_success"] = f"{min(success):.0f}-{max(success):.0f} %"
    return figs


@commands("clickbait_loop", _sweep("clickbait_loop", "seed=0,1,2"), ("experiments.analyses.clickbait_loop", SWEEP))
def clickbait_loop(out: Path) -> dict[str, str]:
    """The table over seeds (``clickbait_loop_summary.csv``: mean ± SE per cell) and the paired
    differences and per-seed checks the prose quotes (``clickbait_loop.csv``: one row per run and cell)."""
    from experiments.results import analysis_runs

    summary = {r["cell"]: r for r in csv.DictReader(open(out / "sweep" / "clickbait_loop_summary.csv"))}
    runs = list(csv.DictReader(open(out / "sweep" / "clickbait_loop.csv")))

    def ms(cell: str, measure: str, digits: int, sign: str = "") -> str:
        """Mean ± SE over seeds of a summary row (``sign="+"``: signed, for differences)."""
        r = summary[cell]
        return f"{float(r[measure]):{sign}.{digits}f} ± {float(r[measure + '_se']):.{digits}f}"

    signed = lambda cell, measure, digits: ms(cell, measure, digits, "+")  # noqa: E731
    change = lambda cell, ref, k: f"{100 * (value(cell, k) / value(ref, k) - 1):+.0f} %"  # noqa: E731

    cells = ("quality.play", "quality.click", "bait.play", "bait.click")
    columns = (("prone_exposure_share", 3), ("ctr", 4), ("take_fraction", 4), ("ranker_spearman", 2))
    table = ["| cell (artwork.signal) | exposure share of clickbait-prone titles | CTR | take fraction | "
             "Spearman with truth |", "|---|---|---|---|---|"]
    table += [f"| {c} | " + " | ".join(ms(c, k, d) for k, d in columns) + " |" for c in cells]
    value = lambda cell, k: float(summary[cell][k])  # noqa: E731
    others = [value(c, "prone_exposure_share") for c in cells[:3]]
    per_seed = {}
    for r in runs:
        per_seed.setdefault(r["seed"], {})[r["cell"]] = float(r["prone_exposure_share"])
    higher = sum(s["bait.click"] > max(v for c, v in s.items() if c != "bait.click") for s in per_seed.values())
    spearman_others = [value(c, "exposure_potential_spearman") for c in cells[:3]]
    potential = [float(r["prone_potential"]) for r in runs]
    impressions = [_metrics(run)["impressions"] for run in analysis_runs(out / "sweep")]
    clicks_per_play = [c["clicks"] / c["plays"] for run in analysis_runs(out / "sweep")
                       for c in _metrics(run)["cells"].values()]
    return {
        "clickbait_loop.table": "\n".join(table) + "\n",
        "clickbait_loop.bait_click_share": f"{100 * value('bait.click', 'prone_exposure_share'):.1f} %",
        "clickbait_loop.other_shares": f"{100 * min(others):.1f}–{100 * max(others):.1f} %",
        "clickbait_loop.vs_bait_play": signed("bait.click - bait.play", "prone_exposure_share", 3),
        "clickbait_loop.vs_quality_click": signed("bait.click - quality.click", "prone_exposure_share", 3),
        "clickbait_loop.interaction": signed("interaction", "prone_exposure_share", 3),
        "clickbait_loop.seeds_higher": f"{higher} of {len(per_seed)}",
        "clickbait_loop.spearman_bait_click": signed("bait.click", "exposure_potential_spearman", 2),
        "clickbait_loop.spearman_others": f"{min(spearman_others):+.2f} to {max(spearman_others):+.2f}",
        "clickbait_loop.spearman_interaction": signed("interaction", "exposure_potential_spearman", 2),
        "clickbait_loop.artwork_alone": signed("bait.play - quality.play", "prone_exposure_share", 3),
        "clickbait_loop.ranker_alone": signed("quality.click - quality.play", "prone_exposure_share", 3),
        "clickbait_loop.promotion_ctr": signed("bait.click - bait.play", "ctr", 4),
        "clickbait_loop.promotion_take": signed("bait.click - bait.play", "take_fraction", 4),
        "clickbait_loop.artwork_ctr": change("bait.play", "quality.play", "ctr"),
        "clickbait_loop.artwork_take": change("bait.play", "quality.play", "take_fraction"),
        "clickbait_loop.ranker_spearman_quality": signed("quality.click - quality.play", "ranker_spearman", 2),
        "clickbait_loop.ranker_spearman_bait": signed("bait.click - bait.play", "ranker_spearman", 2),
        "clickbait_loop.ranker_spearman_interaction": signed("interaction", "ranker_spearman", 3),
        "clickbait_loop.clicks_per_play": f"{min(clicks_per_play):.1f}–{max(clicks_per_play):.1f}",
        "clickbait_loop.impressions_per_seed": f"~{sum(impressions) / len(impressions) / 1e6:.0f}M",
        "clickbait_loop.prone_potential": f"{min(potential):+.1f} to {max(potential):+.1f}",
        "clickbait_loop.exposure_gain": f"{100 * (value('bait.click', 'prone_exposure_share') / max(others) - 1):.0f} %",
    }


@commands("pipeline_faults", ("experiments.analyses.pipeline_faults", "--grid", f"{OUT}/grid",
                              "--members", "2000", "--days", "1"))
def pipeline_faults(out: Path) -> dict[str, str]:
    """The grid's table (``pipeline_faults_table.md``) and the rows the prose quotes (from
    ``pipeline_faults_summary.csv``: IPW/DR errors in whole percent, bandit costs as in the table)."""
    grid = out / "grid"
    runs = list(csv.DictReader(open(grid / "pipeline_faults.csv")))
    summary = {(r["fault"], float(r["rate"]), r["repair"] == "True"): r
               for r in csv.DictReader(open(grid / "pipeline_faults_summary.csv"))}
    figs = {"pipeline_faults.table": (grid / "pipeline_faults_table.md").read_text(),
            "pipeline_faults.runs": str(len(runs)),
            "pipeline_faults.impressions_per_run":
                f"{round(sum(float(r['impressions']) for r in runs) / len(runs), -4):,.0f}".replace(",", " ")}
    figs["pipeline_faults.largest_lift_shift"] = _largest_lift_shift(summary)
    figs.update(_previous_image_moves(grid))
    prev = summary["misattribution_previous_image", 0.2, False]
    figs["pipeline_faults.misattribution_previous_image.0.2.gain_change_in_se"] = \
        f"{abs(float(prev['gain_change'])) / float(prev['gain_change_se']):.1f}"
    for fault, rate, repaired, measure in PIPELINE_QUOTED:
        r = summary[fault, rate, repaired]
        key = f"pipeline_faults.{fault}.{rate:g}{'.repaired' if repaired else ''}.{measure}"
        value, se = float(r[measure]), float(r[measure + "_se"])
        if measure in ("ipw_rel_error", "dr_rel_error"):
            figs[key] = f"{100 * value:+.0f} %"
        elif measure == "gain_change":
            figs[key] = f"{-100 * value:.2f} ± {100 * se:.2f} pp"      # quoted as a drop
        else:
            figs[key] = f"{value:+.2f}"
    return figs


#: Faults that scale every cell's reported take alike (the README: "the lift survives them").
LEVEL_FAULTS = ("unrendered", "event_loss", "late", "clock_skew", "duplicate")


def _largest_lift_shift(summary: dict) -> str:
    """The level fault (unrepaired) whose lift bias departs most from the fault-free row's, in
    percentage points and in standard errors of its row."""
    clean = float(summary["none", 0.0, False]["lift_bias"])
    rows = [(k, r) for k, r in summary.items() if k[0] in LEVEL_FAULTS and not k[2]]
    (fault, rate, _), r = max(rows, key=lambda kr: abs(float(kr[1]["lift_bias"]) - clean))
    shift = float(r["lift_bias"]) - clean
    return (f"{100 * shift:+.1f} pp, {fault.replace('_', ' ')} at {100 * rate:g} %, about "
            f"{abs(shift) / float(r['lift_bias_se']):.1f} standard errors of that row")


def _previous_image_moves(grid: Path, rate: float = 0.2) -> dict[str, str]:
    """How many plays misattribution moves at ``rate`` (the ``misattributed`` count in each run's
    ``metrics.json``): to the previous image, per seed and as a share of plays, and relative to
    misattribution to a tile."""
    def moved_and_plays(fault: str, seed: int) -> tuple[int, int]:
        m = _metrics(grid / f"{fault}-{rate:g}-off-s{seed}")
        return m["faults"]["total"]["misattributed"], sum(c["plays"] for c in m["cells"].values())

    prev = [moved_and_plays("misattribution_previous_image", s) for s in (0, 1, 2)]
    tile = [moved_and_plays("misattribution", s) for s in (0, 1, 2)]
    moved, plays = (sum(x) for x in zip(*prev))
    listed = lambda xs: ", ".join(map(str, xs[:-1])) + f" and {xs[-1]}"  # noqa: E731  (107, 132 and 115)
    return {"pipeline_faults.previous_image_moved_share": f"{100 * moved / plays:.0f} %",
            "pipeline_faults.previous_image_moved": f"{listed([m for m, _ in prev])} of {listed([p for _, p in prev])}",
            "pipeline_faults.previous_image_vs_tile_moves": f"{moved / sum(m for m, _ in tile):.1f}"}


#: Rows of the pipeline-faults summary the README's prose quotes: fault, rate, repaired, measure.
PIPELINE_QUOTED = (
    *((f, 0.2, False, "ipw_rel_error") for f in ("unrendered", "event_loss", "clock_skew", "late", "duplicate")),
    ("duplicate", 0.05, False, "ipw_rel_error"),
    ("fallback", 0.2, False, "ipw_rel_error"), ("fallback", 0.2, True, "ipw_rel_error"),
    ("fallback", 0.2, False, "dr_rel_error"), ("fallback", 0.2, True, "dr_rel_error"),
    *((f, 0.2, False, m) for f in ("unlogged", "misattribution") for m in ("gain_change", "regret_change")),
    *(("misattribution_previous_image", r, False, m) for r in (0.05, 0.2) for m in ("gain_change", "regret_change")),
)
