"""Member shards and backends: the same config and seed give the same results however many
shards serve the members and wherever they run (in this process, worker processes, Ray)."""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest

import sim.runner
from sim.backends import process_context
from sim.config import ConfigError, experiment_config_from_dict
from sim.engine import Simulation, build_shard
from sim.runner import run_experiment
from sim.shard import block_ranges, dump_models, load_models
from sim.world import build_world
from tests.conftest import REPO, assert_same_logs, shard_prefixes

# Worker processes must not be forked from a driver that runs threads (Python 3.12+ warns, and
# the child can deadlock): make that warning a failure here.
pytestmark = pytest.mark.filterwarnings(
    r"error:This process \(pid=\d+\) is multi-threaded, use of fork\(\) may lead to deadlocks:DeprecationWarning")


def scale_config(**engine) -> dict:
    """A small world in 5 member blocks, with every model-update path exercised: per-image
    Thompson and LinTS cells on a learned ranker retrained twice a day, a cell with its own
    exploring, position-corrected ranker, and a sticky cell (per-member shown images) with its own
    popularity ranker."""
    return {"seed": 11,
            "world": {"name": "tiny", "n_members": 1200, "n_titles": 90},
            "engine": {"days": 1.0, "member_block": 256, "retrain_hours": 4, "ranker_retrain_hours": 12,
                       "progress": False, **engine},
            "ranker": {"name": "learned"},
            "experiment": {"name": "scale", "control": "thompson", "cells": [
                {"name": "thompson", "share": 0.3, "policy": {"name": "thompson"}},
                {"name": "lints", "share": 0.25, "policy": {"name": "lints"}},
                {"name": "ipw", "share": 0.25, "policy": {"name": "lints"},
                 "ranker": {"name": "learned", "exploration_share": 0.1, "correction": "ipw"}},
                {"name": "sticky", "share": 0.2, "policy": {"name": "sticky", "min_hours": 6,
                                                             "base": {"name": "thompson"}},
                 "ranker": {"name": "popularity"}}]}}


def run_dir(tmp_path, name: str, **engine):
    out = tmp_path / name
    run_experiment(scale_config(**engine), out, progress=False)
    return out


def assert_same_results(a, b) -> None:
    """Byte-identical metrics.json and timeseries.csv, identical impression and visit logs."""
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
    assert (a / "timeseries.csv").read_bytes() == (b / "timeseries.csv").read_bytes()
    assert_same_logs(a, b)


def run_with_models(tmp_path, name: str, **engine) -> tuple:
    """``(run directory, trained model statistics)`` of the scale config run with ``engine``
    (the run's own Simulation is kept to read its models)."""
    made = []

    class Kept(Simulation):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sim.runner, "Simulation", Kept)
        out = run_dir(tmp_path, name, **engine)
    return out, model_arrays(made[0])


