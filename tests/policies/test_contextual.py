"""Contextual artwork policies: the shared feature map, the ridge / Laplace posteriors against
direct computations, the posterior draws, hybrid and disjoint LinUCB against the joint ridge, a
closed loop in a linear synthetic world, cold start on unseen titles, and an engine smoke run.

Exact identities are checked against an independent computation (``np.linalg.solve`` on the
design matrix built from :func:`sim.features.candidate_features`) with float64 / float32
tolerances. Statistical assertions use fixed seeds and bounds of several standard errors (or
chi-square quantiles), so they fail when the effect they test is absent, not by chance.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import sim.runner
from sim.config import WorldConfig
from sim.engine import Simulation
from sim.features import artwork_scores, candidate_feature_width, candidate_features
from sim.policies import build_policy
from sim.policies.base import DecisionBatch, FeedbackBatch
from sim.streams import generator
from sim.testing import make_decision_batch, make_feedback, subset_feedback
from sim.world import build_world

LINEAR_POLICIES = ("lints", "linear_epsilon_greedy", "linear_softmax")


def make_policy(catalog, spec, seed=0):
    policy = build_policy(spec, seed=seed)
    policy.reset(catalog)
    return policy


def small_world(seed=0, n_titles=6, n_genres=4, artworks_min=2, artworks_max=3):
    return build_world(WorldConfig(n_members=50, n_titles=n_titles, n_genres=n_genres,
                                   artworks_min=artworks_min, artworks_max=artworks_max),
                       seed, 1440)


def features_of(catalog, batch):
    """candidate_features of a batch's candidates in float64, shape (n, K, d)."""
    return candidate_features(batch.context, batch.candidates, catalog.artwork_theme,
                              catalog.n_genres).astype(np.float64)


def chosen_rows(catalog, feedback):
    """Feature rows of the chosen candidates, read off the full candidate tensor at ``action``
    (independent of the policies' own ``chosen_features``, which featurise ``artwork``)."""
    phi = features_of(catalog, feedback.decisions)
    return phi[np.arange(len(feedback)), feedback.action]


def logged_rounds(catalog, policy, n_rounds, n, seed, title_range=None):
    """Feedback batches of ``policy``'s own choices with make_feedback's random outcomes."""
    out = []
    for r in range(n_rounds):
        rng = generator(seed, "policy", 300, r)
        title = None if title_range is None else rng.integers(*title_range, size=n)
        batch = make_decision_batch(catalog, n, rng, title=title)
        sel = policy.select(batch, generator(seed, "policy", 301, r))
        out.append(make_feedback(batch, sel, generator(seed, "response", 301, r)))
    return out


def concat_feedback(batches):
    """One FeedbackBatch holding every row of ``batches``, in order."""
    def stack(objs, cls, skip=()):
        return {f.name: (None if getattr(objs[0], f.name) is None
                         else np.concatenate([getattr(o, f.name) for o in objs]))
                for f in dataclasses.fields(cls) if f.name not in skip}

    decisions = DecisionBatch(**stack([b.decisions for b in batches], DecisionBatch))
    return FeedbackBatch(decisions=decisions, **stack(batches, FeedbackBatch, skip=("decisions",)))


def linear_truth(d, n_genres, rng, base=0.06, interaction=0.04):
    """Weights of a linear reward model over candidate_features: a base rate, small context
    effects, an artwork-theme effect and a member x theme interaction (the personal part)."""
    G = n_genres
    w = np.zeros(d)
    w[0] = base
    w[1] = 0.02                                          # familiar titles are a bit likelier
    w[2:d - (2 * G + 1)] = 0.01 * rng.standard_normal(d - (2 * G + 1) - 2)
    w[d - (2 * G + 1):d - (G + 1)] = 0.04 * rng.standard_normal(G)   # theme
    w[d - (G + 1):d - 1] = interaction                               # G * affinity * theme
    return w


