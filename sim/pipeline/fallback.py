"""Personalization timeouts: the title's default image is served instead of the policy's choice.

:class:`FallbackPolicy` wraps a cell's policy for one batch. The policy chooses as usual (from its
own stream, so its draws do not move); then each impression times out with probability
``engine.faults.fallback`` (from the ``faults-fallback`` stream) and shows pool slot 0, the
title's default image. The response model sees what was rendered, so the truth (expected take,
regret) follows the fallback.

What is logged as the propensity:

* truthfully (default): the probability that the image *rendered* was this one,
  ``(1 - r) pi(a | x) + r [a == default]`` -- the image comes from a mixture of the policy and the
  default; the row's ``fallback`` column is true;
* ``fallback_logged_as_policy`` (the bug): as if the policy had chosen it: ``pi(a | x)``, for a
  fallback ``pi(default | x)``, and no flag. The repair ``rendered_propensity`` logs the mixture.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.policies.base import Selection


@dataclass
class FallbackPolicy:
    """A policy whose choices time out at ``rate`` (see the module doc). After :meth:`select`,
    ``fallback`` (n,) bool marks the timed-out impressions."""

    policy: object
    rate: float
    logged_as_policy: bool
    repair: bool
    rng: np.random.Generator
    fallback: np.ndarray | None = None
    pscore_changed: np.ndarray | None = None

    def __getattr__(self, name):        # everything but select is the wrapped policy's
        return getattr(self.policy, name)

    def select(self, batch, rng: np.random.Generator) -> Selection:
        """The policy's selection with timed-out impressions replaced by the default image.

        Returns a :class:`Selection` whose ``propensity`` (n,) is what the log records."""
        sel = self.policy.select(batch, rng)
        r = self.rate
        timeout = self.rng.random(len(batch)) < r
        chose_default = sel.action == 0
        # pi(default | x) where it is not the chosen image's propensity already.
        p_default = np.where(chose_default, sel.propensity, 0.0)
        need = np.flatnonzero(timeout & ~chose_default)
        if need.size:
            p_default[need] = np.asarray(self.policy.probabilities(batch.subset(need)))[:, 0]
        action = np.where(timeout, 0, sel.action)
        artwork = np.where(timeout, batch.candidates[:, 0], sel.artwork).astype(sel.artwork.dtype)
        rendered = np.where(action == 0, (1.0 - r) * p_default + r, (1.0 - r) * sel.propensity)
        as_policy = np.where(timeout, p_default, sel.propensity)
        logged = rendered if (not self.logged_as_policy or self.repair) else as_policy
        self.fallback = timeout
        # Rows whose logged propensity the repair corrected (counted in metrics.json).
        self.pscore_changed = ((rendered != as_policy) if (self.logged_as_policy and self.repair)
                               else np.zeros(len(batch), bool))
        return Selection(action.astype(sel.action.dtype), artwork, logged.astype(np.float64))