def assert_same_models(one: dict, other: dict, what: str) -> None:
    """Bit-identical trained statistics: metrics can be equal while models differ in the last
    bits (float addition is not associative, so a reduction that depended on the sharding shows)."""
    assert one.keys() == other.keys()
    for key in one:
        np.testing.assert_array_equal(one[key], other[key], err_msg=f"{what} {key}")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The scale config run in one process, once for the module: ``(run directory, trained model
    statistics)``."""
    return run_with_models(tmp_path_factory.mktemp("single"), "shards1")


@pytest.fixture(scope="module")
def single_shard(one_process):
    return one_process[0]


def test_block_ranges_cover_every_block_once():
    for n, B, shards in [(2200, 256, 1), (2200, 256, 4), (2200, 256, 20), (1, 65536, 3)]:
        ranges = block_ranges(n, B, shards)
        assert len(ranges) == min(shards, math.ceil(n / B)) and all(len(r) for r in ranges)
        flat = [b for r in ranges for b in r]
        assert flat == list(range(math.ceil(n / B)))


@pytest.mark.slow
def test_four_local_shards_give_identical_results(one_process, tmp_path):
    # Half-hour synchronisation steps: the step length must not regroup the sums either.
    single_shard, one = one_process
    four, models = run_with_models(tmp_path, "shards4", shards=4, sync_hours=0.5)
    assert len(shard_prefixes(four)) > 1
    assert_same_results(single_shard, four)
    assert_same_models(one, models, "4 local shards")
    metrics = json.loads((four / "metrics.json").read_text())
    # The run did learn and retrain (otherwise there would be nothing order-sensitive to compare).
    assert len(metrics["ranker_drift"]) >= 4 and metrics["impressions"] > 10_000


@pytest.mark.slow
def test_worker_processes_give_identical_results(one_process, tmp_path):
    # Three workers for five blocks (uneven shards), five-hour synchronisation steps.
    single_shard, one = one_process
    three, models = run_with_models(tmp_path, "processes3", backend="processes", shards=3, sync_hours=5)
    # Each worker wrote its own parts (the driver wrote none); read back in one log order.
    for dataset in ("logs", "visit_context"):
        assert len(shard_prefixes(three, dataset)) == 3 and len(shard_prefixes(single_shard, dataset)) == 1
    assert json.loads((three / "run_info.json").read_text())["log_rows"] == \
        json.loads((single_shard / "metrics.json").read_text())["impressions"]
    assert_same_results(single_shard, three)
    assert_same_models(one, models, "3 worker processes")


def test_log_reader_restores_log_order_across_shard_parts(tmp_path):
    """Two shards' parts, each in its own (window, block) order: the reader interleaves them by
    the batch every visit id encodes, keeping each batch's rows in their written order; the raw
    dataset (file order) has them shard by shard."""
    import pandas as pd

    from sim.logs import VISIT_ID_BITS, ImpressionLog, PartWriter, read_impressions

    def batch(window: int, block: int, n: int) -> dict:
        visit = ((window * 4 + block) << VISIT_ID_BITS) + np.arange(n) // 2    # 2 rows per visit
        cols = {k: np.zeros(n) for k in ("time", "member", "title", "artwork", "action", "n_candidates",
                                          "familiar", "row", "column", "position", "pscore", "model_version",
                                          "click", "play", "quality_play", "minutes", "reward",
                                          "expected_take", "uniform_take", "oracle_take")}
        cols["time"] = window * 5.0 + np.linspace(0, 4, n)[::-1]    # not sorted by time in a batch
        return {**cols, "visit": visit, "cell": "c", "policy": "p"}

    shards = {0: ImpressionLog(tmp_path, chunk_rows=5, prefix="00000-"),      # blocks 0, 1
              2: ImpressionLog(tmp_path, chunk_rows=5, prefix="00002-")}      # blocks 2, 3
    expected = []
    for window in range(3):
        for block in range(4):
            b = batch(window, block, 4 + block)
            shards[0 if block < 2 else 2].append(b)
            expected.append(b["visit"])
    for log in shards.values():
        log.close()
    assert len(list(tmp_path.glob("part-00002-*.parquet"))) > 1     # several parts per shard
    # What a writer killed mid-part leaves behind does not break reading the directory.
    PartWriter.temporary(tmp_path / "part-00002-00099.parquet").write_bytes(b"PAR1 half a part")
    log = read_impressions(tmp_path)
    np.testing.assert_array_equal(log["visit"].to_numpy(), np.concatenate(expected))
    np.testing.assert_array_equal(read_impressions(tmp_path, ["title"]).columns, ["title"])
    raw = pd.read_parquet(tmp_path)["visit"].to_numpy()
    assert not np.array_equal(raw, np.concatenate(expected))          # the sort did something


def test_log_parts_a_driver_cannot_see_are_an_error(tmp_path, monkeypatch):
    """A shard on another machine writes its parts to that machine's disk: the run fails naming
    the shared file system it needs, instead of finishing with a log that lacks rows."""
    from sim.logs import LogTarget
    from sim.shard import ShardServer

    finish = ShardServer.finish

    def elsewhere(self):
        totals = finish(self)
        for f in totals.log_parts["logs"]:
            (self.impression_log.directory / f).unlink()      # as if written on another node
        return totals

    monkeypatch.setattr(ShardServer, "finish", elsewhere)
    sim = Simulation(experiment_config_from_dict(scale_config(days=0.1)),
                     LogTarget.for_run(tmp_path, ["x"], 1000))
    with pytest.raises(RuntimeError, match="file system every node mounts"):
        sim.run()


def model_arrays(sim: Simulation) -> dict:
    """Every array of the trained models' statistics (policies and rankers) after a run."""
    out = {}
    for c in sim.cells:
        for part in ("stats_", "counts_"):          # linear policies / per-image bandits
            for name, v in vars(getattr(c.policy, part, None) or SimpleNamespace()).items():
                if isinstance(v, np.ndarray):
                    out[(c.name, name)] = v
        assert any(k[0] == c.name for k in out) or c.policy.name == "sticky", c.name
    for i, r in enumerate(sim.rankers):
        for name, v in vars(r.stats_).items():
            if isinstance(v, np.ndarray):
                out[(i, name)] = v
    return out