# ---- 1. the feature map and artwork_scores ---------------------------------------------------
def test_artwork_scores_equal_full_features_up_to_a_per_impression_constant(world):
    cat, G = world.catalog, world.catalog.n_genres
    batch = make_decision_batch(cat, 500, generator(1, "policy", 400))
    assert 0 < batch.familiar.sum() < len(batch)
    phi = features_of(cat, batch)
    theta = generator(1, "policy", 401).standard_normal((phi.shape[2], 5))
    full = np.einsum("nkd,dD->Dnk", phi, theta)
    fast = artwork_scores(batch.context, batch.candidates, cat.artwork_theme, G,
                          theta.astype(np.float32)).astype(np.float64)
    assert fast.shape == full.shape
    # The context-only columns add the same amount to every candidate of an impression.
    context_part = np.einsum("nd,dD->Dn", phi[:, 0, :-(2 * G + 1)], theta[:-(2 * G + 1)])
    scale = np.abs(full).max()
    np.testing.assert_allclose(full - context_part[:, :, None], fast, rtol=0, atol=1e-5 * scale)
    # Hence the same winner among valid candidates, except at float32 near-ties.
    pad = np.where(batch.mask, 0.0, -np.inf)[None]
    best_full, best_fast = (full + pad).argmax(axis=2), (fast + pad).argmax(axis=2)
    differ = best_full != best_fast
    assert differ.mean() < 1e-3
    gap = (np.take_along_axis(full, best_full[..., None], 2)
           - np.take_along_axis(full, best_fast[..., None], 2))
    assert (gap[..., 0][differ] <= 1e-5 * scale).all()
    # A theta with weight only on the context columns cannot separate the candidates.
    context_only = theta.copy()
    context_only[-(2 * G + 1):] = 0.0
    flat = artwork_scores(batch.context, batch.candidates, cat.artwork_theme, G, context_only)
    assert np.abs(flat).max() == 0.0


def test_the_last_2g_plus_1_columns_are_the_artwork_dependent_block(world):
    cat, G = world.catalog, world.catalog.n_genres
    batch = make_decision_batch(cat, 400, generator(2, "policy", 402))
    phi = features_of(cat, batch)
    # Every valid candidate of a row, compared with the row's first candidate.
    block = slice(phi.shape[2] - (2 * G + 1), None)
    same_context = phi[:, :, :block.start] == phi[:, :1, :block.start]
    assert same_context.all(), "a context column changes with the candidate"
    art = np.maximum(batch.candidates, 0)
    themes_differ = (cat.artwork_theme[art] != cat.artwork_theme[art[:, :1]]).any(axis=2)
    moved = (phi[:, :, block] != phi[:, :1, block]).any(axis=2)
    assert themes_differ.sum() > 100
    np.testing.assert_array_equal(moved, themes_differ)
    # The block's layout: theme | G * affinity * theme | familiar * affinity . theme
    theme = cat.artwork_theme[art].astype(np.float64)
    affinity = batch.context[:, :G].astype(np.float64)
    np.testing.assert_allclose(phi[:, :, block.start:block.start + G], theme, atol=1e-6)
    np.testing.assert_allclose(phi[:, :, block.start + G:-1], G * affinity[:, None] * theme, atol=1e-5)
    match = np.einsum("ng,nkg->nk", affinity, theme)
    np.testing.assert_allclose(phi[:, :, -1], batch.familiar[:, None] * match, atol=1e-6)
    assert phi.shape[2] == candidate_feature_width(batch.context.shape[1], G)


# ---- 2. ridge posterior = least squares on the same data ------------------------------------
@pytest.mark.parametrize("name", LINEAR_POLICIES)
def test_ridge_mean_equals_direct_least_squares_and_is_additive(world, name):
    cat, l2 = world.catalog, 2.5
    spec = {"name": name, "l2": l2, **({"mode": "shared"} if name == "lints" else {})}
    incremental = make_policy(cat, spec)
    batches = []
    for r in range(4):    # the policy's own choices, retrained after each batch
        (fb,) = logged_rounds(cat, incremental, 1, 300, seed=10 + r)
        batches.append(fb)
        incremental.update(incremental.sufficient_stats(fb))
    union = concat_feedback(batches)
    X, y = chosen_rows(cat, union), union.reward(incremental.reward)
    assert y.sum() > 20
    direct = np.linalg.solve(l2 * np.eye(X.shape[1]) + X.T @ X, X.T @ y)
    np.testing.assert_allclose(incremental.mu_, direct, rtol=1e-8, atol=1e-10)
    # One update on the union, and the sum of two halves' statistics, give the same model.
    once = make_policy(cat, spec)
    once.update(once.sufficient_stats(union))
    halves = make_policy(cat, spec)
    first = np.arange(len(union)) % 2 == 0
    halves.update(halves.sufficient_stats(subset_feedback(union, first))
                  + halves.sufficient_stats(subset_feedback(union, ~first)))
    for other in (once, halves):
        np.testing.assert_allclose(other.mu_, direct, rtol=1e-8, atol=1e-10)
    assert incremental.model_version_ == 4 and once.model_version_ == halves.model_version_ == 1
    # Serving uses that mean: mean_scores = features @ mu (float32).
    batch = make_decision_batch(cat, 100, generator(3, "policy", 403))
    np.testing.assert_allclose(incremental.mean_scores(batch), features_of(cat, batch) @ direct,
                               rtol=0, atol=1e-5 * np.abs(direct).sum())


