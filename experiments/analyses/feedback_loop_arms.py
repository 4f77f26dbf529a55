"""Feedback loops with the same members under every recommender (Chaney et al.'s design).

Reads a sweep of ``experiment=feedback_loop_arms``: one run per (recommender arm, seed), all
members in one cell, so every arm of a seed serves the same world, members and visits (common
random numbers; :func:`check_same_visits` refuses a sweep where the visit logs differ) and the
arms differ only in ranker and policy. Members are paired across the runs by member id.

Per seed, arm and simulated day (consumed set = titles played since the start):

* ``chaney`` -- homogenization as Chaney, Stewart and Engelhardt (RecSys 2018) define it: each
  member is paired with the most similar member *as the arm's recommender represents members*
  (:func:`representation_kind`: true tastes for the oracle, the genre affinities a learned ranker
  scores with -- read from the visit log as of the member's last visit --, and a fixed random
  partner for rankers without a member representation, popularity and random), and the mean
  Jaccard overlap of the pairs' consumed sets is compared with the same pairs' overlap under the
  ideal (oracle) arm: :func:`sim.bias.homogenization_change`. 0 for the oracle arm itself.
* ``played_nn`` -- the secondary variant: nearest member *by played set* on a sample of members
  (:func:`sim.bias.homogenization`) minus the oracle arm's on the same sample. It grows as
  played sets shrink (set-size confound); ``set_size`` (titles played per member who played) is
  written beside it.
* ``random_pairs`` -- the same change on one fixed set of random pairs for every arm: the
  pairing held fixed, so arms differ only by what their recommender made members consume;
* ``utility`` -- quality plays so far over the oracle arm's, minus one (Chaney et al.'s utility
  relative to ideal); ``take_fraction`` of the day.

Writes ``feedback_loop_arms_daily.csv``, ``feedback_loop_arms_summary.csv`` (last day, mean and
standard error over seeds), ``feedback_loop_arms_ordering.csv`` (the paired differences behind
Chaney's ordering, popularity > learned > random, per measure) and
``charts/feedback_loop_homogenization.png`` into the sweep directory.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from experiments.plotting import band, plt, save
from experiments.results import mean_se
from experiments.segments import read_log
from sim.config import to_dict
from sim.bias import homogenization, homogenization_change, nearest_partner, random_partner
from sim.features import observed_affinity
from sim.homepage import LearnedRanker
from sim.ope.runs import run_config, run_world
from sim.outputs import write_csv
from sim.streams import generator

#: Members in the played-set nearest-neighbour sample (as in the per-cell experiment).
PLAYED_NN_SAMPLE = 300
#: The ordering Chaney et al. report, most homogenizing first (ranker arms, any policy).
CHANEY_ORDER = ("popularity", "learned", "random")


def arm_label(cfg) -> str:
    """``<ranker arm>.<policy>`` of a one-cell run: oracle, learned, once (``retrain: once``),
    ipw, explore (a learned ranker with ``exploration_share``), popularity, random, or the
    ranker's class name."""
    r = cfg.cells[0].ranker or cfg.ranker
    name = r.name or r.cls.__name__
    if issubclass(r.cls, LearnedRanker):
        name = ("once" if r.retrain == "once" else "ipw" if r.correction == "ipw"
                else "explore" if r.exploration_share > 0 else name)
    policy = cfg.cells[0].policy
    return f"{name}.{policy.get('name') or str(policy.get('_target_', 'custom')).rpartition('.')[2]}"


def representation_kind(cfg) -> str:
    """How the run's ranker represents members: ``taste`` (reads the ground truth: the oracle),
    ``affinity`` (a learned ranker: the observed genre affinity it scores with) or ``none``
    (popularity, random, or a ranker of your own: paired with a fixed random partner)."""
    r = cfg.cells[0].ranker or cfg.ranker
    if r.cls.reads_ground_truth:
        return "taste"
    return "affinity" if issubclass(r.cls, LearnedRanker) else "none"


@dataclass
class ArmRun:
    """What one run contributes: its consumed sets by day and its members' representation."""

    path: Path
    arm: str
    kind: str
    seed: int
    world_key: str
    first_play_day: np.ndarray       # (n_members, n_titles) int16: day index of the first play, n_days if none
    quality_plays: np.ndarray        # (n_days,) quality plays per day
    impressions: np.ndarray          # (n_days,)
    visits_digest: str               # hash of the visit log (visit id, member, time)
    representation: np.ndarray | None   # (n_days, n_members, d) as of the end of each day


