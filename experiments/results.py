"""Read run and sweep directories into plain tables (for charts and reports).

A *run directory* holds ``metrics.json`` (see :mod:`sim.outputs`); a *sweep directory* holds one
run directory per job (Hydra names each after the job's overrides, e.g. ``policy=ucb1,seed=3``)
and ``multirun.yaml``. The swept parameters are read from each job's ``.hydra/overrides.yaml``
(or, for runs written without Hydra, from the keys where the runs' configs differ). ``seed`` is
the replicate: intervals across runs are taken over seeds.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sim.logs import read_impressions


def or_nan(value) -> float:
    """A number of metrics.json, where undefined numbers are written as null: NaN for null."""
    return float("nan") if value is None else float(value)
from sim.metrics import Z95, metric_class
from sim.outputs import is_complete

REPLICATE_KEY = "seed"
POLICY_KEY = "policy"


@dataclass
class Run:
    """One complete run directory."""

    path: Path
    metrics: dict
    overrides: dict[str, str]     # the job's command-line overrides, key -> value as typed

    @property
    def config(self) -> dict:
        return self.metrics.get("config", {})

    @property
    def focal_cell(self) -> str:
        """The cell running the experiment's ``policy`` (the policy under test): the cell named
        like ``policy.name``, else the last non-control cell, else the only cell."""
        cells = list(self.metrics["cells"])
        name = (self.config.get("policy") or {}).get("name")
        if name in cells:
            return name
        others = [c for c in cells if c != self.metrics["control"]]
        return others[-1] if others else cells[0]


def is_run_dir(path: Path | str) -> bool:
    return (Path(path) / "metrics.json").is_file()


def load_run(path: Path | str) -> Run:
    path = Path(path)
    metrics = json.loads((path / "metrics.json").read_text())
    return Run(path, metrics, read_overrides(path))


def read_overrides(run_dir: Path) -> dict[str, str]:
    """``.hydra/overrides.yaml`` as {key: value}; {} when the run was not launched by Hydra."""
    try:
        lines = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
    except (OSError, yaml.YAMLError):
        return {}
    out = {}
    for line in lines:
        key, _, value = str(line).partition("=")
        out[key.lstrip("+~")] = value
    return out


def find_runs(sweep_dir: Path | str) -> list[Run]:
    """Complete run directories one or two levels below ``sweep_dir``, in name order."""
    sweep_dir = Path(sweep_dir)
    paths = sorted({p.parent for pattern in ("*/metrics.json", "*/*/metrics.json")
                    for p in sweep_dir.glob(pattern)})
    return [load_run(p) for p in paths if is_complete(p)]


def analysis_runs(path: Path | str) -> list[Path]:
    """The run directories an analysis reads: ``path`` itself if it is a run, else the complete
    runs below it (a sweep). Exits with a message when there is none."""
    path = Path(path)
    runs = [path] if is_run_dir(path) else [r.path for r in find_runs(path)]
    if not runs:
        raise SystemExit(f"error: no run (metrics.json) in or below {path}")
    return runs


def mean_se(x: list[float]) -> tuple[float, float]:
    """Mean and standard error over seeds of the finite values (SE NaN with fewer than two)."""
    a = np.asarray(x, np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else float("nan")


def swept_parameters(runs: list[Run]) -> list[str]:
    """Keys that take more than one value across ``runs`` (``seed`` included), sorted."""
    if all(r.overrides for r in runs):
        table = [r.overrides for r in runs]
    else:
        table = [_flat_config(r.config) for r in runs]
    keys = sorted({k for row in table for k in row})
    return [k for k in keys if len({str(row.get(k)) for row in table}) > 1]


def parameter_value(run: Run, key: str) -> str:
    """The value of a swept key in ``run`` (as typed on the command line when known)."""
    if key in run.overrides:
        return run.overrides[key]
    return str(_flat_config(run.config).get(key))


def _flat_config(config: dict) -> dict[str, Any]:
    """Leaves of a config as dotted keys; the policy group collapses to its name, and the
    experiment's cells (derived from the policy) are left out."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix.rstrip(".")] = node if not isinstance(node, list) else str(node)

    walk({k: v for k, v in config.items() if k != "policy"}, "")
    policy = config.get("policy") or {}
    out[POLICY_KEY] = policy.get("name", policy.get("_target_"))
    for k, v in policy.items():
        if k not in ("name", "_target_"):
            out[f"{POLICY_KEY}.{k}"] = v
    return {k: v for k, v in out.items() if not k.startswith("experiment.cells")}


def interval_metrics(metrics: dict) -> list[str]:
    """Names of the metrics a ``metrics.json`` reports with a 95 % interval, in its order (every
    registered :class:`sim.metrics.Metric` with ``interval``, also one this process cannot import)."""
    cell = next(iter(metrics["cells"].values()), {})
    return [k for k, v in cell.items() if isinstance(v, dict) and "se" in v]


def metric_label(name: str) -> str:
    """The metric table's label of ``name`` ("take fraction"); the name in words if unknown."""
    cls = metric_class(name)
    return cls.label if cls is not None else name.replace("_", " ")


def metric_is_percent(name: str) -> bool:
    """Whether the metric table shows ``name`` as a percentage (unknown metrics: plain numbers)."""
    cls = metric_class(name)
    return bool(cls is not None and cls.percent)


