"""A log as off-policy evaluation uses it: the decisions to replay, the logged outcomes, and the
inputs of the reward model; plus target policies built, trained and queried on it.

A target policy is queried on the *logged* decisions: :func:`target_probabilities` rebuilds the
:class:`~sim.policies.DecisionBatch` of every logged impression (member, title, candidates =
``catalog.pool[title]`` with its mask, row, column, time, familiar and -- for contextual
policies -- the visit's member context as the run logged it) and asks the policy for its
choice probabilities, shape (n, K). Column k is action k (pool slot k), so ``probs[:, :, None]``
is OBP's ``action_dist`` with ``len_list = 1``: the policy already conditions on each
impression's own position, and one slot per impression avoids an (n, K, rows*columns) array.

Logs from outside the simulator (:func:`from_bandit_feedback`) get a stand-in catalog with one
title whose pool is the actions (flat artwork id = action), so any non-contextual policy (uniform,
fixed, epsilon-greedy, Thompson, UCB1, softmax) can be evaluated on them; OBD positions become
columns of row 0.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from sim.ope.reward_model import cross_fitted_rewards
from sim.ope.runs import VisitContexts
from sim.ope.validate import integer_column, numeric_column, propensity_column
from sim.policies import ArtworkPolicy, DecisionBatch, FeedbackBatch, build_policy
from sim.world import Catalog


@dataclass
class LoggedData:
    """Logged impressions; arrays of shape (n,) unless noted, rows in time order.

    Attributes
    ----------
    decisions : DecisionBatch with ``candidates``/``mask`` of shape (n, K)
    action : logged slot index; ``pscore`` its logged propensity; ``reward`` the logged reward
    click, play : logged outcomes (copies of the reward for logs from outside the simulator)
    features : {name: (n,) int} categorical features of the reward model
    catalog : the run's catalog, or a one-title stand-in for external logs
    arm_group : (n_arms,) group (title) of every arm for the reward model, or None
    """

    decisions: DecisionBatch
    action: np.ndarray
    pscore: np.ndarray
    reward: np.ndarray
    click: np.ndarray
    play: np.ndarray
    features: dict[str, np.ndarray]
    catalog: Catalog
    arm_group: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.action.shape[0])

    @property
    def artwork(self) -> np.ndarray:
        """Flat id of the logged artwork (arm), shape (n,)."""
        return self.decisions.candidates[np.arange(len(self)), self.action].astype(np.int64)

    def subset(self, idx: np.ndarray) -> "LoggedData":
        """Rows ``idx`` (indices or boolean mask)."""
        return dataclasses.replace(
            self, decisions=self.decisions.subset(idx), action=self.action[idx],
            pscore=self.pscore[idx], reward=self.reward[idx], click=self.click[idx],
            play=self.play[idx], features={k: v[idx] for k, v in self.features.items()})

    def split(self, train_fraction: float) -> tuple["LoggedData", "LoggedData"]:
        """(first ``train_fraction`` of the rows, the rest): rows are in time order."""
        if not 0.0 <= train_fraction < 1.0:
            raise ValueError(f"train_fraction must be in [0, 1), got {train_fraction!r}")
        cut = int(round(train_fraction * len(self)))
        return self.subset(np.arange(cut)), self.subset(np.arange(cut, len(self)))

    def feedback(self) -> FeedbackBatch:
        """The rows as the trainer of a learning policy receives them (reward = quality play)."""
        return FeedbackBatch(self.decisions, self.action, self.artwork.astype(np.int32), self.pscore,
                             self.click, self.play, self.reward)

    def estimated_rewards(self, rng: np.random.Generator | None = None, n_folds: int = 2) -> np.ndarray:
        """Cross-fitted reward model predictions for every candidate, shape (n, K, 1)."""
        return cross_fitted_rewards(self.artwork, self.reward, self.features,
                                    self.decisions.candidates, self.arm_group, n_folds=n_folds, rng=rng)


# ---- constructors ---------------------------------------------------------------------------------
def from_log(log: pd.DataFrame, catalog: Catalog, visit_contexts: VisitContexts | None = None) -> LoggedData:
    """A simulator impression log (one logging cell, time order) on the run's ``catalog``.

    ``visit_contexts`` (:func:`sim.ope.runs.read_visit_contexts`) fill ``DecisionBatch.context``
    as the engine built it (the visit's observable member context with the title's ``familiar``
    flag), which contextual policies need. ``last_artwork``/``shown_since`` columns, if the log
    has them, are passed on too.
    """
    title = integer_column(log, "title", 0)
    action = integer_column(log, "action", 0)
    candidates = catalog.pool[title]
    mask = candidates >= 0
    if (action >= mask.sum(axis=1)).any():
        raise ValueError("logged actions beyond the title's pool: is this the run's catalog?")
    familiar = log["familiar"].to_numpy(bool)
    visit = log["visit"].to_numpy(np.int64)
    fields = {f.name for f in dataclasses.fields(DecisionBatch)}
    extra = {k: log[k].to_numpy() for k in ("last_artwork", "shown_since") if k in fields and k in log}
    if "visit" in fields:
        extra["visit"] = visit
    decisions = DecisionBatch(
        member=log["member"].to_numpy(np.int32), title=title.astype(np.int32), candidates=candidates,
        mask=mask, row=log["row"].to_numpy(np.int16), column=log["column"].to_numpy(np.int16),
        time=log["time"].to_numpy(np.float64), familiar=familiar,
        context=(visit_contexts.for_impressions(visit, familiar, catalog.n_genres)
                 if visit_contexts is not None else None), **extra)
    return LoggedData(
        decisions, action, propensity_column(log, "pscore"), numeric_column(log, "reward"),
        log["click"].to_numpy(bool), log["play"].to_numpy(bool),
        {"row": decisions.row.astype(np.int64), "column": decisions.column.astype(np.int64),
         "familiar": familiar.astype(np.int64)},
        catalog, catalog.artwork_title)


def synthetic_catalog(n_actions: int) -> Catalog:
    """A one-title catalog whose pool is ``n_actions`` featureless artworks (flat id = action)."""
    ids = np.arange(n_actions, dtype=np.int32)
    return Catalog(title_genres=np.ones((1, 1), np.float32), primary_genre=np.zeros(1, np.int32),
                   popularity_prior=np.ones(1, np.float32), launch_time=np.zeros(1),
                   pool=ids[None, :], pool_size=np.array([n_actions], np.int32),
                   artwork_title=np.zeros(n_actions, np.int32), artwork_slot=ids,
                   artwork_theme=np.ones((n_actions, 1), np.float32), genre_share=np.ones(1))


#: Bytes per (row, candidate) cell while evaluating: candidates, mask, target probabilities and
#: their copies in the estimators.
BYTES_PER_CELL = 64


def _check_memory(n: int, K: int, n_actions: int) -> None:
    from sim.memory import GB, available_memory

    need, avail = n * K * BYTES_PER_CELL, available_memory()
    if avail is not None and need > avail:
        raise ValueError(f"n_actions = {n_actions} is too large for this log: {n:,} rows x {K:,} "
                         f"eligible actions need about {need / GB:.1f} GB, more than the "
                         f"{avail / GB:.1f} GB available; give each row's n_candidates, or a smaller "
                         "--n-actions")


def from_bandit_feedback(bf: Mapping[str, Any]) -> LoggedData:
    """A ``bandit_feedback`` dict (e.g. from :func:`sim.ope.data.load_bandit_feedback`).

    Eligible actions are ``0 .. n_candidates-1`` when the dict has ``n_candidates``, all
    ``n_actions`` otherwise. Rows are taken in the dict's order (OBD files are sorted by time).
    """
    n, n_actions = int(bf["n_rounds"]), int(bf["n_actions"])
    # Rows offer n_candidates actions when the log says so: memory is rows x candidates, never
    # rows x (largest action id) or actions^2.
    K = int(np.max(bf["n_candidates"], initial=1)) if "n_candidates" in bf else n_actions
    K = max(K, int(np.max(bf["action"], initial=-1)) + 1)
    _check_memory(n, K, n_actions)
    catalog = synthetic_catalog(K)
    n_cand = np.asarray(bf.get("n_candidates", np.full(n, K)), dtype=np.int64)
    mask = np.arange(K)[None, :] < n_cand[:, None]
    candidates = np.where(mask, catalog.pool[0][None, :], -1).astype(np.int32)
    position = np.asarray(bf["position"], dtype=np.int64)
    context = np.asarray(bf["context"], dtype=np.float32) if np.size(bf.get("context", [])) else None
    decisions = DecisionBatch(
        member=np.asarray(bf.get("member", np.zeros(n)), dtype=np.int32), title=np.zeros(n, np.int32),
        candidates=candidates, mask=mask, row=np.zeros(n, np.int16), column=position.astype(np.int16),
        time=np.asarray(bf.get("time", np.arange(n)), dtype=np.float64), familiar=np.zeros(n, bool),
        context=context)
    reward = np.asarray(bf["reward"], dtype=np.float64)
    return LoggedData(decisions, np.asarray(bf["action"], dtype=np.int64),
                      np.asarray(bf["pscore"], dtype=np.float64), reward, reward > 0, reward > 0,
                      {"position": position}, catalog, None)


# ---- target policies ------------------------------------------------------------------------------
def build_target(spec: Mapping[str, Any], catalog: Catalog, seed: int = 0, response=None,
                 key: str = "policy") -> ArtworkPolicy:
    """Build and reset a target policy from a config mapping (as ``configs/policy/*.yaml``).

    Policies that read ground truth (the oracle) need the run's ``response`` model.
    """
    policy = build_policy(spec, key, seed=seed)
    policy.reset(catalog)
    if policy.reads_ground_truth:
        if response is None:
            raise ValueError(f"policy {policy.name!r} reads the simulator's ground truth; it can only "
                             "be evaluated on a simulator run directory")
        policy.attach_ground_truth(response)
    return policy


def train_target(policy: ArtworkPolicy, data: LoggedData) -> bool:
    """Deploy one model version trained on ``data``; False if the policy does not learn."""
    if len(data) == 0:
        return False
    stats = policy.sufficient_stats(data.feedback())
    if stats is None:
        return False
    policy.update(stats)
    return True


def target_probabilities(policy: ArtworkPolicy, decisions: DecisionBatch,
                         chunk: int = 100_000) -> np.ndarray:
    """The frozen policy's choice probabilities on logged decisions, shape (n, K).

    Raises ValueError if a row does not sum to 1 over the valid candidates.
    """
    n, K = decisions.candidates.shape
    probs = np.zeros((n, K))
    for lo in range(0, n, chunk):
        idx = np.arange(lo, min(lo + chunk, n))
        probs[idx] = policy.probabilities(decisions.subset(idx))
    invalid = np.abs(np.where(decisions.mask, probs, 0).sum(axis=1) - 1) > 1e-6
    invalid |= (np.where(decisions.mask, 0, probs) != 0).any(axis=1)
    if invalid.any():
        raise ValueError(f"policy {policy.name!r} returned probabilities that do not sum to 1 over "
                         f"the valid candidates on {int(invalid.sum())} of {n} impressions")
    return probs