# ---- 3. LinTS posterior draws ----------------------------------------------------------------
def fitted_lints(catalog, seed=0, n_draws=4000, v=0.5, l2=1.0, n_rounds=2):
    """LinTS fitted on uniformly logged impressions (the same data whatever its seed), and
    that data."""
    policy = make_policy(catalog, {"name": "lints", "mode": "shared", "n_draws": n_draws, "v": v,
                                   "l2": l2}, seed=seed)
    uniform = make_policy(catalog, {"name": "uniform"})
    batches = logged_rounds(catalog, uniform, n_rounds, 400, seed=4)
    for fb in batches:
        policy.update(policy.sufficient_stats(fb))
    return policy, concat_feedback(batches)


def test_lints_draws_have_covariance_v2_inverse_precision(world):
    cat, v, l2 = world.catalog, 0.5, 1.0
    policy, logged = fitted_lints(cat, v=v, l2=l2)
    draws = policy.draws_.astype(np.float64)                  # (d, D)
    d, D = draws.shape
    assert D == 4000
    X = chosen_rows(cat, logged)
    A = l2 * np.eye(d) + X.T @ X                               # the precision, from the data
    cov = v ** 2 * np.linalg.inv(A)
    # Projections on random directions and on A's extreme eigenvectors (the best- and
    # least-known directions: a covariance of A instead of A^-1, or v instead of v^2, fails).
    eigvec = np.linalg.eigh(A)[1]
    rng = generator(5, "policy", 404)
    directions = np.column_stack([rng.standard_normal((d, 20)), eigvec[:, :3], eigvec[:, -3:]])
    dev = directions.T @ (draws - policy.mu_[:, None])         # (m, D), known mean
    ratio = (dev ** 2).sum(axis=1) / np.einsum("dm,de,em->m", directions, cov, directions)
    # D * s^2 / sigma^2 ~ chi2(D) for each direction; Bonferroni over the directions.
    q = 1e-4 / directions.shape[1]
    lo, hi = stats.chi2.ppf([q, 1 - q], D)
    assert ((ratio > lo) & (ratio < hi)).all(), (ratio / D, lo / D, hi / D)
    # The whole covariance: whitened draws L^T (theta - mu) / v are iid N(0, 1) -- their
    # sample covariance has entries with standard error 1 / sqrt(D) off the diagonal.
    white = np.linalg.cholesky(A).T @ (draws - policy.mu_[:, None]) / v
    sample = white @ white.T / D
    off = sample[~np.eye(d, dtype=bool)]
    assert np.abs(off).max() < 5.5 / np.sqrt(D), np.abs(off).max() * np.sqrt(D)
    diag_lo, diag_hi = stats.chi2.ppf([1e-4 / d, 1 - 1e-4 / d], D) / D
    assert ((np.diag(sample) > diag_lo) & (np.diag(sample) < diag_hi)).all()
    # And the draws are centred on mu: mean within 5 standard errors per whitened coordinate.
    assert np.abs(white.mean(axis=1)).max() < 5 / np.sqrt(D)


def test_lints_draws_are_keyed_by_seed_and_model_version(world):
    cat = world.catalog
    (a, _), (b, _) = fitted_lints(cat, seed=7, n_draws=64), fitted_lints(cat, seed=7, n_draws=64)
    np.testing.assert_array_equal(a.draws_, b.draws_)
    other_seed, _ = fitted_lints(cat, seed=8, n_draws=64)
    np.testing.assert_array_equal(other_seed.mu_, a.mu_)
    assert not np.allclose(other_seed.draws_, a.draws_)
    # A new version with an unchanged model (empty statistics) draws afresh.
    before = a.draws_.copy()
    empty = a.sufficient_stats(subset_feedback(logged_rounds(cat, a, 1, 10, seed=9)[0],
                                               np.zeros(10, dtype=bool)))
    a.update(empty)
    np.testing.assert_array_equal(a.mu_, b.mu_)
    assert a.model_version_ == b.model_version_ + 1
    assert not np.allclose(a.draws_, before)
    b.update(empty)
    np.testing.assert_array_equal(a.draws_, b.draws_)


