"""Artwork policies: the conformance checker over every policy, closed-form propensities, and
config errors of ``build_policy``.

Statistical assertions use fixed seeds and tolerances of a few standard errors, so they fail when
the effect they test is absent, not by chance.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import softmax
from scipy.stats import beta

from sim.config import ConfigError, WorldConfig
from sim.policies import POLICIES, ArtworkCounts, ArtworkPolicy, build_policy
from sim.policies.bandits import EpsilonGreedyPolicy
from sim.policies.baselines import UniformPolicy
from sim.streams import generator
from sim.testing import (check_choice_frequencies, check_policy, make_decision_batch,
                         make_feedback)
from sim.world import build_world


class MyPolicy(ArtworkPolicy):
    """A user policy, built by ``_target_: tests.policies.test_policies.MyPolicy``: favours the
    artworks shown least so far, p proportional to 1 / (1 + shows / boost)."""

    name = "my_policy"

    def __init__(self, boost: float = 10.0, reward: str = "quality_play"):
        super().__init__(reward)
        if isinstance(boost, bool) or not isinstance(boost, (int, float)) or not boost > 0:
            raise ValueError(f"boost must be > 0, got {boost!r}")
        self.boost = float(boost)

    def reset(self, catalog) -> None:
        super().reset(catalog)
        self.shows_ = np.zeros(catalog.n_artworks)

    def sufficient_stats(self, feedback) -> ArtworkCounts:
        n = self.catalog_.n_artworks
        return ArtworkCounts(np.bincount(feedback.artwork, minlength=n).astype(np.float64),
                             np.bincount(feedback.artwork, feedback.reward(self.reward), n))

    def update(self, stats: ArtworkCounts) -> None:
        self.shows_ = self.shows_ + stats.shows
        super().update(stats)

    def probabilities(self, batch):
        shows = self.shows_[np.maximum(batch.candidates, 0)]
        w = np.where(batch.mask, 1.0 / (1.0 + shows / self.boost), 0.0)
        return w / w.sum(axis=1, keepdims=True)


def _builtin(registry) -> dict:
    """Name -> class of a registry (a plain dict or a sim.schema.Registry)."""
    return dict(getattr(registry, "classes", registry))


# Every registered policy, plus wrappers around a learner and around the oracle. A new policy
# that needs constructor arguments must be given a spec here, or this module fails loudly.
SPECS = {name: {"name": name} for name in _builtin(POLICIES)}
SPECS["explore"] = {"name": "explore", "base": {"name": "thompson"}, "epsilon": 0.2}
SPECS["explore(oracle)"] = {"name": "explore", "base": {"name": "oracle"}, "epsilon": 0.2}
SPECS["sticky"] = {"name": "sticky", "base": {"name": "thompson"}, "min_hours": 24.0}
SPECS["sticky(lints)"] = {"name": "sticky", "base": {"name": "lints"}, "min_hours": 12.0}
SPECS["my_policy (_target_)"] = {"_target_": "tests.policies.test_policies.MyPolicy", "boost": 3.0}


def make_policy(world, spec, seed=0):
    policy = build_policy(spec, seed=seed)
    policy.reset(world.catalog)
    if policy.reads_ground_truth:
        policy.attach_ground_truth(world.response)
    return policy


def update_once(policy, batch, seed=0):
    """One retrain on the policy's own logged choices; the stats must carry rewards."""
    sel = policy.select(batch, generator(seed, "policy", 7))
    stats = policy.sufficient_stats(make_feedback(batch, sel, generator(seed, "response", 7)))
    if isinstance(stats, ArtworkCounts):
        assert stats.rewards.sum() > 0 and stats.shows.sum() == len(batch)
    elif stats is not None:   # linear models: some reward signal reached the statistics
        assert any(np.abs(np.asarray(v)).sum() > 0 for v in vars(stats).values())
    policy.update(stats)


def random_counts(catalog, seed, max_shows=300, rate=0.04):
    rng = generator(seed, "policy", 8)
    shows = rng.integers(1, max_shows, size=catalog.n_artworks)
    return ArtworkCounts(shows.astype(np.float64), rng.binomial(shows, rate).astype(np.float64))


