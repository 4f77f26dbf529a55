"""Page-level (slate) off-policy estimators in Open Bandit Pipeline's slate calling convention.

A *slate* is one page (visit): its tiles are the positions, the artwork chosen for each tile the
action. Every array has one row per logged tile, shape (n,), in any order:

* ``slate_id`` -- the page of the row; ``position`` -- its slot, in the order the member reads the
  page (row, then column); ``reward`` -- r_l, the tile's reward (e.g. its quality play);
* ``pscore`` -- the logging policy's probability of the *whole* logged page, pi_b(a_1..a_L | x),
  the same on every row of a page; ``pscore_item_position`` -- the marginal pi_b(a_l | x) of the
  tile's own artwork; ``pscore_cascade`` -- pi_b(a_1..a_l | x), the page up to and including slot l;
* ``evaluation_policy_pscore``, ``evaluation_policy_pscore_item_position``,
  ``evaluation_policy_pscore_cascade`` -- the same three for the target policy pi_e;
* cascade-dr also reads ``action`` (n,) int, ``q_hat`` (n, K) -- an estimate of
  Q_l(x, a_1..a_{l-1}, a) = E[sum_{l' >= l} r_l' | x, a_1..a_{l-1}, a] for every candidate a of
  slot l (the logged prefix, candidate a here, the target afterwards) -- and
  ``evaluation_policy_action_dist`` (n, K), pi_e(a | x, a_1..a_{l-1}) per candidate.

The value is the expected page reward (e.g. quality plays per page): the mean over pages of
the per-page sum of the round rewards, as OBP. With w = pi_e / pi_b of the matching kind:

===========  ======================================================  ============================
sips         sum_l w(a_1..a_L) r_l                                    no assumption (McInerney 2020)
iips         sum_l w(a_l) r_l                                         r_l depends on a_l only
rips         sum_l w(a_1..a_l) r_l                                    cascade: on a_1..a_l only
cascade-dr   sum_l w(a_1..a_l) (r_l - Q_l(a_l)) + w(a_1..a_{l-1})    cascade (Kiyohara et al.,
             sum_a pi_e(a) Q_l(a)                                     WSDM 2022)
pi           (sum_l w(a_l) - (L - 1)) sum_l r_l                       page reward additive over
                                                                      slots, logging independent
                                                                      across slots (Swaminathan
                                                                      et al., NeurIPS 2017)
===========  ======================================================  ============================

``pi`` is the pseudoinverse estimator in its closed form for a logging policy that draws each
slot independently (every built-in except the one-posterior-draw-per-page family): then
``q^T Gamma^+ 1_s = sum_l pi_e(a_l)/pi_b(a_l) - (L - 1)``. L is the number of slots of each page
(pages may differ in length).

Every estimate has a percentile bootstrap interval that resamples *pages* (never tiles), on the
shared resamples of :func:`sim.ope.bootstrap.percentile_intervals`. A new slate estimator is one
subclass of :class:`SlateEstimator` (a frozen dataclass) implementing ``_estimate_round_rewards``;
``sim.ope.slate_testing.check_slate_estimator`` checks it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping

import numpy as np

from sim.ope.bootstrap import Terms, percentile_intervals
from sim.ope.estimators.base import BUILTIN_PACKAGE, Estimate, estimates_by_policy
from sim.schema import ConfigError, Registry, closest_text

BEHAVIOUR = ("pscore", "pscore_item_position", "pscore_cascade")
TARGET = ("evaluation_policy_pscore", "evaluation_policy_pscore_item_position",
          "evaluation_policy_pscore_cascade")
#: Inputs that are one probability per row, and which of them must be constant within a page.
PER_PAGE = ("pscore", "evaluation_policy_pscore")
CASCADES = ("pscore_cascade", "evaluation_policy_pscore_cascade")


class SlateData:
    """Validated slate inputs, rows sorted by (slate, position); arrays of shape (n,) unless noted.

    Attributes: ``slate`` (n,) page index in ``[0, n_slates)``, ``position``, ``reward``, every
    probability array given (by its OBP name), ``action``, ``q_hat`` and
    ``evaluation_policy_action_dist`` (n, K) when given; ``order`` maps sorted rows to input rows.
    """

    def __init__(self, slate_id, position, reward, **given: Any):
        slate_id, position = np.asarray(slate_id), np.asarray(position)
        n = slate_id.shape[0] if slate_id.ndim == 1 else -1
        for name, a in (("slate_id", slate_id), ("position", position)):
            if a.ndim != 1 or a.shape[0] != n or not np.issubdtype(a.dtype, np.integer):
                raise ValueError(f"{name} must be integers of shape (n,) like slate_id, got "
                                 f"{a.dtype} {a.shape}")
        reward = self._vector("reward", reward, n)
        self.order = np.lexsort((position, slate_id))
        sid, pos = slate_id[self.order], position[self.order]
        dup = (sid[1:] == sid[:-1]) & (pos[1:] == pos[:-1])
        if dup.any():
            i = int(np.flatnonzero(dup)[0]) + 1
            raise ValueError(f"(slate_id, position) must be unique: {int(dup.sum())} rows repeat a "
                             f"position of their slate (first: slate_id {sid[i]}, position {pos[i]})")
        self.first = np.r_[True, sid[1:] != sid[:-1]] if n else np.zeros(0, bool)
        self.slate = np.cumsum(self.first) - 1
        self.n_slates = int(self.first.sum())
        self.start = np.flatnonzero(self.first)
        self.position, self.reward = pos.astype(np.int64), reward[self.order]
        self.given = set()
        for name in BEHAVIOUR + TARGET:
            if given.get(name) is not None:
                lo_open = name in BEHAVIOUR   # a logged row had positive probability
                setattr(self, name, self._probability(name, given[name], n, lo_open)[self.order])
                self.given.add(name)
        for name in PER_PAGE:
            if name in self.given:
                v = getattr(self, name)
                bad = ~np.isclose(v, v[self.start][self.slate], rtol=1e-9, atol=0)
                if bad.any():
                    raise ValueError(f"{name} is the probability of the whole page and must be the same "
                                     f"on every row of a slate; {int(bad.sum())} rows differ from their "
                                     "slate's first row")
        for name in CASCADES:
            if name in self.given:
                v = getattr(self, name)
                up = ~self.first[1:] & (v[1:] > v[:-1] * (1 + 1e-9))
                if up.any():
                    raise ValueError(f"{name} is the probability of the page up to each position and "
                                     f"cannot grow along a slate; {int(up.sum())} rows exceed the row "
                                     "before them (are positions in reading order?)")
        self._model_inputs(given, n)

    @staticmethod
    def _vector(name: str, values, n: int) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64)
        if v.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) like slate_id, got {v.shape}")
        if not np.isfinite(v).all():
            raise ValueError(f"{name} has {int((~np.isfinite(v)).sum())} non-finite values")
        return v

    def _probability(self, name: str, values, n: int, lo_open: bool) -> np.ndarray:
        v = self._vector(name, values, n)
        bad = ~(((v > 0) if lo_open else (v >= 0)) & (v <= 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name} must be in {'(0' if lo_open else '[0'}, 1]; {int(bad.sum())} "
                             f"of {n} values are not (first: row {i}, value {v[i]!r})")
        return v

    def _model_inputs(self, given: Mapping[str, Any], n: int) -> None:
        q_hat = given.get("q_hat", given.get("estimated_rewards_by_reg_model"))
        dist = given.get("evaluation_policy_action_dist")
        action = given.get("action")
        if q_hat is None and dist is None and action is None:
            return
        if q_hat is None or dist is None or action is None:
            missing = [k for k, v in (("action", action), ("q_hat", q_hat),
                                      ("evaluation_policy_action_dist", dist)) if v is None]
            raise ValueError(f"action, q_hat and evaluation_policy_action_dist go together; missing: "
                             f"{', '.join(missing)}")
        action = np.asarray(action)
        if action.shape != (n,) or not np.issubdtype(action.dtype, np.integer):
            raise ValueError(f"action must be integers of shape ({n},), got {action.dtype} {action.shape}")
        arrays = []
        for name, a in (("q_hat", q_hat), ("evaluation_policy_action_dist", dist)):
            a = np.asarray(a, dtype=np.float64)
            if a.ndim == 1 and n and a.size % n == 0:      # OBP's flat (n * K,) layout
                a = a.reshape(n, -1)
            if a.ndim != 2 or a.shape[0] != n:
                raise ValueError(f"{name} must have shape ({n}, n_actions) (or OBP's flat "
                                 f"(n * n_actions,)), got {a.shape}")
            if not np.isfinite(a).all():
                raise ValueError(f"{name} has {int((~np.isfinite(a)).sum())} non-finite values")
            arrays.append(a[self.order])
        q_hat, dist = arrays
        if q_hat.shape != dist.shape:
            raise ValueError(f"q_hat {q_hat.shape} and evaluation_policy_action_dist {dist.shape} "
                             "must have the same shape")
        action = action[self.order]
        if n and (action.min() < 0 or action.max() >= dist.shape[1]):
            raise ValueError(f"action must be in [0, {dist.shape[1]}) (the columns of q_hat)")
        sums = dist.sum(axis=1)
        if (dist < 0).any() or not np.allclose(sums, 1.0, atol=1e-6):
            raise ValueError("evaluation_policy_action_dist must be probabilities summing to 1 on "
                             f"every row; {int((~np.isclose(sums, 1.0, atol=1e-6)).sum())} rows do not")
        self.action, self.q_hat, self.evaluation_policy_action_dist = action.astype(np.int64), q_hat, dist
        self.given |= {"action", "q_hat", "evaluation_policy_action_dist"}

    def __len__(self) -> int:
        return int(self.reward.shape[0])

    def need(self, estimator: str, *names: str) -> list[np.ndarray]:
        """The arrays ``names``; a ValueError names the estimator and what is missing."""
        missing = [k for k in names if k not in self.given]
        if missing:
            raise ValueError(f"slate estimator {estimator!r} needs {', '.join(names)}; missing: "
                             f"{', '.join(missing)}")
        return [getattr(self, k) for k in names]

    def per_slate(self, values: np.ndarray) -> np.ndarray:
        """Sum of row values per page, shape (n_slates,)."""
        return np.bincount(self.slate, weights=values, minlength=self.n_slates)

    def previous(self, values: np.ndarray, fill: float = 1.0) -> np.ndarray:
        """Each row's value at the slate's previous position (``fill`` on a slate's first row)."""
        return np.where(self.first, fill, np.r_[fill, values[:-1]])

    def slate_length(self) -> np.ndarray:
        """Number of positions of each row's page, shape (n,)."""
        return np.bincount(self.slate, minlength=self.n_slates)[self.slate]


class SlateEstimator:
    """Base class of page-level estimators: implement ``_estimate_round_rewards(data) -> (n,)``
    (rows in ``data``'s sorted order; their per-page sums are the page estimates).

    Class attributes: ``name`` (label and, for built-ins, registry key), ``requires`` (the inputs
    it reads, besides ``slate_id``, ``position`` and ``reward``) and ``assumption`` -- the reward
    model under which it is unbiased: ``none``, ``cascade`` (r_l depends on the artworks up to
    slot l) or ``independent`` (r_l depends on a_l only).
    """

    name: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    assumption: ClassVar[str] = "none"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            cls.name = cls.__name__
        elif cls.__module__.startswith(BUILTIN_PACKAGE + "."):
            SLATE_ESTIMATORS.add(cls)

    def _estimate_round_rewards(self, data: SlateData) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__qualname__} must implement _estimate_round_rewards(data)")

    def terms(self, data: SlateData) -> Terms:
        """Per-page terms (units of the bootstrap are pages)."""
        pages = data.per_slate(np.asarray(self._estimate_round_rewards(data), dtype=np.float64))
        return Terms(pages, np.zeros(data.n_slates), np.ones(data.n_slates))

    def prepare(self, **inputs: Any) -> SlateData:
        """Validate the inputs (what this estimator reads must be given)."""
        try:
            data = SlateData(**{k: v for k, v in inputs.items() if v is not None})
        except TypeError as e:
            raise ValueError(f"slate estimator {self.name!r}: {e} (inputs: slate_id, position, "
                             f"reward, {', '.join(BEHAVIOUR + TARGET)}, action, q_hat, "
                             "evaluation_policy_action_dist)") from None
        data.need(self.name, *self.requires)
        return data

    def estimate_policy_value(self, **inputs: Any) -> float:
        """The estimated expected page reward (OBP's method; keyword arguments in OBP's names)."""
        return self.terms(self.prepare(**inputs)).value

    def estimate(self, *, rng: np.random.Generator | None = None, n_bootstrap: int = 1000,
                 alpha: float = 0.05, **inputs: Any) -> Estimate:
        """The estimate with its percentile bootstrap interval over pages (NaN without ``rng``)."""
        t = self.terms(self.prepare(**inputs))
        ci = percentile_intervals([t], rng, n_bootstrap, alpha)[0] if rng is not None else (np.nan, np.nan)
        return Estimate(self.name, t.value, float(ci[0]), float(ci[1]))

    def estimate_interval(self, alpha: float = 0.05, n_bootstrap_samples: int = 1000,
                          random_state: int | np.random.Generator = 0, **inputs: Any) -> dict[str, float]:
        """OBP's ``estimate_interval`` dict (``mean`` is the full-log estimate)."""
        rng = (random_state if isinstance(random_state, np.random.Generator)
               else np.random.default_rng(random_state))
        return self.estimate(rng=rng, n_bootstrap=n_bootstrap_samples, alpha=alpha,
                             **inputs).as_obp_interval(alpha)


