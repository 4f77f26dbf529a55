"""Clickbait through the ranker: does clickbait artwork make a click-trained ranker promote titles?

Reads one run (or several seeds) of ``experiment=clickbait_loop``, whose cells are named
``<artwork>.<signal>``: artwork policy ``bait`` (per-image Thompson sampling on clicks) or
``quality`` (on quality plays), crossed with the learned ranker's ``signal`` (``click`` or
``play``), each cell with its own ranker trained on its own logs.

A title's *clickbait potential* comes from the ground truth (:class:`sim.world.ResponseModel`):
on a sample of members, at the top-left tile and for titles they have not interacted with, take
each image's mean click probability and mean quality-play probability; the potential is the click
probability of the title's most-clicked image over that of its best image for quality plays,
minus one. It is what a click-optimising artwork policy adds to the title's clicks over a
quality-optimising one. It is > 0 only when the most-clicked image is not the best for quality
plays: mostly because it is less representative (a quality play is a click times chances that
rise with representativeness), i.e. clickbait; a little also because its theme suits members who
click but fit the title less. The *clickbait-prone* titles are the top decile by potential among
the titles launched at the start.

Per cell it reports, on the last simulated day: the exposure share (impressions) of the
clickbait-prone titles and the Spearman correlation across titles between impressions and
potential; over the whole run: CTR and take fraction (``metrics.json``); and the ranker's rank
agreement with the true fit after its last retrain (``ranker_drift``).

    python -m experiments.run experiment=clickbait_loop               # runs this at the end
    python -m experiments.analyses.clickbait_loop multirun/clickbait_loop/<stamp>   # over seeds

Writes ``clickbait_loop.csv`` (per run and cell) and ``clickbait_loop_summary.csv`` (mean and
standard error over seeds, the differences between cells paired by seed, and the interaction
(bait.click - bait.play) - (quality.click - quality.play)) into the run (or sweep) directory, and
prints the summary.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from experiments.analyses.feedback_loop import run_with_world
from experiments.results import analysis_runs, mean_se
from experiments.segments import read_log
from sim.bias import rank_agreement
from sim.outputs import write_csv
from sim.policies import DecisionBatch
from sim.streams import generator

#: Members sampled for the population-average click and quality-play probability of each image.
POTENTIAL_SAMPLE = 500
#: Share of titles, by clickbait potential, that count as clickbait-prone.
TOP_SHARE = 0.1
#: Paired comparisons reported in the summary: (cell, reference cell).
CONTRASTS = (("bait.click", "bait.play"), ("bait.click", "quality.click"),
             ("bait.play", "quality.play"), ("quality.click", "quality.play"))


def clickbait_potential(world, seed: int, sample: int = POTENTIAL_SAMPLE) -> np.ndarray:
    """Per title, the click lift of its most-clicked image over its best quality-play image.

    Returns
    -------
    potential : ndarray, shape (n_titles,)   ``>= 0``; 0 when one image wins on both.
    """
    cat, resp = world.catalog, world.response
    T = cat.n_titles
    members = generator(seed, "clickbait-potential").choice(
        world.members.n_members, size=min(sample, world.members.n_members), replace=False)
    S = members.size
    member = np.repeat(members, T)
    title = np.tile(np.arange(T), S)
    zero = np.zeros(member.size, dtype=np.int64)
    p_click, _, p_quality = resp.probabilities(DecisionBatch(
        member=member, title=title, candidates=cat.pool[title], mask=cat.pool[title] >= 0, row=zero,
        column=zero, time=np.zeros(member.size), familiar=np.zeros(member.size, dtype=bool)))
    valid = cat.pool >= 0
    click = np.where(valid, np.asarray(p_click, np.float64).reshape(S, T, -1).mean(0), -np.inf)
    quality = np.where(valid, np.asarray(p_quality, np.float64).reshape(S, T, -1).mean(0), -np.inf)
    rows = np.arange(T)
    return click.max(axis=1) / click[rows, quality.argmax(axis=1)] - 1.0


def run_metrics(run_dir: Path) -> list[dict]:
    """Per-cell clickbait-loop measures of one run."""
    run_dir = Path(run_dir)
    cfg, world = run_with_world(run_dir)
    cat = world.catalog
    potential = clickbait_potential(world, cfg.seed)
    start = np.flatnonzero(cat.launched(0.0))
    n_top = max(1, int(round(TOP_SHARE * start.size)))
    prone = start[np.argsort(-potential[start], kind="stable")[:n_top]]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    drift = metrics.get("ranker_drift") or []
    log = read_log(run_dir, ["cell", "time", "title"])
    last_day = np.ceil(cfg.engine.days) - 1
    on_last = log["time"] >= last_day * 1440.0
    launched = cat.launched(cfg.engine.days * 1440.0)
    rows = []
    for cell in sorted(metrics["cells"]):
        m = (log["cell"] == cell) & on_last
        imp = np.bincount(log["title"][m], minlength=cat.n_titles).astype(np.float64)
        c = metrics["cells"][cell]
        spearman = [r["spearman"] for r in drift if cell in r["cells"].split(",")]
        rows.append({
            "cell": cell, "seed": cfg.seed,
            "prone_exposure_share": imp[prone].sum() / max(imp.sum(), 1.0),
            "prone_potential": float(potential[prone].mean()),
            "exposure_potential_spearman": rank_agreement(imp[launched][None, :], potential[launched][None, :]),
            "ctr": c["ctr"]["estimate"], "take_fraction": c["take_fraction"]["estimate"],
            "ranker_spearman": spearman[-1] if spearman else float("nan")})
    return rows


MEASURES = ("prone_exposure_share", "exposure_potential_spearman", "ctr", "take_fraction",
            "ranker_spearman")


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and SE over seeds per cell, then paired (by seed) differences between cells."""
    out = []
    cells = sorted({r["cell"] for r in rows})
    for c in cells:
        row = {"cell": c, "seeds": sum(r["cell"] == c for r in rows)}
        for k in MEASURES:
            row[k], row[k + "_se"] = mean_se([r[k] for r in rows if r["cell"] == c])
        out.append(row)
    by = {(r["cell"], r["seed"]): r for r in rows}
    for a, b in CONTRASTS:
        seeds = sorted(s for (c, s) in by if c == a and (b, s) in by)
        if not seeds:
            continue
        row = {"cell": f"{a} - {b}", "seeds": len(seeds)}
        for k in MEASURES:
            row[k], row[k + "_se"] = mean_se([by[a, s][k] - by[b, s][k] for s in seeds])
        out.append(row)
    # Interaction: what training on clicks adds under bait artwork beyond what it adds under
    # quality artwork (the part of the click ranker's shift that the artwork causes).
    seeds = sorted(s for (c, s) in by if c == "bait.click"
                   and all((x, s) in by for x in ("bait.play", "quality.click", "quality.play")))
    if seeds:
        row = {"cell": "interaction", "seeds": len(seeds)}
        for k in MEASURES:
            row[k], row[k + "_se"] = mean_se([
                by["bait.click", s][k] - by["bait.play", s][k]
                - by["quality.click", s][k] + by["quality.play", s][k] for s in seeds])
        out.append(row)
    return out


