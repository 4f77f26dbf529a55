"""Reliability battery, part 3 (issue 16): concurrent writers, locks, kills at several moments and
orphaned processes. Subprocesses only where the process boundary is the point; each case checks
that no process carrying its marker is left running."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from sim.runner import run_experiment
from sim.schema import ConfigError
from tests.cli.reliability_support import (assert_one_line, base_config, processes_with_marker,
                                           snapshot)
from tests.conftest import REPO

# Charts off (an execution key): these cases are about locks, signals and files, not charts.
RUN = ["world=tiny", "experiment=single", "policy=thompson", "engine.progress=false", "engine.charts=false",
       "world.n_members=60", "world.n_titles=12"]


def spawn(args: list[str], marker: str, cwd: Path = REPO, module: str = "experiments.run") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(PYTHONPATH=str(REPO), RELIABILITY_MARKER=marker, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


@pytest.fixture
def marker():
    """A token in the environment of every process a case starts; none may outlive the case."""
    token = f"reliability-{uuid.uuid4().hex}"
    yield token
    deadline = time.monotonic() + 8
    while processes_with_marker(token) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = processes_with_marker(token)
    for pid in left:           # clean up before failing, so one failure does not leak into others
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"processes left running: {left}"


def wait_for(predicate, timeout: float = 60.0, period: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return False


# ---- locks (defect 3) ----------------------------------------------------------------------------------
def test_second_writer_in_process_is_refused_and_touches_nothing(tmp_path):
    from sim.rundir import RunLock

    out = tmp_path / "run"
    run_experiment(base_config(), out)
    before = snapshot(out)
    with RunLock(out):
        with pytest.raises(ConfigError) as err:
            run_experiment({**base_config(), "seed": 5}, out)
    assert_one_line(err.value, str(out), "lock")
    assert snapshot(out) == before


def test_lock_holder_is_reported_while_held_and_gone_after(tmp_path):
    from sim.rundir import RunLock, lock_holder

    lock = RunLock(tmp_path)
    assert lock_holder(tmp_path) == f"process {os.getpid()}"
    lock.release()
    assert lock_holder(tmp_path) is None


def test_lock_dies_with_a_killed_process(tmp_path, marker):
    code = ("import sys, time; sys.path.insert(0, %r); from sim.rundir import RunLock; "
            "lock = RunLock(%r); print('locked', flush=True); time.sleep(60)" % (str(REPO), str(tmp_path / "run")))
    env = {**os.environ, "RELIABILITY_MARKER": marker}
    p = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    from sim.rundir import lock_holder

    assert lock_holder(tmp_path / "run") == f"process {p.pid}"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert lock_holder(tmp_path / "run") is None
    run_experiment(base_config(), tmp_path / "run")       # the dead writer's lock is no obstacle
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["complete"]


def test_temporary_names_are_unique():
    from sim.outputs import tmp_name

    names = {tmp_name(Path("/x/metrics.json")) for _ in range(2000)}
    assert len(names) == 2000 and all(str(n).endswith(".tmp") for n in names)


def test_concurrent_atomic_writes_to_one_file_never_collide(tmp_path):
    from sim.outputs import atomic_write_text

    errors = []

    def write(i: int) -> None:
        try:
            for _ in range(30):
                atomic_write_text(tmp_path / "f.txt", f"writer {i}\n" * 100)
        except Exception as e:  # noqa: BLE001 -- collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    text = (tmp_path / "f.txt").read_text()
    assert len(set(text.splitlines())) == 1 and not list(tmp_path.glob("*.tmp"))


def test_two_runs_into_one_directory_never_mix_results(tmp_path, marker):
    """Started together: one writes, the other is refused while it does (or, if it arrives after
    the first finished, skips the complete directory). The run that says "results:" wrote them."""
    out = tmp_path / "run"
    procs = {seed: spawn(RUN + ["engine.days=0.25", f"seed={seed}", f"hydra.run.dir={out}"], marker)
             for seed in (1, 2)}
    results = {seed: (p.wait(timeout=180), *p.communicate()) for seed, p in procs.items()}
    wrote = [s for s, r in results.items() if r[0] == 0 and f"results: {out}/metrics.json" in r[1]]
    assert len(wrote) == 1, {s: (r[0], r[2][-300:]) for s, r in results.items()}
    other = results[3 - wrote[0]]
    if other[0] == 2:
        assert_one_line(other[2], "hydra.run.dir", "lock")
    else:
        assert other[0] == 0 and "skipping" in other[1]
    assert json.loads((out / "metrics.json").read_text())["seed"] == wrote[0]


def test_resumed_sweep_never_runs_a_job_a_live_worker_is_running(tmp_path):
    from omegaconf import OmegaConf

    from experiments.run import ERROR_FILE, sweep_job
    from sim.rundir import RunLock

    job = tmp_path / "sweep" / "seed=0"
    job.mkdir(parents=True)
    with RunLock(job):         # the live worker of a killed sweep
        before = snapshot(job)
        assert sweep_job(OmegaConf.create(base_config()), job) is None
        assert snapshot(job) == before and not (job / ERROR_FILE).exists()


# ---- the command line: foreign files, escapes (defects 2, 7) -------------------------------------------
def test_cli_refused_value_keeps_the_users_logs_and_hydra_dir(tmp_path, marker):
    out = tmp_path / "mine"
    (out / ".hydra").mkdir(parents=True)
    (out / ".hydra" / "config.yaml").write_text("mine: 1\n")
    (out / "notes.log").write_text("my log\n")
    (out / "run.log").write_text("my run log\n")
    before = snapshot(tmp_path)
    p = spawn(RUN + ["engine.days=-1", f"hydra.run.dir={out}"], marker)
    code = p.wait(timeout=120)
    _, err = p.communicate()
    assert code == 2
    assert_one_line(err, "hydra.run.dir")
    assert snapshot(tmp_path) == before


def test_cli_escaping_name_writes_nothing_anywhere(tmp_path, marker):
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    p = spawn(RUN + ["engine.days=0.1", "experiment.name=../../escaped"], marker, cwd=cwd)
    code = p.wait(timeout=120)
    _, err = p.communicate()
    assert code == 2
    assert_one_line(err, "experiment.name", "../../escaped")
    assert snapshot(tmp_path) == {"a": "dir", "a/b": "dir"}


# ---- kills at several moments ------------------------------------------------------------------------
MOMENTS = {
    "config written": lambda out: (out / "config.yaml").is_file(),
    "log part written": lambda out: any((out / "logs").glob("part-*.parquet")),
}


@pytest.mark.parametrize("moment", MOMENTS)
def test_run_killed_leaves_nothing_complete_looking_and_reruns(moment, tmp_path, marker):
    from sim.outputs import is_complete
    from sim.rundir import foreign_entries, lock_holder

    out = tmp_path / "run"
    p = spawn(RUN + ["engine.days=2", "engine.log_chunk_rows=50", f"hydra.run.dir={out}"], marker)
    assert wait_for(lambda: MOMENTS[moment](out) or p.poll() is not None)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    p.communicate()
    assert not is_complete(out) and not (out / "metrics.json").exists()
    assert lock_holder(out) is None
    assert foreign_entries(out) == []            # everything there is listed as the project's
    config = base_config()
    run_experiment(config, out)                  # the re-run is not refused, and completes
    assert is_complete(out)


# ---- orphaned workers (defect 6) --------------------------------------------------------------------------
def test_killed_sweep_leaves_no_workers_behind(tmp_path, marker):
    """SIGKILL of a sweep's parent: its joblib workers exit within seconds (they ran on for
    minutes and a re-run ran their jobs twice), and release their job directories."""
    from sim.outputs import is_complete
    from sim.rundir import foreign_entries, lock_holder

    sweep = tmp_path / "sweep"
    args = ["-m", *RUN, "engine.days=3", "seed=0,1", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"]
    p = spawn(args, marker)
    busy = lambda: any(lock_holder(j) for j in sweep.glob("*/"))  # noqa: E731
    assert wait_for(lambda: busy() or p.poll() is not None, timeout=120)
    assert p.poll() is None
    os.kill(p.pid, signal.SIGKILL)              # the parent only: its workers must notice
    p.wait()
    p.communicate()
    assert wait_for(lambda: not processes_with_marker(marker), timeout=10), processes_with_marker(marker)
    jobs = [j for j in sweep.iterdir() if j.is_dir() and (j / ".hydra").is_dir()]
    assert jobs and all(lock_holder(j) is None for j in jobs)
    # Nothing there the project did not write (Hydra's .hydra and job log are adopted by a re-run).
    assert all(foreign_entries(j, adopt=(".hydra", "run.log")) == [] for j in jobs if not is_complete(j))


def test_ctrl_c_while_shard_workers_start_prints_one_line_and_leaves_no_process(tmp_path, marker):
    """Ctrl-C reaches the whole process group, shard workers still importing included (they
    printed their own tracebacks). They ignore it: the driver prints one line, ends by SIGINT
    and closes them (the marker fixture checks that none is left)."""
    from experiments.run import INTERRUPTED

    out = tmp_path / "run"
    p = spawn([*RUN, "engine.days=2", "engine.backend=processes", "engine.shards=2", f"hydra.run.dir={out}"],
              marker)

    def shard_workers() -> list[int]:
        found = []
        for pid in processes_with_marker(marker):
            try:
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:         # it ended meanwhile
                pass
        return found

    assert wait_for(lambda: shard_workers() or p.poll() is not None, timeout=60, period=0.005)
    # Into the workers' imports (a fresh Python ignores nothing yet at its very start, and dies of
    # SIGINT there without a word), as a terminal sends it: to the whole process group.
    time.sleep(0.4)
    assert p.poll() is None, "the run ended before its workers started"
    os.killpg(p.pid, signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == -signal.SIGINT, (p.returncode, stderr[-2000:])
    assert f"{INTERRUPTED}; run the same command with hydra.run.dir={out}" in stderr, stderr[-2000:]
    assert "Traceback" not in stdout + stderr, stderr[-3000:]
    assert not (out / "metrics.json").exists()


@pytest.mark.slow
def test_ctrl_c_stops_a_sweep_on_joblib_workers_in_one_line_and_leaves_no_process(tmp_path, marker):
    """Ctrl-C to a sweep whose jobs run in joblib's worker processes: one line that names the
    sweep directory, no traceback, the end by SIGINT, and no worker left (the marker fixture).
    The directory comes from the sweep's callback, which under ``python -m`` runs in a second
    copy of experiments.run: kept in a module global, the line said "nothing had started"."""
    from experiments.run import INTERRUPTED
    from sim.outputs import is_complete
    from sim.rundir import lock_holder

    sweep = tmp_path / "sweep"
    p = spawn(["-m", *RUN, "engine.days=3", "seed=0,1", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"],
              marker)
    busy = lambda: any(lock_holder(j) for j in sweep.glob("*/"))  # noqa: E731
    assert wait_for(lambda: busy() or p.poll() is not None, timeout=120)
    assert p.poll() is None, "the sweep ended before its jobs could be stopped"
    os.killpg(p.pid, signal.SIGINT)             # as a terminal sends it: to the whole group
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == -signal.SIGINT, (p.returncode, stderr[-2000:])
    assert f"{INTERRUPTED}; run the same command with hydra.sweep.dir={sweep} to finish them" in stderr, \
        stderr[-2000:]
    assert "Traceback" not in stdout + stderr, stderr[-3000:]
    jobs = [j for j in sweep.iterdir() if j.is_dir()]
    assert jobs and not all(is_complete(j) for j in jobs)


#: Every command-line tool but ``homesim`` (whose line names the directory to finish, tested above),
#: with the line it prints on Ctrl-C.
TOOLS_ON_CTRL_C = {"experiments.plot": "FILES_WHOLE", "experiments.report": "FILES_WHOLE",
                   "experiments.evaluate": "FILES_WHOLE", "experiments.calibrate": "FILES_WHOLE",
                   "experiments.power": "PRINTS_ONLY", "experiments.bench": "NOTHING_WRITTEN",
                   "experiments.gym_bench": "NOTHING_WRITTEN"}


def test_ctrl_c_inside_a_c_callback_is_not_reported_but_other_errors_are(monkeypatch, capsys):
    """A Ctrl-C landing in a ctypes callback (numba compiling a kernel on a fresh checkout) made
    a sweep print "Exception ignored ... Traceback ... KeyboardInterrupt" before its one line
    (seen in CI). The commands' hook drops that report and keeps every other."""
    import ctypes

    from experiments.ctrl_c import quiet_ctrl_c_in_callbacks

    # Python's own hook (pytest installs one that turns reports into warnings); restored after.
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)

    def ctrl_c():
        raise KeyboardInterrupt

    def other():
        raise ValueError("another error")

    callbacks = [ctypes.CFUNCTYPE(None)(f) for f in (ctrl_c, other)]
    for cb in callbacks:
        cb()                                       # Python reports both and carries on
    before = capsys.readouterr().err
    assert "KeyboardInterrupt" in before and "another error" in before
    quiet_ctrl_c_in_callbacks()
    quiet_ctrl_c_in_callbacks()                    # idempotent: one wrapper, not two
    for cb in callbacks:
        cb()
    after = capsys.readouterr().err
    assert "KeyboardInterrupt" not in after and "Traceback" in after and "another error" in after


