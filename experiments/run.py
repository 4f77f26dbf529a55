"""Run a configured experiment: ``homesim [overrides]`` (or ``python -m experiments.run [overrides]``).

Examples::

    python -m experiments.run                                   # default experiment
    python -m experiments.run world=tiny engine.days=3 policy=ucb1
    python -m experiments.run -m policy=thompson,epsilon_greedy seed=0,1,2   # sweep

Writes a run directory (see :mod:`sim.outputs`) and its charts, and prints where they are.
A run whose directory already holds a complete result is skipped (so an interrupted sweep can be
re-run); a bad config value is refused before anything is simulated, and nothing is left behind.
A directory holding files this project did not write is refused unless ``engine.overwrite=true``;
a directory another live run is writing is refused (:mod:`sim.rundir`); names used in paths and
an explicit ``hydra.run.dir`` are checked before Hydra creates anything (:func:`preflight`).

Failures in a sweep (``-m``): a job that fails (a refused config value, or an exception while
simulating) does not stop the other jobs. It writes ``error.txt`` into its job directory and
returns; when every job has returned, :class:`SweepSummary` lists the failed jobs and the sweep
exits with status 1. Re-running the sweep into the same ``hydra.sweep.dir`` retries exactly the
jobs that are not complete. Ctrl-C stops the sweep; finished jobs stay finished.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments import cli_help  # noqa: F401 -- registers the resolver the --help template calls
from experiments import config_store  # noqa: F401 -- registers the schema with Hydra before main() composes
from experiments.analyses import run_analyses
from experiments.presets import preset_notes
from experiments.ctrl_c import exit_by_sigint, quiet_ctrl_c_in_callbacks
from sim.config import ConfigError
from sim.schema import closest_text
from sim.outputs import atomic_write_text, charts_done, is_complete, mark_charts_done
from sim.rundir import (RunDirBusy, RunDirError, check_path_name, check_run_dir, claim,
                        foreign_entries, lock_holder, pid_alive, remove_listed)
from sim.runner import RunCompletedMeanwhile, run_experiment

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


def config_to_dict(cfg: DictConfig) -> dict:
    """Resolved plain dict of a composed config, without Hydra's own node."""
    d = OmegaConf.to_container(cfg, resolve=True)
    d.pop("hydra", None)
    return d


ERROR_FILE = "error.txt"


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> dict | None:
    quiet_ctrl_c_in_callbacks()      # here: it runs in every sweep worker too
    hc = HydraConfig.get()
    os.environ[RESUME_ENV] = resume_override(hc)    # for Ctrl-C's message: Hydra forgets it on the way out
    out = Path(hc.runtime.output_dir)
    # What Hydra has just written into the run directory (not what was there before it ran).
    adopt = tuple(n for n in (".hydra", f"{hc.job.name}.log") if n not in _PREEXISTING.get(str(out), ()))
    for note in preset_notes(hc.runtime.choices, hc.overrides.task):   # never replaced silently
        print(note)
    if hc.mode == RunMode.MULTIRUN:
        return sweep_job(cfg, out, adopt)
    if is_complete(out):
        print(f"skipping {out}: already complete{config_drift(cfg, out)}")
        if cfg.engine.charts:
            redraw_missing_charts(out)
        return None
    try:
        summary = run_experiment(config_to_dict(cfg), out, dir_key="hydra.run.dir", adopt=adopt)
    except RunCompletedMeanwhile:
        print(f"skipping {out}: completed by another process while this one started{config_drift(cfg, out)}")
        return None
    except RunDirBusy as err:
        print(f"config error: {err}", file=sys.stderr)   # the other writer's files stay
        sys.exit(2)
    except (ConfigError, OmegaConfBaseException) as err:
        # Nothing was simulated: remove what Hydra put in the run directory (and the directory,
        # if that leaves it empty) so that no half result remains. Never touch other files.
        remove_hydra_leftovers(out, adopt)
        print(f"config error: {_one_line(err)}", file=sys.stderr)
        sys.exit(2)
    charts = draw_charts(out, summary) if cfg.engine.charts else []
    print_summary(summary, out, charts)
    return summary


def _one_line(err: Exception) -> str:
    """OmegaConf's messages span lines (full key, object type): keep the first."""
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


#: What Hydra writes into a run directory (experiments.run's job is named ``run``).
HYDRA_ENTRIES = (".hydra", "run.log")
#: Entries of an explicit ``hydra.run.dir`` before Hydra ran (filled by :func:`preflight`).
_PREEXISTING: dict[str, set[str]] = {}