def load_arm(run_dir: Path) -> ArmRun:
    cfg = run_config(run_dir)
    if len(cfg.cells) != 1:
        raise SystemExit(f"error: {run_dir} has {len(cfg.cells)} cells; the arms analysis reads one-cell "
                         "runs (experiment=feedback_loop_arms)")
    world = run_world(cfg)
    M, T = world.members.n_members, world.catalog.n_titles
    n_days = int(np.ceil(cfg.engine.days))
    log = read_log(run_dir, ["time", "member", "title", "play", "quality_play"])
    day = np.minimum((log["time"] // 1440.0).astype(np.int64), n_days - 1)
    played = log["play"].astype(bool)
    first = np.full((M, T), n_days, dtype=np.int16)
    np.minimum.at(first, (log["member"][played], log["title"][played]), day[played].astype(np.int16))
    visits = pq.read_table(Path(run_dir) / "visit_context", columns=["visit", "member", "time", "context"])
    v_member, v_time = visits.column("member").to_numpy(), visits.column("time").to_numpy()
    order = np.lexsort((visits.column("visit").to_numpy(), v_time))
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(a[order]).tobytes() for a in
                                     (visits.column("visit").to_numpy(), v_member, v_time))).hexdigest()
    kind = representation_kind(cfg)
    if kind == "taste":
        rep = np.broadcast_to(world.response.tastes, (n_days, *world.response.tastes.shape))
    elif kind == "affinity":
        rep = _affinity_by_day(world, visits, order, n_days)
    else:
        rep = None
    return ArmRun(Path(run_dir), arm_label(cfg), kind, cfg.seed,
                  json.dumps([to_dict(cfg.world), cfg.engine.days], sort_keys=True), first,
                  np.bincount(day, weights=log["quality_play"].astype(np.float64), minlength=n_days),
                  np.bincount(day, minlength=n_days).astype(np.float64), digest, rep)


