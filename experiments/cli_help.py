"""``homesim --help``: the config groups, their options and the keys users type most.

Generated, never hand-maintained: an option's one-line description is the first sentence of
its YAML file's leading comment (``configs/<group>/<option>.yaml``) or, for a registered class
(policies, rankers, response models), of its docstring; a key's line is its declaration in the
schema (default, allowed values, doc). Only the *names* of the most used keys are chosen here
(:data:`MOST_USED_KEYS`); a test checks each is a key of the composed config.

Hydra prints the help from ``configs/hydra/help/homesim.yaml``, whose template calls the
``homesim_help`` resolver registered on import of this module.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from omegaconf import OmegaConf

from sim.config import EngineConfig, ExperimentConfig, ExperimentSection, WorldConfig
from sim.schema import describe, hyperparameters

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

#: Keys shown under "most used keys" (their doc, default and range come from the schema).
MOST_USED_KEYS = (
    "seed", "engine.days", "engine.retrain_hours", "engine.ranker_retrain_hours", "engine.window_minutes",
    "engine.log_impressions", "engine.backend", "engine.shards", "engine.progress",
    "world.n_members", "world.n_titles", "world.visits_per_day", "world.launch_share",
    "world.response.name", "policy.reward", "ranker.rows", "ranker.columns",
    "experiment.control", "experiment.ranker_scope",
)

#: Groups in the order the help lists them, and what choosing in each means.
GROUP_ROLES = {
    "experiment": "what is compared: cells (policy, share, ranker) in one world",
    "world": "who watches and what: members, titles, artworks",
    "world/response": "how members respond to a page",
    "policy": "the artwork policy under test (policy=...)",
    "ranker": "how the homepage is laid out",
    "engine": "the simulation clock and cadences",
}


def first_sentence(text: str, limit: int = 88) -> str:
    """The first sentence of the first paragraph of ``text``, on one line, at most ``limit`` long
    (cut at a word, marked with an ellipsis)."""
    para = re.split(r"\n\s*\n", text.strip(), maxsplit=1)[0] if text.strip() else ""
    flat = " ".join(para.replace("``", "").split())
    m = re.search(r"(?<!e\.g\.)(?<!i\.e\.)(?<=[.!?])\s", flat)
    sentence = flat[:m.start()] if m else flat
    if len(sentence) <= limit:
        return sentence
    return sentence[:limit].rsplit(" ", 1)[0].rstrip(",;:(") + " …"


def yaml_description(path: Path) -> str:
    """The first sentence of the leading comment of a YAML file (``# @package`` lines skipped)."""
    lines = []
    for line in path.read_text().splitlines():
        s = line.strip()
        if not s.startswith("#"):
            break
        if s.startswith("# @package"):
            continue
        lines.append(s.lstrip("#").strip())
    return first_sentence("\n".join(lines))


def _registries() -> dict:
    from experiments.config_store import GROUPS

    return GROUPS


def group_options(config_dir: Path = CONFIG_DIR) -> dict[str, list[tuple[str, str]]]:
    """``{group: [(option, one-line description), ...]}`` for every config group users choose."""
    registries = _registries()
    out: dict[str, list[tuple[str, str]]] = {}
    for group in GROUP_ROLES:
        options: dict[str, str] = {}
        registry = registries.get(group)
        if registry is not None:
            for name, cls in registry.classes.items():
                options[name] = first_sentence(cls.__doc__ or "")
        folder = config_dir / group
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                options[path.stem] = yaml_description(path)
        if group == "engine":
            options.setdefault("default", "the schema's defaults (sim/config.py, EngineConfig)")
        out[group] = sorted(options.items())
    return out


def key_docs() -> dict[str, tuple[object, str, str]]:
    """``{dotted key: (default, allowed, doc)}`` of the world, engine, experiment and root keys
    and of the base policy and ranker hyperparameters (from the schema)."""
    from sim.homepage import Ranker
    from sim.policies.base import ArtworkPolicy

    out = {}
    for prefix, cls in (("world", WorldConfig), ("engine", EngineConfig), ("experiment", ExperimentSection),
                        ("", ExperimentConfig), ("policy", hyperparameters(ArtworkPolicy)),
                        ("ranker", hyperparameters(Ranker))):
        for name, default, allowed, doc in describe(cls):
            out[f"{prefix}.{name}" if prefix else name] = (default, allowed, doc)
    out["world.response.name"] = ("session", "a response model (world/response group)", "how members respond")
    return out


def groups_text() -> str:
    lines = []
    for group, options in group_options().items():
        lines.append(f"{group}: {GROUP_ROLES[group]}")
        width = max((len(o) for o, _ in options), default=0)
        for option, description in options:
            lines.append(f"  {option:<{width}}  {description}")
    return "\n".join(lines)


def keys_text() -> str:
    docs = key_docs()
    rows = []
    for key in MOST_USED_KEYS:
        default, allowed, doc = docs[key]
        rows.append((f"{key}={default}", f"{doc} ({allowed})"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {d}" for k, d in rows)


def help_section(name: str) -> str:
    """The ``homesim_help`` resolver: ``groups`` or ``keys``. ``$`` is doubled because Hydra
    passes the template through :class:`string.Template`."""
    text = {"groups": groups_text, "keys": keys_text}[name]()
    return text.replace("$", "$$")


def register_resolver() -> None:
    if not OmegaConf.has_resolver("homesim_help"):
        OmegaConf.register_new_resolver("homesim_help", help_section)


register_resolver()


def prog(module: str) -> str:
    """The command name for a usage line: the console command that started this process
    (``homesim-evaluate``), else ``python -m <module>`` (argparse would say ``evaluate.py``)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.startswith("homesim") else f"python -m {module}"
