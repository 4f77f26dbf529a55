"""Throughput and memory benchmark: ``python -m experiments.bench`` (``--quick`` while developing).

Prints, on one core (BLAS/OpenMP threads pinned to 1 before NumPy loads):

0. the time this process takes to make the compiled kernels (:mod:`sim.kernels`) ready (load
   them from numba's on-disk cache), and the time to compile them from scratch in a fresh
   process with an empty cache; neither is counted in the figures below;
1. end-to-end impressions/s of the closed loop for a world of 100k members and 2,000 titles
   (about 8 artworks each), the ``session`` response model (the default of ``configs/``),
   Parquet logging on, the default engine cadences, for non-personalized Thompson sampling and
   for linear Thompson sampling (``lints``), against the targets of :data:`TARGETS`;
2. in the same run, the speed of a minimal NumPy pipeline doing the same per-impression work
   (gather features, score candidates, choose, draw a click, update counts) on batches of the
   same size, the same work fused in one compiled loop, and the ratios;
3. a scaling table: 10k, 100k and 1M members for one simulated day each, and 100k members for 1
   and 3 simulated days, with impressions/s, microseconds per impression (also day by day), the
   minimal pipeline on that world and batch size, and peak resident memory. Each size runs in a
   fresh subprocess, so its peak is its own. A verdict line says whether the cost per impression
   grows with members or days (it must not: no quadratic step in ranking, logging or metrics);
4. impressions/s of the default experiment (default world, ``baselines`` cells, a few simulated
   days) under the ``session`` and the ``independent`` response models and their ratio (the
   session model must keep at least 80 %);
5. the speed-up of ``--workers`` worker processes (``engine.backend=processes``) over one process
   on the same run (1M members, 1 simulated day by default), end to end (building the simulation
   plus running it, in both) and from the first serving step (after the workers have started and
   drawn their members); the serial fraction that speed-up implies (Amdahl's
   law) and what it predicts for 8, 32 and 128 shards; each process's peak resident memory;
6. with ``--large MEMBERS:DAYS``, one large run in a fresh process (``--large-workers N``: on N
   worker processes): its rate, and each process's peak resident memory and memory day by day.

``--json PATH`` also writes every figure to a file, so they can be quoted.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import platform  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from experiments.ctrl_c import NOTHING_WRITTEN, one_line_on_ctrl_c  # noqa: E402
from sim.config import EngineConfig, experiment_config_from_dict  # noqa: E402
from sim.engine import Simulation  # noqa: E402
from sim.logs import LogTarget  # noqa: E402
from sim.memory import peak_rss_mb, reset_peak_rss, rss_mb  # noqa: E402
from sim.outputs import atomic_write_text  # noqa: E402


#: The response model of the closed-loop figures: the default of ``configs/`` (``session``).
BENCH_RESPONSE = "session"


def bench_config(members: int, titles: int, days: float, policy: str, response: str = BENCH_RESPONSE,
                 **engine) -> dict:
    return {"seed": 0,
            "world": {"name": "bench", "n_members": members, "n_titles": titles,
                      "artworks_min": 4, "artworks_max": 12, "response": {"name": response}},
            "engine": {"days": days, "progress": False, **engine},
            "ranker": {"name": "learned"},
            "policy": {"name": policy}}


def run_closed_loop(members: int, titles: int, days: float, policy: str, progress=None,
                    response: str = BENCH_RESPONSE, **engine) -> dict:
    """Build and run the full simulator with logging; returns timings and counts.

    ``progress(sim_minutes, impressions, shard_rss_mb)`` is called after every serving step
    (``shard_rss_mb``: each shard's process's resident memory then, MB); ``engine``
    overrides engine keys (backend, shards, member_block). The compiled kernels are loaded
    (or compiled) first, outside the timings (:func:`kernel_first_call`)."""
    kernel_first_call()
    cfg = experiment_config_from_dict(bench_config(members, titles, days, policy, response, **engine))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        sim = Simulation(cfg, LogTarget(Path(tmp), chunk_rows=cfg.engine.log_chunk_rows))
        build = time.perf_counter() - t0
        build_mb = peak_rss_mb()    # the process's peak so far: the build's own only in a fresh process
        fixed = time_fixed_costs(sim)
        t1 = time.perf_counter()
        summary = sim.run(None if progress is None else lambda t, n: progress(t, n, sim.shard_rss_mb))
        elapsed = time.perf_counter() - t1
    windows = cfg.engine.days * 1440 / cfg.engine.window_minutes
    return {"sim": sim, "build_s": build, "run_s": elapsed, "started": t1,
            "shard_startup_s": summary["run"]["shard_startup_seconds"], "deploys": summary["run"]["deploys"],
            "impressions": sim.impressions, "peak_rss_mb_build": build_mb,
            "shard_peak_rss_mb": sim.shard_peak_rss_mb,
            "impressions_per_s": sim.impressions / elapsed, **fixed,
            "batch": sim.impressions / windows / math.ceil(members / cfg.engine.member_block)}


def time_fixed_costs(sim: Simulation) -> dict[str, float]:
    """Time, inside the run about to start, the two costs that a faster serving path leaves
    as they are: the policies' redeploys (``update``: for Thompson sampling, the Monte Carlo
    of its choice distribution over every title) and the Parquet writes of the impression and
    visit logs. Returns a dict whose ``deploy_s`` and ``log_write_s`` fill in as the run goes
    (in-process shards only: ``engine.backend=local``; other backends leave them at 0).

    The timers wrap the methods of these instances only; results are unchanged."""
    costs = {"deploy_s": 0.0, "log_write_s": 0.0}
    if sim.config.engine.backend != "local":    # policies are shipped to worker processes: no wrappers
        return costs

    def timed(method, key):
        def call(*args, **kwargs):
            t = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                costs[key] += time.perf_counter() - t
        return call

    for cell in sim.cells:
        cell.policy.update = timed(cell.policy.update, "deploy_s")
    for shard in sim.shards:
        for writer in (shard.impression_log, shard.visit_log):
            if writer is not None:
                writer._write_part = timed(writer._write_part, "log_write_s")
    return costs


def fixed_costs(run: dict, target: float | None, compiled: float) -> dict:
    """Per impression (µs) of one closed-loop run: its redeploys, its log writes, the rest
    (serving: pages, choices, sessions, regret, metrics, log columns), what a ``target`` rate
    allows in all and leaves to serve after the first two, and the minimal compiled loop's own
    cost (a floor for any serving path: it lays out no page and simulates no session)."""
    per = 1e6 / run["impressions"]
    serving_s = run["run_s"] - run["deploy_s"] - run["log_write_s"]
    out = {"deploy_us": run["deploy_s"] * per, "log_write_us": run["log_write_s"] * per,
           "serving_s": serving_s, "serving_us": serving_s * per,
           "minimal_compiled_us": 1e6 / compiled, "target_us": None, "serving_budget_us": None}
    if target is not None:
        out["target_us"] = 1e6 / target
        out["serving_budget_us"] = out["target_us"] - out["deploy_us"] - out["log_write_us"]
    return out


def minimal_pipeline(sim: Simulation, n_impressions: int, batch: int, seed: int = 1) -> float:
    """The same per-impression work with nothing else: gather, score, choose, click, count.

    Returns impressions per second."""
    w = sim.world
    cat, resp = w.catalog, w.response
    rng = np.random.default_rng(seed)
    A = cat.n_artworks
    choice_prob = rng.random(A)                     # stands in for the deployed choice distribution
    shows, clicks = np.zeros(A), np.zeros(A)
    n_batches = max(1, n_impressions // batch)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        member = rng.integers(0, w.members.n_members, batch)
        title = rng.integers(0, cat.n_titles, batch)
        cand = cat.pool[title]                                          # gather candidates
        mask = cand >= 0
        score = np.where(mask, choice_prob[np.maximum(cand, 0)], 0.0)   # score candidates
        cdf = np.cumsum(score, axis=1)                                  # choose (inverse CDF)
        pick = (cdf < rng.random(batch)[:, None] * cdf[:, -1:]).sum(axis=1)
        art = cand[np.arange(batch), pick]
        match = np.einsum("ng,ng->n", resp.artwork_theme[art], resp.tastes[member])
        p = 0.03 / (1.0 + np.exp(-(match + resp.appeal[art])))          # click probability
        click = rng.random(batch) < p                                   # draw a click
        shows += np.bincount(art, minlength=A)                          # update counts
        clicks += np.bincount(art, weights=click, minlength=A)
    return n_batches * batch / (time.perf_counter() - t0)


def minimal_compiled(sim: Simulation, n_impressions: int, batch: int, seed: int = 1) -> float:
    """:func:`minimal_pipeline`'s work fused in one compiled loop per batch (uniforms drawn in
    NumPy): what the per-impression work costs with no interpreter in between. Impressions/s."""
    w = sim.world
    cat, resp = w.catalog, w.response
    rng = np.random.default_rng(seed)
    A = cat.n_artworks
    choice_prob = rng.random(A)
    shows, clicks = np.zeros(A), np.zeros(A)
    pool = np.ascontiguousarray(cat.pool, dtype=np.int64)
    _minimal_kernel(pool, choice_prob, resp.artwork_theme, resp.tastes, resp.appeal,
                    np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros((1, 2)), shows, clicks)  # compile
    n_batches = max(1, n_impressions // batch)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        member = rng.integers(0, w.members.n_members, batch)
        title = rng.integers(0, cat.n_titles, batch)
        _minimal_kernel(pool, choice_prob, resp.artwork_theme, resp.tastes, resp.appeal, member, title,
                        rng.random((batch, 2)), shows, clicks)
    return n_batches * batch / (time.perf_counter() - t0)


@njit(cache=True)
def _minimal_kernel(pool, choice_prob, theme, tastes, appeal, member, title, u, shows, clicks):
    for i in range(member.shape[0]):
        total = 0.0
        for k in range(pool.shape[1]):
            if pool[title[i], k] >= 0:
                total += choice_prob[pool[title[i], k]]
        target, cdf, art = u[i, 0] * total, 0.0, -1
        for k in range(pool.shape[1]):
            a = pool[title[i], k]
            if a >= 0:
                art = a
                cdf += choice_prob[a]
                if cdf > target:
                    break
        match = 0.0
        for g in range(theme.shape[1]):
            match += theme[art, g] * tastes[member[i], g]
        p = 0.03 / (1.0 + np.exp(-(match + appeal[art])))
        shows[art] += 1.0
        if u[i, 1] < p:
            clicks[art] += 1.0


_KERNEL_FIRST_CALL: list[float] = []


def kernel_first_call() -> float:
    """Seconds this process spent making the simulator's compiled kernels ready (import numba,
    then load them from the on-disk cache, or compile them). Paid once per process."""
    if not _KERNEL_FIRST_CALL:
        from sim.kernels.warm import warm
        _KERNEL_FIRST_CALL.append(warm())
    return _KERNEL_FIRST_CALL[0]


def kernel_compile_from_scratch() -> float:
    """Seconds a fresh process takes to compile every kernel with an empty numba cache."""
    with tempfile.TemporaryDirectory() as cache:
        out = subprocess.run([sys.executable, "-c", "from sim.kernels.warm import warm; print(warm())"],
                             capture_output=True, text=True, env={**os.environ, "NUMBA_CACHE_DIR": cache})
    if out.returncode != 0:
        raise RuntimeError(f"compiling the kernels failed:\n{out.stderr[-3000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def parse_scales(spec: str, days: float) -> list[tuple[int, float]]:
    """``"10000,1000000:0.25"`` -> ``[(10000, days), (1000000, 0.25)]``: members, optionally
    followed by ``:simulated days`` for that scale alone."""
    scales = []
    for item in spec.split(","):
        members, _, own_days = item.strip().partition(":")
        m, d = int(members), float(own_days) if own_days else days
        if m < 1 or d <= 0:
            raise ValueError(f"scales entry must be MEMBERS[:DAYS] with both > 0, got {item!r}")
        scales.append((m, d))
    return scales


def per_day_costs(marks: list[tuple]) -> list[float]:
    """Microseconds per impression within each complete simulated day of one run.

    ``marks`` : (simulated minute, impressions so far, wall seconds, ...), the run's start first, then
    one per serving step (at most an hour). A partial last day is left out: night hours bring smaller batches,
    which cost more per impression, so part of a day is not comparable with a whole one."""
    costs, start, day_end = [], marks[0], 1440.0
    for mark in marks[1:]:
        if mark[0] >= day_end:
            costs.append(1e6 * (mark[2] - start[2]) / max(mark[1] - start[1], 1))
            start, day_end = mark, day_end + 1440.0
    return costs


def per_day_rss(marks: list[tuple]) -> list[float]:
    """The largest resident memory (MB) seen at the serving steps of each simulated day
    (``marks``: (simulated minute, impressions, wall seconds, RSS MB) per step); a partial last
    day counts too (memory, unlike cost, does not depend on the time of day)."""
    days: dict[int, float] = {}
    for minute, _, _, mb in marks:
        day = max(0, math.ceil(minute / 1440.0) - 1)     # the step ending at minute 1440 is day 0's
        days[day] = max(days.get(day, 0.0), mb)
    return [days[d] for d in sorted(days)]


def worst_growth(costs: list[float]) -> float:
    """Largest ratio cost[j] / cost[i] over i < j, for costs ordered by growing size.

    Unlike last/first it catches a cost that falls and then climbs again; below 1 means the
    cost only falls."""
    return max((costs[j] / costs[i] for i in range(len(costs)) for j in range(i + 1, len(costs))),
               default=1.0)


def measure_scale(members: int, titles: int, days: float, policy: str,
                  minimal_tries: int = 3, minimal_impressions: int = 2_000_000, workers: int = 1) -> dict:
    """One row of the scaling table. Meant for a fresh process (``scale_subprocess``): the peak
    memory it reports is the whole process's. ``workers`` > 1: the shards run in that many
    worker processes (no minimal pipeline: this process holds no members), and each worker's
    memory is reported too."""
    imports_mb = peak_rss_mb()
    marks: list[tuple[float, int, float, float]] = []
    shard_marks: list[tuple[float, list[float]]] = []

    def progress(t, n, shard_rss):
        marks.append((t, n, time.perf_counter(), rss_mb()))
        shard_marks.append((t, list(shard_rss)))

    # Blocks of the default size, smaller only where there would be fewer blocks than workers.
    engine = {} if workers == 1 else {"backend": "processes", "shards": workers,
                                      "member_block": min(EngineConfig.member_block, math.ceil(members / workers))}
    r = run_closed_loop(members, titles, days, policy, progress=progress, **engine)
    run_mb = peak_rss_mb()           # before the minimal pipeline allocates anything
    sim, batch = r["sim"], int(r["batch"])
    row = {"policy": policy, "members": members, "titles": titles, "workers": workers,
           "artworks": int(sim.world.catalog.n_artworks), "days": days,
           "impressions": int(r["impressions"]), "deploys": int(sim.deploys), "batch": batch,
           "build_s": r["build_s"], "run_s": r["run_s"], "impressions_per_s": r["impressions_per_s"],
           "us_per_impression": 1e6 * r["run_s"] / max(r["impressions"], 1),
           "us_per_impression_by_day": per_day_costs([(0.0, 0, r["started"], 0.0)] + marks),
           "rss_mb_by_day": per_day_rss(marks),
           "kernel_first_call_s": kernel_first_call(),
           "peak_rss_mb_imports": imports_mb, "peak_rss_mb_build": r["peak_rss_mb_build"],
           "peak_rss_mb": run_mb}
    if workers > 1:
        row["worker_peak_rss_mb"] = r["shard_peak_rss_mb"]
        row["worker_rss_mb_by_day"] = [per_day_rss([(t, 0, 0.0, mbs[i]) for t, mbs in shard_marks])
                                       for i in range(len(r["shard_peak_rss_mb"]))]
        return row
    # The minimal pipeline's rate does not depend on how many impressions it makes: capping them
    # keeps the 1M-member row short.
    n = min(r["impressions"], minimal_impressions)
    minimal = max(minimal_pipeline(sim, n, batch, seed=s) for s in range(minimal_tries))
    return {**row, "minimal_impressions_per_s": minimal, "ratio": r["impressions_per_s"] / minimal}


def scale_subprocess(members: int, titles: int, days: float, policy: str, workers: int = 1) -> dict:
    """``measure_scale`` in a new Python process, so the peak memory is that scale's alone."""
    code = ("import json\nfrom experiments.bench import measure_scale\n"
            f"print(json.dumps(measure_scale({members}, {titles}, {days!r}, {policy!r}, workers={workers})))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ})
    if out.returncode != 0:
        raise RuntimeError(f"scale {members:,} members, {days:g} days, {policy} failed:\n"
                           f"{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def simulated(days: float) -> str:
    return f"{days:g} d" if days >= 1 else f"{days * 24:g} h"


def scaling_table(rows: list[dict]) -> str:
    """Markdown table of the scaling rows."""
    head = ("| policy | members | simulated | impressions | deploys | batch | run s | impressions/s "
            "| µs/impression | µs/impression by day | minimal NumPy impressions/s | ratio "
            "| peak RSS MB after build | peak RSS MB |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        by_day = ", ".join(f"{c:.2f}" for c in r["us_per_impression_by_day"]) if r["days"] >= 2 else ""
        lines.append(
            f"| {r['policy']} | {r['members']:,} | {simulated(r['days'])} | {r['impressions']:,} "
            f"| {r['deploys']} | {r['batch']:,} | {r['run_s']:.1f} | {r['impressions_per_s']:,.0f} "
            f"| {r['us_per_impression']:.2f} | {by_day} | {r['minimal_impressions_per_s']:,.0f} "
            f"| {r['ratio']:.3f} | {r['peak_rss_mb_build']:,.0f} | {r['peak_rss_mb']:,.0f} |")
    return "\n".join(lines)


def cost_verdict(rows: list[dict], member_scales: list[tuple[int, float]],
                 day_scales: list[tuple[int, float]], tolerance: float) -> dict:
    """Does the cost per impression of one policy grow with members or days?"""
    cost = {(r["members"], r["days"]): r["us_per_impression"] for r in rows}
    members_growth = worst_growth([cost[s] for s in sorted(member_scales)])
    days_growth = worst_growth([cost[s] for s in sorted(day_scales, key=lambda s: s[1])])
    # The longest run's own days, one by one: the sharpest test of work that grows with age. In a
    # small world a day holding one of the Parquet chunk writes (every 500k rows) costs visibly more.
    longest = max(rows, key=lambda r: r["days"])
    by_day_growth = worst_growth(longest["us_per_impression_by_day"])   # 1.0 with under two days
    lo, hi = min(rows, key=lambda r: r["us_per_impression"]), max(rows, key=lambda r: r["us_per_impression"])
    return {"policy": rows[0]["policy"], "members_growth": members_growth, "days_growth": days_growth,
            "by_day_growth": by_day_growth, "by_day_run": [longest["members"], longest["days"]],
            "max_over_min": hi["us_per_impression"] / lo["us_per_impression"],
            "cheapest": [lo["members"], lo["days"]], "dearest": [hi["members"], hi["days"]],
            "tolerance": tolerance,
            "flat": max(members_growth, days_growth, by_day_growth) <= tolerance}


def verdict_line(v: dict, rows: list[dict]) -> str:
    cost = {(r["members"], r["days"]): r["us_per_impression"] for r in rows}
    at = lambda s: f"{s[0]:,} members × {simulated(s[1])}"  # noqa: E731
    by_day = (f", ×{v['by_day_growth']:.2f} day by day within {at(v['by_day_run'])}"
              if v["by_day_run"][1] >= 2 else "")
    return (f"verdict {v['policy']}: cost per impression "
            f"{'does not grow' if v['flat'] else 'GROWS'} with size "
            f"(worst growth ×{v['members_growth']:.2f} along members, ×{v['days_growth']:.2f} along days"
            f"{by_day}; tolerance ×{v['tolerance']:g}); max/min over all sizes {v['max_over_min']:.2f} "
            f"({cost[tuple(v['dearest'])]:.2f} µs at {at(v['dearest'])}, "
            f"{cost[tuple(v['cheapest'])]:.2f} µs at {at(v['cheapest'])})")


# Small sizes for development: the whole bench in well under a minute.
QUICK = {"members": 20_000, "repeat": 1, "response_days": 0.5, "scales": "5000,20000", "scale_days": 0.25,
         "days_axis": "0.25,0.75", "days_axis_members": 20_000, "parallel_days": 0.25,
         "parallel_members": 20_000}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from experiments.cli_help import prog
    ap = argparse.ArgumentParser(prog=prog("experiments.bench"), description="Throughput and memory benchmark")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes for development (explicit flags still win)")
    ap.add_argument("--members", type=int, default=100_000)
    ap.add_argument("--titles", type=int, default=2_000)
    ap.add_argument("--days", type=float, default=1.0)
    ap.add_argument("--policies", default="thompson,lints", help="comma-separated policy names")
    ap.add_argument("--response", default=BENCH_RESPONSE, help="response model of the closed-loop figures")
    ap.add_argument("--compile-time", action=argparse.BooleanOptionalAction, default=True,
                    help="also time compiling the kernels from scratch in a fresh process")
    ap.add_argument("--repeat", type=int, default=3, help="closed-loop runs (median reported)")
    ap.add_argument("--scales", default="10000,100000,1000000",
                    help="members axis of the scaling table: MEMBERS[:DAYS],...")
    ap.add_argument("--scale-days", type=float, default=1.0,
                    help="simulated days of each --scales entry without its own")
    # Whole days: traffic follows the time of day, and so does the batch size and the cost.
    ap.add_argument("--days-axis", default="1,3", help="simulated days of the days axis")
    ap.add_argument("--days-axis-members", type=int, default=100_000)
    ap.add_argument("--scale-policies", default="lints,thompson")
    ap.add_argument("--tolerance", type=float, default=1.25,
                    help="largest growth of the cost per impression still called flat")
    ap.add_argument("--skip-headline", action="store_true")
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--workers", type=int, default=2,
                    help="worker processes for the speed-up figure (1: skip it)")
    ap.add_argument("--parallel-members", type=int, default=1_000_000,
                    help="members of the worker-process speed-up run")
    ap.add_argument("--parallel-days", type=float, default=1.0)
    ap.add_argument("--parallel-policy", default="lints")
    ap.add_argument("--response-models", default="session,independent",
                    help="response models to compare (first under test, last the reference)")
    ap.add_argument("--response-days", type=float, default=3.0,
                    help="simulated days of the default experiment per response model")
    ap.add_argument("--skip-response", action="store_true")
    ap.add_argument("--large", metavar="MEMBERS:DAYS",
                    help="also one large run in a fresh process (e.g. 10000000:2): its rate, peak "
                         "memory after the world is built and at the end, and memory day by day")
    ap.add_argument("--large-policy", default="thompson")
    ap.add_argument("--large-workers", type=int, default=1,
                    help="worker processes of the large run (1: one process; more: each worker's memory too)")
    ap.add_argument("--json", help="also write every figure to this JSON file")
    quick, _ = ap.parse_known_args(argv)
    if quick.quick:
        ap.set_defaults(**QUICK)
    return ap.parse_args(argv)


#: Targets of the closed loop at the headline size (issue 17), impressions/s.
TARGETS = {"thompson": 1_000_000, "lints": 500_000}


def headline(args: argparse.Namespace) -> list[dict]:
    """The closed loop at one size, in this process, repeated; and the minimal pipelines."""
    first_call = kernel_first_call()
    print(f"compiled kernels: ready in {first_call:.2f} s in this process (import numba, load the "
          "cached machine code), not counted below")
    from_scratch = kernel_compile_from_scratch() if args.compile_time else None
    if from_scratch is not None:
        print(f"  compiled from scratch (fresh process, empty cache): {from_scratch:.2f} s", flush=True)
    minimal = compiled = None
    results = []
    for policy in args.policies.split(","):
        print(f"closed loop: {args.members:,} members, {args.titles:,} titles, policy={policy}, "
              f"response={args.response}, {args.days:g} simulated day(s), Parquet logging on, 1 thread")
        # Repeat and report the median and best: other processes on a shared machine only ever
        # slow a run down, so the spread says how noisy the machine was.
        runs = [run_closed_loop(args.members, args.titles, args.days, policy, response=args.response)
                for _ in range(args.repeat)]
        r = sorted(runs, key=lambda x: x["impressions_per_s"])[len(runs) // 2]
        rates = [x["impressions_per_s"] for x in runs]
        A = r["sim"].world.catalog.n_artworks
        print(f"  world build            {r['build_s']:8.2f} s   ({A:,} artworks, "
              f"{A / args.titles:.1f} per title)")
        print(f"  simulation (median)    {r['run_s']:8.2f} s   {r['impressions']:,} impressions")
        target = TARGETS.get(policy)
        verdict = "" if target is None else (f"  target {target:,}: "
                                             f"{'met' if np.median(rates) >= target else 'NOT MET'}")
        print(f"  rate                   {np.median(rates):>12,.0f} impressions/s median of {len(rates)} "
              f"(best {max(rates):,.0f}, worst {min(rates):,.0f}){verdict}")
        if minimal is None:
            minimal = max(minimal_pipeline(r["sim"], r["impressions"], int(r["batch"]), seed=s)
                          for s in range(args.repeat))
            compiled = max(minimal_compiled(r["sim"], r["impressions"], int(r["batch"]), seed=s)
                           for s in range(args.repeat))
            print(f"  minimal NumPy pipeline {minimal:>12,.0f} impressions/s best of {args.repeat} "
                  f"(batches of {int(r['batch']):,})")
            print(f"  minimal compiled loop  {compiled:>12,.0f} impressions/s best of {args.repeat} "
                  "(the same work fused in one numba loop)")
        print(f"  ratio simulator/minimal {np.median(rates) / minimal:11.2f}   "
              f"simulator/compiled loop {np.median(rates) / compiled:.2f}")
        fixed = fixed_costs(r, target, compiled)
        print(f"  of which redeploys     {r['deploy_s']:8.2f} s   {fixed['deploy_us']:.2f} µs/impression "
              f"({r['deploys']} deploys)")
        print(f"  and Parquet log writes {r['log_write_s']:8.2f} s   {fixed['log_write_us']:.2f} µs/impression")
        print(f"  the rest (serving)     {fixed['serving_s']:8.2f} s   "
              f"{fixed['serving_us']:.2f} µs/impression")
        if target is not None:
            print(f"  the target allows {fixed['target_us']:.2f} µs/impression; redeploys and log writes leave "
                  f"{fixed['serving_budget_us']:.2f} µs to serve it, and the minimal compiled loop alone "
                  f"takes {fixed['minimal_compiled_us']:.2f} µs")
        results.append({"policy": policy, "response": args.response, "members": args.members,
                        "titles": args.titles, "days": args.days, "impressions": int(r["impressions"]),
                        "impressions_per_s_median": float(np.median(rates)),
                        "impressions_per_s_best": max(rates), "impressions_per_s_worst": min(rates),
                        "target_impressions_per_s": target,
                        "minimal_impressions_per_s": minimal, "ratio": float(np.median(rates)) / minimal,
                        "minimal_compiled_impressions_per_s": compiled,
                        "ratio_compiled": float(np.median(rates)) / compiled,
                        "kernel_first_call_s": first_call, "kernel_compile_from_scratch_s": from_scratch,
                        "run_s": float(r["run_s"]), "artworks_per_title": A / args.titles,
                        "deploys": r["deploys"], "deploy_s": r["deploy_s"], "log_write_s": r["log_write_s"],
                        **fixed,
                        "peak_rss_mb": peak_rss_mb()})      # of this process so far: every policy run before
        del runs, r     # free the worlds before the next policy builds its own
    print("  peer libraries: none measured (MABWiser is not a dependency; the issue's figures for it "
          "were taken apart from this bench)")
    print(f"  peak RSS (this process) {peak_rss_mb():10.0f} MB")
    return results


def scaling(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """Every (members, days) of both axes, each in a fresh process, one at a time."""
    member_scales = parse_scales(args.scales, args.scale_days)
    day_scales = parse_scales(",".join(f"{args.days_axis_members}:{d}" for d in args.days_axis.split(",")),
                              args.scale_days)
    sizes = sorted(set(member_scales) | set(day_scales))
    rows, verdicts = [], []
    print(f"\nscaling: {args.titles:,} titles, Parquet logging on, 1 thread, each size in a fresh process")
    for policy in args.scale_policies.split(","):
        mine = []
        for members, days in sizes:
            r = scale_subprocess(members, args.titles, days, policy)
            print(f"  {policy:9s} {members:>10,} members × {simulated(days):5s} "
                  f"{r['impressions_per_s']:>10,.0f} impressions/s  {r['us_per_impression']:6.2f} µs  "
                  f"peak {r['peak_rss_mb']:,.0f} MB  (build {r['build_s']:.1f} s, run {r['run_s']:.1f} s)",
                  flush=True)
            mine.append(r)
        rows += mine
        verdicts.append(cost_verdict(mine, member_scales, day_scales, args.tolerance))
    print()
    print(scaling_table(rows))
    print(f"\n(peak RSS includes about {min(r['peak_rss_mb_imports'] for r in rows):,.0f} MB of "
          "interpreter and imports; the minimal pipeline runs on the same world and batch size, "
          "capped at 2M impressions)")
    for v in verdicts:
        print(verdict_line(v, [r for r in rows if r["policy"] == v["policy"]]))
    return rows, verdicts


def large(args: argparse.Namespace) -> dict:
    """One large run (``--large MEMBERS:DAYS``) in a fresh process, or with ``--large-workers``
    worker processes: the memory each process needs, and whether it stays flat day to day."""
    [(members, days)] = parse_scales(args.large, 1.0)
    workers = args.large_workers
    where = "1 process" if workers == 1 else f"a driver and {workers} worker processes"
    print(f"\nlarge run: {members:,} members × {simulated(days)}, {args.titles:,} titles, "
          f"policy={args.large_policy}, Parquet logging on, {where}, 1 thread each", flush=True)
    r = scale_subprocess(members, args.titles, days, args.large_policy, workers)
    print(f"  {r['impressions']:,} impressions in {r['run_s']:.0f} s ({r['impressions_per_s']:,.0f}/s, "
          f"{r['us_per_impression']:.2f} µs each; world built in {r['build_s']:.0f} s)")
    who = "" if workers == 1 else "the driver: "
    print(f"  {who}peak RSS {r['peak_rss_mb_build']:,.0f} MB after the world is built, {r['peak_rss_mb']:,.0f} MB "
          f"over the whole run; RSS by simulated day: " + ", ".join(f"{mb:,.0f}" for mb in r["rss_mb_by_day"])
          + " MB; µs/impression by day: " + ", ".join(f"{c:.2f}" for c in r["us_per_impression_by_day"]))
    for i, (peak, by_day) in enumerate(zip(r.get("worker_peak_rss_mb", []), r.get("worker_rss_mb_by_day", []))):
        print(f"  worker {i}: peak RSS {peak:,.0f} MB; RSS by simulated day: "
              + ", ".join(f"{mb:,.0f}" for mb in by_day) + " MB")
    return r


#: Shard counts for which the measured serial fraction predicts a speed-up.
PREDICTED_SHARDS = (8, 32, 128)


def serial_fraction(speedup: float, workers: int) -> float:
    """Amdahl's serial fraction ``s`` implied by a speed-up on ``workers`` processes:
    ``speedup = 1 / (s + (1 - s) / workers)``, solved for ``s``."""
    return (workers / speedup - 1.0) / (workers - 1.0)


def amdahl_speedup(serial: float, shards: int) -> float:
    """Speed-up on ``shards`` processes when the fraction ``serial`` of the run does not split."""
    return 1.0 / (serial + (1.0 - serial) / shards)


def parallel(args: argparse.Namespace) -> list[dict]:
    """Speed-up of worker processes over one process on the same run (``engine.backend=processes
    engine.shards=N``; results are identical, only the wall time differs). Member blocks of
    ``members / (4 workers)`` give every worker several equal blocks.

    End to end is building the simulation plus running it, in both: one process draws every
    member while it builds, the driver of worker processes draws none (its workers draw theirs
    when the run starts, so their start-up is inside the run's time)."""
    rows = []
    members = args.parallel_members
    block = max(1, math.ceil(members / (4 * args.workers)))
    print(f"\nworker processes: {members:,} members, {args.titles:,} titles, policy={args.parallel_policy}, "
          f"{args.parallel_days:g} simulated day(s), member_block={block:,}, Parquet logging on, "
          f"1 thread per process, {os.cpu_count()} CPUs")
    for backend, shards in (("local", 1), ("processes", args.workers)):
        reset_peak_rss()        # the local run's peak, not the sections before it in this process
        runs = []
        for _ in range(args.repeat):
            run = run_closed_loop(members, args.titles, args.parallel_days, args.parallel_policy,
                                  backend=backend, shards=shards, member_block=block)
            # Its world (a million members) must not outlive it: the next repeat's peak RSS would
            # count both.
            del run["sim"]
            gc.collect()
            runs.append(run)
        r = sorted(runs, key=lambda x: x["build_s"] + x["run_s"])[len(runs) // 2]
        # local: this process (its shards all report it); processes: each worker's own
        peaks = r["shard_peak_rss_mb"][:1] if backend == "local" else r["shard_peak_rss_mb"]
        total = r["build_s"] + r["run_s"]
        rows.append({"backend": backend, "shards": shards, "members": members, "build_s": r["build_s"],
                     "run_s": r["run_s"], "total_s": total,
                     "shard_startup_s": r["shard_startup_s"], "impressions": int(r["impressions"]),
                     "impressions_per_s": r["impressions_per_s"],
                     "peak_rss_mb": peaks[0] if backend == "local" else peaks})
        print(f"  {backend:9s} shards={shards}  {total:7.2f} s end to end: build {r['build_s']:.2f} s + run "
              f"{r['run_s']:.2f} s (median of {len(runs)}; starting the shards {r['shard_startup_s']:.1f} s of it), "
              f"{r['impressions_per_s']:,.0f} impressions/s in the run")
        print(f"  {'':9s} peak RSS per {'process' if backend == 'local' else 'worker'}: "
              + " / ".join(f"{mb:,.0f} MB" for mb in peaks))
        del runs, r
    speedup = rows[0]["total_s"] / rows[1]["total_s"]
    steady = (rows[0]["run_s"] - rows[0]["shard_startup_s"]) / (rows[1]["run_s"] - rows[1]["shard_startup_s"])
    serial = serial_fraction(speedup, args.workers)
    predicted = {n: amdahl_speedup(serial, n) for n in PREDICTED_SHARDS}
    print(f"  speed-up with {args.workers} workers: ×{speedup:.2f} end to end (build + run), "
          f"×{steady:.2f} from the first serving step (the workers' start-up left out)")
    if speedup < 1.0:
        # Slower with workers than without: no part of the run sped up, Amdahl's law has nothing to say.
        print("  serial fraction (Amdahl): none, the workers were slower than one process; no forecast")
    else:
        bound = f"×{1 / serial:.1f}" if serial > 0 else "none (no serial part measured)"
        print(f"  serial fraction (Amdahl, from the end-to-end speed-up): {serial:.2f}; predicted speed-up "
              + ", ".join(f"×{x:.1f} at {n} shards" for n, x in predicted.items()) + f"; upper bound {bound}")
    for r in rows:
        r.update(speedup=speedup, speedup_after_startup=steady, serial_fraction=serial,
                 predicted_speedup={str(n): x for n, x in predicted.items()})
    return rows


def default_experiment(response: str, days: float) -> dict:
    """The default experiment (``python -m experiments.run``: default world, the ``baselines``
    cells) with response model ``response`` for ``days`` simulated days, composed by Hydra."""
    import hydra

    from experiments import config_store  # noqa: F401 -- registers the schema
    from experiments.run import CONFIG_DIR, config_to_dict

    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = hydra.compose("config", overrides=[f"world.response.name={response}", f"engine.days={days}",
                                                 "engine.progress=false"])
    return config_to_dict(cfg)


def run_config(config: dict) -> dict:
    """Run a config with Parquet logging on; impressions, seconds and impressions/s."""
    cfg = experiment_config_from_dict(config)
    with tempfile.TemporaryDirectory() as tmp:
        sim = Simulation(cfg, LogTarget(Path(tmp), chunk_rows=cfg.engine.log_chunk_rows))
        t0 = time.perf_counter()
        sim.run()
        elapsed = time.perf_counter() - t0
    return {"impressions": sim.impressions, "visits": sim.visits, "run_s": elapsed,
            "impressions_per_s": sim.impressions / elapsed}


def response_models(args: argparse.Namespace) -> list[dict]:
    """End-to-end impressions/s of the default experiment under each response model
    (``--response-models``: the first is the one under test, the last the reference); the
    ``session`` model must keep at least :data:`SESSION_SPEED_FLOOR` of ``independent``'s."""
    names = args.response_models.split(",")
    print(f"\nresponse models: the default experiment (default world, baselines cells), "
          f"{args.response_days:g} simulated day(s), Parquet logging on, 1 thread")
    rows = []
    for name in names:
        config = default_experiment(name, args.response_days)
        runs = [run_config(config) for _ in range(args.repeat)]
        rates = [x["impressions_per_s"] for x in runs]
        r = sorted(runs, key=lambda x: x["impressions_per_s"])[len(runs) // 2]
        rows.append({"response": name, "impressions": int(r["impressions"]), "visits": int(r["visits"]),
                     "impressions_per_s_median": float(np.median(rates)),
                     "impressions_per_s_best": max(rates), "impressions_per_s_worst": min(rates)})
        print(f"  {name:12s} {np.median(rates):>12,.0f} impressions/s median of {len(rates)} "
              f"(best {max(rates):,.0f}, worst {min(rates):,.0f}; {r['impressions']:,} impressions, "
              f"{r['visits']:,} visits)", flush=True)
    for r in rows:      # a session page renders more tiles: visits/s is the fairer per-page figure
        r["visits_per_s_median"] = r["impressions_per_s_median"] * r["visits"] / max(r["impressions"], 1)
    for r in rows:
        r["ratio_to_reference"] = r["impressions_per_s_median"] / rows[-1]["impressions_per_s_median"]
        r["visits_ratio_to_reference"] = r["visits_per_s_median"] / rows[-1]["visits_per_s_median"]
    ratio, per_visit = rows[0]["ratio_to_reference"], rows[0]["visits_ratio_to_reference"]
    verdict = "ok" if ratio >= SESSION_SPEED_FLOOR else "TOO SLOW"
    print(f"  {names[0]} / {names[-1]}: {ratio:.2f} of the impressions/s "
          f"(floor {SESSION_SPEED_FLOOR:.0%}): {verdict}; {per_visit:.2f} of the visits/s")
    return rows


#: The session response model must keep this share of the independent model's impressions/s.
SESSION_SPEED_FLOOR = 0.8


@one_line_on_ctrl_c(NOTHING_WRITTEN)
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = {"machine": {"python": platform.python_version(), "numpy": np.__version__,
                          "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()},
              "args": vars(args)}
    if not args.skip_headline:
        report["headline"] = headline(args)
    if not args.skip_scaling:
        report["scaling"], report["verdicts"] = scaling(args)
    if not args.skip_response:
        report["response_models"] = response_models(args)
    if args.large:
        report["large"] = large(args)
    if args.workers > 1:
        report["parallel"] = parallel(args)
    if args.json:       # whole or not at all: `make figures` reads it
        atomic_write_text(args.json, json.dumps(report, indent=2))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