def _fmt(mean: float, se: float) -> str:
    return f"{mean:.4f}" if not np.isfinite(se) else f"{mean:.4f} ± {se:.4f}"


def analyze(run_dir: Path) -> list[Path]:
    """One run, or a sweep directory (runs below it): per-run table, then summary over seeds."""
    run_dir = Path(run_dir)
    runs = analysis_runs(run_dir)
    rows = [r for d in runs for r in run_metrics(d)]
    summary = summarize(rows)
    print(f"{'cell':<30} " + " ".join(f"{k:>24}" for k in MEASURES))
    for s in summary:
        print(f"{s['cell']:<30} " + " ".join(f"{_fmt(s[k], s[k + '_se']):>24}" for k in MEASURES))
    paths = [run_dir / "clickbait_loop.csv", run_dir / "clickbait_loop_summary.csv"]
    write_csv(paths[0], rows)
    write_csv(paths[1], summary)
    from experiments.analysis_plots import clickbait_loop_chart

    (run_dir / "charts").mkdir(exist_ok=True)
    return paths + [clickbait_loop_chart(rows, run_dir / "charts" / "clickbait_loop.png")]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Clickbait-through-the-ranker measures of a run or sweep")
    ap.add_argument("run_dir", type=Path)
    for p in analyze(ap.parse_args(argv).run_dir):
        print(p)


if __name__ == "__main__":
    main()