@pytest.mark.slow
def test_adding_blocks_in_another_order_changes_the_model_statistics(one_process, monkeypatch):
    """The model comparisons of the shard tests (assert_same_models) can fail: adding the
    blocks in reverse order changes the trained statistics (float addition is not associative)."""
    monkeypatch.setattr(Simulation, "block_order", staticmethod(lambda blocks: sorted(blocks, reverse=True)))
    sim = Simulation(experiment_config_from_dict(scale_config()))
    sim.run()
    reordered = model_arrays(sim)
    assert any(not np.array_equal(one_process[1][k], reordered[k]) for k in one_process[1])


def test_a_window_with_more_visits_than_visit_ids_is_an_error(monkeypatch):
    monkeypatch.setattr("sim.logs.VISIT_ID_BITS", 1)         # 2 visit ids per (window, block)
    with pytest.raises(RuntimeError, match=r"visits of block \d+ in one serving window: more than 2 "):
        Simulation(experiment_config_from_dict(scale_config())).run()


@pytest.mark.parametrize("n_visits, refused", [(2, False), (3, True)])
def test_a_window_may_hold_exactly_as_many_visits_as_visit_ids(monkeypatch, n_visits, refused):
    """With 1 id bit, 2 visits of a block in a window fit (ids 0 and 1) and 3 do not."""
    from sim.serving import Visits

    monkeypatch.setattr("sim.logs.VISIT_ID_BITS", 1)
    cfg = experiment_config_from_dict(scale_config())
    shard = build_shard(cfg, range(0, 1), None)
    B = cfg.engine.member_block

    def arrivals(block, window, t0, t1):
        return Visits(block * B + np.arange(n_visits), np.linspace(t0, t1, n_visits, endpoint=False),
                      np.full(n_visits, 3))

    monkeypatch.setattr(shard, "window_arrivals", arrivals)
    W = cfg.engine.window_minutes
    if refused:
        with pytest.raises(RuntimeError, match="more than 2 "):
            shard.serve_step(0.0, W)
    else:
        assert shard.serve_step(0.0, W).visits == n_visits


def failing_shard(config, blocks, log):
    """A shard whose steps raise (module level: worker processes import it by name)."""
    shard = build_shard(config, blocks, log)

    def boom(*args, **kwargs):
        raise ValueError("shard went wrong")

    shard.serve_step = boom
    return shard


def dying_shard(config, blocks, log):
    """A shard whose process exits in its first step."""
    import os

    shard = build_shard(config, blocks, log)
    shard.serve_step = lambda *args, **kwargs: os._exit(3)
    return shard


def test_a_failing_shard_raises_with_its_traceback(monkeypatch):
    monkeypatch.setattr("sim.engine.build_shard", failing_shard)    # what the workers build
    sim = Simulation(experiment_config_from_dict(scale_config(backend="processes", shards=2)))
    with pytest.raises(RuntimeError, match="(?s)shard 0 failed.*ValueError: shard went wrong"):
        sim.run()


