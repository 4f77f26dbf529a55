"""Artwork policies and the registry that builds them from config.

Select a built-in policy by ``name`` (``policy=thompson`` on the command line) or your own class
by ``_target_`` (a dotted import path); the remaining keys are its hyperparameters, declared
once in the class's ``Params`` (see :class:`ArtworkPolicy`)::

    # configs/policy/my_policy.yaml
    _target_: my_package.MyPolicy
    temperature: 0.5
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Mapping

from sim.config import POLICIES, ConfigError
from sim.policies.base import (ArtworkCounts, ArtworkPolicy, DecisionBatch, FeedbackBatch,
                               Selection)
# The modules holding built-ins, in the order their names are listed in messages.
from sim.policies import baselines, bandits, linear, linucb  # noqa: F401,E402
from sim.policies.baselines import PolicyWrapper
from sim.schema import field_default, hyperparameters

__all__ = ["ArtworkPolicy", "ArtworkCounts", "DecisionBatch", "FeedbackBatch", "Selection",
           "POLICIES", "build_policy"]


def build_policy(spec: Mapping[str, Any], key: str = "policy", seed: int = 0) -> ArtworkPolicy:
    """Instantiate a policy from a config mapping; errors name ``key`` and what is allowed.

    ``seed`` is passed to policies whose constructor takes one (deploy-time Monte Carlo).
    """
    cls, params = POLICIES.resolve(spec, key)
    if cls.probabilities is ArtworkPolicy.probabilities:
        raise ConfigError(f"{key}._target_", spec.get("_target_"),
                          "a policy class that implements probabilities(batch)")
    if issubclass(cls, PolicyWrapper):
        declared = {f.name: f for f in dataclasses.fields(hyperparameters(cls))}
        base_spec = params.pop("base", field_default(declared["base"]))
        if not isinstance(base_spec, Mapping):
            raise ConfigError(f"{key}.base", base_spec, "a policy mapping, e.g. {name: thompson}")
        params["base"] = build_policy(base_spec, f"{key}.base", seed)
    signature = inspect.signature(cls.__init__).parameters
    if "seed" in signature and "seed" not in params:
        params["seed"] = seed
    if not any(p.kind is p.VAR_KEYWORD for p in signature.values()):
        # A class with its own constructor signature (no declared Params): refuse unknown keys.
        for k in params:
            if k not in signature:
                allowed = [p for p in signature if p not in ("self", "seed")]
                raise ConfigError(f"{key}.{k}", params[k], f"unknown parameter of policy {cls.__name__}; "
                                  f"known: {', '.join(allowed) or '(none)'}")
    try:
        return cls(**params)
    except ConfigError as err:   # declared hyperparameters: re-key under the config path
        raise ConfigError(f"{key}.{err.key}", err.value, err.allowed) from None
    except (ValueError, TypeError) as err:
        bad = next((k for k in params if str(err).startswith(k)), None)
        raise ConfigError(f"{key}.{bad}" if bad else key, params.get(bad, params), str(err)) from None

