"""Runs and sweeps killed mid-way: nothing looks complete, and a re-run gives the same results
as a run that was never interrupted (metrics.json byte for byte)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sim
from experiments.run import INTERRUPTED
from sim.config import ConfigError
from sim.logs import PartWriter
from sim.outputs import RUN_OUTPUTS, clear_run_outputs, is_complete
from sim.rundir import claim
from sim.runner import run_experiment
from tests.conftest import SWEEP_ARGS, tiny_config

REPO = Path(__file__).resolve().parents[2]
# A one-cell tiny run of about 1 s of simulation (plus ~1.5 s of start-up), with small log
# chunks so that Parquet parts appear early.
RUN_ARGS = ["world=tiny", "experiment=single", "policy=thompson", "engine.days=2",
            "engine.progress=false", "engine.log_chunk_rows=2000"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "experiments.run", *args]


def env() -> dict:
    return {**os.environ, "OPENBLAS_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}


def start(args: list[str]) -> subprocess.Popen:
    # Own session: the kill reaches the sweep's worker processes too, and nothing else.
    return subprocess.Popen(cli(*args), cwd=REPO, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def kill_when(proc: subprocess.Popen, ready, sig: int, timeout: float = 60.0) -> bool:
    """Send ``sig`` to ``proc``'s process group once ``ready()`` holds; False if the process
    finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    finished = proc.poll() is not None
    if not finished:
        os.killpg(proc.pid, sig)
    proc.output = proc.communicate(timeout=60)[0]
    return not finished


def assert_stopped_by(proc: subprocess.Popen, sig: int, resume: str = "") -> None:
    """SIGKILL ends the process where it stands. Ctrl-C (SIGINT) ends it by SIGINT too, after
    one line that names the directory to finish (``resume``: ``hydra.run.dir=...``), and no
    traceback."""
    assert proc.returncode == -sig, (proc.returncode, proc.output[-2000:])
    if sig == signal.SIGINT:
        assert f"{INTERRUPTED}; run the same command with {resume} to finish them" in proc.output, \
            proc.output[-2000:]
        assert "Traceback" not in proc.output, proc.output[-2000:]


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cli(*args), cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def has_log_part(run_dir: Path) -> bool:
    return any((run_dir / "logs").glob("part-*.parquet"))


#: The charts of a run of ``experiment=single`` (tests/experiments/test_plot_report.py checks each
#: chart itself).
SINGLE_CELL_CHARTS = sorted(["artwork_choice_share.png", "artwork_gain_over_time.png", "ctr_over_time.png",
                             "cumulative_regret.png", "exposure_lorenz.png", "homepage.png",
                             "regret_per_1k_over_time.png", "take_fraction_over_time.png",
                             "visit_success_rate_over_time.png"])

#: Fields of metrics.json that may differ between two runs of the same config: the commit moves
#: if someone commits between the two runs. Everything else must match byte for byte.
RUN_TO_RUN_FIELDS = ("git_commit",)


def results_bytes(run_dir: Path) -> bytes:
    m = json.loads((run_dir / "metrics.json").read_text())
    for key in RUN_TO_RUN_FIELDS:
        m.pop(key)
    return json.dumps(m, indent=2).encode()


def assert_nothing_looks_complete(run_dir: Path) -> None:
    assert not (run_dir / "metrics.json").exists()
    assert not is_complete(run_dir)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    run_cli(RUN_ARGS + [f"hydra.run.dir={out}", "engine.charts=false"])    # results only
    assert is_complete(out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_a_killed_run_leaves_nothing_complete_and_a_rerun_matches(tmp_path, uninterrupted, sig):
    out = tmp_path / "run"
    args = RUN_ARGS + [f"hydra.run.dir={out}", "engine.charts=false"]     # charts: the next test
    proc = start(args)
    killed = kill_when(proc, lambda: has_log_part(out), sig)
    assert killed, "the run finished before it could be killed: make it longer"
    assert_stopped_by(proc, sig, f"hydra.run.dir={out}")
    assert has_log_part(out)                      # it was killed mid-simulation
    assert_nothing_looks_complete(out)
    # Every Parquet part on disk is whole (parts are renamed into place when written).
    import pyarrow.parquet as pq
    for part in (out / "logs").glob("part-*.parquet"):
        pq.read_metadata(part)
    again = run_cli(args)
    assert "skipping" not in again.stdout
    assert results_bytes(out) == results_bytes(uninterrupted)
    assert (out / "timeseries.csv").read_bytes() == (uninterrupted / "timeseries.csv").read_bytes()
    parts = sorted(p.name for p in (out / "logs").iterdir())
    assert parts == sorted(p.name for p in (uninterrupted / "logs").iterdir())
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow
def test_a_run_killed_while_drawing_charts_is_complete_and_the_rerun_draws_them(tmp_path, uninterrupted):
    out = tmp_path / "run"
    # Killed as soon as metrics.json is complete: usually while the charts are being drawn.
    kill_when(start(RUN_ARGS + [f"hydra.run.dir={out}"]), lambda: is_complete(out), signal.SIGKILL)
    assert is_complete(out)
    again = run_cli(RUN_ARGS + [f"hydra.run.dir={out}"])
    assert "skipping" in again.stdout
    assert (out / "charts" / "DONE").is_file()
    # Every chart of a one-cell run (no lift chart: no control to compare with) and the picture.
    assert sorted(p.name for p in (out / "charts").glob("*.png")) == SINGLE_CELL_CHARTS
    assert not list(out.rglob("*.tmp"))
    assert results_bytes(out) == results_bytes(uninterrupted)


def test_stale_outputs_of_a_killed_attempt_are_removed_before_a_rerun(tmp_path):
    """A previous attempt's extra Parquet parts, charts and temporary files do not survive."""
    out = tmp_path / "run"
    (out / "logs").mkdir(parents=True)
    claim(out, RUN_OUTPUTS)        # what the killed attempt had listed as its own
    (out / "logs" / "part-09999.parquet").write_bytes(b"old")
    PartWriter.temporary(out / "logs" / "part-00000.parquet").write_bytes(b"half")
    (out / "charts").mkdir()
    (out / "charts" / "stale.png").write_bytes(b"old")
    (out / "metrics.json.tmp").write_text("{")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="notes.txt"):       # a file this project did not write
        run_experiment(tiny_config(["thompson"]), out)
    assert (out / "logs" / "part-09999.parquet").exists()     # refused: nothing touched
    config = tiny_config(["thompson"])
    config["engine"]["overwrite"] = True
    run_experiment(config, out)
    assert not (out / "logs" / "part-09999.parquet").exists()
    assert not list(out.rglob("*.tmp")) and not (out / "charts").exists()
    assert (out / "notes.txt").read_text() == "mine"          # not a run output: kept
    clear_run_outputs(out)
    assert not (out / "metrics.json").exists() and (out / "notes.txt").exists()


