"""How far is the simulator from real data? Calibration reports and fitting to your own logs.

    python -m experiments.calibrate --data movielens   # world=movielens run vs the real ratings
    python -m experiments.calibrate --data obd         # fit clicks to the Open Bandit Dataset sample
    python -m experiments.calibrate --logs FILE        # fit clicks to your impression log

Each writes ``calibration.csv``, ``calibration.md`` and ``calibration.png`` to ``--out``
(default ``outputs/calibrate/<name>``).

* ``--data movielens`` simulates ``world=movielens`` (the 943 users as members, ``--days`` at
  ``--visits-per-day``) and compares its plays with the real ratings (:mod:`sim.calibration`):
  per-genre KS distance of members' genre shares, Gini and Lorenz curve of plays per title,
  activity per member, genre co-occurrence. The real ratings are subsampled per member to the
  member's number of simulated plays (same depth, same sampling noise on both sides).
* ``--data obd`` / ``--logs FILE`` fit base rate, position attention and item effects
  (:mod:`sim.fit_log`), write the fitted world to ``<out>/world/<name>.yaml`` and
  ``<out>/world/response/<name>.yaml``, and compare logged click rates by position and item with
  the fitted model's and with the simulator's own response model built from those files. Run
  the fitted world with::

      python -m experiments.run --config-dir <out> world=<name> world/response=<name>

Data is read where it is (MovieLens: see :mod:`sim.world.movielens`; OBD: an installed ``obp``
or an ``obp`` wheel in the download cache, ``pip download --no-deps obp -d <cache>``); nothing
is copied into the repository.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import yaml

from experiments.ctrl_c import FILES_WHOLE, one_line_on_ctrl_c
from sim.bias import gini, lorenz_band
from sim.calibration import KS_TARGET, depth_matched, interaction_table, member_genre_shares
from sim.fit_log import ITEM_PRIOR_SD, ClickLog, fit_clicks, rate_table, read_click_log, world_config
from sim.outputs import atomic_write_text
from sim.world.movielens import GENRES, cache_dir, find_movielens, load_movielens

REPO = Path(__file__).resolve().parent.parent
OBD_MEMBER = "obp/dataset/obd/random/all/"


# ---- MovieLens -------------------------------------------------------------------------------------
def movielens_config(days: float, visits_per_day: float, seed: int, data_path: str | None,
                     ranker: str = "learned") -> dict:
    """What ``python -m experiments.run world=movielens experiment=single`` runs, as a dict."""
    world = yaml.safe_load((REPO / "configs/world/movielens.yaml").read_text())
    world.update(visits_per_day=visits_per_day, data_path=data_path, response={"name": "session"})
    return {"seed": seed, "world": world,
            "engine": {"days": days, "progress": False, "track_regret": False},
            "ranker": {"name": ranker}, "policy": {"name": "thompson"},
            "experiment": {"name": "calibrate_movielens"}}


def calibrate_movielens(out: Path, days: float, visits_per_day: float, seed: int,
                        data_path: str | None, ranker: str = "learned") -> list[dict]:
    from sim.logs import read_impressions
    from sim.runner import run_experiment

    data = load_movielens(find_movielens(data_path))
    run_dir = out / "run"
    run_experiment(movielens_config(days, visits_per_day, seed, data_path, ranker), run_dir, progress=False)
    log = read_impressions(run_dir, columns=["member", "title", "play"])
    log = log[log["play"].to_numpy()]
    sim = (log["member"].to_numpy(np.int64), log["title"].to_numpy(np.int64))
    U = data.n_users                      # members 0..942 are the users themselves
    depth = np.bincount(sim[0], minlength=U)
    real = depth_matched(data.user, data.item, depth, np.random.default_rng(seed))
    mix = data.genre_mixture()
    rows = interaction_table(real, sim, mix, U, GENRES, real_activity=data.ratings_per_user())
    rows.append({"measure": "plays per title Gini, all 100k ratings (not depth-matched)", "genre": "",
                 "real": gini(data.ratings_per_item()), "simulated": float("nan"),
                 "distance": float("nan"), "target": "", "met": None})
    _movielens_chart(out / "calibration.png", real, sim, mix, U, rows, f"{days:g} simulated days at "
                     f"{visits_per_day:g} visits/day, ranker {ranker}", data.ratings_per_user())
    return rows


def _movielens_chart(path, real, sim, mix, U, rows, what: str, real_activity) -> None:
    from experiments.plotting import Z95, plt, save

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    sr, ar = member_genre_shares(*real, mix, U)
    ss, as_ = member_genre_shares(*sim, mix, U)
    both = ar & as_
    x = np.arange(len(GENRES))
    ks = {r["genre"]: r["distance"] for r in rows if r["measure"] == "genre share KS"}
    ax = axes[0]
    for shift, s, label, color in ((-0.2, sr, "real (depth-matched ratings)", "C0"),
                                   (0.2, ss, "simulated plays", "C1")):
        m, se = s[both].mean(axis=0), s[both].std(axis=0) / np.sqrt(max(both.sum(), 1))
        ax.bar(x + shift, m, 0.4, yerr=Z95 * se, color=color, label=label, capsize=2)
    ax.set_xticks(x, [f"{g} ({ks[g]:.2f})" for g in GENRES], rotation=70, fontsize=7)
    ax.set(title="Mean genre share per member (KS distance in brackets)", xlabel="genre",
           ylabel="share of a member's plays (fraction)")
    ax.legend()
    ax = axes[1]
    n_titles = mix.shape[0]
    rng = np.random.default_rng(0)
    for (m_, t_), label, color in ((real, "real", "C0"), (sim, "simulated", "C1")):
        curve = lorenz_band(t_, m_, n_titles, rng)        # 95 % band: bootstrap over members, the sampled unit
        g = next(r for r in rows if r["measure"] == "plays per title Gini")
        gv = g["real"] if label == "real" else g["simulated"]
        ax.plot(curve["x"], curve["y"], color=color, label=f"{label} (Gini {gv:.3f})")
        ax.fill_between(curve["x"], curve["low"], curve["high"], color=color, alpha=0.2, lw=0)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="equal plays")
    ax.set(title="Lorenz curve of plays per title (95 % bootstrap band)",
           xlabel="share of titles, least played first (fraction)", ylabel="share of plays (fraction)")
    ax.legend()
    ax = axes[2]
    for a, label, color in ((real_activity, "real (all ratings)", "C0"),
                            (np.bincount(sim[0], minlength=U), "simulated plays", "C1")):
        a = np.asarray(a, float)
        a = np.sort(a / a.mean())
        ax.step(a, np.arange(1, a.size + 1) / a.size, where="post", color=color, label=label)
    d = next(r for r in rows if r["measure"].startswith("activity"))["distance"]
    ax.set(title=f"Activity per member (KS {d:.3f})", xlabel="plays per member / mean (ratio)",
           ylabel="cumulative share of members (fraction)")
    ax.legend()
    fig.suptitle(f"world=movielens vs MovieLens 100k: {what}, 943 members")
    fig.tight_layout()
    save(fig, path)


# ---- Open Bandit Dataset and your own logs ---------------------------------------------------------
def find_obd(tmp: Path) -> Path:
    """The OBD sample CSV (random policy, all campaign) from an installed ``obp`` or a cached wheel."""
    spec = importlib.util.find_spec("obp")
    if spec is not None and spec.submodule_search_locations:
        csv_path = Path(list(spec.submodule_search_locations)[0]) / "dataset/obd/random/all/all.csv"
        if csv_path.is_file():
            return csv_path
    wheels = sorted(cache_dir().glob("obp-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"Open Bandit Dataset sample not found (no installed obp, no obp wheel in "
                                f"{cache_dir()}). Fetch it with:  pip download --no-deps obp -d {cache_dir()}")
    with zipfile.ZipFile(wheels[-1]) as zf:
        for name in ("all.csv", "item_context.csv"):
            (tmp / name).write_bytes(zf.read(OBD_MEMBER + name))
    return tmp / "all.csv"


def simulator_rates(world_file: Path, response_file: Path, log: ClickLog) -> np.ndarray:
    """P(click) per logged impression from the simulator's own response model, built from the
    written config files (so the files, not the fit object, are what is checked), shape (n,)."""
    from sim.config import experiment_config_from_dict
    from sim.world import build_world

    world = yaml.safe_load(world_file.read_text())
    world["response"] = yaml.safe_load(response_file.read_text())
    world["n_members"] = 1                 # members play no part in the fitted click model
    cfg = experiment_config_from_dict({"world": world})
    w = build_world(cfg.world, 0, 1440.0)
    default_image = w.catalog.pool[log.item, :1]
    p = w.response.take_probabilities(np.zeros(log.item.size, np.int64), log.item, default_image,
                                      log.row, log.column, np.zeros(log.item.size, bool))[0]
    return p[:, 0]


def calibrate_log(path: Path, out: Path, name: str, item_prior_sd: float) -> tuple[list[dict], dict]:
    log = read_click_log(path)
    fit = fit_clicks(log, item_prior_sd)
    world, response = world_config(fit, name)
    header = (f"# Fitted by `python -m experiments.calibrate` to {path.name} ({log.layout}, "
              f"{fit.n_impressions} impressions, {fit.n_clicks} clicks).\n"
              f"# Title t is the log's t-th item id in sorted order (ids: calibration_items.csv).\n"
              f"# Run: python -m experiments.run --config-dir {out} world={name} world/response={name}\n")
    wf, rf = out / "world" / f"{name}.yaml", out / "world" / "response" / f"{name}.yaml"
    rf.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(wf, header + yaml.safe_dump(world, sort_keys=False, default_flow_style=None, width=100))
    note = "" if fit.row_identified else "# One position axis in the log: columns; the row exponent copies the column one.\n"
    atomic_write_text(rf, header + note + yaml.safe_dump(response, sort_keys=False))
    p_sim = simulator_rates(wf, rf, log)
    tables = {}
    for by in ("position", "item"):
        t = rate_table(log, fit, by)
        if by == "position":
            key = np.stack([log.row, log.column])
            groups, inv = np.unique(key, axis=1, return_inverse=True)
            inv = inv.reshape(-1)
        else:
            inv = log.item
        s = np.bincount(inv, weights=p_sim) / np.maximum(np.bincount(inv), 1)
        s = s[np.bincount(inv) > 0]
        for r, v in zip(t, s):
            r["simulator_rate"] = float(v)
        tables[by] = t
    params = [
        {"parameter": "base rate (click logit)", "value": fit.base_logit, "se": fit.base_logit_se},
        {"parameter": "column (position) attention exponent", "value": fit.column_exponent,
         "se": fit.column_exponent_se},
        {"parameter": "row attention exponent" + ("" if fit.row_identified else " (not identified: = column)"),
         "value": fit.row_exponent, "se": fit.row_exponent_se},
        {"parameter": "item effect sd (logit)", "value": float(np.std(fit.item_effect)), "se": float("nan")},
        {"parameter": "item prior sd (ridge)", "value": fit.item_prior_sd, "se": float("nan")},
    ]
    _write_csv(out / "calibration_items.csv", tables["item"])
    _write_csv(out / "calibration_positions.csv", tables["position"])
    _log_chart(out / "calibration.png", tables, fit, name)
    return params, tables


def _wilson_bars(rows: list[dict]) -> np.ndarray:
    """Asymmetric error bars (2, n) of the logged rates' Wilson intervals."""
    return np.maximum(0.0, np.array([[r["logged_rate"] - r["logged_low95"] for r in rows],     # 0 - 1e-18
                                     [r["logged_high95"] - r["logged_rate"] for r in rows]]))


