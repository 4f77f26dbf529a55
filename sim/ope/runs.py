"""Opening a run directory for off-policy evaluation: its config, world and visit contexts.

The world of a run is a deterministic function of its config and seed, so it is rebuilt rather
than stored: the catalog (observable: artwork pools and themes) for exporting logs, and the whole
world (with the hidden response model) for computing ground truth. The observable member context
of each visit (what a contextual policy saw) is read back from the run's ``visit_context/`` log;
the impression log itself is read by :func:`sim.logs.read_impressions` (``time_order=True`` for
OPE, which splits logs by time).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml

from sim.schema import ConfigError
from sim.config import ExperimentConfig, experiment_config_from_dict
from sim.features import impression_context
from sim.streams import generator
from sim.world import Catalog, World, build_world, draw_catalog


def run_config(run_dir: Path | str) -> ExperimentConfig:
    """The validated config of a run directory (from its ``config.yaml``)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
    try:
        d = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        mark = getattr(err, "problem_mark", None)
        raise ValueError(f"{path} is not a valid config.yaml (it does not parse"
                         f"{f' at line {mark.line + 1}' if mark is not None else ''})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path} is not a valid config.yaml (it holds a {type(d).__name__}, not a mapping)")
    try:
        return experiment_config_from_dict(d)
    except ConfigError as err:
        raise ConfigError(err.key, err.value, f"{err.allowed} (in {path})") from None


def run_catalog(cfg: ExperimentConfig) -> Catalog:
    """The run's catalog without drawing members (it is the first thing the world stream draws)."""
    return draw_catalog(cfg.world, cfg.engine.days * 1440.0, generator(cfg.seed, "world"))[0]


def run_world(cfg: ExperimentConfig, blocks: range | None = None) -> World:
    """The run's world, ground truth included (as it was before the first visit): every member,
    or the members of ``blocks`` only (``range(0)``: the catalog and the response model, no member)."""
    return build_world(cfg.world, cfg.seed, cfg.engine.days * 1440.0, cfg.engine.member_block, blocks)


@dataclass
class VisitContexts:
    """Observable member context of every logged visit (``visit_context/`` of a run).

    ``visit`` (v,) sorted ids, ``context`` (v, d) float32 in :mod:`sim.features` layout (the
    per-title ``familiar`` slot is 0), ``names`` (d,).
    """

    visit: np.ndarray
    context: np.ndarray
    names: list[str]

    def for_impressions(self, visit: np.ndarray, familiar: np.ndarray, n_genres: int) -> np.ndarray:
        """Context of each impression (n, d): its visit's context with the title's ``familiar``."""
        rows = np.searchsorted(self.visit, visit)
        rows = np.minimum(rows, max(self.visit.size - 1, 0))
        missing = (self.visit.size == 0) | (self.visit[rows] != visit)
        if np.any(missing):
            raise ValueError(f"{int(np.sum(missing))} impressions have no logged visit context")
        return impression_context(self.context, rows, familiar, n_genres)


def read_visit_contexts(source: Path | str) -> VisitContexts | None:
    """The run's visit contexts, or None if the run did not log them."""
    source = Path(source)
    path = source / "visit_context" if (source / "visit_context").is_dir() else None
    if path is None or not any(path.glob("*.parquet")):
        return None
    table = pq.read_table(path)
    d = table.schema.field("context").type.list_size
    ctx = table.column("context").combine_chunks().flatten().to_numpy().reshape(-1, d)
    visit = table.column("visit").to_numpy()
    order = np.argsort(visit, kind="stable")
    meta = table.schema.metadata or {}
    names = meta.get(b"context_names", b"").decode().split(",") if b"context_names" in meta else []
    return VisitContexts(visit[order], ctx[order].astype(np.float32), names or [f"x{j}" for j in range(d)])