# ---- 4. LinUCB: hybrid = joint ridge, disjoint = per-artwork ridge ----------------------------
def linucb_pair(catalog, mode, l2, n_rounds=3, n=2000):
    """Two LinUCB policies (alpha 0 and 1) fed the same uniformly logged data, and that data.
    The last title is never logged: its artworks keep the prior."""
    # The joint-ridge reference penalises every coefficient alike: l2_artwork = l2.
    extra = {"l2_artwork": l2} if mode == "hybrid" else {}
    means = make_policy(catalog, {"name": "linucb", "mode": mode, "alpha": 0.0, "l2": l2, **extra})
    ucbs = make_policy(catalog, {"name": "linucb", "mode": mode, "alpha": 1.0, "l2": l2, **extra})
    uniform = make_policy(catalog, {"name": "uniform"})
    batches = logged_rounds(catalog, uniform, n_rounds, n, seed=6,
                            title_range=(0, catalog.n_titles - 1))
    for fb in batches:
        for p in (means, ucbs):
            p.update(p.sufficient_stats(fb))
    return means, ucbs, concat_feedback(batches)


def test_linucb_hybrid_is_the_joint_ridge_solution_and_its_width_the_joint_variance():
    world = small_world()
    cat, l2 = world.catalog, 1.5
    means, ucbs, fb = linucb_pair(cat, "hybrid", l2)
    Z, r = chosen_rows(cat, fb), fb.reward("quality_play")
    k, A = Z.shape[1], cat.n_artworks
    design = np.hstack([Z, np.eye(A)[fb.artwork]])           # [z, one-hot(artwork)]
    M = l2 * np.eye(k + A) + design.T @ design
    joint = np.linalg.solve(M, design.T @ r)
    np.testing.assert_allclose(ucbs.beta_, joint[:k], rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(ucbs.theta_, joint[k:], rtol=1e-8, atol=1e-11)
    unseen = cat.pool[-1][cat.pool[-1] >= 0]
    assert not np.isin(fb.artwork, unseen).any() and (ucbs.theta_[unseen] == 0).all()
    # Scores on fresh impressions: mean z . beta + theta_a, width sqrt([z, e_a]^T M^-1 [z, e_a]).
    batch = make_decision_batch(cat, 300, generator(6, "policy", 405))
    z = features_of(cat, batch)
    q = np.concatenate([z, np.eye(A)[np.maximum(batch.candidates, 0)]], axis=2)   # (n, K, k + A)
    mean = q @ joint
    width = np.sqrt(np.einsum("nki,ij,nkj->nk", q, np.linalg.inv(M), q))
    m = batch.mask
    np.testing.assert_allclose(means.ucb(batch)[m], mean[m], rtol=0, atol=1e-6)
    np.testing.assert_allclose((ucbs.ucb(batch) - means.ucb(batch))[m], width[m], rtol=1e-4)
    assert width[m].max() > 1.2 * width[m].min()   # the width does vary with context and arm
    # An artwork never shown is less certain than any shown one, whatever the context.
    last = batch.title == cat.n_titles - 1
    assert last.any() and (width[last][m[last]].min() > width[~last][m[~last]].max())


def test_lints_hybrid_is_the_joint_ridge_posterior():
    """Hybrid LinTS (shared weights + artwork intercepts): its posterior mean is the joint ridge
    solution on [z, one-hot(artwork)], and its draws scatter around it with the joint variance."""
    world = small_world()
    cat, l2, v = world.catalog, 1.5, 0.5
    policy = make_policy(cat, {"name": "lints", "mode": "hybrid", "l2": l2, "l2_artwork": l2, "v": v,
                               "n_draws": 4000})
    uniform = make_policy(cat, {"name": "uniform"})
    batches = logged_rounds(cat, uniform, 2, 400, seed=21)
    for fb in batches:
        policy.update(policy.sufficient_stats(fb))
    fb = concat_feedback(batches)
    Z, r = chosen_rows(cat, fb), fb.reward("quality_play")
    k, A = Z.shape[1], cat.n_artworks
    design = np.hstack([Z, np.eye(A)[fb.artwork]])
    M = l2 * np.eye(k + A) + design.T @ design
    joint = np.linalg.solve(M, design.T @ r)
    np.testing.assert_allclose(policy.mu_, joint[:k], rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(policy.theta_, joint[k:], rtol=1e-8, atol=1e-11)
    # Draws of the artwork intercepts: mean theta_, variance v^2 [M^-1]_aa (4000 draws).
    draws = policy.arm_draws_.T.astype(np.float64)                  # (D, A)
    sd = v * np.sqrt(np.diag(np.linalg.inv(M))[k:])
    se = sd / np.sqrt(draws.shape[0])
    assert (np.abs(draws.mean(axis=0) - joint[k:]) < 5 * se + 1e-6).all()
    ratio = draws.var(axis=0, ddof=1) / sd ** 2
    assert (np.abs(ratio - 1) < 5 * np.sqrt(2 / (draws.shape[0] - 1))).all()


def test_linucb_disjoint_is_a_ridge_per_artwork():
    world = small_world()
    cat, l2, G = world.catalog, 0.7, world.catalog.n_genres
    means, ucbs, fb = linucb_pair(cat, "disjoint", l2)
    x = np.column_stack([np.ones(len(fb)), fb.decisions.context[:, :G + 1]])   # [1, affinity, familiar]
    r = fb.reward("quality_play")
    batch = make_decision_batch(cat, 300, generator(7, "policy", 406))
    xq = np.column_stack([np.ones(len(batch)), batch.context[:, :G + 1]])
    expect_mean = np.zeros(batch.mask.shape)
    expect_width = np.zeros(batch.mask.shape)
    for a in range(cat.n_artworks):
        mine = fb.artwork == a
        assert mine.sum() > 100 or cat.artwork_title[a] == cat.n_titles - 1
        P = l2 * np.eye(G + 2) + x[mine].T @ x[mine]
        theta = np.linalg.solve(P, x[mine].T @ r[mine])
        np.testing.assert_allclose(ucbs.theta_arm_[a], theta, rtol=1e-4, atol=1e-6)
        at = batch.candidates == a
        expect_mean[at] = (xq @ theta)[at.any(axis=1)]
        expect_width[at] = np.sqrt(np.einsum("nd,de,ne->n", xq, np.linalg.inv(P), xq))[at.any(axis=1)]
    m = batch.mask
    np.testing.assert_allclose(means.ucb(batch)[m], expect_mean[m], rtol=0, atol=1e-5)
    np.testing.assert_allclose((ucbs.ucb(batch) - means.ucb(batch))[m], expect_width[m], rtol=1e-3)


def ridge_logistic_map(X, y, m0, l2, start):
    """argmax of sum log Bernoulli(y | sigmoid(X m)) - l2 / 2 |m - m0|^2 by damped Newton from
    ``start`` (the objective is strictly convex: the answer does not depend on the start)."""
    def objective(m):
        z = X @ m
        return np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * (m - m0) @ (m - m0)

    m = np.array(start, dtype=np.float64)
    value = objective(m)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(X @ m)))
        grad = X.T @ (y - p) - l2 * (m - m0)
        # einsum, not a BLAS GEMM: multi-threaded OpenBLAS stalls on an oversubscribed machine.
        hessian = np.einsum("ni,nj->ij", X * (p * (1 - p))[:, None], X)
        step = np.linalg.solve(l2 * np.eye(m.size) + hessian, grad)
        decrease = grad @ step
        if decrease < 1e-12:
            return m
        t = 1.0
        while objective(m + t * step) > value - 0.25 * t * decrease:
            t *= 0.5
        m = m + t * step
        value = objective(m)
    raise AssertionError("ridge_logistic_map did not converge")