def sweep_jobs(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.glob("*/.hydra"))


@pytest.mark.slow
def test_an_interrupted_sweep_rerun_matches_an_uninterrupted_one(tmp_path, sweep):
    # The uninterrupted sweep is the session's shared one (tests/conftest.py); this one runs the
    # same overrides one job after another (in the sweep's own process: joblib with one job), so
    # that it can be caught with some jobs done.
    clean, first = sweep
    assert first.returncode == 0, first.stderr[-3000:]
    n = len(sweep_jobs(clean))
    assert n >= 2 and all(is_complete(j) for j in sweep_jobs(clean))
    broken = tmp_path / "broken"
    # Charts off (an execution key: same results, same job directories), they are not compared.
    args = ["-m", *SWEEP_ARGS, "hydra.launcher.n_jobs=1", f"hydra.sweep.dir={broken}", "engine.charts=false"]
    # Ctrl-C (SIGINT to the sweep's process group), as a user stops a sweep: SIGKILL is the
    # single run's test above, and tests/cli/test_reliability_procs.py's for sweep workers.
    proc = start(args)
    killed = kill_when(proc, lambda: any(is_complete(j) for j in sweep_jobs(broken)), signal.SIGINT)
    assert killed, "the sweep finished before it could be stopped"
    assert_stopped_by(proc, signal.SIGINT, f"hydra.sweep.dir={broken}")
    done_before = {j.name for j in sweep_jobs(broken) if is_complete(j)}
    assert 0 < len(done_before) < n
    again = run_cli(args)
    for name in done_before:
        assert f"skipping {broken / name}" in again.stdout
    assert f"{n} of {n} runs complete, 0 failed" in again.stdout and "charts:  not drawn" in again.stdout
    assert [j.name for j in sweep_jobs(broken)] == [j.name for j in sweep_jobs(clean)]
    for j in sweep_jobs(clean):
        assert results_bytes(broken / j.name) == results_bytes(j)
        assert not (broken / j.name / "charts").exists()
    assert not (broken / "charts").exists()


def test_metrics_json_records_provenance(uninterrupted):
    m = json.loads((uninterrupted / "metrics.json").read_text())
    assert m["complete"] is True and m["package_version"] == sim.__version__
    assert m["seed"] == 0 and m["config"]["seed"] == 0
    # The resolved config: every group composed, interpolations resolved, no Hydra node.
    assert {"world", "engine", "ranker", "policy", "experiment"} <= set(m["config"])
    assert m["config"]["world"]["name"] == "tiny" and m["config"]["engine"]["days"] == 2
    assert "hydra" not in m["config"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode == 0:
        assert m["git_commit"] == head.stdout.strip()
    else:
        assert m["git_commit"] is None


def test_a_run_completed_by_another_writer_while_this_one_started_is_left_alone(tmp_path, monkeypatch):
    """The race of two runs started together: the other run finishes (and releases the lock)
    after this one checked the directory but before this one takes the lock. This run must not
    replace the result; it reports a skip (experiments.run prints "skipping")."""
    import sim.runner
    from sim.runner import RunCompletedMeanwhile

    out = tmp_path / "run"
    cfg = tiny_config(["uniform"], engine={"days": 0.1})
    other = tiny_config(["uniform"], engine={"days": 0.1})
    other["seed"] = 2
    real = sim.runner.Simulation

    def other_writer_finishes_first(*args, **kwargs):
        monkeypatch.setattr(sim.runner, "Simulation", real)
        run_experiment(other, out)                 # the other process's whole run
        return real(*args, **kwargs)

    monkeypatch.setattr(sim.runner, "Simulation", other_writer_finishes_first)
    with pytest.raises(RunCompletedMeanwhile):
        run_experiment(cfg, out)
    assert is_complete(out) and json.loads((out / "metrics.json").read_text())["seed"] == 2


def test_readme_quotes_what_ctrl_c_prints():
    text = " ".join((REPO / "README.md").read_text().split())
    assert (f"`{INTERRUPTED}; run the same command with hydra.sweep.dir=<its directory> to finish them "
            "(complete runs are skipped)`") in text
