"""Pipeline faults: how each fault of the production pipeline biases what a team measures, and
whether its repair removes the bias (``experiment=pipeline_faults``, :mod:`sim.pipeline`).

Per run (two cells, ``uniform`` the control and ``thompson`` the learned policy, common random
numbers), against the simulator's truth:

* **lift bias**: the take-fraction lift of thompson over uniform *as measured from the log*
  (attributed quality plays per logged row) minus its true value (mean true take probability of
  the images shown, ``expected_take_fraction`` in ``metrics.json``);
* **IPW / DR error**: the uniform policy's value estimated from thompson's log
  (:func:`sim.ope.ipw`, :func:`sim.ope.dr` with a per-image mean reward model) relative to its
  exact value on the impressions thompson served (``uniform_take_fraction``, the truth):
  ``estimate / exact - 1``;
* the learned policy's **artwork gain** (true take vs a random image) and **regret per 1k
  impressions**, minus their values in the fault-free runs of the same seed (what the fault cost
  the bandit through its training data).

    python -m experiments.analyses.pipeline_faults --grid runs/pipeline_faults   # run the grid
    python -m experiments.analyses.pipeline_faults runs/pipeline_faults          # table + chart

``--grid`` runs each fault (misattribution twice: to a tile and to the previous image) at ``--rates`` (default 0.01, 0.05, 0.2), without and -- where the
fault has one -- with its repair, over ``--seeds`` (default 0 1 2), plus the fault-free runs;
runs already complete are kept. The summary writes ``pipeline_faults.csv`` (one row per run),
``pipeline_faults_table.md`` (mean and standard error over seeds per fault, rate and repair) and
``pipeline_faults.png`` into the directory.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from experiments.results import analysis_runs, mean_se
from sim.logs import read_impressions
from sim.ope import dr, ipw
from sim.ope.runs import run_catalog, run_config
from sim.outputs import atomic_write_text, write_csv
from sim.pipeline.config import FAULT_NAMES, REPAIR_OF

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "experiment" / "pipeline_faults.yaml"
#: The world preset the experiment selects (``override /world: pipeline_faults``).
WORLD = CONFIG.parents[1] / "world" / "pipeline_faults.yaml"
RATES = (0.01, 0.05, 0.2)
SEEDS = (0, 1, 2)
#: Faults whose row in the grid turns on the bug they are about (a fallback logged as the policy's).
FAULT_SETTINGS = {"fallback": {"fallback_logged_as_policy": True}}
#: Grid rows that are a mode of another fault: row name -> (fault, its settings).
VARIANTS = {"misattribution_previous_image": ("misattribution", {"misattribution_to": "previous_image"})}
#: The grid's rows, in the order of the table and the chart.
GRID_FAULTS = tuple(x for f in FAULT_NAMES
                    for x in ((f, "misattribution_previous_image") if f == "misattribution" else (f,)))


def fault_key(row: str) -> str:
    """The ``engine.faults`` rate a grid row sets (``misattribution`` for its previous-image mode)."""
    return VARIANTS.get(row, (row, {}))[0]
#: Pseudo-count of the per-image reward model (shrinks images with few rows to the mean).
PRIOR_ROWS = 20.0
LEARNER, CONTROL = "thompson", "uniform"
MEASURES = ("lift_bias", "ipw_rel_error", "dr_rel_error", "gain_change", "regret_change")


# ---- the grid ------------------------------------------------------------------------------
def base_config(members: int | None = None, days: float | None = None) -> dict:
    """The experiment's config (``configs/experiment/pipeline_faults.yaml`` and its world preset)
    as a plain dict, with its response model (independent: per-tile truth is exact)."""
    d = yaml.safe_load(CONFIG.read_text())
    d.pop("hydra", None)
    d.pop("defaults", None)
    d["world"] = {**yaml.safe_load(WORLD.read_text()), "response": {"name": "independent"}}
    if members is not None:
        d["world"]["n_members"] = members
    if days is not None:
        d["engine"]["days"] = days
    d["engine"] = {**d["engine"], "progress": False}
    return d


def grid_runs(faults=GRID_FAULTS, rates=RATES, seeds=SEEDS) -> list[tuple[str, dict]]:
    """``(run name, engine.faults)`` of every run of the grid."""
    runs = [(f"none-0-off-s{s}", {}, s) for s in seeds]
    for fault in faults:
        key, settings = VARIANTS.get(fault, (fault, {}))
        repair = REPAIR_OF.get(key)
        for rate in rates:
            for on in ([False, True] if repair else [False]):
                f = {key: rate, **settings, **FAULT_SETTINGS.get(key, {}), **({repair: True} if on else {})}
                runs += [(f"{fault}-{rate:g}-{'on' if on else 'off'}-s{s}", f, s) for s in seeds]
    return [(name, {"faults": f, "seed": s}) for name, f, s in runs]


def run_grid(out: Path, faults=GRID_FAULTS, rates=RATES, seeds=SEEDS, members=None, days=None,
             world: dict | None = None) -> None:
    """Run the grid into ``out`` (one directory per run; complete runs are kept). ``world``:
    keys that replace the experiment's world keys (tests use a tiny world)."""
    from sim.outputs import is_complete
    from sim.runner import run_experiment

    base = base_config(members, days)
    base["world"] = {**base["world"], **(world or {})}
    todo = grid_runs(faults, rates, seeds)
    for i, (name, spec) in enumerate(todo):
        path = out / name
        if is_complete(path):
            continue
        cfg = {**base, "seed": spec["seed"], "experiment": {**base["experiment"], "analyses": []},
               "engine": {**base["engine"], "faults": spec["faults"]}}
        run_experiment(cfg, path, progress=False)
        print(f"[{i + 1}/{len(todo)}] {name}", flush=True)