def test_a_shard_draws_only_its_members_and_the_driver_of_workers_none():
    """Shard-local worlds: a shard of blocks 1-2 holds those members as the whole world draws
    them and nobody else's; the driver of worker processes draws no member at all."""
    cfg = experiment_config_from_dict(scale_config())
    whole = Simulation(cfg).world
    shard = build_shard(cfg, range(1, 3), None)
    B = cfg.engine.member_block
    own = slice(B, 3 * B)
    for name in ("visit_rate", "recent_titles", "genre_plays"):
        mine, ref = getattr(shard.world.members, name), getattr(whole.members, name)
        np.testing.assert_array_equal(mine[own], ref[own], err_msg=name)
        assert not mine[:B].any() and not mine[3 * B:].any(), name
    np.testing.assert_array_equal(shard.world.response.tastes[own], whole.response.tastes[own])
    assert not shard.world.response.tastes[:B].any()
    driver = Simulation(experiment_config_from_dict(scale_config(backend="processes", shards=2)))
    assert not driver.world.members.visit_rate.any() and not driver.world.response.tastes.any()


def test_worker_processes_are_not_forked_from_the_driver():
    assert process_context().get_start_method() in ("spawn", "forkserver")


def test_model_versions_name_the_world_instead_of_copying_it():
    cfg = experiment_config_from_dict(scale_config())
    sim = Simulation(cfg)
    blob = dump_models(sim.world, [c.policy for c in sim.cells], sim.rankers)
    assert len(blob) < 0.2 * sim.world.response.tastes.nbytes + 200_000
    other = build_world(cfg.world, cfg.seed, sim.horizon, cfg.engine.member_block)
    policies, rankers = load_models(other, blob)
    assert rankers[0].members is other.members and rankers[0].catalog is other.catalog
    assert policies[1].catalog_ is other.catalog
    assert [type(p) for p in policies] == [type(c.policy) for c in sim.cells]


def test_a_worker_that_dies_is_reported(monkeypatch):
    monkeypatch.setattr("sim.engine.build_shard", dying_shard)
    sim = Simulation(experiment_config_from_dict(scale_config(backend="processes", shards=2)))
    with pytest.raises(RuntimeError, match=r"shard 0: its worker process exited \(exit code 3\)"):
        sim.run()


@pytest.mark.slow
def test_every_step_serves_with_every_model_change_before_it(monkeypatch):
    """With cadences whose minutes are not exact in binary (0.35 h = 21 min, times k * 21.0 and
    + 7), every deploy and ranker retrain at or before a step's start happens before the shards
    serve that step, and none after it."""
    events = []
    sim = Simulation(experiment_config_from_dict(scale_config(
        days=0.5, retrain_hours=0.35, deploy_delay_minutes=7, ranker_retrain_hours=1.15, sync_hours=0.7)))
    deploy, step = sim.deploy, sim.shards[0].serve_step

    def logged_deploy(env, cell, stats):
        yield from deploy(env, cell, stats)
        events.append(("change", env.now))

    fit = sim.rankers[0].fit
    monkeypatch.setattr(sim, "deploy", logged_deploy)
    monkeypatch.setattr(sim.rankers[0], "fit", lambda stats, now: (events.append(("change", now)), fit(stats, now)))
    monkeypatch.setattr(sim.shards[0], "serve_step",
                        lambda t0, t1, drift=(): (events.append(("step", t0)), step(t0, t1, drift))[1])
    sim.run()
    changes = [t for kind, t in events if kind == "change"]
    steps = [(i, t) for i, (kind, t) in enumerate(events) if kind == "step"]
    assert len(changes) > 20 and len(steps) > 20
    for i, t0 in steps:
        before = [t for kind, t in events[:i] if kind == "change"]
        after = [t for kind, t in events[i:] if kind == "change"]
        assert all(t < t0 + 1e-6 for t in before) and all(t > t0 + 1e-6 for t in after), t0
    # ... and every change starts a step of its own.
    starts = np.array([t for _, t in steps])
    assert all(np.abs(starts - t).min() < 1e-6 for t in changes)