SLATE_ESTIMATORS: Registry[SlateEstimator] = Registry("slate estimator", SlateEstimator, (BUILTIN_PACKAGE,))


def _weight(data: SlateData, name: str, behaviour: str, target: str) -> np.ndarray:
    b, e = data.need(name, behaviour, target)
    return e / b


@dataclass(frozen=True)
class SlateStandardIPS(SlateEstimator):
    """Standard slate IPS: every tile's reward weighted by the whole page's importance weight.
    Unbiased with no assumption on how tiles interact; its variance grows geometrically with the
    number of tiles (the weight is a product over all of them)."""

    name = "sips"
    requires = ("pscore", "evaluation_policy_pscore")

    def _estimate_round_rewards(self, data: SlateData) -> np.ndarray:
        return _weight(data, self.name, *self.requires) * data.reward


@dataclass(frozen=True)
class SlateIndependentIPS(SlateEstimator):
    """Independent IPS (Li et al. 2018): each tile weighted by its own artwork's weight, i.e.
    per-tile IPS summed over the page. Unbiased only if a tile's reward ignores the other tiles."""

    name = "iips"
    requires = ("pscore_item_position", "evaluation_policy_pscore_item_position")
    assumption = "independent"

    def _estimate_round_rewards(self, data: SlateData) -> np.ndarray:
        return _weight(data, self.name, *self.requires) * data.reward