def test_every_builtin_policy_is_built_by_its_name(world):
    """Each registered name builds its class with the default hyperparameters (wrappers around a
    base), and the policy reports that name."""
    for name, cls in _builtin(POLICIES).items():
        policy = make_policy(world, SPECS[name])
        assert type(policy) is cls and policy.name == name, (name, type(policy).__name__, policy.name)


def test_every_policy_class_in_sim_policies_is_registered():
    """A policy class with a ``name`` in any module of sim.policies is selectable by it."""
    import importlib
    import inspect
    import pkgutil

    import sim.policies
    registered = _builtin(POLICIES)
    found = {}
    for info in pkgutil.iter_modules(sim.policies.__path__, "sim.policies."):
        for _, cls in inspect.getmembers(importlib.import_module(info.name), inspect.isclass):
            if (issubclass(cls, ArtworkPolicy) and cls is not ArtworkPolicy and "name" in vars(cls)
                    and cls.__module__ == info.name):
                found[cls.name] = cls
    assert len(found) >= 10
    missing = sorted(n for n, c in found.items() if registered.get(n) is not c)
    assert not missing, f"policy classes not registered under their name: {missing}"


# ---- the conformance checker over every policy ----------------------------------------------
@pytest.mark.parametrize("state", ["fresh", "updated"])
@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_policy_conforms(world, decision_batch, spec, state):
    policy = make_policy(world, spec)
    if state == "updated":
        update_once(policy, decision_batch)
    version = policy.model_version_
    check_policy(policy, world.catalog, decision_batch, rng_seed=1)
    assert policy.model_version_ == version, "check_policy must not modify the policy"


class UnnormalisedPolicy(UniformPolicy):
    def probabilities(self, batch):
        return 0.5 * super().probabilities(batch)


class PaddingPolicy(UniformPolicy):
    def probabilities(self, batch):
        return np.full(batch.mask.shape, 1.0 / batch.mask.shape[1])


class WrongPropensityPolicy(UniformPolicy):
    def select(self, batch, rng):
        sel = super().select(batch, rng)
        sel.propensity = np.ones(len(batch))
        return sel


class UnseededPolicy(UniformPolicy):
    def select(self, batch, rng):
        return super().select(batch, np.random.default_rng())


class AlwaysFirstPolicy(UniformPolicy):
    """Reports uniform probabilities, logs the right number, but always shows slot 0."""

    def select(self, batch, rng):
        sel = super().select(batch, rng)
        sel.action[:] = 0
        sel.artwork, sel.propensity = batch.candidates[:, 0], self.probabilities(batch)[:, 0]
        return sel


class DecayingPolicy(EpsilonGreedyPolicy):
    def update(self, stats):
        super().update(stats)
        self.epsilon *= 0.5


class UnversionedPolicy(UniformPolicy):
    def update(self, stats):
        pass


class MeanRewardPolicy(EpsilonGreedyPolicy):
    """Ships mean rewards instead of summed rewards: not additive across shards."""

    def sufficient_stats(self, feedback):
        s = super().sufficient_stats(feedback)
        return ArtworkCounts(s.shows, np.divide(s.rewards, s.shows, out=np.zeros_like(s.shows),
                                                where=s.shows > 0))


@pytest.mark.parametrize("cls, message", [
    (UnnormalisedPolicy, "sum to 1"), (PaddingPolicy, "masked-out"),
    (WrongPropensityPolicy, "propensity"), (UnseededPolicy, "identically seeded"),
    (AlwaysFirstPolicy, "frequencies"), (DecayingPolicy, r"hyperparameters \['epsilon'\]"),
    (UnversionedPolicy, "model_version_"), (MeanRewardPolicy, "not additive"),
])
def test_check_policy_catches_broken_policies(world, decision_batch, cls, message):
    policy = cls()
    policy.reset(world.catalog)
    with pytest.raises(AssertionError, match=message):
        check_policy(policy, world.catalog, decision_batch)


