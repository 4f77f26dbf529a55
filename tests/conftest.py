"""Shared builders and fixtures: tiny worlds and configs, a command-line runner, one tiny world
with a batch of random impressions, and one command-line sweep per test session.

Test modules import the plain builders (``from tests.conftest import tiny_config``); fixtures
reach them the usual way."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# sim is imported inside the fixtures that use it: the pytest-xdist controller loads this file
# too, needs none of it, and its imports would compete with the workers' at start-up.
REPO = Path(__file__).resolve().parent.parent
#: Every policy that needs no extra settings, for runs that should exercise them all.
POLICIES = ["uniform", "fixed", "thompson", "epsilon_greedy", "ucb1", "softmax", "lints",
            "linucb", "logistic_ts", "oracle"]


# ---- config builders ----------------------------------------------------------------------------------
def tiny_world(**overrides) -> dict:
    """A world section that builds in milliseconds: 60 members, 12 titles, 4 genres."""
    return {"name": "tiny", "n_members": 60, "n_titles": 12, "n_genres": 4, "artworks_min": 2,
            "artworks_max": 4, "history_length": 8, "visits_per_day": 3.0, **overrides}


def cells_of(policies, params: dict | None = None) -> list[dict]:
    """One equal-share cell per policy name; ``params[name]`` adds that policy's settings."""
    params = params or {}
    return [{"name": p, "share": 1 / len(policies), "policy": {"name": p, **params.get(p, {})}}
            for p in policies]


def tiny_config(policies=POLICIES, world=None, engine=None, params=None) -> dict:
    """A one-day experiment with one cell per policy on :func:`tiny_world`."""
    return {"seed": 1, "world": world or tiny_world(),
            "engine": {"days": 1, "progress": False, "retrain_hours": 3, **(engine or {})},
            "ranker": {"name": "learned", "rows": 3, "columns": 4},
            "experiment": {"name": "edge", "control": policies[0], "cells": cells_of(policies, params)}}


def tiny_run_config(cells=("uniform", "fixed", "oracle"), days: float = 1.0) -> dict:
    """A run big enough for off-policy estimates: 400 members, 40 titles, the default homepage."""
    return {"seed": 0, "world": tiny_world(n_members=400, n_titles=40, n_genres=8, artworks_max=6,
                                           history_length=16),
            "engine": {"days": days, "progress": False}, "ranker": {"name": "learned"},
            "experiment": {"name": "ope-test", "control": cells[0], "cells": cells_of(cells)}}


# ---- command lines ------------------------------------------------------------------------------------
def cli(*args: str, timeout: float = 180, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m <args>`` from the repository root, as a user types it."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_readable_png(path: Path, min_bytes: int = 10_000) -> None:
    """``path`` is a PNG of at least 500 x 300 pixels that is not a blank canvas."""
    import matplotlib.image as mpimg
    import numpy as np

    assert path.is_file() and path.stat().st_size > min_bytes, path
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] >= 300 and img.shape[1] >= 500, (path, img.shape)
    assert np.ptp(img[..., :3]) > 0.5, path          # not a blank canvas


def assert_same_logs(a: Path, b: Path, datasets=("logs", "visit_context")) -> None:
    """Runs ``a`` and ``b`` logged the same rows, in the same log order, as the readers return
    them (:func:`sim.logs.read_impressions`, :func:`sim.logs.read_visit_log`): whatever the shards
    that wrote the part files."""
    import pandas as pd

    from sim.logs import read_impressions, read_visit_log

    for name in datasets:
        read = read_impressions if name == "logs" else read_visit_log
        fa, fb = read(a), read(b)
        assert len(fa) > 0, (a, name)
        pd.testing.assert_frame_equal(fa, fb, check_exact=True, obj=name)


def shard_prefixes(run: Path, dataset: str = "logs") -> set[str]:
    """The shards (first blocks) whose part files a run's dataset holds."""
    return {p.name.split("-")[1] for p in (run / dataset).glob("part-*-*.parquet")}


SWEEP_ARGS = ("world=tiny", "engine.days=0.5", "policy=thompson", "engine.retrain_hours=3,6", "seed=0")
SWEEP_RUNS = sorted(f"engine.days=0.5,engine.retrain_hours={h},policy=thompson,seed=0,world=tiny"
                    for h in (3, 6))


