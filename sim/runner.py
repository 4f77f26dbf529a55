"""Run an experiment from a plain config dict and write its run directory (no Hydra here).

    from sim.runner import run_experiment
    summary = run_experiment({"world": {"name": "tiny", "n_members": 400}, "engine": {"days": 2}},
                             "runs/demo")
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from sim.config import EXECUTION_KEYS, experiment_config_from_dict
from sim.engine import Simulation
from sim.features import context_names
from sim.logs import LogTarget
from sim.outputs import (RUN_OUTPUTS, atomic_write_text, clear_run_outputs, is_complete, provenance,
                         write_csv, write_json)
from sim.progress import make_progress
from sim.rundir import RunLock, check_run_dir, claim


class RunCompletedMeanwhile(Exception):
    """Another process completed the run directory between this run's start and its lock: this
    run writes nothing (the caller reports it as skipped)."""


def results_config(config: Mapping[str, Any]) -> dict:
    """The config without the engine's execution keys (backend, shards, ...): they do not
    change results, so metrics.json is the same wherever and however the run executed
    (config.yaml keeps them)."""
    out = dict(config)
    if isinstance(out.get("engine"), Mapping):
        out["engine"] = {k: v for k, v in out["engine"].items() if k not in EXECUTION_KEYS}
    return out


def run_experiment(config: Mapping[str, Any], out_dir: Path | str, progress: bool | None = None,
                   dir_key: str = "out_dir", adopt: tuple[str, ...] = ()) -> dict:
    """Validate ``config``, simulate, and write the run directory. Returns metrics.json's dict.

    Raises :class:`sim.config.ConfigError` before anything is simulated or written if the
    config is invalid, if ``out_dir`` holds files this project did not write (unless
    ``engine.overwrite``), if the memory estimate exceeds the limit, or if another live process
    is writing ``out_dir`` (:mod:`sim.rundir`). ``dir_key`` names the directory in messages;
    ``adopt`` lists entries the caller wrote there (Hydra's ``.hydra`` and job log).
    """
    from sim.memory import check_memory

    cfg = experiment_config_from_dict(config)
    out = Path(out_dir)
    complete_before = is_complete(out)
    check_run_dir(out, cfg.engine.overwrite, dir_key, adopt)
    check_memory(cfg)
    log = None
    if cfg.engine.log_impressions:      # the shards' writers touch the disk only when they write
        log = LogTarget.for_run(out, context_names(cfg.world.n_genres, cfg.world.countries),
                                cfg.engine.log_chunk_rows)
    sim = Simulation(cfg, log)  # validates policies and builds the world before touching disk
    lock = RunLock(out, dir_key)           # a second writer is refused; released on any exit
    try:
        check_run_dir(out, cfg.engine.overwrite, dir_key, adopt)   # again, now that we hold the lock
        if is_complete(out) and not complete_before:
            # Another writer finished it while this run started (it held the lock then): never
            # replace a result that appeared under our feet.
            raise RunCompletedMeanwhile(str(out))
        claim(out, (*RUN_OUTPUTS, *adopt))
        # A previous, interrupted or failed attempt: its Parquet parts, charts and temporary
        # files would mix with (or outnumber) this attempt's.
        clear_run_outputs(out)
        return _simulate_and_write(cfg, config, sim, out, progress)
    finally:
        lock.release()


def _simulate_and_write(cfg, config: Mapping[str, Any], sim: Simulation, out: Path,
                        progress: bool | None) -> dict:
    atomic_write_text(out / "config.yaml", yaml.safe_dump(dict(config), sort_keys=False))
    show = cfg.engine.progress if progress is None else progress
    update, close = make_progress(sim.horizon, show)
    try:
        summary = sim.run(update)
    finally:
        close()
    run_info = summary.pop("run")
    write_csv(out / "timeseries.csv", sim.metrics.time_series())
    write_json(out / "run_info.json", run_info)
    result = {"experiment": cfg.name, "control": cfg.control, "complete": True,
              **provenance(results_config(config), cfg.seed), **summary,
              "propensity_estimated": run_info["propensity_estimated"],
              "impressions": run_info["impressions"], "visits": run_info["visits"]}
    write_json(out / "metrics.json", result)   # last: the completion marker
    return result