#: Environment variable holding the pid of the ``python -m experiments.run`` process; sweep
#: workers (joblib/loky processes) exit when it is gone (see :func:`watch_parent`).
PARENT_ENV = "SIM_RUN_PARENT_PID"
_watching: list[int] = []


def watch_parent(period: float = 0.5) -> None:
    """In a sweep worker process: exit as soon as the launching process is gone (killed with
    SIGKILL, it cannot stop its workers itself). The job's directory lock dies with the worker,
    so a re-run of the sweep runs the job again -- and never while a worker still runs it."""
    import threading
    import time

    parent = int(os.environ.get(PARENT_ENV, "0") or 0)
    if not parent or parent == os.getpid() or _watching:
        return
    _watching.append(parent)

    def loop() -> None:
        while pid_alive(parent):
            time.sleep(period)
        os._exit(3)

    threading.Thread(target=loop, name="watch-parent", daemon=True).start()


def sweep_job(cfg: DictConfig, out: Path, adopt: tuple[str, ...] = (".hydra", "run.log")) -> dict | None:
    """One job of a sweep. Never raises (except on Ctrl-C): a failure is written to
    ``out/error.txt`` and reported by :class:`SweepSummary` once every job has returned, so one
    bad combination neither kills the parallel workers nor hides the other results."""
    watch_parent()
    if is_complete(out):
        print(f"skipping {out}: already complete{config_drift(cfg, out)}")
        try:
            if cfg.engine.charts:
                redraw_missing_charts(out)
        except Exception:  # noqa: BLE001 -- the results are complete; say why charts are missing
            print(f"charts of {out} failed:\n" + traceback.format_exc(), file=sys.stderr)
        return None
    if lock_holder(out):
        # A live worker (e.g. of a killed sweep) is still running this job: never run it twice.
        return _job_failed(out, f"config error: {out} is being written by {lock_holder(out)}; "
                                "re-run the sweep when it has finished", write=False)
    remove_listed(out, [ERROR_FILE])
    try:
        # Parallel jobs share the terminal: no progress bars.
        summary = run_experiment(config_to_dict(cfg), out, progress=False, dir_key="hydra.sweep.dir",
                                 adopt=(*adopt, ERROR_FILE))
    except RunCompletedMeanwhile:
        print(f"skipping {out}: completed by another process while this one started")
        return None
    except (ConfigError, OmegaConfBaseException) as err:
        return _job_failed(out, f"config error: {_one_line(err)}", write=not isinstance(err, RunDirBusy))
    except Exception:  # noqa: BLE001 -- any failure of one job is recorded, the sweep goes on
        return _job_failed(out, traceback.format_exc())
    try:
        if cfg.engine.charts:
            draw_charts(out, summary)
    except Exception:  # noqa: BLE001 -- the results are complete; `experiments.plot` redraws
        print(f"charts of {out} failed (redraw with python -m experiments.plot {out}):\n"
              + traceback.format_exc(), file=sys.stderr)
    print(f"done {out}: {summary['impressions']:,} impressions")
    return summary


def draw_charts(out: Path, summary: dict) -> list[Path]:
    """The run's charts and analyses, then ``charts/DONE`` (see :mod:`sim.outputs`)."""
    from experiments.plot import plot_run

    charts = plot_run(out) + run_analyses(summary["config"].get("experiment", {}).get("analyses") or [], out)
    mark_charts_done(out)
    return charts


def redraw_missing_charts(out: Path) -> None:
    """A complete run killed while its charts were drawn: draw them now (no re-simulation)."""
    if not charts_done(out):
        print(f"drawing the missing charts of {out}")
        draw_charts(out, json.loads((out / "metrics.json").read_text()))


def _job_failed(out: Path, message: str, write: bool = True) -> None:
    if write and ERROR_FILE not in foreign_entries(out):   # never replace a user's error.txt
        claim(out, [ERROR_FILE])
        atomic_write_text(out / ERROR_FILE, message.rstrip() + "\n")
    print(f"FAILED {out}: {message.strip().splitlines()[-1]}", file=sys.stderr)
    return None