@dataclass(frozen=True)
class SlateRewardInteractionIPS(SlateEstimator):
    """Reward-interaction IPS (McInerney et al. 2020): tile l weighted by the weight of the page
    up to l. Unbiased when a tile's reward depends only on the tiles read before it (cascade)."""

    name = "rips"
    requires = ("pscore_cascade", "evaluation_policy_pscore_cascade")
    assumption = "cascade"

    def _estimate_round_rewards(self, data: SlateData) -> np.ndarray:
        return _weight(data, self.name, *self.requires) * data.reward


@dataclass(frozen=True)
class SlateCascadeDoublyRobust(SlateEstimator):
    """Cascade doubly robust (Kiyohara et al., WSDM 2022): rips with a Q-function baseline.
    Unbiased under the cascade assumption whatever ``q_hat`` is; with ``q_hat = 0`` it is rips."""

    name = "cascade-dr"
    requires = ("pscore_cascade", "evaluation_policy_pscore_cascade", "action", "q_hat",
                "evaluation_policy_action_dist")
    assumption = "cascade"

    def _estimate_round_rewards(self, data: SlateData) -> np.ndarray:
        w = _weight(data, self.name, "pscore_cascade", "evaluation_policy_pscore_cascade")
        q_logged = data.q_hat[np.arange(len(data)), data.action]
        q_target = (data.evaluation_policy_action_dist * data.q_hat).sum(axis=1)
        return w * (data.reward - q_logged) + data.previous(w) * q_target


