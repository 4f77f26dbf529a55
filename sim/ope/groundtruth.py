"""What the sandbox knows and production does not: the true value of any policy.

* **Offline truth on the logged contexts** -- for each logged impression i (its member, title,
  candidates, row, column and familiarity, rebuilt by :mod:`sim.ope.logged`), the policy's exact
  expected reward ``v_i = sum_k pi(k | x_i) p(x_i, k)`` from the response model's true
  probabilities; the policy value on the log is ``mean_i v_i``. No sampling noise: this is the
  number an off-policy estimator on the same log is trying to recover. For the uniform policy
  on a uniform-logged cell it equals the run's ``uniform_take_fraction`` in ``metrics.json``.
* **Online value** -- the policy run in the closed loop (:func:`online_value`): same world and
  seed, all members, learning as it goes. It differs from the offline truth because the loop
  changes the contexts (the ranker learns from what the policy caused, members' familiarity
  follows their clicks) and learning policies keep learning; the gap is itself a measurement.

The reward is the *true* quality play; logs carry the *attributed* one (credited inside the
attribution window). With the default 120-minute window they coincide for all practical purposes
(a quality play is known ~18 minutes after the impression).
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

import numpy as np

from sim.config import REWARD_NAMES, ExperimentConfig, to_dict
from sim.policies import DecisionBatch
from sim.world import ResponseModel


def true_rewards(response: ResponseModel, decisions: DecisionBatch, reward: str = "quality_play",
                 chunk: int = 50_000) -> np.ndarray:
    """True expected reward of every candidate of every logged impression.

    Returns
    -------
    ndarray, shape (n, K): P(reward | member, title, candidate k, row, column, familiar), 0 on
    padded candidates.
    """
    if reward not in REWARD_NAMES:
        raise ValueError(f"reward must be one of {', '.join(REWARD_NAMES)}, got {reward!r}")
    if response.uses_last_artwork and getattr(decisions, "last_artwork", None) is None:
        raise ValueError("this world penalises changing a title's image, so the truth depends on the "
                         "image each member last saw (last_artwork), which the log does not hold")
    n, K = decisions.candidates.shape
    out = np.zeros((n, K))
    # Chunks bound the (chunk, K, n_genres) temporaries of the response model.
    for lo in range(0, n, chunk):
        d = decisions.subset(np.arange(lo, min(lo + chunk, n)))
        p = getattr(response.probabilities(d), reward)   # with last_artwork where the log has it
        out[lo:lo + len(d)] = np.where(d.mask, p, 0.0)
    return out


def expected_values(probabilities: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """Per-impression exact expected reward ``sum_k pi(k|x_i) p(x_i, k)``, shape (n,).

    Parameters
    ----------
    probabilities : ndarray, shape (n, K) -- the policy's choice probabilities on the logged decisions
    rewards : ndarray, shape (n, K) -- :func:`true_rewards`
    """
    return np.einsum("nk,nk->n", probabilities, rewards)


def online_value(cfg: ExperimentConfig, policy: Mapping[str, Any], name: str | None = None,
                 days: float | None = None) -> dict:
    """Run ``policy`` alone in the run's world (same config and seed, no log) and return its cell
    summary: ``take_fraction`` with its 95 % interval, ``expected_take_fraction`` (mean true
    probability of the shown images), ``impressions``.
    """
    from sim.config import experiment_config_from_dict
    from sim.engine import Simulation

    d = to_dict(cfg)
    name = name or str(policy.get("name", "target"))
    engine = {**d["engine"], "log_impressions": False, "progress": False}
    if days is not None:
        engine["days"] = days
    raw = {"seed": d["seed"], "world": d["world"], "engine": engine, "ranker": d["ranker"],
           "experiment": {"name": f"online-{name}", "control": name,
                          "cells": [{"name": name, "share": 1.0, "policy": copy.deepcopy(dict(policy))}]}}
    raw["world"]["countries"] = list(raw["world"]["countries"])
    summary = Simulation(experiment_config_from_dict(raw)).run()
    return summary["cells"][name]
