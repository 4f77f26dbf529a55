"""README figures of offline evaluation, real data and speed: OPE accuracy, page-level OPE, MovieLens,
calibration, fitting, the bench, scale and memory
(sources for ``make figures``: see :mod:`experiments.figures`)."""
from __future__ import annotations

import json
from pathlib import Path

from experiments.figures import OUT, commands, source


# ---- Gymnasium environment ---------------------------------------------------------------------
@commands("bench_gym", ("experiments.gym_bench", "--json", f"{OUT}/gym_bench.json"))
def bench_gym(out: Path) -> dict[str, str]:
    """The table ``homesim-gym-bench`` prints, and the load average it ran at."""
    from experiments.gym_bench import table

    report = json.loads((out / "gym_bench.json").read_text())
    return {"bench_gym.table": table(report["rows"]), "bench_gym.load_average": f"{report['load_average'][0]:.1f}"}


@commands("gym_agents", ("experiments.gym_agents", "--out", f"{OUT}/comparison.txt"))
def gym_agents(out: Path) -> dict[str, str]:
    """Random vs Thompson agents, as ``python -m experiments.gym_agents`` prints them."""
    return {"gym_agents.comparison": (out / "comparison.txt").read_text()}


# ---- Fitting the simulator to logs: the Open Bandit Dataset sample -----------------------------
@commands("calibrate_obd",
          ("experiments.calibrate", "--data", "obd", "--out", f"{OUT}/fit"),
          ("experiments.run", "--config-dir", f"{OUT}/fit", "world=obd", "world/response=obd", "engine.days=0.5",
           "experiment=single", "engine.progress=false", f"hydra.run.dir={OUT}/run"))
def calibrate_obd(out: Path) -> dict[str, str]:
    """The fit's tables as ``calibration.md`` writes them, the sample's size, the worst item, the
    exponent's interval, and the CTR of a half-day run of the fitted world against the log's."""
    import pandas as pd

    from sim.metrics import Z95

    tables = [b + "\n" for b in (out / "fit" / "calibration.md").read_text().split("\n\n") if b.startswith("|")]
    items = pd.read_csv(out / "fit" / "calibration_items.csv")
    params = pd.read_csv(out / "fit" / "calibration.csv").set_index("parameter")
    exponent = params.loc["column (position) attention exponent"]
    run = json.loads((out / "run" / "metrics.json").read_text())
    return {
        "calibrate_obd.parameters": tables[0],
        "calibrate_obd.positions": tables[1],
        "calibrate_obd.impressions": f"{items.impressions.sum():,}",
        "calibrate_obd.items": f"{len(items)}",
        "calibrate_obd.clicks": f"{items.clicks.sum()}",
        "calibrate_obd.items_clicked": f"{(items.clicks > 0).sum()}",
        "calibrate_obd.max_item_z": f"{items.z.abs().max():.2f}",
        "calibrate_obd.exponent_ci": f"{exponent.value:.2f} +- {Z95 * exponent.se:.2f}",
        "calibrate_obd.simulator_agreement": f"{(items.fitted_rate - items.simulator_rate).abs().max():.0e}",
        "calibrate_obd.log_ctr": f"{100 * items.clicks.sum() / items.impressions.sum():.2f} %",
        "calibrate_obd.run_ctr": f"{100 * run['cells'][run['control']]['ctr']['estimate']:.2f} %",
    }


# ---- Speed: the closed loop of make bench ------------------------------------------------------
@commands("bench", ("experiments.bench", "--skip-scaling", "--skip-response", "--workers", "1", "--repeat", "1",
                    "--json", f"{OUT}/bench.json"))
def bench(out: Path) -> dict[str, str]:
    """The headline closed loop of ``make bench`` for each policy (from its ``--json``): rate,
    simulated seconds, ratios to the minimal pipelines, and the kernels' load and compile times."""
    report = json.loads((out / "bench.json").read_text())
    rows = {r["policy"]: r for r in report["headline"]}
    first = report["headline"][0]
    out_ = {
        "bench.load_average": f"{report['machine']['load_average_at_start'][0]:.1f}",
        "bench.impressions": f"{first['impressions']:,}",
        "bench.artworks_per_title": f"{first['artworks_per_title']:.1f}",
        "bench.minimal": f"{first['minimal_impressions_per_s']:,.0f}",
        "bench.compiled": f"{first['minimal_compiled_impressions_per_s']:,.0f}",
        "bench.kernels_load": f"{first['kernel_first_call_s']:.2f} s",
        "bench.kernels_compile": f"{first['kernel_compile_from_scratch_s']:.2f} s",
        "bench.peak_rss": f"{max(r['peak_rss_mb'] for r in rows.values()):,.0f} MB",
    }
    for policy, r in rows.items():
        out_[f"bench.{policy}.rate"] = f"{r['impressions_per_s_median']:,.0f}"
        out_[f"bench.{policy}.seconds"] = f"{r['run_s']:.1f} s"
        out_[f"bench.{policy}.ratio"] = f"{r['ratio']:.2f}"
        out_[f"bench.{policy}.ratio_compiled"] = f"{r['ratio_compiled']:.2f}"
    return out_


# ---- Offline policy evaluation: per-impression and page-level accuracy -------------------------
@commands("ope_accuracy", ("experiments.ope_accuracy", "--out", OUT))
def ope_accuracy(out: Path) -> dict[str, str]:
    return {}


# ---- Calibration against MovieLens 100k --------------------------------------------------------
CALIBRATION_RUNS = [(ranker, seed) for seed in (0, 1) for ranker in ("learned", "random")]


@commands("calibrate_movielens", *(("experiments.calibrate", "--data", "movielens", "--ranker", ranker,
                                    "--seed", str(seed), "--out", f"{OUT}/{ranker}_seed{seed}")
                                   for ranker, seed in CALIBRATION_RUNS))
def calibrate_movielens(out: Path) -> dict[str, str]:
    return {}


# ---- The simulated world under the independent response model ----------------------------------
@source("world_independent", "world.response.name=independent")
def world_independent(run_dir: Path) -> dict[str, str]:
    return {}