def lift_se(lift: dict) -> float:
    """Standard error of log(1 + lift) recovered from a 95 % interval."""
    lo, hi = lift.get("ci_low"), lift.get("ci_high")
    if lo is None or hi is None or lo <= -1 or hi <= -1:
        return float("nan")
    return (math.log1p(hi) - math.log1p(lo)) / (2 * Z95)


def sweep_table(runs: list[Run], params: list[str] | None = None) -> list[dict]:
    """One row per run: swept parameters, the focal cell, its metrics (every metric with an
    interval: estimate and standard error) and their lifts."""
    params = swept_parameters(runs) if params is None else params
    rows = []
    for r in runs:
        cell = r.focal_cell
        c = r.metrics["cells"][cell]
        row: dict[str, Any] = {"run": r.path.name, **{k: parameter_value(r, k) for k in params},
                               "cell": cell, "control": r.metrics["control"],
                               "impressions": c["impressions"], "members": c["members"]}
        names = interval_metrics(r.metrics)
        for metric in names:
            row[metric] = c[metric]["estimate"]
            row[f"{metric}_se"] = c[metric]["se"]
        lift = r.metrics.get("lift", {}).get(cell)
        for metric in names:
            m = (lift or {}).get(metric) or {}
            row[f"lift_{metric}"] = m.get("estimate")
            row[f"lift_{metric}_ci_low"] = m.get("ci_low")
            row[f"lift_{metric}_ci_high"] = m.get("ci_high")
            row[f"lift_{metric}_p_value"] = m.get("p_value")
        rows.append(row)
    return rows


@dataclass
class Point:
    """A mean over runs with a 95 % interval and how the interval was obtained."""

    mean: float
    low: float
    high: float
    n_seeds: int
    method: str          # "seeds" (t interval across seeds) or "run" (the runs' own intervals)


def aggregate(values: list[float], ses: list[float], seeds: list[str]) -> Point:
    """Mean of ``values`` (one per run) with a 95 % interval.

    Runs with the same seed are first averaged (they differ in parameters not on this axis);
    with two or more seeds the interval is the t interval of the mean across seeds, which
    covers everything that changes with the seed (world, members, visits). With one seed it
    comes from the runs' own standard errors (per-member delta method).
    """
    by_seed: dict[str, list[int]] = {}
    for i, s in enumerate(seeds):
        if values[i] is not None and math.isfinite(values[i]):
            by_seed.setdefault(s, []).append(i)
    if not by_seed:
        return Point(float("nan"), float("nan"), float("nan"), 0, "none")
    means = np.array([np.mean([values[i] for i in idx]) for idx in by_seed.values()])
    n = means.size
    if n >= 2:
        from scipy import stats as st    # here, not at the top: ~0.2 s of every chart command's start-up

        mean, half = float(means.mean()), float(st.t.ppf(0.975, n - 1) * means.std(ddof=1) / math.sqrt(n))
        return Point(mean, mean - half, mean + half, n, "seeds")
    idx = next(iter(by_seed.values()))
    mean = float(np.mean([values[i] for i in idx]))
    se = math.sqrt(sum(ses[i] ** 2 for i in idx)) / len(idx)
    return Point(mean, mean - Z95 * se, mean + Z95 * se, 1, "run")


def paired_differences(rows: list[dict], key: str, metric: str) -> dict | None:
    """For a swept key with exactly two values, the difference of ``metric`` between them,
    paired by seed and by every other swept value: mean and 95 % t interval across pairs.

    Returns None unless the key has two values and at least two pairs exist."""
    levels = sorted({r[key] for r in rows})
    if len(levels) != 2:
        return None
    others = [k for k in rows[0] if k not in (key, "run") and k in _param_columns(rows)]
    groups: dict[tuple, dict[str, float]] = {}
    for r in rows:
        if r.get(metric) is None:
            continue
        groups.setdefault(tuple(r[k] for k in others), {})[r[key]] = r[metric]
    diffs = np.array([g[levels[1]] - g[levels[0]] for g in groups.values() if len(g) == 2])
    if diffs.size < 2:
        return None
    from scipy import stats as st

    mean = float(diffs.mean())
    half = float(st.t.ppf(0.975, diffs.size - 1) * diffs.std(ddof=1) / math.sqrt(diffs.size))
    p = float(st.ttest_1samp(diffs, 0.0).pvalue)
    return {"key": key, "metric": metric, "from": levels[0], "to": levels[1], "n_pairs": int(diffs.size),
            "mean": mean, "ci_low": mean - half, "ci_high": mean + half, "p_value": p}


def _param_columns(rows: list[dict]) -> set[str]:
    """The swept-parameter columns of :func:`sweep_table` rows (they come first, after ``run``)."""
    out, keys = set(), list(rows[0])
    for k in keys[1:]:
        if k == "cell":
            break
        out.add(k)
    return out


def read_log(run_dir: Path | str, columns: list[str]) -> tuple[dict[str, np.ndarray], list[str]] | None:
    """Columns of a run's impression log (:func:`sim.logs.read_impressions`) as NumPy arrays, with
    ``cell`` as integer codes into the returned list of cell names; None when the run wrote no log."""
    try:
        log = read_impressions(run_dir, sorted(set(columns) | {"cell"}))
    except FileNotFoundError:
        return None
    out = {k: log[k].to_numpy() for k in columns if k != "cell"}
    out["cell"] = log["cell"].cat.codes.to_numpy().astype(np.int32)
    return out, list(log["cell"].cat.categories)
