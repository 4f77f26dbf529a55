"""Writing a run directory: atomic files, provenance, completion marker.

Layout of a run directory::

    config.yaml         resolved configuration
    metrics.json        summary with confidence intervals, provenance, "complete": true
    run_info.json       wall time and throughput (not part of the deterministic results)
    timeseries.csv      per (time bucket, cell) counts, rates, cumulative regret
    logs/part-*.parquet impression log
    charts/*.png

Every file is written to a temporary name and renamed, so a run killed at any moment leaves
either complete files or none; ``metrics.json`` is written last and is the completion marker.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import sim


def atomic_write_text(path: Path | str, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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
