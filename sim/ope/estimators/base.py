"""The contract of an off-policy estimator, its inputs, its registry, and evaluating many at once.

An estimator is one class (Open Bandit Pipeline's shape, ``obp.ope.BaseOffPolicyEstimator``):

* ``_estimate_round_rewards(data) -> (n,)`` -- per-impression rewards whose mean is the
  estimate (implement this for a plain average, like OBP), or
* ``_estimate_terms(data) -> Terms`` -- the per-impression pieces
  ``value = mean(direct) + sum(correction) / sum(normaliser)`` (implement this for a
  self-normalised estimator, so that the bootstrap resamples it as a ratio);

and the base class derives ``estimate_policy_value``, ``estimate_interval`` (OBP's dict) and
``estimate`` (an :class:`Estimate`) from either. ``data`` is an :class:`OffPolicyData`: the
validated arrays with the quantities estimators share (importance weights, the target's and the
reward model's values at each impression's own position).

Class attributes say what an estimator needs: ``name`` (its label and, for built-ins, its
registry key), ``needs_reward_model`` (``estimated_rewards_by_reg_model`` must be given),
``needs_pscore``. Hyperparameters are dataclass fields declared with :func:`sim.schema.param`
(validated at construction, listed by ``sim.schema.hyperparameters``). Built-ins live in the
modules of this package and register themselves in :data:`ESTIMATORS` by ``name``; a user's
estimator is selected by import path (``_target_``) and is never registered.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Iterable, Mapping

import numpy as np

from sim.ope.bootstrap import Terms, percentile_intervals
from sim.schema import ConfigError, Registry, check_fields, closest_text, from_mapping

#: Modules whose estimator classes are built-ins (registered by name).
BUILTIN_PACKAGE = "sim.ope.estimators"


@dataclass(frozen=True)
class Estimate:
    """One estimate of a target policy's value (mean reward per impression)."""

    estimator: str
    value: float
    ci_low: float
    ci_high: float

    def as_obp_interval(self, alpha: float = 0.05) -> dict[str, float]:
        """OBP's ``estimate_interval`` layout: ``{'mean', '95.0% CI (lower)', '95.0% CI (upper)'}``."""
        level = 100 * (1 - alpha)
        return {"mean": self.value, f"{level}% CI (lower)": self.ci_low,
                f"{level}% CI (upper)": self.ci_high}