# ---- closed forms ---------------------------------------------------------------------------
def argmax_probability(a, b):
    """P(draw k is the largest of independent Beta(a_j, b_j) draws), shape (K,), by
    integrating f_k(x) * prod_{j != k} F_j(x) over the bulk of Beta(a_k, b_k)."""
    out = []
    for k in range(len(a)):
        lo, hi = beta.ppf([1e-14, 1 - 1e-14], a[k], b[k])
        others = [j for j in range(len(a)) if j != k]

        def integrand(x, k=k, others=others):
            return beta.pdf(x, a[k], b[k]) * np.prod([beta.cdf(x, a[j], b[j]) for j in others])

        out.append(quad(integrand, lo, hi, limit=200, epsabs=1e-12)[0])
    return np.array(out)


def test_thompson_posterior_mean_matches_beta_bernoulli(world):
    alpha, beta_ = 2.0, 30.0
    policy = make_policy(world, {"name": "thompson", "prior_alpha": alpha, "prior_beta": beta_})
    uniform = make_policy(world, {"name": "uniform"})
    shows, rewards = np.zeros(world.catalog.n_artworks), np.zeros(world.catalog.n_artworks)
    for day in range(2):  # two retrains: the posterior must accumulate, not replace
        batch = make_decision_batch(world.catalog, 3000, generator(day, "policy", 9))
        fb = make_feedback(batch, uniform.select(batch, generator(day, "policy", 10)),
                           generator(day, "response", 10))
        shows += np.bincount(fb.artwork, minlength=shows.size)
        rewards += np.bincount(fb.artwork, fb.quality_play, minlength=shows.size)
        policy.update(policy.sufficient_stats(fb))
    assert rewards.sum() > 100
    np.testing.assert_array_equal(policy.posterior_mean(),
                                  (rewards + alpha) / (shows + alpha + beta_))


def test_thompson_argmax_probabilities_match_closed_form():
    world = build_world(WorldConfig(n_members=20, n_titles=12, n_genres=4, artworks_min=2,
                                    artworks_max=2), seed=1, horizon_minutes=1440)
    cat, n_draws = world.catalog, 20_000
    policy = make_policy(world, {"name": "thompson", "n_draws": n_draws})
    counts = random_counts(cat, seed=2)
    # Title 0 gets hand-picked counts: 8/200 vs 4/150 quality plays.
    counts.shows[cat.pool[0]], counts.rewards[cat.pool[0]] = [200, 150], [8, 4]
    policy.update(counts)
    probs = policy.probabilities(make_decision_batch(cat, 0, generator(0, "policy", 11),
                                                     title=np.arange(cat.n_titles)))
    a, b = counts.rewards + 1.0, counts.shows - counts.rewards + 50.0
    exact = np.array([argmax_probability(a[p], b[p]) for p in cat.pool])
    np.testing.assert_allclose(exact.sum(axis=1), 1.0, atol=1e-8)
    assert ((exact > 0.1) & (exact < 0.9)).sum() >= 6, "too few informative titles"
    se = np.sqrt(exact * (1 - exact) / n_draws)
    assert (np.abs(probs - exact) <= 4 * se + 1e-12).all(), np.c_[probs[:, 0], exact[:, 0]]


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.5, 1.0])
def test_epsilon_greedy_propensities_are_exact(world, decision_batch, epsilon):
    batch, rows = decision_batch, np.arange(len(decision_batch))
    policy = make_policy(world, {"name": "epsilon_greedy", "epsilon": epsilon})
    K = batch.mask.sum(axis=1, keepdims=True)
    # Untrained, every posterior mean ties: the greedy part splits evenly, so all get 1/K.
    np.testing.assert_allclose(policy.probabilities(batch), batch.mask / K, rtol=0, atol=1e-12)
    counts = random_counts(world.catalog, seed=3)
    policy.update(counts)
    mean = (counts.rewards + 1.0) / (counts.shows + 51.0)
    greedy = np.where(batch.mask, mean[np.maximum(batch.candidates, 0)], -np.inf).argmax(axis=1)
    expected = epsilon * batch.mask / K
    expected[rows, greedy] += 1 - epsilon
    np.testing.assert_allclose(policy.probabilities(batch), expected, rtol=0, atol=1e-12)
    sel = policy.select(batch, generator(0, "policy", 12))
    np.testing.assert_allclose(sel.propensity, expected[rows, sel.action], rtol=0, atol=1e-12)
    check_choice_frequencies(policy, batch)