@pytest.mark.slow
def test_steps_break_at_every_model_change(monkeypatch):
    """Steps are contiguous from 0 to the horizon, at most ``sync_hours`` long, and one starts at
    every policy retrain, deploy and ranker retrain (the minutes SimPy's processes run them at)."""
    cfg = scale_config(sync_hours=5, days=1)
    cfg["world"] = {**cfg["world"], "n_members": 800}
    sim = Simulation(experiment_config_from_dict(cfg))
    steps = []
    step = sim.shards[0].serve_step
    monkeypatch.setattr(sim.shards[0], "serve_step",
                        lambda t0, t1, drift=(): (steps.append((t0, t1)), step(t0, t1, drift))[1])
    sim.run()
    eng = sim.config.engine
    retrains = np.arange(1, 6) * eng.retrain_hours * 60
    fits = np.array([eng.ranker_retrain_hours * 60])
    assert sim.deploys >= 2 * retrains.size      # thompson and lints deploy at every retrain
    starts, ends = np.array(steps).T
    assert np.isin(np.r_[retrains, retrains + eng.deploy_delay_minutes, fits], starts).all()
    assert starts[0] == 0 and ends[-1] == sim.horizon and (ends > starts).all()
    assert (starts[1:] == ends[:-1]).all()
    assert (ends - starts).max() <= 300.0


@pytest.mark.parametrize("engine, key", [
    ({"backend": "spark"}, "engine.backend"),
    ({"shards": 0}, "engine.shards"),
    ({"sync_hours": 0}, "engine.sync_hours"),
    ({"ray_address": ""}, "engine.ray_address"),
    ({"mode": "reference", "shards": 2}, "engine.mode"),
    ({"mode": "reference", "backend": "processes"}, "engine.mode"),
])
def test_bad_execution_settings_are_rejected(engine, key):
    with pytest.raises(ConfigError) as info:
        experiment_config_from_dict(scale_config(**engine))
    assert info.value.key == key


# ---- Ray ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def ray_cluster_process(request, tmp_path_factory):
    """The two-node Ray cluster's process (:mod:`tests.scale.ray_cluster`), started as this module
    begins when one of its tests will use the cluster: its nodes come up while the other tests of
    the module run. ``None`` if no test will, or Ray is not installed."""
    wanted = any("ray_cluster" in getattr(item, "fixturenames", ()) and item.module is request.module
                 for item in request.session.items)
    if not wanted or importlib.util.find_spec("ray") is None:
        yield None
        return
    log = tmp_path_factory.mktemp("ray_cluster") / "output.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.scale.ray_cluster"], cwd=REPO, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=out)
    proc.log = log
    try:
        yield proc
    finally:
        proc.stdin.close()                  # the cluster shuts down, then its process exits
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def ray_cluster(ray_cluster_process):
    """A simulated two-node Ray cluster on this machine: a head and a worker node, one CPU each,
    with their own raylets and object stores; this process is the driver."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    address = ray_cluster_process.stdout.readline().strip()
    assert address, f"the Ray cluster did not start:\n{ray_cluster_process.log.read_text()[-3000:]}"
    ray.init(address=address, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_ray_shards_on_a_two_node_cluster_give_identical_results(ray_cluster, one_process, tmp_path, capsys):
    single_shard, one = one_process
    assert len([n for n in ray_cluster.nodes() if n["Alive"]]) == 2
    with pytest.raises(ConfigError, match="4 shard actors x 1 CPUs = 4 CPUs, but this Ray has 2") as info:
        run_dir(tmp_path, "too_many", backend="ray", shards=4)    # would wait for CPUs that never come
    assert info.value.key == "engine.ray_cpus_per_shard"
    # Two actors of one CPU fill both one-CPU nodes: the shards run on both machines.
    out, on_ray = run_with_models(tmp_path, "ray2", backend="ray", shards=2)
    assert "engine.backend=ray: 2 shard actors on 2 Ray node(s)" in capsys.readouterr().out
    assert_same_results(single_shard, out)
    assert ray_cluster.is_initialized()         # the engine leaves a Ray it did not start running
    assert_same_models(one, on_ray, "2 Ray actors")


def test_ray_backend_without_ray_is_a_config_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ConfigError, match="Ray is not installed") as info:
        Simulation(experiment_config_from_dict(scale_config(backend="ray")))
    assert info.value.key == "engine.backend"
