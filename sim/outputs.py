"""Writing a run directory: atomic files, provenance, completion marker.

Layout of a run directory::

    config.yaml         resolved configuration
    metrics.json        summary with confidence intervals, provenance, "complete": true
    run_info.json       wall time and throughput (not part of the deterministic results)
    timeseries.csv      per (time bucket, cell) counts, rates, cumulative regret
    logs/part-*.parquet impression log
    visit_context/part-*.parquet  per-visit member context
    charts/*.png        drawn by experiments.plot after metrics.json; charts/DONE when all are

Every file is written to a temporary name (``*.tmp``) and renamed, so a run killed at any moment
leaves complete files or none; ``metrics.json`` is the last result written and is the completion
marker: a directory whose ``metrics.json`` says ``"complete": true`` holds every result of the
run, and no other directory has a ``metrics.json`` at all. A new attempt in a directory first
removes a previous attempt's outputs (:func:`clear_run_outputs`) -- only entries the directory's
manifest lists as written by this project (:mod:`sim.rundir`); a directory holding anything else
is refused unless ``engine.overwrite=true``. Temporary names carry the writer's process id and a
random suffix, so two writers never share one.

Numbers that are undefined (a cell without impressions, a lift over a rate of zero, a standard
error from one member) are written as ``null`` -- never NaN or inf -- and ``metrics.json``'s
``undefined`` maps each such metric (``cells.<cell>.<metric>``, ``lift.<cell>.<metric>``) to the
reason.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import sim


#: Suffix of files being written; a killed run may leave them behind, a re-run removes them.
TMP_SUFFIX = ".tmp"


def tmp_name(path: Path) -> Path:
    """A temporary name next to ``path`` that no other writer uses: ``<name>.<pid>-<hex>.tmp``."""
    return path.with_name(f"{path.name}.{os.getpid()}-{os.urandom(4).hex()}{TMP_SUFFIX}")


@contextlib.contextmanager
def _removed_unless_renamed(tmp: Path):
    """Remove ``tmp`` if the write through it fails or is interrupted (Ctrl-C: KeyboardInterrupt),
    so that only SIGKILL can leave one behind (a re-run of the run directory removes those)."""
    try:
        yield
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    with _removed_unless_renamed(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def atomic_savefig(fig: Any, path: Path | str, **kwargs: Any) -> Path:
    """``fig.savefig(path)`` through a temporary name, so a killed run never leaves a truncated
    PNG that looks like a chart. (Takes the figure, so ``sim`` never imports matplotlib.)"""
    path = Path(path)
    tmp = tmp_name(path)
    with _removed_unless_renamed(tmp):
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **kwargs)
        os.replace(tmp, path)
    return path


#: Written into ``charts/`` once every chart of a run is drawn. Charts are drawn after
#: ``metrics.json`` (they read it), so a run killed while drawing is complete but lacks charts;
#: ``experiments.run`` redraws them when it finds a complete run without this marker.
CHARTS_DONE = "DONE"


def charts_done(run_dir: Path | str) -> bool:
    return (Path(run_dir) / "charts" / CHARTS_DONE).is_file()


def mark_charts_done(run_dir: Path | str) -> None:
    atomic_write_text(Path(run_dir) / "charts" / CHARTS_DONE, "")


#: What a run writes; a new attempt in the same directory removes a previous attempt's copies
#: first (they would otherwise mix with the new results: old Parquet parts, old charts).
RUN_OUTPUTS = ("metrics.json", "run_info.json", "timeseries.csv", "config.yaml", "logs",
               "visit_context", "charts")


def clear_run_outputs(run_dir: Path | str) -> None:
    """Remove a previous (interrupted or failed) attempt's outputs and temporary files from
    ``run_dir``: only those its manifest lists (:mod:`sim.rundir`). ``metrics.json`` goes first,
    so that the directory never looks complete while the rest is being replaced. Hydra's
    ``.hydra/``, its job log and every unlisted file stay."""
    from sim.rundir import remove_listed

    remove_listed(run_dir, RUN_OUTPUTS)


def _clean(obj: Any) -> Any:
    """NaN/inf -> None so that metrics.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item"):  # numpy scalar
        return _clean(obj.item())
    return obj


def write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_clean(obj), indent=2) + "\n")


def write_csv(path: Path | str, rows: list[dict]) -> None:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.10g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def write_frame(path: Path | str, frame: Any) -> None:
    """A pandas DataFrame as CSV without its index (``frame.to_csv(path, index=False)``'s bytes),
    written whole or not at all."""
    atomic_write_text(path, frame.to_csv(index=False, lineterminator="\n"))


def git_commit() -> str | None:
    """The checkout's commit, when the package runs from a git work tree."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(sim.__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def is_complete(run_dir: Path | str) -> bool:
    """True if ``run_dir`` holds a finished run (metrics.json marked complete)."""
    p = Path(run_dir) / "metrics.json"
    try:
        return bool(json.loads(p.read_text()).get("complete"))
    except (OSError, ValueError):
        return False


def provenance(config_dict: dict, seed: int) -> dict:
    return {"package_version": sim.__version__, "git_commit": git_commit(), "seed": seed,
            "config": config_dict}