@pytest.mark.parametrize("epsilon", [0.0, 0.2, 1.0])
@pytest.mark.parametrize("base", ["thompson", "softmax", "ucb1", "fixed", "oracle"])
def test_exploration_wrapper_mixes_in_uniform(world, decision_batch, base, epsilon):
    wrapper = make_policy(world, {"name": "explore", "base": {"name": base}, "epsilon": epsilon})
    reference = make_policy(world, {"name": base})
    counts = random_counts(world.catalog, seed=4)
    wrapper.update(counts)  # must reach the wrapped policy
    reference.update(counts)
    mask = decision_batch.mask
    expected = (epsilon * mask / mask.sum(axis=1, keepdims=True)
                + (1 - epsilon) * reference.probabilities(decision_batch))
    np.testing.assert_allclose(wrapper.probabilities(decision_batch), expected, rtol=0, atol=1e-12)


def test_ucb1_tries_untried_artworks_first_and_splits_ties_evenly(world, decision_batch):
    cat, batch = world.catalog, decision_batch
    mask, K = batch.mask, batch.mask.sum(axis=1, keepdims=True)
    slot = np.arange(mask.shape[1])[None, :]
    fresh = make_policy(world, {"name": "ucb1"})
    np.testing.assert_allclose(fresh.probabilities(batch), mask / K, rtol=0, atol=1e-12)
    # Slots 0 and 1 tried with a perfect record: the untried slots still come first, evenly.
    partly = make_policy(world, {"name": "ucb1"})
    tried = (cat.artwork_slot < 2).astype(np.float64)
    partly.update(ArtworkCounts(10 * tried, 10 * tried))
    expected = np.where(mask & (slot >= 2), 1.0 / (K - 2), 0.0)
    np.testing.assert_allclose(partly.probabilities(batch), expected, rtol=0, atol=1e-12)
    # Everything tried equally, slots 0 and 1 best and tied: half each, in probabilities and
    # in the choices actually made (5 binomial standard errors).
    tied = make_policy(world, {"name": "ucb1"})
    tied.update(ArtworkCounts(np.full(cat.n_artworks, 20.0),
                              np.where(cat.artwork_slot < 2, 5.0, 1.0)))
    np.testing.assert_allclose(tied.probabilities(batch), np.where(slot < 2, 0.5, 0.0) * mask,
                               rtol=0, atol=1e-12)
    n = 20_000
    sel = tied.select(batch.subset(np.zeros(n, dtype=int)), generator(0, "policy", 13))
    counts = np.bincount(sel.action, minlength=mask.shape[1])
    assert counts[2:].sum() == 0 and abs(counts[0] - n / 2) <= 5 * np.sqrt(n / 4), counts
    # General case: the argmax of mean + c * sqrt(2 ln N_title / n), which is not the greedy one.
    ucb = make_policy(world, {"name": "ucb1", "c": 1.0})
    counts = random_counts(cat, seed=5, max_shows=40, rate=0.3)
    ucb.update(counts)
    title_n = np.bincount(cat.artwork_title, counts.shows, cat.n_titles)[cat.artwork_title]
    mean = counts.rewards / counts.shows
    score = mean + np.sqrt(2 * np.log(title_n) / counts.shows)
    art = np.maximum(batch.candidates, 0)
    best = np.where(mask, score[art], -np.inf).argmax(axis=1)
    np.testing.assert_array_equal(ucb.probabilities(batch).argmax(axis=1), best)
    assert (best != np.where(mask, mean[art], -np.inf).argmax(axis=1)).any(), "bonus never matters"


@pytest.mark.parametrize("temperature", [0.005, 0.05, 1.0])
def test_softmax_probabilities_match_boltzmann(world, decision_batch, temperature):
    policy = make_policy(world, {"name": "softmax", "temperature": temperature})
    counts = random_counts(world.catalog, seed=6)
    policy.update(counts)
    mean = (counts.rewards + 1.0) / (counts.shows + 51.0)
    logits = np.where(decision_batch.mask,
                      mean[np.maximum(decision_batch.candidates, 0)] / temperature, -np.inf)
    probs = policy.probabilities(decision_batch)
    np.testing.assert_allclose(probs, softmax(logits, axis=1), rtol=1e-10, atol=1e-15)
    uniform = decision_batch.mask / decision_batch.mask.sum(axis=1, keepdims=True)
    assert np.abs(probs - uniform).max() > 1e-3  # the learned means do move the choice