@dataclass(frozen=True)
class SlatePseudoInverse(SlateEstimator):
    """PseudoInverse (Swaminathan et al. 2017) for logging independent across slots:
    the page reward times ``sum_l w(a_l) - (L - 1)``. Unbiased when the expected page reward is a
    sum of per-slot terms; reads only page-level rewards (their sum), so it can use a page
    reward that is not attributed to tiles."""

    name = "pi"
    requires = ("pscore_item_position", "evaluation_policy_pscore_item_position")
    assumption = "independent"

    def _estimate_round_rewards(self, data: SlateData) -> np.ndarray:
        w = _weight(data, self.name, *self.requires)
        page_weight = data.per_slate(w) - (np.bincount(data.slate, minlength=data.n_slates) - 1)
        return page_weight[data.slate] * data.reward


#: Names of the built-in slate estimators, in table order.
SLATE_ESTIMATOR_NAMES: tuple[str, ...] = ("sips", "iips", "rips", "cascade-dr", "pi")


def build_slate_estimator(spec: Any, key: str = "slate_estimator") -> SlateEstimator:
    """A slate estimator from a built-in name, an import path, a class or an instance."""
    if isinstance(spec, SlateEstimator):
        return spec
    if isinstance(spec, type) and issubclass(spec, SlateEstimator):
        return spec()
    if isinstance(spec, str) and "." not in spec:
        if spec not in SLATE_ESTIMATORS:
            names = SLATE_ESTIMATORS.names()
            raise ConfigError(key, spec, f"one of {', '.join(names)}{closest_text(spec, names)}, or "
                              "the import path of a SlateEstimator subclass")
        return SLATE_ESTIMATORS.classes[spec]()
    cls, params = SLATE_ESTIMATORS.resolve({"_target_": spec} if isinstance(spec, str) else spec, key)
    return cls(**params)


