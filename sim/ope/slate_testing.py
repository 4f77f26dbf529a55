"""A synthetic slate bandit with a known value, and the conformance check of slate estimators.

:func:`make_slate_problem` draws pages of ``len_list`` slots, ``n_actions`` artworks per slot,
a logging policy and a target policy that pick each slot's artwork independently (per-slot
probabilities that differ between slots), and rewards from one of two known models:

* ``independent`` -- r_l ~ Bernoulli(q[l, a_l]): a tile ignores the others;
* ``cascade`` -- the member reads the slots in order and stops at the first success:
  r_l ~ Bernoulli(q[l, a_l]) if no earlier slot succeeded, else 0. Earlier artworks change
  whether a later tile is reached, as on a page where tiles compete.

The true page value of the target is exact (a closed form, no simulation):
``sum_l E_pi q_l`` (independent) and ``sum_l prod_{j<l} (1 - E_pi q_j) E_pi q_l`` (cascade), with
``E_pi q_l = sum_a pi_e(a | l) q[l, a]``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

SLATE_MODELS = ("independent", "cascade")


def make_slate_problem(rng: np.random.Generator, n_slates: int = 500, len_list: int = 3,
                       n_actions: int = 3, model: str = "independent",
                       q: np.ndarray | None = None, behaviour: np.ndarray | None = None,
                       target: np.ndarray | None = None) -> tuple[dict[str, Any], float]:
    """(OBP-style slate inputs with the target's arrays, true page value of the target).

    ``q``, ``behaviour``, ``target``: (len_list, n_actions) reward means and per-slot policies;
    fixed defaults (different per slot) when None. The returned dict holds every input of every
    built-in slate estimator; ``q_hat`` is the per-slot mean reward ``q`` (a deliberately
    myopic Q-function: right under ``independent``, wrong under ``cascade``).
    """
    if model not in SLATE_MODELS:
        raise ValueError(f"model must be one of {', '.join(SLATE_MODELS)}, got {model!r}")
    L, K = len_list, n_actions
    if q is None:       # the best artwork differs per slot: 0.05 .. 0.65
        q = 0.05 + 0.6 * ((np.arange(L)[:, None] + np.arange(K)[None, :]) % K) / max(K - 1, 1)
    if behaviour is None:
        behaviour = np.full((L, K), 1.0 / K)
    if target is None:  # favours each slot's best artwork: a strong tile early is reached first
        target = np.full((L, K), 0.4 / max(K - 1, 1))
        target[np.arange(L), q.argmax(axis=1)] = 0.6 if K > 1 else 1.0
    action = np.stack([rng.choice(K, size=n_slates, p=behaviour[l]) for l in range(L)], axis=1)
    slot = np.broadcast_to(np.arange(L), (n_slates, L))
    success = rng.random((n_slates, L)) < q[slot, action]
    if model == "cascade":
        reached = np.cumsum(success, axis=1) - success == 0     # no success before slot l
        success &= reached
    p_b, p_e = behaviour[slot, action], target[slot, action]
    eq = (target * q).sum(axis=1)                                # E_pi q_l, (L,)
    value = float(eq.sum() if model == "independent"
                  else (np.r_[1.0, np.cumprod(1 - eq)[:-1]] * eq).sum())
    flat = lambda a: np.ascontiguousarray(a).reshape(-1)        # noqa: E731 -- rows (slate, slot)
    rows = dict(
        slate_id=np.repeat(np.arange(n_slates), L), position=flat(slot), reward=flat(success).astype(float),
        action=flat(action), pscore=np.repeat(p_b.prod(axis=1), L), pscore_item_position=flat(p_b),
        pscore_cascade=flat(np.cumprod(p_b, axis=1)), evaluation_policy_pscore=np.repeat(p_e.prod(axis=1), L),
        evaluation_policy_pscore_item_position=flat(p_e),
        evaluation_policy_pscore_cascade=flat(np.cumprod(p_e, axis=1)),
        q_hat=np.tile(q, (n_slates, 1)), evaluation_policy_action_dist=np.tile(target, (n_slates, 1)))
    return rows, value


def check_slate_estimator(estimator: Any, *, n_seeds: int = 200, n_slates: int = 300,
                          rng_seed: int = 0, tolerance_se: float = 4.0) -> None:
    """Check a slate estimator (instance, class, name or import path) against the contract of
    :class:`sim.ope.estimators.slate.SlateEstimator`; raise AssertionError naming the violation.

    * the value is finite, the bootstrap interval (over pages) contains it, the same rng gives
      the same estimate, ``estimate_interval`` agrees, and shuffling the rows changes nothing;
    * on-policy (target = logger) every weight is 1 and the estimate is the mean page reward
      (for an estimator with a reward model: with ``q_hat = 0``);
    * a missing required input is refused with a ValueError naming it;
    * unbiased on :func:`make_slate_problem` under every model its ``assumption`` covers: the
      mean error over ``n_seeds`` logs is within ``tolerance_se`` standard errors of zero.
    """
    from sim.ope.estimators.slate import SlateEstimator, build_slate_estimator

    est = build_slate_estimator(estimator)
    label = f"{type(est).__qualname__} ({est.name})"
    assert isinstance(est, SlateEstimator), f"{label} is not a SlateEstimator"
    assert est.assumption in ("none", "cascade", "independent"), f"{label}: unknown assumption {est.assumption!r}"
    log, _ = make_slate_problem(np.random.default_rng([rng_seed, 0]), n_slates)
    one = est.estimate(rng=np.random.default_rng(rng_seed), n_bootstrap=200, **log)
    again = est.estimate(rng=np.random.default_rng(rng_seed), n_bootstrap=200, **log)
    assert math.isfinite(one.value), f"{label}: value {one.value} is not finite"
    assert one == again, f"{label}: the same rng gave {one} and then {again}"
    assert one.ci_low <= one.value <= one.ci_high, f"{label}: interval does not contain {one.value}"
    interval = est.estimate_interval(n_bootstrap_samples=200, random_state=rng_seed, **log)
    assert interval["mean"] == one.value, f"{label}: estimate_interval {interval} differs from {one}"
    perm = np.random.default_rng(rng_seed).permutation(len(log["reward"]))
    shuffled = {k: np.asarray(v)[perm] for k, v in log.items()}
    assert math.isclose(est.estimate_policy_value(**shuffled), one.value, rel_tol=1e-9, abs_tol=1e-12), \
        f"{label}: the estimate depends on the order of the rows"
    on_policy = {**log, "q_hat": np.zeros_like(log["q_hat"])}
    for b, e in (("pscore", "evaluation_policy_pscore"),
                 ("pscore_item_position", "evaluation_policy_pscore_item_position"),
                 ("pscore_cascade", "evaluation_policy_pscore_cascade")):
        on_policy[e] = log[b]
    page_mean = log["reward"].sum() / np.unique(log["slate_id"]).size
    got = est.estimate_policy_value(**on_policy)
    assert math.isclose(got, page_mean, rel_tol=1e-9), \
        f"{label}: on-policy estimate {got} is not the mean page reward {page_mean}"
    for name in est.requires:
        try:
            est.estimate_policy_value(**{k: v for k, v in log.items() if k != name})
        except ValueError as err:
            assert name in str(err), f"{label}: refusing a log without {name} should name it: {err}"
        else:
            raise AssertionError(f"{label} ran without {name}, which it requires")
    models = {"none": SLATE_MODELS, "cascade": SLATE_MODELS, "independent": ("independent",)}[est.assumption]
    for model in models:
        errors = np.empty(n_seeds)
        for s in range(n_seeds):
            log, truth = make_slate_problem(np.random.default_rng([rng_seed, 1, s]), n_slates, model=model)
            errors[s] = est.estimate_policy_value(**log) - truth
        bias, se = errors.mean(), errors.std(ddof=1) / math.sqrt(n_seeds)
        assert abs(bias) <= tolerance_se * se + 1e-9, \
            f"{label} is biased under the {model} model: mean error {bias:.5f} over {n_seeds} logs, " \
            f"standard error {se:.5f} (tolerance {tolerance_se} standard errors)"
