"""Reference policies: uniform exploration, the fixed default image, the oracle, and an
exploration wrapper that mixes any policy with uniform choice."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.config import ConfigError
from sim.policies.base import ArtworkPolicy, DecisionBatch, argmax_uniform_ties, uniform_probabilities
from sim.schema import param

if TYPE_CHECKING:
    from sim.world import ResponseModel


class UniformPolicy(ArtworkPolicy):
    """Uniform random artwork: the exploration logger (propensity 1/K, exact)."""

    name = "uniform"

    def probabilities(self, batch: DecisionBatch) -> np.ndarray:
        return uniform_probabilities(batch.mask)


class FixedPolicy(ArtworkPolicy):
    """Every member sees each title's default image (pool slot 0): no personalization."""

    name = "fixed"

    def probabilities(self, batch: DecisionBatch) -> np.ndarray:
        probs = np.zeros(batch.mask.shape)
        probs[:, 0] = 1.0
        return probs


class OraclePolicy(ArtworkPolicy):
    """Knows the ground truth: picks the artwork with the highest true probability of the
    reward for this member, title and position (not the image last shown: see
    ``probabilities``). Used for regret; never a realistic policy."""

    name = "oracle"
    reads_ground_truth = True

    def attach_ground_truth(self, response: "ResponseModel") -> None:
        self.response_ = response

    def probabilities(self, batch: DecisionBatch) -> np.ndarray:
        # Without last_artwork: the oracle ranks images by the member's taste, the title and
        # the position, ignoring the penalty for a changed image (it predates that penalty;
        # kept so results do not move). The regret's oracle take in serving does include it.
        truth = self.response_.probabilities(dataclasses.replace(batch, last_artwork=None))
        return argmax_uniform_ties(getattr(truth, self.reward), batch.mask)


def _base_policy(default: str) -> Any:
    return param(default_factory=lambda: {"name": default},
                 doc="the wrapped policy (a policy mapping; from Python: a policy object)")


class PolicyWrapper(ArtworkPolicy):
    """A policy that changes how ``base`` chooses but learns exactly what ``base`` learns."""

    # No ``reward``: the wrapper learns whatever its base learns (set the reward on the base).
    @dataclass(frozen=True)
    class Params:
        base: Any = _base_policy("thompson")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.base, ArtworkPolicy):
            raise ConfigError("base", self.base, "a policy object (sim.policies.build_policy builds "
                              "one from a policy mapping such as {name: thompson})")
        self.reward = self.base.reward

    @property
    def reads_ground_truth(self) -> bool:  # type: ignore[override]
        return self.base.reads_ground_truth

    @property
    def propensity_is_estimated(self) -> bool:  # type: ignore[override]
        return self.base.propensity_is_estimated

    @property
    def uses_shown_artworks(self) -> bool:  # type: ignore[override]
        return type(self).__dict__.get("keeps_images", False) or self.base.uses_shown_artworks

    def reset(self, catalog) -> None:
        super().reset(catalog)
        self.base.reset(catalog)

    def attach_ground_truth(self, response) -> None:
        self.base.attach_ground_truth(response)

    def sufficient_stats(self, feedback):
        return self.base.sufficient_stats(feedback)

    def update(self, stats) -> None:
        self.base.update(stats)
        super().update(stats)


class ExplorationWrapper(PolicyWrapper):
    """Mix ``base`` with uniform choice: ``p = epsilon / K + (1 - epsilon) * p_base`` (exact)."""

    name = "explore"

    @dataclass(frozen=True)
    class Params(PolicyWrapper.Params):
        epsilon: float = param(0.1, ge=0.0, le=1.0, doc="share of uniform random choices")

    def probabilities(self, batch: DecisionBatch) -> np.ndarray:
        return (self.epsilon * uniform_probabilities(batch.mask)
                + (1.0 - self.epsilon) * self.base.probabilities(batch))


class StickyWrapper(PolicyWrapper):
    """Keep a member's image for a title for at least ``min_hours``; otherwise let ``base`` choose.

    Netflix avoids changing a title's image too often, for recognisability and clean
    attribution. A kept image is chosen with probability 1 (the logged propensity): given what
    the member was shown, the choice is deterministic. The base policy learns from every
    impression, kept or not.
    """

    name = "sticky"
    keeps_images = True

    @dataclass(frozen=True)
    class Params(PolicyWrapper.Params):
        base: Any = _base_policy("lints")
        min_hours: float = param(24.0, ge=0.0, doc="hours a member keeps a title's image")

    def kept(self, batch: DecisionBatch) -> np.ndarray:
        """One-hot (n, K) of the image to keep, all False where the base policy chooses."""
        if batch.last_artwork is None:
            return np.zeros(batch.mask.shape, dtype=bool)
        young = (batch.time - batch.shown_since) < self.min_hours * 60.0
        return (batch.candidates == batch.last_artwork[:, None]) & batch.mask & young[:, None]

    def probabilities(self, batch: DecisionBatch) -> np.ndarray:
        keep = self.kept(batch)
        probs = self.base.probabilities(batch)
        return np.where(keep.any(axis=1, keepdims=True), keep.astype(np.float64), probs)

    def select(self, batch: DecisionBatch, rng: np.random.Generator):
        # The base policy's own select (page-level draws) decides the free impressions.
        sel = self.base.select(batch, rng)
        keep = self.kept(batch)
        forced = keep.any(axis=1)
        if forced.any():
            rows = np.flatnonzero(forced)
            sel.action[rows] = keep[rows].argmax(axis=1)
            sel.artwork[rows] = batch.candidates[rows, sel.action[rows]]
            sel.propensity[rows] = 1.0
        return sel