def _log_chart(path, tables, fit, name) -> None:
    from experiments.plotting import Z95, percent_axis, plt, save

    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    ax = axes[0]
    t = tables["position"]
    x = np.arange(len(t))
    ax.errorbar(x, [r["logged_rate"] for r in t], yerr=_wilson_bars(t), fmt="o", capsize=4,
                label="logged (95 % Wilson interval)")
    ax.plot(x, [r["fitted_rate"] for r in t], "s--", label="fitted model")
    ax.plot(x, [r["simulator_rate"] for r in t], "x", ms=10, label="simulator (written config)")
    ax.set_xticks(x, [r["position"] for r in t], rotation=30 if len(t) > 4 else 0)
    ax.set(title=f"Click rate by position (attention exponent {fit.column_exponent:.2f}, "
                 f"95 %: +-{Z95 * fit.column_exponent_se:.2f})", xlabel="position", ylabel="click rate")
    percent_axis(ax)
    ax.legend()
    ax = axes[1]
    t = sorted(tables["item"], key=lambda r: r["fitted_rate"])
    x = np.arange(len(t))
    ax.errorbar(x, [r["logged_rate"] for r in t], yerr=_wilson_bars(t), fmt=".", alpha=0.6,
                label="logged (95 % Wilson interval)")
    ax.plot(x, [r["fitted_rate"] for r in t], "-", label="fitted model")
    ax.plot(x, [r["simulator_rate"] for r in t], "x", ms=4, label="simulator (written config)")
    ax.set(title="Click rate by item (items sorted by fitted rate)", xlabel="item rank (by fitted rate)",
           ylabel="click rate")
    percent_axis(ax)
    ax.legend()
    fig.suptitle(f"Fitted world '{name}': {fit.n_impressions} impressions, {fit.n_clicks} clicks")
    fig.tight_layout()
    save(fig, path)


