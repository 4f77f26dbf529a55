"""Conformance checks every artwork policy, ranker and response model must pass (like
scikit-learn's ``check_estimator``). Rankers: :func:`check_ranker`; response models:
:func:`check_response_model` (both below the policy checks).

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
from sim.world import Catalog, Members, ResponseModel
from sim.world.response import SESSION_END_REASONS, Page

__all__ = ["check_policy", "make_decision_batch", "make_feedback", "subset_feedback",
           "POLICY_CHECKS", "check_probabilities", "check_select", "check_deterministic",
           "check_stats_additive", "check_update", "check_choice_frequencies",
           "check_ranker", "make_ranker_feedback", "RANKER_CHECKS", "check_response_model",
           "RESPONSE_CHECKS", "check_response_page_draw", "make_pages"]


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
    """Choices of ``select`` follow ``probabilities``: one impression (with the rest of its page)
    repeated ``n_repeats`` times, per-candidate counts within ``n_se`` binomial standard errors
    of n * p.

    The row with the most spread-out probabilities is used: it has the most to get wrong."""
    probs = np.asarray(policy.probabilities(batch))
    plogp = np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1.0)), 0.0)
    row = int(plogp.sum(axis=1).argmin())  # maximum entropy
    p = probs[row]
    # The row's whole page, repeated: a page-aware policy's probabilities depend on the other
    # tiles of the page. Each copy is its own page: a propensity is the marginal over pages, and
    # page-level policies (one posterior draw per page) correlate the choices within a page.
    page = batch.page_index()
    tiles = np.flatnonzero(page == page[row])
    at = int(np.flatnonzero(tiles == row)[0])
    repeated = batch.subset(np.tile(tiles, n_repeats))
    repeated.visit = np.repeat(np.arange(n_repeats, dtype=np.int64), tiles.size)
    sel = policy.select(repeated, generator(rng_seed, "policy", 4))
    counts = np.bincount(np.asarray(sel.action)[at::tiles.size], minlength=p.size)
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
    memo = {id(v): v for v in vars(policy).values() if isinstance(v, (Catalog, Members, ResponseModel))}
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


# ---- rankers ------------------------------------------------------------------------------
def make_ranker_feedback(catalog: Catalog, n: int, rng: np.random.Generator, *,
                         n_members: int = 1) -> tuple[FeedbackBatch, np.ndarray]:
    """Logged impressions of random titles (uniform artwork) with outcomes, and a ranker
    propensity per impression: about a fifth in explored slots (``pscore < 1``), 1 elsewhere."""
    batch = make_decision_batch(catalog, n, rng, n_members=n_members)
    k = batch.mask.sum(axis=1)
    action = (rng.random(len(batch)) * k).astype(np.int64)
    sel = Selection(action, batch.candidates[np.arange(len(batch)), action], 1.0 / k)
    pscore = np.where(rng.random(len(batch)) < 0.2, rng.uniform(0.001, 0.05, len(batch)), 1.0)
    return make_feedback(batch, sel, rng), pscore


def check_ranker_scores(ranker, member: np.ndarray, feedback=None, pscore=None, rng_seed=0):
    """``scores`` (n, n_titles) and ``genre_affinity`` (n, n_genres): floats, finite; n = 0 works."""
    cat = ranker.catalog
    for n_visits in (member.size, 0):
        m = member[:n_visits]
        for what, width in (("scores", cat.n_titles), ("genre_affinity", cat.n_genres)):
            out = np.asarray(getattr(ranker, what)(m, generator(rng_seed, "ranker", 1)))
            assert out.shape == (n_visits, width), \
                f"{what}(member) has shape {out.shape}, expected (n, {width}) = {(n_visits, width)}"
            assert np.issubdtype(out.dtype, np.floating), f"{what} has dtype {out.dtype}, not a float"
            assert np.isfinite(out).all(), f"{what} contains NaN or inf"


def check_ranker_deterministic(ranker, member: np.ndarray, feedback=None, pscore=None, rng_seed=0):
    """The same generator state gives the same scores: all randomness comes from ``rng``, and
    scoring does not change the ranker."""
    for what in ("scores", "genre_affinity"):
        a, b = (np.asarray(getattr(ranker, what)(member, generator(rng_seed, "ranker", 2))) for _ in "ab")
        assert np.array_equal(a, b), f"{what}() with identically seeded generators gave different values"


def check_ranker_ground_truth(ranker, member=None, feedback=None, pscore=None, rng_seed=0):
    """Only ``oracle`` rankers read the ground truth, and they say so (``reads_ground_truth``)."""
    holds = [k for k, v in vars(ranker).items() if isinstance(v, ResponseModel)]
    name = str(getattr(ranker, "name", ""))
    if ranker.reads_ground_truth:
        assert "oracle" in name, f"ranker {name!r} reads the ground truth but 'oracle' is not in its name"
    else:
        assert not holds, (f"ranker {name!r} holds the response model ({', '.join(holds)}) but "
                           "reads_ground_truth is False")


def check_ranker_statistics(ranker, member: np.ndarray, feedback: FeedbackBatch, pscore: np.ndarray,
                            rng_seed=0):
    """statistics(a U b) == statistics(a) + statistics(b); zero on no impressions; computing
    them does not change the scores."""
    before = np.asarray(ranker.scores(member, generator(rng_seed, "ranker", 3)))
    whole = ranker.statistics(feedback, pscore)
    n = len(feedback)
    assert n >= 2, "check_ranker_statistics needs a feedback batch of at least 2 rows"
    in_a = generator(rng_seed, "ranker", 4).random(n) < 0.5
    in_a[0], in_a[1] = True, False
    parts = [ranker.statistics(subset_feedback(feedback, m), pscore[m]) for m in (in_a, ~in_a)]
    summed = parts[0] + parts[1]
    assert type(summed) is type(whole), \
        f"stats(a) + stats(b) is a {type(summed).__name__}, stats(a U b) a {type(whole).__name__}"
    summed_arrays = _stats_arrays(summed)
    for name, arr in _stats_arrays(whole).items():
        got = summed_arrays.get(name)
        assert got is not None and got.shape == arr.shape and np.allclose(got, arr, rtol=1e-9, atol=1e-9), \
            f"ranker statistics are not additive: {name!r} of stats(a) + stats(b) != stats(a U b)"
    none = np.zeros(n, dtype=bool)
    for name, arr in _stats_arrays(ranker.statistics(subset_feedback(feedback, none), pscore[none])).items():
        assert not np.any(arr), f"statistics of no impressions must be zero; {name!r} is not"
    assert np.array_equal(before, np.asarray(ranker.scores(member, generator(rng_seed, "ranker", 3)))), \
        "statistics() changed the ranker's scores"


def check_ranker_fit(ranker, member: np.ndarray, feedback: FeedbackBatch, pscore: np.ndarray, rng_seed=0):
    """``fit`` on copies: a fresh ranker is not frozen; fit bumps ``version_``, keeps the
    hyperparameters (attributes not ending in ``_``), leaves valid scores, also on zero
    statistics; fitting ``a`` then ``b`` at the same minute equals fitting ``a + b``."""
    assert isinstance(ranker.frozen, bool), f"frozen must be a bool, got {ranker.frozen!r}"
    if ranker.version_ == 0:
        assert not ranker.frozen, "a ranker that was never fitted is frozen: it could never learn"
    zero = ranker.statistics(subset_feedback(feedback, np.zeros(len(feedback), dtype=bool)), pscore[:0])
    for label, stats in (("zero statistics", zero), ("statistics", ranker.statistics(feedback, pscore))):
        fitted = _copy(ranker)
        params, version = _public_attributes(fitted), fitted.version_
        fitted.fit(stats, 1440.0)
        after = _public_attributes(fitted)
        changed = sorted(k for k in params.keys() | after.keys()
                         if k not in params or k not in after or not _same(params[k], after[k]))
        assert not changed, f"fit({label}) changed hyperparameters {changed}"
        assert fitted.version_ == version + 1, \
            f"fit() must increment version_ by 1: {version} -> {fitted.version_}"
        try:
            check_ranker_scores(fitted, member, rng_seed=rng_seed)
        except AssertionError as err:
            raise AssertionError(f"after fit({label}): {err}") from None
    in_a = generator(rng_seed, "ranker", 5).random(len(feedback)) < 0.5
    a = ranker.statistics(subset_feedback(feedback, in_a), pscore[in_a])
    b = ranker.statistics(subset_feedback(feedback, ~in_a), pscore[~in_a])
    one, two = _copy(ranker), _copy(ranker)
    one.fit(a + b, 1440.0)
    two.fit(a, 1440.0)
    if two.frozen:      # the engine would not fit it again
        return
    two.fit(b, 1440.0)
    s1, s2 = (np.asarray(r.scores(member, generator(rng_seed, "ranker", 6))) for r in (one, two))
    assert np.allclose(s1, s2, rtol=1e-5, atol=1e-6), \
        "fit(a); fit(b) gives other scores than fit(a + b) at the same minute"


#: Every ranker check, in the order :func:`check_ranker` runs them.
RANKER_CHECKS = (check_ranker_scores, check_ranker_deterministic, check_ranker_ground_truth,
                 check_ranker_statistics, check_ranker_fit)


def check_ranker(ranker, n_members: int, feedback: FeedbackBatch | None = None,
                 pscore: np.ndarray | None = None, rng_seed: int = 0) -> None:
    """Run every check in :data:`RANKER_CHECKS`; raise ``AssertionError`` on the first failure.

    Parameters
    ----------
    ranker : a built ranker (oracle rankers attached to the ground truth). Not modified:
        ``fit`` is checked on copies.
    n_members : members of the world the ranker was built on; 40 of them are scored.
    feedback, pscore : logged impressions to compute statistics from and their ranker
        propensities, shape (n,); :func:`make_ranker_feedback` (300 impressions) if None.
    """
    rng = generator(rng_seed, "ranker", 7)
    member = rng.integers(0, n_members, size=40)
    if feedback is None:
        feedback, pscore = make_ranker_feedback(ranker.catalog, 300, rng, n_members=n_members)
    elif pscore is None:
        pscore = np.ones(len(feedback))
    for check in RANKER_CHECKS:
        try:
            check(ranker, member, feedback, pscore, rng_seed)
        except AssertionError as err:
            raise AssertionError(f"{type(ranker).__name__} ({getattr(ranker, 'name', '?')}) "
                                 f"failed {check.__name__}: {err}") from err


# ---- response models ----------------------------------------------------------------------
def check_response_probabilities(model: ResponseModel, batch: DecisionBatch, rng_seed=0):
    """``probabilities(batch)``: three (n, K) arrays in [0, 1], 0 on padding, nested
    ``quality <= play <= click <= attention``, repeatable, column k from candidate k alone,
    and independent of ``last_artwork`` unless ``uses_last_artwork``."""
    p = model.probabilities(batch)
    assert len(p) == 3, f"probabilities returns {len(p)} arrays, expected (click, play, quality_play)"
    p = [np.asarray(x) for x in p]
    names = ("p_click", "p_play", "p_quality")
    for name, x in zip(names, p):
        assert x.shape == batch.mask.shape, f"{name} has shape {x.shape}, expected (n, K) = {batch.mask.shape}"
        assert np.isfinite(x).all(), f"{name} contains NaN or inf"
        assert ((x >= 0) & (x <= 1)).all(), f"{name} outside [0, 1] (min {x.min():g}, max {x.max():g})"
        assert not np.any(np.where(batch.mask, 0, x)), f"{name} is not 0 on padded candidates"
    # draw() nests the events (a play needs a click), so the probabilities must nest too.
    for (lo_name, lo), (hi_name, hi) in ((("p_play", p[1]), ("p_click", p[0])),
                                         (("p_quality", p[2]), ("p_play", p[1]))):
        bad = lo > hi + 1e-9
        assert not bad.any(), f"{lo_name} > {hi_name} in {int(bad.sum())} cells: outcomes must be nested"
    att = np.asarray(model.attention(batch.row, batch.column))
    bad = p[0] > att[:, None] * (1 + 1e-6) + 1e-12
    assert not bad.any(), f"p_click > attention(row, column) in {int(bad.sum())} cells: a click needs a look"
    again = model.probabilities(batch)
    assert all(np.array_equal(x, np.asarray(y)) for x, y in zip(p, again)), \
        "probabilities(batch) changed between two calls"
    rows = np.arange(len(batch))
    k = (generator(rng_seed, "response", 8).random(len(batch)) * batch.mask.sum(axis=1)).astype(np.int64)
    one = model.probabilities(batch, batch.candidates[rows, k][:, None])
    for name, x, y in zip(names, p, one):
        y = np.asarray(y)
        assert y.shape == (len(batch), 1) and np.allclose(y[:, 0], x[rows, k], rtol=1e-6, atol=1e-9), \
            f"{name} of one candidate differs from its column among all candidates"
    if not model.uses_last_artwork:
        blind = model.probabilities(dataclasses.replace(batch, last_artwork=None))
        assert all(np.array_equal(x, np.asarray(y)) for x, y in zip(p, blind)), \
            "probabilities depend on last_artwork although uses_last_artwork is False"


def check_response_attention(model: ResponseModel, batch: DecisionBatch, rng_seed=0):
    """``attention`` on a 10 x 8 grid: (n,), in [0, 1], non-increasing in row and column;
    falls from the first to the last tile if the model claims ``position_bias``."""
    row, col = (x.ravel() for x in np.meshgrid(np.arange(10), np.arange(8), indexing="ij"))
    a = np.asarray(model.attention(row.astype(np.int16), col.astype(np.int16)))
    assert a.shape == row.shape, f"attention has shape {a.shape}, expected {row.shape}"
    assert np.isfinite(a).all() and ((a >= 0) & (a <= 1)).all(), "attention outside [0, 1]"
    a = a.reshape(10, 8)
    assert (np.diff(a, axis=0) <= 1e-12).all(), "attention rises with the row (further down the page)"
    assert (np.diff(a, axis=1) <= 1e-12).all(), "attention rises with the column"
    if model.position_bias:
        assert a[-1, -1] < a[0, 0], "position_bias is claimed but attention does not fall"


def check_response_title_scores(model: ResponseModel, batch: DecisionBatch, rng_seed=0):
    """``title_scores(member)``: (n, n_titles), finite, repeatable."""
    member = np.unique(batch.member)
    s = np.asarray(model.title_scores(member))
    assert s.ndim == 2 and s.shape[0] == member.size, f"title_scores has shape {s.shape}, expected (n, n_titles)"
    assert np.isfinite(s).all(), "title_scores contains NaN or inf"
    assert np.array_equal(s, np.asarray(model.title_scores(member))), "title_scores changed between calls"


def check_response_draw(model: ResponseModel, batch: DecisionBatch, rng_seed=0, n_repeats: int = 20_000,
                        n_se: float = 5.0):
    """``draw``: (n,) outcomes, nested, minutes only for plays, delays >= 0, the same for the
    same generator state; frequencies within ``n_se`` standard errors of the probabilities
    (the impression with the highest P(click) repeated ``n_repeats`` times)."""
    pc, pp, pq = (np.asarray(x)[:, 0] for x in model.probabilities(batch, batch.candidates[:, :1]))
    out, again = (model.draw(pc, pp, pq, generator(rng_seed, "response", 9), 3.0, 7.0) for _ in "ab")
    n = pc.size
    for f in dataclasses.fields(out):
        if getattr(out, f.name) is None:     # session fields of a model without sessions
            continue
        x = np.asarray(getattr(out, f.name))
        assert x.shape == (n,), f"draw().{f.name} has shape {x.shape}, expected ({n},)"
        assert np.array_equal(x, np.asarray(getattr(again, f.name)), equal_nan=x.dtype.kind == "f"), \
            f"draw() with identically seeded generators gave different {f.name}"
    click, play, quality = (np.asarray(x, dtype=bool) for x in (out.click, out.play, out.quality_play))
    assert not (play & ~click).any() and not (quality & ~play).any(), \
        "draw() outcomes are not nested (play without click or quality play without play)"
    minutes = np.asarray(out.minutes)
    assert np.isfinite(minutes).all() and (minutes >= 0).all() and not minutes[~play].any(), \
        "draw().minutes must be >= 0 and 0 without a play"
    for name in ("click_delay", "play_delay"):
        d = np.asarray(getattr(out, name))
        assert np.isfinite(d).all() and (d >= 0).all(), f"draw().{name} must be finite and >= 0"
    i = int(pc.argmax())
    rep = np.full(n_repeats, i)
    out = model.draw(pc[rep], pp[rep], pq[rep], generator(rng_seed, "response", 10), 3.0, 7.0)
    for name, p, got in (("click", pc[i], out.click), ("play", pp[i], out.play),
                         ("quality_play", pq[i], out.quality_play)):
        count, expected = int(np.sum(got)), n_repeats * float(p)
        tol = n_se * np.sqrt(n_repeats * p * (1 - p)) + 1e-9
        assert abs(count - expected) <= tol, (f"draw() frequency of {name} {count} vs expected "
                                              f"{expected:.1f} (tolerance {n_se:g} standard errors)")


def make_pages(n: int, rng: np.random.Generator, tiles_per_page: int = 12, columns: int = 4) -> Page:
    """Pages of ``tiles_per_page`` impressions (the last may be shorter), laid out row by row in
    ``columns`` columns, in a random input order: a :class:`sim.world.response.Page` of (n,)."""
    k = np.arange(n)
    order = rng.permutation(n)
    visit, slot = k // tiles_per_page, k % tiles_per_page
    member = rng.integers(0, 1000, size=visit.max() + 1 if n else 0)
    return Page(visit[order], (slot // columns)[order], (slot % columns)[order],
                member[visit[order]] if n else visit)


def check_response_page_draw(model: ResponseModel, batch: DecisionBatch, rng_seed=0):
    """``draw(..., page=)``: deterministic; a model that leaves the session fields of
    :class:`Outcomes` None must ignore ``page``. A session model: outcomes do not depend on the
    input order of the impressions; per page, the looked-at tiles are a prefix of reading order,
    a detail view needs a look, at most one quality play, which is the last tile looked at (nothing
    happens after the session ended), event times in order and within the session's length,
    ``session_seconds`` and ``end_reason`` constant on a page, end reason ``play`` exactly when
    the page has a quality play."""
    pc, pp, pq = (np.asarray(x)[:, 0] for x in model.probabilities(batch, batch.candidates[:, :1]))
    # Raise P(click) so that sessions see several detail views and plays.
    scale = np.maximum(1.0, 0.3 / np.maximum(pc, 1e-9))
    pc = np.minimum(pc * scale, 1.0)
    pp = np.minimum(pp * scale, pc)
    pq = np.minimum(pq * scale, pp)
    n = pc.size
    page = make_pages(n, generator(rng_seed, "response", 12))
    a, b = (model.draw(pc, pp, pq, generator(rng_seed, "response", 13), 3.0, 7.0, page=page) for _ in "ab")
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert (x is None) == (y is None) and (x is None or np.array_equal(x, y, equal_nan=x.dtype.kind == "f")), \
            f"draw(page=) with identically seeded generators gave different {f.name}"
    if not a.has_sessions:
        plain = model.draw(pc, pp, pq, generator(rng_seed, "response", 13), 3.0, 7.0)
        assert all(np.array_equal(getattr(a, f.name), getattr(plain, f.name)) for f in dataclasses.fields(a)
                   if getattr(a, f.name) is not None), \
            "draw() depends on page but fills no session fields (set them, or ignore page)"
        return
    for name in ("look", "look_second", "click_second", "play_second", "session_seconds", "end_reason"):
        x = getattr(a, name)
        assert x is not None and np.shape(x) == (n,), f"draw().{name} must be an array of shape ({n},)"
    # Same pages given in another order: the same outcome per impression.
    perm = generator(rng_seed, "response", 14).permutation(n)
    c = model.draw(pc[perm], pp[perm], pq[perm], generator(rng_seed, "response", 13), 3.0, 7.0,
                   page=Page(*(np.asarray(x)[perm] for x in page)))
    for f in dataclasses.fields(a):
        x = getattr(a, f.name)
        assert np.array_equal(x[perm], getattr(c, f.name), equal_nan=x.dtype.kind == "f"), \
            f"draw().{f.name} depends on the input order of the impressions"
    order = np.lexsort((page.column, page.row, page.visit))
    v = np.asarray(page.visit)[order]
    look, click, play, quality = (np.asarray(getattr(a, k), bool)[order]
                                  for k in ("look", "click", "play", "quality_play"))
    ls, cs, ps, ss = (np.asarray(getattr(a, k), np.float64)[order]
                      for k in ("look_second", "click_second", "play_second", "session_seconds"))
    reason = np.asarray(a.end_reason)[order]
    new = np.r_[True, v[1:] != v[:-1]]
    starts = np.flatnonzero(new)
    assert not (click & ~look).any() and not (play & ~click).any() and not (quality & ~play).any(), \
        "session outcomes are not nested (detail view without a look, play without a detail view, ...)"
    # Looked-at tiles: a prefix of each page (a tile not looked at is never followed by one that is).
    after_gap = look & ~new & ~np.r_[True, look[:-1]]
    assert not after_gap.any(), "a tile is looked at after a tile of the same page that was not"
    n_quality = np.add.reduceat(quality.astype(int), starts)
    assert (n_quality <= 1).all(), f"a session has {int(n_quality.max())} quality plays (at most one)"
    nxt_look = np.r_[look[1:], False] & np.r_[~new[1:], False]
    assert not (quality & nxt_look).any(), "a tile is looked at after the session's quality play"
    assert np.isnan(ls[~look]).all() and np.isnan(cs[~click]).all() and np.isnan(ps[~play]).all(), \
        "event times must be NaN where the event did not happen"
    same = ~new
    assert (np.diff(ls)[same[1:] & look[1:]] >= 0).all(), "looks are not in reading order in time"
    assert (cs[click] >= ls[click]).all() and (ps[play] >= cs[play]).all(), "events out of order in time"
    for name, t in (("look_second", ls), ("click_second", cs), ("play_second", ps)):
        assert (np.nan_to_num(t, nan=0.0) <= ss + 1e-3).all(), f"{name} after the session ended"
    assert (ss[same] == ss[:-1][same[1:]]).all() and (reason[same] == reason[:-1][same[1:]]).all(), \
        "session_seconds / end_reason differ between tiles of one page"
    assert np.array_equal(reason[starts] == 0, n_quality == 1), "end reason 'play' exactly when a quality play"
    assert ((reason >= 0) & (reason < len(SESSION_END_REASONS))).all(), "end_reason outside SESSION_END_REASONS"


#: Every response-model check, in the order :func:`check_response_model` runs them.
RESPONSE_CHECKS = (check_response_probabilities, check_response_attention,
                   check_response_title_scores, check_response_draw, check_response_page_draw)


def check_response_model(model: ResponseModel, catalog: Catalog, n_members: int,
                         batch: DecisionBatch | None = None, rng_seed: int = 0) -> None:
    """Run every check in :data:`RESPONSE_CHECKS`; raise ``AssertionError`` on the first failure.

    Parameters
    ----------
    model : the response model of a world with ``catalog`` and ``n_members`` members.
    batch : impressions to check on; 300 random ones (a third with a last-shown image) if None.
    """
    if batch is None:
        batch = make_decision_batch(catalog, 300, generator(rng_seed, "response", 11), n_members=n_members)
    for check in RESPONSE_CHECKS:
        try:
            check(model, batch, rng_seed)
        except AssertionError as err:
            raise AssertionError(f"{type(model).__name__} failed {check.__name__}: {err}") from err


def _public_attributes(obj: Any) -> dict[str, Any]:
    """Hyperparameters by convention: attributes not ending in ``_`` (world objects aside)."""
    return {k: copy.deepcopy(v) for k, v in vars(obj).items()
            if not k.endswith("_") and not isinstance(v, (Catalog, Members, ResponseModel))}


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