# ---- inputs --------------------------------------------------------------------------------------
class OffPolicyData:
    """Validated inputs of one evaluation of one target policy, in OBP's names and shapes.

    Attributes
    ----------
    reward : ndarray, shape (n,), float
    action : ndarray, shape (n,), int in ``[0, n_actions)``
    pscore : ndarray, shape (n,), in (0, 1], or None when no estimator asked for it
    action_dist : ndarray, shape (n, n_actions, len_list); sums to 1 over actions
    position : ndarray, shape (n,), int in ``[0, len_list)`` (zeros when not given)
    estimated_rewards_by_reg_model : ndarray like ``action_dist``, or None

    The derived arrays below are computed once and shared by every estimator on this data.
    """

    def __init__(self, reward, action, pscore, action_dist, position=None,
                 estimated_rewards_by_reg_model=None, *, need_pscore: bool = True):
        action_dist = np.asarray(action_dist, dtype=np.float64)
        if action_dist.ndim != 3:
            raise ValueError("action_dist must have shape (n_rounds, n_actions, len_list), "
                             f"got shape {action_dist.shape}")
        n, n_actions, len_list = action_dist.shape
        reward = np.asarray(reward, dtype=np.float64)
        action = np.asarray(action)
        for name, arr in (("reward", reward), ("action", action)):
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},) like action_dist's first axis, "
                                 f"got {arr.shape}")
        if not np.issubdtype(action.dtype, np.integer):
            raise ValueError(f"action must hold integers, got dtype {action.dtype}")
        if n and (action.min() < 0 or action.max() >= n_actions):
            raise ValueError(f"action must be in [0, {n_actions}) (n_actions = action_dist.shape[1])")
        if not np.isfinite(reward).all():
            raise ValueError(f"reward has {int((~np.isfinite(reward)).sum())} non-finite values")
        position = np.zeros(n, dtype=np.int64) if position is None else np.asarray(position)
        if position.shape != (n,) or not np.issubdtype(position.dtype, np.integer):
            raise ValueError(f"position must be integers of shape ({n},), got {position.dtype} {position.shape}")
        if n and (position.min() < 0 or position.max() >= len_list):
            raise ValueError(f"position must be in [0, {len_list}) (len_list = action_dist.shape[2])")
        sums = action_dist[np.arange(n), :, position].sum(axis=1)
        if not np.allclose(sums, 1.0, atol=1e-6):
            raise ValueError("action_dist must sum to 1 over actions at each impression's position; "
                             f"{int((~np.isclose(sums, 1.0, atol=1e-6)).sum())} rows do not")
        if need_pscore:
            pscore = np.asarray(pscore, dtype=np.float64)
            if pscore.shape != (n,):
                raise ValueError(f"pscore must have shape ({n},), got {pscore.shape}")
            bad = ~((pscore > 0) & (pscore <= 1))
            if bad.any():
                raise ValueError(f"pscore must be in (0, 1]; {int(bad.sum())} values are not")
        else:
            pscore = None
        q_hat = estimated_rewards_by_reg_model
        if q_hat is not None:
            q_hat = np.asarray(q_hat, dtype=np.float64)
            if q_hat.shape != action_dist.shape:
                raise ValueError("estimated_rewards_by_reg_model must have the shape of action_dist "
                                 f"{action_dist.shape}, got {q_hat.shape}")
        self.reward, self.action, self.pscore = reward, action.astype(np.int64), pscore
        self.action_dist, self.position = action_dist, position.astype(np.int64)
        self.estimated_rewards_by_reg_model = q_hat

    def __len__(self) -> int:
        return int(self.reward.shape[0])

    @cached_property
    def rows(self) -> np.ndarray:
        return np.arange(len(self))

    @cached_property
    def target_logged(self) -> np.ndarray:
        """pi_e(a_i | x_i) at the impression's own position, shape (n,)."""
        return self.action_dist[self.rows, self.action, self.position]

    @cached_property
    def target_all(self) -> np.ndarray:
        """pi_e(. | x_i) at the impression's own position, shape (n, n_actions)."""
        return self.action_dist[self.rows, :, self.position]

    @cached_property
    def weight(self) -> np.ndarray:
        """Importance weight w_i = pi_e(a_i | x_i) / pscore_i, shape (n,)."""
        if self.pscore is None:
            raise ValueError("this estimator needs pscore")
        return self.target_logged / self.pscore

    def _q_hat(self) -> np.ndarray:
        if self.estimated_rewards_by_reg_model is None:
            raise ValueError("this estimator needs estimated_rewards_by_reg_model")
        return self.estimated_rewards_by_reg_model

    @cached_property
    def q_all(self) -> np.ndarray:
        """q_hat(x_i, .) at the impression's own position, shape (n, n_actions)."""
        return self._q_hat()[self.rows, :, self.position]

    @cached_property
    def q_logged(self) -> np.ndarray:
        """q_hat(x_i, a_i), shape (n,)."""
        return self._q_hat()[self.rows, self.action, self.position]

    @cached_property
    def q_target(self) -> np.ndarray:
        """q_hat(x_i, pi_e) = sum_a pi_e(a | x_i) q_hat(x_i, a), shape (n,)."""
        return (self.target_all * self.q_all).sum(axis=1)