# ---- tables ------------------------------------------------------------------------------------------
def _write_csv(path: Path, rows: list[dict]) -> None:
    """Every value as Python prints it (not :func:`sim.outputs.write_csv`'s 10 digits), written
    whole or not at all."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.4g}"
    return str(v)


def markdown_table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


@one_line_on_ctrl_c(FILES_WHOLE)
def main(argv: list[str] | None = None) -> int:
    from experiments.cli_help import prog
    ap = argparse.ArgumentParser(prog=prog("experiments.calibrate"), description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", choices=("movielens", "obd"), help="a real data set to compare with")
    src.add_argument("--logs", type=Path, help="an impression log to fit (OBD CSV, native CSV/Parquet, run dir)")
    ap.add_argument("--out", type=Path, help="output folder (default outputs/calibrate/<name>)")
    ap.add_argument("--name", default=None, help="name of the fitted world (default: fitted, or obd)")
    ap.add_argument("--days", type=float, default=7.0, help="movielens: simulated days")
    ap.add_argument("--visits-per-day", type=float, default=4.0, help="movielens: mean visits per member")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ranker", default="learned", help="movielens: the homepage ranker of the run")
    ap.add_argument("--data-path", default=None, help="movielens: world.data_path (ml-100k folder or wheel)")
    ap.add_argument("--item-prior-sd", type=float, default=ITEM_PRIOR_SD, help="fit: prior sd of item effects")
    a = ap.parse_args(argv)
    name = a.name or (a.data if a.data == "obd" else "fitted" if a.logs else "movielens")
    out = a.out or REPO / "outputs" / "calibrate" / name
    out.mkdir(parents=True, exist_ok=True)
    try:
        if a.data == "movielens":
            rows = calibrate_movielens(out, a.days, a.visits_per_day, a.seed, a.data_path, a.ranker)
            _write_csv(out / "calibration.csv", rows)
            missed = [r for r in rows if r["met"] is False]
            text = (f"# world=movielens vs MovieLens 100k ({a.days:g} days, {a.visits_per_day:g} visits/day, "
                    f"ranker {a.ranker}, seed {a.seed})\n\n" + markdown_table(rows)
                    + f"\nTargets: KS <= {KS_TARGET}, Gini within +-0.03. Missed: {len(missed)} of "
                    f"{sum(r['met'] is not None for r in rows)}.\n")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                path = find_obd(Path(tmp)) if a.data == "obd" else a.logs
                params, tables = calibrate_log(path, out, name, a.item_prior_sd)
            _write_csv(out / "calibration.csv", params)
            text = (f"# Fitted world '{name}' ({path.name})\n\n" + markdown_table(params)
                    + "\n## Click rate by position\n\n" + markdown_table(tables["position"])
                    + f"\nRun it: `python -m experiments.run --config-dir {out} world={name} world/response={name}`\n")
    except (FileNotFoundError, ValueError) as err:      # missing data, malformed log, bad config
        print(f"error: {err}", file=sys.stderr)
        return 2
    atomic_write_text(out / "calibration.md", text)
    print(text)
    print(f"written: {out}/calibration.csv, calibration.md, calibration.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