def estimate_slates(logged: Mapping[str, Any], targets: Mapping[str, Mapping[str, Any]], *,
                    estimators: Iterable[Any] | None = None, rng: np.random.Generator | None = None,
                    n_bootstrap: int = 1000, alpha: float = 0.05) -> dict[str, dict[str, Estimate]]:
    """Every slate estimator for every target policy, intervals on one shared set of page resamples.

    Parameters
    ----------
    logged : the logged arrays (``slate_id``, ``position``, ``reward``, ``pscore``, ...)
    targets : {policy name: its arrays (``evaluation_policy_pscore``, ..., and for cascade-dr
        ``q_hat``, ``evaluation_policy_action_dist``)}
    estimators : names, import paths, classes or instances; default: every built-in. An estimator
        whose inputs are missing for a target is skipped for it.
    """
    built = [build_slate_estimator(e) for e in (estimators if estimators is not None
                                                else SLATE_ESTIMATOR_NAMES)]
    keys, terms = [], []
    for policy, arrays in targets.items():
        data = SlateData(**{k: v for k, v in {**logged, **arrays}.items() if v is not None})
        for e in built:
            if all(r in data.given for r in e.requires):
                keys.append((policy, e.name))
                terms.append(e.terms(data))
    return estimates_by_policy(targets, keys, terms, rng, n_bootstrap, alpha)