# ---- 5. logistic Thompson: one Newton step per batch learns a logistic truth ------------------
def test_logistic_ts_recovers_a_logistic_model(world):
    """Coefficients are not all identifiable (country and device one-hots and the theme each
    sum to 1, like the intercept), so the test compares what is: the logit the model predicts
    for held-out impressions, against the true logit and against the exact ridge-logistic MAP
    on the same data.

    One Newton step per batch from the 2 % start overshoots on the first batch (the Hessian is
    taken at p = 0.02 while the base rate is ~0.09: after one batch the mean predicted
    probability is ~5x the truth) and that error then decays only like 1 / n_batches (measured
    mean-probability ratio 1.12 after 10 batches, 1.08 after 20, 1.02 after 80). So the bounds
    are on correlation (> 0.95 with the truth, > 0.98 with the MAP; measured 0.987 and 0.994)
    and a 15 % calibration band; an untrained model (constant logit, ratio 0.23) or a wrong
    step fails all three.
    """
    cat, G = world.catalog, world.catalog.n_genres
    policy = make_policy(cat, {"name": "logistic_ts", "l2": 1.0})
    uniform = make_policy(cat, {"name": "uniform"})
    rng = generator(8, "policy", 407)
    probe = make_decision_batch(cat, 50, rng)
    d = features_of(cat, probe).shape[2]
    w_true = np.zeros(d)
    w_true[0] = -2.5
    w_true[1:] = 0.3 * rng.standard_normal(d - 1)
    w_true[-(G + 1):-1] = 0.4 * rng.standard_normal(G)      # member x theme, in logit units
    X_all, y_all = [], []
    for r in range(20):
        batch = make_decision_batch(cat, 5000, generator(8, "policy", 408, r))
        sel = uniform.select(batch, generator(8, "policy", 409, r))
        x = features_of(cat, batch)[np.arange(len(batch)), sel.action]
        y = generator(8, "response", 409, r).random(len(batch)) < 1 / (1 + np.exp(-x @ w_true))
        fb = FeedbackBatch(batch, sel.action, sel.artwork, sel.propensity, y, y, y)
        policy.update(policy.sufficient_stats(fb))
        X_all.append(x)
        y_all.append(y)
    X, y = np.concatenate(X_all), np.concatenate(y_all).astype(np.float64)
    assert 0.05 < y.mean() < 0.2
    # Exact MAP under the same prior N(m0, I / l2), by Newton with backtracking to convergence.
    m0 = np.zeros(d)
    m0[0] = np.log(0.02 / 0.98)
    exact_map = ridge_logistic_map(X, y, m0, l2=1.0, start=policy.m_)
    held = make_decision_batch(cat, 5000, generator(8, "policy", 410))
    Xh = features_of(cat, held)[np.arange(len(held)), 0]
    learned, true, exact = Xh @ policy.m_, Xh @ w_true, Xh @ exact_map
    assert np.corrcoef(learned, true)[0, 1] > 0.95, np.corrcoef(learned, true)[0, 1]
    assert np.corrcoef(learned, exact)[0, 1] > 0.98, np.corrcoef(learned, exact)[0, 1]
    p_learned, p_true = 1 / (1 + np.exp(-learned)), 1 / (1 + np.exp(-true))
    assert abs(p_learned.mean() / p_true.mean() - 1) < 0.15, p_learned.mean() / p_true.mean()
    # The MAP itself is calibrated (a check on the reference, 2 %).
    assert abs((1 / (1 + np.exp(-exact))).mean() / p_true.mean() - 1) < 0.02
    # The personal part is learned too: within-impression differences between candidates.
    phi = features_of(cat, held)
    valid = held.mask[:, 1]
    diff = (phi[valid, 1] - phi[valid, 0])
    assert np.corrcoef(diff @ policy.m_, diff @ w_true)[0, 1] > 0.9