# ---- build_policy: config errors name the key and the value ---------------------------------
EXPLORE = {"name": "explore", "base": {"name": "thompson"}}


@pytest.mark.parametrize("spec, key, value", [
    ({"name": "nope"}, "policy.name", "nope"),
    ({"name": "epsilon_greedy", "epsilon": 1.5}, "policy.epsilon", 1.5),
    ({"name": "epsilon_greedy", "epsilon": -0.1}, "policy.epsilon", -0.1),
    ({"name": "epsilon_greedy", "epsilon": "a"}, "policy.epsilon", "a"),
    ({**EXPLORE, "epsilon": 1.5}, "policy.epsilon", 1.5),
    ({**EXPLORE, "epsilon": -0.1}, "policy.epsilon", -0.1),
    ({**EXPLORE, "epsilon": "a"}, "policy.epsilon", "a"),
    ({"name": "thompson", "foo": 3}, "policy.foo", 3),
    ({"name": "explore", "base": {"name": "ucb1", "bar": 1}}, "policy.base.bar", 1),
    ({"name": "thompson", "n_draws": 0}, "policy.n_draws", 0),
    ({"_target_": "nodots"}, "policy._target_", "nodots"),
    ({"_target_": 42}, "policy._target_", 42),
    ({"_target_": "no_such_module.MyPolicy"}, "policy._target_", "no_such_module.MyPolicy"),
    ({"_target_": "tests.policies.test_policies.Nope"}, "policy._target_", "tests.policies.test_policies.Nope"),
    ({"_target_": "collections.OrderedDict"}, "policy._target_", "collections.OrderedDict"),
    ({"_target_": "tests.policies.test_policies.MyPolicy", "boost": -1}, "policy.boost", -1),
    ({"_target_": "os.path.join"}, "policy._target_", "os.path.join"),
    ({"name": "explore", "reward": "click", "base": {"name": "thompson"}}, "policy.reward", "click"),
])
def test_build_policy_errors_name_key_and_value(spec, key, value):
    with pytest.raises(ConfigError) as info:
        build_policy(spec)
    message = str(info.value)
    assert info.value.key == key and key in message and repr(value) in message, message


def test_build_policy_error_key_follows_the_config_path():
    with pytest.raises(ConfigError, match=r"experiment\.cells\[1\]\.policy\.epsilon = 2"):
        build_policy({"name": "epsilon_greedy", "epsilon": 2}, key="experiment.cells[1].policy")


def test_user_policy_by_target(world, decision_batch):
    policy = make_policy(world, SPECS["my_policy (_target_)"])
    assert type(policy) is MyPolicy and policy.boost == 3.0
    update_once(policy, decision_batch)
    # It learned something: the artworks it showed are now shown less.
    assert not np.allclose(policy.probabilities(decision_batch),
                           decision_batch.mask / decision_batch.mask.sum(1, keepdims=True))
    check_policy(policy, world.catalog, decision_batch)


@pytest.mark.parametrize("bad", [-2, "n_artworks"])
def test_sampled_posterior_refuses_candidate_ids_outside_the_catalog(world, decision_batch, bad):
    """The compiled argmax (sim.kernels.choice) does not check bounds: an id past the catalog is
    an IndexError (from the features' gather, before the argmax), and so is an id below the
    padding -1 (which NumPy's take would have wrapped around), instead of a read past the table."""
    import dataclasses

    policy = make_policy(world, {"name": "lints"})
    candidates = decision_batch.candidates.copy()
    candidates[3, 0] = world.catalog.n_artworks if bad == "n_artworks" else bad
    with pytest.raises(IndexError, match="out of bounds" if bad == "n_artworks" else "candidate artwork ids must be in"):
        policy.probabilities(dataclasses.replace(decision_batch, candidates=candidates))
