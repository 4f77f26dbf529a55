"""Reference policies: uniform exploration, the fixed default image, the oracle, and an
exploration wrapper that mixes any policy with uniform choice."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sim.policies.base import (ArtworkPolicy, DecisionBatch, argmax_uniform_ties, check_range,
                               uniform_probabilities)

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
    reward for this member, title and position. Used for regret; never a realistic policy."""

    name = "oracle"
    reads_ground_truth = True

    def attach_ground_truth(self, response: "ResponseModel") -> None:
        self.response_ = response

    def probabilities(self, batch: DecisionBatch) -> np.ndarray:
        p_click, p_play, p_quality = self.response_.take_probabilities(
            batch.member, batch.title, batch.candidates, batch.row, batch.column, batch.familiar)
        target = {"click": p_click, "play": p_play, "quality_play": p_quality}[self.reward]
        return argmax_uniform_ties(target, batch.mask)


class ExplorationWrapper(ArtworkPolicy):
    """Mix ``base`` with uniform choice: ``p = epsilon / K + (1 - epsilon) * p_base`` (exact)."""

    name = "explore"

    def __init__(self, base: ArtworkPolicy, epsilon: float = 0.1):
        # The wrapper learns whatever its base learns: set the reward on the base policy.
        super().__init__(base.reward)
        self.base = base
        self.epsilon = check_range("epsilon", epsilon, 0.0, 1.0)

    @property
    def reads_ground_truth(self) -> bool:  # type: ignore[override]
        return self.base.reads_ground_truth

    @property
    def propensity_is_estimated(self) -> bool:  # type: ignore[override]
        return self.base.propensity_is_estimated

    def reset(self, catalog) -> None:
        super().reset(catalog)
        self.base.reset(catalog)

    def attach_ground_truth(self, response) -> None:
        self.base.attach_ground_truth(response)

    def probabilities(self, batch: DecisionBatch) -> np.ndarray:
        return (self.epsilon * uniform_probabilities(batch.mask)
                + (1.0 - self.epsilon) * self.base.probabilities(batch))

    def sufficient_stats(self, feedback):
        return self.base.sufficient_stats(feedback)

    def update(self, stats) -> None:
        self.base.update(stats)
        super().update(stats)