# ---- 6. closed loop in a linear world: personalisation beats the best single artwork ----------
def best_fixed_artwork(batch, p_true):
    """True reward per impression of the best non-personalised choice: per title, the
    candidate slot with the highest mean reward over these very impressions (in-sample, so an
    upper bound for any policy that ignores the member)."""
    title_means = np.zeros((batch.title.max() + 1, p_true.shape[1]))
    np.add.at(title_means, batch.title, np.where(batch.mask, p_true, -1.0))
    best_slot = title_means.argmax(axis=1)[batch.title]
    return p_true[np.arange(len(batch)), best_slot]


def closed_loop(specs, n_rounds=30, n=2000, seed=11):
    """Run policies on the same impressions and outcome uniforms (common random numbers) in a
    world whose reward is linear in candidate_features: r ~ Bernoulli(clip(x . w_true, 0, 1)),
    with weight on the member x theme block. Returns per-round mean true reward of each
    policy's choices, shape (n_rounds,), plus the oracle's and uniform's."""
    world = small_world(seed=seed, n_titles=8, n_genres=4, artworks_min=4, artworks_max=6)
    cat, G = world.catalog, world.catalog.n_genres
    policies = {name: make_policy(cat, spec, seed=seed) for name, spec in specs.items()}
    w_true = None
    out = {name: np.zeros(n_rounds) for name in [*specs, "oracle", "uniform", "best_fixed"]}
    for t in range(n_rounds):
        batch = make_decision_batch(cat, n, generator(seed, "policy", 500, t))
        phi = features_of(cat, batch)
        if w_true is None:
            w_true = linear_truth(phi.shape[2], G, generator(seed, "world", 500))
        p_true = np.clip(phi @ w_true, 0.0, 1.0)
        u = generator(seed, "response", 500, t).random(n)
        rows = np.arange(n)
        out["oracle"][t] = np.where(batch.mask, p_true, -np.inf).max(axis=1).mean()
        out["uniform"][t] = (np.where(batch.mask, p_true, 0).sum(axis=1) / batch.mask.sum(axis=1)).mean()
        out["best_fixed"][t] = best_fixed_artwork(batch, p_true).mean()
        for name, policy in policies.items():
            sel = policy.select(batch, generator(seed, "policy", 501, t))
            p = p_true[rows, sel.action]
            reward = u < p
            fb = FeedbackBatch(batch, sel.action, sel.artwork, sel.propensity, reward, reward, reward)
            policy.update(policy.sufficient_stats(fb))
            out[name][t] = p.mean()
    return out