# ---- one run ---------------------------------------------------------------------------------
def fault_of(metrics: dict) -> tuple[str, float, bool]:
    """(grid row, rate, repaired) of a run from its ``faults`` config (``none`` when off)."""
    f = metrics.get("faults", {}).get("config")
    if not f:
        return "none", 0.0, False
    on = [n for n in FAULT_NAMES if f.get(n)]
    fault = on[0] if len(on) == 1 else ("several" if on else "none")
    repair = REPAIR_OF.get(fault)
    rate = float(f.get(fault, 0.0)) if fault in FAULT_NAMES else 0.0
    if fault == "misattribution" and f.get("misattribution_to") == "previous_image":
        fault = "misattribution_previous_image"
    return fault, rate, bool(repair and f.get(repair))


def _value(x) -> float:
    return float(x["estimate"] if isinstance(x, dict) else x)


def measure(run_dir: Path) -> dict:
    """The run's biases (see the module doc) as one row."""
    m = json.loads((run_dir / "metrics.json").read_text())
    cells = m["cells"]
    fault, rate, repaired = fault_of(m)
    true_lift = _value(cells[LEARNER]["expected_take_fraction"]) / _value(cells[CONTROL]["expected_take_fraction"]) - 1
    log = read_impressions(run_dir, ["cell", "title", "action", "artwork", "pscore", "reward"])
    reward = log.groupby(log["cell"].astype(str), observed=True)["reward"].mean()
    measured_lift = reward[LEARNER] / reward[CONTROL] - 1
    ope = uniform_value_estimates(run_dir, log[log["cell"].astype(str) == LEARNER])
    exact = _value(cells[LEARNER]["uniform_take_fraction"])
    return {"run": run_dir.name, "fault": fault, "rate": rate, "repair": repaired, "seed": m["config"]["seed"],
            "true_lift": true_lift, "measured_lift": measured_lift, "lift_bias": measured_lift - true_lift,
            "exact_value": exact, "ipw": ope["ipw"], "dr": ope["dr"],
            "ipw_rel_error": ope["ipw"] / exact - 1, "dr_rel_error": ope["dr"] / exact - 1,
            "artwork_gain": _value(cells[LEARNER]["artwork_gain"]),
            "regret_per_1k": _value(cells[LEARNER]["regret_per_1k_impressions"]),
            "log_rows": len(log), "refused_rows": ope["refused"], "impressions": cells[LEARNER]["impressions"] + cells[CONTROL]["impressions"]}


