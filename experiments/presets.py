"""Which named presets an experiment selects, and a note when the command line replaces one.

An experiment that needs a particular world (size, density) selects a named world preset in
its defaults list (``- override /world: feedback_loop``, a file under ``configs/world/``)
instead of restating world keys, so a user's ``world=tiny`` replaces the preset as a whole:
the run is the size its world's name says. The experiment's own treatment keys (a clickbait
appeal, a launch share, an artwork-change penalty) stay in the experiment file and apply to any
world. The replacement is never silent: :func:`preset_notes` names it, and ``homesim`` prints it
before the run starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def experiment_presets(experiment: str, config_dir: Path = CONFIG_DIR) -> dict[str, str]:
    """``{group: option}`` the experiment's defaults list selects (``override /world: x``)."""
    path = Path(config_dir) / "experiment" / f"{experiment}.yaml"
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    out = {}
    for entry in data.get("defaults") or []:
        if isinstance(entry, dict):
            for key, option in entry.items():
                group = str(key).removeprefix("override").strip().lstrip("/")
                if option is not None:
                    out[group] = str(option)
    return out


def command_line_choices(overrides: Iterable[str]) -> dict[str, str]:
    """``{group: option}`` of the group choices among command-line overrides (``world=tiny``)."""
    out = {}
    for arg in overrides:
        key, sep, value = str(arg).partition("=")
        if sep and "." not in key and not key.startswith("~"):
            out[key.lstrip("+")] = value
    return out


def preset_notes(choices: Mapping[str, str], overrides: Iterable[str],
                 config_dir: Path = CONFIG_DIR) -> list[str]:
    """One line per preset of the chosen experiment that a command-line choice replaces.

    ``choices``: Hydra's resolved group choices (``hydra.runtime.choices``); ``overrides``:
    the command-line overrides (``hydra.overrides.task``)."""
    experiment = choices.get("experiment")
    if not experiment:
        return []
    given = command_line_choices(overrides)
    notes = []
    for group, option in experiment_presets(experiment, config_dir).items():
        mine = given.get(group)
        if mine is not None and mine != option:
            notes.append(f"note: {group}={mine} (command line) replaces experiment={experiment}'s "
                         f"{group} preset '{option}' (configs/{group}/{option}.yaml)")
    return notes
