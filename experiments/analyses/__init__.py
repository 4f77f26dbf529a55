"""Experiment-specific analyses of a finished run directory.

Each module has ``analyze(run_dir) -> list[Path]`` (the charts and tables it wrote) and a command
line: ``python -m experiments.analyses.<name> <run dir>``. An experiment config names its
analyses in ``experiment.analyses``; ``experiments.run`` runs them after the simulation.
"""
from __future__ import annotations

import importlib
from pathlib import Path



def run_analyses(names: list[str], run_dir: Path) -> list[Path]:
    out: list[Path] = []
    for name in names:
        out += importlib.import_module(f"experiments.analyses.{name}").analyze(Path(run_dir))
    return out