# ---- the contract --------------------------------------------------------------------------------
class OffPolicyEstimator:
    """Base class of every off-policy estimator (see the module docstring for the contract).

    Subclass it as a ``@dataclass(frozen=True)`` whose fields are the hyperparameters, declared
    with :func:`sim.schema.param`; implement ``_estimate_round_rewards`` or ``_estimate_terms``.
    """

    #: Label of the estimates; for built-ins also the registry key (defaults to the class name).
    name: ClassVar[str] = ""
    #: True if the estimator reads ``estimated_rewards_by_reg_model``.
    needs_reward_model: ClassVar[bool] = False
    #: False if the estimator never reads ``pscore`` (it is then not validated).
    needs_pscore: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            cls.name = cls.__name__
        elif cls.__module__.startswith(BUILTIN_PACKAGE + "."):
            ESTIMATORS.add(cls)

    def __post_init__(self) -> None:
        if dataclasses.is_dataclass(self):
            check_fields(self, self.name)

    # -- what a subclass implements (one of the two) --
    def _estimate_round_rewards(self, data: OffPolicyData) -> np.ndarray:
        """Per-impression rewards, shape (n,), whose mean is the estimate (OBP's method).

        For an estimator defined by :meth:`_estimate_terms` this is
        ``direct + correction * n / sum(normaliser)``."""
        if type(self)._estimate_terms is OffPolicyEstimator._estimate_terms:
            raise NotImplementedError(f"{type(self).__qualname__} must implement "
                                      "_estimate_round_rewards(data) or _estimate_terms(data)")
        t = self._estimate_terms(data)
        return t.direct + t.correction * (len(data) / t.normaliser.sum())

    def _estimate_terms(self, data: OffPolicyData) -> Terms:
        """Per-impression :class:`~sim.ope.bootstrap.Terms`; by default the round rewards as the
        direct term (an average with no self-normalisation)."""
        n = len(data)
        return Terms(np.asarray(self._estimate_round_rewards(data), dtype=np.float64),
                     np.zeros(n), np.ones(n))

    # -- derived --
    def prepare(self, reward, action, action_dist, pscore=None, position=None,
                estimated_rewards_by_reg_model=None) -> OffPolicyData:
        """Validate the arrays for this estimator (what it needs must be given)."""
        if self.needs_reward_model and estimated_rewards_by_reg_model is None:
            raise ValueError(f"estimator {self.name!r} needs estimated_rewards_by_reg_model")
        return OffPolicyData(reward, action, pscore, action_dist, position,
                             estimated_rewards_by_reg_model, need_pscore=self.needs_pscore)

    def terms(self, data: OffPolicyData) -> Terms:
        """The estimate's per-impression terms on validated data."""
        return self._estimate_terms(data)

    def estimate_policy_value(self, reward, action, action_dist, pscore=None, position=None,
                              estimated_rewards_by_reg_model=None, **_: Any) -> float:
        """The estimated value of the target policy (OBP's method)."""
        return self.terms(self.prepare(reward, action, action_dist, pscore, position,
                                       estimated_rewards_by_reg_model)).value

    def estimate(self, reward, action, action_dist, pscore=None, position=None,
                 estimated_rewards_by_reg_model=None, *, rng: np.random.Generator | None = None,
                 n_bootstrap: int = 1000, alpha: float = 0.05, **_: Any) -> Estimate:
        """The estimate with its percentile bootstrap interval (NaN without ``rng``)."""
        t = self.terms(self.prepare(reward, action, action_dist, pscore, position,
                                    estimated_rewards_by_reg_model))
        ci = (percentile_intervals([t], rng, n_bootstrap, alpha)[0] if rng is not None
              else (np.nan, np.nan))
        return Estimate(self.name, t.value, float(ci[0]), float(ci[1]))

    def estimate_interval(self, reward, action, action_dist, pscore=None, position=None,
                          estimated_rewards_by_reg_model=None, alpha: float = 0.05,
                          n_bootstrap_samples: int = 1000, random_state: int | np.random.Generator = 0,
                          **_: Any) -> dict[str, float]:
        """OBP's ``estimate_interval`` dict; ``mean`` is the full-log estimate (not the bootstrap
        mean), the interval the percentile bootstrap over impressions."""
        rng = (random_state if isinstance(random_state, np.random.Generator)
               else np.random.default_rng(random_state))
        return self.estimate(reward, action, action_dist, pscore, position,
                             estimated_rewards_by_reg_model, rng=rng, n_bootstrap=n_bootstrap_samples,
                             alpha=alpha).as_obp_interval(alpha)


ESTIMATORS: Registry[OffPolicyEstimator] = Registry("estimator", OffPolicyEstimator, (BUILTIN_PACKAGE,))


