"""Conformance checks every artwork policy must pass (like scikit-learn's ``check_estimator``).

The engine trusts a policy's contract blindly: off-policy estimates divide by the logged
propensity, and shards are reduced by adding sufficient statistics. These checks verify that
contract on a small random batch, for built-in and user-written policies alike::

    from sim.testing import check_policy, make_decision_batch
    policy.reset(world.catalog)        # (oracle policies also need attach_ground_truth)
    batch = make_decision_batch(world.catalog, 64, rng, n_members=world.members.n_members)
    check_policy(policy, world.catalog, batch)

Each check is also a public function ``check_*(policy, batch, feedback, rng_seed)`` listed in
:data:`POLICY_CHECKS`; every failure is an ``AssertionError`` naming what was violated.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np

from sim.features import N_DEVICES, context_width, impression_context
from sim.policies.base import ArtworkPolicy, DecisionBatch, FeedbackBatch, Selection
from sim.streams import generator
from sim.world import Catalog, ResponseModel

__all__ = ["check_policy", "make_decision_batch", "make_feedback", "subset_feedback",
           "POLICY_CHECKS", "check_probabilities", "check_select", "check_deterministic",
           "check_stats_additive", "check_update", "check_choice_frequencies"]


# ---- small random inputs ------------------------------------------------------------------
#: Countries in the contexts of test batches.
TEST_COUNTRIES = 6


def make_decision_batch(catalog: Catalog, n: int, rng: np.random.Generator, *, n_members: int = 1,
                        title: np.ndarray | None = None, rows: int = 10,
                        columns: int = 8) -> DecisionBatch:
    """Random impressions of ``catalog``'s titles, laid out like the engine's batches.

    Parameters
    ----------
    n : number of impressions (ignored when ``title`` is given)
    n_members : member ids are drawn from ``[0, n_members)``; pass the world's member count
        for policies that look members up (the oracle).
    title : ndarray, shape (n,), optional -- titles to show; random titles otherwise.

    Returns
    -------
    DecisionBatch with ``candidates``/``mask`` of shape (n, catalog.max_artworks).
    """
    title = (rng.integers(0, catalog.n_titles, size=n) if title is None
             else np.asarray(title)).astype(np.int32)
    n = title.size
    candidates = catalog.pool[title]
    familiar = rng.random(n) < 0.2
    # Pages of about 8 impressions, each with a context in the layout of sim.features.
    visit = np.sort(rng.integers(0, max(1, n // 8), size=n)).astype(np.int64)
    G, nc = catalog.n_genres, TEST_COUNTRIES
    page_ctx = np.zeros((int(visit.max()) + 1, context_width(G, nc)), dtype=np.float32)
    page_ctx[:, :G] = rng.dirichlet(np.full(G, 0.5), size=page_ctx.shape[0])
    pages = np.arange(page_ctx.shape[0])
    page_ctx[pages, G + 1 + rng.integers(0, nc, pages.size)] = 1.0
    page_ctx[pages, G + 1 + nc + rng.integers(0, N_DEVICES, pages.size)] = 1.0
    angles = rng.uniform(0, 2 * np.pi, size=(pages.size, 2))
    page_ctx[:, -4:] = np.column_stack([np.sin(angles[:, 0]), np.cos(angles[:, 0]),
                                        np.sin(angles[:, 1]), np.cos(angles[:, 1])])
    # A third of the impressions show a title seen before: its last image and since when.
    time = np.sort(rng.uniform(0.0, 1440.0, size=n))
    seen = rng.random(n) < 0.33
    slot = (rng.random(n) * catalog.pool_size[title]).astype(np.int64)
    last_artwork = np.where(seen, candidates[np.arange(n), slot], -1).astype(np.int32)
    shown_since = np.where(seen, time - rng.uniform(0.0, 2880.0, size=n), np.inf)
    return DecisionBatch(member=rng.integers(0, n_members, size=n).astype(np.int32), title=title,
                         candidates=candidates, mask=candidates >= 0,
                         row=rng.integers(0, rows, size=n).astype(np.int16),
                         column=rng.integers(0, columns, size=n).astype(np.int16),
                         time=time, familiar=familiar,
                         context=impression_context(page_ctx, visit, familiar, G), visit=visit,
                         last_artwork=last_artwork, shown_since=shown_since)


def make_feedback(batch: DecisionBatch, selection: Selection, rng: np.random.Generator,
                  rates: tuple[float, float, float] = (0.3, 0.6, 0.5)) -> FeedbackBatch:
    """Logged outcomes for ``selection`` with nested Bernoulli rates (click, play | click,
    quality play | play). Rates are far above real ones so a small batch has nonzero rewards."""
    u = rng.random((len(batch), 3))
    click = u[:, 0] < rates[0]
    play = click & (u[:, 1] < rates[1])
    quality = play & (u[:, 2] < rates[2])
    return FeedbackBatch(batch, np.asarray(selection.action), np.asarray(selection.artwork),
                         np.asarray(selection.propensity), click, play, quality)


def subset_feedback(feedback: FeedbackBatch, idx: np.ndarray) -> FeedbackBatch:
    """Rows ``idx`` (indices or boolean mask) of ``feedback``, decisions included."""
    out = {f.name: getattr(feedback, f.name)[idx] for f in dataclasses.fields(feedback)
           if f.name != "decisions"}
    return FeedbackBatch(decisions=feedback.decisions.subset(idx), **out)


# ---- checks -------------------------------------------------------------------------------
def check_probabilities(policy: ArtworkPolicy, batch: DecisionBatch, feedback=None, rng_seed=0):
    """``probabilities(batch)``: shape (n, K), finite, >= 0, zero on padding, rows sum to 1."""
    probs = np.asarray(policy.probabilities(batch))
    assert probs.shape == batch.mask.shape, \
        f"probabilities has shape {probs.shape}, expected (n, K) = {batch.mask.shape}"
    assert np.isfinite(probs).all(), "probabilities contains NaN or inf"
    assert (probs >= 0).all(), f"probabilities contains negative values (min {probs.min():g})"
    leak = np.abs(np.where(batch.mask, 0.0, probs)).max(initial=0.0)
    assert leak == 0, f"probabilities puts mass {leak:g} on masked-out (padding) candidates"
    err = np.abs(np.where(batch.mask, probs, 0.0).sum(axis=1) - 1.0)
    assert err.max() <= 1e-9, (f"probabilities rows must sum to 1 over valid candidates; "
                               f"row {int(err.argmax())} is off by {err.max():g}")
    # probabilities() is called by the engine, the logger and OPE; it must not consume
    # randomness or change the model, or those callers would see different policies.
    again = np.asarray(policy.probabilities(batch))
    assert np.array_equal(probs, again), "probabilities(batch) changed between two calls"


def check_select(policy: ArtworkPolicy, batch: DecisionBatch, feedback=None, rng_seed=0):
    """``select``: action inside the mask, artwork = candidate, propensity = probability."""
    sel = policy.select(batch, generator(rng_seed, "policy", 1))
    n, K = batch.mask.shape
    action, artwork, propensity = (np.asarray(x) for x in (sel.action, sel.artwork, sel.propensity))
    for name, arr in (("action", action), ("artwork", artwork), ("propensity", propensity)):
        assert arr.shape == (n,), f"select().{name} has shape {arr.shape}, expected ({n},)"
    assert np.issubdtype(action.dtype, np.integer), f"select().action has dtype {action.dtype}"
    assert ((action >= 0) & (action < K)).all(), f"select().action outside [0, {K})"
    rows = np.arange(n)
    assert batch.mask[rows, action].all(), "select() chose a masked-out (padding) candidate"
    assert np.array_equal(artwork, batch.candidates[rows, action]), \
        "select().artwork != batch.candidates[row, action]"
    probs = np.asarray(policy.probabilities(batch))
    expected = probs[rows, action]
    bad = ~np.isclose(propensity, expected, rtol=0.0, atol=1e-12)
    assert not bad.any(), (f"logged propensity != probabilities[row, action] in {int(bad.sum())} "
                           f"rows, e.g. row {int(bad.argmax())}: {propensity[bad.argmax()]!r} vs "
                           f"{expected[bad.argmax()]!r}")
    assert (propensity > 0).all(), "select() chose an artwork it gives probability 0"


def check_deterministic(policy: ArtworkPolicy, batch: DecisionBatch, feedback=None, rng_seed=0):
    """The same generator state gives the same choices: all randomness comes from ``rng``."""
    a = policy.select(batch, generator(rng_seed, "policy", 2))
    b = policy.select(batch, generator(rng_seed, "policy", 2))
    for name in ("action", "artwork", "propensity"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), \
            f"select() with identically seeded generators gave different {name}"


def check_stats_additive(policy: ArtworkPolicy, batch: DecisionBatch, feedback: FeedbackBatch,
                         rng_seed=0):
    """stats(a U b) == stats(a) + stats(b) on every array field (skipped if stats is None)."""
    before = np.asarray(policy.probabilities(batch))
    whole = policy.sufficient_stats(feedback)
    if whole is None:
        return
    n = len(feedback)
    assert n >= 2, "check_stats_additive needs a feedback batch of at least 2 rows"
    in_a = generator(rng_seed, "policy", 3).random(n) < 0.5
    in_a[0], in_a[1] = True, False  # neither part may be empty
    parts = [policy.sufficient_stats(subset_feedback(feedback, m)) for m in (in_a, ~in_a)]
    summed = parts[0] + parts[1]
    assert type(summed) is type(whole), \
        f"stats(a) + stats(b) is a {type(summed).__name__}, stats(a U b) a {type(whole).__name__}"
    summed_arrays = _stats_arrays(summed)
    for name, arr in _stats_arrays(whole).items():
        got = summed_arrays[name]
        assert got.shape == arr.shape and np.allclose(got, arr, rtol=1e-9, atol=1e-9), \
            f"sufficient stats are not additive: {name!r} of stats(a) + stats(b) != stats(a U b)"
    # Trainers compute stats while the model serves; that must not change what it serves.
    assert np.array_equal(before, np.asarray(policy.probabilities(batch))), \
        "sufficient_stats() changed the deployed policy's probabilities"


def check_update(policy: ArtworkPolicy, batch: DecisionBatch, feedback: FeedbackBatch, rng_seed=0):
    """``update`` keeps hyperparameters, bumps ``model_version_`` and deploys a valid policy.

    Runs on a copy, so ``policy`` itself is not changed."""
    fitted = _copy(policy)
    params = _flat_params(fitted)
    version = fitted.model_version_
    fitted.update(fitted.sufficient_stats(feedback))
    after = _flat_params(fitted)
    changed = sorted(k for k in params.keys() | after.keys()
                     if k not in params or k not in after or not _same(params[k], after[k]))
    assert not changed, f"update() changed hyperparameters {changed} (get_params() before vs after)"
    assert fitted.model_version_ == version + 1, \
        f"update() must increment model_version_ by 1: {version} -> {fitted.model_version_}"
    check_probabilities(fitted, batch)


def check_choice_frequencies(policy: ArtworkPolicy, batch: DecisionBatch, feedback=None,
                             rng_seed=0, n_repeats: int = 20_000, n_se: float = 5.0):
    """Choices of ``select`` follow ``probabilities``: one impression repeated ``n_repeats``
    times, per-candidate counts within ``n_se`` binomial standard errors of n * p.

    The row with the most spread-out probabilities is used: it has the most to get wrong."""
    probs = np.asarray(policy.probabilities(batch))
    plogp = np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1.0)), 0.0)
    row = int(plogp.sum(axis=1).argmin())  # maximum entropy
    p = probs[row]
    repeated = batch.subset(np.full(n_repeats, row))
    # Each copy on its own page: a propensity is the marginal over pages, and page-level policies
    # (one posterior draw per page) correlate the choices within a page.
    repeated.visit = np.arange(n_repeats)
    sel = policy.select(repeated, generator(rng_seed, "policy", 4))
    counts = np.bincount(np.asarray(sel.action), minlength=p.size)
    expected = n_repeats * p
    # A candidate with p = 0 or 1 has zero standard error: its count must then be exact.
    tol = n_se * np.sqrt(n_repeats * p * (1.0 - p)) + 1e-9
    bad = np.abs(counts - expected) > tol
    assert not bad.any(), (f"select() frequencies disagree with probabilities on row {row}: "
                           f"counts {counts.tolist()} vs expected {np.round(expected, 1).tolist()} "
                           f"(tolerance {n_se:g} standard errors)")


#: Every check, in the order :func:`check_policy` runs them (cheap structural checks first).
POLICY_CHECKS = (check_probabilities, check_select, check_deterministic, check_stats_additive,
                 check_update, check_choice_frequencies)


def check_policy(policy: ArtworkPolicy, catalog: Catalog, batch: DecisionBatch | None = None,
                 rng_seed: int = 0, feedback: FeedbackBatch | None = None) -> None:
    """Run every check in :data:`POLICY_CHECKS`; raise ``AssertionError`` on the first failure.

    Parameters
    ----------
    policy : a policy already ``reset(catalog)`` (and, if it reads ground truth, attached).
        It is not modified: ``update`` is checked on a copy.
    catalog : the catalog the policy was reset with; used to draw ``batch`` if not given.
    batch : impressions to check on, shape (n, K) candidates; 64 random titles if None.
    rng_seed : root seed of every generator the checks use.
    feedback : logged outcomes for the stats/update checks; drawn from the policy's own
        choices on ``batch`` if None.
    """
    if batch is None:
        batch = make_decision_batch(catalog, 64, generator(rng_seed, "policy", 5))
    if feedback is None:
        feedback = make_feedback(batch, policy.select(batch, generator(rng_seed, "policy", 6)),
                                 generator(rng_seed, "response", 6))
    for check in POLICY_CHECKS:
        try:
            check(policy, batch, feedback, rng_seed)
        except AssertionError as err:
            raise AssertionError(f"{type(policy).__name__} ({getattr(policy, 'name', '?')}) "
                                 f"failed {check.__name__}: {err}") from err


# ---- helpers ------------------------------------------------------------------------------
def _stats_arrays(stats: Any) -> dict[str, np.ndarray]:
    if isinstance(stats, np.ndarray):
        return {"stats": stats}
    assert dataclasses.is_dataclass(stats), \
        f"sufficient_stats must return an ndarray or dataclass of arrays, not {type(stats).__name__}"
    arrays = {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)
              if isinstance(getattr(stats, f.name), np.ndarray)}
    assert arrays, f"sufficient stats {type(stats).__name__} has no array fields to compare"
    return arrays


def _copy(policy: ArtworkPolicy) -> ArtworkPolicy:
    # World objects a policy holds are read-only and can be large: share them, copy the rest.
    memo = {id(v): v for v in vars(policy).values() if isinstance(v, (Catalog, ResponseModel))}
    return copy.deepcopy(policy, memo)


def _flat_params(policy: ArtworkPolicy, prefix: str = "") -> dict[str, Any]:
    """get_params() with nested policies (a wrapper's ``base``) expanded to dotted keys."""
    out: dict[str, Any] = {}
    for key, value in policy.get_params().items():
        if isinstance(value, ArtworkPolicy):
            out[prefix + key] = type(value)
            out.update(_flat_params(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = copy.deepcopy(value)  # a snapshot, so in-place edits show up
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    return a is b or bool(a == b)


# ---- off-policy estimators ------------------------------------------------------------------------
def make_ope_problem(rng: np.random.Generator, n: int = 400, n_actions: int = 4) -> tuple[dict, float]:
    """A tiny synthetic log under uniform logging, in OBP's names, and the target's true value.

    True take probabilities ``q`` (n, n_actions) in [0.05, 0.6]; the logger picks uniformly
    (``pscore = 1 / n_actions``); the target is softmax(8 q). Two positions: each impression's
    own position holds the target and ``q`` as reward model (exact), the other one a different
    distribution and a wrong model, so an estimator that reads the wrong position is biased.

    Returns
    -------
    (dict with reward, action, pscore, position (n,), action_dist and
    estimated_rewards_by_reg_model (n, n_actions, 2); the target's exact value on these contexts)
    """
    rows = np.arange(n)
    q = rng.uniform(0.05, 0.6, (n, n_actions))
    action = rng.integers(0, n_actions, n)
    reward = (rng.random(n) < q[rows, action]).astype(np.float64)
    z = np.exp(8.0 * q)
    pi = z / z.sum(axis=1, keepdims=True)
    position = rng.integers(0, 2, n)
    dist = np.empty((n, n_actions, 2))
    q_hat = np.empty((n, n_actions, 2))
    dist[rows, :, position], dist[rows, :, 1 - position] = pi, pi[:, ::-1]
    q_hat[rows, :, position], q_hat[rows, :, 1 - position] = q, 1.0 - q
    log = dict(reward=reward, action=action, pscore=np.full(n, 1.0 / n_actions), position=position,
               action_dist=dist, estimated_rewards_by_reg_model=q_hat)
    return log, float((pi * q).sum(axis=1).mean())


def check_estimator(estimator: Any, *, n_seeds: int = 200, n: int = 400, rng_seed: int = 0,
                    tolerance_se: float = 4.0) -> None:
    """Check an off-policy estimator (instance, class, built-in name or import path) against the
    contract of :class:`sim.ope.estimators.OffPolicyEstimator`; raise AssertionError naming the
    first violation.

    * unbiased on :func:`make_ope_problem` (uniform logging, exact reward model): the mean error
      over ``n_seeds`` independent logs is within ``tolerance_se`` standard errors of zero;
    * the value is finite, its bootstrap interval contains it, the same rng gives the same
      estimate, and ``estimate_policy_value`` / ``estimate_interval`` /
      ``_estimate_round_rewards`` agree with it;
    * an estimator that ``needs_reward_model`` refuses to run without one;
    * hyperparameters are dataclass fields declared with :func:`sim.schema.param`.
    """
    import math

    from sim.ope.estimators import OffPolicyEstimator, build_estimator

    est = build_estimator(estimator)
    label = f"{type(est).__qualname__} ({est.name})"
    assert isinstance(est, OffPolicyEstimator), f"{label} is not an OffPolicyEstimator"
    if dataclasses.is_dataclass(est):
        undeclared = [f.name for f in dataclasses.fields(est) if "doc" not in f.metadata]
        assert not undeclared, f"{label}: fields {undeclared} are not declared with sim.schema.param"

    log, truth = make_ope_problem(np.random.default_rng([rng_seed, 0]), n)
    one = est.estimate(**log, rng=np.random.default_rng(rng_seed), n_bootstrap=200)
    again = est.estimate(**log, rng=np.random.default_rng(rng_seed), n_bootstrap=200)
    assert math.isfinite(one.value), f"{label}: value {one.value} is not finite"
    assert one == again, f"{label}: the same rng gave {one} and then {again}"
    assert one.ci_low <= one.value <= one.ci_high, f"{label}: interval [{one.ci_low}, {one.ci_high}] " \
                                                   f"does not contain the value {one.value}"
    assert est.estimate_policy_value(**log) == one.value, \
        f"{label}: estimate_policy_value differs from estimate().value"
    interval = est.estimate_interval(**log, n_bootstrap_samples=200, random_state=rng_seed)
    assert interval["mean"] == one.value and interval["95.0% CI (lower)"] == one.ci_low, \
        f"{label}: estimate_interval {interval} differs from estimate() {one}"
    rounds = np.asarray(est._estimate_round_rewards(est.prepare(**log)))
    assert rounds.shape == (n,), f"{label}: _estimate_round_rewards has shape {rounds.shape}, not ({n},)"
    assert math.isclose(rounds.mean(), one.value, rel_tol=1e-9, abs_tol=1e-12), \
        f"{label}: the mean of _estimate_round_rewards {rounds.mean()} is not the value {one.value}"
    if est.needs_reward_model:
        try:
            est.estimate(**{**log, "estimated_rewards_by_reg_model": None})
        except ValueError:
            pass
        else:
            raise AssertionError(f"{label} needs_reward_model but ran without one")

    errors = np.empty(n_seeds)
    for s in range(n_seeds):
        log, truth = make_ope_problem(np.random.default_rng([rng_seed, 1, s]), n)
        errors[s] = est.estimate_policy_value(**log) - truth
    bias, se = errors.mean(), errors.std(ddof=1) / math.sqrt(n_seeds)
    assert abs(bias) <= tolerance_se * se + 1e-9, \
        f"{label} is biased under uniform logging: mean error {bias:.5f} over {n_seeds} logs, " \
        f"standard error {se:.5f} (tolerance {tolerance_se} standard errors)"
