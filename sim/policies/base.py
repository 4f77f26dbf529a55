"""The batched artwork-policy contract and the data it exchanges with the engine.

A policy sees a :class:`DecisionBatch` (every impression of a serving window, padded to
``max_artworks`` candidates with a mask), returns choice probabilities, selects one artwork per
impression with its exact propensity, turns logged :class:`FeedbackBatch` es into additive
sufficient statistics, and deploys a new model version from them::

    probs = policy.probabilities(batch)           # (n, K), rows sum to 1 over valid candidates
    sel = policy.select(batch, rng)               # sel.action (n,), sel.propensity (n,)
    stats = policy.sufficient_stats(feedback)     # stats(a) + stats(b) == stats(a U b)
    policy.update(stats)                          # new model version

Hyperparameters are declared once, in a frozen ``Params`` dataclass of :func:`sim.schema.param`
fields on the policy class; the constructor validates them (errors name the parameter, the value
and what is allowed) and sets them as plain attributes, never changed afterwards. Learned state
ends in ``_`` and is (re)built by :meth:`ArtworkPolicy.reset`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.config import POLICIES, REWARD_NAMES
from sim.kernels.choice import inverse_cdf
from sim.schema import check_keys, from_mapping, hyperparameters, param

if TYPE_CHECKING:
    from sim.world import Catalog, ResponseModel


@dataclass
class DecisionBatch:
    """Impressions waiting for an artwork choice.

    Attributes
    ----------
    member, title : ndarray, shape (n,), int32
    candidates : ndarray, shape (n, K), int32   flat artwork ids, ``-1`` padded
    mask : ndarray, shape (n, K), bool          valid candidates
    row, column : ndarray, shape (n,), int16    position on the page
    time : ndarray, shape (n,), float64         simulated minute of the visit
    familiar : ndarray, shape (n,), bool        member interacted with the title before
    context : ndarray or None, shape (n, d), float32
        Observable member context (layout in :mod:`sim.features`); None where not built.
    visit : ndarray or None, shape (n,), int64
        Visit (page) id: impressions of one page share it. None means one page per impression.
    last_artwork, shown_since : ndarray or None, shape (n,)
        Image the member last saw for the title (``-1``: none) and the minute it was first
        shown; filled when the engine tracks shown images (sticky policies, change penalty).
    """

    member: np.ndarray
    title: np.ndarray
    candidates: np.ndarray
    mask: np.ndarray
    row: np.ndarray
    column: np.ndarray
    time: np.ndarray
    familiar: np.ndarray
    context: np.ndarray | None = None
    visit: np.ndarray | None = None
    last_artwork: np.ndarray | None = None
    shown_since: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.member.shape[0])

    def n_candidates(self) -> np.ndarray:
        """Valid candidates per impression, shape (n,) int64: ``mask.sum(axis=1)``, computed once
        per batch (serving, the policy, the metrics and the log all read it; each sum over a
        boolean (n, K) array costs about as much as drawing the batch's clicks)."""
        n = self.__dict__.get("_n_candidates")
        if n is None:
            n = self.__dict__["_n_candidates"] = self.mask.sum(axis=1)
        return n

    def page_index(self) -> np.ndarray:
        """Dense page number per impression (0..n_pages-1), shape (n,)."""
        if self.visit is None:
            return np.arange(len(self))
        return np.unique(self.visit, return_inverse=True)[1]

    def subset(self, idx: np.ndarray) -> "DecisionBatch":
        return DecisionBatch(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[idx])
                                for f in dataclasses.fields(self)})


@dataclass
class Selection:
    """Chosen artwork per impression: ``action`` indexes the candidate row, ``artwork`` is the
    flat id, ``propensity`` the probability with which the policy chose it."""

    action: np.ndarray      # (n,) int64
    artwork: np.ndarray     # (n,) int32
    propensity: np.ndarray  # (n,) float64


@dataclass
class FeedbackBatch:
    """Logged impressions with their attributed outcomes, as the trainer receives them."""

    decisions: DecisionBatch
    action: np.ndarray        # (n,) int64
    artwork: np.ndarray       # (n,) int32
    propensity: np.ndarray    # (n,) float64
    click: np.ndarray         # (n,) bool
    play: np.ndarray          # (n,) bool
    quality_play: np.ndarray  # (n,) bool

    def reward(self, name: str) -> np.ndarray:
        """Reward column ``name`` (click, play or quality_play) as float64."""
        return getattr(self, name).astype(np.float64)

    def __len__(self) -> int:
        return int(self.action.shape[0])


