"""Feed the schema of :mod:`sim.config` to Hydra's ConfigStore (structured configs).

Importing this module registers, from the declarations (nothing is restated here):

* ``schema`` -- the root config: ``seed``, every ``world``, ``engine`` and ``experiment`` key
  with its default (first in ``configs/config.yaml``'s defaults list);
* one option per registered class in the groups ``policy``, ``ranker`` and ``world/response``,
  holding ``name`` and every hyperparameter with its default (``policy=ucb1``, ``ranker=oracle``,
  ``world/response=independent``);
* ``engine/default``: no differences from the schema.

So every key can be overridden without ``+``, and ``--cfg job`` and a run's ``config.yaml`` show
every key. YAML files under ``configs/`` hold only what differs. Node fields are typed ``Any``:
values are validated by :mod:`sim.config` (with its messages), not by OmegaConf.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterable

from hydra.core.config_store import ConfigStore

from sim.config import (POLICIES, RANKERS, RESPONSE_MODELS, EngineConfig, ExperimentConfig,
                        ExperimentSection, WorldConfig)
from sim.schema import Registry, Spec, field_default, hyperparameters

#: Group -> registry of the classes that group selects from.
GROUPS: dict[str, Registry] = {"policy": POLICIES, "ranker": RANKERS, "world/response": RESPONSE_MODELS}


def plain(value: Any) -> Any:
    """A default as OmegaConf holds it: tuples become lists, dataclasses mappings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def declared_defaults(cls: type) -> dict[str, Any]:
    """``{field: default}`` of the declared fields of dataclass ``cls`` (specs left out)."""
    out = {}
    for f in dataclasses.fields(cls):
        default = field_default(f)
        if default is dataclasses.MISSING or isinstance(default, Spec):
            continue
        out[f.name] = plain(default)
    return out


def node(name: str, defaults: dict[str, Any], extra: Iterable[tuple[str, Any]] = ()) -> type:
    """A structured-config dataclass with one ``Any`` field per key, defaulting as declared."""
    fields = [(k, Any, dataclasses.field(default_factory=(lambda v=v: plain(v))))
              for k, v in {**defaults, **dict(extra)}.items()]
    return dataclasses.make_dataclass(name, fields)


def option_defaults(name: str, cls: type) -> dict[str, Any]:
    """What a group option holds: the class's name, then every hyperparameter's default."""
    return {"name": name, **declared_defaults(hyperparameters(cls))}


@functools.cache
def keys_every_config_has() -> dict[str, Any]:
    """The keys a composed config has whatever the group choices, as a nested mapping: the
    schema's (``seed``, ``world.*``, ``engine.*``, ``experiment.*``) and, under ``policy``,
    ``ranker`` and ``world.response``, the keys every option of that group holds (``name``)."""
    tree: dict[str, Any] = {"seed": None, "world": declared_defaults(WorldConfig),
                            "engine": declared_defaults(EngineConfig),
                            "experiment": declared_defaults(ExperimentSection)}
    for group, registry in GROUPS.items():
        options = [set(option_defaults(name, cls)) for name, cls in registry.classes.items()]
        node_ = tree
        *parents, leaf = group.split("/")
        for part in parents:
            node_ = node_[part]
        node_[leaf] = dict.fromkeys(set.intersection(*options) if options else ())
    return tree


def always_present(key: str) -> bool:
    """Whether the dotted ``key`` (``engine.faults.duplicate``) is in every composed config, so
    an override of it needs no composing to be known: see :func:`keys_every_config_has`."""
    node_: Any = keys_every_config_has()
    for part in key.split("."):
        if not isinstance(node_, dict) or part not in node_:
            return False
        node_ = node_[part]
    return True


def register(store: ConfigStore | None = None) -> ConfigStore:
    store = store or ConfigStore.instance()
    world = node("WorldSchema", declared_defaults(WorldConfig), [("response", None)])
    engine = node("EngineSchema", declared_defaults(EngineConfig))
    experiment = node("ExperimentSchema", declared_defaults(ExperimentSection))
    seed = declared_defaults(ExperimentConfig)["seed"]
    root = dataclasses.make_dataclass("Schema", [
        ("seed", Any, dataclasses.field(default=seed)),
        ("world", Any, dataclasses.field(default_factory=world)),
        ("engine", Any, dataclasses.field(default_factory=engine)),
        ("ranker", Any, dataclasses.field(default=None)),
        ("policy", Any, dataclasses.field(default=None)),
        ("experiment", Any, dataclasses.field(default_factory=experiment)),
    ])
    store.store(name="schema", node=root)
    store.store(group="engine", name="default", node={})
    for group, registry in GROUPS.items():
        for name, cls in registry.classes.items():
            store.store(group=group, name=name,
                        node=node(f"{cls.__name__}Schema", option_defaults(name, cls)))
    return store


register()