def config_drift(cfg: DictConfig, out: Path) -> str:
    """A warning (or "") when a complete run's saved config differs from the composed one,
    e.g. a config file changed between two launches of the same sweep."""
    try:
        saved = yaml.safe_load((out / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return ""
    keys = sorted(_differing_keys(saved, config_to_dict(cfg)))
    if not keys:
        return ""
    shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
    return (f" (warning: its config.yaml differs from the current config in {shown}; "
            "delete the directory to re-run it)")


def _differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [k for key in sorted(set(a) | set(b), key=str)
                for k in _differing_keys(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix.rstrip(".")]


class SweepSummary(Callback):
    """Hydra callback: after a sweep, count complete and failed jobs, draw the sweep charts, and
    exit with status 1 if any job failed (so scripts and CI notice)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ[RESUME_ENV] = f"hydra.sweep.dir={config.hydra.sweep.dir}"     # for Ctrl-C's message

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        jobs = sorted(p.parent for p in sweep.glob("*/.hydra"))
        done = [j for j in jobs if is_complete(j)]
        failed = [j for j in jobs if not is_complete(j) and (j / ERROR_FILE).is_file()]
        print(f"\nsweep {sweep}: {len(done)} of {len(jobs)} runs complete, {len(failed)} failed")
        if done and not config.engine.charts:
            print(f"charts:  not drawn (engine.charts=false; python -m experiments.plot {sweep} draws them)")
        elif done:
            from experiments.plot import plot_sweep

            try:
                for chart in plot_sweep(sweep):
                    print(f"chart:   {chart}")
            except Exception:  # noqa: BLE001 -- the runs are safe on disk; say why charts are missing
                print("sweep charts failed:\n" + traceback.format_exc(), file=sys.stderr)
            print(f"report:  python -m experiments.report {sweep}")
        for j in failed:
            last = (j / ERROR_FILE).read_text().strip().splitlines()[-1]
            print(f"FAILED  {j.name}: {last}  (details: {j / ERROR_FILE})", file=sys.stderr)
        if failed:
            print("re-run the same command with hydra.sweep.dir=" + str(sweep)
                  + " to retry the failed runs (complete runs are skipped)", file=sys.stderr)
            sys.exit(1)


def remove_hydra_leftovers(out: Path, adopt: tuple[str, ...] = (".hydra", "run.log")) -> None:
    """Delete what Hydra wrote into ``out`` for this launch (``adopt``: ``.hydra/`` and its job
    log, unless they were there before), then ``out`` itself if empty. Nothing else."""
    for name in adopt:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.is_file():
            p.unlink(missing_ok=True)
    try:
        out.rmdir()
    except OSError:
        pass  # not empty: the user's files stay


def print_summary(summary: dict, out: Path, charts: list[Path]) -> None:
    from experiments.results import or_nan

    print(f"\nexperiment {summary['experiment']} (seed {summary['seed']}), "
          f"{summary['impressions']:,} impressions; control cell: {summary['control']}")
    print(f"{'cell':<16}{'CTR':>9}{'take fraction':>16}{'lift (95% CI)':>30}{'regret/1k':>11}"
          f"{'artwork gain':>14}")
    for name, c in summary["cells"].items():
        tf = or_nan(c["take_fraction"]["estimate"])
        lift = summary["lift"].get(name, {}).get("take_fraction")
        lift_s = (f"{lift['estimate']:+.1%} [{lift['ci_low']:+.1%}, {lift['ci_high']:+.1%}]"
                  if lift and lift["estimate"] is not None else "control")
        regret = c["regret_per_1k_impressions"]   # null when the cell had no impressions
        gain = c.get("artwork_gain", {}).get("estimate")   # true take over a random image's
        print(f"{name:<16}{or_nan(c['ctr']['estimate']):>9.3%}{tf:>16.3%}{lift_s:>30}"
              f"{or_nan(regret):>11.3f}{or_nan(gain):>+14.1%}")
    for path, why in summary.get("undefined", {}).items():
        print(f"undefined: {path} ({why})")
    from experiments.power_notes import mde_line, underpowered_notes
    notes = underpowered_notes(summary) or [line for line in [mde_line(summary)] if line]
    if notes:
        print("\n".join(notes))
    print(f"\nresults: {out}/metrics.json, {out}/timeseries.csv, logs in {out}/logs")
    print("charts:  " + (", ".join(str(c) for c in charts) if charts else
                         f"not drawn (engine.charts=false; python -m experiments.plot {out} draws them)"))


# ---- misspelt keys ---------------------------------------------------------------------------
_OWN_CONFIG_FLAGS = ("-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir")
#: Hydra flags whose value is the next argument (``-sc install=bash``, ``--cfg job``).
_FLAGS_WITH_VALUE = (*_OWN_CONFIG_FLAGS, "-sc", "--shell-completion", "-c", "--cfg", "-p", "--package",
                     "--info", "--experimental-rerun")
#: Flags after which nothing is run: no override needs checking (a completion query must answer fast).
_NOTHING_RUNS = ("-sc", "--shell-completion", "-h", "--help", "--hydra-help", "--info")


def overrides_of(argv: list[str]) -> list[str]:
    """The ``key=value`` overrides of a command line: flags and the values they take left out."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg.split("=")[0] in _FLAGS_WITH_VALUE and "=" not in arg
        else:
            out.append(arg)
    return out


def unknown_override(argv: list[str]) -> str | None:
    """One line refusing the first ``key=value`` override whose key is not in the composed config,
    naming the closest valid key (Hydra's own message names none); ``None`` if all are known.

    Group choices (``world=tiny``), appends (``+key``), deletions (``~key``) and ``hydra.*`` keys
    are Hydra's to check. Runs before Hydra creates a run directory, so nothing is left behind."""
    if any(a.split("=")[0] in (*_OWN_CONFIG_FLAGS, *_NOTHING_RUNS) for a in argv):
        return None
    argv = overrides_of(argv)
    groups = {p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir()} | set(config_store.GROUPS)
    choices, keys = [], []
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.partition("=")
        if key.split(".")[0].split("/")[0].lstrip("+~") == "hydra":
            continue
        if key.startswith(("+", "~")) or key in groups or "@" in key:
            choices.append(f"{key}={value.split(',')[0]}")
        else:
            keys.append((key, value))
    # Composing takes a quarter of a second; keys every config has (world.n_members,
    # engine.days ...) are known without it, whatever the group choices.
    if not any(c.startswith("~") for c in choices):
        keys = [(k, v) for k, v in keys if not config_store.always_present(k)]
    if not keys:
        return None
    try:
        with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = hydra.compose("config", overrides=choices)
    except Exception:  # noqa: BLE001 -- a bad group choice: Hydra's own message says which
        return None
    missing = object()
    for key, value in keys:
        if OmegaConf.select(cfg, key, default=missing, throw_on_resolution_failure=False) is not missing:
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent, default=None, throw_on_resolution_failure=False) if parent else cfg
        if isinstance(node, DictConfig):
            known = [str(k) for k in node.keys() if str(k) != "hydra"]
            hint = closest_text(leaf, known)
            hint = hint.replace("'", f"'{parent}.", 1) if hint and parent else hint
            allowed = f"unknown key{hint}; known keys of {parent or 'the config'}: {', '.join(known)}"
        else:
            allowed = f"unknown key{closest_text(key, _dotted_keys(cfg))}"
        return f"config error: {ConfigError(key, value, allowed)}"
    return None


def _dotted_keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, DictConfig):
        return []
    out = []
    for k in node.keys():
        path = f"{prefix}{k}"
        out.append(path)
        child = OmegaConf.select(node, str(k), throw_on_resolution_failure=False)
        out += _dotted_keys(child, path + ".")
    return out


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes", "on")


def preflight(argv: list[str]) -> str | None:
    """One line refusing what must be refused before Hydra creates any directory (``None`` if
    nothing is): names used in paths that would leave the output root, an explicit
    ``hydra.run.dir``/``hydra.sweep.dir`` that is a file, holds files this project did not write
    (without ``engine.overwrite=true``) or is being written by a live process."""
    if any(a.split("=")[0] in _NOTHING_RUNS for a in argv):
        return None
    multirun = any(a in ("-m", "--multirun") for a in argv)
    argv = overrides_of(argv)
    overwrite = False
    dirs = []
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.partition("=")
        key = key.lstrip("+")
        values = value.split(",") if multirun else [value]
        try:
            if key == "experiment.name":
                for v in values:
                    check_path_name(key, v.strip("'\""))
            elif multirun and not key.startswith("hydra."):
                # A job's directory is named by its overrides: no value may climb out of it.
                for v in values:
                    if ".." in v.replace("\\", "/").split("/") or "\0" in v:
                        raise ConfigError(key, v, "a value without '..' path components in a sweep "
                                          "(job directories are named by their overrides)")
        except ConfigError as err:
            return f"config error: {err}"
        if key == "engine.overwrite":
            overwrite = _truthy(value)
        if key in ("hydra.run.dir", "hydra.sweep.dir") and (key == "hydra.run.dir") != multirun:
            dirs.append((key, value))
    for key, value in dirs:
        out = Path(value)
        try:
            if out.exists() and not out.is_dir():
                raise RunDirError(key, value, "a directory (this path is an existing file)")
            if key == "hydra.run.dir":
                holder = lock_holder(out)
                if holder:
                    raise RunDirBusy(key, value, f"a directory no other run is writing to: {holder} "
                                     "holds its lock; wait for it to finish")
                foreign = set(foreign_entries(out))
                # Only Hydra's files (a launch killed before the run wrote anything): Hydra's again.
                hydra_only = foreign <= set(HYDRA_ENTRIES)
                if not is_complete(out) and not hydra_only:
                    check_run_dir(out, overwrite, key)
                _PREEXISTING[str(out)] = foreign - set(HYDRA_ENTRIES) if hydra_only else foreign
        except ConfigError as err:
            return f"config error: {err}"
    return None


@contextlib.contextmanager
def mode_probe_skipped(argv: list[str]):
    """Inside: Hydra skips the composition it does only to read ``hydra.mode``.

    Before running, Hydra composes the whole config once just to read ``hydra.mode`` (a config
    may ask for a multirun without ``-m``), then composes it again to run: about 0.2 s of every
    command's start-up. Neither ``configs/`` nor the schema sets ``hydra.mode`` (a test checks
    every experiment), so unless the command line sets it or brings its own config, the answer
    is "not set", which Hydra handles from ``-m``/``--multirun`` as usual."""
    from hydra._internal.hydra import Hydra

    keys = {a.split("=")[0].lstrip("+~") for a in argv}
    if "hydra.mode" in keys or keys & set(_OWN_CONFIG_FLAGS) or not hasattr(Hydra, "get_mode"):
        yield
        return
    probe = Hydra.get_mode
    Hydra.get_mode = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        Hydra.get_mode = probe


#: The start of what ``homesim`` prints when Ctrl-C stops it (:func:`interrupted_message`).
INTERRUPTED = "interrupted: runs that had not finished are not marked complete"


#: Environment variable holding the override that names this command's run or sweep directory,
#: once Hydra has composed it (Hydra resets its own config when a job ends). The environment, not
#: a module global: under ``python -m`` Hydra's callback runs in a second copy of this module.
RESUME_ENV = "SIM_RUN_RESUME"


def resume_override(hc) -> str:
    """``hydra.sweep.dir=<dir>`` in a sweep, ``hydra.run.dir=<dir>`` in a single run."""
    if hc.mode == RunMode.MULTIRUN:
        return f"hydra.sweep.dir={hc.sweep.dir}"
    return f"hydra.run.dir={hc.run.dir}"


def interrupted_message() -> str:
    """One line for Ctrl-C: nothing unfinished looks complete (``metrics.json`` is renamed into
    place last), and the directory to name so that the same command finishes the job (the
    default directories are named by the second the command started)."""
    resume = os.environ.get(RESUME_ENV)     # set by main() and, for a sweep, SweepSummary
    if not resume:
        return f"{INTERRUPTED}; nothing had started"
    return f"{INTERRUPTED}; run the same command with {resume} to finish them (complete runs are skipped)"


def cli() -> None:
    """The ``homesim`` console command (and ``python -m experiments.run``): refuse what must be
    refused before Hydra creates a directory, then compose and run. ``--help`` lists the config
    groups, options and most used keys (:mod:`experiments.cli_help`); ``-sc install=bash``
    prints Hydra's bash completion script for ``homesim``. Ctrl-C prints one line
    (:func:`interrupted_message`) instead of a traceback."""
    os.environ[PARENT_ENV] = str(os.getpid())    # inherited by sweep workers (watch_parent)
    os.environ.pop(RESUME_ENV, None)             # not a parent command's
    try:
        refused = unknown_override(sys.argv[1:]) or preflight(sys.argv[1:])
        if refused:
            print(refused, file=sys.stderr)
            sys.exit(2)
        with mode_probe_skipped(sys.argv[1:]):
            main()
    except KeyboardInterrupt:
        print(interrupted_message(), file=sys.stderr)
        exit_by_sigint()


if __name__ == "__main__":
    cli()