def _affinity_by_day(world, visits, order: np.ndarray, n_days: int) -> np.ndarray:
    """(n_days, n_members, n_genres): each member's observed genre affinity as the learned ranker
    saw it at their last visit up to the end of each day (before any visit: the world's start)."""
    G = world.catalog.n_genres
    d = visits.schema.field("context").type.list_size
    ctx = visits.column("context").combine_chunks().flatten().to_numpy().reshape(-1, d)[order, :G]
    member = visits.column("member").to_numpy()[order]
    vday = (visits.column("time").to_numpy()[order] // 1440.0).astype(np.int64)
    aff = observed_affinity(world.members, world.catalog, np.arange(world.members.n_members)).astype(np.float32)
    out = np.empty((n_days, *aff.shape), np.float32)
    for d_ in range(n_days):
        rows = np.flatnonzero(vday == d_)
        aff[member[rows]] = ctx[rows]       # in time order: the last visit of the day wins
        out[d_] = aff
    return out


def check_same_visits(group: list[ArmRun]) -> None:
    """Refuse arms of one seed whose visit logs differ: then they are not the same members and
    visits, and pairing members across them means nothing."""
    digests = {r.visits_digest for r in group}
    if len(digests) > 1:
        raise SystemExit("error: runs of seed {} have different visit logs ({}); the arms must share "
                         "world, engine and seed".format(group[0].seed, ", ".join(str(r.path) for r in group)))


def seed_rows(group: list[ArmRun]) -> list[dict]:
    """Per (arm, day) rows of one seed's arms; the oracle arm is the ideal recommender."""
    check_same_visits(group)
    ideal = [r for r in group if r.kind == "taste"]
    if not ideal:
        raise SystemExit(f"error: seed {group[0].seed} has no oracle arm (ranker=oracle): Chaney's "
                         "homogenization is relative to the ideal recommender")
    ideal = ideal[0]
    M = ideal.first_play_day.shape[0]
    n_days = ideal.quality_plays.size
    seed = group[0].seed
    fixed = random_partner(M, generator(seed, "homogenization-partner"))
    sample = np.sort(generator(seed, "bias-homogenization").choice(M, size=min(PLAYED_NN_SAMPLE, M),
                                                                   replace=False))
    rows = []
    for r in group:
        for d in range(n_days):
            sets, ideal_sets = r.first_play_day <= d, ideal.first_play_day <= d
            partner = fixed if r.representation is None else nearest_partner(r.representation[d])
            h = homogenization_change(sets, ideal_sets, partner)
            players = sets.any(axis=1)
            rows.append({
                "seed": seed, "arm": r.arm, "day": d + 1, "pairing": r.kind,
                "chaney": h["change"], "jaccard": h["jaccard"], "ideal_jaccard": h["ideal_jaccard"],
                "pairs": h["pairs"],
                "random_pairs": homogenization_change(sets, ideal_sets, fixed)["change"],
                "played_nn": homogenization(sets[sample]) - homogenization(ideal_sets[sample]),
                "played_nn_raw": homogenization(sets[sample]),
                "set_size": float(sets[players].sum(axis=1).mean()) if players.any() else float("nan"),
                "players": float(players.mean()),
                "utility": r.quality_plays[:d + 1].sum() / max(ideal.quality_plays[:d + 1].sum(), 1.0) - 1.0,
                "take_fraction": r.quality_plays[d] / max(r.impressions[d], 1.0)})
    return rows


def analyze_sweep(runs: list[Path], out_dir: Path) -> list[Path]:
    """The arms analysis of the one-cell runs ``runs`` (any mix of seeds and worlds)."""
    loaded = [load_arm(p) for p in runs]
    groups: dict[tuple, list[ArmRun]] = {}
    for r in loaded:
        groups.setdefault((r.world_key, r.seed), []).append(r)
    daily = [row for key in sorted(groups, key=lambda k: k[1]) for row in seed_rows(groups[key])]
    out_dir = Path(out_dir)
    (out_dir / "charts").mkdir(exist_ok=True)
    write_csv(out_dir / "feedback_loop_arms_daily.csv", daily)
    arms, ordering = summarize(daily)
    write_csv(out_dir / "feedback_loop_arms_summary.csv", arms)
    write_csv(out_dir / "feedback_loop_arms_ordering.csv", ordering)
    return [out_dir / f"feedback_loop_arms_{name}.csv" for name in ("daily", "summary", "ordering")] + [
        _chart(daily, out_dir / "charts" / "feedback_loop_homogenization.png")]


SUMMARY_KEYS = ("chaney", "jaccard", "ideal_jaccard", "random_pairs", "played_nn", "set_size", "players", "utility",
                "take_fraction")


#: Measures the ordering is checked on: Chaney's, the same on one fixed set of random pairs for
#: every arm (pairing held fixed: only the recommender differs), and the played-set variant.
ORDERING_MEASURES = ("chaney", "random_pairs", "played_nn")


def summarize(daily: list[dict]) -> tuple[list[dict], list[dict]]:
    """Per arm on the last day: mean and standard error over seeds; and per consecutive pair of
    Chaney's ordering (popularity > learned > random, per policy) the paired difference of
    ``chaney`` over seeds and on how many seeds it holds."""
    last = max(r["day"] for r in daily)
    final = [r for r in daily if r["day"] == last]
    arms = sorted({r["arm"] for r in final})
    out = []
    for arm in arms:
        mine = [r for r in final if r["arm"] == arm]
        row = {"arm": arm, "pairing": mine[0]["pairing"], "seeds": len(mine), "day": last}
        for k in SUMMARY_KEYS:
            row[k], row[k + "_se"] = mean_se([r[k] for r in mine])
        out.append(row)
    ordering = []
    by = {(r["arm"], r["seed"]): r for r in final}
    for policy in sorted({a.partition(".")[2] for a in arms}):
        for hi, lo in zip(CHANEY_ORDER, CHANEY_ORDER[1:]):
            a, b = f"{hi}.{policy}", f"{lo}.{policy}"
            seeds = sorted(s for (arm, s) in by if arm == a and (b, s) in by)
            if not seeds:
                continue
            for measure in ORDERING_MEASURES:
                diff = [by[(a, s)][measure] - by[(b, s)][measure] for s in seeds]
                mean, se = mean_se(diff)
                ordering.append({"measure": measure, "claim": f"{a} > {b}", "day": last, "seeds": len(seeds),
                                 "difference": mean, "difference_se": se,
                                 "holds_on_seeds": int(sum(x > 0 for x in diff))})
    return out, ordering


PANELS = (("chaney", "Chaney et al.: pairs as the recommender sees members",
           "Δ Jaccard of pairs vs same pairs under oracle (0–1 scale)"),
          ("played_nn", "secondary: nearest member by played set", "Δ nearest-member Jaccard vs oracle (0–1 scale)"),
          ("set_size", "size confound of the secondary measure", "titles played per member who played (titles)"),
          ("utility", "utility relative to ideal", "quality plays / oracle arm's − 1 (ratio)"))


def _chart(daily: list[dict], path: Path) -> Path:
    arms = sorted({r["arm"] for r in daily})
    seeds = sorted({r["seed"] for r in daily})
    # One colour per ranker arm whatever else the sweep holds (the oracle reference in grey).
    known = {"oracle": "0.35", "learned": "C0", "once": "C9", "popularity": "C3", "random": "C4",
             "explore": "C2", "ipw": "C8"}
    spare = iter(plt.cm.Dark2.colors)
    colors = {a: known.get(a.partition(".")[0]) or next(spare) for a in arms}
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    axes = axes.ravel()
    for ax, (key, title, ylabel) in zip(axes, PANELS):
        for arm in arms:
            days = sorted({r["day"] for r in daily if r["arm"] == arm})
            stats = [mean_se([r[key] for r in daily if r["arm"] == arm and r["day"] == d]) for d in days]
            mean = np.array([s[0] for s in stats])
            ax.plot(days, mean, color=colors[arm], lw=1.8, label=arm)
            if len(seeds) > 1:
                band(ax, days, mean, np.nan_to_num(np.array([s[1] for s in stats])), colors[arm], alpha=0.15)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("simulated time (days)")
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid()
    axes[0].legend(fontsize=8, title="ranker arm . policy", title_fontsize=8)
    how = f"mean over {len(seeds)} seeds, 95 % band" if len(seeds) > 1 else "one seed"
    fig.suptitle(f"Homogenization with the same members under every recommender ({how})")
    fig.tight_layout()
    return save(fig, path, dpi=100)