@pytest.fixture(scope="session")
def sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A two-job sweep (two retrain cadences) on the tiny world with the default (joblib)
    launcher, charts off (``engine.charts=false``: the re-run test draws the jobs' charts, so the
    suite draws them once): ``(sweep_dir, completed_process)``. It is run once per test session, by whichever
    pytest-xdist worker asks first (the others wait on a file lock), because a sweep costs about
    12 s of CPU (three processes); each worker gets its own copy, so tests may write into it (charts, re-runs)."""
    shared_root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):      # under xdist: the directory all workers share
        shared_root = shared_root.parent
    master, record = shared_root / "tiny_sweep", shared_root / "tiny_sweep.json"
    with open(shared_root / "tiny_sweep.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not record.exists():
            done = cli("experiments.run", "-m", *SWEEP_ARGS, f"hydra.sweep.dir={master}", "engine.charts=false",
                       timeout=900)
            record.write_text(json.dumps({"args": done.args, "returncode": done.returncode,
                                          "stdout": done.stdout, "stderr": done.stderr}))
    first = json.loads(record.read_text())
    sweep_dir = tmp_path_factory.mktemp("sweep") / "sweep"
    if master.is_dir():
        shutil.copytree(master, sweep_dir)
    # The sweep printed the paths of the directory it wrote; tests read them as this copy's.
    text = {k: first[k].replace(str(master), str(sweep_dir)) for k in ("stdout", "stderr")}
    return sweep_dir, subprocess.CompletedProcess(first["args"], first["returncode"], **text)


# ---- one tiny world -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def world():
    """300 members, 60 titles (3-12 artworks each), 8 genres, three days: builds in ~0.1 s."""
    from sim.config import WorldConfig
    from sim.world import build_world

    return build_world(WorldConfig(n_members=300, n_titles=60, n_genres=8), seed=0,
                       horizon_minutes=1440 * 3)


@pytest.fixture(scope="session")
def catalog(world):
    return world.catalog


@pytest.fixture(scope="session")
def decision_batch(world):
    """200 random impressions (session-wide: tests must not modify it)."""
    from sim.streams import generator
    from sim.testing import make_decision_batch

    return make_decision_batch(world.catalog, 200, generator(0, "policy", 100),
                               n_members=world.members.n_members)


# ---- scheduling -----------------------------------------------------------------------------------
#: The longest files, longest first (seconds per file of ``make test`` on a quiet 2-core machine,
#: 9 s or more each), so that no long file starts last (longest processing time first: a 20 s
#: file that started last kept one worker busy ~18 s after the other had finished). The shared
#: sweep is built by whichever file asks for it first (tests/conftest.py ``sweep``); the other
#: files that use it wait on its lock.
LONGEST_FILES = ("tests/scale/test_scale.py", "tests/engine/test_interruption.py", "tests/experiments/test_workflow.py",
                 "tests/experiments/test_readme_commands.py", "tests/cli/test_config.py",
                 "tests/experiments/test_plot_report.py", "tests/ope/test_ope_data.py",
                 "tests/cli/test_reliability_procs.py", "tests/engine/test_engine.py", "tests/policies/test_policies.py",
                 "tests/cli/test_run.py", "tests/experiments/test_bias.py", "tests/cli/test_reliability_files.py",
                 "tests/ope/test_slate.py", "tests/cli/test_commands.py", "tests/scale/test_bench.py",
                 "tests/engine/test_edge_cases.py", "tests/experiments/test_metrics.py")


def pytest_collection_modifyitems(session, config, items):
    """The files of :data:`LONGEST_FILES` first, in that order, then the files with the most
    tests marked ``slow``, the rest in their usual order.

    ``make test`` hands whole files to pytest-xdist workers in collection order
    (``--no-loadscope-reorder``: by default xdist puts the files with the most tests first, and
    the longest files have few); a long file that starts last keeps one worker busy while the
    other idles, so the long files go first (longest processing time first). The order is a pure function of the collected items, as xdist needs
    (every worker must collect the same list)."""
    def file(item) -> str:
        return item.nodeid.split("::")[0]

    slow: dict[str, int] = {}
    for item in items:
        slow[file(item)] = slow.get(file(item), 0) + (item.get_closest_marker("slow") is not None)
    rank = {f: i for i, f in enumerate(LONGEST_FILES)}
    position = {item.nodeid: i for i, item in enumerate(items)}
    items.sort(key=lambda item: (rank.get(file(item), len(rank)), -slow[file(item)], position[item.nodeid]))