def test_every_tool_prints_one_line_on_ctrl_c_and_ends_by_sigint(marker):
    """A Ctrl-C inside each tool's main (raised where it reads its arguments, all tools at once):
    the tool's one line on standard error, no traceback, the end by SIGINT."""
    import experiments.ctrl_c as ctrl_c

    code = ("import argparse, importlib, sys\n"
            "def interrupted(*args, **kwargs):\n"
            "    raise KeyboardInterrupt\n"
            "argparse.ArgumentParser.parse_args = interrupted\n"
            "importlib.import_module(sys.argv[1]).main([])\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "RELIABILITY_MARKER": marker}
    procs = {tool: subprocess.Popen([sys.executable, "-c", code, tool], cwd=REPO, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for tool in TOOLS_ON_CTRL_C}
    for tool, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGINT, (tool, proc.returncode, stderr[-2000:])
        # The tool's line last (a library's warning at import may come before it), no traceback.
        assert stderr.splitlines()[-1:] == [getattr(ctrl_c, TOOLS_ON_CTRL_C[tool])], (tool, stderr[-2000:])
        assert "Traceback" not in stdout + stderr, (tool, stderr[-2000:])


def test_ctrl_c_stops_a_benchmark_in_one_line(marker):
    """A real Ctrl-C to the process group of a long benchmark."""
    from experiments.ctrl_c import NOTHING_WRITTEN

    p = spawn(["--steps", "100000000", "--num-envs", "64"], marker, module="experiments.gym_bench")
    time.sleep(3.0)                 # imported (about 1 s) and stepping
    assert p.poll() is None
    os.killpg(p.pid, signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == -signal.SIGINT, (p.returncode, stderr[-2000:])
    assert stderr.splitlines()[-1:] == [NOTHING_WRITTEN] and "Traceback" not in stderr, stderr[-2000:]


def test_worker_exits_when_its_parent_is_gone(marker):
    parent = subprocess.Popen(["sleep", "0.5"])
    code = ("import os, sys, time; sys.path.insert(0, %r); os.environ['SIM_RUN_PARENT_PID'] = %r; "
            "from experiments.run import watch_parent; watch_parent(0.05); time.sleep(30)"
            % (str(REPO), str(parent.pid)))
    env = {**os.environ, "RELIABILITY_MARKER": marker}
    worker = subprocess.Popen([sys.executable, "-c", code], env=env)
    parent.wait()
    assert worker.wait(timeout=20) == 3


def test_ray_processes_of_a_killed_owner_are_reaped_on_the_next_start(marker):
    """Ray's agents outlive a driver killed with SIGKILL; the next local Ray start reaps the
    processes whose owner is dead and leaves those of a live owner alone."""
    from sim.backends import RAY_OWNER_ENV, reap_orphaned_ray

    dead = subprocess.Popen(["true"])
    dead.wait()
    env = {**os.environ, "RELIABILITY_MARKER": marker}
    orphan = subprocess.Popen(["sleep", "60"], env={**env, RAY_OWNER_ENV: str(dead.pid)})
    owned = subprocess.Popen(["sleep", "60"], env={**env, RAY_OWNER_ENV: str(os.getpid())})
    try:
        assert wait_for(lambda: all(RAY_OWNER_ENV.encode() in Path(f"/proc/{p.pid}/environ").read_bytes()
                                    for p in (orphan, owned)), 5)     # both have exec'd
        killed = reap_orphaned_ray()
        assert orphan.pid in killed and owned.pid not in killed
        assert orphan.wait(timeout=5) == -signal.SIGKILL
        assert owned.poll() is None
    finally:
        owned.kill()
        owned.wait()
        orphan.kill()
        orphan.wait()