@dataclass
class ArtworkCounts:
    """Additive per-artwork statistics: impressions and summed reward per flat artwork id."""

    shows: np.ndarray     # (n_artworks,) float64
    rewards: np.ndarray   # (n_artworks,) float64

    def __add__(self, other: "ArtworkCounts") -> "ArtworkCounts":
        return ArtworkCounts(self.shows + other.shows, self.rewards + other.rewards)

    @staticmethod
    def zeros(n_artworks: int) -> "ArtworkCounts":
        return ArtworkCounts(np.zeros(n_artworks), np.zeros(n_artworks))


def sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one column per row of ``probs`` (n, K) by inverse CDF; one uniform per row
    (compiled: :func:`sim.kernels.choice.inverse_cdf`, which also guards against float
    round-off landing on a zero-probability column). Returns (n,) int64."""
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] == 0:    # the kernel does not check bounds
        raise ValueError(f"probabilities must have shape (n, K) with K >= 1, got {probs.shape}")
    if probs.dtype not in (np.float32, np.float64):
        probs = probs.astype(np.float64)
    return inverse_cdf(probs, rng.random(probs.shape[0]))


def argmax_uniform_ties(scores: np.ndarray, mask: np.ndarray, atol: float = 1e-12) -> np.ndarray:
    """Probabilities (n, K) putting equal mass on every valid candidate that attains the max."""
    s = np.where(mask, scores, -np.inf)
    best = s.max(axis=1, keepdims=True)
    top = mask & (s >= best - atol)
    return top / top.sum(axis=1, keepdims=True)


def uniform_probabilities(mask: np.ndarray) -> np.ndarray:
    return mask / mask.sum(axis=1, keepdims=True)


class ArtworkPolicy:
    """Base class: subclasses implement :meth:`probabilities` and, if they learn,
    :meth:`sufficient_stats` and :meth:`update`. Hyperparameters: a ``Params`` dataclass
    extending :class:`ArtworkPolicy.Params`, passed to the constructor by keyword (or in
    declaration order); a subclass in sim/ that sets ``name`` is selectable as ``policy.name``.

    Class attributes
    ----------------
    name : registry name
    reads_ground_truth : True only for oracle baselines; the engine then calls
        :meth:`attach_ground_truth`.
    propensity_is_estimated : True when probabilities come from Monte Carlo; logged in metrics.
    """

    name = "base"
    reads_ground_truth = False
    propensity_is_estimated = False
    uses_shown_artworks = False

    @dataclass(frozen=True)
    class Params:
        reward: str = param("quality_play", choices=REWARD_NAMES, doc="logged outcome the policy learns from")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__ and cls.__module__.startswith("sim."):
            POLICIES.add(cls)

    def __init__(self, *args: Any, **kwargs: Any):
        """Validate the hyperparameters declared in ``Params`` and set them as attributes;
        missing ones take their declared defaults. Raises :class:`sim.config.ConfigError` (a
        ``ValueError``) naming the parameter."""
        declared = hyperparameters(type(self))
        names = [f.name for f in dataclasses.fields(declared) if f.init]
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} positional "
                            f"hyperparameters ({', '.join(names)}), got {len(args)}")
        for name, value in zip(names, args):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__} got two values for {name!r}")
            kwargs[name] = value
        check_keys("", kwargs, names, what=f"policy {type(self).__name__}")
        params = from_mapping(declared, kwargs, "")
        for f in dataclasses.fields(params):
            setattr(self, f.name, getattr(params, f.name))
        self.model_version_ = 0

    # ---- lifecycle ------------------------------------------------------------------------
    def reset(self, catalog: "Catalog") -> None:
        """Forget everything learned; size learned state for ``catalog``."""
        self.catalog_ = catalog
        self.model_version_ = 0

    def attach_ground_truth(self, response: "ResponseModel") -> None:  # pragma: no cover
        raise TypeError(f"policy {self.name!r} does not read ground truth")

    def get_params(self) -> dict[str, Any]:
        """Hyperparameters: public attributes not ending in ``_``."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}

    # ---- contract -------------------------------------------------------------------------
    def probabilities(self, batch: DecisionBatch) -> np.ndarray:
        raise NotImplementedError

    def select(self, batch: DecisionBatch, rng: np.random.Generator) -> Selection:
        probs = self.probabilities(batch)
        action = sample_rows(probs, rng)
        rows = np.arange(len(batch))
        return Selection(action, batch.candidates[rows, action], probs[rows, action])

    def sufficient_stats(self, feedback: FeedbackBatch) -> Any:
        return None

    def update(self, stats: Any) -> None:
        self.model_version_ += 1