def paired_z(a, b):
    """Mean of the paired per-round differences a - b, in standard errors of that mean."""
    diff = a - b
    return diff.mean() / (diff.std(ddof=1) / np.sqrt(diff.size))


def test_contextual_policies_beat_thompson_in_a_linear_world():
    """Measured (seed 11, rounds 5-29): lints +0.0123 over thompson (75 SE), linucb +0.0074
    (37 SE); over the in-sample best artwork per title +0.0090 (65 SE) and +0.0041 (18 SE).
    Without the interaction term both fall below the best fixed artwork (-5 and -24 SE), while
    lints still beats thompson (+13 SE) by sharing the theme weights across artworks -- which
    is why the personalisation claim is tested against the best fixed artwork too."""
    burn_in = 5
    res = closed_loop({"lints": {"name": "lints"}, "linucb": {"name": "linucb", "mode": "hybrid"},
                       "thompson": {"name": "thompson"}})
    after = {name: r[burn_in:] for name, r in res.items()}
    assert paired_z(after["thompson"], after["uniform"]) > 4     # the baseline does learn
    for name in ("lints", "linucb"):
        assert paired_z(after[name], after["thompson"]) > 4, name
        # Personalisation: above what any member-blind choice could get on these impressions.
        assert paired_z(after[name], after["best_fixed"]) > 4, name
        assert after[name].mean() <= after["oracle"].mean()


# ---- 7. cold start: a shared model scores never-seen titles' artworks --------------------------
@pytest.mark.parametrize("spec", [{"name": "lints"}, {"name": "linear_epsilon_greedy", "epsilon": 0.0}],
                         ids=["lints", "linear_greedy"])