def uniform_value_estimates(run_dir: Path, log: pd.DataFrame) -> dict[str, float]:
    """IPW and DR estimates of the uniform policy's value from a cell's log rows, and the number
    of rows refused for a logged propensity of 0 (the fallback bug logs pi(default | x), which is
    0 where the policy would never show the default image: IPW cannot use such a row)."""
    refused = int((log["pscore"] <= 0).sum())
    log = log[log["pscore"] > 0]
    catalog = run_catalog(run_config(run_dir))
    pool = catalog.pool[log["title"].to_numpy()]
    valid = pool >= 0
    target = (valid / valid.sum(axis=1, keepdims=True))[:, :, None]             # (n, K, 1)
    reward = log["reward"].to_numpy(np.float64)
    action = log["action"].to_numpy(np.int64)
    # Reward model: each image's mean logged reward, shrunk to the overall mean.
    art = log["artwork"].to_numpy()
    shows = np.bincount(art, minlength=catalog.artwork_title.size)
    wins = np.bincount(art, weights=reward, minlength=catalog.artwork_title.size)
    q_art = (wins + PRIOR_ROWS * reward.mean()) / (shows + PRIOR_ROWS)
    q = np.where(valid, q_art[np.maximum(pool, 0)], 0.0)[:, :, None]
    rng = np.random.default_rng(0)
    kw = dict(rng=rng, n_bootstrap=10)
    pscore = log["pscore"].to_numpy(np.float64)
    return {"ipw": ipw(reward, action, pscore, target, **kw).value,
            "dr": dr(reward, action, pscore, target, q, **kw).value, "refused": refused}