def build_estimator(spec: Any, key: str = "estimator", **shared: Any) -> OffPolicyEstimator:
    """An estimator from a name (``"ipw"``), an import path (``"my_pkg.MyEstimator"``), a mapping
    (``{name: ipw, lambda_: 50}`` or ``{_target_: ..., ...}``), a class or an instance.

    ``shared`` hyperparameters (e.g. ``lambda_`` from a command line) go to the estimators that
    declare them and are ignored by the others; keys of a mapping win over them.
    """
    if isinstance(spec, OffPolicyEstimator):
        return spec
    if isinstance(spec, type):
        cls, params = spec, {}
        if not issubclass(cls, OffPolicyEstimator):
            raise ConfigError(key, spec, "a subclass of sim.ope.estimators.OffPolicyEstimator")
    else:
        if isinstance(spec, str) and "." not in spec and spec not in ESTIMATORS:
            raise ConfigError(key, spec, f"one of {', '.join(ESTIMATORS.names())}"
                              f"{closest_text(spec, ESTIMATORS.names())}, or the import path of an "
                              "OffPolicyEstimator subclass (my_package.MyEstimator)")
        if isinstance(spec, str):
            spec = {"_target_": spec} if "." in spec else {"name": spec}
        cls, params = ESTIMATORS.resolve(spec, key)
    if not dataclasses.is_dataclass(cls):
        if params:
            raise ConfigError(f"{key}.{next(iter(params))}", next(iter(params.values())),
                              f"no hyperparameters: {cls.__qualname__} is not a dataclass")
        return cls()
    declared = {f.name for f in dataclasses.fields(cls) if f.init}
    given = {**{k: v for k, v in shared.items() if k in declared}, **params}
    # Keyed by the estimator's name, as its own validation keys it (``ipw.lambda_``).
    return from_mapping(cls, given, cls.name)


def estimate_all(reward, action, pscore, action_dists: Mapping[str, np.ndarray], position=None,
                 estimated_rewards_by_reg_model=None, *, estimators: Iterable[Any] | None = None,
                 lambda_: float = math.inf, rng: np.random.Generator | None = None,
                 n_bootstrap: int = 1000, alpha: float = 0.05) -> dict[str, dict[str, Estimate]]:
    """Every estimator for every target policy, intervals on one shared set of resamples.

    Parameters
    ----------
    action_dists : {policy name: ndarray, shape (n, n_actions, len_list)}
    estimated_rewards_by_reg_model : ndarray, shape (n, n_actions, len_list), or None to skip
        the estimators that need a reward model
    estimators : names, import paths, classes or instances (:func:`build_estimator`); default:
        every built-in
    lambda_ : clipping threshold of the importance weight, for the estimators that declare it

    Returns
    -------
    {policy name: {estimator name: Estimate}}
    """
    specs = ESTIMATORS.names() if estimators is None else list(estimators)
    built = [build_estimator(e, lambda_=lambda_) for e in specs]
    built = [e for e in built if estimated_rewards_by_reg_model is not None or not e.needs_reward_model]
    keys, terms = [], []
    for policy, dist in action_dists.items():
        # Validate once per policy; every estimator then reads the same (cached) arrays.
        data = OffPolicyData(reward, action, pscore, dist, position, estimated_rewards_by_reg_model)
        for e in built:
            keys.append((policy, e.name))
            terms.append(e.terms(data))
    return estimates_by_policy(action_dists, keys, terms, rng, n_bootstrap, alpha)


def estimates_by_policy(policies: Iterable[str], keys: list[tuple[str, str]], terms: list[Terms],
                        rng: np.random.Generator | None, n_bootstrap: int,
                        alpha: float) -> dict[str, dict[str, Estimate]]:
    """``{policy: {estimator: Estimate}}`` from each (policy, estimator) key's terms, with
    (1 - alpha) intervals from one shared set of bootstrap resamples (NaN when ``rng`` is None).
    Used by every ``estimate_*`` entry point, per-impression and slate alike."""
    cis = (percentile_intervals(terms, rng, n_bootstrap, alpha) if rng is not None
           else np.full((len(terms), 2), np.nan))
    out: dict[str, dict[str, Estimate]] = {p: {} for p in policies}
    for (policy, e), t, ci in zip(keys, terms, cis):
        out[policy][e] = Estimate(e, t.value, float(ci[0]), float(ci[1]))
    return out