def test_cold_start_on_titles_never_seen(spec):
    """Trained on titles [0, T/2) only, the policy's own choice distribution on titles
    [T/2, T) (``probabilities``: ties split evenly, so an untrained model is exactly uniform)
    earns more than uniform by many SE, and more than the best member-blind artwork per title.
    Measured (seed 12): +0.0148 over uniform (170 SE, 97 % of the oracle's gain), +0.0060 over
    the in-sample best fixed artwork (64 SE); untrained, the policy is uniform and fails."""
    world = build_world(WorldConfig(n_members=50, n_titles=40, n_genres=6, artworks_min=3,
                                    artworks_max=6), 12, 1440)
    cat, G, T = world.catalog, world.catalog.n_genres, world.catalog.n_titles
    policy = make_policy(cat, {**spec, "l2": 1.0})
    uniform = make_policy(cat, {"name": "uniform"})
    w_true = None
    seen = np.zeros(cat.n_artworks, dtype=bool)
    for r in range(8):   # uniformly logged impressions of titles [0, T/2) only
        rng = generator(12, "policy", 600, r)
        batch = make_decision_batch(cat, 3000, rng, title=rng.integers(0, T // 2, size=3000))
        phi = features_of(cat, batch)
        if w_true is None:
            w_true = linear_truth(phi.shape[2], G, generator(12, "world", 600), interaction=0.03)
        sel = uniform.select(batch, generator(12, "policy", 601, r))
        p = np.clip(phi[np.arange(len(batch)), sel.action] @ w_true, 0, 1)
        y = generator(12, "response", 601, r).random(len(batch)) < p
        seen[sel.artwork] = True
        policy.update(policy.sufficient_stats(FeedbackBatch(batch, sel.action, sel.artwork,
                                                            sel.propensity, y, y, y)))
    rng = generator(12, "policy", 602)
    batch = make_decision_batch(cat, 20_000, rng, title=rng.integers(T // 2, T, size=20_000))
    assert not seen[batch.candidates[batch.mask]].any()
    p_true = np.clip(features_of(cat, batch) @ w_true, 0, 1)
    earned = (policy.probabilities(batch) * np.where(batch.mask, p_true, 0)).sum(axis=1)
    mean_uniform = np.where(batch.mask, p_true, 0).sum(axis=1) / batch.mask.sum(axis=1)
    best = np.where(batch.mask, p_true, -np.inf).max(axis=1)
    for reference in (mean_uniform, best_fixed_artwork(batch, p_true)):
        diff = earned - reference                                # paired per impression
        assert diff.mean() > 6 * diff.std(ddof=1) / np.sqrt(diff.size), diff.mean()
    # Most of the oracle's gain over uniform, with zero impressions of these artworks.
    assert (earned - mean_uniform).mean() > 0.5 * (best - mean_uniform).mean()


# ---- 8. engine smoke run ---------------------------------------------------------------------
ENGINE_CELLS = ("uniform", "lints", "linucb", "logistic_ts", "linear_epsilon_greedy")


def test_contextual_cells_run_in_the_engine(tmp_path, monkeypatch):
    runs = []

    class Recorded(Simulation):
        def __init__(self, config, *logs):
            super().__init__(config, *logs)
            runs.append(self)

    monkeypatch.setattr(sim.runner, "Simulation", Recorded)
    cfg = {"seed": 0, "world": {"n_members": 1500, "n_titles": 40, "n_genres": 8},
           "engine": {"days": 2, "retrain_hours": 3, "progress": False},
           "ranker": {"name": "popularity"},
           "experiment": {"name": "contextual", "control": "uniform",
                          "cells": [{"name": c, "share": 1 / len(ENGINE_CELLS), "policy": {"name": c}}
                                    for c in ENGINE_CELLS]}}
    summary = sim.runner.run_experiment(cfg, tmp_path / "run", progress=False)
    (simulation,) = runs
    for cell in simulation.cells:
        version = cell.policy.model_version_
        assert version == 0 if cell.name == "uniform" else version > 0, (cell.name, version)
    for name in ENGINE_CELLS:
        c = summary["cells"][name]
        assert c["impressions"] > 1000
        for key in ("expected_take_fraction", "uniform_take_fraction", "oracle_take_fraction",
                    "regret_per_1k_impressions"):
            assert np.isfinite(c[key]), (name, key)
        assert 0 < c["expected_take_fraction"] <= c["oracle_take_fraction"]
    log = pd.read_parquet(tmp_path / "run" / "logs")
    # Sampled-posterior policies log the share of their n_draws models that chose the artwork.
    for name in ("lints", "logistic_ts"):
        rows = log[log["cell"] == name]
        n_draws = simulation.cells[ENGINE_CELLS.index(name)].policy.n_draws
        assert len(rows) == summary["cells"][name]["impressions"]
        assert ((rows["pscore"] > 0) & (rows["pscore"] <= 1)).all(), name
        wins = rows["pscore"].to_numpy() * n_draws
        np.testing.assert_allclose(wins, np.round(wins), rtol=0, atol=1e-9)
        assert (rows["model_version"] > 0).any() and (rows["pscore"] < 1).any(), name
    uniform = log[log["cell"] == "uniform"]
    np.testing.assert_allclose(uniform["pscore"], 1.0 / uniform["n_candidates"], rtol=1e-12)