# ---- summary -----------------------------------------------------------------------------------
def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard error over seeds per (fault, rate, repair); artwork gain and regret
    as changes from the fault-free run of the same seed."""
    clean = rows[rows["fault"] == "none"].set_index("seed")
    rows = rows.assign(gain_change=rows["artwork_gain"] - rows["seed"].map(clean["artwork_gain"]),
                       regret_change=rows["regret_per_1k"] - rows["seed"].map(clean["regret_per_1k"]))
    out = []
    for (fault, rate, repair), g in rows.groupby(["fault", "rate", "repair"], sort=False):
        row = {"fault": fault, "rate": rate, "repair": repair, "seeds": len(g)}
        for k in MEASURES:
            row[k], row[k + "_se"] = mean_se(g[k].tolist())
        out.append(row)
    order = {f: i for i, f in enumerate(("none",) + GRID_FAULTS)}
    return pd.DataFrame(out).sort_values(["fault", "rate", "repair"], key=lambda c: c.map(order) if c.name == "fault"
                                         else c).reset_index(drop=True)


def table_markdown(summary: pd.DataFrame) -> str:
    """The closing table: per fault and rate, each bias without and with its repair (mean +- se
    over seeds: lift bias and artwork-gain change in percentage points, IPW and DR errors in
    percent of the exact value, regret in quality plays lost per 1000 impressions)."""
    def cell(r, k, scale):
        return "—" if r is None else f"{scale * r[k]:+.2f} ± {scale * r[k + '_se']:.2f}"

    lines = ["| fault | rate | repair | lift bias (pp) | IPW error (%) | DR error (%) | "
             "artwork gain change (pp) | regret change (per 1k) |", "|" + "---|" * 8]
    for _, r in summary.iterrows():
        rep = REPAIR_OF.get(fault_key(r["fault"]))
        repair = ("on: " + rep if r["repair"] else "off") if rep else "(none)"
        lines.append(f"| {r['fault']} | {r['rate']:g} | {repair} | {cell(r, 'lift_bias', 100)} | "
                     f"{cell(r, 'ipw_rel_error', 100)} | {cell(r, 'dr_rel_error', 100)} | "
                     f"{cell(r, 'gain_change', 100)} | {cell(r, 'regret_change', 1)} |")
    return "\n".join(lines) + "\n"


def chart(summary: pd.DataFrame, path: Path) -> Path:
    """One panel per fault: lift bias and the relative IPW and DR errors against the fault's
    rate, without (solid) and with (dashed) its repair, with 95 % bands over seeds."""
    from experiments.plotting import Z95, percent_axis, plt, save

    faults = [f for f in GRID_FAULTS if f in set(summary["fault"])]
    clean = summary[summary["fault"] == "none"]
    cols = min(3, max(1, len(faults)))
    rows_ = -(-len(faults) // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(4.6 * cols, 3.4 * rows_ + 0.8), squeeze=False)
    colors = {"lift_bias": "tab:blue", "ipw_rel_error": "tab:orange", "dr_rel_error": "tab:green"}
    names = {"lift_bias": "measured - true lift", "ipw_rel_error": "IPW / exact - 1",
             "dr_rel_error": "DR / exact - 1"}
    for ax, fault in zip(axes.flat, faults):
        for repair, style in ((False, "-"), (True, "--")):
            g = summary[(summary["fault"] == fault) & (summary["repair"] == repair)]
            if g.empty:
                continue
            g = pd.concat([clean, g]).sort_values("rate")
            x = g["rate"].to_numpy()
            for k, color in colors.items():
                y, se = g[k].to_numpy(), np.nan_to_num(g[k + "_se"].to_numpy())
                ax.plot(x, y, style, marker="o", ms=3, color=color,
                        label=f"{names[k]}{' (repaired)' if repair else ''}")
                ax.fill_between(x, y - Z95 * se, y + Z95 * se, color=color, alpha=0.12, lw=0)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xticks([0, 0.01, 0.05, 0.2])
        percent_axis(ax, "both")
        rep = REPAIR_OF.get(fault_key(fault))
        ax.set_title(f"{fault}" + (f" (dashed: + {rep})" if rep else " (no repair)"), fontsize=10)
        ax.set_xlabel("fault rate")
        ax.set_ylabel("bias (percent)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(faults):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat:
        h, lab = ax.get_legend_handles_labels()
        if len(h) > len(handles):
            handles, labels = h, lab
    title = "thompson vs uniform; OPE: uniform policy's\nvalue on thompson's log; bands: 95 % over seeds"
    spare = list(axes.flat)[len(faults):]
    if spare:       # the legend in the first empty panel, not below the grid
        spare[0].legend(handles, labels, loc="center", fontsize=8, title=title, title_fontsize=8)
    else:
        fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, title=title, title_fontsize=8)
    seeds = int(summary["seeds"].max())
    fig.suptitle(f"Pipeline faults: bias of what the log reports ({seeds} seed{'s' if seeds > 1 else ''})")
    fig.tight_layout(rect=(0, 0 if spare else (0.09 if rows_ > 1 else 0.2), 1, 1))
    return save(fig, path)


def analyze(run_dir: Path) -> list[Path]:
    """Measure every run in or below ``run_dir``; write the CSV, the table and the chart."""
    run_dir = Path(run_dir)
    rows = pd.DataFrame([measure(p) for p in analysis_runs(run_dir)])
    write_csv(run_dir / "pipeline_faults.csv", rows.to_dict("records"))
    out = [run_dir / "pipeline_faults.csv"]
    if (rows["fault"] == "none").any():
        summary = summarize(rows)
        table = table_markdown(summary)
        atomic_write_text(run_dir / "pipeline_faults_table.md", table)
        write_csv(run_dir / "pipeline_faults_summary.csv", summary.to_dict("records"))
        out += [run_dir / "pipeline_faults_table.md", run_dir / "pipeline_faults_summary.csv",
                chart(summary, run_dir / "pipeline_faults.png")]
        print(table)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("directory", type=Path, help="a run, or the directory holding the grid's runs")
    p.add_argument("--grid", action="store_true", help="run the grid into the directory first")
    p.add_argument("--faults", nargs="+", default=list(GRID_FAULTS), choices=GRID_FAULTS)
    p.add_argument("--rates", nargs="+", type=float, default=list(RATES))
    p.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    p.add_argument("--members", type=int, default=None, help="world.n_members (default: the experiment's)")
    p.add_argument("--days", type=float, default=None, help="engine.days (default: the experiment's)")
    a = p.parse_args(argv)
    if a.grid:
        run_grid(a.directory, a.faults, a.rates, a.seeds, a.members, a.days)
    analyze(a.directory)


if __name__ == "__main__":
    main()
