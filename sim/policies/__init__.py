"""Artwork policies and the registry that builds them from config.

Select a built-in policy by ``name`` (``policy=thompson`` on the command line) or your own class
by ``_target_`` (a dotted import path); the remaining keys are constructor arguments::

    # configs/policy/my_policy.yaml
    _target_: my_package.MyPolicy
    temperature: 0.5
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Mapping

from sim.config import ConfigError
from sim.policies.bandits import (EpsilonGreedyPolicy, SoftmaxPolicy, ThompsonPolicy,
                                  UCB1Policy)
from sim.policies.base import (ArtworkCounts, ArtworkPolicy, DecisionBatch, FeedbackBatch,
                               Selection)
from sim.policies.baselines import (ExplorationWrapper, FixedPolicy, OraclePolicy, StickyWrapper,
                                    UniformPolicy)
from sim.policies.linear import (LinearEpsilonGreedy, LinearSoftmax, LinTSPolicy,
                                 LogisticTSPolicy)
from sim.policies.linucb import LinUCBPolicy

POLICIES: dict[str, type[ArtworkPolicy]] = {
    cls.name: cls for cls in (UniformPolicy, FixedPolicy, OraclePolicy, EpsilonGreedyPolicy,
                              ThompsonPolicy, UCB1Policy, SoftmaxPolicy, ExplorationWrapper,
                              LinTSPolicy, LogisticTSPolicy, LinUCBPolicy, LinearEpsilonGreedy,
                              LinearSoftmax, StickyWrapper)
}

__all__ = ["ArtworkPolicy", "ArtworkCounts", "DecisionBatch", "FeedbackBatch", "Selection",
           "POLICIES", "build_policy"]


def build_policy(spec: Mapping[str, Any], key: str = "policy", seed: int = 0) -> ArtworkPolicy:
    """Instantiate a policy from a config mapping; errors name ``key`` and what is allowed.

    ``seed`` is passed to policies whose constructor takes one (deploy-time Monte Carlo).
    """
    spec = dict(spec)
    target = spec.pop("_target_", None)
    name = spec.pop("name", None)
    if target is not None:
        cls = _import_class(f"{key}._target_", target)
        if not (isinstance(cls, type) and issubclass(cls, ArtworkPolicy)):
            raise ConfigError(f"{key}._target_", target, "a subclass of sim.policies.ArtworkPolicy")
        if cls.probabilities is ArtworkPolicy.probabilities:
            raise ConfigError(f"{key}._target_", target,
                              "a policy class that implements probabilities(batch)")
    else:
        if name not in POLICIES:
            raise ConfigError(f"{key}.name", name, "one of " + ", ".join(POLICIES)
                              + ", or a _target_ with the import path of your policy class")
        cls = POLICIES[name]
    if cls in (ExplorationWrapper, StickyWrapper):
        base_spec = spec.pop("base", None)
        if not isinstance(base_spec, Mapping):
            raise ConfigError(f"{key}.base", base_spec, "a policy mapping, e.g. {name: thompson}")
        spec["base"] = build_policy(base_spec, f"{key}.base", seed)
    params = inspect.signature(cls.__init__).parameters
    if "seed" in params and "seed" not in spec:
        spec["seed"] = seed
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for k in spec:
        if k not in params and not accepts_any:
            allowed = [p for p in params if p not in ("self", "seed")]
            raise ConfigError(f"{key}.{k}", spec[k], f"unknown parameter of policy {cls.__name__}; "
                              f"known: {', '.join(allowed) or '(none)'}")
    try:
        policy = cls(**spec)
    except (ValueError, TypeError) as err:
        bad = next((k for k in spec if str(err).startswith(k)), None)
        raise ConfigError(f"{key}.{bad}" if bad else key, spec.get(bad, spec), str(err)) from None
    return policy


def _import_class(key: str, path: Any) -> type:
    if not isinstance(path, str) or "." not in path:
        raise ConfigError(key, path, "a dotted import path such as my_package.MyPolicy")
    module, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(key, path, f"an importable class ({err})") from None
