"""Run a configured experiment: ``python -m experiments.run [overrides]``.

Examples::

    python -m experiments.run                                   # default experiment
    python -m experiments.run world=tiny engine.days=3 policy=ucb1
    python -m experiments.run -m policy=thompson,epsilon_greedy seed=0,1,2   # sweep

Writes a run directory (see :mod:`sim.outputs`) and its charts, and prints where they are.
A run whose directory already holds a complete result is skipped (so an interrupted sweep can be
re-run); a bad config value is refused before anything is simulated, and nothing is left behind.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sim.config import ConfigError
from sim.outputs import is_complete
from sim.runner import run_experiment

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


def config_to_dict(cfg: DictConfig) -> dict:
    """Resolved plain dict of a composed config, without Hydra's own node."""
    d = OmegaConf.to_container(cfg, resolve=True)
    d.pop("hydra", None)
    return d


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> dict | None:
    out = Path(HydraConfig.get().runtime.output_dir)
    if is_complete(out):
        print(f"skipping {out}: already complete")
        return None
    try:
        summary = run_experiment(config_to_dict(cfg), out)
    except (ConfigError, OmegaConfBaseException) as err:
        # Nothing was simulated: remove what Hydra put in the run directory (and the directory,
        # if that leaves it empty) so that no half result remains. Never touch other files.
        remove_hydra_leftovers(out)
        print(f"config error: {err}", file=sys.stderr)
        sys.exit(2)
    from experiments.plot import plot_run

    charts = plot_run(out)
    print_summary(summary, out, charts)
    return summary


def remove_hydra_leftovers(out: Path) -> None:
    """Delete ``.hydra/`` and Hydra's job log from ``out``, then ``out`` itself if empty."""
    shutil.rmtree(out / ".hydra", ignore_errors=True)
    for log in out.glob("*.log"):
        log.unlink(missing_ok=True)
    try:
        out.rmdir()
    except OSError:
        pass  # not empty: the user's files stay


def print_summary(summary: dict, out: Path, charts: list[Path]) -> None:
    print(f"\nexperiment {summary['experiment']} (seed {summary['seed']}), "
          f"{summary['impressions']:,} impressions; control cell: {summary['control']}")
    print(f"{'cell':<16}{'CTR':>9}{'take fraction':>16}{'lift (95% CI)':>30}{'regret/1k':>11}")
    for name, c in summary["cells"].items():
        tf = c["take_fraction"]["estimate"] or float("nan")
        lift = summary["lift"].get(name, {}).get("take_fraction")
        lift_s = (f"{lift['estimate']:+.1%} [{lift['ci_low']:+.1%}, {lift['ci_high']:+.1%}]"
                  if lift and lift["estimate"] is not None else "control")
        print(f"{name:<16}{(c['ctr']['estimate'] or float('nan')):>9.3%}{tf:>16.3%}{lift_s:>30}"
              f"{c['regret_per_1k_impressions']:>11.3f}")
    print(f"\nresults: {out}/metrics.json, {out}/timeseries.csv, logs in {out}/logs")
    print("charts:  " + ", ".join(str(c) for c in charts))


if __name__ == "__main__":
    main()
